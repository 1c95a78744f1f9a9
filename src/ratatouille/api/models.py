"""Request and response bodies of the API (their JSON schemas are the OpenAPI document's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

QueryFormat = Literal["json", "csv", "ndjson", "parquet", "arrow"]


class Body(BaseModel):
    """Base of the request bodies: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"
    version: str


# -- query --------------------------------------------------------------------------------


class QueryRequest(Body):
    """A read-only query."""

    sql: str = Field(
        min_length=1, description="One SELECT (WITH, UNION, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN also work)."
    )
    workspace: str | None = Field(
        default=None, description="Where `layer.table` names point; default: the project's default workspace."
    )
    limit: int | None = Field(
        default=None, ge=0, description="At most this many rows (never more than the server's row limit)."
    )


class ResultColumn(BaseModel):
    """A result column and its DuckDB type."""

    name: str
    type: str


class QueryResult(BaseModel):
    """A query result in JSON (streamed: ``row_count`` and ``truncated`` come after the rows)."""

    columns: list[ResultColumn]
    rows: list[dict[str, Any]]
    row_count: int
    truncated: bool = Field(description="Whether rows were cut by the row limit.")


# -- tables -------------------------------------------------------------------------------


class TableSummary(BaseModel):
    """A table in the catalog."""

    workspace: str
    layer: str
    name: str
    qualified: str = Field(description="workspace.layer.name")


class TablesResponse(BaseModel):
    """The tables the caller may read."""

    tables: list[TableSummary]


class ColumnInfo(BaseModel):
    """A column of a table's Iceberg schema."""

    id: int
    name: str
    type: str
    required: bool
    doc: str | None = None


class SnapshotInfo(BaseModel):
    """One snapshot of a table."""

    snapshot_id: int
    parent_id: int | None = None
    committed_at: str
    operation: str
    added_rows: int
    deleted_rows: int
    total_rows: int
    current: bool
    on_main: bool
    run_id: str | None = None


class Preview(BaseModel):
    """Some rows of a table, filtered and paged."""

    columns: list[ResultColumn]
    rows: list[dict[str, Any]]
    limit: int
    offset: int
    filters: dict[str, list[str]]


class TableDetail(BaseModel):
    """A table: schema, partitioning, statistics, snapshots and a preview."""

    workspace: str
    layer: str
    name: str
    qualified: str
    location: str
    columns: list[ColumnInfo]
    partitioning: list[str]
    snapshot_id: int | None = None
    updated_at: str | None = None
    rows: int
    files: int
    bytes: int
    branches: list[str]
    properties: dict[str, str]
    snapshots: list[SnapshotInfo]
    preview: Preview


# -- pipelines ----------------------------------------------------------------------------


class PipelineNode(BaseModel):
    """A source or model of a workspace's graph."""

    workspace: str
    key: str = Field(description="layer.name")
    layer: str
    name: str
    kind: str = Field(description="source, sql or python")
    materialized: str | None = None
    description: str = ""
    owner: str = ""
    schedule: str | None = None
    tags: list[str]
    upstream: list[str]


class WorkspaceProblem(BaseModel):
    """A workspace whose pipelines cannot be loaded."""

    workspace: str
    message: str


class PipelinesResponse(BaseModel):
    """Sources and models of the workspaces the caller may read."""

    pipelines: list[PipelineNode]
    errors: list[WorkspaceProblem]


class RunRequest(Body):
    """Options of a triggered run."""

    full_refresh: bool = Field(default=False, description="Rebuild incremental models from scratch.")


class RunAccepted(BaseModel):
    """A run that has started."""

    run_id: str
    workspace: str
    node: str
    status: Literal["running"] = "running"
    url: str


# -- runs ---------------------------------------------------------------------------------


class RunSummary(BaseModel):
    """A run, as listed."""

    id: str
    workspace: str
    kind: str
    trigger: str
    status: str
    selection: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None


class RunsResponse(BaseModel):
    """Recent runs, newest first."""

    runs: list[RunSummary]


class NodeRun(BaseModel):
    """One source or model in a run."""

    node: str
    kind: str
    status: str
    materialized: str | None = None
    rows_written: int | None = None
    rows_deleted: int | None = None
    rows_quarantined: int | None = None
    duration_s: float | None = None
    snapshot_id: int | None = None
    watermark: str | None = None
    details: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class TestResult(BaseModel):
    """One data test in a run."""

    __test__ = False  # not a pytest test class

    node: str
    test: str
    severity: str
    status: str
    failures: int | None = None
    sample: Any = None
    message: str | None = None


class LogLine(BaseModel):
    """One log line of a run."""

    at: datetime
    level: str
    node: str | None = None
    message: str


class RunDetail(RunSummary):
    """A run with its per-node results, tests and logs."""

    nodes: list[NodeRun]
    tests: list[TestResult]
    logs: list[LogLine]


# -- accounts -----------------------------------------------------------------------------


class UserModel(BaseModel):
    """A user (never with a password hash)."""

    name: str
    created_at: datetime
    has_password: bool
    active_tokens: int


class TokenModel(BaseModel):
    """An API token (never with its value)."""

    id: str
    user: str
    role: str
    workspace: str | None = None
    status: str
    created_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = None


class UsersResponse(BaseModel):
    """Users and their tokens."""

    users: list[UserModel]
    tokens: list[TokenModel]
