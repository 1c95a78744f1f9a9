"""The ``sources/<name>.yaml`` of a REST API source (``type: rest``), as frozen pydantic models.

Every auth and paginator kind is its own class, picked by its ``type`` key. Secrets are
``SecretStr``: they print as ``**********`` and are revealed only when a request is signed.
A paginator may be written as a bare string when its defaults suit (``paginator: link_header``).

Example::

    name: shop
    type: rest
    base_url: https://api.example.com/v1
    auth: {type: bearer, token: ${env:SHOP_TOKEN}}
    paginator: {type: page_number, page_param: page, total_path: meta.total_pages}
    retries: {max_attempts: 5, backoff_seconds: 0.5, max_backoff_seconds: 30}
    resources:
      - name: orders
        path: /orders
        data_path: data
        primary_key: id
        incremental: {cursor: updated_at, param: updated_since, initial: "2024-01-01T00:00:00Z"}
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ratatouille.connectors.base import SourceConfig

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
Scalar = str | int | float | bool


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _error(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as written (no ``Value error,`` prefix)."""
    return PydanticCustomError("rest_config", message)


# --- auth -------------------------------------------------------------------------------------


class BearerAuth(_Frozen):
    """``Authorization: Bearer <token>`` on every request."""

    type: Literal["bearer"]
    token: SecretStr


class ApiKeyAuth(_Frozen):
    """An API key sent in a header or in the query string under ``name``."""

    type: Literal["api_key"]
    name: str = "X-API-Key"
    location: Literal["header", "query"] = "header"
    key: SecretStr

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise _error("must name the header or query parameter that carries the key")
        return value


class BasicAuth(_Frozen):
    """HTTP basic authentication."""

    type: Literal["basic"]
    username: str
    password: SecretStr


