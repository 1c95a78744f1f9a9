"""Column types: what must be converted, and where, so every value reaches Arrow unchanged.

DuckDB's scanners read most types faithfully. The exceptions are fixed in two places:

* **in the source database**, for values DuckDB would read lossily:
  PostgreSQL ``numeric`` without a precision or wider than 38 digits (DuckDB reads it as a double;
  it becomes exact text), ``numeric[]`` (text array), ``money`` (``numeric(19,2)``), ``timetz``
  (converted to UTC ``time``); MySQL ``DECIMAL`` wider than 38 digits (exact text) and text columns
  that the MySQL scanner would read as bytes (``JSON``, ``utf8mb4_bin`` text, MariaDB ``UUID`` and
  ``INET6``): converted to ``utf8mb4``;
* **in DuckDB**, for types Arrow or Iceberg cannot hold: unsigned integers are widened
  (``BIGINT UNSIGNED`` to ``decimal(20,0)``), enums, UUIDs and intervals become text, MySQL
  ``TIMESTAMP`` columns of tables become UTC ``timestamptz`` (the session time zone is UTC).

Everything else keeps its type: ``numeric(p,s)`` as ``decimal128(p,s)``, integers and floats,
``timestamptz`` as ``timestamp[us, tz=UTC]``, ``timestamp``/``DATETIME`` as ``timestamp[us]``,
``date``, ``time``, ``json``/``jsonb`` as text, arrays as Arrow lists, ``bytea``/``BLOB`` as binary,
``boolean`` (MySQL ``TINYINT(1)`` and ``BIT(1)`` too), text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

MAX_DECIMAL_PRECISION = 38

# PostgreSQL type OIDs (stable across versions: they are in pg_type.dat).
PG_NUMERIC = 1700
PG_NUMERIC_ARRAY = 1231
PG_MONEY = 790
PG_MONEY_ARRAY = 791
PG_TIMETZ = 1266
PG_TIMETZ_ARRAY = 1270

# DuckDB types that Arrow/Iceberg cannot hold as they are, and what they become.
_DUCKDB_TARGETS: dict[str, str] = {
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INTEGER",
    "UINTEGER": "BIGINT",
    "UBIGINT": "DECIMAL(20,0)",
    "UHUGEINT": "VARCHAR",
    "HUGEINT": "VARCHAR",
    "UUID": "VARCHAR",
    "INTERVAL": "VARCHAR",
    "BIT": "VARCHAR",
    "JSON": "VARCHAR",
    "TIME WITH TIME ZONE": "VARCHAR",
}


def pg_ident(name: str) -> str:
    """A PostgreSQL (and DuckDB) quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def mysql_ident(name: str) -> str:
    """A MySQL/MariaDB quoted identifier."""
    return "`" + name.replace("`", "``") + "`"


def pg_literal(value: str) -> str:
    """A PostgreSQL string literal (``standard_conforming_strings`` is on since 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def mysql_literal(value: str) -> str:
    """A MySQL/MariaDB string literal (backslashes escaped, as the default ``sql_mode`` needs)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True)
class PgColumn:
    """A result column as PostgreSQL describes it (domains arrive as their base type)."""

    name: str
    oid: int
    precision: int | None = None


def pg_expression(column: PgColumn, ref: str) -> str | None:
    """The PostgreSQL expression that reads ``ref`` losslessly, or ``None`` when DuckDB reads it as it is."""
    if column.oid == PG_NUMERIC and (column.precision is None or column.precision > MAX_DECIMAL_PRECISION):
        return f"{ref}::text"
    if column.oid in (PG_NUMERIC_ARRAY, PG_MONEY_ARRAY, PG_TIMETZ_ARRAY):
        return f"{ref}::text[]"
    if column.oid == PG_MONEY:
        return f"{ref}::numeric(19,2)"
    if column.oid == PG_TIMETZ:
        return f"({ref} AT TIME ZONE 'UTC')::time"
    return None


@dataclass(frozen=True)
class MySQLColumn:
    """What ``information_schema.COLUMNS`` says about a table column."""

    name: str
    data_type: str
    precision: int | None = None


def mysql_expression(
    ref: str, duckdb_type: str, charset: str | None = None, column: MySQLColumn | None = None
) -> str | None:
    """The MySQL expression that reads ``ref`` losslessly, or ``None`` when DuckDB reads it as it is.

    Args:
        ref: the column reference.
        duckdb_type: the type DuckDB's ``mysql_query`` gives the column.
        charset: ``CHARSET()`` of the column (asked only for columns DuckDB reads as ``BLOB``).
        column: the table's column metadata (table sources only).
    """
    if (
        column is not None
        and column.data_type == "decimal"
        and (column.precision or 0) > MAX_DECIMAL_PRECISION
        and duckdb_type != "VARCHAR"
    ):
        return f"CAST({ref} AS CHAR)"
    if duckdb_type == "BLOB" and charset and charset.lower() != "binary":
        return f"CONVERT({ref} USING utf8mb4)"
    return None


def duckdb_target(type_name: str) -> str | None:
    """The DuckDB type to cast a scanned column to, or ``None`` to keep it (lists are handled element-wise)."""
    if type_name.endswith("[]"):
        inner = duckdb_target(type_name[:-2])
        return f"{inner}[]" if inner else None
    if type_name.startswith("ENUM("):
        return "VARCHAR"
    return _DUCKDB_TARGETS.get(type_name)


# --- cursors ------------------------------------------------------------------------------------


def can_be_cursor(arrow_type: Any) -> bool:
    """Whether a column of this Arrow type can be an incremental cursor (numbers, dates, times, text)."""
    import pyarrow as pa

    t = arrow_type
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    )


def cursor_text(value: Any) -> str:
    """A cursor value as saved in the state: ISO 8601 for dates and times (UTC offset kept), plain
    decimal notation for numbers."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def mysql_cursor_literal(text: str, utc_timestamp: bool) -> str:
    """The MySQL literal for a saved cursor: a ``TIMESTAMP`` cursor (read as UTC) loses its offset,
    as MariaDB accepts no offsets in datetime literals (the session time zone is UTC)."""
    if utc_timestamp:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return mysql_literal(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return mysql_literal(moment.isoformat(sep=" "))
    return mysql_literal(text)
