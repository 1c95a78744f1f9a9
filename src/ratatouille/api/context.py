"""What the API's routes share: the project, one ``Workspace`` per workspace, accounts, runs."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from fastapi import Request  # noqa: TID251 - the API package is where FastAPI lives

from ratatouille.api.errors import NotFoundError, UnavailableError
from ratatouille.api.metrics import Metrics
from ratatouille.config import ServerConfig
from ratatouille.project import Project
from ratatouille.workspace import Workspace

if TYPE_CHECKING:
    from ratatouille.state.auth import AuthStore, Principal

log = logging.getLogger("ratatouille.api")


class ApiContext:
    """State of one running API: shared by every request, thread-safe."""

    def __init__(self, project: Project, settings: ServerConfig) -> None:
        self.project = project
        self.settings = settings
        self.metrics = Metrics()
        self._lock = threading.Lock()
        self._workspaces: dict[str, Workspace] = {}
        self._runs: set[threading.Thread] = set()

    # -- workspaces -----------------------------------------------------------------------

    def workspace_names(self) -> list[str]:
        """Every workspace of the project."""
        return self.project.workspace_names()

    def workspace(self, name: str) -> Workspace:
        """The workspace called ``name``.

        Raises:
            NotFoundError: there is none.
            ConfigError: its workspace.yaml is invalid.
        """
        with self._lock:
            found = self._workspaces.get(name)
        if found is not None:
            return found
        names = self.workspace_names()
        if name not in names:
            raise NotFoundError(f"workspace `{name}` does not exist; workspaces: {', '.join(names)}")
        workspace = Workspace(self.project, name)
        with self._lock:
            return self._workspaces.setdefault(name, workspace)

    def default_workspace(self) -> Workspace:
        """The project's default workspace."""
        return self.workspace(self.project.config.default_workspace)

    @property
    def auth(self) -> AuthStore:
        """Users and tokens."""
        return self.default_workspace().auth

    def readable(self, principal: Principal) -> list[str]:
        """The workspaces the caller may read."""
        return principal.readable(self.workspace_names())

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, workspace: str, node: str, *, full_refresh: bool = False) -> str:
        """Start a run of ``node`` in a background thread and return its id once it has one.

        The run gets its own ``Workspace`` (own DuckDB session and connections), so a long run
        does not hold up the API's reads.

        Raises:
            UnavailableError: the run did not start in time.
            RatatouilleError: the run could not start (its error, e.g. invalid pipelines).
        """
        started = threading.Event()
        outcome: dict[str, Any] = {}

        def on_start(run_id: str) -> None:
            outcome["run_id"] = run_id
            started.set()

        def target() -> None:
            ws: Workspace | None = None
            try:
                ws = Workspace.open(self.project.root, workspace)
                result = ws.run([node], full_refresh=full_refresh, trigger="api", on_start=on_start)
                log.info("run %s of %s.%s finished: %s", result.run_id, workspace, node, result.status)
            except Exception as exc:
                outcome.setdefault("error", exc)
                log.warning("run of %s.%s failed: %s", workspace, node, exc, exc_info=not started.is_set())
            finally:
                started.set()
                if ws is not None:
                    ws.close()
                with self._lock:
                    self._runs.discard(threading.current_thread())

        thread = threading.Thread(target=target, name=f"rat-run-{workspace}-{node}", daemon=True)
        with self._lock:
            self._runs.add(thread)
        thread.start()
        if not started.wait(self.settings.run_start_timeout_seconds):
            raise UnavailableError(
                f"the run of `{node}` did not start within {self.settings.run_start_timeout_seconds:g} s; "
                "see GET /api/v1/runs"
            )
        if "run_id" not in outcome:
            error = outcome.get("error")
            if isinstance(error, Exception):
                raise error
            raise UnavailableError(f"the run of `{node}` did not start; see the server log")
        self.metrics.runs_started.labels(workspace=workspace).inc()
        return str(outcome["run_id"])

    def running(self) -> int:
        """How many runs this server started are still going."""
        with self._lock:
            return sum(1 for t in self._runs if t.is_alive())

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Wait a little for runs to finish, then close sandboxes and connections.

        A run still going when the grace period ends is left to the process's exit; its record
        is then marked failed by the next reader (``StateStore.mark_abandoned``).
        """
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        with self._lock:
            threads = list(self._runs)
        if threads:
            log.info("waiting up to %g s for %d run(s) to finish", self.settings.shutdown_grace_seconds, len(threads))
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            workspaces = list(self._workspaces.values())
            self._workspaces.clear()
        for ws in workspaces:
            ws.close_sandboxes()
            ws.close()


def context(request: Request) -> ApiContext:
    """The ``ApiContext`` of the app serving ``request``."""
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx
