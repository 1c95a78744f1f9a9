"""``rat serve`` end to end: a real server process, Dagster's real daemon and code server.

A file dropped into the landing zone is ingested by its sensor, a model failing on its schedule
alerts once, a source added while the server runs is picked up, and SIGTERM leaves no process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from helpers import write_project
from orchestration.conftest import RAT, Proc, Receiver, Served, process_tree, rat_serve, serve_env, wait_for
from ratatouille.cli.main import cli
from runs.conftest import write_files

pytestmark = pytest.mark.slow

DROPS = {
    "sources/drops.yaml": """
        name: drops
        type: files
        path: landing/drops/*.csv
        format: csv
        columns: {id: bigint, amount: double}
    """,
}


def token(root: Path) -> str:
    """An admin token, made the way a user would: ``rat tokens create ... --json``."""
    result = CliRunner().invoke(
        cli, ["tokens", "create", "--user", "admin", "--role", "admin", "--json", "--project", str(root)]
    )
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["token"])


def api(served: Served, root: Path) -> httpx.Client:
    return httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {token(root)}"}, timeout=60)


def finished_run(client: httpx.Client, trigger: str, selection: str) -> dict[str, Any] | None:
    """The latest run with this trigger and selection once it has finished."""
    runs = client.get("/api/v1/runs", params={"limit": 100}).json()["runs"]
    return next(
        (r for r in runs if (r["trigger"], r["selection"]) == (trigger, selection) and r["status"] != "running"),
        None,
    )


def query(root: Path, sql: str) -> list[dict[str, Any]]:
    """``rat query SQL --format json``, as a separate process (the server keeps running)."""
    result = subprocess.run(
        [RAT, "query", sql, "--format", "json", "--project", str(root)],
        capture_output=True,
        text=True,
        env=serve_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def dagster_log(root: Path) -> str:
    logs = root / ".rat" / "dagster" / "ratatouille-logs"
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.glob("*.log")))


def assert_all_gone(tree: list[Proc], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while any(p.running() for p in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p.cmdline for p in tree if p.running()] == [], "processes left after rat serve stopped"


def roles(tree: list[Proc]) -> set[str]:
    """Which of Dagster's processes a process tree holds."""
    found = set()
    for p in tree:
        if "dagster._daemon run" in p.cmdline:
            found.add("daemon")
        elif "dagster code-server start" in p.cmdline:
            found.add("code server")
        elif "dagster api grpc" in p.cmdline:
            found.add("code location")
        elif "dagster_webserver" in p.cmdline:
            found.add("web UI")
    return found


def test_a_dropped_file_is_ingested_by_its_sensor_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    root = write_project(tmp_path / "shop")
    write_files(root, DROPS)
    landing = root / "data" / "landing" / "drops"
    landing.mkdir(parents=True)
    with rat_serve(root, "--sensor-interval", "5", log=tmp_path / "serve.log") as served:
        served.wait_healthy()
        (landing / "2026-01-01.csv").write_text("id,amount\n1,10.5\n2,20\n")
        with api(served, root) as client:
            run = wait_for(
                lambda: finished_run(client, "sensor", "bronze.drops"),
                150,
                lambda: f"no sensor run\n{served.output()}\n{dagster_log(root)}",
            )
            detail = client.get(f"/api/v1/runs/{run['id']}").json()
        assert run["status"] == "success", detail
        (node,) = detail["nodes"]
        assert (node["node"], node["status"], node["rows_written"]) == ("bronze.drops", "success", 2)
        assert "started by Dagster run" in detail["logs"][0]["message"]
        assert "sensor default__drops_files" in detail["logs"][0]["message"]
        rows = query(root, "SELECT id, amount, _source_file FROM bronze.drops ORDER BY id")
        assert [(r["id"], r["amount"]) for r in rows] == [(1, 10.5), (2, 20.0)]
        assert rows[0]["_source_file"].endswith("drops/2026-01-01.csv")
        tree = process_tree(served.pid)
        assert roles(tree) == {"daemon", "code server", "code location"}, [p.cmdline for p in tree]
        code = served.stop(signal.SIGTERM)
    assert code == -signal.SIGTERM, served.output()
    assert_all_gone(tree)
    assert "Application shutdown complete" in served.output()
    assert "Traceback" not in served.output()


def test_a_model_failing_on_its_schedule_sends_one_alert_to_each_webhook(tmp_path: Path, receiver: Receiver) -> None:
    root = write_project(
        tmp_path / "shop",
        f"""
        alerts:
          webhooks:
            - {{url: "{receiver.url}/json", kind: json}}
            - {{url: "{receiver.url}/slack", kind: slack}}
        """,
    )
    write_files(
        root,
        {
            "pipelines/silver/visits.sql": "SELECT range % 2 AS id FROM range(4)\n",
            "pipelines/silver/visits.yaml": """
                schedule: "* * * * *"
                columns:
                  - name: id
                    tests: [unique]
            """,
        },
    )
    with rat_serve(root, log=tmp_path / "serve.log") as served:
        served.wait_healthy()
        wait_for(  # the first tick is at the start of the next minute
            lambda: receiver.bodies("/json") and receiver.bodies("/slack"),
            150,
            lambda: f"no alert\n{served.output()}\n{dagster_log(root)}",
        )
        time.sleep(2)  # a second alert for the same failure would have come with the first
        with api(served, root) as client:
            runs = client.get("/api/v1/runs").json()["runs"]
        assert served.stop() == -signal.SIGTERM
    scheduled = [r for r in runs if r["trigger"] == "schedule"]
    assert [(r["selection"], r["status"]) for r in scheduled] == [("silver.visits", "failed")]
    run_id = scheduled[0]["id"]
    assert len(receiver.requests) == 2, receiver.requests
    (body,) = receiver.bodies("/json")
    assert {k: body[k] for k in ("event", "level", "project", "workspace", "run_id", "node", "trigger")} == {
        "event": "test_failed",
        "level": "error",
        "project": "test",
        "workspace": "default",
        "run_id": run_id,
        "node": "silver.visits",
        "trigger": "schedule",
    }
    assert body["status"] == "failed"
    assert body["logs"] == f"rat logs {run_id}"
    (test,) = body["tests"]
    assert (test["node"], test["name"], test["severity"], test["status"]) == (
        "silver.visits",
        "unique(id)",
        "error",
        "fail",
    )
    (slack,) = receiver.bodies("/slack")
    assert slack["text"].startswith(":red_circle: Tests failed in test/default: run " + run_id)
    assert "unique(id)" in slack["text"]
    context = next(b for b in slack["blocks"] if b["type"] == "context")["elements"][0]["text"]
    assert "*trigger* schedule" in context and f"`rat logs {run_id}`" in context


def test_a_source_added_while_rat_serve_runs_is_picked_up(tmp_path: Path) -> None:
    root = write_project(tmp_path / "shop")
    write_files(root, DROPS)
    (root / "data" / "landing" / "drops").mkdir(parents=True)
    with rat_serve(root, "--sensor-interval", "5", log=tmp_path / "serve.log") as served:
        served.wait_healthy()
        # The code location is loaded once the daemon runs (it starts after the code server).
        wait_for(lambda: "daemon" in roles(process_tree(served.pid)), 120, lambda: served.output())
        (location,) = [p for p in process_tree(served.pid) if "dagster api grpc" in p.cmdline]
        write_files(
            root,
            {
                "sources/returns.yaml": """
                    name: returns
                    type: files
                    path: landing/returns/*.csv
                    format: csv
                """
            },
        )
        (root / "data" / "landing" / "returns").mkdir(parents=True)
        (root / "data" / "landing" / "returns" / "r.csv").write_text("id,reason\n7,damaged\n")
        with api(served, root) as client:
            # The code server reloads within seconds; the daemon reads it within a minute.
            run = wait_for(
                lambda: finished_run(client, "sensor", "bronze.returns"),
                180,
                lambda: f"the new source's sensor never ran\n{served.output()}\n{dagster_log(root)}",
            )
        assert run["status"] == "success"
        assert "project files changed" in served.output()
        # Loaded again by a new process; the old one ends once its calls are done.
        wait_for(lambda: not location.running(), 90, "the code location loaded first is still running")
        assert query(root, "SELECT id, reason FROM bronze.returns") == [{"id": 7, "reason": "damaged"}]
