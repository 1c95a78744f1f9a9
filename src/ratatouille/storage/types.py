"""Type mapping between DuckDB and Iceberg, and the rules for schema drift.

DuckDB computes every write, so incoming data is described by DuckDB types. They map to
Iceberg types one way (``to_iceberg``) and back (``to_duckdb``) for the casts that put data in
the table's exact shape. Types Iceberg lacks are widened to the nearest one that loses nothing
(``UINTEGER`` -> ``long``, ``HUGEINT`` -> ``decimal(38, 0)``, ``JSON`` -> ``string``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from ratatouille.engine import quote
from ratatouille.errors import SchemaError

if TYPE_CHECKING:
    from pyiceberg.schema import Schema

_SIMPLE: dict[str, IcebergType] = {
    "boolean": BooleanType(),
    "tinyint": IntegerType(),
    "smallint": IntegerType(),
    "integer": IntegerType(),
    "utinyint": IntegerType(),
    "usmallint": IntegerType(),
    "bigint": LongType(),
    "uinteger": LongType(),
    "ubigint": DecimalType(20, 0),
    "hugeint": DecimalType(38, 0),
    "uhugeint": DecimalType(38, 0),
    "float": FloatType(),
    "double": DoubleType(),
    "date": DateType(),
    "time": TimeType(),
    "timestamp": TimestampType(),
    "timestamp_s": TimestampType(),
    "timestamp_ms": TimestampType(),
    "timestamp_ns": TimestampType(),
    "timestamp with time zone": TimestamptzType(),
    "varchar": StringType(),
    "enum": StringType(),
    "uuid": UUIDType(),
    "blob": BinaryType(),
    "bit": BinaryType(),
}


class _Ids:
    """Hands out field ids for a schema being built; the catalog re-assigns them on create."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


def to_iceberg(duck_type: Any, column: str, ids: _Ids | None = None) -> IcebergType:
    """Map a ``duckdb.DuckDBPyType`` to an Iceberg type.

    Raises:
        SchemaError: the type has no faithful Iceberg equivalent (INTERVAL, UNION, ...).
    """
    ids = ids or _Ids()
    kind = duck_type.id
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind == "decimal":
        params = dict(duck_type.children)
        return DecimalType(int(params["precision"]), int(params["scale"]))
    if kind == "struct":
        fields = [
            NestedField(ids.next(), name, to_iceberg(child, f"{column}.{name}", ids), required=False)
            for name, child in duck_type.children
        ]
        return StructType(*fields)
    if kind in ("list", "array"):
        child = dict(duck_type.children)["child"]
        element_id = ids.next()
        return ListType(element_id, to_iceberg(child, f"{column}[]", ids), element_required=False)
    if kind == "map":
        children = dict(duck_type.children)
        key_id, value_id = ids.next(), ids.next()
        return MapType(
            key_id,
            to_iceberg(children["key"], f"{column}.key", ids),
            value_id,
            to_iceberg(children["value"], f"{column}.value", ids),
            value_required=False,
        )
    raise SchemaError(
        f"column `{column}` has DuckDB type {duck_type}, which Iceberg tables cannot store; "
        "cast it in your SQL (for example to VARCHAR or BIGINT)"
    )


def to_duckdb(iceberg_type: IcebergType) -> str:
    """The DuckDB type that holds an Iceberg type exactly, as SQL text."""
    if isinstance(iceberg_type, BooleanType):
        return "BOOLEAN"
    if isinstance(iceberg_type, IntegerType):
        return "INTEGER"
    if isinstance(iceberg_type, LongType):
        return "BIGINT"
    if isinstance(iceberg_type, FloatType):
        return "FLOAT"
    if isinstance(iceberg_type, DoubleType):
        return "DOUBLE"
    if isinstance(iceberg_type, DecimalType):
        return f"DECIMAL({iceberg_type.precision}, {iceberg_type.scale})"
    if isinstance(iceberg_type, DateType):
        return "DATE"
    if isinstance(iceberg_type, TimeType):
        return "TIME"
    if isinstance(iceberg_type, TimestamptzType):
        return "TIMESTAMPTZ"
    if isinstance(iceberg_type, TimestampType):
        return "TIMESTAMP"
    if isinstance(iceberg_type, StringType):
        return "VARCHAR"
    if isinstance(iceberg_type, UUIDType):
        return "UUID"
    if isinstance(iceberg_type, BinaryType | FixedType):
        return "BLOB"
    if isinstance(iceberg_type, StructType):
        inner = ", ".join(f"{quote(f.name)} {to_duckdb(f.field_type)}" for f in iceberg_type.fields)
        return f"STRUCT({inner})"
    if isinstance(iceberg_type, ListType):
        return f"{to_duckdb(iceberg_type.element_type)}[]"
    if isinstance(iceberg_type, MapType):
        return f"MAP({to_duckdb(iceberg_type.key_type)}, {to_duckdb(iceberg_type.value_type)})"
    raise SchemaError(f"Iceberg type {iceberg_type} is not supported by Ratatouille yet")


