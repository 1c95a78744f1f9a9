"""Sources and models as Dagster assets, run through ``Workspace.run``.

Each workspace is one subsettable multi-asset whose op runs the selected nodes with ONE call to
``Workspace.run``: the Dagster run is one Ratatouille run (write-audit-publish, one all-or-nothing
publish, the same run records as ``rat run``, trigger ``schedule`` / ``sensor`` / ``dagster``).
Dagster never writes a table. The op then reports what the run did: a materialization per node
that published something new (rows, snapshot id, duration, the Ratatouille run id), a check
result per model test, and a failure (with the run's error) when the run failed.

Retries: a run that failed for a reason that may pass on a second try (a source that could not
be read, a publish that lost a commit race, an exception such as an unreachable state store) is
retried by Dagster's ``RetryPolicy`` with exponential backoff; failed tests and broken SQL are not.
Alerts go out once, after the last attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from ratatouille.errors import ConfigError
from ratatouille.orchestration.plan import FRESHNESS_CHECK, NodePlan, WorkspacePlan

if TYPE_CHECKING:
    from ratatouille.alerts import AlertsConfig
    from ratatouille.runs.runner import NodeResult, RunResult
    from ratatouille.workspace import Workspace

TRIGGER_TAG = "rat/trigger"
WORKSPACE_TAG = "rat/workspace"
RUN_ID_TAG = "rat/run_id"
_OWNER_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_TAG_KEY = r"^[A-Za-z0-9_.-]{1,63}$"

AssetEvent = dg.MaterializeResult[Any] | dg.AssetCheckResult


def asset_key(node: NodePlan) -> dg.AssetKey:
    """``[workspace, layer, name]``."""
    return dg.AssetKey(list(node.asset_key))


def trigger_of(tags: dict[str, str]) -> str:
    """What started a Dagster run, as Ratatouille records it: ``schedule``, ``sensor`` or ``dagster``."""
    if tags.get(TRIGGER_TAG):
        return tags[TRIGGER_TAG]
    if "dagster/schedule_name" in tags:
        return "schedule"
    if "dagster/sensor_name" in tags:
        return "sensor"
    return "dagster"


def asset_spec(node: NodePlan) -> dg.AssetSpec:
    """The Dagster view of a source or model (no execution: the workspace's multi-asset runs it)."""
    import re

    metadata: dict[str, Any] = {"rat/node": node.key, "rat/kind": node.kind, "rat/path": node.path}
    if node.materialized:
        metadata["rat/materialized"] = node.materialized
    if node.schedule:
        metadata["rat/schedule"] = node.schedule
    if node.landing_path:
        metadata["rat/landing"] = node.landing_path
    if node.owner:
        metadata["rat/owner"] = node.owner
    kinds = {"iceberg", node.source_type or ("python" if node.kind == "python" else "sql")}
    return dg.AssetSpec(
        asset_key(node),
        deps=[dg.AssetKey(list(up)) for up in node.upstream],
        description=node.description or f"{node.kind} `{node.key}` of workspace `{node.workspace}` ({node.path})",
        metadata=metadata,
        skippable=True,  # a node that is up to date, or was skipped, reports nothing
        group_name=node.workspace,
        owners=[node.owner] if node.owner and re.match(_OWNER_EMAIL, node.owner) else None,
        tags={t: "" for t in node.tags if re.match(_TAG_KEY, t)},
        kinds=kinds,
    )


def check_specs(node: NodePlan) -> list[dg.AssetCheckSpec]:
    """A model's data tests as asset checks."""
    return [
        dg.AssetCheckSpec(
            check.check,
            asset=asset_key(node),
            description=f"test `{check.test}` ({check.severity}), run on the audit branch before publishing",
            metadata={"rat/test": check.test, "rat/severity": check.severity},
        )
        for check in node.tests
    ]


def pipelines_asset(
    plan: WorkspacePlan, root: Path, *, retry: dg.RetryPolicy, alerts: AlertsConfig | None = None
) -> dg.AssetsDefinition:
    """The workspace's multi-asset: every node, every test check, one op that calls ``Workspace.run``."""
    nodes = list(plan.nodes.values())

    def pipelines(context: dg.AssetExecutionContext) -> Iterator[AssetEvent]:
        yield from execute(context, plan, root, retry=retry, alerts=alerts)

    return dg.multi_asset(
        name=f"{plan.name}__pipelines",
        specs=[asset_spec(n) for n in nodes],
        check_specs=[spec for n in nodes for spec in check_specs(n)],
        can_subset=True,
        retry_policy=retry,
        description=f"Runs the selected sources and models of workspace `{plan.name}` as one Ratatouille run.",
    )(dagster_typed(pipelines, dg.AssetExecutionContext))


def dagster_typed(function: Callable[..., Any], context_type: type) -> Callable[..., Any]:
    """Give Dagster the real class of ``context``: with ``from __future__ import annotations`` the
    annotations are strings, and Dagster compares them with classes."""
    function.__annotations__ = {"context": context_type}
    return function


def execute(
    context: dg.AssetExecutionContext,
    plan: WorkspacePlan,
    root: Path,
    *,
    retry: dg.RetryPolicy,
    alerts: AlertsConfig | None = None,
) -> Iterator[AssetEvent]:
    """Run the selection with ``Workspace.run`` and report it; raise ``Failure`` when the run failed."""
    from ratatouille.runs.runner import RunResult
    from ratatouille.workspace import Workspace

    by_asset = {asset_key(n): n for n in plan.nodes.values()}
    selected = sorted(by_asset[k].key for k in context.selected_asset_keys if k in by_asset)
    checks = sorted(context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))
    trigger = trigger_of(dict(context.run.tags))
    final = context.retry_number >= retry.max_retries
    workspace = Workspace.open(root, plan.name)
    try:
        if not selected:  # checks alone: report the latest recorded test results
            yield from _recorded_checks(workspace, plan, checks, None)
            return
        started: list[str] = []

        def on_start(run_id: str) -> None:
            started.append(run_id)
            context.log.info(f"Ratatouille run {run_id} ({trigger}): {', '.join(selected)}")
            try:  # bookkeeping: it must not stop the run it reports on
                dagster_run = context.run.run_id
                workspace.state.log(run_id, "INFO", f"started by Dagster run {dagster_run} ({_origin(context)})")
                context.instance.add_run_tags(dagster_run, {RUN_ID_TAG: run_id})
            except Exception as exc:
                context.log.warning(f"could not link Ratatouille run {run_id} to this Dagster run: {exc}")

        def progress(event: str, node: NodeResult) -> None:
            if event not in ("started", "progress"):
                context.log.info(f"{node.key}: {node.status}" + (f" ({node.error})" if node.error else ""))

        try:
            with workspace.holding_alerts():
                result = workspace.run(selected, trigger=trigger, progress=progress, on_start=on_start)
        except ConfigError as exc:
            raise dg.Failure(f"the pipelines of `{plan.name}` are invalid: {exc}", allow_retries=False) from exc
        except Exception as exc:
            if final:
                run_id = started[0] if started else "not-started"
                failed = RunResult(run_id, "failed", [], error=f"{type(exc).__name__}: {exc}")
                workspace.notify(failed, trigger=trigger, config=alerts)
            raise
        yield from _report(context, plan, result, trigger, selected)
        yield from _recorded_checks(workspace, plan, checks, result)
        retryable = _retryable(result)
        if not result.ok:
            if final or not retryable:
                workspace.notify(result, trigger=trigger, config=alerts)
            raise dg.Failure(
                description=_summary(result),
                metadata={"rat_run_id": result.run_id, "details": f"rat logs {result.run_id}"},
                allow_retries=retryable,
            )
        workspace.notify(result, trigger=trigger, config=alerts)  # warn-level test failures
    finally:
        workspace.close()


