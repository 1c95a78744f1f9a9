"""The one place that decides how errors look over HTTP: a status per error class and a body
``{"error": {"type": ..., "message": ...}}``.

Ratatouille's own errors keep their status and message (they are written for users), except
those mapped to 500. Anything else is a 500 with a generic message and an id; the details and
traceback go to the server log only.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request  # noqa: TID251 - the API package is where FastAPI lives
from fastapi.exceptions import RequestValidationError  # noqa: TID251 - the API package is where FastAPI lives
from fastapi.responses import JSONResponse  # noqa: TID251 - the API package is where FastAPI lives
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ratatouille.errors import (
    AuthenticationError,
    AuthError,
    CatalogError,
    ConfigError,
    ConnectorError,
    DataError,
    PermissionDeniedError,
    PipelineError,
    ProjectNotFoundError,
    QueryError,
    RatatouilleError,
    SchemaError,
    TableNotFoundError,
)

log = logging.getLogger("ratatouille.api")


class ApiError(RatatouilleError):
    """An error of the HTTP surface itself; ``status`` is its HTTP status."""

    status = 400


class NotFoundError(ApiError):
    """A workspace, pipeline or run that does not exist."""

    status = 404


class NotAcceptableError(ApiError):
    """The ``Accept`` header asks only for formats the API cannot produce."""

    status = 406


class UnknownParameterError(ApiError):
    """A query parameter the route does not take (a typo would otherwise be silently ignored)."""

    status = 422


class UnavailableError(ApiError):
    """The server cannot do it right now (e.g. a run did not start in time)."""

    status = 503


# Most specific first: the first class the error is an instance of decides. A query stopped by
# the statement timeout (``QueryTimeoutError``, a ``QueryError``) is a 400 like other failed
# queries: sending it again would time out again, and 408/503/504 invite clients to retry.
STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (AuthError, 400),
    (TableNotFoundError, 404),
    (QueryError, 400),
    (ConfigError, 422),
    (PipelineError, 422),
    (SchemaError, 400),
    (DataError, 400),
    (ConnectorError, 502),
    (CatalogError, 503),
    (ProjectNotFoundError, 500),
    (RatatouilleError, 400),
)


class ErrorDetail(BaseModel):
    """What went wrong."""

    type: str
    message: str


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorDetail


def status_of(exc: BaseException) -> int:
    """The HTTP status for an exception (500 for anything not Ratatouille's)."""
    if isinstance(exc, ApiError):
        return exc.status
    for cls, status in STATUSES:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response in the API's one shape."""
    body = ErrorBody(error=ErrorDetail(type=kind, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _internal(request: Request, exc: BaseException) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.error(
        "internal error %s on %s %s",
        incident,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(
        500, "InternalError", f"internal server error (incident {incident}); the server log has the details"
    )


async def _ratatouille(request: Request, exc: Exception) -> JSONResponse:
    status = status_of(exc)
    if status == 500:
        return _internal(request, exc)
    if status > 500:  # the server's side, but said on purpose: keep the status and the message
        log.warning("%s %s answered %d: %s", request.method, request.url.path, status, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, type(exc).__name__, str(exc), headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return _internal(request, exc)


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return error_response(422, "ValidationError", "; ".join(problems) or "invalid request")


_HTTP_NAMES = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
}


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _HTTP_NAMES.get(exc.status_code, "HTTPError")
    message = str(exc.detail) if exc.detail else "error"
    if exc.status_code == 404:
        message = "no such route; see /api/v1/docs"
    return error_response(exc.status_code, kind, message, dict(exc.headers or {}))


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RatatouilleError, _ratatouille)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer."""
    text = {
        400: "The request cannot be done as asked (bad SQL, refused statement, ...)",
        401: "No token, or an invalid, expired or revoked one",
        403: "The token's role or workspace does not allow this",
        404: "No such workspace, table, pipeline or run",
        406: "The Accept header asks for no format the API produces",
        422: "The request or the project's files are invalid",
        503: "Temporarily unavailable",
    }
    return {status: {"model": ErrorBody, "description": text.get(status, "Error")} for status in statuses}
