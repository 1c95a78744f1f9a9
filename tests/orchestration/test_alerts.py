"""Alerts: what a run deserves, the two body shapes, delivery with retries, configuration, the CLI."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import write_project
from orchestration.conftest import Receiver
from ratatouille.alerts import (
    AlertsConfig,
    WebhookConfig,
    alerts_for,
    body,
    deliver,
    freshness_alerts,
    read_alerts,
    send,
)
from ratatouille.cli.main import cli
from ratatouille.errors import ConfigError
from ratatouille.models.testing import TestResult
from ratatouille.runs.checks import FreshnessResult
from ratatouille.runs.runner import NodeResult, RunResult
from ratatouille.workspace import Workspace


def run(status: str, *nodes: NodeResult, error: str | None = None) -> RunResult:
    return RunResult("20260101T000000-abcdef12", status, list(nodes), error=error)


def failing_test(node: str, severity: str = "error") -> TestResult:
    status = "fail" if severity == "error" else "warn"
    return TestResult(node, "unique(id)", severity, status, 2, [], "2 failing row(s)")


def test_a_good_run_deserves_no_alert() -> None:
    ok = NodeResult(
        "silver.a", "sql", status="success", tests=[TestResult("silver.a", "not_null(id)", "error", "pass")]
    )
    assert alerts_for(run("success", ok), workspace="default") == []


def test_a_run_failed_by_its_tests_is_one_test_failed_alert_that_run_failed_subscribers_get() -> None:
    node = NodeResult("silver.a", "sql", status="failed", error="1 test(s) failed", tests=[failing_test("silver.a")])
    down = NodeResult("gold.b", "sql", status="skipped", error="skipped because `silver.a` did not succeed")
    (alert,) = alerts_for(run("failed", node, down), workspace="default", trigger="schedule")
    assert (alert.event, alert.level, alert.node, alert.trigger) == ("test_failed", "error", "silver.a", "schedule")
    assert "unique(id)" in alert.message
    assert alert.matches(["run_failed"]) and alert.matches(["test_failed"]) and not alert.matches(["freshness"])


def test_a_broken_model_is_one_run_failed_alert() -> None:
    a = NodeResult("silver.a", "sql", status="failed", error="Binder Error: no column x\nLINE 1")
    b = NodeResult("silver.c", "sql", status="failed", error="Catalog Error")
    (alert,) = alerts_for(run("failed", a, b), workspace="default")
    assert alert.event == "run_failed" and alert.node == "silver.a"
    assert alert.message.endswith("`silver.a` failed: Binder Error: no column x (and 1 more node(s))")
    assert not alert.matches(["test_failed"])


def test_warn_level_tests_alert_as_a_warning_on_a_successful_run() -> None:
    node = NodeResult("silver.a", "sql", status="success", tests=[failing_test("silver.a", "warn")])
    (alert,) = alerts_for(run("success", node), workspace="default")
    assert (alert.event, alert.level) == ("test_warned", "warning")
    assert not alert.matches(WebhookConfig(url="http://127.0.0.1/x").events)  # opt-in
    assert alert.matches(["test_warned"])


def test_freshness_alerts_only_for_breaches() -> None:
    results = [
        FreshnessResult("gold.a", "pass", 1.0, "2026-01-01T00:00:00", 6.0, 24.0),
        FreshnessResult("gold.b", "error", 30.5, "2026-01-01T00:00:00", 6.0, 24.0),
        FreshnessResult("gold.c", "never", None, None, 6.0, 24.0),
    ]
    (alert,) = freshness_alerts(results, workspace="default")
    assert (alert.event, alert.level, alert.node) == ("freshness", "error", "gold.b")
    assert alert.message == "`gold.b` was last published 30.5 h ago (error_after: 24.0 h)"


def test_the_two_body_shapes() -> None:
    node = NodeResult("silver.a", "sql", status="failed", error="boom <b>&", tests=[])
    (alert,) = alerts_for(run("failed", node), workspace="default", trigger="cli")
    generic = body(alert, "json", project="shop")
    assert {k: generic[k] for k in ("event", "level", "project", "workspace", "run_id", "node", "trigger")} == {
        "event": "run_failed",
        "level": "error",
        "project": "shop",
        "workspace": "default",
        "run_id": "20260101T000000-abcdef12",
        "node": "silver.a",
        "trigger": "cli",
    }
    assert generic["nodes"] == [{"node": "silver.a", "status": "failed", "error": "boom <b>&"}]
    json.dumps(generic)
    slack = body(alert, "slack", project="shop")
    assert set(slack) == {"text", "blocks"}
    assert slack["text"].startswith(":red_circle: Run failed in shop/default:")
    section = next(b for b in slack["blocks"] if b["type"] == "section")
    assert "boom &lt;b&gt;&amp;" in section["text"]["text"]  # mrkdwn escaping


def test_delivery_retries_5xx_with_backoff_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses["/hook"] = [500, 503]
    config = AlertsConfig(webhooks=[WebhookConfig(url=f"{receiver.url}/hook")], retries=3, backoff_s=0.01)
    node = NodeResult("silver.a", "sql", status="failed", error="boom")
    waits: list[float] = []
    (delivery,) = send(alerts_for(run("failed", node), workspace="default"), config, sleep=waits.append)
    assert (delivery.ok, delivery.status, delivery.attempts) == (True, 200, 3)
    assert waits == [0.01, 0.02]
    assert len(receiver.bodies("/hook")) == 3


def test_delivery_gives_up_without_raising(receiver: Receiver) -> None:
    receiver.statuses["/gone"] = [404]
    config = AlertsConfig(
        webhooks=[
            WebhookConfig(url=f"{receiver.url}/gone", name="gone"),
            WebhookConfig(url="http://127.0.0.1:9/nothing-listens"),
        ],
        retries=2,
        backoff_s=0,
        timeout_s=2,
    )
    node = NodeResult("silver.a", "sql", status="failed", error="boom")
    refused, unreachable = send(alerts_for(run("failed", node), workspace="default"), config)
    assert (refused.webhook, refused.status, refused.attempts, refused.error) == ("gone", 404, 1, "HTTP 404")
    assert (unreachable.webhook, unreachable.status, unreachable.attempts) == ("http://127.0.0.1:9/...", None, 3)
    assert unreachable.error and "refused" in unreachable.error.lower()


def test_a_webhook_gets_only_its_events() -> None:
    posted: list[str] = []

    def post(url: str, data: bytes, headers: Mapping[str, str], timeout: float) -> int:
        posted.append(url)
        return 204

    config = AlertsConfig(
        webhooks=[
            WebhookConfig(url="http://127.0.0.1/all"),
            WebhookConfig(url="http://127.0.0.1/fresh", events=["freshness"]),
        ]
    )
    node = NodeResult("silver.a", "sql", status="failed", error="boom")
    deliveries = send(alerts_for(run("failed", node), workspace="default"), config, post=post)
    assert posted == ["http://127.0.0.1/all"] and deliveries[0].ok
    broken = deliver(alerts_for(run("failed", node), workspace="x")[0], config.webhooks[0], config, post=post)
    assert broken.ok


def test_alerts_are_read_from_ratatouille_yaml_with_env_and_located_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_project(
        tmp_path / "p",
        """
        alerts:
          webhooks:
            - url: ${env:HOOK_URL}
              kind: slack
              events: [run_failed]
          retries: 5
        """,
    )
    assert read_alerts(write_project(tmp_path / "empty")) == AlertsConfig()
    monkeypatch.setenv("HOOK_URL", "https://hooks.example/T000/B000/secret")
    monkeypatch.setenv("RAT_ALERTS__TIMEOUT_S", "3")
    config = read_alerts(root)
    assert config.webhooks[0].url == "https://hooks.example/T000/B000/secret"
    assert config.webhooks[0].label == "https://hooks.example/..."  # the secret path is never shown
    assert (config.retries, config.timeout_s) == (5, 3.0)
    bad = write_project(tmp_path / "bad", "alerts:\n  webhooks:\n    - url: x\n      kind: teams\n  retry: 1\n")
    with pytest.raises(ConfigError) as caught:
        read_alerts(bad)
    text = str(caught.value)
    assert "ratatouille.yaml:6: alerts.webhooks.0.kind:" in text
    assert "ratatouille.yaml:7: alerts.retry: unknown key" in text


def test_rat_alerts_test_posts_to_every_webhook_and_shows_the_answers(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses["/down"] = [500, 500, 500, 500]
    root = write_project(
        tmp_path / "p",
        f"""
        alerts:
          backoff_s: 0
          webhooks:
            - {{url: "{receiver.url}/slack", kind: slack, events: [freshness]}}
            - {{url: "{receiver.url}/down", name: ops}}
        """,
    )
    result = CliRunner().invoke(cli, ["alerts", "test", "--json", "--project", str(root)])
    assert result.exit_code == 1  # one webhook did not accept it
    answers = json.loads(result.stdout)
    assert [(a["webhook"], a["status"], a["ok"]) for a in answers] == [
        (f"{receiver.url}/...", 200, True),
        ("ops", 500, False),
    ]
    (slack,) = receiver.bodies("/slack")
    assert slack["text"].startswith(":information_source: Test alert")
    empty = write_project(tmp_path / "none")
    result = CliRunner().invoke(cli, ["alerts", "test", "--project", str(empty)])
    assert result.exit_code == 1 and "no webhook is configured" in result.output


def test_workspace_notify_sends_once_per_run_and_not_while_held(local_workspace: Workspace, receiver: Receiver) -> None:
    config = AlertsConfig(webhooks=[WebhookConfig(url=f"{receiver.url}/hook")])
    failed = run("failed", NodeResult("silver.a", "sql", status="failed", error="boom"))
    with local_workspace.holding_alerts():
        assert local_workspace.notify(failed, config=config) == []
    assert [d.ok for d in local_workspace.notify(failed, config=config)] == [True]
    assert local_workspace.notify(failed, config=config) == []  # already sent for that run
    assert len(receiver.bodies("/hook")) == 1
