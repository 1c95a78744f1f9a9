"""``GET /api/v1/health`` (no auth) and ``GET /metrics``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request, Response  # noqa: TID251 - the API package is where FastAPI lives

from ratatouille.api.context import context
from ratatouille.api.errors import responses
from ratatouille.api.metrics import CONTENT_TYPE
from ratatouille.api.models import Health
from ratatouille.api.security import Caller

router = APIRouter()


def _version() -> str:
    try:
        return version("ratatouille")
    except PackageNotFoundError:
        return "unknown"


@router.get("/api/v1/health", tags=["health"], summary="Liveness (no auth)")
def health() -> Health:
    """The server is up. Needs no token."""
    return Health(version=_version())


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **responses(401)},
)
def metrics(request: Request, _caller: Caller) -> Response:
    """Requests by route and status, latency, query rows and runs started, in Prometheus' text
    format. Needs any valid token (Prometheus sends one with `authorization: {credentials: ...}`)."""
    return Response(context(request).metrics.render(), media_type=CONTENT_TYPE)
