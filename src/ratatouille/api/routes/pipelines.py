"""``GET /api/v1/pipelines`` and ``POST /api/v1/pipelines/{workspace}/{name}/runs``."""

from __future__ import annotations

import difflib

from fastapi import APIRouter, Request, Response  # noqa: TID251 - the API package is where FastAPI lives

from ratatouille.api.context import context
from ratatouille.api.errors import NotFoundError, responses
from ratatouille.api.models import PipelineNode, PipelinesResponse, RunAccepted, RunRequest, WorkspaceProblem
from ratatouille.api.security import Caller
from ratatouille.errors import ConfigError
from ratatouille.runs.graph import Graph
from ratatouille.state.auth import Role

router = APIRouter(prefix="/api/v1", tags=["pipelines"])


def _nodes(workspace: str, graph: Graph) -> list[PipelineNode]:
    nodes = []
    for key in graph.dag.order(graph.dag.nodes):
        node = graph.dag.nodes[key]
        model = graph.models.get(key)
        if model is not None:
            config = model.config
            materialized: str | None = config.materialized.value
            description, owner, schedule = config.description, config.owner, config.schedule
        else:
            source = node.payload[0] if isinstance(node.payload, tuple) else None
            materialized = None
            description = str(getattr(source, "description", "") or "")
            owner = str(getattr(source, "owner", "") or "")
            schedule = getattr(source, "schedule", None)
        nodes.append(
            PipelineNode(
                workspace=workspace,
                key=key,
                layer=node.layer,
                name=node.name,
                kind=node.kind,
                materialized=materialized,
                description=description,
                owner=owner,
                schedule=schedule,
                tags=list(node.tags),
                upstream=sorted(u for u in node.upstream if u in graph.dag.nodes),
            )
        )
    return nodes


@router.get("/pipelines", summary="Sources and models", responses=responses(401, 403, 404, 422))
def list_pipelines(request: Request, caller: Caller, workspace: str | None = None) -> PipelinesResponse:
    """The sources and models of the workspaces the token may read (or of one), in run order.
    A workspace whose pipeline files are invalid is listed under `errors`."""
    ctx = context(request)
    if workspace is not None:
        caller.require(Role.VIEWER, workspace)
        ctx.workspace(workspace)
        names = [workspace]
    else:
        names = ctx.readable(caller)
    nodes: list[PipelineNode] = []
    problems: list[WorkspaceProblem] = []
    for name in names:
        try:
            nodes += _nodes(name, ctx.workspace(name).graph())
        except ConfigError as exc:
            problems.append(WorkspaceProblem(workspace=name, message=str(exc)))
    return PipelinesResponse(pipelines=nodes, errors=problems)


@router.post(
    "/pipelines/{workspace}/{name}/runs",
    status_code=202,
    summary="Run a pipeline (editor)",
    responses=responses(400, 401, 403, 404, 422, 503),
)
def trigger_run(
    request: Request, response: Response, caller: Caller, workspace: str, name: str, body: RunRequest | None = None
) -> RunAccepted:
    """Start a run of one model or source (`layer.name`, or `name` when unique), with the sources it
    reads, in the background; answers at once with the run id. Needs an editor token."""
    ctx = context(request)
    caller.require(Role.EDITOR, workspace)
    graph = ctx.workspace(workspace).graph()
    nodes = graph.dag.nodes
    if name in nodes:
        key = name
    else:
        matches = sorted(k for k, n in nodes.items() if n.name == name)
        if len(matches) != 1:
            close = difflib.get_close_matches(name, sorted(nodes), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            what = f"is ambiguous ({', '.join(matches)}); use layer.name" if matches else f"does not exist{hint}"
            raise NotFoundError(
                f"pipeline `{name}` {what} in workspace `{workspace}`. Pipelines: {', '.join(sorted(nodes)) or 'none'}"
            )
        key = matches[0]
    run_id = ctx.start_run(workspace, key, full_refresh=bool(body and body.full_refresh))
    url = f"/api/v1/runs/{run_id}"
    response.headers["Location"] = url
    return RunAccepted(run_id=run_id, workspace=workspace, node=key, url=url)
