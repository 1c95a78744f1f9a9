"""``GET /api/v1/runs`` and ``GET /api/v1/runs/{id}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request  # noqa: TID251 - the API package is where FastAPI lives

from ratatouille.api.context import context
from ratatouille.api.errors import NotFoundError, responses
from ratatouille.api.models import RunDetail, RunsResponse, RunSummary
from ratatouille.api.security import Caller
from ratatouille.state.auth import Role

router = APIRouter(prefix="/api/v1", tags=["runs"])


@router.get("/runs", summary="Recent runs", responses=responses(401, 403, 404, 422))
def list_runs(
    request: Request,
    caller: Caller,
    workspace: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> RunsResponse:
    """The latest runs of the workspaces the token may read (or of one), newest first."""
    ctx = context(request)
    if workspace is not None:
        caller.require(Role.VIEWER, workspace)
        names = [workspace]
    else:
        names = ctx.readable(caller)
    rows: list[dict[str, Any]] = []
    for name in names:
        rows += ctx.workspace(name).runs(limit)
    rows.sort(key=lambda r: (r["started_at"], r["id"]), reverse=True)  # aware UTC times (StateStore)
    return RunsResponse(runs=[RunSummary.model_validate(r) for r in rows[:limit]])


@router.get(
    "/runs/{run_id}", summary="A run: status, per-model results, tests, logs", responses=responses(401, 403, 404)
)
def run_detail(request: Request, caller: Caller, run_id: str) -> RunDetail:
    """One run (by its full id) with each node's result, the tests and the log lines."""
    ctx = context(request)
    state = ctx.default_workspace().state
    record = state.run(run_id) if run_id and "%" not in run_id and "_" not in run_id else None
    if record is None or record["id"] != run_id:
        raise NotFoundError(f"no run `{run_id}`; GET /api/v1/runs lists them")
    caller.require(Role.VIEWER, str(record["workspace"]))
    return RunDetail.model_validate(record)
