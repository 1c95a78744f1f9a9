"""HTTP for REST sources: dlt's ``RESTClient``, paginators, auth and retrying session.

Everything comes from the source's YAML. dlt is used as a library only: no pipeline, no
destination, no state directory. Its configuration resolver is never called (it would read
``.dlt/*.toml`` files and environment sections): the session is dlt's ``Session`` with dlt's own
retry policy (``_make_retry``: 429, 5xx, timeouts and dropped connections; exponential backoff that
honours ``Retry-After``), built here with the values from the YAML, and ``RESTClient`` gets an
explicit ``RuntimeConfiguration``. dlt telemetry is switched off before dlt is imported.

Credentials never reach a message or a log line: URLs are logged and reported with sensitive
query parameters (the ``api_key`` parameter, plus dlt's list: ``token``, ``key``, ...) replaced
by ``***``, and every secret value of the config is masked in any text that leaves this module.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from ratatouille.connectors.rest.config import (
    ApiKeyAuth,
    AuthConfig,
    BasicAuth,
    BearerAuth,
    CursorPaginator,
    JsonLinkPaginator,
    LinkHeaderPaginator,
    NoPaginator,
    OAuth2Auth,
    OffsetPaginator,
    PageNumberPaginator,
    PaginatorConfig,
    ResourceConfig,
    RestSourceConfig,
)
from ratatouille.errors import ConnectorError

if TYPE_CHECKING:
    from dlt.sources.helpers.rest_client.paginators import BasePaginator
    from requests import PreparedRequest, Response, Session
    from requests.auth import AuthBase

TELEMETRY_ENV = "RUNTIME__DLTHUB_TELEMETRY"
RETRY_STATUSES = frozenset((429, *range(500, 600)))
_BODY_CHARS = 300
_LIBRARY_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "dlt")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)|(Name or service not known|Connection refused|timed out)")


def disable_dlt_telemetry() -> None:
    """Make sure dlt never phones home from this process (an explicit user setting wins)."""
    os.environ.setdefault(TELEMETRY_ENV, "false")


class Redactor:
    """Masks secret values in any text, and sensitive query parameters in URLs."""

    def __init__(self, secrets: Iterable[str], query_names: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= 3:  # masking "a" everywhere would garble messages and protect nothing
                forms.update({secret, quote(secret, safe=""), quote_plus(secret)})
        self._secrets = sorted(forms, key=len, reverse=True)
        self._query_names = {name.lower() for name in query_names}

    def text(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def url(self, url: str) -> str:
        """``url`` without credentials: sensitive query parameters and URL passwords masked."""
        from dlt.sources.helpers.rest_client.redaction import SENSITIVE_PARAMS, sanitize_url

        url = sanitize_url(url, {*SENSITIVE_PARAMS, *self._query_names})
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            url = urlunsplit(parts._replace(netloc=netloc))
        return self.text(url)


class RedactingFilter(logging.Filter):
    """Masks secrets in records of a library logger (urllib3 logs request lines, query string included)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets masked; never drops a record."""
        message = record.getMessage()
        masked = self.redactor.text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def redactor_for(config: RestSourceConfig) -> Redactor:
    """The redactor that knows every secret of a source config."""
    auth = config.auth
    secrets: list[str] = []
    names: list[str] = []
    if isinstance(auth, BearerAuth):
        secrets.append(auth.token.get_secret_value())
    elif isinstance(auth, ApiKeyAuth):
        secrets.append(auth.key.get_secret_value())
        if auth.location == "query":
            names.append(auth.name)
    elif isinstance(auth, BasicAuth):
        secrets.append(auth.password.get_secret_value())
    elif isinstance(auth, OAuth2Auth):
        secrets.append(auth.client_secret.get_secret_value())
    return Redactor(secrets, names)


def build_auth(auth: AuthConfig | None, session: Session) -> AuthBase:
    """dlt's authenticator for the config (``session`` fetches OAuth2 tokens).

    Without ``auth``, a no-op authenticator (see ``no_auth``).
    """
    from dlt.sources.helpers.rest_client.auth import (
        APIKeyAuth,
        BearerTokenAuth,
        HttpBasicAuth,
        OAuth2ClientCredentials,
    )

    if isinstance(auth, BearerAuth):
        return BearerTokenAuth(token=auth.token.get_secret_value())
    if isinstance(auth, ApiKeyAuth):
        return APIKeyAuth(name=auth.name, api_key=auth.key.get_secret_value(), location=auth.location)
    if isinstance(auth, BasicAuth):
        return HttpBasicAuth(username=auth.username, password=auth.password.get_secret_value())
    if isinstance(auth, OAuth2Auth):
        return OAuth2ClientCredentials(
            access_token_url=auth.token_url,
            client_id=auth.client_id,
            client_secret=auth.client_secret.get_secret_value(),
            access_token_request_data={"scope": " ".join(auth.scopes)} if auth.scopes else {},
            session=session,
        )
    return no_auth()


def no_auth() -> AuthBase:
    """An authenticator that adds nothing. Set on a session (or a request), it keeps ``requests``
    from reading ``~/.netrc`` for credentials: a request carries only what the source file says."""
    from requests.auth import AuthBase

    class NoAuth(AuthBase):
        def __call__(self, request: PreparedRequest) -> PreparedRequest:
            return request

    return NoAuth()


def build_paginator(config: PaginatorConfig) -> BasePaginator | None:
    """dlt's paginator for the config; ``None`` lets dlt detect it (``auto``)."""
    from dlt.sources.helpers.rest_client import paginators as p

    if isinstance(config, NoPaginator):
        return p.SinglePagePaginator()
    if isinstance(config, PageNumberPaginator):
        return p.PageNumberPaginator(
            base_page=config.base_page,
            page_param=config.page_param,
            total_path=config.total_path,
            maximum_page=config.maximum_page,
            has_more_path=config.has_more_path,
        )
    if isinstance(config, OffsetPaginator):
        return p.OffsetPaginator(
            limit=config.limit,
            offset_param=config.offset_param,
            limit_param=config.limit_param,
            total_path=config.total_path,
            maximum_offset=config.maximum_offset,
            has_more_path=config.has_more_path,
        )
    if isinstance(config, CursorPaginator):
        return p.JSONResponseCursorPaginator(
            cursor_path=config.cursor_path, cursor_param=config.cursor_param, has_more_path=config.has_more_path
        )
    if isinstance(config, LinkHeaderPaginator):
        return p.HeaderLinkPaginator(links_next_key=config.rel)
    if isinstance(config, JsonLinkPaginator):
        return p.JSONLinkPaginator(next_url_path=config.next_url_path)
    return None


