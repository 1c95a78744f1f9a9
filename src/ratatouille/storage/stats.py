"""Iceberg metrics of a Parquet data file, read from its footer with DuckDB's ``parquet_metadata``.

Readers prune files with these (DuckDB's ``iceberg_scan`` skips a file whose bounds exclude a
filter), so they must be what PyIceberg would record; ``tests/storage/test_stats.py`` checks
ours against PyIceberg's on every column type. We compute them here because PyIceberg's
version lives in its pyarrow FileIO module, whose import (``pyarrow.dataset``, pandas) costs
more than a small incremental run (see ``storage/fileio.py``). DuckDB reads the footers of all
of a write's files in one query, and spares a run the import of pyarrow and numpy (0.13 s of
CPU, on every run that writes). Bounds come back as DuckDB's text of the value; DuckDB casts
the temporal and binary ones back (``_FOOTER_SQL``), Python parses the others.

What is recorded, per Iceberg field id, following the table's metrics modes
(``write.metadata.metrics.default``, default ``truncate(16)``, and
``write.metadata.metrics.column.<name>``):

- ``none``: only the column's size on disk;
- ``counts``: also value and null counts (the mode of every field nested in a struct, list or map);
- ``truncate(n)`` / ``full``: also lower and upper bounds; ``truncate`` shortens strings and
  binary to ``n`` (the upper bound rounded up so it stays an upper bound) and means ``full`` for
  other types.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pyiceberg.conversions import to_bytes
from pyiceberg.io.fileformat import DataFileStatistics
from pyiceberg.transforms import TruncateTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    PrimitiveType,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)
from pyiceberg.utils.truncate import truncate_upper_bound_binary_string, truncate_upper_bound_text_string

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.schema import Schema
    from pyiceberg.types import IcebergType

DEFAULT_MODE_PROPERTY = "write.metadata.metrics.default"
COLUMN_MODE_PREFIX = "write.metadata.metrics.column."
DEFAULT_MODE = "truncate(16)"


@dataclass(frozen=True)
class _Leaf:
    """One Parquet leaf column: its field id, type, dotted Iceberg name and metrics mode."""

    field_id: int
    type: PrimitiveType
    name: str
    mode: str  # none | counts | full | truncate
    length: int | None = None


@dataclass
class _Bounds:
    """Running min and max of one column; serialized as Iceberg single-value bytes."""

    type: PrimitiveType
    length: int | None
    current_min: Any = None
    current_max: Any = None

    def update(self, low: Any, high: Any) -> None:
        if low is not None and (self.current_min is None or low < self.current_min):
            self.current_min = low
        if high is not None and (self.current_max is None or high > self.current_max):
            self.current_max = high

    def min_as_bytes(self) -> bytes | None:
        if self.current_min is None:
            return None
        value = self.current_min
        if self.length is not None:
            value = TruncateTransform(width=self.length).transform(self.type)(value)
        return to_bytes(self.type, value)

    def max_as_bytes(self) -> bytes | None:
        if self.current_max is None:
            return None
        if isinstance(self.type, StringType):
            text = truncate_upper_bound_text_string(self.current_max, self.length)
            return to_bytes(self.type, text) if text is not None else None
        if isinstance(self.type, BinaryType):
            raw = truncate_upper_bound_binary_string(self.current_max, self.length)
            return to_bytes(self.type, raw) if raw is not None else None
        return to_bytes(self.type, self.current_max)


@dataclass
class _Totals:
    column_sizes: dict[int, int] = field(default_factory=dict)
    value_counts: dict[int, int] = field(default_factory=dict)
    null_counts: dict[int, int] = field(default_factory=dict)
    bounds: dict[int, _Bounds] = field(default_factory=dict)
    unknown: set[int] = field(default_factory=set)  # columns whose chunks lack statistics


# One row per column chunk; the bounds also as DuckDB casts them back from their text (the
# types whose text Python would have to parse like DuckDB: dates beyond year 9999, BC, ...).
_FOOTER_SQL = """
SELECT file_name, row_group_num_rows, column_id, path_in_schema, num_values,
       total_compressed_size, stats_null_count, stats_min_value, stats_max_value,
       dictionary_page_offset, data_page_offset,
       TRY_CAST(stats_min_value AS BLOB), TRY_CAST(stats_max_value AS BLOB),
       TRY_CAST(stats_min_value AS DATE) - DATE '1970-01-01', TRY_CAST(stats_max_value AS DATE) - DATE '1970-01-01',
       epoch_us(DATE '1970-01-01' + TRY_CAST(stats_min_value AS TIME)),
       epoch_us(DATE '1970-01-01' + TRY_CAST(stats_max_value AS TIME)),
       epoch_us(TRY_CAST(stats_min_value AS TIMESTAMP)), epoch_us(TRY_CAST(stats_max_value AS TIMESTAMP)),
       epoch_us(TRY_CAST(stats_min_value AS TIMESTAMPTZ)), epoch_us(TRY_CAST(stats_max_value AS TIMESTAMPTZ))
