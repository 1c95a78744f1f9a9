"""What to orchestrate, read from a project's workspaces (no Dagster here).

A ``ProjectPlan`` lists, per workspace, every node (source or model) with the Dagster names it
gets, the test checks of each model, the ``schedule:`` crons grouped into one schedule per
workspace and cron (so nodes due at the same time run as one all-or-nothing run), the files
sources a landing-zone sensor watches, and the models with a freshness SLA.

Naming (Dagster names allow ``[A-Za-z0-9_]``; workspace and node names are already of that form):

- asset key ``[workspace, layer, name]``;
- op ``<workspace>__pipelines`` (the multi-asset), ``<workspace>__freshness`` (freshness checks);
- job ``<workspace>__all``; a schedule's job ``<workspace>__<layer>_<name>`` (or ``..._and_<n>_more``
  when several nodes share a cron) and its schedule ``<job>_schedule``;
- sensors ``<workspace>__<source>_files`` and ``<workspace>__freshness``;
- checks: a model's test name made safe (``not_null(order_key)`` -> ``not_null_order_key``), and
  ``freshness``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ratatouille.errors import ConfigError, Problem
from ratatouille.models.loader import Model
from ratatouille.project import Project

if TYPE_CHECKING:
    from ratatouille.runs.dag import Dag
    from ratatouille.workspace import Workspace

FRESHNESS_CHECK = "freshness"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True)
class TestCheck:
    """A model's data test, as a Dagster asset check."""

    __test__ = False  # not a pytest class

    check: str  # the Dagster check name
    test: str  # the Ratatouille test name (``TestResult.name``)
    severity: str  # error | warn


@dataclass(frozen=True)
class NodePlan:
    """One source or model."""

    workspace: str
    key: str  # layer.name
    kind: str  # source | sql | python
    upstream: tuple[tuple[str, ...], ...]  # asset keys it reads, [workspace, layer, name]
    description: str = ""
    owner: str = ""
    tags: tuple[str, ...] = ()
    schedule: str | None = None
    materialized: str | None = None  # models: view | table | incremental
    source_type: str | None = None  # sources: files | postgres | mysql | rest
    landing_path: str | None = None  # files sources: the glob they read
    path: str = ""  # the file that defines it, relative to the project
    tests: tuple[TestCheck, ...] = ()
    freshness: bool = False

    @property
    def asset_key(self) -> tuple[str, str, str]:
        """``(workspace, layer, name)``."""
        layer, name = self.key.split(".", 1)
        return (self.workspace, layer, name)

    @property
    def name(self) -> str:
        """The name inside its layer."""
        return self.key.split(".", 1)[1]


@dataclass(frozen=True)
class SchedulePlan:
    """One cron of one workspace and the nodes due on it."""

    workspace: str
    name: str  # the job's name; the schedule is ``<name>_schedule``
    cron: str
    targets: tuple[str, ...]  # the nodes that declare this cron
    selection: tuple[str, ...]  # targets plus the sources they read (what ``rat run`` would run)


@dataclass
class WorkspacePlan:
    """Everything to orchestrate in one workspace."""

    name: str
    nodes: dict[str, NodePlan] = field(default_factory=dict)
    schedules: list[SchedulePlan] = field(default_factory=list)

    @property
    def files_sources(self) -> list[NodePlan]:
        """Files sources, watched by a landing-zone sensor."""
        return [n for n in self.nodes.values() if n.source_type == "files" and n.landing_path]

    @property
    def fresh(self) -> list[NodePlan]:
        """Models with a ``freshness:`` SLA."""
        return [n for n in self.nodes.values() if n.freshness]


@dataclass
class ProjectPlan:
    """Every workspace of a project."""

    root: Path
    name: str
    workspaces: list[WorkspacePlan]
    problems: list[Problem] = field(default_factory=list)  # of the workspaces left out (not strict)


def safe_name(text: str) -> str:
    """A Dagster-safe name: runs of other characters become ``_``."""
    return _UNSAFE.sub("_", text).strip("_") or "check"


