"""What the ``rat`` helpers do inside a Python pipeline of a run.

While a Python pipeline runs, ``rat.append/overwrite/merge`` write to the run's audit
branch (published with the rest of the run, or not at all), ``rat.query`` reads the run's
view of the tables, and ``rat.mark_ingested`` takes effect only once the run has published,
so a crash never marks a file ingested whose rows were not published.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ratatouille.models.loader import Model
from ratatouille.storage.files import Landing

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from ratatouille.runs.runner import RunContext, Runner
    from ratatouille.storage.results import WriteResult

current: contextvars.ContextVar[PipelineScope | None] = contextvars.ContextVar("rat_pipeline_scope", default=None)


class _StateLogHandler(logging.Handler):
    def __init__(self, scope: PipelineScope) -> None:
        super().__init__(logging.INFO)
        self.scope = scope

    def emit(self, record: logging.LogRecord) -> None:
        self.scope.ctx.state.log(self.scope.ctx.run_id, record.levelname, record.getMessage(), self.scope.model.key)


@dataclass
class PipelineScope:
    """The run-bound implementation of the ``rat`` helpers for one Python pipeline."""

    ctx: RunContext
    model: Model
    con: duckdb.DuckDBPyConnection
    runner: Runner
    landing: Landing
    rows_written: int = 0
    snapshot_id: int | None = None
    marked: list[dict[str, Any]] = field(default_factory=list)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ratatouille.pipeline"))

    def write(self, name: str, data: Any, mode: str, **options: Any) -> WriteResult:
        """Write into a table of this workspace, on the run's audit branch.

        Raises:
            PipelineError: ``name`` is not ``layer.name`` (or ``<this workspace>.layer.name``).
        """
        from ratatouille.engine import register_data
        from ratatouille.errors import PipelineError

        parts = name.split(".")
        if len(parts) == 3 and parts[0] == self.ctx.workspace:
            parts = parts[1:]
        if len(parts) != 2 or not all(parts):
            if len(parts) == 3:
                raise PipelineError(
                    f"`{name}` is in workspace `{parts[0]}`; a pipeline of `{self.ctx.workspace}` writes only its "
                    "own tables: write `layer.name`"
                )
            raise PipelineError(f"`{name}` is not a table name: write `layer.name`, e.g. `{self.model.layer}.{name}`")
        key = ".".join(parts)
        source, cleanup = register_data(self.con, data)
        try:
            result = self.ctx.write(self.con, key, source, mode, owner=self.model.key, **options)  # type: ignore[arg-type]
        finally:
            cleanup()
        self.rows_written += result.rows_written
        self.snapshot_id = result.snapshot_id
        return result

    def query(self, sql: str) -> pa.Table:
        """Run SQL against the run's view of the tables."""
        return self.con.sql(sql).to_arrow_table()

    def is_ingested(self, path: str) -> bool:
        """Whether this file (same path, size and content) was ingested by this pipeline before."""
        full = self.landing.resolve(path)
        record = self.ctx.state.file_record(self.ctx.workspace, self.model.key, full)
        if record is None:
            return False
        infos = self.landing.glob(full)
        if not infos or infos[0].size != record["size"]:
            return False
        return bool(self.landing.checksum(full) == record["checksum"])

    def mark_ingested(self, path: str, rows: int | None = None) -> None:
        """Remember a file as ingested once this run publishes."""
        full = self.landing.resolve(path)
        infos = self.landing.glob(full)
        size = infos[0].size if infos else 0
        self.marked.append({"path": full, "size": size, "checksum": self.landing.checksum(full), "rows": rows})


@contextmanager
def python_pipeline_scope(
    ctx: RunContext, model: Model, con: duckdb.DuckDBPyConnection, runner: Runner
) -> Iterator[PipelineScope]:
    """Bind the ``rat`` helpers to a run while a Python pipeline executes."""
    from ratatouille.engine import quote

    landing = Landing(runner.landing, runner.lakehouse.config.storage.s3)
    scope = PipelineScope(ctx, model, con, runner, landing)
    handler = _StateLogHandler(scope)
    scope.log = logging.getLogger(f"ratatouille.pipeline.{model.key}")
    scope.log.setLevel(logging.INFO)
    scope.log.addHandler(handler)
    con.execute(f"USE {quote(runner.db)}")
    token = current.set(scope)
    try:
        yield scope
    finally:
        current.reset(token)
        scope.log.removeHandler(handler)
    if scope.marked:
        entries = list(scope.marked)

        def register() -> None:
            ctx.state.record_files(ctx.workspace, model.key, entries, ctx.run_id)

        ctx.after_publish.append((model.key, register))


def current_scope() -> PipelineScope | None:
    """The Python pipeline running in this thread, if any."""
    return current.get()


def now() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)
