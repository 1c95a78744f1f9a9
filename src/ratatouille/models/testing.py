"""Data tests of a model as SQL: built-in column tests and custom SQL tests.

Each test is a query over the model's (audit) table. Built-ins select the failing rows, so a
failure can show a sample of them; custom tests return one number compared with ``expect``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ratatouille.engine import quote
from ratatouille.models.config import ColumnTest, Severity
from ratatouille.models.loader import Model

if TYPE_CHECKING:
    import duckdb

SAMPLE_ROWS = 5


@dataclass
class TestResult:
    """One test's outcome."""

    __test__ = False  # not a pytest class

    node: str
    name: str
    severity: str
    status: str  # pass | fail | warn
    failures: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""


@dataclass(frozen=True)
class DataTest:
    """One test ready to run against a relation."""

    name: str
    severity: Severity
    failing_rows_sql: str | None = None  # built-ins: SELECT of the failing rows
    value_sql: str | None = None  # custom: SELECT of one number
    expect: int = 0
    column: str | None = None


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int | float):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def column_test_sql(relation: str, column: str, test: ColumnTest, resolve: Any) -> tuple[str, str]:
    """The name and the failing-rows SQL of a built-in test.

    ``resolve`` turns a ``relationships.to`` ref into a relation.
    """
    col = quote(column)
    args = test.args
    kind = test.kind
    if kind == "not_null":
        return f"not_null({column})", f"SELECT * FROM {relation} WHERE {col} IS NULL"
    if kind == "unique":
        return (
            f"unique({column})",
            f"SELECT {col}, count(*) AS occurrences FROM {relation} WHERE {col} IS NOT NULL "
            f"GROUP BY {col} HAVING count(*) > 1",
        )
    if kind == "positive":
        return f"positive({column})", f"SELECT * FROM {relation} WHERE {col} <= 0"
    if kind == "non_negative":
        return f"non_negative({column})", f"SELECT * FROM {relation} WHERE {col} < 0"
    if kind == "accepted_values":
        values = args.get("values") or []
        listed = ", ".join(_value(v) for v in values)
        return f"accepted_values({column})", f"SELECT * FROM {relation} WHERE {col} NOT IN ({listed})"
    if kind == "range":
        conditions = []
        if args.get("min") is not None:
            conditions.append(f"{col} < {_value(args['min'])}")
        if args.get("max") is not None:
            conditions.append(f"{col} > {_value(args['max'])}")
        where = " OR ".join(conditions) or "FALSE"
        return f"range({column})", f"SELECT * FROM {relation} WHERE {where}"
    if kind == "expression":
        expression = args.get("expression") or args.get("sql") or "TRUE"
        return f"expression({column})", f"SELECT * FROM {relation} WHERE ({expression}) IS NOT TRUE"
    if kind == "relationships":
        target = resolve(str(args.get("to")))
        field = quote(str(args.get("field") or column))
        return (
            f"relationships({column} -> {args.get('to')}.{args.get('field') or column})",
            f"SELECT c.* FROM {relation} AS c ANTI JOIN {target} AS p ON c.{col} = p.{field} WHERE c.{col} IS NOT NULL",
        )
    raise ValueError(f"unknown test {kind}")


def data_tests(model: Model, relation: str, resolve: Any, render: Any) -> list[DataTest]:
    """Every data test of a model, against ``relation``.

    ``render`` compiles a custom test's SQL (it may use ``{{ this }}`` and ``ref()``).
    """
    tests: list[DataTest] = []
    for column in model.config.columns:
        for test in column.tests:
            name, sql = column_test_sql(relation, column.name, test, resolve)
            tests.append(DataTest(name, test.severity, failing_rows_sql=sql, column=column.name))
    for custom in model.config.tests:
        tests.append(DataTest(custom.name, custom.severity, value_sql=render(custom.sql), expect=custom.expect))
    return tests


def run_test(con: duckdb.DuckDBPyConnection, key: str, test: DataTest) -> TestResult:
    """Run one data test; a failing test shows a sample of its failing rows."""
    import duckdb

    try:
        if test.failing_rows_sql is not None:
            row = con.execute(f"SELECT count(*) FROM ({test.failing_rows_sql})").fetchone()
            failures = int(row[0]) if row else 0
            sample: list[dict[str, Any]] = []
            if failures:
                rel = con.sql(f"SELECT * FROM ({test.failing_rows_sql}) LIMIT {SAMPLE_ROWS}")
                sample = [dict(zip(rel.columns, (_jsonable(v) for v in r), strict=True)) for r in rel.fetchall()]
            message = f"{failures} failing row(s)" if failures else "ok"
        else:
            assert test.value_sql is not None
            row = con.execute(test.value_sql).fetchone()
            value = row[0] if row else None
            failures = 0 if value == test.expect else int(value) if isinstance(value, int) else 1
            sample = []
            message = f"returned {value}, expected {test.expect}" if failures else "ok"
    except duckdb.Error as exc:
        return TestResult(key, test.name, test.severity.value, "fail", 1, [], f"the test query failed: {exc}")
    if not failures:
        status = "pass"
    else:
        status = "fail" if test.severity == Severity.ERROR else "warn"
    return TestResult(key, test.name, test.severity.value, status, failures, sample, message)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
