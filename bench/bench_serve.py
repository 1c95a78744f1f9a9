"""Orchestration costs: importing the code location, building it for the POS example, the daemon.

- ``import``: a fresh interpreter importing ``ratatouille.orchestration.definitions`` (Dagster
  included), against importing ``dagster`` alone;
- ``build``: ``build_definitions`` of the POS example (``create_project(rows=2000)``), against
  ``Workspace.graph()`` of the same project (what reading the pipelines costs anyway);
- ``daemon``: ``start_daemon`` (+ ``start_webserver``) until the web UI answers and the daemon's
  code server is up, then the resident memory of every process they started, idle.

Run with ``bench/run.py --only serve``, or alone: ``.venv/bin/python bench/bench_serve.py``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import Result, result, run_child  # noqa: E402 - needs BENCH_DIR on sys.path first

NAME = "serve"
BENCHMARKS = ("orchestration",)

IMPORT_CHILD = """
import time
from benchlib import report
started, cpu = time.perf_counter(), time.process_time()
import {module}
report({{"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}})
"""

BUILD_CHILD = """
import sys, time
from benchlib import report
from ratatouille.orchestration.definitions import build_definitions
from ratatouille.workspace import Workspace
root = sys.argv[1]
ws = Workspace.open(root)
ws.graph()  # warm: DuckDB and the connector modules are imported once
started = time.perf_counter()
ws.graph()
graph = time.perf_counter() - started
ws.close()
started = time.perf_counter()
defs = build_definitions(root)
build = time.perf_counter() - started
repo = defs.get_repository_def()
report({"build": build, "graph": graph, "assets": len(repo.asset_graph.get_all_asset_keys()),
        "checks": len(repo.asset_graph.asset_check_keys), "schedules": len(repo.schedule_defs),
        "sensors": len(repo.sensor_defs)})
"""


def _child(code: str, *argv: str) -> dict[str, float]:
    return run_child([sys.executable, "-c", code, *argv], cwd=BENCH_DIR)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


def _daemon(root: Path, home: Path, idle_s: float) -> dict[str, float]:
    from ratatouille.orchestration.daemon import descendants, start_daemon, start_webserver, stop

    port = _free_port()
    started = time.perf_counter()
    processes = [start_daemon(root, home), start_webserver(root, home, port=port)]
    try:
        ui = None
        while time.perf_counter() - started < 120 and ui is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    ui = time.perf_counter() - started
            except OSError:
                time.sleep(0.2)
        while time.perf_counter() - started < 120 and not descendants(processes[0].pid):
            time.sleep(0.2)
        code_server = time.perf_counter() - started
        time.sleep(max(0.0, idle_s - (time.perf_counter() - started)))
        daemon_tree = [processes[0].pid, *descendants(processes[0].pid)]
        web_tree = [processes[1].pid, *descendants(processes[1].pid)]
        return {
            "ui_seconds": ui or float("nan"),
            "code_server_seconds": code_server,
            "daemon_mb": sum(_rss_mb(p) for p in daemon_tree),
            "webserver_mb": sum(_rss_mb(p) for p in web_tree),
            "processes": len(daemon_tree) + len(web_tree),
        }
    finally:
        stop(processes)


def run(args: argparse.Namespace) -> list[Result]:
    """Import time, build time for the POS example, daemon start-up and idle memory."""
    from ratatouille.scaffold import create_project

    repeats = max(3, min(getattr(args, "repeats", 5), 10))
    results: list[Result] = []
    ours = [_child(IMPORT_CHILD.format(module="ratatouille.orchestration.definitions")) for _ in range(repeats)]
    dagster = [_child(IMPORT_CHILD.format(module="dagster")) for _ in range(repeats)]
    for measure, unit in (("seconds", "s"), ("cpu", "s CPU")):
        results.append(
            result(
                "orchestration",
                "import definitions module",
                statistics.median(r[measure] for r in ours),
                unit,
                reference=statistics.median(r[measure] for r in dagster),
                reference_label="import dagster alone",
            )
        )
    with tempfile.TemporaryDirectory(prefix="rat-bench-serve-") as tmp:
        root = Path(tmp) / "pos"
        create_project(root, rows=2000)
        builds = [_child(BUILD_CHILD, str(root)) for _ in range(repeats)]
        build = statistics.median(b["build"] for b in builds)
        graph = statistics.median(b["graph"] for b in builds)
        details = {k: builds[0][k] for k in ("assets", "checks", "schedules", "sensors")}
        results.append(
            result(
                "orchestration",
                "build_definitions (POS example)",
                build,
                "s",
                reference=graph,
                reference_label="Workspace.graph() of the same project",
                target="< 2 s",
                ok=build < 2,
                details=details,
            )
        )
        idle = _daemon(root, Path(tmp) / "dagster", idle_s=30.0 if not getattr(args, "quick", False) else 15.0)
        results.append(result("orchestration", "daemon + web UI: UI answers", idle["ui_seconds"], "s"))
        results.append(result("orchestration", "daemon: code server up", idle["code_server_seconds"], "s"))
        results.append(
            result(
                "orchestration",
                "idle RSS: daemon + its code server",
                idle["daemon_mb"],
                "MB",
                target="< 500 MB",
                ok=idle["daemon_mb"] < 500,
            )
        )
        total = idle["daemon_mb"] + idle["webserver_mb"]
        results.append(
            result(
                "orchestration",
                "idle RSS: daemon + web UI, all processes",
                total,
                "MB",
                target="< 1000 MB",
                ok=total < 1000,
                details={"processes": idle["processes"]},
            )
        )
    return results


if __name__ == "__main__":
    for row in run(argparse.Namespace(repeats=5, quick=False)):
        ratio = f"  ({row['ratio']:.2f}x {row['reference_label']})" if row["ratio"] is not None else ""
        print(f"{row['case']:45} {row['value']:10.3f} {row['unit']}{ratio}  {row['details'] or ''}")
