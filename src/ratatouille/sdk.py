"""``from ratatouille import rat``: the Python SDK for notebooks, apps and pipelines.

``rat`` finds the project the same way the CLI does (``$RAT_PROJECT``, else the nearest
``ratatouille.yaml`` upwards from the working directory) on first use, and delegates every
call to that project's ``Workspace``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.storage.reader import AsOf, parse_as_of
from ratatouille.storage.writer import WriteResult
from ratatouille.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]
    import pyarrow as pa


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

        Raises:
            QueryError: the SQL fails.
            TableNotFoundError: it names a table that does not exist.
        """
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
        """Append data (SQL, Arrow, pandas, polars) to a table, creating it if needed."""
        return self.workspace.append(name, data, **options)

    def overwrite(self, name: str, data: Any, *, where: str | None = None, **options: Any) -> WriteResult:
        """Replace a table's rows (or those matching ``where``) with data."""
        return self.workspace.overwrite(name, data, where=where, **options)

    def merge(self, name: str, data: Any, *, unique_key: str | Sequence[str], **options: Any) -> WriteResult:
        """Insert data, replacing rows whose ``unique_key`` already exists."""
        return self.workspace.merge(name, data, unique_key=unique_key, **options)


def _as_of(value: str | datetime | int | None) -> AsOf | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return parse_as_of(value.isoformat())
    return parse_as_of(str(value))


rat = Rat()
