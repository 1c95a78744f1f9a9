"""``rat init`` and ``rat sample``: write a new project, and sample data into its landing zone."""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ratatouille.config import PROJECT_FILE
from ratatouille.errors import RatatouilleError
from ratatouille.project import Project

if TYPE_CHECKING:
    from ratatouille.sample.pos import SampleSummary

WORKSPACE_FOLDERS = (
    "sources",
    "pipelines/bronze",
    "pipelines/silver",
    "pipelines/gold",
    "macros",
    "notebooks",
    "apps",
)


@dataclass(frozen=True)
class Created:
    """What ``rat init`` wrote."""

    root: Path
    files: list[Path]


def create_project(directory: Path, *, example: bool = True, rows: int = 20_000, force: bool = False) -> Created:
    """Write a project skeleton (and, unless ``example`` is false, the POS example) into ``directory``.

    Raises:
        RatatouilleError: the directory holds files already (and ``force`` is not set), or the
            project name derived from it is not usable.
    """
    root = directory.resolve()
    if root.exists() and any(root.iterdir()) and not force:
        raise RatatouilleError(f"{root} is not empty; choose a new directory or pass --force")
    if (root / PROJECT_FILE).exists() and not force:
        raise RatatouilleError(f"{root} already holds a project")
    name = re.sub(r"[^a-z0-9_]+", "_", root.name.lower()).strip("_") or "ratatouille"
    context = {
        "name": name,
        "description": "Point-of-sale example: stores, products and daily sales." if example else "",
    }
    written: list[Path] = []
    template = importlib.resources.files("ratatouille") / "templates"
    written += _copy_tree(template / "project", root, context)
    if example:
        written += _copy_tree(template / "pos", root, context)
    for folder in WORKSPACE_FOLDERS:
        path = root / "workspaces" / "default" / folder
        path.mkdir(parents=True, exist_ok=True)
        keep = path / ".gitkeep"
        if not any(path.iterdir()):
            keep.touch()
            written.append(keep)
    (root / "data" / "landing").mkdir(parents=True, exist_ok=True)
    if example:
        summary = write_sample(root, rows=rows, days=14, seed=42)
        written += summary.files
    return Created(root, sorted(written))


def _copy_tree(source: importlib.resources.abc.Traversable, target: Path, context: dict[str, str]) -> list[Path]:
    written: list[Path] = []
    if not source.is_dir():
        return written
    for entry in source.iterdir():
        if entry.name in ("__pycache__", "__init__.py"):
            continue
        name = "." + entry.name if entry.name in ("gitignore",) else entry.name
        destination = target / name
        if entry.is_dir():
            written += _copy_tree(entry, destination, context)
            continue
        text = entry.read_text(encoding="utf-8")
        for key, value in context.items():
            text = text.replace("{{ " + key + " }}", value)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text, encoding="utf-8")
        written.append(destination)
    return written


def write_sample(project_dir: Path | None, *, rows: int, days: int, seed: int) -> SampleSummary:
    """Generate the POS sample data into the project's landing zone.

    Raises:
        RatatouilleError: the arguments are invalid or the landing zone is not local.
        ProjectNotFoundError: no project was found.
    """
    from ratatouille.sample.pos import generate_pos

    project = Project.load(project_dir)
    landing = project.landing
    if "://" in landing:
        raise RatatouilleError(
            f"`rat sample` writes to a local landing zone, but storage.landing is {landing}; "
            "generate into a local folder and upload it"
        )
    try:
        return generate_pos(Path(landing), rows=rows, days=days, seed=seed)
    except ValueError as exc:
        raise RatatouilleError(f"cannot generate sample data: {exc}") from exc


@dataclass(frozen=True)
class DemoResult:
    """What ``rat demo`` built and what to look at next."""

    root: Path
    run_id: str
    ok: bool
    nodes: list[tuple[str, str, int]]  # key, status, rows written
    preview_sql: str
    preview: list[dict[str, object]]


DEMO_PREVIEW = """
SELECT region, sum(revenue) AS revenue, sum(transactions) AS transactions,
       round(sum(revenue) / sum(transactions), 2) AS avg_basket
FROM gold.daily_sales_kpis
GROUP BY region
ORDER BY revenue DESC
""".strip()


def run_demo(directory: Path, *, rows: int = 200_000, force: bool = False) -> DemoResult:
    """Create the POS example project, run its pipelines end to end and query a gold table.

    Raises:
        RatatouilleError: the directory is not empty (without ``force``) or a step fails.
    """
    from ratatouille.workspace import Workspace

    created = create_project(directory, example=True, rows=rows, force=force)
    workspace = Workspace.open(created.root)
    try:
        result = workspace.run(trigger="demo")
        nodes = [(n.key, n.status, n.rows_written) for n in result.nodes]
        preview = workspace.query(DEMO_PREVIEW).to_pylist() if result.ok else []
    finally:
        workspace.close()
    return DemoResult(created.root, result.run_id, result.ok, nodes, DEMO_PREVIEW, preview)
