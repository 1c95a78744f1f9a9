"""A project on disk: ``ratatouille.yaml``, its workspaces, and where things live.

Found the same way by the CLI, the SDK, notebooks and apps: an explicit directory, else
``$RAT_PROJECT``, else the nearest ``ratatouille.yaml`` from the working directory upwards.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from ratatouille.config import (
    PROJECT_FILE,
    ProjectConfig,
    WorkspaceConfig,
    load_project_config,
    load_workspace_config,
)
from ratatouille.engine import Profile, resolve_profile
from ratatouille.errors import ConfigError, ProjectNotFoundError
from ratatouille.storage.catalog import Lakehouse


def find_root(start: Path | None = None) -> Path:
    """The directory holding ``ratatouille.yaml``: ``start`` itself, else the nearest parent.

    Raises:
        ProjectNotFoundError: there is none.
    """
    origin = (start or Path(os.environ.get("RAT_PROJECT") or Path.cwd())).resolve()
    for directory in (origin, *origin.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory
    raise ProjectNotFoundError(
        f"no {PROJECT_FILE} in {origin} or any parent; run `rat init DIR` to create a project, or pass --project DIR"
    )


class Project:
    """A loaded project: its config, its lakehouse and its workspaces."""

    def __init__(self, root: Path, config: ProjectConfig) -> None:
        self.root = root
        self.config = config

    @classmethod
    def load(cls, start: Path | str | None = None) -> Project:
        """Find and load the project from ``start`` (a directory inside it) or the environment.

        Raises:
            ProjectNotFoundError: no project was found.
            ConfigError: its configuration is invalid.
        """
        root = find_root(Path(start) if start is not None else None)
        return cls(root, load_project_config(root))

    @property
    def name(self) -> str:
        """The project's name."""
        return self.config.name

    @cached_property
    def lakehouse(self) -> Lakehouse:
        """The Iceberg catalog and warehouse."""
        return Lakehouse(self.root, self.config)

    @cached_property
    def profile(self) -> Profile:
        """The resolved engine profile."""
        return resolve_profile(self.config.profile, self.config.engine)

    @property
    def state_dir(self) -> Path:
        """Embedded state: ``.rat/``."""
        return self.root / ".rat"

    @property
    def temp_directory(self) -> Path:
        """Where DuckDB spills."""
        return self.path(self.config.engine.temp_directory)

    def path(self, relative: str) -> Path:
        """A project-relative path made absolute."""
        return (self.root / relative).resolve()

    @property
    def landing(self) -> str:
        """The landing zone: an absolute local path or an ``s3://`` URI."""
        landing = self.config.storage.landing
        return landing.rstrip("/") if "://" in landing else str(self.path(landing))

    def workspace_names(self) -> list[str]:
        """Workspaces on disk (folders under ``workspaces/``), plus the default one."""
        folder = self.root / "workspaces"
        names = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
        names.add(self.config.default_workspace)
        return sorted(names)

    def workspace_dir(self, name: str) -> Path:
        """``workspaces/<name>``."""
        return self.root / "workspaces" / name

    def workspace_config(self, name: str) -> WorkspaceConfig:
        """Load one workspace's ``workspace.yaml``.

        Raises:
            ConfigError: the workspace does not exist or its file is invalid.
        """
        directory = self.workspace_dir(name)
        if not directory.is_dir() and name != self.config.default_workspace:
            raise ConfigError(
                f"workspace `{name}` does not exist; workspaces: {', '.join(self.workspace_names())}. "
                f"Create {directory} to add it"
            )
        return load_workspace_config(directory)
