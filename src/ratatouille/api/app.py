"""``create_app``: the FastAPI application of a project."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI  # noqa: TID251 - the API package is where FastAPI lives
from starlette.concurrency import run_in_threadpool

from ratatouille.api import docs, errors
from ratatouille.api.context import ApiContext
from ratatouille.api.metrics import MetricsMiddleware
from ratatouille.api.routes import health, pipelines, query, runs, tables, users
from ratatouille.api.security import known_query_parameters
from ratatouille.config import ServerConfig, validate
from ratatouille.errors import ConfigError, Problem
from ratatouille.project import Project

API_PREFIX = "/api/v1"
DESCRIPTION = """\
Ratatouille's REST API: read-only SQL over the lakehouse, the catalog, pipelines and runs.

Every route but `/api/v1/health` needs `Authorization: Bearer <token>`, this document included;
create a token with `rat tokens create --user NAME --role viewer|editor|admin [--workspace WS]`.
Errors are `{"error": {"type": ..., "message": ...}}`.
"""


def create_app(
    project: Project | Path | str | None = None, settings: ServerConfig | None = None, **limits: Any
) -> FastAPI:
    """Build the API for a project (a loaded ``Project``, a directory, or found like the CLI does).

    Its limits come from the ``server:`` section of ``ratatouille.yaml``; ``settings`` replaces
    that section, and keyword ``limits`` (e.g. ``query_row_limit=1000``) override single keys.

    Raises:
        ProjectNotFoundError: no project was found.
        ConfigError: its configuration is invalid, or so is a keyword limit.
    """
    loaded = project if isinstance(project, Project) else Project.load(project)
    server = settings or loaded.config.server
    if limits:
        problems: list[Problem] = []
        server = validate(ServerConfig, {**server.model_dump(), **limits}, "create_app()", {}, problems)
        if problems:
            raise ConfigError(problems)
    ctx = ApiContext(loaded, server)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(ctx.close)

    app = FastAPI(
        title="Ratatouille",
        version=health._version(),
        description=DESCRIPTION,
        # The spec and the docs page are routes of ours (``api.docs``): both need a token, and the
        # page loads Swagger UI from this server rather than a CDN.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(known_query_parameters)],
    )
    app.state.ctx = ctx
    errors.install(app)
    for module in (health, query, tables, pipelines, runs, users):
        app.include_router(module.router)
    docs.install(app)
    app.add_middleware(MetricsMiddleware, metrics=ctx.metrics)
    return app
