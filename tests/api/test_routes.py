"""Every route over real HTTP: health, tables, pipelines, runs, users, metrics, docs; auth and errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from api.conftest import Api
from ratatouille.workspace import Workspace

PROTECTED = [
    ("GET", "/api/v1/tables", None),
    ("GET", "/api/v1/tables/default/silver/orders", None),
    ("GET", "/api/v1/pipelines", None),
    ("POST", "/api/v1/pipelines/default/gold.by_customer/runs", {}),
    ("GET", "/api/v1/runs", None),
    ("GET", "/api/v1/runs/some-id", None),
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/query", {"sql": "SELECT 1"}),
    ("GET", "/metrics", None),
    ("GET", "/api/v1/openapi.json", None),
    ("GET", "/api/v1/docs", None),
]


def _error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    error: dict[str, str] = body["error"]
    return error


# -- auth ---------------------------------------------------------------------------------


def test_health_needs_no_token(api: Api) -> None:
    response = api.client().get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_every_other_route_needs_a_token(api: Api, method: str, path: str, body: dict[str, str] | None) -> None:
    anonymous = api.client()
    response = anonymous.request(method, path, json=body)
    error = _error(response, 401)
    assert error["type"] == "AuthenticationError"
    assert "Bearer" in error["message"]
    assert response.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer nonsense", "Basic YWRtaW46YWRtaW4=", "Token abc", "Bearer"):
        response = anonymous.request(method, path, json=body, headers={"Authorization": header})
        assert _error(response, 401)["type"] == "AuthenticationError"


def test_expired_token_is_refused(api: Api) -> None:
    token = api.make_token("viewer", expires_at=datetime.now(UTC) + timedelta(seconds=1))
    assert api.client(token).get("/api/v1/tables").status_code == 200
    past = datetime.now(UTC) - timedelta(seconds=1)
    auth = api.app.state.ctx.auth
    with auth.engine.begin() as conn:
        conn.execute(update(auth.t.tokens).where(auth.t.tokens.c.id == api.token_id(token)).values(expires_at=past))
    error = _error(api.client(token).get("/api/v1/tables"), 401)
    assert "expired" in error["message"]


def test_token_made_already_expired_is_refused(api: Api) -> None:
    token = api.make_token("admin", expires_at=datetime.now(UTC) - timedelta(days=1))
    assert "expired" in _error(api.client(token).get("/api/v1/tables"), 401)["message"]


def test_revoked_token_stops_working_at_once(api: Api) -> None:
    token = api.make_token("admin")
    client = api.client(token)
    assert client.get("/api/v1/runs").status_code == 200
    api.app.state.ctx.auth.revoke_token(api.token_id(token))
    assert "revoked" in _error(client.get("/api/v1/runs"), 401)["message"]


def test_last_used_is_recorded(api: Api) -> None:
    token = api.make_token("viewer")
    auth = api.app.state.ctx.auth
    token_id = next(t.id for t in auth.tokens() if t.user == "user-viewer" and t.last_used_at is None)
    api.client(token).get("/api/v1/tables")
    used = {t.id: t for t in auth.tokens()}
    assert used[token_id].last_used_at is not None


# -- roles and workspaces -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tables"),
    [
        ("admin", {"default.bronze.orders", "default.silver.orders", "default.gold.by_customer", "other.silver.x"}),
        (
            "viewer_all",
            {"default.bronze.orders", "default.silver.orders", "default.gold.by_customer", "other.silver.x"},
        ),
        ("viewer", {"default.bronze.orders", "default.silver.orders", "default.gold.by_customer"}),
        ("editor", {"default.bronze.orders", "default.silver.orders", "default.gold.by_customer"}),
        ("default_admin", {"default.bronze.orders", "default.silver.orders", "default.gold.by_customer"}),
        ("other_viewer", {"other.silver.x"}),
    ],
)
def test_tables_lists_only_what_the_token_may_read(api: Api, name: str, tables: set[str]) -> None:
    response = api.client(as_=name).get("/api/v1/tables")
    assert response.status_code == 200
    assert {t["qualified"] for t in response.json()["tables"]} == tables


def test_cross_workspace_reads_are_forbidden(api: Api) -> None:
    viewer = api.client(as_="viewer")
    assert "other" in _error(viewer.get("/api/v1/tables/other/silver/x"), 403)["message"]
    assert _error(viewer.get("/api/v1/tables", params={"workspace": "other"}), 403)
    assert _error(viewer.get("/api/v1/pipelines", params={"workspace": "other"}), 403)
    assert _error(viewer.get("/api/v1/runs", params={"workspace": "other"}), 403)
    other = api.client(as_="other_viewer")
    assert _error(other.get("/api/v1/tables/default/silver/orders"), 403)
    assert other.get("/api/v1/tables/other/silver/x").status_code == 200


def test_users_route_is_for_admins_of_every_workspace(api: Api) -> None:
    for name in ("viewer", "editor", "viewer_all", "default_admin"):
        assert _error(api.client(as_=name).get("/api/v1/users"), 403)["type"] == "PermissionDeniedError"
    body = api.client(as_="admin").get("/api/v1/users").json()
    assert {"admin", "viewer", "editor"} <= {u["name"] for u in body["users"]}
    assert body["tokens"] and all("token" not in t and "token_hash" not in t for t in body["tokens"])
    assert api.tokens["admin"] not in str(body)


# -- tables -------------------------------------------------------------------------------


def test_table_detail_has_schema_snapshots_and_preview(client: httpx.Client) -> None:
    response = client.get("/api/v1/tables/default/silver/orders")
    assert response.status_code == 200
    body = response.json()
    assert body["qualified"] == "default.silver.orders"
    assert [c["name"] for c in body["columns"]] == ["order_key", "id", "customer", "amount", "ts"]
    assert body["rows"] == 100 and body["snapshot_id"] and body["partitioning"] == []
    assert body["snapshots"] and body["snapshots"][0]["current"]
    assert len(body["preview"]["rows"]) == 100
    assert body["preview"]["columns"][0] == {"name": "order_key", "type": "BIGINT"}
    row = body["preview"]["rows"][0]
    assert isinstance(row["amount"], str) and row["ts"].startswith("2026-01-01")


def test_preview_filters_and_pages(client: httpx.Client) -> None:
    path = "/api/v1/tables/default/silver/orders"
    filtered = client.get(path, params={"customer": "3", "limit": "5"}).json()["preview"]
    assert filtered["filters"] == {"customer": ["3"]} and filtered["limit"] == 5
    assert [r["customer"] for r in filtered["rows"]] == [3] * 5
    everything = client.get(path, params=[("customer", "3"), ("customer", "4"), ("limit", "1000")]).json()
    assert len(everything["preview"]["rows"]) == 40
    page1 = client.get(path, params={"customer": "3", "limit": 10, "offset": 0}).json()["preview"]["rows"]
    page2 = client.get(path, params={"customer": "3", "limit": 10, "offset": 10}).json()["preview"]["rows"]
    assert len(page1) == len(page2) == 10
    assert not {r["id"] for r in page1} & {r["id"] for r in page2}
    none = client.get(path, params={"customer": "99"}).json()["preview"]["rows"]
    assert none == []


def test_preview_rejects_unknown_columns_and_bad_values(client: httpx.Client) -> None:
    error = _error(client.get("/api/v1/tables/default/silver/orders", params={"nope": "1"}), 400)
    assert "nope" in error["message"] and "customer" in error["message"]
    error = _error(client.get("/api/v1/tables/default/silver/orders", params={"customer": "x"}), 400)
    assert error["type"] == "QueryError"
    assert _error(client.get("/api/v1/tables/default/silver/orders", params={"limit": -1}), 422)


def test_table_detail_unknown_table_and_workspace(api: Api, client: httpx.Client) -> None:
    error = _error(client.get("/api/v1/tables/default/silver/ordrs"), 404)
    assert error["type"] == "TableNotFoundError" and "silver.orders" in error["message"]
    # a restricted token never learns the other workspace's table names
    error = _error(api.client(as_="viewer").get("/api/v1/tables/default/silver/nope"), 404)
    assert "other" not in error["message"]
    assert _error(client.get("/api/v1/tables/nowhere/silver/x"), 404)["type"] == "NotFoundError"


# -- pipelines and runs -------------------------------------------------------------------


def test_pipelines_lists_models_of_readable_workspaces(api: Api) -> None:
    body = api.client(as_="viewer").get("/api/v1/pipelines").json()
    assert body["errors"] == []
    nodes = {n["key"]: n for n in body["pipelines"]}
    assert list(nodes) == ["bronze.orders", "silver.orders", "gold.by_customer"]
    assert nodes["silver.orders"]["materialized"] == "incremental"
    assert nodes["silver.orders"]["upstream"] == ["bronze.orders"]
    assert nodes["silver.orders"]["tags"] == ["core"] and nodes["silver.orders"]["kind"] == "sql"
    everything = api.client(as_="admin").get("/api/v1/pipelines").json()["pipelines"]
    assert {n["workspace"] for n in everything} == {"default", "other"}
    [source] = [n for n in everything if n["workspace"] == "other"]
    assert source["key"] == "bronze.events" and source["kind"] == "source" and source["materialized"] is None
    assert source["description"] == "Event files." and source["owner"] == "ops"
    only_other = api.client(as_="other_viewer").get("/api/v1/pipelines").json()["pipelines"]
    assert [n["key"] for n in only_other] == ["bronze.events"]


def test_pipelines_reports_a_broken_workspace(api: Api) -> None:
    broken = api.root / "workspaces" / "other" / "pipelines" / "silver" / "bad.sql"
    broken.parent.mkdir(parents=True)
    broken.write_text("SELECT * FROM {{ ref('silver.nothing') }}\n")
    try:
        body = api.client(as_="admin").get("/api/v1/pipelines").json()
        assert [e["workspace"] for e in body["errors"]] == ["other"]
        assert "silver.nothing" in body["errors"][0]["message"]
        assert {n["workspace"] for n in body["pipelines"]} == {"default"}  # `other` cannot be loaded
        response = api.client(as_="other_editor").post("/api/v1/pipelines/other/silver.bad/runs")
        assert _error(response, 422)["type"] == "ConfigError"
    finally:
        broken.unlink()


def test_runs_list_and_detail(api: Api, client: httpx.Client) -> None:
    runs = client.get("/api/v1/runs").json()["runs"]
    assert runs and runs[0]["workspace"] == "default" and runs[0]["status"] == "success"
    detail = client.get(f"/api/v1/runs/{runs[-1]['id']}").json()
    assert {n["node"] for n in detail["nodes"]} >= {"bronze.orders", "silver.orders", "gold.by_customer"}
    assert any(t["test"] == "five_customers" and t["status"] == "pass" for t in detail["tests"])
    assert isinstance(detail["logs"], list)
    assert _error(client.get("/api/v1/runs/20990101T000000-deadbeef"), 404)["type"] == "NotFoundError"
    assert _error(client.get(f"/api/v1/runs/{runs[-1]['id'][:8]}"), 404)  # the API wants the whole id
    assert _error(api.client(as_="other_viewer").get(f"/api/v1/runs/{runs[-1]['id']}"), 403)
    assert api.client(as_="other_viewer").get("/api/v1/runs").json()["runs"] == []
    limited = client.get("/api/v1/runs", params={"limit": 1}).json()["runs"]
    assert len(limited) == 1


# -- errors -------------------------------------------------------------------------------


def test_unknown_routes_and_methods_answer_in_the_error_shape(client: httpx.Client) -> None:
    assert _error(client.get("/api/v1/nothing"), 404)["type"] == "NotFound"
    response = client.delete("/api/v1/tables")
    assert _error(response, 405)["type"] == "MethodNotAllowed"
    assert "GET" in response.headers["allow"]
    assert _error(client.post("/api/v1/query", json={"nope": 1}), 422)["type"] == "ValidationError"
    assert _error(client.post("/api/v1/query", content=b"{not json", headers={"content-type": "application/json"}), 422)


def test_unexpected_errors_never_show_a_traceback(
    api: Api, client: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(self: Workspace, limit: int = 20) -> list[object]:
        raise RuntimeError("secret detail: password=hunter2 at /srv/internal/path.py")

    monkeypatch.setattr(Workspace, "runs", boom)
    response = client.get("/api/v1/runs")
    error = _error(response, 500)
    assert error["type"] == "InternalError" and "incident" in error["message"]
    for leak in ("secret", "hunter2", "Traceback", "RuntimeError", "/srv/internal"):
        assert leak not in response.text
    incident = error["message"].split("incident ")[1].split(")")[0]
    assert any(incident in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.parametrize("name", ["viewer", "other_viewer", "editor", "admin"])
def test_openapi_needs_any_valid_token(api: Api, name: str) -> None:
    response = api.client(as_=name).get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    paths = set(spec["paths"])
    assert {
        "/api/v1/health",
        "/api/v1/query",
        "/api/v1/tables",
        "/api/v1/tables/{workspace}/{layer}/{name}",
        "/api/v1/pipelines",
        "/api/v1/pipelines/{workspace}/{name}/runs",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
    } <= paths
    assert not paths & {"/api/v1/openapi.json", "/api/v1/docs"}
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert "text/csv" in spec["paths"]["/api/v1/query"]["post"]["responses"]["200"]["content"]


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_docs_page_asks_a_browser_for_a_token(api: Api) -> None:
    for client in (api.client(), api.client("rat_not-a-token")):
        response = client.get("/api/v1/docs", headers=BROWSER)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"].startswith("text/html")
        assert 'id="rat-token"' in response.text and "rat tokens create" in response.text
        assert "/api/v1/query" not in response.text  # nothing of the API without a token
    response = api.client(as_="other_viewer").get("/api/v1/docs", headers=BROWSER)
    assert response.status_code == 200
    assert 'data-spec="/api/v1/openapi.json"' in response.text
    assert response.headers["cache-control"] == "no-store"


def test_docs_page_loads_nothing_from_other_hosts(api: Api) -> None:
    client = api.client(as_="viewer")
    page = client.get("/api/v1/docs", headers=BROWSER)
    assert page.status_code == 200
    assert re.search(r"(?i)(https?:)?//[a-z0-9]", page.text.replace("<!doctype html>", "")) is None, page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page.text, re.S)
    assert len(scripts) == 2 and not any(body.strip() for body in scripts)  # no inline script: the policy forbids it
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/api/v1/docs/static/swagger-ui-bundle.js" in assets and "/api/v1/docs/static/rat-docs.js" in assets
    anonymous = api.client()
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert asset.startswith("/api/v1/docs/static/"), asset
        response = anonymous.get(asset)  # a public library: a <script> tag cannot send a token
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset
    script = anonymous.get("/api/v1/docs/static/rat-docs.js").text
    assert "http" not in script and "validatorUrl: null" in script
    # Swagger UI 5 renders OpenAPI 3.1, the version FastAPI writes.
    assert client.get("/api/v1/openapi.json").json()["openapi"].startswith("3.1")
    bundle = anonymous.get("/api/v1/docs/static/swagger-ui-bundle.js").text
    assert re.search(r'"5\.\d+\.\d+"', bundle)
    assert _error(anonymous.get("/api/v1/docs/static/nope.js"), 404)["type"] == "NotFound"


def test_metrics_count_requests_rows_and_runs(api: Api, client: httpx.Client) -> None:
    client.post("/api/v1/query", json={"sql": "SELECT * FROM range(7)"})
    client.get("/api/v1/tables/default/silver/nope")
    text = client.get("/metrics").text
    assert 'rat_http_requests_total{method="POST",route="/api/v1/query",status="200"}' in text
    assert 'route="/api/v1/tables/{workspace}/{layer}/{name}",status="404"' in text
    assert "rat_http_request_duration_seconds_bucket" in text
    rows = next(line for line in text.splitlines() if line.startswith("rat_query_rows_total"))
    assert float(rows.split()[-1]) >= 7
    assert "rat_runs_started_total" in text or "# TYPE rat_runs_started_total counter" in text


def test_unknown_query_parameters_are_refused(client: httpx.Client) -> None:
    error = _error(client.get("/api/v1/runs", params={"workspce": "default"}), 422)
    assert "workspce" in error["message"] and "workspace" in error["message"]
    assert _error(client.post("/api/v1/query", params={"fromat": "csv"}, json={"sql": "SELECT 1"}), 422)
    assert client.get("/api/v1/runs", params={"workspace": "default", "limit": 2}).status_code == 200
