"""Runs started by Dagster are Ratatouille runs: same records, write-audit-publish, tests, alerts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from orchestration.conftest import Receiver, drop
from ratatouille.alerts import AlertsConfig, WebhookConfig
from ratatouille.cli.main import cli
from ratatouille.orchestration.definitions import build_definitions
from ratatouille.workspace import Workspace
from runs.conftest import write_files


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance in a temporary DAGSTER_HOME."""
    with dg.instance_for_test() as instance:
        yield instance


def key(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(["default", *parts])


def runs(root: Path) -> list[dict[str, Any]]:
    ws = Workspace.open(root)
    try:
        return ws.runs(50)
    finally:
        ws.close()


def schedule_tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance) -> dg.RunRequest:
    schedule = defs.get_repository_def().get_schedule_def(name)
    data = schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
    assert data.run_requests is not None
    (request,) = data.run_requests
    return request


def run_scheduled(defs: dg.Definitions, name: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """What the daemon does on a tick: launch the schedule's job with the tick's tags."""
    schedule = defs.get_repository_def().get_schedule_def(name)
    request = schedule_tick(defs, name, instance)
    job = defs.resolve_job_def(schedule.job_name)
    return job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)


def run_checks(
    defs: dg.Definitions, instance: dg.DagsterInstance, checks: list[dg.AssetCheckKey], tags: Any = None
) -> dg.ExecuteInProcessResult:
    """Execute asset checks alone (what a sensor's check-only run request or the UI does)."""
    everything = [*(defs.assets or []), *(defs.asset_checks or [])]
    return dg.materialize(everything, instance=instance, selection=dg.AssetSelection.checks(*checks), tags=tags)  # type: ignore[arg-type]


def materializations(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, dict[str, Any]]:
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        found[materialization.asset_key] = {k: v.value for k, v in materialization.metadata.items()}
    return found


def test_a_dagster_run_is_one_ratatouille_run_with_its_records_and_published_data(
    shop: Path, instance: dg.DagsterInstance
) -> None:
    drop(shop, "a.csv", "id,amount\n1,10\n")
    defs = build_definitions(shop, retry_delay_s=0.1)
    result = defs.resolve_job_def("default__all").execute_in_process(instance=instance)
    assert result.success
    (record,) = runs(shop)
    assert (record["trigger"], record["status"]) == ("dagster", "success")
    found = materializations(result)
    assert set(found) == {
        key("bronze", "orders"),
        key("bronze", "drops"),
        key("silver", "orders"),
        key("silver", "drops"),
        key("gold", "by_customer"),
    }
    assert all(m["rat_run_id"] == record["id"] for m in found.values())
    assert found[key("silver", "orders")]["rows_written"] == 100
    ws = Workspace.open(shop)
    try:
        detail = ws.run_record(record["id"])
        snapshots = {n["node"]: str(n["snapshot_id"]) for n in detail["nodes"]}
        assert found[key("gold", "by_customer")]["snapshot_id"] == snapshots["gold.by_customer"]
        assert ws.query("SELECT count(*) AS n FROM gold.by_customer").to_pylist() == [{"n": 5}]
        assert not [b for t in ws.tables() for b in ws.describe(t.short)["branches"]]  # audit branches gone
    finally:
        ws.close()
    assert result.dagster_run.tags["rat/run_id"] == record["id"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "not_null_order_key": True,
        "unique_order_key": True,
        "non_negative_amount": True,
        "not_null_id": True,
        "five_customers": True,
    }

    # A scheduled run: recorded with its trigger, seen by `rat runs` and `rat logs`.
    scheduled = run_scheduled(defs, "default__gold_by_customer_schedule", instance)
    assert scheduled.success
    latest = runs(shop)[0]
    assert (latest["trigger"], latest["selection"], latest["status"]) == ("schedule", "gold.by_customer", "success")
    cli_runs = CliRunner().invoke(cli, ["runs", "--json", "--project", str(shop)])
    assert cli_runs.exit_code == 0, cli_runs.output
    assert [(r["id"], r["trigger"]) for r in json.loads(cli_runs.output)][:2] == [
        (latest["id"], "schedule"),
        (record["id"], "dagster"),
    ]
    logs = CliRunner().invoke(cli, ["logs", latest["id"], "--project", str(shop)])
    assert logs.exit_code == 0, logs.output
    text = " ".join(logs.output.split())  # rich wraps lines at the terminal's width
    assert "(schedule, started" in text
    assert f"started by Dagster run {scheduled.run_id} (schedule default__gold_by_customer_schedule)" in text


def test_checks_alone_report_the_latest_recorded_test_results(shop: Path, instance: dg.DagsterInstance) -> None:
    drop(shop, "a.csv", "id,amount\n1,10\n")
    defs = build_definitions(shop, retry_delay_s=0.1)
    assert defs.resolve_job_def("default__all").execute_in_process(instance=instance).success
    before = len(runs(shop))
    check = dg.AssetCheckKey(key("silver", "orders"), "unique_order_key")
    result = run_checks(defs, instance, [check])
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.passed) == ("unique_order_key", True)
    assert evaluation.metadata["rat_run_id"].value == runs(shop)[0]["id"]
    assert len(runs(shop)) == before  # nothing was run


