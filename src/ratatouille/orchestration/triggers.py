"""What starts runs: ``schedule:`` crons, files landing in the landing zone, freshness changes.

- One schedule per workspace and cron: its job selects the nodes that declare the cron plus the
  sources they read (what ``rat run --select`` would run), so nodes due together publish together.
- One sensor per files source: it compares the landing zone (``Landing.glob``, local or S3) with
  the file registry, the way ingestion does (size and modification time, then checksum), and asks
  for a run of that source when files are new or changed. The run key is a fingerprint of the
  pending files, so the same files are requested once: a run that fails on them is not started
  again and again; a new file makes a new request.
- One freshness sensor per workspace with ``freshness:`` SLAs: it evaluates them and runs the
  freshness checks of the models whose status changed (so a breach alerts once, not every tick).

Schedules and sensors are on by default (``DefaultScheduleStatus.RUNNING``): the YAML declared them.
Crons are evaluated in UTC.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg

from ratatouille.errors import ConfigError, Problem
from ratatouille.orchestration.assets import TRIGGER_TAG, WORKSPACE_TAG, asset_key, freshness_key
from ratatouille.orchestration.plan import NodePlan, SchedulePlan, WorkspacePlan


def schedule(plan: WorkspacePlan, entry: SchedulePlan) -> tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    """The job and schedule of one cron.

    Raises:
        ConfigError: the cron is not valid (naming the file that declares it).
    """
    keys = [asset_key(plan.nodes[k]) for k in entry.selection]
    fresh = [freshness_key(plan.nodes[k]) for k in entry.selection if plan.nodes[k].freshness]
    selection: dg.AssetSelection = dg.AssetSelection.assets(*keys)
    if fresh:
        selection = selection - dg.AssetSelection.checks(*fresh)  # freshness has its own sensor
    job = dg.define_asset_job(
        entry.name,
        selection=selection,
        description=f"`{entry.cron}`: {', '.join(entry.targets)} (with the sources they read)",
        tags={WORKSPACE_TAG: plan.name},
    )
    try:
        definition = dg.ScheduleDefinition(
            name=f"{entry.name}_schedule",
            cron_schedule=entry.cron,
            job=job,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            tags={TRIGGER_TAG: "schedule", WORKSPACE_TAG: plan.name},
            description=f"Runs {', '.join(entry.targets)} on `{entry.cron}` (UTC)",
        )
    except dg.DagsterInvalidDefinitionError as exc:
        node = plan.nodes[entry.targets[0]]
        raise ConfigError(
            [Problem(node.path, None, "schedule", f"`{entry.cron}` is not a valid cron expression ({exc})")]
        ) from None
    return job, definition


def fingerprint(files: list[tuple[str, int, int | None]]) -> str:
    """A short, stable id of a set of (path, size, mtime) entries."""
    return hashlib.sha256(json.dumps(sorted(files)).encode()).hexdigest()[:16]


def files_sensor(plan: WorkspacePlan, node: NodePlan, root: Path, *, interval_s: int = 30) -> dg.SensorDefinition:
    """Ask for a run of a files source when its landing zone holds files it has not ingested."""
    key = asset_key(node)

    @dg.sensor(
        name=f"{plan.name}__{node.name}_files",
        asset_selection=dg.AssetSelection.assets(key),
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Ingests `{node.key}` when new or changed files match `{node.landing_path}`",
    )
    def landing(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        from ratatouille.workspace import Workspace

        workspace = Workspace.open(root, plan.name)
        try:
            pending = workspace.pending_files(node.name, node.landing_path)
        finally:
            workspace.close()
        if not pending:
            return dg.SkipReason(f"no new or changed files match {node.landing_path}")
        mark = fingerprint([(f.path, f.size, f.mtime_ns) for f in pending])
        if context.cursor == mark:
            return dg.SkipReason(f"{len(pending)} file(s) already requested (run key {node.key}:{mark})")
        request = dg.RunRequest(
            run_key=f"{node.key}:{mark}",
            asset_selection=[key],
            tags={TRIGGER_TAG: "sensor", WORKSPACE_TAG: plan.name, "rat/files": str(len(pending))},
        )
        context.log.info(
            f"{len(pending)} new or changed file(s) for {node.key}: {', '.join(f.path for f in pending[:5])}"
        )
        return dg.SensorResult(run_requests=[request], cursor=mark)

    return landing


def freshness_sensor(plan: WorkspacePlan, root: Path, *, interval_s: int = 300) -> dg.SensorDefinition:
    """Run the freshness checks of the models whose freshness status changed since the last tick."""
    checks = {n.key: freshness_key(n) for n in plan.fresh}

    @dg.sensor(
        name=f"{plan.name}__freshness",
        asset_selection=dg.AssetSelection.checks(*checks.values()),
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Checks the freshness SLAs of workspace `{plan.name}` and alerts on a breach",
    )
    def freshness(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        from ratatouille.workspace import Workspace

        workspace = Workspace.open(root, plan.name)
        try:
            current = {r.model: r.status for r in workspace.freshness() if r.model in checks}
        finally:
            workspace.close()
        previous = json.loads(context.cursor) if context.cursor else {}
        changed = sorted(m for m, status in current.items() if previous.get(m) != status)
        if not changed:
            return dg.SkipReason("no freshness status changed")
        request = dg.RunRequest(
            asset_selection=[],
            asset_check_keys=[checks[m] for m in changed],
            tags={TRIGGER_TAG: "sensor", WORKSPACE_TAG: plan.name},
        )
        return dg.SensorResult(run_requests=[request], cursor=json.dumps(current, sort_keys=True))

    return freshness