class OAuth2Auth(_Frozen):
    """OAuth2 client credentials: a token from ``token_url``, reused until it expires."""

    type: Literal["oauth2"]
    token_url: str
    client_id: str
    client_secret: SecretStr
    scopes: list[str] = []

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value

    @field_validator("token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value)


AuthConfig = Annotated[BearerAuth | ApiKeyAuth | BasicAuth | OAuth2Auth, Field(discriminator="type")]
AUTH_TYPES = ("bearer", "api_key", "basic", "oauth2")


# --- paginators -------------------------------------------------------------------------------


class AutoPaginator(_Frozen):
    """Let dlt detect the pagination (Link header, a ``next`` URL in the body, else one page)."""

    type: Literal["auto"]


class NoPaginator(_Frozen):
    """One request, one page."""

    type: Literal["none"]


class PageNumberPaginator(_Frozen):
    """``?page=N``; stops at ``total_path`` pages, at ``maximum_page``, on ``has_more_path`` false,
    or at the first empty page."""

    type: Literal["page_number"]
    page_param: str = "page"
    base_page: int = 1
    total_path: str | None = None
    maximum_page: int | None = None
    has_more_path: str | None = None


class OffsetPaginator(_Frozen):
    """``?offset=N&limit=L``; stops at ``total_path`` items, at ``maximum_offset``, on
    ``has_more_path`` false, or at the first empty page."""

    type: Literal["offset"]
    limit: int = Field(gt=0)
    offset_param: str = "offset"
    limit_param: str = "limit"
    total_path: str | None = None
    maximum_offset: int | None = None
    has_more_path: str | None = None


class CursorPaginator(_Frozen):
    """The next page's cursor is read from the body at ``cursor_path`` and sent as ``cursor_param``;
    pagination ends when the cursor is missing or empty (or ``has_more_path`` is false)."""

    type: Literal["cursor"]
    cursor_path: str = "next_cursor"
    cursor_param: str = "cursor"
    has_more_path: str | None = None


class LinkHeaderPaginator(_Frozen):
    """Follow the ``Link: <url>; rel="next"`` response header (GitHub style)."""

    type: Literal["link_header"]
    rel: str = "next"


class JsonLinkPaginator(_Frozen):
    """Follow the next page's URL found in the body at ``next_url_path``."""

    type: Literal["json_link"]
    next_url_path: str = "next"


PaginatorConfig = Annotated[
    AutoPaginator
    | NoPaginator
    | PageNumberPaginator
    | OffsetPaginator
    | CursorPaginator
    | LinkHeaderPaginator
    | JsonLinkPaginator,
    Field(discriminator="type"),
]
PAGINATOR_TYPES = ("page_number", "offset", "cursor", "link_header", "json_link", "none", "auto")


def _check_type(value: Any, what: str, types: tuple[str, ...]) -> None:
    """Name the valid kinds when ``type`` is missing or unknown (pydantic's own message does not)."""
    if isinstance(value, dict) and value.get("type") not in types:
        given = f" (got `{value['type']}`)" if "type" in value else ""
        raise _error(f"{what} needs `type:` one of {', '.join(types)}{given}")


def _paginator_shorthand(value: Any) -> Any:
    """``paginator: link_header`` means ``paginator: {type: link_header}``."""
    value = {"type": value} if isinstance(value, str) else value
    _check_type(value, "paginator", PAGINATOR_TYPES)
    return value


# --- the rest ---------------------------------------------------------------------------------


class RetryConfig(_Frozen):
    """Retries on 429, 5xx, timeouts and dropped connections.

    The wait doubles from ``backoff_seconds`` up to ``max_backoff_seconds``; a ``Retry-After``
    header (seconds or an HTTP date) is honoured, capped at ``max_backoff_seconds``.
    """

    max_attempts: int = Field(default=5, ge=1)
    backoff_seconds: float = Field(default=0.5, ge=0)
    max_backoff_seconds: float = Field(default=30, ge=0)


class IncrementalConfig(_Frozen):
    """Read only what changed: send the largest ``cursor`` value seen so far as ``param``."""

    cursor: str
    param: str
    initial: Scalar | None = None


class ResourceConfig(_Frozen):
    """One endpoint of the API; it lands in ``bronze.<source>_<name>``."""

    name: str
    path: str
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, Scalar | list[Scalar]] = {}
    body: dict[str, Any] | None = None
    headers: dict[str, str] = {}
    data_path: str | None = None
    primary_key: list[str] = []
    incremental: IncrementalConfig | None = None
    paginator: PaginatorConfig | None = None
    nested: Literal["unnest", "keep"] = "unnest"

    @field_validator("name")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not _NAME.match(value) or "__" in value:
            raise _error(
                f"`{value}` is not a valid resource name: use lower case letters, digits and single underscores"
                " (it becomes part of the table name)"
            )
        return value

    @field_validator("primary_key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("paginator", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _paginator_shorthand(value)

    @model_validator(mode="after")
    def _body_only_with_post(self) -> ResourceConfig:
        if self.body is not None and self.method != "POST":
            raise _error("`body` is sent only with `method: POST`")
        return self


class RestSourceConfig(SourceConfig):
    """A ``sources/<name>.yaml`` with ``type: rest``."""

    type: Literal["rest"]
    base_url: str
    auth: AuthConfig | None = None
    headers: dict[str, str] = {}
    paginator: PaginatorConfig | None = None
    retries: RetryConfig = RetryConfig()
    timeout_seconds: float = Field(default=30, gt=0)
    resources: list[ResourceConfig] = Field(min_length=1)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _check_http_url(value)

    @field_validator("auth", mode="before")
    @classmethod
    def _auth_type(cls, value: Any) -> Any:
        _check_type(value, "auth", AUTH_TYPES)
        return value

    @field_validator("paginator", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _paginator_shorthand(value)

    @field_validator("resources")
    @classmethod
    def _unique_names(cls, value: list[ResourceConfig]) -> list[ResourceConfig]:
        seen: set[str] = set()
        for resource in value:
            if resource.name in seen:
                raise _error(f"resource `{resource.name}` is defined twice")
            seen.add(resource.name)
        return value

    def paginator_for(self, resource: ResourceConfig) -> PaginatorConfig:
        """The resource's paginator, else the source's, else ``auto``."""
        return resource.paginator or self.paginator or AutoPaginator(type="auto")


def _check_http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise _error(f"`{value}` is not an http(s) URL: write it like https://api.example.com/v1")
    return value
