"""The POS example, the main fixture: `rat init` output run for real."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from ratatouille.sample.pos import generate_pos
from ratatouille.scaffold import create_project
from ratatouille.workspace import Workspace

TABLES = ["silver.sales", "silver.sales_rejects", "gold.daily_sales_kpis", "gold.product_performance"]
ORDER = {
    "silver.sales": "txn_id",
    "silver.sales_rejects": "txn_id",
    "gold.daily_sales_kpis": "sales_date, store_id",
    "gold.product_performance": "product_id",
}


def add_day(root: Path, day: dt.date, tmp: Path) -> None:
    """Drop one new day of sales files into the landing zone (txn ids shifted to stay unique)."""
    staging = tmp / f"new-{day}"
    generate_pos(staging, rows=1500, days=1, start=day, seed=99)
    target = root / "data" / "landing" / "sales"
    for path in sorted((staging / "sales").glob("*.csv")):
        duckdb.execute(
            f"COPY (SELECT * REPLACE ((txn_id::BIGINT + 1000000000)::VARCHAR AS txn_id) FROM read_csv('{path}', all_varchar=true)) "
            f"TO '{target / path.name}' (FORMAT csv, HEADER)"
        )


def snapshot(ws: Workspace) -> dict[str, list[dict[str, object]]]:
    return {
        t: ws.query(f"SELECT COLUMNS(c -> c != '_ingested_at') FROM {t} ORDER BY {ORDER[t]}").to_pylist()
        for t in TABLES
    }


@pytest.mark.slow
def test_pos_example_runs_incrementally_and_equals_a_full_rebuild(
    tmp_path: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    created = create_project(tmp_path / "shop", rows=6000)
    ws = open_ws(created.root)
    first = ws.run()
    assert first.ok, [(n.key, n.error) for n in first.nodes if n.error]
    rows = ws.query("SELECT count(*) AS n FROM silver.sales").to_pylist()[0]["n"]
    rejects = ws.query("SELECT count(*) AS n FROM silver.sales_rejects").to_pylist()[0]["n"]
    raw = ws.query("SELECT count(DISTINCT txn_id) AS n FROM bronze.sales").to_pylist()[0]["n"]
    assert rows + rejects == raw  # every distinct transaction is either clean or a listed reject

    add_day(created.root, dt.date(2026, 1, 15), tmp_path)
    second = ws.run()
    assert second.ok
    nodes = {n.key: n for n in second.nodes}
    new_files = len(list((created.root / "data" / "landing" / "sales").glob("*2026-01-15.csv")))
    assert nodes["bronze.sales"].rows_written > 0
    assert nodes["bronze.stores"].rows_written == 0 and nodes["bronze.products"].rows_written == 0
    assert nodes["silver.stores"].up_to_date and nodes["silver.products"].up_to_date
    assert 0 < nodes["silver.sales"].rows_written <= 1500  # only the new day
    assert nodes["gold.daily_sales_kpis"].rows_deleted == 0  # a new day replaces no old day
    assert new_files > 0
    incremental = snapshot(ws)

    rebuilt = ws.run(full_refresh=True)
    assert rebuilt.ok
    assert snapshot(ws) == incremental

    third = ws.run()  # nothing new: every model is up to date
    assert third.ok and all(n.up_to_date or n.kind == "source" for n in third.nodes)


@pytest.mark.slow
def test_pos_example_unit_and_data_tests_pass(tmp_path: Path, open_ws: Callable[[Path], Workspace]) -> None:
    created = create_project(tmp_path / "shop", rows=3000)
    ws = open_ws(created.root)
    units = ws.test(unit=True)
    assert units and all(u.passed for u in units), [u for u in units if not u.passed]
    assert ws.run().ok
    assert all(t.status == "pass" for t in ws.test())
