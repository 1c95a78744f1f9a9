"""Alerts: failed runs, failed tests and freshness breaches, posted to webhooks.

Configured in ``ratatouille.yaml``::

    alerts:
      webhooks:
        - url: ${env:SLACK_WEBHOOK_URL}
          kind: slack                   # slack: {"text", "blocks"}; json: a flat JSON object
          events: [run_failed, test_failed, freshness]    # the default; test_warned is opt-in
        - url: https://ops.example.com/hooks/rat
          kind: json
          headers: {Authorization: "Bearer ${env:OPS_TOKEN}"}
      retries: 3                        # per delivery, on timeouts, 429 and 5xx
      timeout_s: 10
      backoff_s: 1                      # 1 s, 2 s, 4 s, ... between attempts

A run produces at most one alert (``alerts_for``): ``run_failed`` when it failed, ``test_failed``
when it failed only because of error-severity tests, ``test_warned`` when it succeeded with
warn-severity tests failing (not sent unless a webhook lists it: a known warning would repeat on
every scheduled run). A webhook subscribed to ``run_failed`` also gets the ``test_failed`` alert
of a failed run. Freshness breaches (``warn`` or ``error``) give one alert per model
(``freshness_alerts``).

Sending never raises: every delivery's outcome is returned (and logged), so an unreachable
webhook can never fail a run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ratatouille.config import (
    PROJECT_FILE,
    AlertsConfig,
    Event,
    WebhookConfig,
    apply_env_overrides,
    interpolate_env,
    read_yaml,
    validate,
)
from ratatouille.errors import ConfigError, Problem

if TYPE_CHECKING:
    from ratatouille.project import Project
    from ratatouille.runs.checks import FreshnessResult
    from ratatouille.runs.runner import RunResult

log = logging.getLogger("ratatouille.alerts")

MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Alert:
    """Something worth telling people about."""

    event: Event
    level: Literal["error", "warning", "info"]
    workspace: str
    message: str  # one line
    run_id: str | None = None
    node: str | None = None  # the first failing node, or the stale model
    trigger: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    also: frozenset[Event] = frozenset()  # other events this alert counts as (a failed run's test_failed)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def matches(self, events: Iterable[str]) -> bool:
        """Whether a webhook subscribed to ``events`` gets this alert."""
        wanted = set(events)
        return self.event in wanted or bool(self.also & wanted)


@dataclass(frozen=True)
class Delivery:
    """The outcome of posting one alert to one webhook."""

    webhook: str  # its label (never the full URL)
    kind: str
    event: str
    status: int | None  # the HTTP status of the last attempt; None if no answer
    attempts: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the webhook accepted the alert (2xx)."""
        return self.status is not None and 200 <= self.status < 300


# -- what to alert about --------------------------------------------------------------------


def alerts_for(result: RunResult, *, workspace: str, trigger: str | None = None) -> list[Alert]:
    """The alert a run deserves: none when it went well, else exactly one.

    ``test_failed`` when the run failed only because error-severity tests failed, ``test_warned``
    when it succeeded with warn-severity tests failing, ``run_failed`` otherwise.
    """
    failed_tests = [(n.key, t) for n in result.nodes for t in n.tests if t.status in ("fail", "warn")]
    failed_nodes = [n for n in result.nodes if n.status == "failed"]
    if result.ok and not failed_tests:
        return []
    tests: list[dict[str, Any]] = [
        {
            "node": key,
            "name": t.name,
            "severity": t.severity,
            "status": t.status,
            "failures": t.failures,
            "message": t.message,
        }
        for key, t in failed_tests
    ]
    nodes = [{"node": n.key, "status": n.status, "error": _first_line(n.error)} for n in result.nodes if n.error]
    details: dict[str, Any] = {
        "status": result.status,
        "nodes": nodes,
        "tests": tests,
        "logs": f"rat logs {result.run_id}",
    }
    if result.error:
        details["error"] = _first_line(result.error)
    if result.ok:  # only warn-severity tests failed
        names = ", ".join(f"{t['node']}: {t['name']}" for t in tests)
        message = f"run {result.run_id} succeeded, but {len(tests)} warn-level test(s) failed: {names}"
        return [Alert("test_warned", "warning", workspace, message, result.run_id, tests[0]["node"], trigger, details)]
    blocking = [t for t in tests if t["status"] == "fail"]
    failed_keys = {n.key for n in failed_nodes}
    only_tests = bool(blocking) and result.error is None and failed_keys <= {t["node"] for t in blocking}
    first = failed_nodes[0].key if failed_nodes else None
    if only_tests:
        names = ", ".join(f"{t['node']}: {t['name']} ({t['message']})" for t in blocking)
        message = (
            f"run {result.run_id} failed: {len(blocking)} test(s) failed, so nothing of theirs was published: {names}"
        )
        event: Event = "test_failed"
        also: frozenset[Event] = frozenset({"run_failed"})
    else:
        reason = _first_line(result.error) or next((_first_line(n.error) for n in failed_nodes if n.error), "")
        what = f"`{first}` failed" if first else "the run failed"
        message = f"run {result.run_id} failed: {what}: {reason}".rstrip(": ")
        if len(failed_nodes) > 1:
            message += f" (and {len(failed_nodes) - 1} more node(s))"
        event, also = "run_failed", frozenset({"test_failed"}) if blocking else frozenset()
    return [Alert(event, "error", workspace, message, result.run_id, first, trigger, details, also)]


