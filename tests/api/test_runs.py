"""Triggering pipeline runs over HTTP: roles, background runs, the run record."""

from __future__ import annotations

import time

import httpx
import pytest

from api.conftest import Api, live_server
from ratatouille.api.app import create_app

RUN_TIMEOUT = 120.0


def _wait(client: httpx.Client, run_id: str) -> dict[str, object]:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        record: dict[str, object] = client.get(f"/api/v1/runs/{run_id}").json()
        if record["status"] != "running":
            return record
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {RUN_TIMEOUT} s")


def test_viewer_cannot_trigger_a_run(api: Api) -> None:
    for name in ("viewer", "viewer_all", "other_viewer"):
        response = api.client(as_=name).post("/api/v1/pipelines/default/gold.by_customer/runs")
        assert response.status_code == 403, response.text
        assert response.json()["error"]["type"] == "PermissionDeniedError"
    message = api.client(as_="viewer").post("/api/v1/pipelines/default/gold.by_customer/runs").json()["error"]
    assert "editor" in message["message"]


def test_editor_of_another_workspace_cannot_trigger(api: Api) -> None:
    response = api.client(as_="other_editor").post("/api/v1/pipelines/default/gold.by_customer/runs")
    assert response.status_code == 403


def test_editor_triggers_a_run_that_finishes(api: Api) -> None:
    editor = api.client(as_="editor")
    response = editor.post("/api/v1/pipelines/default/by_customer/runs", json={"full_refresh": True})
    assert response.status_code == 202, response.text
    accepted = response.json()
    run_id = accepted["run_id"]
    assert accepted["node"] == "gold.by_customer" and accepted["status"] == "running"
    assert response.headers["location"] == f"/api/v1/runs/{run_id}" == accepted["url"]
    record = _wait(editor, run_id)
    assert record["status"] == "success", record
    assert record["trigger"] == "api" and record["workspace"] == "default"
    nodes = {n["node"]: n for n in record["nodes"]}  # type: ignore[attr-defined]
    assert nodes["gold.by_customer"]["status"] == "success" and nodes["gold.by_customer"]["rows_written"] == 5
    assert any(t["test"] == "five_customers" for t in record["tests"])  # type: ignore[attr-defined]
    listed = [r["id"] for r in editor.get("/api/v1/runs").json()["runs"]]
    assert run_id in listed
    metrics = api.client(as_="admin").get("/metrics").text
    assert 'rat_runs_started_total{workspace="default"}' in metrics


def test_admin_triggers_with_a_body_less_request(api: Api) -> None:
    admin = api.client(as_="admin")
    response = admin.post("/api/v1/pipelines/default/silver.orders/runs")
    assert response.status_code == 202
    assert _wait(admin, response.json()["run_id"])["status"] == "success"


def test_unknown_pipeline_is_404_with_suggestions(api: Api) -> None:
    editor = api.client(as_="editor")
    response = editor.post("/api/v1/pipelines/default/gold.by_custmer/runs")
    assert response.status_code == 404
    assert "gold.by_customer" in response.json()["error"]["message"]
    response = editor.post("/api/v1/pipelines/default/orders/runs")  # bronze.orders and silver.orders
    assert response.status_code == 404
    assert "ambiguous" in response.json()["error"]["message"]
    response = api.client(as_="admin").post("/api/v1/pipelines/nowhere/x/runs")
    assert response.status_code == 404
    response = editor.post("/api/v1/pipelines/default/gold.by_customer/runs", json={"unknown": 1})
    assert response.status_code == 422


def test_a_run_that_does_not_start_in_time_is_a_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAT_SERVER__RUN_START_TIMEOUT_SECONDS", "0.001")
    app = create_app(api.root)
    assert app.state.ctx.settings.run_start_timeout_seconds == 0.001
    with live_server(app) as url, httpx.Client(base_url=url, headers=api.client(as_="editor").headers) as editor:
        response = editor.post("/api/v1/pipelines/default/gold.by_customer/runs")
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["type"] == "UnavailableError"
        assert error["message"].startswith("the run of `gold.by_customer` did not start within 0.001 s")
        deadline = time.monotonic() + RUN_TIMEOUT
        while app.state.ctx.running():  # the run goes on in the background: let it finish
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.1)
    latest = api.client(as_="editor").get("/api/v1/runs", params={"limit": 1}).json()["runs"][0]
    assert (latest["trigger"], latest["status"]) == ("api", "success")
