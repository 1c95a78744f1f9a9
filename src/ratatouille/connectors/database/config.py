"""The ``sources/<name>.yaml`` of a database source (``type: postgres`` or ``type: mysql``).

Example::

    name: customers
    type: postgres                      # or mysql (MariaDB too)
    connection: ${env:SHOP_DB_URL}      # postgresql://user:password@host:5432/shop
    table: public.customers             # or `query: SELECT ...` (exactly one of the two)
    incremental: {cursor: updated_at, primary_key: id}
    batch_rows: 100000

``connection`` is a URL (``postgres://``, ``postgresql://``, ``postgresql+psycopg://``, ``mysql://``,
``mariadb://``, with or without a ``+driver``); special characters in the password must be
percent-encoded. It is a ``SecretStr``: it prints as ``**********``, validation errors never show
it, and :class:`ConnectionInfo` keeps the password out of its ``repr``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ratatouille.connectors.base import SourceConfig

DatabaseKind = Literal["postgres", "mysql"]

DEFAULT_PORTS: dict[str, int] = {"postgres": 5432, "mysql": 3306}
SCHEMES: dict[str, tuple[str, ...]] = {"postgres": ("postgres", "postgresql"), "mysql": ("mysql", "mariadb")}
EXAMPLES: dict[str, str] = {
    "postgres": "postgresql://user:password@host:5432/database",
    "mysql": "mysql://user:password@host:3306/database",
}
LABELS: dict[str, str] = {"postgres": "PostgreSQL", "mysql": "MySQL/MariaDB"}

_SECRET_KEYS = re.compile(r"(?i)\b(password|passwd|pwd)(\s*=\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;)]+)")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@")


def _error(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as written (no ``Value error,`` prefix)."""
    return PydanticCustomError("database_config", message)


