"""``GET /api/v1/tables`` and ``GET /api/v1/tables/{workspace}/{layer}/{name}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request  # noqa: TID251 - the API package is where FastAPI lives

from ratatouille.api.context import context
from ratatouille.api.errors import responses
from ratatouille.api.formats import plain
from ratatouille.api.models import (
    ColumnInfo,
    Preview,
    ResultColumn,
    SnapshotInfo,
    TableDetail,
    TablesResponse,
    TableSummary,
)
from ratatouille.api.security import OPEN_QUERY, Caller
from ratatouille.config import MAX_PREVIEW_ROWS
from ratatouille.engine import literal, quote
from ratatouille.errors import QueryError, TableNotFoundError
from ratatouille.state.auth import Role

router = APIRouter(prefix="/api/v1", tags=["tables"])
_PAGING = {"limit", "offset"}


@router.get("/tables", summary="Tables the caller may read", responses=responses(401, 403, 404, 422))
def list_tables(request: Request, caller: Caller, workspace: str | None = None) -> TablesResponse:
    """Every table of the workspaces the token may read (or of one, with `?workspace=`)."""
    ctx = context(request)
    if workspace is not None:
        caller.require(Role.VIEWER, workspace)
        ctx.workspace(workspace)  # 404 if it does not exist
        readable = [workspace]
    else:
        readable = ctx.readable(caller)
    refs = ctx.default_workspace().tables(all_workspaces=True)
    return TablesResponse(
        tables=[
            TableSummary(workspace=r.workspace, layer=r.layer, name=r.name, qualified=r.qualified)
            for r in refs
            if r.workspace in readable
        ]
    )


@router.get(
    "/tables/{workspace}/{layer}/{name}",
    summary="A table: schema, partitions, snapshots, preview",
    responses=responses(400, 401, 403, 404, 422),
    openapi_extra=OPEN_QUERY,
)
def table_detail(
    request: Request,
    caller: Caller,
    workspace: str,
    layer: str,
    name: str,
    limit: Annotated[int | None, Query(ge=0, le=MAX_PREVIEW_ROWS, description="Preview rows.")] = None,
    offset: Annotated[int, Query(ge=0, description="Preview rows to skip.")] = 0,
) -> TableDetail:
    """Schema, partitioning, statistics, snapshots (newest first) and a preview of the rows.

    Any other query parameter filters the preview on a column: `?store_id=S1&payment_method=card`
    keeps rows whose `store_id` is `S1` and whose `payment_method` is `card` (repeat a parameter
    for several values). Rows come in table order; page with `limit` and `offset`.
    """
    ctx = context(request)
    caller.require(Role.VIEWER, workspace)
    ws = ctx.workspace(workspace)
    key = (workspace, layer.lower(), name.lower())
    refs = ws.tables()
    ref = next((r for r in refs if r.identifier == key), None)
    if ref is None:
        raise TableNotFoundError(f"{layer}.{name}", [r.short for r in refs])
    info = ws.describe(ref.qualified)
    snapshots = ws.history(ref.qualified)
    columns = [c["name"] for c in info["columns"]]
    filters: dict[str, list[str]] = {}
    for key_, value in request.query_params.multi_items():
        if key_ in _PAGING:
            continue
        if key_ not in columns:
            raise QueryError(
                f"cannot filter on `{key_}`: `{ref.short}` has no such column; columns: {', '.join(columns)}"
            )
        filters.setdefault(key_, []).append(value)
    rows = ctx.settings.preview_rows if limit is None else limit
    where = " AND ".join(
        f"{quote(column)} IN ({', '.join(literal(v) for v in values)})" for column, values in filters.items()
    )
    sql = f"SELECT * FROM {'.'.join(quote(p) for p in ref.identifier)}"
    sql += f" WHERE {where}" if where else ""
    sql += f" LIMIT {int(rows)} OFFSET {int(offset)}"
    with ws.sandboxed_sql(sql, ctx.readable(caller), timeout=ctx.settings.statement_timeout_seconds) as query:
        preview_columns = [ResultColumn(name=n, type=t) for n, t in query.columns]
        values = [plain(row) for batch in query for row in batch.to_pylist()]
    return TableDetail(
        workspace=ref.workspace,
        layer=ref.layer,
        name=ref.name,
        qualified=ref.qualified,
        location=info["location"],
        columns=[ColumnInfo(**c) for c in info["columns"]],
        partitioning=info["partitioning"],
        snapshot_id=info["snapshot_id"],
        updated_at=info["updated_at"],
        rows=info["rows"],
        files=info["files"],
        bytes=info["bytes"],
        branches=info["branches"],
        properties=info["properties"],
        snapshots=[SnapshotInfo(**s) for s in snapshots],
        preview=Preview(columns=preview_columns, rows=values, limit=rows, offset=offset, filters=filters),
    )
