"""Partition specs from DESIGN's transform strings: ``day(ts)``, ``bucket(16, id)``, ``store_id``.

Each field knows two things: the Iceberg transform for the table's spec, and a DuckDB
expression that groups rows exactly as that transform does, so the writer can produce one
file per partition value (Iceberg derives each file's partition from its column bounds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    Transform,
    TruncateTransform,
    YearTransform,
)

from ratatouille.engine import quote
from ratatouille.errors import SchemaError

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.table import Transaction

_FIELD = re.compile(r"^\s*(?:(?P<fn>[a-z]+)\s*\(\s*(?:(?P<n>\d+)\s*,\s*)?(?P<col>[^()]+?)\s*\)|(?P<bare>[^()]+?))\s*$")
TRANSFORMS = ("identity", "year", "month", "day", "hour", "bucket", "truncate")


@dataclass(frozen=True)
class PartitionField:
    """One parsed partition field."""

    transform: str
    column: str
    width: int | None = None

    def __str__(self) -> str:
        if self.transform == "identity":
            return self.column
        arg = f"{self.width}, " if self.width is not None else ""
        return f"{self.transform}({arg}{self.column})"

    @property
    def name(self) -> str:
        """The partition field's name in the spec (Iceberg's conventional naming)."""
        if self.transform == "identity":
            return self.column
        suffix = f"_{self.width}" if self.width is not None else ""
        return f"{self.column}_{self.transform}{suffix}"

    def iceberg(self) -> Transform[Any, Any]:
        """The Iceberg transform."""
        if self.transform == "bucket":
            assert self.width is not None
            return BucketTransform(self.width)
        if self.transform == "truncate":
            assert self.width is not None
            return TruncateTransform(self.width)
        simple: dict[str, Transform[Any, Any]] = {
            "identity": IdentityTransform(),
            "year": YearTransform(),
            "month": MonthTransform(),
            "day": DayTransform(),
            "hour": HourTransform(),
        }
        return simple[self.transform]

    def duckdb_expression(self, con: duckdb.DuckDBPyConnection, column_type: object) -> str:
        """A DuckDB expression whose value is equal exactly when the transform's value is.

        Raises:
            SchemaError: the transform cannot apply to the column's type.
        """
        col = quote(self.column)
        if self.transform == "identity":
            return col
        if self.transform in ("year", "month", "day", "hour"):
            return f"date_trunc('{self.transform}', {col})"
        if self.transform == "truncate":
            kind = str(column_type).upper()
            if kind in ("VARCHAR", "BLOB"):
                return f"left({col}, {self.width})"
            if kind in ("INTEGER", "BIGINT"):
                return f"({col} - ((({col} % {self.width}) + {self.width}) % {self.width}))"
            raise SchemaError(f"partition `{self}`: truncate applies to strings and integers, not {kind}")
        return f"{_register_bucket(con, self)}({col})"


def _register_bucket(con: duckdb.DuckDBPyConnection, field: PartitionField) -> str:
    """Register Iceberg's murmur3 bucket function as a DuckDB UDF (Python, so slower)."""
    import duckdb
    from pyiceberg.types import LongType

    name = f"__rat_bucket_{field.width}"
    exists = con.execute(f"SELECT count(*) FROM duckdb_functions() WHERE function_name = '{name}'").fetchone()
    if exists and exists[0]:
        return name
    assert field.width is not None
    transform = BucketTransform(field.width).transform(LongType())

    def bucket(value: int | None) -> int | None:
        if value is None:
            return None
        result = transform(value)
        return None if result is None else int(result)

    con.create_function(  # type: ignore[call-overload]  # the stubs lack null_handling="special"
        name,
        bucket,
        [duckdb.sqltype("BIGINT")],
        duckdb.sqltype("INTEGER"),
        null_handling="special",
        side_effects=False,
    )
    return name


def parse(spec: list[str] | tuple[str, ...] | None) -> list[PartitionField]:
    """Parse partition strings.

    Raises:
        SchemaError: a string is not one of ``col``, ``identity(col)``, ``year|month|day|hour(col)``,
            ``bucket(n, col)``, ``truncate(n, col)``.
    """
    fields = []
    for text in spec or []:
        match = _FIELD.match(text)
        if not match:
            raise SchemaError(f"cannot read partition `{text}`; use e.g. day(ts), bucket(16, id) or store_id")
        if match.group("bare"):
            fields.append(PartitionField("identity", match.group("bare").strip()))
            continue
        fn, width, col = match.group("fn"), match.group("n"), match.group("col").strip()
        if fn not in TRANSFORMS:
            raise SchemaError(f"unknown partition transform `{fn}` in `{text}`; use one of {', '.join(TRANSFORMS)}")
        needs_width = fn in ("bucket", "truncate")
        if needs_width != (width is not None):
            usage = f"{fn}(n, column)" if needs_width else f"{fn}(column)"
            raise SchemaError(f"partition `{text}`: write it as {usage}")
        fields.append(PartitionField(fn, col, int(width) if width else None))
    return fields


def apply(tx: Transaction, fields: list[PartitionField]) -> None:
    """Set the partition spec of a table being created or replaced."""
    if not fields:
        return
    with tx.update_spec() as update:
        for field in fields:
            update.add_field(field.column, field.iceberg(), field.name)


def from_spec(spec_fields: list[tuple[str, str]]) -> list[PartitionField]:
    """Rebuild fields from (source column, transform text) pairs of an existing table's spec."""
    fields = []
    for column, transform in spec_fields:
        match = re.match(r"^(\w+)(?:\[(\d+)\])?$", transform)
        if not match:
            raise SchemaError(f"unsupported partition transform `{transform}` on `{column}`")
        name, width = match.group(1), match.group(2)
        fields.append(PartitionField(name, column, int(width) if width else None))
    return fields
