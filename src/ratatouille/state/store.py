"""The state store: runs, model runs, test results, logs, the file registry and source state.

SQLite in ``.rat/state.db`` by default, PostgreSQL when ``state.uri`` says so; the same
SQLAlchemy Core tables on both. Whoever starts a run (CLI, schedule, API, notebook) records
it here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.config import resolve_uri
from ratatouille.errors import RatatouilleError

if TYPE_CHECKING:
    from sqlalchemy import Engine, MetaData, Table


def now() -> datetime:
    """The current time in UTC (timezone-aware)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Tables:
    metadata: MetaData
    runs: Table
    model_runs: Table
    test_results: Table
    logs: Table
    files: Table
    source_state: Table
    node_state: Table


def _tables() -> _Tables:
    from sqlalchemy import (
        JSON,
        BigInteger,
        Column,
        DateTime,
        Float,
        Index,
        Integer,
        MetaData,
        String,
        Table,
        Text,
    )

    md = MetaData()
    runs = Table(
        "rat_runs",
        md,
        Column("id", String(40), primary_key=True),
        Column("workspace", String(200), nullable=False),
        Column("kind", String(20), nullable=False, default="run"),  # run | ingest | test
        Column("trigger", String(40), nullable=False),  # cli | schedule | sensor | api | sdk
        Column("status", String(20), nullable=False),  # running | success | failed | partial
        Column("selection", Text),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True)),
        Column("error", Text),
        Column("pid", Integer),
        Index("ix_rat_runs_started", "started_at"),
    )
    model_runs = Table(
        "rat_model_runs",
        md,
        Column("run_id", String(40), primary_key=True),
        Column("node", String(300), primary_key=True),
        Column("kind", String(20), nullable=False),  # model | source
        Column("status", String(20), nullable=False),  # pending | running | success | failed | skipped | blocked
        Column("materialized", String(20)),
        Column("rows_written", BigInteger),
        Column("rows_deleted", BigInteger),
        Column("rows_quarantined", BigInteger),
        Column("duration_s", Float),
        Column("snapshot_id", BigInteger),
        Column("watermark", Text),
        Column("details", JSON),
        Column("error", Text),
        Column("started_at", DateTime(timezone=True)),
        Column("finished_at", DateTime(timezone=True)),
    )
    test_results = Table(
        "rat_test_results",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(40), nullable=False, index=True),
        Column("node", String(300), nullable=False),
        Column("test", String(300), nullable=False),
        Column("severity", String(10), nullable=False),
        Column("status", String(10), nullable=False),  # pass | fail | warn | error
        Column("failures", BigInteger),
        Column("sample", JSON),
        Column("message", Text),
    )
    logs = Table(
        "rat_logs",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(40), nullable=False, index=True),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("level", String(10), nullable=False),
        Column("node", String(300)),
        Column("message", Text, nullable=False),
    )
    files = Table(
        "rat_files",
        md,
        Column("workspace", String(200), primary_key=True),
        Column("source", String(200), primary_key=True),
        Column("path", String(2000), primary_key=True),
        Column("size", BigInteger, nullable=False),
        Column("checksum", String(80), nullable=False),
        Column("mtime_ns", BigInteger),
        Column("rows", BigInteger),
        Column("run_id", String(40)),
        Column("ingested_at", DateTime(timezone=True), nullable=False),
    )
    source_state = Table(
        "rat_source_state",
        md,
        Column("workspace", String(200), primary_key=True),
        Column("source", String(200), primary_key=True),
        Column("state", JSON, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    node_state = Table(
        "rat_node_state",
        md,
        Column("workspace", String(200), primary_key=True),
        Column("node", String(300), primary_key=True),
        Column("fingerprint", String(80), nullable=False),
        Column("inputs", JSON, nullable=False),  # upstream table -> metadata location it was built from
        Column("output", Text),  # its own table's metadata location after the run
        Column("run_id", String(40)),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    return _Tables(md, runs, model_runs, test_results, logs, files, source_state, node_state)


class StateStore:
    """Run records and ingestion bookkeeping."""

    def __init__(self, uri: str, root: Path) -> None:
        self.uri = resolve_uri(uri, root)
        self._engine: Engine | None = None
        self.t = _tables()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine; tables are created on first use.

        Raises:
            RatatouilleError: the state database cannot be reached.
        """
        if self._engine is None:
            from sqlalchemy import create_engine, event
            from sqlalchemy.exc import SQLAlchemyError

            engine = create_engine(self.uri)
            if engine.dialect.name == "sqlite":

                @event.listens_for(engine, "connect")
                def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                    cursor = dbapi_connection.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    # WAL + NORMAL: a commit survives the process being killed, without an
                    # fsync per commit (a run writes dozens of small records).
                    cursor.execute("PRAGMA synchronous=NORMAL")
                    cursor.execute("PRAGMA busy_timeout=30000")
                    cursor.close()

            try:
                self.t.metadata.create_all(engine)
            except SQLAlchemyError as exc:
                engine.dispose()
                raise RatatouilleError(f"cannot open the state store: {exc}; check `state.uri`") from exc
            self._engine = engine
        return self._engine

    def close(self) -> None:
        """Release connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, workspace: str, trigger: str, selection: str, kind: str = "run") -> str:
        """Record a new running run; returns its id."""
        import os

        run_id = now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        with self.engine.begin() as conn:
            conn.execute(
                self.t.runs.insert().values(
                    id=run_id,
                    workspace=workspace,
                    kind=kind,
                    trigger=trigger,
                    status="running",
                    selection=selection,
                    started_at=now(),
                    pid=os.getpid(),
                )
            )
        return run_id

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """Close a run."""
        with self.engine.begin() as conn:
            conn.execute(
                self.t.runs.update()
                .where(self.t.runs.c.id == run_id)
                .values(status=status, finished_at=now(), error=error)
            )

    def node_update(self, run_id: str, node: str, **values: Any) -> None:
        """Create or update a node's row in a run."""
        from sqlalchemy import select

        t = self.t.model_runs
        with self.engine.begin() as conn:
            exists = conn.execute(select(t.c.node).where(t.c.run_id == run_id, t.c.node == node)).first()
            if exists:
                conn.execute(t.update().where(t.c.run_id == run_id, t.c.node == node).values(**values))
            else:
                values.setdefault("kind", "model")
                values.setdefault("status", "pending")
                conn.execute(t.insert().values(run_id=run_id, node=node, **values))

    def add_nodes(self, run_id: str, nodes: list[tuple[str, str]]) -> None:
        """Record the (node, kind) pairs of a run as pending, in one transaction."""
        if nodes:
            with self.engine.begin() as conn:
                conn.execute(
                    self.t.model_runs.insert(),
                    [{"run_id": run_id, "node": node, "kind": kind, "status": "pending"} for node, kind in nodes],
                )

    def add_test_result(self, run_id: str, node: str, **values: Any) -> None:
        """Record one test result."""
        with self.engine.begin() as conn:
            conn.execute(self.t.test_results.insert().values(run_id=run_id, node=node, **values))

    def log(self, run_id: str, level: str, message: str, node: str | None = None) -> None:
        """Append a log line to a run."""
        with self.engine.begin() as conn:
            conn.execute(self.t.logs.insert().values(run_id=run_id, at=now(), level=level, node=node, message=message))

    def runs(self, workspace: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        from sqlalchemy import select

        t = self.t.runs
        query = select(t).order_by(t.c.started_at.desc()).limit(limit)
        if workspace:
            query = query.where(t.c.workspace == workspace)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its nodes, tests and logs (``None`` if unknown). A unique prefix works."""
        from sqlalchemy import select

        with self.engine.connect() as conn:
            rows = conn.execute(select(self.t.runs).where(self.t.runs.c.id.like(f"{run_id}%")).limit(2)).fetchall()
            if len(rows) != 1:
                return None
            run = dict(rows[0]._mapping)
            rid = run["id"]
            run["nodes"] = [
                dict(r._mapping)
                for r in conn.execute(
                    select(self.t.model_runs)
                    .where(self.t.model_runs.c.run_id == rid)
                    .order_by(self.t.model_runs.c.started_at)
                )
            ]
            run["tests"] = [
                dict(r._mapping)
                for r in conn.execute(
                    select(self.t.test_results)
                    .where(self.t.test_results.c.run_id == rid)
                    .order_by(self.t.test_results.c.id)
                )
            ]
            run["logs"] = [
                dict(r._mapping)
                for r in conn.execute(select(self.t.logs).where(self.t.logs.c.run_id == rid).order_by(self.t.logs.c.id))
            ]
        return run

    def mark_abandoned(self) -> int:
        """Runs still 'running' whose process is gone become 'failed' (killed). Returns how many."""
        import os

        from sqlalchemy import select

        t = self.t.runs
        fixed = 0
        with self.engine.begin() as conn:
            for row in conn.execute(select(t.c.id, t.c.pid).where(t.c.status == "running")).fetchall():
                alive = False
                if row.pid:
                    try:
                        os.kill(int(row.pid), 0)
                        alive = True
                    except OSError:
                        alive = False
                if not alive:
                    conn.execute(
                        t.update()
                        .where(t.c.id == row.id)
                        .values(status="failed", finished_at=now(), error="the process stopped before the run finished")
                    )
                    fixed += 1
        return fixed

    # -- ingestion bookkeeping ------------------------------------------------------------

    def file_record(self, workspace: str, source: str, path: str) -> dict[str, Any] | None:
        """The registry entry of a file, if it was ingested."""
        from sqlalchemy import select

        t = self.t.files
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t).where(t.c.workspace == workspace, t.c.source == source, t.c.path == path)
            ).first()
        return dict(row._mapping) if row else None

    def file_records(self, workspace: str, source: str) -> dict[str, dict[str, Any]]:
        """Every registry entry of a source, by path."""
        from sqlalchemy import select

        t = self.t.files
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.workspace == workspace, t.c.source == source)).fetchall()
        return {r.path: dict(r._mapping) for r in rows}

    def record_files(self, workspace: str, source: str, entries: list[dict[str, Any]], run_id: str) -> None:
        """Register ingested files (replacing older entries for the same paths)."""
        t = self.t.files
        with self.engine.begin() as conn:
            for entry in entries:
                conn.execute(
                    t.delete().where(t.c.workspace == workspace, t.c.source == source, t.c.path == entry["path"])
                )
                conn.execute(
                    t.insert().values(workspace=workspace, source=source, run_id=run_id, ingested_at=now(), **entry)
                )

    def source_state(self, workspace: str, source: str) -> dict[str, Any]:
        """A connector's saved state (``{}`` before its first successful read)."""
        from sqlalchemy import select

        t = self.t.source_state
        with self.engine.connect() as conn:
            row = conn.execute(select(t.c.state).where(t.c.workspace == workspace, t.c.source == source)).first()
        if row is None:
            return {}
        state = row[0]
        return dict(json.loads(state) if isinstance(state, str) else state)

    def save_source_state(self, workspace: str, source: str, state: dict[str, Any]) -> None:
        """Save a connector's state after its outputs were committed."""
        t = self.t.source_state
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.workspace == workspace, t.c.source == source))
            conn.execute(
                t.insert().values(
                    workspace=workspace,
                    source=source,
                    state=json.loads(json.dumps(state, default=str)),
                    updated_at=now(),
                )
            )

    # -- change detection -----------------------------------------------------------------

    def node_states(self, workspace: str) -> dict[str, dict[str, Any]]:
        """What each model was last built from (for skipping models that are up to date)."""
        from sqlalchemy import select

        t = self.t.node_state
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.workspace == workspace)).fetchall()
        result = {}
        for row in rows:
            entry = dict(row._mapping)
            if isinstance(entry["inputs"], str):
                entry["inputs"] = json.loads(entry["inputs"])
            result[row.node] = entry
        return result

    def save_node_states(self, workspace: str, states: dict[str, dict[str, Any]], run_id: str) -> None:
        """Record what models were built from."""
        t = self.t.node_state
        with self.engine.begin() as conn:
            for node, state in states.items():
                conn.execute(t.delete().where(t.c.workspace == workspace, t.c.node == node))
                conn.execute(
                    t.insert().values(
                        workspace=workspace,
                        node=node,
                        fingerprint=state["fingerprint"],
                        inputs=state["inputs"],
                        output=state["output"],
                        run_id=run_id,
                        updated_at=now(),
                    )
                )

    def forget_node_states(self, workspace: str) -> None:
        """Forget change detection (a full refresh rebuilds everything)."""
        t = self.t.node_state
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.workspace == workspace))
