"""JSON records to flat rows of a parent table and its child tables, spooled to disk, then Arrow.

How a record becomes rows:

- nested objects are flattened into ``parent__child`` columns (``{"address": {"city": "X"}}``
  gives ``address__city``), at any depth;
- ``null`` values, empty objects and empty lists give no column, so a field that is missing,
  ``null`` or empty reads as NULL;
- lists of scalars become Arrow list columns (``tags: ["a", "b"]`` is ``list<string>``);
- lists of objects become child tables ``<table>__<field>`` when ``nested: unnest`` (each row
  carries its parent's key and ``_index``, its position in the list), or JSON text columns when
  ``nested: keep``; any other list (lists of lists, objects mixed with scalars) is JSON text.

Keys of child rows: with a primary key on the resource, first-level child rows carry
``_parent_<key>`` for each key column and merge on those plus ``_index``. Without one, the
parent row gets a generated ``_rat_id`` and its children a ``_parent_id`` that refers to it.
A child row that has children of its own gets a ``_rat_id`` too (derived from its parent's key and
position, so it is stable across reads when the resource has a primary key), and its children
carry ``_parent_id`` + ``_index``.

Types: the schema of each table is inferred over every page of the read before the first batch
is yielded, so every batch of an output has the same schema. ``int`` + ``float`` widen to
``double``; any other mix (``int`` and ``str``, ``bool`` and ``int``, a scalar and a list) is
``string``, with non-text values written as JSON. Strings stay strings: timestamps are not
guessed in bronze. Rows are spooled to a temporary directory while the pages arrive, so memory
holds about one page plus one Arrow batch, never the whole response set.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from ratatouille.errors import ConnectorError

if TYPE_CHECKING:
    import pyarrow as pa

SEP = "__"
ROW_ID = "_rat_id"
PARENT_ID = "_parent_id"
INDEX = "_index"
_INT64 = (-(2**63), 2**63 - 1)


# --- types ------------------------------------------------------------------------------------
# A kind is "null", "bool", "int", "float", "string", "json" or "list:<scalar kind>".


def kind_of(value: Any) -> str:
    """The inferred kind of one JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value <= _INT64[1] else "string"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        element = "null"
        for item in value:
            if isinstance(item, dict | list):
                return "json"
            element = merge_kinds(element, kind_of(item))
        return f"list:{element}"
    return "json"


def merge_kinds(a: str, b: str) -> str:
    """The kind that holds values of both kinds: int + float is float, other mixes are string."""
    if a == b:
        return a
    if a == "null":
        return b
    if b == "null":
        return a
    if {a, b} == {"int", "float"}:
        return "float"
    if a.startswith("list:") and b.startswith("list:"):
        return "list:" + merge_kinds(a[5:], b[5:])
    return "string"


def arrow_type(kind: str) -> pa.DataType:
    """The Arrow type of a kind; a column that was only ever null is ``string``."""
    import pyarrow as pa

    if kind.startswith("list:"):
        return pa.list_(arrow_type(kind[5:]))
    scalar: dict[str, pa.DataType] = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}
    return scalar.get(kind, pa.string())


def _as_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _column(values: list[Any], kind: str) -> pa.Array:
    import pyarrow as pa

    if kind in ("string", "json", "null"):
        values = [_as_text(v) for v in values]
    elif kind in ("list:string", "list:null"):
        values = [None if v is None else [_as_text(item) for item in v] for v in values]
    return pa.array(values, type=arrow_type(kind))


# --- records to rows --------------------------------------------------------------------------


def flatten(
    record: dict[str, Any], unnest: bool, prefix: str = ""
) -> tuple[dict[str, Any], list[tuple[str, list[dict[str, Any]]]]]:
    """Flatten nested objects into ``a__b`` keys; set lists of objects aside when unnesting.

    Returns:
        The flat row, and ``(field, items)`` for every list of objects to unnest.
    """
    flat: dict[str, Any] = {}
    children: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, dict):
            if value:
                sub, nested = flatten(value, unnest, name + SEP)
                flat.update(sub)
                children.extend(nested)
        elif isinstance(value, list):
            if not value:
                continue
            if unnest and all(isinstance(item, dict) for item in value):
                children.append((name, value))
            else:
                flat[name] = value
        else:
            flat[name] = value
    return flat, children