@dataclass(frozen=True)
class ConnectionInfo:
    """The parts of a ``connection`` URL. The password is left out of ``repr`` and of :meth:`where`."""

    kind: DatabaseKind
    host: str
    port: int
    user: str
    database: str
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``PostgreSQL`` or ``MySQL/MariaDB``."""
        return LABELS[self.kind]

    def where(self) -> str:
        """``user@host:port/database``: what messages and logs may show."""
        database = f"/{self.database}" if self.database else ""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}{database}"

    def redact(self, text: str) -> str:
        """``text`` with the password (in every encoding) and any ``password=...`` or URL userinfo masked."""
        return redact(text, [self.password] if self.password else [])


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask secrets in a message: the given values (raw and URL-encoded), ``password=...`` pairs, and the
    password part of ``scheme://user:password@`` URLs."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}:
            text = text.replace(form, "***")
    text = _SECRET_KEYS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _URL_USERINFO.sub(r"\1:***@", text)


def parse_connection(url: str, kind: DatabaseKind) -> ConnectionInfo:
    """Split a database URL into its parts.

    Raises:
        ValueError: the URL is not a ``kind`` URL; the message never contains the password.
    """
    example = EXAMPLES[kind]
    text = url.strip()
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if not match:
        raise ValueError(f"must be a URL like {example} (got something that is not a URL)")
    scheme = match.group(1).lower()
    family = scheme.split("+", 1)[0]
    if family not in SCHEMES[kind]:
        other = next((k for k, schemes in SCHEMES.items() if family in schemes), None)
        hint = f": it is a {LABELS[other]} URL, so use `type: {other}`" if other else ""
        raise ValueError(f"`{scheme}://` is not a {LABELS[kind]} URL{hint}; write it like {example}")
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(
            f"is not a valid URL ({redact(str(exc))}); write it like {example}, percent-encoding special "
            "characters in the user name and password (`@` as %40, `/` as %2F, `:` as %3A)"
        ) from None
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    host = host or options.pop("host", "") or ""
    if not host:
        raise ValueError(f"names no host; write it like {example}")
    user = unquote(parts.username) if parts.username else options.pop("user", "")
    password = unquote(parts.password) if parts.password is not None else options.pop("password", None)
    options.pop("password", None)
    database = unquote(parts.path.lstrip("/"))
    if "/" in database:
        raise ValueError(f"has more than one path segment after the host; write it like {example}")
    return ConnectionInfo(
        kind=kind,
        host=host,
        port=port or DEFAULT_PORTS[kind],
        user=user,
        database=database,
        password=password,
        options=options,
    )


def split_name(text: str) -> list[str]:
    """Split ``schema.table`` into its parts; ``"..."`` or backtick quotes keep dots and case.

    Unquoted parts are returned as written (PostgreSQL folds them to lower case when resolving).

    Raises:
        ValueError: empty parts, unbalanced quotes or more than two parts.
    """
    parts: list[str] = []
    quoted: list[bool] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] in '"`':
            quote_char = text[i]
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ValueError(f"`{text}` has an unclosed {quote_char} quote")
                if text[i] == quote_char:
                    if i + 1 < n and text[i + 1] == quote_char:
                        buf.append(quote_char)
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            parts.append("".join(buf))
            quoted.append(True)
        else:
            start = i
            while i < n and text[i] != ".":
                i += 1
            parts.append(text[start:i].strip())
            quoted.append(False)
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        if text[i] != ".":
            raise ValueError(f"`{text}` is not a table name: expected `.` after `{parts[-1]}`")
        i += 1
    if any(not p for p in parts) or len(parts) > 2:
        raise ValueError(f"`{text}` is not a table name: write `table` or `schema.table`")
    return parts


class IncrementalConfig(BaseModel):
    """Read only rows whose ``cursor`` is at or past the largest value read so far.

    With ``primary_key`` the rows are merged by it, and the read uses ``cursor >= last`` so rows that
    share the last value but were committed later are not missed (the rows at exactly that value are
    read again, which the merge makes harmless). Without a key the rows are appended and the read
    uses ``cursor > last``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cursor: str
    primary_key: list[str] = []

    @field_validator("primary_key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, value: str) -> str:
        if not value.strip():
            raise _error("must name the column whose growing value marks new and changed rows, e.g. updated_at")
        return value.strip()

    @field_validator("primary_key")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        keys = [k.strip() for k in value]
        if any(not k for k in keys):
            raise _error("primary key column names must not be empty")
        if len(set(keys)) != len(keys):
            raise _error("lists a column twice")
        return keys


class DatabaseSourceConfig(SourceConfig):
    """A ``sources/<name>.yaml`` with ``type: postgres`` or ``type: mysql``."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    type: DatabaseKind
    connection: SecretStr
    table: str | None = None
    query: str | None = None
    incremental: IncrementalConfig | None = None
    batch_rows: int | None = Field(default=None, gt=0)

    @field_validator("connection")
    @classmethod
    def _connection(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        kind = info.data.get("type")
        if kind in SCHEMES:
            try:
                parse_connection(value.get_secret_value(), kind)
            except ValueError as exc:
                raise _error(str(exc)) from None
        return value

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            split_name(value)
        except ValueError as exc:
            raise _error(str(exc)) from None
        return value.strip()

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        while text.endswith(";"):
            text = text[:-1].rstrip()
        if not text:
            raise _error("is empty; write a SELECT statement")
        if ";" in _strip_literals(text):
            raise _error("must be a single SELECT statement (found `;` between statements)")
        return text

    @model_validator(mode="after")
    def _table_or_query(self) -> DatabaseSourceConfig:
        if (self.table is None) == (self.query is None):
            what = "both" if self.table is not None else "neither"
            raise _error(
                f"give exactly one of `table` (e.g. public.customers) or `query` (a SELECT statement); got {what}"
            )
        return self

    def connection_info(self) -> ConnectionInfo:
        """The parsed ``connection`` URL (validated when the file was loaded)."""
        return parse_connection(self.connection.get_secret_value(), self.type)

    def table_parts(self) -> list[str]:
        """``table`` split into ``[schema, name]`` or ``[name]``; empty for a ``query`` source."""
        return split_name(self.table) if self.table is not None else []


def _strip_literals(sql: str) -> str:
    """``sql`` without quoted strings, identifiers and comments (to look for statement separators)."""
    sql = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S)
    return re.sub(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`|\$\$.*?\$\$", "''", sql, flags=re.S)