def _origin(context: dg.AssetExecutionContext) -> str:
    tags = context.run.tags
    if "dagster/schedule_name" in tags:
        return f"schedule {tags['dagster/schedule_name']}"
    if "dagster/sensor_name" in tags:
        return f"sensor {tags['dagster/sensor_name']}"
    return f"job {context.job_name}"


def _report(
    context: dg.AssetExecutionContext, plan: WorkspacePlan, result: RunResult, trigger: str, selected: list[str]
) -> Iterator[AssetEvent]:
    """A materialization per node that published something new; nodes the run added (the sources
    a model reads) are logged as materializations too, since they are not outputs of this step."""
    for node in result.nodes:
        if node.key not in plan.nodes or node.status != "success" or node.up_to_date:
            continue
        if node.key not in result.published and node.materialized != "view":
            context.log.info(f"{node.key}: nothing new")
            continue
        key = asset_key(plan.nodes[node.key])
        metadata = _metadata(node, result, trigger)
        if node.key in selected:
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)
        else:
            context.log_event(dg.AssetMaterialization(asset_key=key, metadata=metadata))


def _metadata(node: NodeResult, result: RunResult, trigger: str) -> dict[str, Any]:
    snapshot = result.published.get(node.key, node.snapshot_id)
    metadata: dict[str, Any] = {
        "rat_run_id": result.run_id,
        "trigger": trigger,
        "rows_written": node.rows_written,
        "duration_s": round(node.duration_s, 3),
    }
    if node.rows_deleted:
        metadata["rows_deleted"] = node.rows_deleted
    if node.rows_quarantined:
        metadata["rows_quarantined"] = node.rows_quarantined
    if snapshot is not None:
        metadata["snapshot_id"] = dg.MetadataValue.text(str(snapshot))  # 64-bit: too big for GraphQL Int
    if node.materialized:
        metadata["materialized"] = node.materialized
    return metadata


