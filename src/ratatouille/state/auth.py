"""Users, API tokens and roles, kept in the state store (same SQLAlchemy engine as run records).

A user has a name and, optionally, an argon2 password hash (no default password, ever). An
API token belongs to a user and carries one role and, optionally, one workspace::

    viewer  reads tables, runs queries, sees pipelines and runs
    editor  also triggers pipeline runs
    admin   also manages users and settings

A token without a workspace holds its role in every workspace. Token values are random
(``secrets.token_urlsafe``), shown once when created and stored only as a SHA-256 digest. They
expire if asked to, are revocable, and remember when they were last used.

Errors: ``AuthError`` and its subclasses ``AuthenticationError`` (no valid token) and
``PermissionDeniedError`` (the token does not allow it), in ``ratatouille.errors`` with the others.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ratatouille.errors import AuthenticationError, AuthError, PermissionDeniedError, RatatouilleError
from ratatouille.state.store import now

if TYPE_CHECKING:
    from sqlalchemy import Engine, MetaData, Table

    from ratatouille.state.store import StateStore

TOKEN_PREFIX = "rat_"
TOKEN_BYTES = 32  # 256 bits of randomness
# Writing last_used_at on every request would turn each read into a write (SQLite serialises
# writers); once a minute is precise enough to see which tokens are in use.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}$")


class Role(StrEnum):
    """What a token may do, from least to most."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Order of the roles: each includes the ones below it."""
        return _RANKS[self]

    @classmethod
    def parse(cls, value: str) -> Role:
        """The role named ``value``.

        Raises:
            AuthError: it is not a role.
        """
        try:
            return cls(value.lower())
        except ValueError:
            raise AuthError(f"unknown role `{value}`; use viewer, editor or admin") from None


_RANKS = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}
_WHAT = {Role.VIEWER: "read", Role.EDITOR: "run pipelines", Role.ADMIN: "manage users and settings"}


