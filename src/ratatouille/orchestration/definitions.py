"""``build_definitions(project_root)``: the whole project as one Dagster code location.

Every workspace contributes its sources and models (asset keys ``[workspace, layer, name]``),
their test checks and freshness checks, a job that runs everything (``<workspace>__all``), one
schedule per ``schedule:`` cron, one sensor per files source and a freshness sensor. See
``assets`` and ``triggers`` for how each works.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from ratatouille.errors import ConfigError, Problem
from ratatouille.orchestration.assets import WORKSPACE_TAG, asset_key, freshness_checks, freshness_key, pipelines_asset
from ratatouille.orchestration.plan import ProjectPlan, plan_project
from ratatouille.orchestration.triggers import files_sensor, freshness_sensor, schedule

if TYPE_CHECKING:
    from ratatouille.alerts import AlertsConfig

DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY_S = 30.0
DEFAULT_SENSOR_INTERVAL_S = 30


def retry_policy(retries: int = DEFAULT_RETRIES, delay_s: float = DEFAULT_RETRY_DELAY_S) -> dg.RetryPolicy:
    """Retries with exponential backoff (``delay_s``, then 2x, 4x, ...) and jitter."""
    return dg.RetryPolicy(
        max_retries=retries, delay=delay_s, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    )


def build_definitions(
    project_root: Path | str,
    *,
    alerts: AlertsConfig | None = None,
    retries: int = DEFAULT_RETRIES,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    sensor_interval_s: int = DEFAULT_SENSOR_INTERVAL_S,
    freshness_interval_s: int = 300,
    strict: bool = True,
) -> dg.Definitions:
    """The Dagster definitions of every workspace of the project at ``project_root``.

    Args:
        project_root: the project directory (or a directory inside it).
        alerts: alert settings to use instead of the project's ``alerts:`` section.
        retries: how many times a failed run that may pass on a second try is retried.
        retry_delay_s: the first retry's delay; each next one doubles it.
        sensor_interval_s: how often the landing zone is looked at (Dagster's daemon looks at
            sensors every 5 s at most).
        freshness_interval_s: how often freshness SLAs are evaluated.
        strict: raise on an invalid workspace; else leave it out (logging why), so one broken
            workspace does not stop the schedules of the others (the code location does that).

    Raises:
        ProjectNotFoundError: there is no project there.
        ConfigError: a workspace's pipelines or schedules are invalid (every problem found).
    """
    plan = plan_project(project_root, strict=strict)
    return definitions_for(
        plan,
        alerts=alerts,
        retry=retry_policy(retries, retry_delay_s),
        sensor_interval_s=sensor_interval_s,
        freshness_interval_s=freshness_interval_s,
        strict=strict,
    )


def definitions_for(
    plan: ProjectPlan,
    *,
    retry: dg.RetryPolicy,
    alerts: AlertsConfig | None = None,
    sensor_interval_s: int = DEFAULT_SENSOR_INTERVAL_S,
    freshness_interval_s: int = 300,
    strict: bool = True,
) -> dg.Definitions:
    """Definitions for an already-read project plan.

    Raises:
        ConfigError: a ``schedule:`` is not a valid cron (every one found; unless not ``strict``,
            which leaves such schedules out and logs why).
    """
    assets: list[dg.AssetsDefinition] = []
    checks: list[dg.AssetChecksDefinition] = []
    jobs: list[Any] = []
    schedules: list[dg.ScheduleDefinition] = []
    sensors: list[dg.SensorDefinition] = []
    problems: list[Problem] = []
    for ws in plan.workspaces:
        if not ws.nodes:
            continue
        assets.append(pipelines_asset(ws, plan.root, retry=retry, alerts=alerts))
        everything: dg.AssetSelection = dg.AssetSelection.assets(*(asset_key(n) for n in ws.nodes.values()))
        if ws.fresh:  # freshness is checked by its sensor, not after every run
            everything = everything - dg.AssetSelection.checks(*(freshness_key(n) for n in ws.fresh))
        jobs.append(
            dg.define_asset_job(
                f"{ws.name}__all",
                selection=everything,
                description=f"Every source and model of workspace `{ws.name}`, like `rat run`",
                tags={WORKSPACE_TAG: ws.name},
            )
        )
        for entry in ws.schedules:
            try:
                job, definition = schedule(ws, entry)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            jobs.append(job)
            schedules.append(definition)
        sensors.extend(files_sensor(ws, node, plan.root, interval_s=sensor_interval_s) for node in ws.files_sources)
        if ws.fresh:
            checks.append(freshness_checks(ws, plan.root, alerts=alerts))
            sensors.append(freshness_sensor(ws, plan.root, interval_s=freshness_interval_s))
    if problems and strict:
        raise ConfigError(problems)
    if problems:
        import logging

        logging.getLogger("ratatouille.orchestration").error("schedules left out: %s", ConfigError(problems))
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        # One step per run (the workspace's op): running it in the run worker itself saves a
        # process and a few seconds of imports per run over the default multiprocess executor.
        executor=dg.in_process_executor,
    )