def freshness_alerts(results: Iterable[FreshnessResult], *, workspace: str) -> list[Alert]:
    """One alert per model whose last publish is older than its ``warn_after`` or ``error_after``."""
    alerts = []
    for r in results:
        if r.status not in ("warn", "error"):
            continue
        limit = r.error_after_hours if r.status == "error" else r.warn_after_hours
        kind = "error_after" if r.status == "error" else "warn_after"
        message = f"`{r.model}` was last published {r.age_hours} h ago ({kind}: {limit} h)"
        details = {
            "status": r.status,
            "age_hours": r.age_hours,
            "last_published": r.last_published,
            "warn_after_hours": r.warn_after_hours,
            "error_after_hours": r.error_after_hours,
        }
        level: Literal["error", "warning"] = "error" if r.status == "error" else "warning"
        alerts.append(Alert("freshness", level, workspace, message, None, r.model, None, details))
    return alerts


def sample_alert(workspace: str = "default") -> Alert:
    """The alert ``rat alerts test`` sends."""
    return Alert(
        "run_failed",
        "info",
        workspace,
        "test alert from `rat alerts test`: this webhook receives Ratatouille alerts",
        run_id="test",
        details={"test": True},
    )


# -- bodies ---------------------------------------------------------------------------------


def json_body(alert: Alert, project: str | None = None) -> dict[str, Any]:
    """The generic JSON body: flat, stable keys."""
    return {
        "event": alert.event,
        "level": alert.level,
        "project": project,
        "workspace": alert.workspace,
        "run_id": alert.run_id,
        "node": alert.node,
        "trigger": alert.trigger,
        "message": alert.message,
        "at": alert.at,
        **{k: v for k, v in alert.details.items() if k not in ("event", "workspace", "run_id", "node", "message")},
    }


_EMOJI = {"error": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}


