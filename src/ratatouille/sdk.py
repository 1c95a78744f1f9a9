"""``from ratatouille import rat``: the Python SDK for notebooks, apps and pipelines.

``rat`` finds the project the same way the CLI does (``$RAT_PROJECT``, else the nearest
``ratatouille.yaml`` upwards from the working directory) on first use, and delegates every
call to that project's ``Workspace``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.models.loader import pipeline
from ratatouille.runs.context import current_scope
from ratatouille.storage.reader import AsOf, parse_as_of
from ratatouille.storage.results import WriteResult
from ratatouille.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]
    import pyarrow as pa

    from ratatouille.storage.files import Landing


class Result:
    """A query result: an Arrow table (every ``pyarrow.Table`` attribute works) plus ``.df()``."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def arrow(self) -> pa.Table:
        """The result as a ``pyarrow.Table``."""
        return self._table

    def df(self) -> pd.DataFrame:
        """The result as a pandas DataFrame (needs pandas installed)."""
        return self._table.to_pandas()

    def rows(self) -> list[dict[str, Any]]:
        """The result as a list of dicts."""
        return list(self._table.to_pylist())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._table.to_pylist())

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self._table.__arrow_c_stream__(requested_schema)

    def __repr__(self) -> str:
        return repr(self._table)


class Rat:
    """The SDK entry point. Use the ready-made ``rat`` instance."""

    def __init__(self, project: Path | str | None = None, workspace: str | None = None) -> None:
        self._project = project
        self._workspace_name = workspace
        self._workspace: Workspace | None = None

    def use(self, project: Path | str | None = None, workspace: str | None = None) -> Rat:
        """Point the SDK at another project or workspace; returns ``self``."""
        if self._workspace is not None:
            self._workspace.close()
        self._project, self._workspace_name, self._workspace = project, workspace, None
        return self

    @property
    def workspace(self) -> Workspace:
        """The workspace every call goes to (opened on first use).

        Raises:
            ProjectNotFoundError: no project was found.
        """
        if self._workspace is None:
            self._workspace = Workspace.open(self._project, self._workspace_name)
        return self._workspace

    def query(self, sql: str, *, as_of: str | datetime | int | None = None) -> Result:
        """Run SQL on the lakehouse; ``layer.table`` names this workspace's tables.

        Inside a Python pipeline, tables are read as the run sees them.

        Raises:
            QueryError: the SQL fails.
            TableNotFoundError: it names a table that does not exist.
        """
        if (scope := current_scope()) is not None and as_of is None:
            return Result(scope.query(sql))
        return Result(self.workspace.query(sql, _as_of(as_of)))

    def table(
        self, name: str, *, snapshot_id: int | None = None, as_of: datetime | None = None, ref: str | None = None
    ) -> Result:
        """Read a whole table, optionally at a snapshot, a time or a branch/tag.

        Raises:
            TableNotFoundError: the table does not exist.
        """
        return Result(self.workspace.table(name, snapshot_id=snapshot_id, as_of=as_of, ref=ref))

    def tables(self) -> list[str]:
        """Names (``layer.table``) of this workspace's tables."""
        return [t.short for t in self.workspace.tables()]

    def append(self, name: str, data: Any, **options: Any) -> WriteResult:
        """Append data (SQL, Arrow, pandas, polars, list of dicts) to a table, creating it if needed.

        Inside a Python pipeline the write goes to the run's audit branch and is published with
        the run; elsewhere it is committed at once.
        """
        if (scope := current_scope()) is not None:
            return scope.write(name, data, "append", **options)
        return self.workspace.append(name, data, **options)

    def overwrite(self, name: str, data: Any, *, where: str | None = None, **options: Any) -> WriteResult:
        """Replace a table's rows (or those matching ``where``) with data."""
        if (scope := current_scope()) is not None:
            return scope.write(name, data, "overwrite", where=where, **options)
        return self.workspace.overwrite(name, data, where=where, **options)

    def merge(self, name: str, data: Any, *, unique_key: str | Sequence[str], **options: Any) -> WriteResult:
        """Insert data, replacing rows whose ``unique_key`` already exists."""
        keys = [unique_key] if isinstance(unique_key, str) else list(unique_key)
        if (scope := current_scope()) is not None:
            return scope.write(name, data, "merge", unique_key=keys, **options)
        return self.workspace.merge(name, data, unique_key=keys, **options)

    # -- helpers for Python pipelines (they work in notebooks too) ------------------------

    def ls(self, pattern: str) -> list[str]:
        """Files matching a glob; ``landing/...`` is the configured landing zone (local or S3)."""
        return [f.path for f in self._landing().glob(pattern)]

    def read_file(self, path: str, **options: Any) -> pa.Table:
        """Read a CSV, TSV, JSON/NDJSON, Parquet or Excel file into Arrow (by its extension).

        Raises:
            RatatouilleError: the format is not recognised or the file cannot be read.
        """
        from ratatouille.engine import literal, load_extensions
        from ratatouille.errors import RatatouilleError

        full = self._landing().resolve(path)
        suffix = full.lower().rsplit(".", 1)[-1]
        readers = {
            "csv": "read_csv",
            "tsv": "read_csv",
            "txt": "read_csv",
            "json": "read_json",
            "ndjson": "read_json",
            "jsonl": "read_json",
            "parquet": "read_parquet",
            "xlsx": "read_xlsx",
        }
        if suffix not in readers:
            raise RatatouilleError(f"cannot tell the format of {path}; use .csv, .json, .parquet or .xlsx")
        scope = current_scope()
        con = scope.con if scope is not None else self.workspace.con
        if suffix == "xlsx":
            load_extensions(con, "excel")
        args = "".join(f", {k} = {literal(v) if isinstance(v, str) else v}" for k, v in options.items())
        if suffix == "tsv" and "delim" not in options:
            args += ", delim = '\t'"
        try:
            return con.sql(f"SELECT * FROM {readers[suffix]}({literal(full)}{args})").to_arrow_table()
        except Exception as exc:
            raise RatatouilleError(f"cannot read {full}: {exc}") from None

    def is_ingested(self, path: str) -> bool:
        """Whether this file (same path, size and checksum) was marked ingested before."""
        if (scope := current_scope()) is not None:
            return scope.is_ingested(path)
        landing = self._landing()
        full = landing.resolve(path)
        record = self.workspace.state.file_record(self.workspace.name, "sdk", full)
        return record is not None and record["checksum"] == landing.checksum(full)

    def mark_ingested(self, path: str, rows: int | None = None) -> None:
        """Remember a file as ingested (inside a run: once the run has published)."""
        if (scope := current_scope()) is not None:
            scope.mark_ingested(path, rows)
            return
        landing = self._landing()
        full = landing.resolve(path)
        infos = landing.glob(full)
        entry = {"path": full, "size": infos[0].size if infos else 0, "checksum": landing.checksum(full), "rows": rows}
        self.workspace.state.record_files(self.workspace.name, "sdk", [entry], "sdk")

    @property
    def log(self) -> logging.Logger:
        """A logger; inside a run its lines land in the run's logs (`rat logs RUN`)."""
        if (scope := current_scope()) is not None:
            return scope.log
        return logging.getLogger("ratatouille.sdk")

    def now(self) -> datetime:
        """The current time, UTC."""
        from datetime import UTC

        return datetime.now(UTC)

    def _landing(self) -> Landing:
        from ratatouille.storage.files import Landing

        if (scope := current_scope()) is not None:
            return scope.landing
        project = self.workspace.project
        return Landing(project.landing, project.config.storage.s3)


def _as_of(value: str | datetime | int | None) -> AsOf | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return parse_as_of(value.isoformat())
    return parse_as_of(str(value))


rat = Rat()

__all__ = ["Rat", "Result", "pipeline", "rat"]
