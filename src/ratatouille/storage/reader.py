"""Make Iceberg tables visible to DuckDB SQL as ``layer.table`` and ``workspace.layer.table``.

Each workspace is an attached in-memory DuckDB database with one schema per layer; each table
is a view over ``iceberg_scan`` of its current metadata file (or of a snapshot, for time
travel). Only the tables a statement names are registered, so a query over two tables does
not open the other hundred.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ratatouille.engine import literal, load_extensions, quote
from ratatouille.errors import QueryError
from ratatouille.storage.catalog import TableRef

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class AsOf:
    """Which version of the tables to read: a snapshot id or a point in time (UTC)."""

    snapshot_id: int | None = None
    timestamp: datetime | None = None

    def scan_options(self) -> str:
        """Extra ``iceberg_scan`` arguments."""
        if self.snapshot_id is not None:
            return f", snapshot_from_id={int(self.snapshot_id)}"
        if self.timestamp is not None:
            return f", snapshot_from_timestamp=TIMESTAMP '{self.timestamp.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
        return ""


def parse_as_of(text: str) -> AsOf:
    """Read ``--as-of``: a snapshot id, or an ISO date/timestamp (UTC unless it says otherwise).

    Raises:
        QueryError: the text is neither.
    """
    from datetime import UTC

    text = text.strip()
    if text.isdigit() and len(text) > 8:
        return AsOf(snapshot_id=int(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"cannot read --as-of `{text}`; give a snapshot id (see `rat history TABLE`) "
            "or a timestamp like 2026-01-31T12:00:00"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return AsOf(timestamp=moment)


# Marker: the statement could not be analysed, so every table is made visible.
ALL_TABLES: frozenset[tuple[str, str, str]] = frozenset({("*", "*", "*")})


class TableViews:
    """Registers table views on one DuckDB connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, current_workspace: str) -> None:
        self.con = con
        self.current = current_workspace
        self._attached: set[str] = set()
        self._iceberg_loaded = False
        self._schemas: set[tuple[str, str]] = set()
        self._views: dict[tuple[str, str, str], str] = {}
        self._attach(current_workspace)
        con.execute(f"USE {quote(current_workspace)}")

    def _attach(self, workspace: str) -> None:
        if workspace not in self._attached:
            self.con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {quote(workspace)}")
            self._attached.add(workspace)

    def register(self, ref: TableRef, as_of: AsOf | None = None, view_name: str | None = None) -> None:
        """Create or replace the view for one table."""
        assert ref.metadata_location is not None
        if not self._iceberg_loaded:
            load_extensions(self.con, "iceberg")
            self._iceberg_loaded = True
        self._attach(ref.workspace)
        if (ref.workspace, ref.layer) not in self._schemas:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(ref.workspace)}.{quote(ref.layer)}")
            self._schemas.add((ref.workspace, ref.layer))
        options = as_of.scan_options() if as_of else ""
        if as_of is not None and as_of.timestamp is not None:
            self._check_existed(ref, as_of.timestamp)
        source = f"iceberg_scan('{_sql_string(ref.metadata_location)}'{options})"
        key = (ref.workspace, ref.layer, view_name or ref.name)
        if self._views.get(key) == source:
            return
        target = ".".join(quote(p) for p in key)
        self.con.execute(f"CREATE OR REPLACE VIEW {target} AS SELECT * FROM {source}")
        self._views[key] = source

    def _check_existed(self, ref: TableRef, moment: datetime) -> None:
        """A time before a table's first snapshot reads nothing: say so, rather than give 0 rows.

        Raises:
            QueryError: the table has no snapshot at or before ``moment``.
        """
        row = self.con.execute(
            f"SELECT min(timestamp_ms) FROM iceberg_snapshots('{_sql_string(str(ref.metadata_location))}')"
        ).fetchone()
        first = row[0] if row else None
        if first is None or moment < first:
            since = f"its history starts at {first:%Y-%m-%d %H:%M:%S} UTC" if first else "it has no snapshot yet"
            raise QueryError(
                f"`{ref.short}` did not exist yet at {moment:%Y-%m-%d %H:%M:%S} UTC ({since}); "
                f"pick a later --as-of (`rat history {ref.short}` lists its snapshots)"
            )

    def referenced_names(self, sql: str) -> frozenset[tuple[str, str, str]]:
        """The ``(workspace, layer, table)`` names ``sql`` reads, or ``ALL_TABLES`` when unknown.

        Uses DuckDB's parser only (``json_serialize_sql``), so nothing is bound or read. For
        statements it cannot serialise (DDL, several statements), every table is wanted.
        """
        import json

        row = self.con.execute(f"SELECT json_serialize_sql({literal(sql)})").fetchone()
        tree = json.loads(row[0]) if row else {"error": True}
        if tree.get("error"):
            # A syntax error is reported by DuckDB when the statement runs, with its position.
            return frozenset() if tree.get("error_type") == "parser" else ALL_TABLES
        wanted: set[tuple[str, str, str]] = set()
        for catalog, schema, name in _base_tables(tree):
            if schema:
                wanted.add((catalog or self.current, schema.lower(), name.lower()))
        return frozenset(wanted)


def _base_tables(node: object) -> Iterator[tuple[str, str, str]]:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE":
            yield (str(node.get("catalog_name") or ""), str(node.get("schema_name") or ""), str(node.get("table_name")))
        for value in node.values():
            yield from _base_tables(value)
    elif isinstance(node, list):
        for value in node:
            yield from _base_tables(value)


def _sql_string(value: str) -> str:
    return value.replace("'", "''")
