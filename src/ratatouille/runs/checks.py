"""Checks outside a run: data tests on published tables, unit tests, freshness SLAs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ratatouille.engine import quote
from ratatouille.models.compiler import CompileContext, CompileProblem
from ratatouille.models.config import Materialized
from ratatouille.models.loader import Model
from ratatouille.models.testing import TestResult, data_tests, run_tests
from ratatouille.runs.graph import Graph

if TYPE_CHECKING:
    import duckdb


def data_checks(
    graph: Graph, keys: list[str], con: duckdb.DuckDBPyConnection, relation: Callable[[str], str]
) -> list[TestResult]:
    """Run the data tests of ``keys`` against their published tables (no writes)."""
    results: list[TestResult] = []
    for key in keys:
        model = graph.models.get(key)
        if model is None:
            continue
        this = relation(key)

        def render(sql: str, model: Model = model, this: str = this) -> str:
            fake = Model(model.layer, model.name, model.path, model.config, sql=sql)
            return graph.compiler.compile(fake, CompileContext(relation=relation, this=this)).sql

        results += run_tests(con, key, data_tests(model, this, relation, render))
    return results


@dataclass
class UnitResult:
    """One unit test's outcome."""

    model: str
    name: str
    passed: bool
    missing: list[dict[str, Any]] = field(default_factory=list)  # expected, not returned
    unexpected: list[dict[str, Any]] = field(default_factory=list)  # returned, not expected
    error: str | None = None


def unit_tests(graph: Graph, keys: list[str], con: duckdb.DuckDBPyConnection) -> list[UnitResult]:
    """Run models' unit tests: mock rows for their refs in, expected rows out.

    Only the columns named in the expected rows are compared, as multisets (order ignored).
    """
    import pyarrow as pa

    results: list[UnitResult] = []
    for key in keys:
        model = graph.models.get(key)
        if model is None or model.sql is None:
            continue
        for number, test in enumerate(model.config.unit_tests):
            mocks: dict[str, str] = {}
            try:
                for ref_name, rows in test.given.items():
                    target = graph.compiler.resolve(model, ref_name)
                    name = f"__rat_mock_{number}_{len(mocks)}"
                    con.register(name, pa.Table.from_pylist(rows))
                    mocks[target] = name

                def relation(
                    ref_key: str, mocks: dict[str, str] = mocks, model: Model = model, test: Any = test
                ) -> str:
                    if ref_key not in mocks:
                        raise CompileProblem(
                            _problem(
                                model, f"unit test `{test.name}` gives no rows for `{ref_key}`; add it under given:"
                            )
                        )
                    return mocks[ref_key]

                this = mocks.get(model.key, "(SELECT 1 WHERE FALSE)")
                ctx = CompileContext(
                    relation=relation,
                    this=this,
                    incremental=test.incremental and model.materialized == Materialized.INCREMENTAL,
                    watermark=_max_of(this),
                    vars={**graph.model_vars(model), **test.vars},
                )
                sql = graph.compiler.compile(model, ctx).sql
                got = con.sql(sql).to_arrow_table().to_pylist()
                results.append(_compare(model.key, test.name, test.expect, got))
            except CompileProblem as exc:
                results.append(UnitResult(model.key, test.name, False, error=str(exc.problem)))
            except Exception as exc:  # DuckDB errors in the model's SQL on the mock rows
                results.append(UnitResult(model.key, test.name, False, error=f"{type(exc).__name__}: {exc}"))
            finally:
                for name in mocks.values():
                    con.unregister(name)
    return results


def _max_of(relation: str) -> Callable[[str], str]:
    def watermark(column: str) -> str:
        return f"(SELECT max({quote(column)}) FROM {relation})"

    return watermark


def _problem(model: Model, message: str) -> Any:
    from ratatouille.errors import Problem

    return Problem(str(model.path), None, "", message)


def _norm(value: Any) -> Any:
    if isinstance(value, Decimal | float):
        return round(float(value), 6)
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ")
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _compare(key: str, name: str, expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> UnitResult:
    """Each expected row must match one returned row on the columns it names; every returned
    row must be matched (order does not matter)."""
    columns = sorted({c for row in expected for c in row})
    if got and not set(columns) <= set(got[0]):
        missing = sorted(set(columns) - set(got[0]))
        return UnitResult(key, name, False, error=f"the model returns no column(s) {', '.join(missing)}")
    remaining = [{c: _norm(row.get(c)) for c in columns} for row in got]
    missing_rows = []
    for row in expected:
        want = {c: _norm(_parse(v)) for c, v in row.items()}
        match = next((i for i, have in enumerate(remaining) if all(have[c] == v for c, v in want.items())), None)
        if match is None:
            missing_rows.append(want)
        else:
            remaining.pop(match)
    return UnitResult(key, name, not missing_rows and not remaining, missing=missing_rows, unexpected=remaining)


def _parse(value: Any) -> Any:
    """Expected values are YAML: timestamps may be written as strings."""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


@dataclass
class FreshnessResult:
    """How old a model's last publish is, against its SLA."""

    model: str
    status: str  # pass | warn | error | never
    age_hours: float | None
    last_published: str | None
    warn_after_hours: float | None
    error_after_hours: float | None


def freshness(graph: Graph, published_at: Callable[[str], datetime | None]) -> list[FreshnessResult]:
    """Check every model (and source) with a ``freshness:`` SLA against its last commit time."""
    results = []
    now = datetime.now(UTC)
    for key, model in sorted(graph.models.items()):
        sla = model.config.freshness
        if sla is None:
            continue
        warn = sla.warn_after.seconds if sla.warn_after else None
        error = sla.error_after.seconds if sla.error_after else None
        last = published_at(key)
        if last is None:
            results.append(FreshnessResult(key, "never", None, None, _h(warn), _h(error)))
            continue
        age = (now - last).total_seconds()
        status = "error" if error is not None and age > error else "warn" if warn is not None and age > warn else "pass"
        results.append(FreshnessResult(key, status, round(age / 3600, 2), last.isoformat(), _h(warn), _h(error)))
    return results


def _h(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)