def can_promote(source: IcebergType, target: IcebergType) -> bool:
    """Whether Iceberg allows widening ``source`` to ``target`` without losing values."""
    if source == target:
        return True
    if isinstance(source, IntegerType) and isinstance(target, LongType):
        return True
    if isinstance(source, FloatType) and isinstance(target, DoubleType):
        return True
    if isinstance(source, DecimalType) and isinstance(target, DecimalType):
        return source.scale == target.scale and source.precision <= target.precision
    return False


@dataclass(frozen=True)
class SchemaDiff:
    """How incoming columns differ from a table's columns."""

    added: list[tuple[str, IcebergType]]
    widened: list[tuple[str, IcebergType, IcebergType]]
    incompatible: list[tuple[str, IcebergType, IcebergType]]

    @property
    def evolves(self) -> bool:
        """Whether the table schema must change to hold the data."""
        return bool(self.added or self.widened)

    def describe(self) -> list[str]:
        """Human-readable lines, one per change."""
        lines = [f"new column `{name}` {typ}" for name, typ in self.added]
        lines += [f"column `{name}` widens from {old} to {new}" for name, old, new in self.widened]
        lines += [
            f"column `{name}` is {new} in the data but {old} in the table" for name, old, new in self.incompatible
        ]
        return lines


def diff(table: Schema, incoming: list[tuple[str, IcebergType]]) -> SchemaDiff:
    """Compare incoming top-level columns with the table's schema."""
    added: list[tuple[str, IcebergType]] = []
    widened: list[tuple[str, IcebergType, IcebergType]] = []
    incompatible: list[tuple[str, IcebergType, IcebergType]] = []
    by_name = {f.name: f.field_type for f in table.fields}
    for name, new in incoming:
        old = by_name.get(name)
        if old is None:
            added.append((name, new))
        elif _same_shape(old, new) or can_promote(new, old) or _fits_numeric(new, old):
            continue  # the data fits: DuckDB casts it to the table's type
        elif can_promote(old, new):
            widened.append((name, old, new))
        else:
            incompatible.append((name, old, new))
    return SchemaDiff(added, widened, incompatible)


def _fits_numeric(new: IcebergType, old: IcebergType) -> bool:
    """Numbers written into a decimal or floating column are cast (DuckDB refuses overflows),
    so ``[{"price": 12.5}]`` can go into a ``decimal(10, 2)`` column."""
    numbers = (IntegerType, LongType, FloatType, DoubleType, DecimalType)
    return isinstance(new, numbers) and isinstance(old, DecimalType | DoubleType | FloatType)


def _same_shape(old: IcebergType, new: IcebergType) -> bool:
    """Equal types, ignoring field ids inside nested types."""
    if isinstance(old, StructType) and isinstance(new, StructType):
        old_fields = {f.name: f.field_type for f in old.fields}
        return all(
            name in old_fields and (_same_shape(old_fields[name], t) or can_promote(t, old_fields[name]))
            for name, t in ((f.name, f.field_type) for f in new.fields)
        )
    if isinstance(old, ListType) and isinstance(new, ListType):
        return _same_shape(old.element_type, new.element_type) or can_promote(new.element_type, old.element_type)
    if isinstance(old, MapType) and isinstance(new, MapType):
        return _same_shape(old.key_type, new.key_type) and _same_shape(old.value_type, new.value_type)
    return old == new


def field_ids_option(schema: Schema) -> str:
    """The ``FIELD_IDS {...}`` value for DuckDB's parquet writer, so files carry Iceberg field ids."""
    return "{" + ", ".join(_field_id_entry(f.name, f.field_id, f.field_type) for f in schema.fields) + "}"


def _field_id_entry(name: str, field_id: int, typ: IcebergType) -> str:
    key = quote(name)
    if isinstance(typ, StructType):
        inner = ", ".join(_field_id_entry(f.name, f.field_id, f.field_type) for f in typ.fields)
        return f"{key}: {{__duckdb_field_id: {field_id}, {inner}}}"
    if isinstance(typ, ListType):
        element = _field_id_entry("element", typ.element_id, typ.element_type)
        return f"{key}: {{__duckdb_field_id: {field_id}, {element}}}"
    if isinstance(typ, MapType):
        k = _field_id_entry("key", typ.key_id, typ.key_type)
        v = _field_id_entry("value", typ.value_id, typ.value_type)
        return f"{key}: {{__duckdb_field_id: {field_id}, {k}, {v}}}"
    return f"{key}: {field_id}"
