"""Users and tokens in the state store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from ratatouille.errors import AuthenticationError, AuthError, PermissionDeniedError
from ratatouille.state.auth import AuthStore, Principal, Role, hash_token
from ratatouille.state.store import StateStore

STATES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STATES)
def auth(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuthStore]:
    """An AuthStore over a fresh state database."""
    uri = "sqlite:///state.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    state = StateStore(uri, tmp_path)
    yield AuthStore(state)
    state.close()


def test_users_with_and_without_passwords(auth: AuthStore) -> None:
    auth.add_user("alice", "correct horse battery staple")
    auth.add_user("bot")
    users = {u.name: u for u in auth.users()}
    assert users["alice"].has_password and not users["bot"].has_password
    assert auth.verify_password("alice", "correct horse battery staple")
    assert not auth.verify_password("alice", "wrong")
    assert not auth.verify_password("bot", "")
    assert not auth.verify_password("nobody", "x")
    with auth.engine.connect() as conn:
        stored = conn.execute(select(auth.t.users.c.password_hash).where(auth.t.users.c.name == "alice")).scalar()
    assert str(stored).startswith("$argon2id$") and "horse" not in str(stored)
    auth.set_password("bot", "s3cret")
    assert auth.verify_password("bot", "s3cret")


def test_user_errors(auth: AuthStore) -> None:
    auth.add_user("alice")
    with pytest.raises(AuthError, match="already exists"):
        auth.add_user("alice")
    with pytest.raises(AuthError, match="invalid user name"):
        auth.add_user("bad name")
    with pytest.raises(AuthError, match="empty"):
        auth.add_user("carol", "")
    with pytest.raises(AuthError, match="no user"):
        auth.remove_user("nobody")
    with pytest.raises(AuthError, match="no user"):
        auth.set_password("nobody", "x")


def test_tokens_are_random_shown_once_and_stored_hashed(auth: AuthStore) -> None:
    value, info = auth.create_token("alice", "viewer")
    other, _ = auth.create_token("alice", "viewer")
    assert value.startswith("rat_") and len(value) > 40 and value != other
    assert auth.user_exists("alice")  # created on the way
    with auth.engine.connect() as conn:
        rows = conn.execute(select(auth.t.tokens)).fetchall()
    assert value not in str(rows)
    assert hash_token(value) == hashlib.sha256(value.encode()).hexdigest()
    assert {r.token_hash for r in rows} == {hash_token(value), hash_token(other)}
    principal = auth.authenticate(value)
    assert principal == Principal("alice", info.id, Role.VIEWER, None)
    assert all(value not in str(t.as_dict()) for t in auth.tokens())


def test_create_token_for_a_missing_user_only_when_asked(auth: AuthStore) -> None:
    with pytest.raises(AuthError, match="no user"):
        auth.create_token("ghost", "admin", create_user=False)
    with pytest.raises(AuthError, match="unknown role"):
        auth.create_token("alice", "owner")


def test_expiry_revocation_and_last_use(auth: AuthStore) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    value, info = auth.create_token("alice", Role.EDITOR, "sales", expires_at=soon)
    assert info.status == "active" and info.expires_at == soon
    assert auth.tokens()[0].last_used_at is None
    assert auth.authenticate(value).workspace == "sales"
    listed = auth.tokens()[0]
    assert listed.last_used_at is not None and listed.expires_at is not None
    assert abs((listed.expires_at - soon).total_seconds()) < 1
    old, _ = auth.create_token("alice", "viewer", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(AuthenticationError, match="expired"):
        auth.authenticate(old)
    assert auth.revoke_token(info.id).status == "revoked"
    assert auth.revoke_token(info.id).status == "revoked"  # twice is fine
    with pytest.raises(AuthenticationError, match="revoked"):
        auth.authenticate(value)
    with pytest.raises(AuthenticationError, match="invalid"):
        auth.authenticate("rat_made-up")
    with pytest.raises(AuthError, match="no token"):
        auth.revoke_token("tok_nope")
    assert {t.status for t in auth.tokens()} == {"revoked", "expired"}
    assert not auth.has_active_tokens()


def test_removing_a_user_removes_its_tokens(auth: AuthStore) -> None:
    value, _ = auth.create_token("alice", "admin")
    auth.create_token("bob", "viewer")
    assert auth.remove_user("alice") == 1
    with pytest.raises(AuthenticationError):
        auth.authenticate(value)
    assert [t.user for t in auth.tokens()] == ["bob"]
    assert [u.active_tokens for u in auth.users()] == [1]


def test_roles_and_workspaces() -> None:
    everywhere = Principal("a", "t1", Role.EDITOR, None)
    sales = Principal("b", "t2", Role.VIEWER, "sales")
    assert everywhere.can(Role.VIEWER, "x") and everywhere.can(Role.EDITOR, "x") and everywhere.can(Role.EDITOR)
    assert not everywhere.can(Role.ADMIN, "x")
    assert sales.can(Role.VIEWER, "sales") and not sales.can(Role.VIEWER, "other") and not sales.can(Role.VIEWER)
    assert not sales.can(Role.EDITOR, "sales")
    assert sales.readable(["sales", "other"]) == ["sales"]
    assert everywhere.readable(["b", "a"]) == ["a", "b"]
    with pytest.raises(
        PermissionDeniedError,
        match="^an editor role is needed to run pipelines in workspace `sales`; "
        "this token is a viewer \\(workspace `sales` only\\)$",
    ):
        sales.require(Role.EDITOR, "sales")
    with pytest.raises(PermissionDeniedError, match="^an admin role is needed .* this token is an editor "):
        everywhere.require(Role.ADMIN, "x")
    with pytest.raises(PermissionDeniedError, match="workspace `sales` only"):
        sales.require(Role.VIEWER, "other")
    assert Role.parse("ADMIN") is Role.ADMIN
