"""``GET /api/v1/openapi.json`` and ``GET /api/v1/docs``: the OpenAPI document, behind a token.

The spec lists every route and schema, so like every route but health it needs a valid token
(any role). A browser cannot send a bearer header when it opens a page, so ``/api/v1/docs``
serves one small page either way (status 401 without a valid token, 200 with one): it asks for
a token, keeps it in the tab's ``sessionStorage``, fetches the spec with it and shows it in
Swagger UI. Swagger UI's files come from the pinned ``fastapi-offline`` wheel and are served
under ``/api/v1/docs/static``: nothing is loaded from a CDN, and the page's Content Security
Policy keeps the browser from reaching any other host.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request  # noqa: TID251 - the API package is where FastAPI lives
from fastapi.responses import HTMLResponse, JSONResponse, Response  # noqa: TID251 - the API package is where FastAPI lives
from fastapi.security import HTTPAuthorizationCredentials  # noqa: TID251 - the API package is where FastAPI lives
from starlette.staticfiles import StaticFiles

from ratatouille.api.context import context
from ratatouille.api.errors import error_response
from ratatouille.api.security import Caller, bearer
from ratatouille.errors import AuthenticationError

OPENAPI_PATH = "/api/v1/openapi.json"
DOCS_PATH = "/api/v1/docs"
STATIC_PATH = f"{DOCS_PATH}/static"
# What the docs page may load: its own files, from this server only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_OWN_STATIC = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


def _page(root: str) -> str:
    static = html.escape(root + STATIC_PATH, quote=True)
    spec = html.escape(root + OPENAPI_PATH, quote=True)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Ratatouille API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{static}/swagger-ui.css">
<link rel="stylesheet" href="{static}/rat-docs.css">
</head>
<body>
<form id="rat-token" hidden>
  <h1>Ratatouille API</h1>
  <p>The API's documentation needs an API token (any role). Create one with
  <code>rat tokens create --user NAME --role viewer</code>.</p>
  <label for="rat-token-value">API token</label>
  <input id="rat-token-value" type="password" autocomplete="off" spellcheck="false" required>
  <button type="submit">Show the documentation</button>
  <p id="rat-token-error" role="alert"></p>
  <p class="rat-note">The token stays in this browser tab (session storage) and is sent only to this server.</p>
</form>
<div id="rat-bar" hidden><button id="rat-forget" type="button">Forget the token</button></div>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script src="{static}/rat-docs.js" data-spec="{spec}"></script>
</body>
</html>
"""


@router.get(OPENAPI_PATH)
def openapi(request: Request, _caller: Caller) -> JSONResponse:
    """The OpenAPI document; needs a valid token."""
    return JSONResponse(request.app.openapi())


@router.get(DOCS_PATH)
def docs(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Response:
    """The docs page: 200 with a valid token, else 401 (the page for a browser, the JSON error for others)."""
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store"}
    page = _page(str(request.scope.get("root_path", "")))
    try:
        if credentials is None or not credentials.credentials:
            raise AuthenticationError(
                "the API docs need `Authorization: Bearer <token>`; in a browser, the page asks for the token"
            )
        context(request).auth.authenticate(credentials.credentials)
    except AuthenticationError as exc:
        if "text/html" not in request.headers.get("accept", ""):
            return error_response(401, type(exc).__name__, str(exc), {"WWW-Authenticate": "Bearer"})
        return HTMLResponse(page, status_code=401, headers={**headers, "WWW-Authenticate": "Bearer"})
    return HTMLResponse(page, headers=headers)


def install(app: FastAPI) -> None:
    """Add the spec and docs routes, and serve Swagger UI's files (no token: they are a public library)."""
    app.include_router(router)
    # One mount, two folders: Ratatouille's own page script first, then Swagger UI's files.
    app.mount(STATIC_PATH, StaticFiles(directory=_OWN_STATIC, packages=[("fastapi_offline", "static")]), name="docs")
