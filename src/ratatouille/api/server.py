"""``serve``: run the API with uvicorn until Ctrl-C or SIGTERM (what ``rat serve`` calls).

One ``rat serve`` per project: ``ServeLock`` holds an exclusive lock on ``.rat/serve.lock`` for as
long as the server runs, so a second one stops at once with the first one's pid and address
instead of starting a second scheduler on the same state. The kernel drops the lock when the
process ends, however it ends, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.errors import RatatouilleError

if TYPE_CHECKING:
    from ratatouille.orchestration.scheduler import Scheduler
    from ratatouille.project import Project

FIRST_TOKEN_HINT = "No API tokens yet: create the first admin token with `rat tokens create --user admin --role admin`."
LOCK_FILE = "serve.lock"


class AlreadyRunningError(RatatouilleError):
    """Another ``rat serve`` holds the project's lock (a ``RatatouilleError``: one red line, exit 1)."""


class ServeLock:
    """An exclusive, non-blocking ``flock`` on a file that records who holds it (pid, host, url).

    Not inherited by child processes (Python opens files non-inheritable), so the lock goes away
    with this process even while something it started is still shutting down.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path | str, **holder: Any) -> ServeLock:
        """Take the lock at ``path`` and write ``holder`` (plus pid, host name, start time) into it.

        Raises:
            AlreadyRunningError: another process holds it; the message says which and where.
        """
        import fcntl

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's details stay readable
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunningError(_already_running(path)) from None
        except BaseException:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **holder,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock (the kernel also does when the process ends). Idempotent."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def holder(path: Path | str) -> dict[str, Any]:
    """What the lock file at ``path`` says about the process holding it (empty if unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _already_running(path: Path) -> str:
    info = holder(path)
    details = [f"pid {info['pid']}" if info.get("pid") else "pid unknown"]
    if info.get("url"):
        details.append(str(info["url"]))
    if info.get("hostname") and info["hostname"] != socket.gethostname():
        details.append(f"on host {info['hostname']}")
    return f"rat serve is already running for this project ({', '.join(details)}); stop it first (lock: {path})"


def serve(
    project_root: Path | str | None,
    host: str | None = None,
    port: int | None = None,
    *,
    scheduler: bool = False,
    dagster_ui_port: int | None = None,
    sensor_interval_s: int | None = None,
) -> None:
    """Serve the project's API on ``host:port`` (default: ``server.host`` / ``server.port``), and
    with ``scheduler`` Dagster's code server and daemon (and web UI on ``dagster_ui_port``).

    uvicorn handles SIGINT and SIGTERM: it stops accepting connections, lets running requests
    finish (for a few seconds), then the app closes its sandboxes and connections; Dagster's
    processes are stopped after it, then the lock is dropped.

    Raises:
        ProjectNotFoundError: no project was found.
        ConfigError: its configuration is invalid.
        AlreadyRunningError: ``rat serve`` already runs for this project.
    """
    from ratatouille.project import Project

    project = Project.load(project_root)
    host = host or project.config.server.host
    port = port or project.config.server.port
    lock = ServeLock.acquire(
        project.state_dir / LOCK_FILE,
        host=host,
        port=port,
        url=f"http://{_url_host(host)}:{port}",
        root=str(project.root),
    )
    try:
        _serve(
            project,
            host,
            port,
            scheduler=scheduler,
            dagster_ui_port=dagster_ui_port,
            sensor_interval_s=sensor_interval_s,
        )
    finally:
        lock.release()


def _serve(
    project: Project,
    host: str,
    port: int,
    *,
    scheduler: bool,
    dagster_ui_port: int | None,
    sensor_interval_s: int | None,
) -> None:
    import uvicorn

    from ratatouille.api.app import create_app

    app = create_app(project)
    ctx = app.state.ctx
    if not ctx.auth.has_active_tokens():
        sys.stderr.write(FIRST_TOKEN_HINT + "\n")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="none",
        lifespan="on",
        log_level="info",
        log_config=log_config(),
        timeout_graceful_shutdown=int(ctx.settings.shutdown_grace_seconds),
    )
    dagster: Scheduler | None = None
    if scheduler:
        # Dagster's code server and daemon (and optionally its UI, on loopback only) as child
        # processes in their own process groups; stopped with the API, whatever way the API stops.
        from ratatouille.orchestration.scheduler import Scheduler

        dagster = Scheduler(project.root, webserver_port=dagster_ui_port, sensor_interval_s=sensor_interval_s)
        dagster.start()
        running = dagster

        # uvicorn restores the previous handlers when it stops and then re-raises the signal it
        # caught, which would end this process before a `finally` runs. These handlers are what
        # it restores: they stop Dagster's processes first, then let the signal do what it did.
        def stop_then_reraise(sig: int, frame: Any) -> None:
            running.stop()
            if sig == signal.SIGINT:
                signal.default_int_handler(sig, frame)
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

        for handled in (signal.SIGINT, signal.SIGTERM):
            signal.signal(handled, stop_then_reraise)
    try:
        uvicorn.Server(config).run()
    finally:
        if dagster is not None:
            dagster.stop()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with Ratatouille's own loggers (runs, sandbox, API errors) printed the same way."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["ratatouille"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
