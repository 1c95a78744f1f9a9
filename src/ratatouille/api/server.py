"""``serve``: run the API with uvicorn until Ctrl-C or SIGTERM (what ``rat serve`` calls)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

FIRST_TOKEN_HINT = "No API tokens yet: create the first admin token with `rat tokens create --user admin --role admin`."


def serve(
    project_root: Path | str | None,
    host: str | None = None,
    port: int | None = None,
    *,
    scheduler: bool = False,
    dagster_ui_port: int | None = None,
) -> None:
    """Serve the project's API on ``host:port`` (default: ``server.host`` / ``server.port``).

    uvicorn handles SIGINT and SIGTERM: it stops accepting connections, lets running requests
    finish (for a few seconds), then the app closes its sandboxes and connections.

    Raises:
        ProjectNotFoundError: no project was found.
        ConfigError: its configuration is invalid.
    """
    import uvicorn

    from ratatouille.api.app import create_app
    from ratatouille.project import Project

    project = Project.load(project_root)
    app = create_app(project)
    ctx = app.state.ctx
    if not ctx.auth.has_active_tokens():
        sys.stderr.write(FIRST_TOKEN_HINT + "\n")
    config = uvicorn.Config(
        app,
        host=host or project.config.server.host,
        port=port or project.config.server.port,
        ws="none",
        lifespan="on",
        log_level="info",
        log_config=log_config(),
        timeout_graceful_shutdown=int(ctx.settings.shutdown_grace_seconds),
    )
    processes = []
    if scheduler:
        # Dagster's daemon (and optionally its UI, on loopback only) as child processes in their
        # own process groups; stopped with the API, whatever way the API stops.
        from ratatouille.orchestration.daemon import default_home, start, stop

        processes = start(project.root, default_home(project.root), webserver_port=dagster_ui_port)

        # uvicorn restores the previous handlers when it stops and then re-raises the signal it
        # caught, which would end this process before a `finally` runs. These handlers are what
        # it restores: they stop Dagster's processes first, then let the signal do what it did.
        def stop_then_reraise(sig: int, frame: Any) -> None:
            stop(processes)
            if sig == signal.SIGINT:
                signal.default_int_handler(sig, frame)
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

        for handled in (signal.SIGINT, signal.SIGTERM):
            signal.signal(handled, stop_then_reraise)
    try:
        uvicorn.Server(config).run()
    finally:
        if processes:
            stop(processes)


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with Ratatouille's own loggers (runs, sandbox, API errors) printed the same way."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["ratatouille"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
