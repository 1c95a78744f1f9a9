"""``GET /api/v1/users``: accounts, for admins of every workspace."""

from __future__ import annotations

from fastapi import APIRouter, Request  # noqa: TID251 - the API package is where FastAPI lives

from ratatouille.api.context import context
from ratatouille.api.errors import responses
from ratatouille.api.models import TokenModel, UserModel, UsersResponse
from ratatouille.api.security import Caller
from ratatouille.state.auth import Role

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.get("/users", summary="Users and tokens (admin)", responses=responses(401, 403))
def list_users(request: Request, caller: Caller) -> UsersResponse:
    """Every user and token (never token values or password hashes). Users are shared by all
    workspaces, so this needs an admin token for every workspace (one made without `--workspace`)."""
    caller.require(Role.ADMIN)
    auth = context(request).auth
    return UsersResponse(
        users=[
            UserModel(name=u.name, created_at=u.created_at, has_password=u.has_password, active_tokens=u.active_tokens)
            for u in auth.users()
        ],
        tokens=[TokenModel(**t.as_dict()) for t in auth.tokens()],
    )