def _a(role: Role) -> str:
    """``a viewer``, ``an editor``, ``an admin``."""
    return f"{'an' if role.value[0] in 'aeiou' else 'a'} {role.value}"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user and the role and workspace their token carries."""

    user: str
    token_id: str
    role: Role
    workspace: str | None  # None: every workspace

    def can(self, role: Role, workspace: str | None = None) -> bool:
        """Whether the token holds at least ``role`` in ``workspace`` (``None``: in every workspace)."""
        if self.role.rank < role.rank:
            return False
        return self.workspace is None or (workspace is not None and workspace == self.workspace)

    def require(self, role: Role, workspace: str | None = None) -> None:
        """Refuse unless the token holds ``role`` in ``workspace``.

        Raises:
            PermissionDeniedError: it does not (the message says what the token can do).
        """
        if self.can(role, workspace):
            return
        where = f"workspace `{workspace}`" if workspace else "every workspace"
        scope = f"workspace `{self.workspace}` only" if self.workspace else "every workspace"
        if self.role.rank < role.rank:
            raise PermissionDeniedError(
                f"{_a(role)} role is needed to {_WHAT[role]} in {where}; this token is {_a(self.role)} ({scope})"
            )
        raise PermissionDeniedError(f"this token is for {scope}; it cannot be used for {where}")

    def readable(self, workspaces: Iterable[str]) -> list[str]:
        """The workspaces of ``workspaces`` this token may read, sorted."""
        return sorted(w for w in set(workspaces) if self.can(Role.VIEWER, w))


@dataclass(frozen=True)
class UserInfo:
    """A user as listed (never with its password hash)."""

    name: str
    created_at: datetime
    has_password: bool
    active_tokens: int


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never with its value)."""

    id: str
    user: str
    role: Role
    workspace: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def status(self) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now():
            return "expired"
        return "active"

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON output."""
        return {
            "id": self.id,
            "user": self.user,
            "role": self.role.value,
            "workspace": self.workspace,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
        }


@dataclass(frozen=True)
class _Tables:
    metadata: MetaData
    users: Table
    tokens: Table


def _tables() -> _Tables:
    from sqlalchemy import Column, DateTime, ForeignKey, Index, MetaData, String, Table, Text

    md = MetaData()
    users = Table(
        "rat_users",
        md,
        Column("name", String(200), primary_key=True),
        Column("password_hash", Text),  # argon2id; NULL: the user signs in with tokens only
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    tokens = Table(
        "rat_tokens",
        md,
        Column("id", String(40), primary_key=True),
        Column("user_name", String(200), ForeignKey("rat_users.name"), nullable=False),
        Column("token_hash", String(64), nullable=False),
        Column("role", String(20), nullable=False),
        Column("workspace", String(200)),  # NULL: every workspace
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("expires_at", DateTime(timezone=True)),
        Column("revoked_at", DateTime(timezone=True)),
        Column("last_used_at", DateTime(timezone=True)),
        Index("ix_rat_tokens_hash", "token_hash", unique=True),
    )
    return _Tables(md, users, tokens)


def hash_token(token: str) -> str:
    """The stored form of a token: its SHA-256 digest, hex.

    A fast hash is right here, unlike for passwords: a token is 256 random bits, so nobody can
    guess it however fast each guess is, and a deterministic digest can be looked up by index
    on every request. Passwords are low-entropy and get argon2, which is slow on purpose.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AuthStore:
    """Users and tokens in the state database; the tables are created on first use."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.t = _tables()
        self._ready: Engine | None = None
        self._lock = threading.Lock()
        self._last_used: dict[str, datetime] = {}

    @property
    def engine(self) -> Engine:
        """The state store's engine, with the auth tables created.

        Raises:
            RatatouilleError: the state database cannot be reached.
        """
        engine = self.state.engine
        if self._ready is not engine:
            from sqlalchemy.exc import SQLAlchemyError

            with self._lock:
                try:
                    self.t.metadata.create_all(engine)
                except SQLAlchemyError as exc:
                    raise RatatouilleError(f"cannot create the user tables in the state store: {exc}") from exc
                self._ready = engine
        return engine

    # -- users ----------------------------------------------------------------------------

    def add_user(self, name: str, password: str | None = None) -> UserInfo:
        """Create a user, with an argon2-hashed password or none (tokens only).

        Raises:
            AuthError: the name is invalid or taken, or the password is empty.
        """
        from sqlalchemy import select

        _check_name(name)
        hashed = _hash_password(password) if password is not None else None
        t = self.t.users
        with self.engine.begin() as conn:
            if conn.execute(select(t.c.name).where(t.c.name == name)).first():
                raise AuthError(f"user `{name}` already exists; `rat users list` shows them")
            created = now()
            conn.execute(t.insert().values(name=name, password_hash=hashed, created_at=created))
        return UserInfo(name, created, hashed is not None, 0)

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password.

        Raises:
            AuthError: no such user, or the password is empty.
        """
        hashed = _hash_password(password)
        t = self.t.users
        with self.engine.begin() as conn:
            if conn.execute(t.update().where(t.c.name == name).values(password_hash=hashed)).rowcount == 0:
                raise AuthError(f"no user `{name}`; `rat users list` shows them")

    def verify_password(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (``False`` for unknown users and users without one)."""
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError
        from sqlalchemy import select

        t = self.t.users
        with self.engine.connect() as conn:
            row = conn.execute(select(t.c.password_hash).where(t.c.name == name)).first()
        if row is None or row[0] is None:
            return False
        hasher = PasswordHasher()
        try:
            hasher.verify(row[0], password)
        except (VerificationError, InvalidHashError):
            return False
        if hasher.check_needs_rehash(row[0]):
            self.set_password(name, password)
        return True

    def users(self) -> list[UserInfo]:
        """Every user, by name."""
        from sqlalchemy import select

        users, tokens = self.t.users, self.t.tokens
        with self.engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).fetchall()
            token_rows = conn.execute(
                select(tokens.c.user_name, tokens.c.expires_at).where(tokens.c.revoked_at.is_(None))
            ).fetchall()
        moment = now()
        active: dict[str, int] = {}
        for user, expires in token_rows:
            if expires is None or _aware(expires) > moment:
                active[user] = active.get(user, 0) + 1
        return [
            UserInfo(r.name, _aware(r.created_at), r.password_hash is not None, active.get(r.name, 0)) for r in rows
        ]

    def user_exists(self, name: str) -> bool:
        """Whether there is a user called ``name``."""
        from sqlalchemy import select

        t = self.t.users
        with self.engine.connect() as conn:
            return conn.execute(select(t.c.name).where(t.c.name == name)).first() is not None

    def remove_user(self, name: str) -> int:
        """Delete a user and their tokens; returns how many tokens went with them.

        Raises:
            AuthError: no such user.
        """
        users, tokens = self.t.users, self.t.tokens
        with self.engine.begin() as conn:
            removed = conn.execute(tokens.delete().where(tokens.c.user_name == name)).rowcount
            if conn.execute(users.delete().where(users.c.name == name)).rowcount == 0:
                raise AuthError(f"no user `{name}`; `rat users list` shows them")
        return int(removed)

    # -- tokens ---------------------------------------------------------------------------

    def create_token(
        self,
        user: str,
        role: Role | str,
        workspace: str | None = None,
        *,
        expires_at: datetime | None = None,
        create_user: bool = True,
    ) -> tuple[str, TokenInfo]:
        """Issue a token; returns its value (shown once, never stored) and its record.

        Raises:
            AuthError: the user does not exist (and ``create_user`` is off), or the role is unknown.
        """
        from sqlalchemy import select

        role = role if isinstance(role, Role) else Role.parse(role)
        _check_name(user)
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        value = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        token_id = "tok_" + secrets.token_hex(6)
        created = now()
        users = self.t.users
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.name).where(users.c.name == user)).first() is None:
                if not create_user:
                    raise AuthError(f"no user `{user}`; add it with `rat users add {user}`")
                conn.execute(users.insert().values(name=user, password_hash=None, created_at=created))
            conn.execute(
                self.t.tokens.insert().values(
                    id=token_id,
                    user_name=user,
                    token_hash=hash_token(value),
                    role=role.value,
                    workspace=workspace,
                    created_at=created,
                    expires_at=expires_at,
                )
            )
        return value, TokenInfo(token_id, user, role, workspace, created, expires_at, None, None)

    def tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Every token (or a user's), oldest first, without their values."""
        from sqlalchemy import select

        t = self.t.tokens
        query = select(t).order_by(t.c.created_at, t.c.id)
        if user is not None:
            query = query.where(t.c.user_name == user)
        with self.engine.connect() as conn:
            return [_token_info(r) for r in conn.execute(query)]

    def has_active_tokens(self) -> bool:
        """Whether any token could be used right now."""
        return any(t.status == "active" for t in self.tokens())

    def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke a token (it stops working at once); revoking twice is harmless.

        Raises:
            AuthError: no such token.
        """
        from sqlalchemy import select

        t = self.t.tokens
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == token_id, t.c.revoked_at.is_(None)).values(revoked_at=now()))
            row = conn.execute(select(t).where(t.c.id == token_id)).first()
        if row is None:
            raise AuthError(f"no token `{token_id}`; `rat tokens list` shows them")
        return _token_info(row)

    def authenticate(self, token: str) -> Principal:
        """The principal a token stands for; records when it was last used.

        Raises:
            AuthenticationError: the token is unknown, expired or revoked.
        """
        from sqlalchemy import select

        t = self.t.tokens
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.token_hash == hash_token(token.strip()))).first()
        if row is None:
            raise AuthenticationError("invalid API token; create one with `rat tokens create`")
        info = _token_info(row)
        if info.revoked_at is not None:
            raise AuthenticationError(f"API token {info.id} was revoked; ask an admin for a new one")
        moment = now()
        if info.expires_at is not None and info.expires_at <= moment:
            raise AuthenticationError(
                f"API token {info.id} expired at {_iso(info.expires_at)}; ask an admin for a new one"
            )
        self._touch(info, moment)
        return Principal(info.user, info.id, info.role, info.workspace)

    def _touch(self, info: TokenInfo, moment: datetime) -> None:
        last = self._last_used.get(info.id) or info.last_used_at
        if last is not None and moment - last < LAST_USED_RESOLUTION:
            return
        self._last_used[info.id] = moment
        t = self.t.tokens
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == info.id).values(last_used_at=moment))


def _check_name(name: str) -> None:
    if not _USER_NAME.match(name):
        raise AuthError(
            f"invalid user name `{name}`: use letters, digits and . _ @ + - (up to 200, starting with a letter or digit)"
        )


def _hash_password(password: str) -> str:
    from argon2 import PasswordHasher

    if not password:
        raise AuthError("the password is empty")
    return PasswordHasher().hash(password)


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; every time here is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _maybe(moment: datetime | None) -> datetime | None:
    return _aware(moment) if moment is not None else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _token_info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        user=row.user_name,
        role=Role(row.role),
        workspace=row.workspace,
        created_at=_aware(row.created_at),
        expires_at=_maybe(row.expires_at),
        revoked_at=_maybe(row.revoked_at),
        last_used_at=_maybe(row.last_used_at),
    )
