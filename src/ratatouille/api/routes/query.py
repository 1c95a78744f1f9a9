"""``POST /api/v1/query``: read-only SQL in the sandbox, streamed in the format asked for."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request  # noqa: TID251 - the API package is where FastAPI lives
from fastapi.responses import StreamingResponse  # noqa: TID251 - the API package is where FastAPI lives
from starlette.concurrency import run_in_threadpool

from ratatouille.api.context import ApiContext, context
from ratatouille.api.errors import responses
from ratatouille.api.formats import MEDIA_TYPES, Encoder, media_type, negotiate
from ratatouille.api.models import QueryFormat, QueryRequest, QueryResult
from ratatouille.api.security import Caller
from ratatouille.errors import QueryError
from ratatouille.sandbox import SandboxQuery
from ratatouille.state.auth import Role

router = APIRouter(prefix="/api/v1", tags=["query"])
log = logging.getLogger("ratatouille.api")

_BINARY = {"type": "string", "format": "binary"}
_CONTENT: dict[str, Any] = {
    MEDIA_TYPES["json"]: {"schema": QueryResult.model_json_schema(ref_template="#/components/schemas/{model}")},
    MEDIA_TYPES["ndjson"]: {"schema": {"type": "string", "description": "one JSON object per row and line"}},
    MEDIA_TYPES["csv"]: {"schema": {"type": "string", "description": "CSV with a header line"}},
    MEDIA_TYPES["parquet"]: {"schema": _BINARY},
    MEDIA_TYPES["arrow"]: {"schema": {**_BINARY, "description": "Arrow IPC stream"}},
}


@router.post(
    "/query",
    summary="Run read-only SQL over the lakehouse",
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {"description": "The result, streamed", "content": _CONTENT},
        **responses(400, 401, 403, 404, 406, 422),
    },
)
def run_query(
    request: Request,
    body: QueryRequest,
    caller: Caller,
    format_: Annotated[QueryFormat | None, Query(alias="format", description="Overrides the Accept header.")] = None,
) -> StreamingResponse:
    """Run one read-only query and stream its result as JSON (default), NDJSON, CSV, Parquet or
    an Arrow IPC stream (`Accept` header or `?format=`).

    The query sees only the lakehouse tables of the workspaces the token may read: `layer.table`
    in `workspace` (default: the project's default workspace), `workspace.layer.table` for the
    others. No files, network, ATTACH, INSTALL/LOAD, COPY, SET, PRAGMA or writes. Results stop at
    the server's row limit (`truncated` in JSON tells) and queries at its statement timeout.
    """
    ctx = context(request)
    fmt = negotiate(format_, request.headers.get("accept"))
    workspace = body.workspace or ctx.project.config.default_workspace
    caller.require(Role.VIEWER, workspace)
    ws = ctx.workspace(workspace)
    limit = ctx.settings.query_row_limit
    if body.limit is not None:
        limit = min(limit, body.limit)
    try:
        query = ws.sandboxed_sql(
            body.sql,
            ctx.readable(caller),
            limit=limit,
            timeout=ctx.settings.statement_timeout_seconds,
            batch_rows=ctx.settings.query_batch_rows,
        )
    except BaseException:
        ctx.metrics.queries.labels(outcome="error").inc()
        raise
    try:
        # The first batch is read before answering, so that most errors get a proper status
        # instead of a stream cut short.
        encoder = Encoder(fmt, query.columns, query.schema)
        first = query.next_batch()
        head = encoder.start() + (encoder.batch(first) if first is not None else b"")
    except BaseException:
        query.close()
        ctx.metrics.queries.labels(outcome="error").inc()
        raise
    headers = {"X-Rat-Row-Limit": str(limit)}
    return StreamingResponse(
        _stream(ctx, query, encoder, head, done=first is None), media_type=media_type(fmt), headers=headers
    )


async def _stream(
    ctx: ApiContext, query: SandboxQuery, encoder: Encoder, head: bytes, done: bool
) -> AsyncIterator[bytes]:
    def step() -> bytes | None:
        batch = query.next_batch()
        return encoder.batch(batch) if batch is not None else None

    outcome = "aborted"
    try:
        yield head
        while not done:
            chunk = await run_in_threadpool(step)
            if chunk is None:
                break
            if chunk:
                yield chunk
        yield await run_in_threadpool(encoder.finish, query.rows, query.truncated)
        outcome = "ok"
    except QueryError as exc:
        # Too late for an error status: the response is cut short, which clients see as an
        # incomplete body (no final chunk).
        outcome = "error"
        log.warning("query failed while streaming its result: %s", exc)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(query.close)
        ctx.metrics.query_rows.inc(query.rows)
        ctx.metrics.queries.labels(outcome=outcome).inc()
