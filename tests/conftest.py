"""Shared fixtures. The example project is the main fixture; backends are parametrized."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import write_project
from ratatouille.workspace import Workspace

pytest_plugins = ["fixtures.services"]

BACKENDS = ["local-sqlite", pytest.param("s3-postgres", marks=[pytest.mark.s3, pytest.mark.postgres])]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RAT_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("RAT_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage + catalog backend a behaviour test runs against."""
    return str(request.param)


@pytest.fixture
def project_config(backend: str, request: pytest.FixtureRequest) -> str:
    """ratatouille.yaml lines for the backend."""
    if backend == "local-sqlite":
        return ""
    s3 = request.getfixturevalue("s3_server")
    prefix = request.getfixturevalue("s3_prefix")
    pg = request.getfixturevalue("postgres_url")
    return f"""
storage:
  warehouse: {s3.url(prefix)}/warehouse
  s3:
    endpoint: {s3.endpoint}
    region: {s3.region}
    access_key_id: {s3.access_key_id}
    secret_access_key: {s3.secret_access_key}
catalog:
  uri: {pg}
state:
  uri: {pg}
"""


@pytest.fixture
def workspace(tmp_path: Path, project_config: str) -> Iterator[Workspace]:
    """An empty project on the parametrized backend, opened at its default workspace."""
    root = write_project(tmp_path / "project", project_config)
    ws = Workspace.open(root)
    yield ws
    ws.close()


@pytest.fixture
def local_workspace(tmp_path: Path) -> Iterator[Workspace]:
    """An empty project on local files + SQLite."""
    ws = Workspace.open(write_project(tmp_path / "project"))
    yield ws
    ws.close()


@pytest.fixture
def make_workspace(tmp_path: Path) -> Callable[[str], Workspace]:
    """Build a local project with extra ratatouille.yaml text."""

    def make(extra: str = "") -> Workspace:
        return Workspace.open(write_project(tmp_path / "project", extra))

    return make