def test_a_failing_test_fails_the_dagster_run_and_its_check_without_retrying(
    shop: Path, instance: dg.DagsterInstance
) -> None:
    (shop / "workspaces" / "default" / "workspace.yaml").write_text("vars: {n: 3}\n")  # 3 customers, not 5
    drop(shop, "a.csv", "id,amount\n1,10\n")
    defs = build_definitions(shop, retries=2, retry_delay_s=0.1)
    result = defs.resolve_job_def("default__all").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    checks = {e.check_name: (e.passed, e.severity) for e in result.get_asset_check_evaluations()}
    assert checks["five_customers"] == (False, dg.AssetCheckSeverity.ERROR)
    assert checks["unique_order_key"] == (True, dg.AssetCheckSeverity.ERROR)
    assert key("gold", "by_customer") not in materializations(result)  # not published
    assert key("silver", "orders") in materializations(result)
    assert len(runs(shop)) == 1  # a failed test fails the same way every time: no retry
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "five_customers" in str(failure.event_specific_data.error)


def test_a_source_that_cannot_be_read_is_retried_with_backoff_and_alerts_once(
    shop: Path, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    write_files(
        shop,
        {
            "sources/drops.yaml": """
                name: drops
                type: files
                path: landing/drops/*.csv
                format: csv
                columns: {id: bigint, amount: double}
                on_error: fail
            """
        },
    )
    drop(shop, "bad.csv", "id,amount\nnot-a-number,1\n")
    alerts = AlertsConfig(webhooks=[WebhookConfig(url=f"{receiver.url}/json", kind="json")], backoff_s=0.01)
    defs = build_definitions(shop, retries=2, retry_delay_s=0.2, alerts=alerts)
    started = time.monotonic()
    result = run_scheduled(defs, "default__silver_drops_schedule", instance)
    assert not result.success
    attempts = runs(shop)
    assert [r["trigger"] for r in attempts] == ["schedule"] * 3  # first try + 2 retries
    assert all(r["status"] == "failed" for r in attempts)
    assert time.monotonic() - started >= 0.2 + 0.4 * 0.5  # backoff (with jitter) between the tries
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 2
    (body,) = receiver.bodies("/json")  # alerted once, after the last try
    assert body["event"] == "run_failed"
    assert body["run_id"] == attempts[0]["id"]
    assert body["node"] == "bronze.drops"


def test_a_failing_model_on_a_schedule_sends_one_alert_to_each_webhook(
    shop: Path, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    write_files(
        shop,
        {
            "pipelines/gold/broken.sql": "SELECT error('boom: the model broke') AS x FROM {{ ref('silver.orders') }}\n",
            "pipelines/gold/broken.yaml": 'schedule: "0 * * * *"\n',
        },
    )
    alerts = AlertsConfig(
        webhooks=[
            WebhookConfig(url=f"{receiver.url}/slack", kind="slack"),
            WebhookConfig(url=f"{receiver.url}/json", kind="json", events=["run_failed"]),
            WebhookConfig(url=f"{receiver.url}/fresh", kind="json", events=["freshness"]),
        ],
        backoff_s=0.01,
    )
    drop(shop, "a.csv", "id,amount\n1,10\n")
    defs = build_definitions(shop, retries=2, retry_delay_s=0.1, alerts=alerts)
    assert defs.resolve_job_def("default__all").execute_in_process(instance=instance, raise_on_error=False)
    receiver.requests.clear()
    result = run_scheduled(defs, "default__gold_broken_schedule", instance)
    assert not result.success
    record = runs(shop)[0]
    assert (record["trigger"], record["selection"], record["status"]) == ("schedule", "gold.broken", "failed")
    assert len(receiver.requests) == 2
    (slack,) = receiver.bodies("/slack")
    assert set(slack) == {"text", "blocks"}
    assert "Run failed" in slack["text"] and "boom: the model broke" in slack["text"]
    assert {b["type"] for b in slack["blocks"]} >= {"header", "section", "context"}
    (body,) = receiver.bodies("/json")
    assert body["event"] == "run_failed"
    assert body["level"] == "error"
    assert body["workspace"] == "default"
    assert body["run_id"] == record["id"]
    assert body["node"] == "gold.broken"
    assert body["trigger"] == "schedule"
    assert "boom: the model broke" in body["message"]
    assert body["nodes"] == [{"node": "gold.broken", "status": "failed", "error": body["nodes"][0]["error"]}]


def test_freshness_breaches_are_checked_when_they_change_and_alert_once(
    shop: Path, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    write_files(
        shop,
        {
            "pipelines/gold/by_customer.yaml": """
                freshness: {warn_after: {minutes: 0.001}, error_after: {hours: 24}}
            """
        },
    )
    alerts = AlertsConfig(webhooks=[WebhookConfig(url=f"{receiver.url}/json", kind="json")], backoff_s=0.01)
    drop(shop, "a.csv", "id,amount\n1,10\n")
    defs = build_definitions(shop, retry_delay_s=0.1, alerts=alerts)
    repo = defs.get_repository_def()
    assert defs.resolve_job_def("default__all").execute_in_process(instance=instance).success
    time.sleep(0.1)
    sensor = repo.get_sensor_def("default__freshness")
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert first.run_requests is not None
    (request,) = first.run_requests
    check = dg.AssetCheckKey(key("gold", "by_customer"), "freshness")
    assert request.asset_check_keys == [check]
    result = run_checks(defs, instance, [check], request.tags)
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    (body,) = receiver.bodies("/json")
    assert (body["event"], body["level"], body["node"]) == ("freshness", "warning", "gold.by_customer")
    again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
    assert again.run_requests == []  # still stale: no new check run, no second alert