def _recorded_checks(
    workspace: Workspace, plan: WorkspacePlan, checks: list[dg.AssetCheckKey], result: RunResult | None
) -> Iterator[dg.AssetCheckResult]:
    """Check results of the selected test checks: from this run's tests where the node ran them,
    else (the node was up to date, or only checks were asked for) from the latest recorded run."""
    by_asset = {asset_key(n): n for n in plan.nodes.values()}
    ran = {n.key: n for n in result.nodes} if result is not None else {}
    recorded: dict[str, tuple[str | None, list[dict[str, Any]]]] = {}
    for check in checks:
        node = by_asset.get(check.asset_key)
        if node is None:
            continue
        names = {c.check: c.test for c in node.tests}
        if check.name not in names:
            continue
        outcome = ran.get(node.key)
        if outcome is not None and outcome.tests:
            test = next((t for t in outcome.tests if t.name == names[check.name]), None)
            if test is not None:
                yield _check_result(check, test.status, test.severity, test.failures, test.message, result)
            continue
        if outcome is not None and not outcome.up_to_date:
            continue  # it failed before its tests ran, or was skipped: nothing to report
        if node.key not in recorded:
            recorded[node.key] = workspace.latest_test_results(node.key)
        run_id, rows = recorded[node.key]
        row = next((r for r in rows if r["test"] == names[check.name]), None)
        if row is not None:
            yield _check_result(check, row["status"], row["severity"], row["failures"] or 0, row["message"], run_id)


def _check_result(
    check: dg.AssetCheckKey, status: str, severity: str, failures: int, message: str | None, run: RunResult | str | None
) -> dg.AssetCheckResult:
    run_id = run if isinstance(run, str) or run is None else run.run_id
    metadata: dict[str, Any] = {"status": status, "failures": failures, "message": message or ""}
    if run_id:
        metadata["rat_run_id"] = run_id
    return dg.AssetCheckResult(
        asset_key=check.asset_key,
        check_name=check.name,
        passed=status == "pass",
        severity=dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=message or None,
    )


def _retryable(result: RunResult) -> bool:
    """Whether trying again may help: a source could not be read, or publishing lost a commit race.
    Failed tests and broken SQL fail the same way every time."""
    if result.ok:
        return False
    if result.error:
        return True
    return any(n.status == "failed" and n.kind == "source" for n in result.nodes)


def _summary(result: RunResult) -> str:
    failed = [n for n in result.nodes if n.status == "failed"]
    lines = [
        f"Ratatouille run {result.run_id} failed ({len(failed)} node(s) failed); details: rat logs {result.run_id}"
    ]
    if result.error:
        lines.append(result.error)
    lines.extend(f"{n.key}: {n.error}" for n in failed)
    return "\n".join(lines)


# -- freshness --------------------------------------------------------------------------------


def freshness_key(node: NodePlan) -> dg.AssetCheckKey:
    """The freshness check of a model."""
    return dg.AssetCheckKey(asset_key(node), FRESHNESS_CHECK)


def freshness_checks(
    plan: WorkspacePlan, root: Path, *, alerts: AlertsConfig | None = None
) -> dg.AssetChecksDefinition:
    """``freshness:`` SLAs as asset checks, computed from the tables' last publish time (so runs
    started by the CLI or the API count too); a breach (``warn`` or ``error``) sends an alert."""
    specs = [
        dg.AssetCheckSpec(
            FRESHNESS_CHECK,
            asset=asset_key(n),
            description="the last publish is younger than the model's freshness SLA (warn_after / error_after)",
        )
        for n in plan.fresh
    ]

    def freshness(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        from ratatouille.alerts import freshness_alerts
        from ratatouille.workspace import Workspace

        wanted = {k.asset_key for k in context.selected_asset_check_keys}
        by_key = {n.key: asset_key(n) for n in plan.fresh}
        workspace = Workspace.open(root, plan.name)
        try:
            results = [r for r in workspace.freshness() if by_key.get(r.model) in wanted]
            for r in results:
                metadata = {
                    k: v
                    for k, v in {
                        "status": r.status,
                        "age_hours": r.age_hours,
                        "last_published": r.last_published,
                        "warn_after_hours": r.warn_after_hours,
                        "error_after_hours": r.error_after_hours,
                    }.items()
                    if v is not None
                }
                yield dg.AssetCheckResult(
                    asset_key=by_key[r.model],
                    check_name=FRESHNESS_CHECK,
                    passed=r.status == "pass",
                    severity=dg.AssetCheckSeverity.WARN if r.status == "warn" else dg.AssetCheckSeverity.ERROR,
                    metadata=metadata,
                )
            _send(workspace, freshness_alerts(results, workspace=plan.name), alerts)
        finally:
            workspace.close()

    return dg.multi_asset_check(name=f"{plan.name}__freshness", specs=specs, can_subset=True)(
        dagster_typed(freshness, dg.AssetCheckExecutionContext)
    )


def _send(workspace: Workspace, found: list[Any], config: AlertsConfig | None) -> None:
    """Send alerts; a broken ``alerts:`` section is logged, never raised."""
    if not found:
        return
    import logging

    from ratatouille.alerts import load_alerts, send

    try:
        send(found, config or load_alerts(workspace.project), project=workspace.project.name)
    except Exception:
        logging.getLogger("ratatouille.alerts").warning("could not send freshness alerts", exc_info=True)
