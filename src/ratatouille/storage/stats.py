"""Iceberg metrics of a Parquet data file, read from its footer.

Readers prune files with these (DuckDB's ``iceberg_scan`` skips a file whose bounds exclude a
filter), so they must be what PyIceberg would record; ``tests/storage/test_stats.py`` checks
ours against PyIceberg's on every column type. We compute them here because PyIceberg's
version lives in its pyarrow FileIO module, whose import (``pyarrow.dataset``, pandas) costs
more than a small incremental run (see ``storage/fileio.py``).

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
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pyiceberg.conversions import to_bytes
from pyiceberg.io.fileformat import DataFileStatistics
from pyiceberg.transforms import TruncateTransform
from pyiceberg.types import (
    BinaryType,
    DateType,
    DecimalType,
    ListType,
    MapType,
    PrimitiveType,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
)
from pyiceberg.utils.truncate import truncate_upper_bound_binary_string, truncate_upper_bound_text_string

if TYPE_CHECKING:
    import pyarrow.parquet as pq
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


def data_file_statistics(metadata: pq.FileMetaData, schema: Schema, properties: dict[str, str]) -> DataFileStatistics:
    """The Iceberg metrics of a Parquet file shaped as ``schema`` (its columns carry field ids).

    Raises:
        KeyError: a column of the file is not in the schema.
    """
    import pyarrow as pa

    leaves = _leaves(schema, properties)
    totals = _Totals()
    offsets = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        first = group.column(0)
        # A row group starts at its first column's dictionary page, if that comes first.
        if first.has_dictionary_page and first.dictionary_page_offset < first.data_page_offset:
            offsets.append(first.dictionary_page_offset)
        else:
            offsets.append(first.data_page_offset)
        for position in range(metadata.num_columns):
            chunk = group.column(position)
            try:
                _add_chunk(totals, leaves[chunk.path_in_schema], chunk)
            except pa.ArrowNotImplementedError:  # pyarrow cannot read this type's statistics back
                totals.unknown.add(leaves[chunk.path_in_schema].field_id)
    for field_id in totals.unknown:
        totals.bounds.pop(field_id, None)
        totals.null_counts.pop(field_id, None)
    return DataFileStatistics(
        record_count=metadata.num_rows,
        column_sizes=totals.column_sizes,
        value_counts=totals.value_counts,
        null_value_counts=totals.null_counts,
        nan_value_counts={},
        # _Bounds has the interface of PyIceberg's StatsAggregator, which lives in the heavy module.
        column_aggregates=totals.bounds,  # type: ignore[arg-type]
        split_offsets=sorted(offsets),
    )


def _add_chunk(totals: _Totals, leaf: _Leaf, chunk: Any) -> None:
    fid = leaf.field_id
    totals.column_sizes[fid] = totals.column_sizes.get(fid, 0) + chunk.total_compressed_size
    if leaf.mode == "none":
        return
    totals.value_counts[fid] = totals.value_counts.get(fid, 0) + chunk.num_values
    if not chunk.is_stats_set:
        totals.unknown.add(fid)
        return
    stats = chunk.statistics
    if stats.has_null_count:
        totals.null_counts[fid] = totals.null_counts.get(fid, 0) + stats.null_count
    if leaf.mode == "counts":
        return
    bounds = totals.bounds.setdefault(fid, _Bounds(leaf.type, leaf.length))
    if isinstance(leaf.type, DecimalType) and stats.physical_type != "FIXED_LEN_BYTE_ARRAY":
        # Decimals stored as INT32/INT64: the statistics hold the unscaled integers.
        scale = leaf.type.scale
        bounds.update(_decimal(stats.min_raw, scale), _decimal(stats.max_raw, scale))
    elif _raw_is_iceberg(leaf.type, stats):
        # Dates, times and timestamps: Iceberg stores the same integers. Reading them raw
        # also spares pyarrow's conversion to datetime, which imports pandas when present.
        bounds.update(stats.min_raw, stats.max_raw)
    else:
        bounds.update(stats.min, stats.max)


def _raw_is_iceberg(typ: PrimitiveType, stats: Any) -> bool:
    """Whether the chunk's raw statistics are already Iceberg's value (days, microseconds)."""
    if isinstance(typ, DateType):
        return bool(stats.physical_type == "INT32" and stats.logical_type.type == "DATE")
    if isinstance(typ, TimeType | TimestampType | TimestamptzType):
        logical = stats.logical_type
        return bool(
            stats.physical_type == "INT64"
            and logical.type in ("TIME", "TIMESTAMP")
            and '"timeUnit":"microseconds"' in logical.to_json()
        )
    return False


def _decimal(unscaled: int | None, scale: int) -> Decimal | None:
    if unscaled is None:
        return None
    sign, digits, _exponent = Decimal(unscaled).as_tuple()
    return Decimal((sign, digits, -scale))  # exact: no context rounding, even at 38 digits


def _leaves(schema: Schema, properties: dict[str, str]) -> dict[str, _Leaf]:
    """Every leaf column by its Parquet ``path_in_schema``."""
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
            found[".".join(path)] = _Leaf(field_id, typ, name, mode, length)

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
