"""Write-audit-publish: runs publish together, failing tests block, crashes leave the last state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ratatouille.workspace import Workspace


def value(ws: Workspace, sql: str) -> object:
    return ws.query(sql).to_pylist()[0]


def snapshot_ids(ws: Workspace) -> dict[str, int | None]:
    return {t.short: ws.describe(t.short)["snapshot_id"] for t in ws.tables()}


def test_run_builds_publishes_and_records(pipeline_root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    ws = open_ws(pipeline_root)
    result = ws.run()
    assert result.ok, result
    assert sorted(result.published) == ["bronze.orders", "gold.by_customer", "silver.orders"]
    assert value(ws, "SELECT count(*) AS n, sum(orders) AS o FROM gold.by_customer") == {"n": 5, "o": 100}
    record = ws.run_record(result.run_id)
    assert record["status"] == "success" and record["trigger"] == "cli"
    nodes = {n["node"]: n for n in record["nodes"]}
    assert nodes["silver.orders"]["rows_written"] == 100
    assert nodes["silver.orders"]["snapshot_id"] == ws.describe("silver.orders")["snapshot_id"]
    assert {t["test"] for t in record["tests"]} >= {"not_null(order_key)", "unique(order_key)", "five_customers"}
    assert ws.runs()[0]["id"] == result.run_id
    # No audit branch or stage table is left behind.
    for table in ws.tables():
        assert ws.describe(table.short)["branches"] == []


def test_incremental_run_processes_only_new_rows_and_equals_full_rebuild(
    pipeline_root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    ws = open_ws(pipeline_root)
    assert ws.run().ok
    second = ws.run(variables={"n": 130})
    assert second.ok
    silver = next(n for n in second.nodes if n.key == "silver.orders")
    assert silver.rows_written == 30  # only the new rows
    incremental = ws.query("SELECT * FROM silver.orders ORDER BY id").to_pylist()
    assert ws.run(full_refresh=True, variables={"n": 130}).ok
    assert ws.query("SELECT * FROM silver.orders ORDER BY id").to_pylist() == incremental


def test_failing_test_blocks_publish_and_skips_descendants(
    pipeline_root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    ws = open_ws(pipeline_root)
    assert ws.run().ok
    before = snapshot_ids(ws)
    gold_before = ws.query("SELECT * FROM gold.by_customer ORDER BY customer").to_pylist()
    # A discount makes amounts negative for new rows: non_negative fails on silver.orders.
    result = ws.run(variables={"n": 120, "discount": 1000})
    assert not result.ok
    by_key = {n.key: n for n in result.nodes}
    assert by_key["silver.orders"].status == "failed"
    assert "non_negative(amount)" in (by_key["silver.orders"].error or "")
    assert "'amount'" in (by_key["silver.orders"].error or "")  # a sample of the failing rows
    assert by_key["gold.by_customer"].status == "skipped"
    after = snapshot_ids(ws)
    assert after["silver.orders"] == before["silver.orders"]
    assert after["gold.by_customer"] == before["gold.by_customer"]
    # bronze passed its (absent) tests, so it is published.
    assert after["bronze.orders"] != before["bronze.orders"]
    assert ws.query("SELECT * FROM gold.by_customer ORDER BY customer").to_pylist() == gold_before
    assert value(ws, "SELECT count(*) AS n FROM silver.orders") == {"n": 100}
    failed = [t for t in ws.run_record(result.run_id)["tests"] if t["status"] == "fail"]
    assert failed and failed[0]["sample"]


def test_null_unique_keys_go_to_quarantine(local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    ws = open_ws(local_pipeline_root)
    assert ws.run().ok
    result = ws.run(variables={"n": 110, "null_key_at": 105})
    assert result.ok, result
    silver = next(n for n in result.nodes if n.key == "silver.orders")
    assert silver.rows_quarantined == 1
    assert value(ws, "SELECT count(*) AS n FROM silver.orders") == {"n": 109}
    quarantined = ws.query("SELECT id, _reason, _run_id FROM quarantine.silver_orders").to_pylist()
    assert quarantined == [{"id": 105, "_reason": "NULL in unique key (order_key)", "_run_id": result.run_id}]


CRASH_RUN = """
import sys
from ratatouille.workspace import Workspace
ws = Workspace.open(sys.argv[1])
ws.run(variables={"n": 150})
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["run:before_publish", "publish:before_commit", "publish:between_tables"])
def test_kill_9_during_publish_leaves_last_published_state(
    pipeline_root: Path, open_ws: Callable[[Path], Workspace], point: str
) -> None:
    ws = open_ws(pipeline_root)
    assert ws.run().ok
    before = snapshot_ids(ws)
    ws.close()
    env = {**os.environ, "RATATOUILLE_FAULT": point}
    proc = subprocess.run([sys.executable, "-c", CRASH_RUN, str(pipeline_root)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert snapshot_ids(ws) == before  # every table at its last published state
    assert value(ws, "SELECT count(*) AS n FROM silver.orders") == {"n": 100}
    result = ws.run(variables={"n": 150})
    assert result.ok, result
    assert value(ws, "SELECT count(*) AS n FROM silver.orders") == {"n": 150}
    assert ws.runs()[1]["status"] == "failed"  # the killed run is recorded as failed


@pytest.mark.slow
def test_a_run_killed_after_its_publish_is_recorded_as_a_success(
    pipeline_root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    ws = open_ws(pipeline_root)
    assert ws.run().ok
    ws.close()
    env = {**os.environ, "RATATOUILLE_FAULT": "publish:after_commit"}
    proc = subprocess.run([sys.executable, "-c", CRASH_RUN, str(pipeline_root)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert value(ws, "SELECT count(*) AS n FROM silver.orders") == {"n": 150}  # it did publish
    killed = ws.runs()[0]
    assert killed["status"] == "success", killed
    assert "stopped after publishing" in killed["error"]


@pytest.mark.slow
def test_kill_9_during_a_model_leaves_last_published_state(
    local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    ws = open_ws(local_pipeline_root)
    assert ws.run().ok
    before = snapshot_ids(ws)
    ws.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_RUN.replace('{"n": 150}', '{"n": 30_000_000}'), str(local_pipeline_root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    import time

    time.sleep(4)
    proc.kill()
    proc.communicate()
    assert snapshot_ids(ws) == before
    result = ws.run(variables={"n": 120})
    assert result.ok, result
    assert value(ws, "SELECT count(*) AS n FROM silver.orders") == {"n": 120}


def leftovers(ws: Workspace) -> list[str]:
    """Audit branches and hidden stage tables in the catalog: what only a run in progress has."""
    from ratatouille.storage.catalog import STAGE_PREFIX

    lakehouse = ws.project.lakehouse
    found = []
    for ref in lakehouse.list_tables(ws.name, stages=True):
        if ref.name.startswith(STAGE_PREFIX):
            found.append(ref.name)
            continue
        table = lakehouse.catalog.load_table(ref.identifier)
        found += [f"{ref.short}@{name}" for name in table.metadata.refs if name != "main"]
    return sorted(found)


@pytest.mark.slow
def test_what_a_killed_run_left_behind_is_removed_by_the_next_run(
    pipeline_root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    from runs.conftest import write_files

    ws = open_ws(pipeline_root)
    assert ws.run().ok
    # A new model: the killed run builds it under a hidden stage name.
    write_files(pipeline_root, {"pipelines/gold/top.sql": "SELECT * FROM {{ ref('gold.by_customer') }} LIMIT 2"})
    ws.close()
    env = {**os.environ, "RATATOUILLE_FAULT": "run:before_publish"}
    proc = subprocess.run([sys.executable, "-c", CRASH_RUN, str(pipeline_root)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ws = open_ws(pipeline_root)
    left = leftovers(ws)
    assert any(name.startswith("__rat_stage_") and name.endswith("__top") for name in left), left
    assert any(name.startswith("silver.orders@audit_") for name in left), left
    assert "gold.top" not in [t.short for t in ws.tables()]
    killed = ws.runs()[0]  # the first command after the crash settles the dead run
    assert killed["status"] == "failed"
    assert leftovers(ws) == []
    assert any("left unpublished" in line["message"] for line in ws.run_record(killed["id"])["logs"])
    result = ws.run(variables={"n": 150})
    assert result.ok, result
    assert leftovers(ws) == []
    assert value(ws, "SELECT count(*) AS n FROM gold.top") == {"n": 2}


def test_table_by_table_publish_goes_in_dependency_order(
    local_pipeline_root: Path, open_ws: Callable[[Path], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catalogs without SQL access (REST) publish one table after the other: upstream first, so a
    reader never sees a table newer than the tables it was built from. The SQL catalog stands in
    for a REST one here; only the catalog type that picks the publish path is changed."""
    from ratatouille.storage.sqlcatalog import SqlCatalog

    ws = open_ws(local_pipeline_root)
    lakehouse = ws.project.lakehouse
    catalog = lakehouse.catalog  # opened as the SQL catalog it is
    rest = lakehouse.config.catalog.model_copy(update={"type": "rest"})
    monkeypatch.setattr(lakehouse, "config", lakehouse.config.model_copy(update={"catalog": rest}))
    from ratatouille.storage import publish as publish_module

    published: list[str] = []
    publishing: list[str] = []  # the fault points publish passes, so the writers' commits are left out
    commit, rename, fault = SqlCatalog.commit_table, SqlCatalog.rename_table, publish_module.fault

    def record_commit(self: SqlCatalog, table: object, *args: object) -> object:
        if "publish:before_commit" in publishing:
            published.append(".".join(table.name()[1:]))  # type: ignore[attr-defined]
        return commit(self, table, *args)  # type: ignore[arg-type]

    def record_rename(self: SqlCatalog, old: tuple[str, ...], new: tuple[str, ...]) -> object:
        if "publish:before_commit" in publishing:
            published.append(".".join(new[1:]))
        return rename(self, old, new)

    def record_fault(point: str) -> None:
        publishing.append(point)
        if point == "publish:after_commit":
            publishing.clear()
        fault(point)

    monkeypatch.setattr(publish_module, "fault", record_fault)

    monkeypatch.setattr(SqlCatalog, "commit_table", record_commit)
    monkeypatch.setattr(SqlCatalog, "rename_table", record_rename)
    assert ws.run().ok  # every table is new: renamed from its stage name
    assert published == ["bronze.orders", "silver.orders", "gold.by_customer"]
    published.clear()
    result = ws.run(variables={"n": 150})
    assert result.ok, result
    assert published == ["bronze.orders", "silver.orders", "gold.by_customer"]
    assert value(ws, "SELECT count(*) AS n FROM silver.orders") == {"n": 150}
    assert catalog is lakehouse.catalog
