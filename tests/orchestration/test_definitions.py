"""The project as a Dagster code location: assets, checks, jobs, schedules and sensors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from orchestration.conftest import drop
from ratatouille.errors import ConfigError
from ratatouille.orchestration.definitions import build_definitions
from ratatouille.workspace import Workspace
from runs.conftest import write_files


def key(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(["default", *parts])


def job_keys(defs: dg.Definitions, name: str) -> set[dg.AssetKey]:
    return set(defs.resolve_job_def(name).asset_layer.selected_asset_keys)


def test_definitions_load_with_every_node_its_dependencies_and_its_tests(shop: Path) -> None:
    defs = build_definitions(shop, retry_delay_s=0.1)
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assert set(graph.get_all_asset_keys()) == {
        key("bronze", "orders"),
        key("bronze", "drops"),
        key("silver", "orders"),
        key("silver", "drops"),
        key("gold", "by_customer"),
    }
    assert graph.get(key("silver", "orders")).parent_keys == {key("bronze", "orders")}
    assert graph.get(key("gold", "by_customer")).parent_keys == {key("silver", "orders")}
    assert graph.get(key("silver", "drops")).parent_keys == {key("bronze", "drops")}
    checks = {(c.asset_key, c.name) for c in graph.asset_check_keys}
    assert checks == {
        (key("silver", "orders"), "not_null_order_key"),
        (key("silver", "orders"), "unique_order_key"),
        (key("silver", "orders"), "non_negative_amount"),
        (key("silver", "drops"), "not_null_id"),
        (key("gold", "by_customer"), "five_customers"),
    }
    assert sorted(s.name for s in repo.schedule_defs) == [
        "default__gold_by_customer_schedule",
        "default__silver_drops_schedule",
    ]
    assert [s.name for s in repo.sensor_defs] == ["default__drops_files"]
    assert job_keys(defs, "default__all") == set(graph.get_all_asset_keys())
    spec = graph.get(key("silver", "orders"))
    assert spec.metadata["rat/materialized"] == "incremental"
    assert spec.metadata["rat/path"] == "workspaces/default/pipelines/silver/orders.sql"


def test_a_schedule_runs_its_nodes_with_the_sources_they_read(shop: Path) -> None:
    defs = build_definitions(shop, retry_delay_s=0.1)
    # gold.by_customer reads a model: the schedule runs it alone, like `rat run -s gold.by_customer`
    assert job_keys(defs, "default__gold_by_customer") == {key("gold", "by_customer")}
    # silver.drops reads a source: the source is ingested in the same run
    assert job_keys(defs, "default__silver_drops") == {key("bronze", "drops"), key("silver", "drops")}
    schedule = defs.get_repository_def().get_schedule_def("default__gold_by_customer_schedule")
    assert schedule.cron_schedule == "* * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 1, 1, tzinfo=UTC)
        )
        data = schedule.evaluate_tick(context)
    assert data.run_requests is not None and len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.tags["rat/trigger"] == "schedule"
    assert request.tags["rat/workspace"] == "default"
    assert schedule.job_name == "default__gold_by_customer"


def test_nodes_due_on_the_same_cron_share_one_schedule(shop: Path) -> None:
    write_files(shop, {"pipelines/silver/orders.yaml": 'schedule: "*/5  * * * *"\n'})
    defs = build_definitions(shop, retry_delay_s=0.1)
    names = sorted(s.name for s in defs.get_repository_def().schedule_defs)
    assert names == ["default__gold_by_customer_schedule", "default__silver_drops_and_1_more_schedule"]
    assert job_keys(defs, "default__silver_drops_and_1_more") == {
        key("bronze", "drops"),
        key("silver", "drops"),
        key("silver", "orders"),
    }


def test_an_invalid_cron_names_the_file(shop: Path) -> None:
    write_files(shop, {"pipelines/silver/orders.yaml": 'schedule: "every hour"\n'})
    with pytest.raises(ConfigError, match=r"pipelines/silver/orders.sql: schedule: `every hour` is not a valid cron"):
        build_definitions(shop)
    defs = build_definitions(shop, strict=False)  # what the code location does: the rest keeps running
    assert "default__silver_orders_schedule" not in {s.name for s in defs.get_repository_def().schedule_defs}


def test_a_broken_workspace_is_left_out_only_when_not_strict(shop: Path) -> None:
    other = shop / "workspaces" / "other"
    (other / "pipelines" / "gold").mkdir(parents=True)
    (other / "pipelines" / "gold" / "x.sql").write_text("SELECT * FROM {{ ref('silver.nothing') }}\n")
    with pytest.raises(ConfigError, match="silver.nothing"):
        build_definitions(shop)
    defs = build_definitions(shop, strict=False)
    assert {k.path[0] for k in defs.get_repository_def().asset_graph.get_all_asset_keys()} == {"default"}


def test_the_files_sensor_asks_for_new_files_once_and_stops_when_they_are_ingested(shop: Path) -> None:
    defs = build_definitions(shop, retry_delay_s=0.1)
    sensor = defs.get_repository_def().get_sensor_def("default__drops_files")
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> dg.SensorResult | None:
            context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
            data = sensor.evaluate_tick(context)
            return data  # type: ignore[return-value]

        empty = tick(None)
        assert empty.run_requests == [] and "no new or changed files" in (empty.skip_message or "")
        drop(shop, "a.csv", "id,amount\n1,10\n2,20\n")
        first = tick(None)
        assert first.run_requests is not None and len(first.run_requests) == 1
        request = first.run_requests[0]
        assert request.asset_selection == [key("bronze", "drops")]
        assert request.tags["rat/trigger"] == "sensor"
        again = tick(first.cursor)  # the same files, before they were ingested: no second request
        assert again.run_requests == [] and "already requested" in (again.skip_message or "")

        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, asset_selection=request.asset_selection, tags=request.tags)
        assert result.success
        after = tick(first.cursor)
        assert after.run_requests == [] and "no new or changed files" in (after.skip_message or "")

        drop(shop, "b.csv", "id,amount\n3,30\n")
        later = tick(first.cursor)
        assert later.run_requests is not None and len(later.run_requests) == 1
        assert later.run_requests[0].run_key != request.run_key

    ws = Workspace.open(shop)
    try:
        run = ws.runs(1)[0]
        assert (run["trigger"], run["selection"], run["status"]) == ("sensor", "bronze.drops", "success")
        assert ws.query("SELECT count(*) AS n FROM bronze.drops").to_pylist() == [{"n": 2}]
        assert [f.path.rsplit("/", 1)[1] for f in ws.pending_files("drops")] == ["b.csv"]
    finally:
        ws.close()