class RestHttp:
    """One source's HTTP session: pages of records per resource, errors as ``ConnectorError``."""

    def __init__(self, config: RestSourceConfig, log: logging.Logger) -> None:
        disable_dlt_telemetry()
        from dlt.common.configuration.specs import RuntimeConfiguration
        from dlt.sources.helpers.requests.retry import DEFAULT_RETRY_EXCEPTIONS, _make_retry
        from dlt.sources.helpers.requests.session import Session
        from dlt.sources.helpers.rest_client.client import RESTClient

        self.config = config
        self.log = log
        self.redact = redactor_for(config)
        self._log_filter = RedactingFilter(self.redact)
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        retries = config.retries
        self.session = Session(timeout=config.timeout_seconds, raise_for_status=False)
        self.session.auth = no_auth()  # also covers the OAuth2 token request: never ~/.netrc
        retry = _make_retry(
            status_codes=sorted(RETRY_STATUSES),
            exceptions=DEFAULT_RETRY_EXCEPTIONS,
            max_attempts=retries.max_attempts,
            condition=None,
            backoff_factor=retries.backoff_seconds,
            respect_retry_after_header=True,
            max_delay=retries.max_backoff_seconds,
        )
        self.session.send = retry.wraps(self.session.send)  # type: ignore[method-assign]
        redact, debug = self.redact, log.debug

        class Client(RESTClient):
            def _log_request(self, request: Any, prepared_url: str) -> None:
                debug("%s %s", request.method.upper(), redact.url(prepared_url))

        headers = {"Accept": "application/json", **config.headers}
        self.client = Client(
            base_url=config.base_url,
            headers=headers,
            auth=build_auth(config.auth, self.session),
            session=self.session,
            config=RuntimeConfiguration(),
        )
        self._failures = 0
        self._last_url = config.base_url
        self._last_type = ""

    def close(self) -> None:
        """Close the session and its pooled connections."""
        self.session.close()
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)

    def pages(self, resource: ResourceConfig, params: dict[str, Any]) -> Iterator[list[Any]]:
        """The records of ``resource``, one list per page, in order.

        Raises:
            ConnectorError: the API refused, failed or could not be reached; or its answers do not
                fit the paginator or ``data_path``. Never contains credentials.
        """
        import requests
        from dlt.sources.helpers.rest_client.exceptions import RESTClientException
        from jsonpath_ng.exceptions import JSONPathError

        paginator = build_paginator(self.config.paginator_for(resource))
        self._failures = 0
        try:
            for page in self.client.paginate(
                path=resource.path,
                method=resource.method,
                params=params,
                json=resource.body,
                headers=dict(resource.headers) or None,
                paginator=paginator,
                data_selector=resource.data_path,
                hooks={"response": [self._on_response]},
            ):
                yield list(page)
        except requests.HTTPError as exc:
            raise self._http_error(resource, exc) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise self._network_error(resource, exc) from None
        except requests.JSONDecodeError:
            raise ConnectorError(
                f"{self._where(resource)}: the answer of {self.redact.url(self._last_url)} is not JSON"
                f" (Content-Type: {self._last_type or 'none'}): check `base_url` and `path`"
            ) from None
        except requests.RequestException as exc:
            raise ConnectorError(
                f"{self._where(resource)}: the request to {self.redact.url(self._last_url)} failed"
                f" ({type(exc).__name__}: {self._short(str(exc))})"
            ) from None
        except JSONPathError as exc:
            raise ConnectorError(
                f"{self._where(resource)}: a JSON path of the resource or its paginator is invalid"
                f" ({self._short(str(exc)).rstrip('.!')}): check `data_path` ({resource.data_path}) and `paginator`"
            ) from None
        except (ValueError, RESTClientException) as exc:
            kind = self.config.paginator_for(resource).type
            raise ConnectorError(
                f"{self._where(resource)}: cannot read the pages of {self.redact.url(self._last_url)} with the"
                f" `{kind}` paginator: {self._short(str(exc)).rstrip('.')}. Check `paginator` and `data_path`"
            ) from None

    # --- internals ----------------------------------------------------------------------------

    def _on_response(self, response: Response, *args: Any, **kwargs: Any) -> None:
        """Count retryable failures, and turn any error status into ``HTTPError`` (retried on 429/5xx)."""
        from requests import HTTPError

        status = response.status_code
        self._last_url = response.url
        self._last_type = response.headers.get("Content-Type", "")
        if status in RETRY_STATUSES:
            self._failures += 1
            self.log.debug("HTTP %s from %s (attempt %s)", status, self.redact.url(response.url), self._failures)
        elif status < 400:
            self._failures = 0
        if status >= 400:
            _ = response.content  # read the body: the connection goes back to the pool
            raise HTTPError(f"HTTP {status}", response=response)

    def _where(self, resource: ResourceConfig) -> str:
        return f"source `{self.config.name}` resource `{resource.name}`"

    def _short(self, text: str) -> str:
        text = " ".join(self.redact.text(text).split())
        return text if len(text) <= _BODY_CHARS else text[:_BODY_CHARS] + "..."

    def _http_error(self, resource: ResourceConfig, exc: Any) -> ConnectorError:
        response = exc.response
        where = self._where(resource)
        if response is None:
            return ConnectorError(f"{where}: {self._short(str(exc))}")
        status = response.status_code
        answer = f"HTTP {status} {response.reason or ''}".rstrip()
        method = (response.request.method if response.request is not None else None) or resource.method
        url = self.redact.url(response.url)
        body = self._short(response.text) if response.text else ""
        said = f"; the API said: {body}" if body else ""
        auth = self.config.auth
        if isinstance(auth, OAuth2Auth) and response.url.split("?")[0] == auth.token_url.split("?")[0]:
            if status in (400, 401, 403):
                return ConnectorError(
                    f"{where}: the OAuth2 token endpoint {url} refused the client credentials ({answer}, auth: oauth2):"
                    f" check `client_id`, `client_secret` and `scopes`{said}"
                )
            return ConnectorError(f"{where}: the OAuth2 token endpoint {url} answered {answer}{said}")
        if status in (401, 403):
            if auth is None:
                return ConnectorError(
                    f"{where}: {method} {url} was refused ({answer}): the API needs credentials; add `auth:`"
                    f" to sources/{self.config.name}.yaml"
                )
            return ConnectorError(
                f"{where}: the API refused the credentials ({answer}, auth: {auth.type}) at {method} {url}:"
                f" check the {_credential_name(auth)} of sources/{self.config.name}.yaml (often an environment"
                f" variable), and that it may read this resource"
            )
        if status == 404:
            return ConnectorError(
                f"{where}: {method} {url} returned {answer}: check `path` ({resource.path}) and `base_url`"
                f" ({self.config.base_url})"
            )
        if status in RETRY_STATUSES:
            attempts = max(self._failures, 1)
            return ConnectorError(
                f"{where}: gave up after {attempts} attempt{'s' if attempts != 1 else ''} at {method} {url}; the last"
                f" answer was {answer}. Try again later, or raise `retries.max_attempts`{said}"
            )
        return ConnectorError(f"{where}: {method} {url} returned {answer}{said}")

    def _network_error(self, resource: ResourceConfig, exc: Exception) -> ConnectorError:
        import requests

        where = self._where(resource)
        request = getattr(exc, "request", None)
        url = getattr(request, "url", None) or self.config.base_url
        attempts = self.config.retries.max_attempts
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        auth = self.config.auth
        target = f"the base URL {self.redact.url(self.config.base_url)}"
        if isinstance(auth, OAuth2Auth) and url.split("?")[0] == auth.token_url.split("?")[0]:
            target = f"the OAuth2 token endpoint {self.redact.url(auth.token_url)}"
        if isinstance(exc, requests.Timeout) and not isinstance(exc, requests.ConnectTimeout):
            return ConnectorError(
                f"{where}: {self.redact.url(url)} did not answer within {self.config.timeout_seconds:g} s"
                f" ({tries}): raise `timeout_seconds`, or check the server"
            )
        match = _ERRNO.search(str(exc))
        reason = (match.group(1) or match.group(2)).strip() if match else type(exc).__name__
        return ConnectorError(
            f"{where}: {target} is unreachable ({self._short(reason)}; {tries}): check the URL, the network"
            " and that the server is up"
        )


def _credential_name(auth: AuthConfig) -> str:
    if isinstance(auth, BearerAuth):
        return "`token`"
    if isinstance(auth, ApiKeyAuth):
        return f"`key` (sent as {auth.location} `{auth.name}`)"
    if isinstance(auth, BasicAuth):
        return "`username` and `password`"
    return "`client_id` and `client_secret`"
