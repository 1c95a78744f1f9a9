"""Data tests of a model as SQL: built-in column tests and custom SQL tests.

Each test is a query over the model's (audit) table. Built-ins select the failing rows, so a
failure can show a sample of them; custom tests return one number compared with ``expect``.
Built-ins that are a condition on one row (``not_null``, ``positive``, ``accepted_values``...)
are counted together in one scan of the table (``run_tests``); only a test that fails reads
the table again, for its sample.
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
    relation: str | None = None  # row tests: the table, and the condition its failing rows meet
    predicate: str | None = None


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int | float):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def row_predicate(column: str, test: ColumnTest) -> str | None:
    """The condition a failing row meets, for built-ins that look at one row at a time."""
    col = quote(column)
    args = test.args
    kind = test.kind
    if kind == "not_null":
        return f"{col} IS NULL"
    if kind == "positive":
        return f"{col} <= 0"
    if kind == "non_negative":
        return f"{col} < 0"
    if kind == "accepted_values":
        return f"{col} NOT IN ({', '.join(_value(v) for v in args.get('values') or [])})"
    if kind == "range":
        conditions = []
        if args.get("min") is not None:
            conditions.append(f"{col} < {_value(args['min'])}")
        if args.get("max") is not None:
            conditions.append(f"{col} > {_value(args['max'])}")
        return " OR ".join(conditions) or "FALSE"
    if kind == "expression":
        return f"({args.get('expression') or args.get('sql') or 'TRUE'}) IS NOT TRUE"
    return None


def column_test_sql(relation: str, column: str, test: ColumnTest, resolve: Any) -> tuple[str, str]:
    """The name and the failing-rows SQL of a built-in test.

    ``resolve`` turns a ``relationships.to`` ref into a relation.
    """
    col = quote(column)
    args = test.args
    kind = test.kind
    predicate = row_predicate(column, test)
    if predicate is not None:
        return f"{kind}({column})", f"SELECT * FROM {relation} WHERE {predicate}"
    if kind == "unique":
        return (
            f"unique({column})",
            f"SELECT {col}, count(*) AS occurrences FROM {relation} WHERE {col} IS NOT NULL "
            f"GROUP BY {col} HAVING count(*) > 1",
        )
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
            predicate = row_predicate(column.name, test)
            tests.append(
                DataTest(
                    name,
                    test.severity,
                    failing_rows_sql=sql,
                    column=column.name,
                    relation=relation if predicate else None,
                    predicate=predicate,
                )
            )
    for custom in model.config.tests:
        tests.append(DataTest(custom.name, custom.severity, value_sql=render(custom.sql), expect=custom.expect))
    return tests


def run_tests(con: duckdb.DuckDBPyConnection, key: str, tests: list[DataTest]) -> list[TestResult]:
    """Run data tests, in their order; the row tests of one table are counted in one scan."""
    import duckdb

    counted: dict[int, int] = {}
    by_relation: dict[str, list[int]] = {}
    for index, test in enumerate(tests):
        if test.relation is not None and test.predicate is not None:
            by_relation.setdefault(test.relation, []).append(index)
    for relation, indexes in by_relation.items():
        if len(indexes) < 2:
            continue
        columns = ", ".join(f"count(*) FILTER (WHERE {tests[i].predicate})" for i in indexes)
        try:
            row = con.execute(f"SELECT {columns} FROM {relation}").fetchone()
        except duckdb.Error:
            continue  # one of them is broken: each runs alone and reports its own error
        if row is not None:
            counted.update({i: int(n) for i, n in zip(indexes, row, strict=True)})
    return [run_test(con, key, test, failures=counted.get(i)) for i, test in enumerate(tests)]


def run_test(con: duckdb.DuckDBPyConnection, key: str, test: DataTest, *, failures: int | None = None) -> TestResult:
    """Run one data test; a failing test shows a sample of its failing rows (``failures``: the
    count of failing rows when already known)."""
    import duckdb

    try:
        if test.failing_rows_sql is not None:
            if failures is None:
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
