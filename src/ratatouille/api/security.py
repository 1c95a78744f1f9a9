"""Bearer-token authentication and role checks, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request  # noqa: TID251 - the API package is where FastAPI lives
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer  # noqa: TID251 - the API package is where FastAPI lives

from ratatouille.api.context import context
from ratatouille.api.errors import UnknownParameterError
from ratatouille.errors import AuthenticationError
from ratatouille.state.auth import Principal

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `rat tokens create --user NAME --role viewer|editor|admin`.",
)


def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``.

    Raises:
        AuthenticationError: no bearer token, or an invalid, expired or revoked one.
    """
    if credentials is None or not credentials.credentials:
        raise AuthenticationError(
            "this route needs `Authorization: Bearer <token>`; create a token with `rat tokens create`"
        )
    return context(request).auth.authenticate(credentials.credentials)


Caller = Annotated[Principal, Depends(authenticated)]


def known_query_parameters(request: Request) -> None:
    """Refuse query parameters the route does not declare (routes that filter on columns opt out).

    Raises:
        UnknownParameterError: naming the parameter and those the route takes.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or getattr(route, "openapi_extra", None) == OPEN_QUERY:
        return
    known: set[str] = set()
    todo = [dependant]
    while todo:
        current = todo.pop()
        known.update(str(param.alias) for param in current.query_params)
        todo.extend(current.dependencies)
    for name in request.query_params:
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise UnknownParameterError(f"unknown query parameter `{name}`; this route takes: {takes}")


# Marker for routes whose extra query parameters mean something (column filters).
OPEN_QUERY = {"x-rat-open-query": True}