def slack_body(alert: Alert, project: str | None = None) -> dict[str, Any]:
    """A Slack incoming-webhook body (also understood by Mattermost and Rocket.Chat): ``text`` and ``blocks``."""
    title = {
        "run_failed": "Run failed",
        "test_failed": "Tests failed",
        "test_warned": "Tests warned",
        "freshness": "Stale data",
    }[alert.event]
    if alert.level == "info":
        title = "Test alert"
    where = f"{project}/{alert.workspace}" if project else alert.workspace
    text = f"{_EMOJI[alert.level]} {title} in {where}: {alert.message}"
    context = [f"*workspace* {alert.workspace}"]
    if alert.run_id:
        context.append(f"*run* `{alert.run_id}`")
    if alert.trigger:
        context.append(f"*trigger* {alert.trigger}")
    if alert.node:
        context.append(f"*node* `{alert.node}`")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title} in {where}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(alert.message)[:2900]}},
    ]
    tests = alert.details.get("tests") or []
    if tests:
        lines = [f"• `{t['node']}` {t['name']}: {t['message']}" for t in tests[:10]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    if alert.run_id and alert.level != "info":
        context.append(f"details: `rat logs {alert.run_id}`")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    return {"text": text, "blocks": blocks}


def body(alert: Alert, kind: str, project: str | None = None) -> dict[str, Any]:
    """The body of ``alert`` for a webhook of ``kind``."""
    return slack_body(alert, project) if kind == "slack" else json_body(alert, project)


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


# -- sending --------------------------------------------------------------------------------

Post = Callable[[str, bytes, Mapping[str, str], float], int]


def _post(url: str, data: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST and return the status; HTTP errors are statuses, network problems raise ``OSError``."""
    import urllib.error  # here, not at import: a run that alerts nobody never loads urllib
    import urllib.request

    request = urllib.request.Request(url, data=data, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - configured webhook
            response.read(65_536)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def deliver(
    alert: Alert,
    webhook: WebhookConfig,
    config: AlertsConfig,
    *,
    project: str | None = None,
    post: Post | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Post one alert to one webhook, retrying timeouts, connection errors, 429 and 5xx with
    exponential backoff. Never raises."""
    post = post or _post
    headers = {"Content-Type": "application/json", "User-Agent": "ratatouille-alerts", **webhook.headers}
    try:
        data = json.dumps(body(alert, webhook.kind, project), default=str).encode()
    except Exception as exc:  # a body that cannot be encoded is a bug; it must not break the run
        return Delivery(webhook.label, webhook.kind, alert.event, None, 0, f"cannot encode the alert: {exc}")
    status: int | None = None
    error: str | None = None
    attempts = 0
    for attempt in range(config.retries + 1):
        attempts = attempt + 1
        try:
            status, error = post(webhook.url, data, headers, config.timeout_s), None
        except Exception as exc:  # network errors, timeouts, invalid URLs
            status, error = None, f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        if status is not None and (200 <= status < 300 or (400 <= status < 500 and status != 429)):
            break  # delivered, or refused for good (a 4xx will not change by retrying)
        if attempt < config.retries:
            sleep(min(config.backoff_s * 2**attempt, MAX_BACKOFF_S))
    if status is not None and not 200 <= status < 300:
        error = error or f"HTTP {status}"
    delivery = Delivery(webhook.label, webhook.kind, alert.event, status, attempts, error)
    if not delivery.ok:
        log.warning("alert %s to %s not delivered after %d attempt(s): %s", alert.event, webhook.label, attempts, error)
    return delivery


def send(
    alerts: Iterable[Alert],
    config: AlertsConfig,
    *,
    project: str | None = None,
    post: Post | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Delivery]:
    """Post every alert to every webhook subscribed to its event. Never raises."""
    deliveries: list[Delivery] = []
    for alert in alerts:
        for webhook in config.webhooks:
            if alert.matches(webhook.events):
                deliveries.append(deliver(alert, webhook, config, project=project, post=post, sleep=sleep))
    return deliveries


def send_test(config: AlertsConfig, *, project: str | None = None, post: Post | None = None) -> list[Delivery]:
    """Post a sample alert to every configured webhook, whatever its events.

    Raises:
        ConfigError: no webhook is configured.
    """
    if not config.webhooks:
        raise ConfigError(
            f"no webhook is configured; add `alerts: {{webhooks: [{{url: ..., kind: slack}}]}}` to {PROJECT_FILE}"
        )
    alert = sample_alert()
    return [deliver(alert, webhook, config, project=project, post=post) for webhook in config.webhooks]


# -- configuration --------------------------------------------------------------------------


def read_alerts(root: Path, env: Mapping[str, str] | None = None) -> AlertsConfig:
    """The ``alerts:`` section of ``<root>/ratatouille.yaml`` (``${env:...}`` interpolated,
    ``RAT_ALERTS__...`` overrides applied); defaults (no webhooks) when there is none.

    Raises:
        ConfigError: the section is invalid (every problem, with file:line).
    """
    env = os.environ if env is None else env
    path = root / PROJECT_FILE
    data, lines = read_yaml(path)
    section = data.get("alerts") if isinstance(data, dict) else None
    problems: list[Problem] = []
    section = interpolate_env(section or {}, str(path), lines, problems, env, ("alerts",))
    section = apply_env_overrides({"alerts": section}, env, sections=["alerts"])["alerts"]
    found: list[Problem] = []
    config = validate(
        AlertsConfig, section, str(path), {k[1:]: v for k, v in lines.items() if k[:1] == ("alerts",)}, found
    )
    problems.extend(Problem(p.file, p.line, f"alerts.{p.key}" if p.key else "alerts", p.message) for p in found)
    if problems:
        raise ConfigError(problems)
    assert isinstance(config, AlertsConfig)
    return config


def load_alerts(project: Project | Path | str | None = None) -> AlertsConfig:
    """The project's alert settings: ``project.config.alerts`` once ``ProjectConfig`` has that
    field, else read from ``ratatouille.yaml``. A path (or ``None``) finds the project like the CLI.

    Raises:
        ProjectNotFoundError: no project was found.
        ConfigError: the section is invalid.
    """
    from ratatouille.project import Project, find_root

    if isinstance(project, Project):
        configured = getattr(project.config, "alerts", None)
        if configured is not None:
            return AlertsConfig.model_validate(
                configured.model_dump() if hasattr(configured, "model_dump") else configured
            )
        return read_alerts(project.root)
    return read_alerts(find_root(Path(project) if project is not None else None))


__all__ = [
    "Alert",
    "AlertsConfig",
    "Delivery",
    "WebhookConfig",
    "alerts_for",
    "freshness_alerts",
    "load_alerts",
    "read_alerts",
    "send",
    "send_test",
]