def plan_project(root: Path | str, *, strict: bool = True) -> ProjectPlan:
    """Read every workspace of the project at ``root``.

    Args:
        root: the project directory (or a directory inside it).
        strict: raise on invalid workspaces; else leave them out, logging their problems.

    Raises:
        ProjectNotFoundError: there is no project there.
        ConfigError: a workspace's pipelines are invalid (every problem of every workspace).
    """
    from ratatouille.workspace import Workspace

    project = Project.load(root)
    plans: list[WorkspacePlan] = []
    problems: list[Problem] = []
    for name in project.workspace_names():
        workspace = Workspace(project, name)
        try:
            plans.append(plan_workspace(workspace))
        except ConfigError as exc:
            problems.extend(exc.problems)
        finally:
            workspace.close()
    if problems and strict:
        raise ConfigError(problems)
    if problems:
        import logging

        logging.getLogger("ratatouille.orchestration").error(
            "left out of the schedules, sensors and assets until fixed: %s", ConfigError(problems)
        )
    return ProjectPlan(project.root, project.name, plans, problems)


def plan_workspace(workspace: Workspace) -> WorkspacePlan:
    """Read one workspace.

    Raises:
        ConfigError: its pipelines are invalid.
    """
    ws = workspace.name
    plan = WorkspacePlan(ws)
    if not workspace.directory.is_dir():
        return plan
    graph = workspace.graph()
    dag = graph.dag
    root = workspace.project.root
    for key, node in dag.nodes.items():
        upstream = tuple(sorted(_asset_key(ws, up) for up in node.upstream))
        if node.kind == "source":
            config, path = node.payload
            plan.nodes[key] = NodePlan(
                ws,
                key,
                "source",
                upstream,
                description=config.description,
                owner=config.owner,
                tags=tuple(config.tags),
                schedule=config.schedule,
                source_type=config.type,
                landing_path=getattr(config, "path", None) if config.type == "files" else None,
                path=_relative(path, root),
            )
            continue
        model = node.payload
        assert isinstance(model, Model)
        plan.nodes[key] = NodePlan(
            ws,
            key,
            node.kind,
            upstream,
            description=model.config.description,
            owner=model.config.owner,
            tags=tuple(model.config.tags),
            schedule=model.config.schedule,
            materialized=model.materialized.value,
            path=_relative(model.path, root),
            tests=test_checks(model),
            freshness=model.config.freshness is not None,
        )
    plan.schedules = _schedules(ws, plan.nodes, dag)
    return plan


def test_checks(model: Model) -> tuple[TestCheck, ...]:
    """A model's data tests with unique, Dagster-safe check names."""
    from ratatouille.models.testing import data_tests

    checks: list[TestCheck] = []
    used = {FRESHNESS_CHECK}
    for test in data_tests(model, "t", lambda ref: ref, lambda sql: sql):
        base = safe_name(test.name)
        name, number = base, 2
        while name in used:
            name, number = f"{base}_{number}", number + 1
        used.add(name)
        checks.append(TestCheck(name, test.name, test.severity.value))
    return tuple(checks)


def _schedules(ws: str, nodes: dict[str, NodePlan], dag: Dag) -> list[SchedulePlan]:
    by_cron: dict[str, list[str]] = {}
    for key in sorted(nodes):
        cron = nodes[key].schedule
        if cron:
            by_cron.setdefault(" ".join(cron.split()), []).append(key)
    plans = []
    for cron, targets in sorted(by_cron.items(), key=lambda item: item[1][0]):
        selection = set(targets)
        for key in targets:
            selection |= {a for a in dag.ancestors(key) if dag.nodes[a].kind == "source"}
        first = targets[0].replace(".", "_")
        label = first if len(targets) == 1 else f"{first}_and_{len(targets) - 1}_more"
        plans.append(SchedulePlan(ws, f"{ws}__{label}", cron, tuple(targets), tuple(dag.order(selection))))
    return plans


def _asset_key(ws: str, key: str) -> tuple[str, ...]:
    parts = key.split(".")
    return tuple(parts) if len(parts) == 3 else (ws, *parts)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
