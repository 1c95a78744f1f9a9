"""A real API server for the tests: uvicorn in a thread on a free 127.0.0.1 port, real HTTP clients.

The project has two workspaces: ``default`` (the small pipeline project of ``tests/runs``, run
once: bronze.orders, silver.orders, gold.by_customer) and ``other`` (one table, ``silver.x``,
and one files source, ``events``, never run).
Tokens for each role are made up front; tests that revoke or expire make their own.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from helpers import write_project
from ratatouille.api.app import create_app
from ratatouille.workspace import Workspace
from runs.conftest import FILES, write_files

SERVER_START_TIMEOUT = 30.0
HTTP_TIMEOUT = 60.0

# name -> (role, workspace or None for every workspace)
TOKENS: dict[str, tuple[str, str | None]] = {
    "admin": ("admin", None),
    "default_admin": ("admin", "default"),
    "editor": ("editor", "default"),
    "viewer": ("viewer", "default"),
    "viewer_all": ("viewer", None),
    "other_viewer": ("viewer", "other"),
    "other_editor": ("editor", "other"),
}


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, ws="none", lifespan="on", log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test API server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the test API server did not stop"


def build_project(root: Path) -> Path:
    """The two-workspace project, with its pipelines run once."""
    write_project(root)
    write_files(root, FILES)
    other = root / "workspaces" / "other"
    other.mkdir(parents=True)
    (other / "workspace.yaml").write_text("name: other\n")
    (other / "sources").mkdir()
    (other / "sources" / "events.yaml").write_text(
        "name: events\ntype: files\ndescription: Event files.\nowner: ops\npath: landing/events/*.csv\nformat: csv\n"
    )
    ws = Workspace.open(root)
    result = ws.run()
    assert result.ok, result
    ws.close()
    ows = Workspace.open(root, "other")
    ows.append("silver.x", "SELECT 42 AS secret, 'only other' AS note")
    ows.close()
    return root


@dataclass
class Api:
    """A running API and the tokens to call it with."""

    url: str
    root: Path
    app: Any
    tokens: dict[str, str]
    _clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None, *, as_: str | None = None) -> httpx.Client:
        """An HTTP client with ``Authorization: Bearer`` set from a token or a token name (closed at teardown)."""
        value = self.tokens[as_] if as_ is not None else token
        headers = {"Authorization": f"Bearer {value}"} if value else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=HTTP_TIMEOUT)
        self._clients.append(client)
        return client

    def workspace(self, name: str = "default") -> Workspace:
        """The project's workspace, opened through the server's own context."""
        ws: Workspace = self.app.state.ctx.workspace(name)
        return ws

    def make_token(self, role: str, workspace: str | None = None, *, expires_at: datetime | None = None) -> str:
        """A fresh token (for tests that revoke or expire it)."""
        value, _info = self.app.state.ctx.auth.create_token(f"user-{role}", role, workspace, expires_at=expires_at)
        return str(value)

    def token_id(self, value: str) -> str:
        """The id of a token value."""
        principal = self.app.state.ctx.auth.authenticate(value)
        return str(principal.token_id)

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture(scope="module")
def api_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project on disk (built once per test module)."""
    return build_project(tmp_path_factory.mktemp("api") / "project")


@pytest.fixture(scope="module")
def api(api_root: Path) -> Iterator[Api]:
    """A live server over the project, with a token per role."""
    app = create_app(api_root)
    auth = app.state.ctx.auth
    tokens = {name: auth.create_token(name, role, ws)[0] for name, (role, ws) in TOKENS.items()}
    with live_server(app) as url:
        running = Api(url, api_root, app, tokens)
        yield running
        running.close()


@pytest.fixture
def client(api: Api) -> httpx.Client:
    """A client with the all-workspaces admin token."""
    return api.client(as_="admin")


@pytest.fixture
def expired_at() -> Callable[[], datetime]:
    """A moment in the past."""
    return lambda: datetime.now(UTC) - timedelta(minutes=1)