def stable_id(text: str) -> str:
    """A 32-hex-digit id derived from ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class TableKey:
    """How an output table is written: mode and key columns."""

    def __init__(self, mode: Literal["append", "merge"], primary_key: list[str]) -> None:
        self.mode: Literal["append", "merge"] = mode
        self.primary_key = primary_key


class Normaliser:
    """Splits each record of one resource into rows of its table and of its child tables."""

    def __init__(self, table: str, primary_key: list[str], nested: Literal["unnest", "keep"]) -> None:
        self.table = table
        self.primary_key = [key.replace(".", SEP) for key in primary_key]
        self.unnest = nested == "unnest"
        self.keys: dict[str, TableKey] = {
            table: TableKey("merge", self.primary_key) if self.primary_key else TableKey("append", [])
        }

    def split(self, record: Any, emit: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``emit(table, row)`` for the record and for every nested row under it."""
        if not isinstance(record, dict):
            record = {"value": record}
        flat, children = flatten(record, self.unnest)
        if not children:
            emit(self.table, flat)
            return
        if self.primary_key:
            values = [flat.get(key) for key in self.primary_key]
            ident = json.dumps(values, default=str)
            link = {f"_parent_{key}": value for key, value in zip(self.primary_key, values, strict=True)}
        else:
            ident = flat[ROW_ID] = uuid.uuid4().hex
            link = {PARENT_ID: ident}
        emit(self.table, flat)
        self._children(self.table, children, link, ident, 1, emit)

    def _children(
        self,
        table: str,
        children: list[tuple[str, list[dict[str, Any]]]],
        link: dict[str, Any],
        ident: str,
        level: int,
        emit: Callable[[str, dict[str, Any]], None],
    ) -> None:
        reserved = len(link) + 1
        for field_name, items in children:
            child = f"{table}{SEP}{field_name}"
            if child not in self.keys:
                self.keys[child] = self._child_key(level)
            for index, item in enumerate(items):
                flat, nested = flatten(item, self.unnest)
                row = {**link, INDEX: index, **flat}
                if len(row) != reserved + len(flat):  # a field named like a key column: the key wins
                    row.update(link)
                    row[INDEX] = index
                if nested:
                    child_ident = f"{ident}/{field_name}/{index}"
                    row_id = row[ROW_ID] = stable_id(child_ident)
                    emit(child, row)
                    self._children(child, nested, {PARENT_ID: row_id}, child_ident, level + 1, emit)
                else:
                    emit(child, row)

    def _child_key(self, level: int) -> TableKey:
        if not self.primary_key:
            return TableKey("append", [])
        if level == 1:
            return TableKey("merge", [f"_parent_{key}" for key in self.primary_key] + [INDEX])
        return TableKey("merge", [PARENT_ID, INDEX])


# --- spooling ---------------------------------------------------------------------------------


class TableSpool:
    """Rows of one table spooled to disk while their kinds are tracked; read back as Arrow.

    Rows are buffered and written in chunks with ``pickle`` (a private file this process writes
    and reads back, in a directory only its user can open): several times faster than JSON lines.
    """

    CHUNK_ROWS = 2_000

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.kinds: dict[str, str] = {}
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        self._file: IO[bytes] | None = path.open("wb")

    def add(self, row: dict[str, Any]) -> None:
        """Append one row and widen the column kinds to fit it."""
        kinds = self.kinds
        for key, value in row.items():
            kind = _FAST_KINDS.get(type(value)) or kind_of(value)
            if kind == "int" and not _INT64[0] <= value <= _INT64[1]:
                kind = "string"
            previous = kinds.get(key)
            if previous != kind:
                kinds[key] = kind if previous is None else merge_kinds(previous, kind)
        self._buffer.append(row)
        self.rows += 1
        if len(self._buffer) >= self.CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            assert self._file is not None, "spool already closed"
            pickle.dump(self._buffer, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self._buffer = []

    def close(self) -> None:
        """Finish writing (idempotent)."""
        if self._file is not None:
            self._flush()
            self._file.close()
            self._file = None

    def schema(self) -> pa.Schema:
        """The Arrow schema over every row added: columns in the order first seen."""
        import pyarrow as pa

        return pa.schema([pa.field(name, arrow_type(kind)) for name, kind in self.kinds.items()])

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Read the rows back as record batches of at most ``batch_rows`` rows, then delete the spool.

        Raises:
            ConnectorError: the spool was removed before it was read: the read moved on to the next
                resource before this output's batches were consumed.
        """
        import pyarrow as pa

        self.close()
        if not self.path.exists():
            raise ConnectorError(
                f"the rows of `{self.name}` were discarded: consume each output's batches before asking"
                " the read for the next output"
            )
        schema = self.schema()
        kinds = list(self.kinds.items())
        try:
            with self.path.open("rb") as spool:
                pending: list[dict[str, Any]] = []
                while True:
                    try:
                        pending.extend(pickle.load(spool))
                    except EOFError:
                        break
                    while len(pending) >= batch_rows:
                        chunk, pending = pending[:batch_rows], pending[batch_rows:]
                        yield pa.RecordBatch.from_arrays(_columns(chunk, kinds), schema=schema)
                if pending:
                    yield pa.RecordBatch.from_arrays(_columns(pending, kinds), schema=schema)
        finally:
            self.path.unlink(missing_ok=True)


_FAST_KINDS: dict[type, str] = {str: "string", int: "int", float: "float", bool: "bool"}


def _columns(rows: list[dict[str, Any]], kinds: list[tuple[str, str]]) -> list[pa.Array]:
    return [_column([row.get(name) for row in rows], kind) for name, kind in kinds]


class ResourceSpool:
    """The spools of one resource's tables, in the order the tables were first seen."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tables: dict[str, TableSpool] = {}

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Append a row to ``table``'s spool, creating it on first use."""
        spool = self.tables.get(table)
        if spool is None:
            spool = self.tables[table] = TableSpool(table, self.directory / f"{len(self.tables)}.spool")
        spool.add(row)

    def close(self) -> None:
        """Finish writing every spool."""
        for spool in self.tables.values():
            spool.close()
