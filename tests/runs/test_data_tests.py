"""Built-in data tests: row tests counted in one scan, each still reported on its own."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from ratatouille.models.config import ColumnTest, Severity
from ratatouille.models.testing import DataTest, column_test_sql, row_predicate, run_tests


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'card', 5), (2, 'cash', -1), (NULL, 'gold', 3)) v(id, pay, qty)"
    )
    yield con
    con.close()


def row_test(column: str, kind: str, severity: Severity = Severity.ERROR, **args: object) -> DataTest:
    test = ColumnTest(kind=kind, args=args, severity=severity)
    name, sql = column_test_sql("t", column, test, lambda ref: ref)
    return DataTest(
        name, severity, failing_rows_sql=sql, column=column, relation="t", predicate=row_predicate(column, test)
    )


def test_row_tests_share_one_scan_and_keep_their_own_results(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = [
        row_test("id", "not_null"),
        row_test("qty", "positive", Severity.WARN),
        row_test("pay", "accepted_values", values=["card", "cash"]),
        row_test("qty", "range", min=0, max=4),
    ]
    scans: list[str] = []
    real_execute = duckdb.DuckDBPyConnection.execute

    def counting(self: duckdb.DuckDBPyConnection, sql: str, *args: object) -> duckdb.DuckDBPyConnection:
        if sql.startswith("SELECT count(*)"):
            scans.append(sql)
        return real_execute(self, sql, *args)

    monkeypatch.setattr(duckdb.DuckDBPyConnection, "execute", counting)
    results = run_tests(con, "silver.t", tests)
    assert len(scans) == 1  # four tests, one scan
    assert [(r.name, r.status, r.failures) for r in results] == [
        ("not_null(id)", "fail", 1),
        ("positive(qty)", "warn", 1),
        ("accepted_values(pay)", "fail", 1),
        ("range(qty)", "fail", 2),
    ]
    assert results[0].sample == [{"id": None, "pay": "gold", "qty": 3}]


def test_a_broken_row_test_reports_its_error_and_the_others_still_run(con: duckdb.DuckDBPyConnection) -> None:
    tests = [row_test("id", "not_null"), row_test("nope", "not_null"), row_test("qty", "non_negative")]
    results = run_tests(con, "silver.t", tests)
    assert [(r.name, r.status) for r in results] == [
        ("not_null(id)", "fail"),
        ("not_null(nope)", "fail"),
        ("non_negative(qty)", "fail"),
    ]
    assert "the test query failed" in results[1].message and '"nope"' in results[1].message
    assert results[2].failures == 1