FROM parquet_metadata({files})
ORDER BY file_name, row_group_id, column_id
"""


@dataclass(frozen=True)
class Chunk:
    """One column chunk of a Parquet footer, as ``read_footers`` found it."""

    row_group_rows: int
    column: int
    path: str  # DuckDB's path_in_schema: the names from the top, joined with ", "
    num_values: int
    compressed_size: int
    null_count: int | None
    min_text: str | None
    max_text: str | None
    dictionary_page_offset: int | None
    data_page_offset: int
    cast: tuple[Any, ...]  # (min, max) as BLOB, date days, time, timestamp and timestamptz micros


def read_footers(con: duckdb.DuckDBPyConnection, paths: list[str]) -> dict[str, list[Chunk]]:
    """The column chunks of every file in ``paths`` (local paths or URIs DuckDB can read), by path."""
    from ratatouille.engine import literal

    found: dict[str, list[Chunk]] = {path: [] for path in paths}
    if not paths:
        return found
    files = "[" + ", ".join(literal(p) for p in paths) + "]"
    for row in con.execute(_FOOTER_SQL.format(files=files)).fetchall():
        name, group_rows, column, path, values, size, nulls, low, high, dictionary, data, *cast = row
        chunk = Chunk(group_rows, column, path, values, size, nulls, low, high, dictionary, data, tuple(cast))
        if name not in found:  # never guess: a file whose chunks went missing would look empty
            raise RuntimeError(f"DuckDB described {name}, which is not one of the files asked for")
        found[name].append(chunk)
    return found


def data_file_statistics(chunks: list[Chunk], schema: Schema, properties: dict[str, str]) -> DataFileStatistics:
    """The Iceberg metrics of a Parquet file shaped as ``schema`` (its columns carry field ids).

    Raises:
        KeyError: a column of the file is not in the schema.
    """
    leaves = _leaves(schema, properties)
    totals = _Totals()
    offsets = []
    rows = 0
    for chunk in chunks:
        if chunk.column == 0:
            rows += chunk.row_group_rows
            # A row group starts at its first column's dictionary page, if that comes first.
            dictionary = chunk.dictionary_page_offset
            first = dictionary if dictionary is not None and dictionary < chunk.data_page_offset else None
            offsets.append(first if first is not None else chunk.data_page_offset)
        _add_chunk(totals, leaves[chunk.path], chunk)
    for field_id in totals.unknown:
        totals.bounds.pop(field_id, None)
        totals.null_counts.pop(field_id, None)
    return DataFileStatistics(
        record_count=rows,
        column_sizes=totals.column_sizes,
        value_counts=totals.value_counts,
        null_value_counts=totals.null_counts,
        nan_value_counts={},
        # _Bounds has the interface of PyIceberg's StatsAggregator, which lives in the heavy module.
        column_aggregates=totals.bounds,  # type: ignore[arg-type]
        split_offsets=sorted(offsets),
    )


def _add_chunk(totals: _Totals, leaf: _Leaf, chunk: Chunk) -> None:
    fid = leaf.field_id
    totals.column_sizes[fid] = totals.column_sizes.get(fid, 0) + chunk.compressed_size
    if leaf.mode == "none":
        return
    totals.value_counts[fid] = totals.value_counts.get(fid, 0) + chunk.num_values
    if chunk.null_count is None and chunk.min_text is None and chunk.max_text is None:
        totals.unknown.add(fid)  # the chunk has no statistics
        return
    if chunk.null_count is not None:
        totals.null_counts[fid] = totals.null_counts.get(fid, 0) + chunk.null_count
    if leaf.mode == "counts":
        return
    bounds = totals.bounds.setdefault(fid, _Bounds(leaf.type, leaf.length))
    low, high = _value(leaf.type, chunk, 0), _value(leaf.type, chunk, 1)
    if (low is None) != (chunk.min_text is None) or (high is None) != (chunk.max_text is None):
        totals.unknown.add(fid)  # a bound we cannot read back: none rather than a wrong one
        return
    bounds.update(low, high)


def _value(typ: PrimitiveType, chunk: Chunk, which: int) -> Any:
    """The chunk's lower (``which`` 0) or upper (1) bound as the Python value PyIceberg expects
    (Iceberg's integers for dates, times and timestamps)."""
    text = chunk.min_text if which == 0 else chunk.max_text
    if text is None:
        return None
    cast = chunk.cast
    if isinstance(typ, BinaryType | FixedType):
        return cast[0 + which]
    if isinstance(typ, DateType):
        return cast[2 + which]
    if isinstance(typ, TimeType):
        return cast[4 + which]
    if isinstance(typ, TimestamptzType):
        return cast[8 + which]
    if isinstance(typ, TimestampType):
        return cast[6 + which]
    if isinstance(typ, DecimalType):
        return Decimal(text)
    if isinstance(typ, BooleanType):
        return text == "true"
    if isinstance(typ, IntegerType | LongType):
        return int(text)
    if isinstance(typ, FloatType | DoubleType):
        return float(text)
    if isinstance(typ, UUIDType):
        return uuid.UUID(text).bytes
    return text


def _leaves(schema: Schema, properties: dict[str, str]) -> dict[str, _Leaf]:
    """Every leaf column by its Parquet path, as DuckDB's ``parquet_metadata`` writes it."""
    default = properties.get(DEFAULT_MODE_PROPERTY, DEFAULT_MODE)
    found: dict[str, _Leaf] = {}

    def visit(field_id: int, typ: IcebergType, path: list[str]) -> None:
        if isinstance(typ, StructType):
            for child in typ.fields:
                visit(child.field_id, child.field_type, [*path, child.name])
        elif isinstance(typ, ListType):
            visit(typ.element_id, typ.element_type, [*path, "list", "element"])
        elif isinstance(typ, MapType):
            visit(typ.key_id, typ.key_type, [*path, "key_value", "key"])
            visit(typ.value_id, typ.value_type, [*path, "key_value", "value"])
        elif isinstance(typ, PrimitiveType):
            name = schema.find_column_name(field_id)
            if name is None:
                return
            mode, length = _mode(properties.get(COLUMN_MODE_PREFIX + name, default))
            if mode == "truncate" and not isinstance(typ, StringType | BinaryType):
                mode, length = "full", None
            if "." in name and mode in ("truncate", "full"):
                mode, length = "counts", None  # no bounds for nested fields
            found[", ".join(path)] = _Leaf(field_id, typ, name, mode, length)

    for top in schema.fields:
        visit(top.field_id, top.field_type, [top.name])
    return found


def _mode(text: str) -> tuple[str, int | None]:
    """``none`` | ``counts`` | ``full`` | ``truncate(n)``, as PyIceberg reads the property.

    Raises:
        ValueError: anything else.
    """
    mode = text.strip().lower()
    if mode in ("none", "counts", "full"):
        return mode, None
    match = re.fullmatch(r"truncate\((\d+)\)", mode)
    if match is None or int(match[1]) < 1:
        raise ValueError(f"unsupported metrics mode `{text}`: use none, counts, full or truncate(n) with n >= 1")
    return "truncate", int(match[1])
