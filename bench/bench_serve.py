"""``rat serve`` costs: start-up, idle memory of every process, and what building the code location takes.

All on the POS example as ``rat demo DIR --rows 20000`` leaves it (sources, models, tests,
freshness SLAs, tables already built):

- ``import``: a fresh interpreter importing ``ratatouille.orchestration.definitions`` (Dagster
  included), against importing ``dagster`` alone;
- ``build``: ``build_definitions`` of the project, against ``Workspace.graph()`` of the same
  project (what reading the pipelines costs anyway);
- ``serve``: ``rat serve --port P`` (and again with ``--dagster-ui Q``) started as a user would:
  seconds until ``GET /api/v1/health`` answers (target < 15 s), until the scheduler runs (the
  daemon starts once the code server has loaded the project) and, with the UI, until Dagster's UI
  answers; then, idle, the resident memory of every process in the tree, summed (target
  < 1000 MB): sampled every 5 s from ``IDLE_S`` after the start for ``WINDOW_S``, leaving out
  samples taken while a run worker ran, the highest sum reported, with each process's RSS and PSS
  (proportional: shared pages split between the processes that share them, so the PSS sum does
  not count the Python binary and shared libraries several times) in ``details``; last, seconds
  from SIGTERM until every process is gone. Each start is from a fresh Dagster instance, so that
  every sensor's first tick (the freshness sensor's loads PyIceberg into the code location: its
  biggest memory step) falls inside the window, as it does every five minutes on a running server.
- reference for the memory with the UI: Dagster's own arrangement, the daemon and the web UI each
  loading the code location in a code server of its own (``start_daemon`` and ``start_webserver``
  without a socket), what ``rat serve`` ran before it shared one code server.

Run with ``bench/run.py --only serve`` (or ``--only orchestration``), or alone:
``.venv/bin/python bench/bench_serve.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import Result, clean_env, result, run_child  # noqa: E402 - needs BENCH_DIR on sys.path first

NAME = "serve"
BENCHMARKS = ("orchestration",)
RAT = str(Path(sys.executable).parent / "rat")
DEMO_ROWS = 20_000
IDLE_S = 45.0  # after the start: the first sensor ticks and the runs they asked for are over
WINDOW_S = 30.0  # then memory is sampled every 5 s for this long
HEALTHY_TARGET_S = 15.0
IDLE_TARGET_MB = 1000.0

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


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process in MB; zeros once it is gone."""
    rss = pss = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024 / 1e6
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return rss, pss


def _role(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    text = " ".join(argv)
    for marker, role in (
        ("dagster._daemon run", "daemon"),
        ("dagster code-server start", "code server (proxy)"),
        ("dagster api grpc", "code location"),
        ("dagster_webserver", "web UI"),
        ("dagster api execute_run", "run worker"),
        (" serve ", "rat serve (API)"),
        ("resource_tracker", "multiprocessing tracker"),
    ):
        if marker in text:
            return role
    return text[:60]


def _tree(pid: int) -> list[int]:
    from ratatouille.orchestration.daemon import descendants

    return [pid, *descendants(pid)]


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _wait(condition: Any, started: float, timeout: float = 180) -> float:
    while not condition():
        if time.perf_counter() - started > timeout:
            return float("nan")
        time.sleep(0.05)
    return time.perf_counter() - started


def _idle_memory(pids: list[int]) -> dict[str, Any]:
    per_process = []
    for pid in pids:
        rss, pss = _memory_mb(pid)
        if rss:
            per_process.append({"pid": pid, "role": _role(pid), "rss_mb": round(rss, 1), "pss_mb": round(pss, 1)})
    return {
        "rss_mb": sum(p["rss_mb"] for p in per_process),
        "pss_mb": sum(p["pss_mb"] for p in per_process),
        "processes": per_process,
    }


def _idle_peak(roots: list[int], window_s: float) -> dict[str, Any]:
    """The highest memory sum of the trees under ``roots`` over ``window_s``, sampled every 5 s,
    leaving out samples taken while a run worker ran (that is a run's cost, not the idle one)."""
    samples: list[dict[str, Any]] = []
    end = time.monotonic() + window_s
    while True:
        pids = [pid for root in roots for pid in _tree(root)]
        if not any(_role(p) == "run worker" for p in pids):
            samples.append(_idle_memory(pids))
        if (time.monotonic() >= end and samples) or time.monotonic() > end + 120:
            break
        time.sleep(5)
    return max(samples, key=lambda m: float(m["rss_mb"])) if samples else _idle_memory([])


def _serve(root: Path, log: Path, *, ui: bool, idle_s: float, window_s: float) -> dict[str, Any]:
    """Start ``rat serve`` like a user, time it to healthy, read its idle memory, stop it."""
    shutil.rmtree(root / ".rat" / "dagster", ignore_errors=True)  # a fresh Dagster instance
    port, ui_port = _free_port(), _free_port()
    argv = [RAT, "serve", "--port", str(port), "--project", str(root)]
    if ui:
        argv += ["--dagster-ui", str(ui_port)]
    started = time.perf_counter()
    with log.open("ab") as output:
        process = subprocess.Popen(
            argv, stdout=output, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True
        )
    try:
        healthy = _wait(lambda: _get(f"http://127.0.0.1:{port}/api/v1/health"), started)
        scheduler = _wait(lambda: any(_role(p) == "daemon" for p in _tree(process.pid)), started)
        ui_seconds = _wait(lambda: _get(f"http://127.0.0.1:{ui_port}/server_info"), started) if ui else None
        time.sleep(max(0.0, idle_s - (time.perf_counter() - started)))
        memory = _idle_peak([process.pid], window_s)
        pids = _tree(process.pid)
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(120)
        _wait(lambda: not any(_alive(p) for p in pids), stopping, timeout=60)
        stopped = time.perf_counter() - stopping
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return {"healthy": healthy, "scheduler": scheduler, "ui": ui_seconds, "stopped": stopped, **memory}


def _alive(pid: int) -> bool:
    from ratatouille.orchestration.daemon import alive

    return alive(pid)


def _separate_code_servers(root: Path, home: Path, idle_s: float, window_s: float) -> dict[str, Any]:
    """The reference: Dagster's daemon and web UI, each with a code server of its own."""
    from ratatouille.orchestration.daemon import start_daemon, start_webserver, stop

    port = _free_port()
    started = time.perf_counter()
    processes = [start_daemon(root, home), start_webserver(root, home, port=port)]
    try:
        _wait(lambda: _get(f"http://127.0.0.1:{port}/server_info"), started)
        time.sleep(max(0.0, idle_s - (time.perf_counter() - started)))
        return _idle_peak([p.pid for p in processes], window_s)
    finally:
        stop(processes)


def run(args: argparse.Namespace) -> list[Result]:
    """Import and build times, then ``rat serve`` start-up, idle memory and stop, without and with the UI."""
    repeats = max(3, min(getattr(args, "repeats", 5), 10))
    quick = getattr(args, "quick", False)
    idle_s, window_s = (30.0, 15.0) if quick else (IDLE_S, WINDOW_S)
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
        subprocess.run(
            [RAT, "demo", str(root), "--rows", str(DEMO_ROWS)], env=clean_env(), capture_output=True, check=True
        )
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
        reference = _separate_code_servers(root, Path(tmp) / "reference-dagster", idle_s, window_s)
        for ui in (False, True):
            label = "rat serve --dagster-ui" if ui else "rat serve"
            served = _serve(root, Path(tmp) / f"serve-{int(ui)}.log", ui=ui, idle_s=idle_s, window_s=window_s)
            results.append(
                result(
                    "orchestration",
                    f"{label}: /api/v1/health answers",
                    served["healthy"],
                    "s",
                    target=f"< {HEALTHY_TARGET_S:g} s",
                    ok=served["healthy"] < HEALTHY_TARGET_S,
                )
            )
            results.append(result("orchestration", f"{label}: scheduler running", served["scheduler"], "s"))
            if ui:
                results.append(result("orchestration", f"{label}: Dagster UI answers", served["ui"], "s"))
            results.append(
                result(
                    "orchestration",
                    f"{label}: idle RSS, all processes",
                    served["rss_mb"],
                    "MB",
                    reference=reference["rss_mb"] if ui else None,
                    reference_label="daemon and web UI with a code server each" if ui else None,
                    target=f"< {IDLE_TARGET_MB:g} MB",
                    ok=served["rss_mb"] < IDLE_TARGET_MB,
                    details={"pss_mb": served["pss_mb"], "processes": served["processes"]},
                )
            )
            results.append(result("orchestration", f"{label}: idle PSS, all processes", served["pss_mb"], "MB"))
            results.append(result("orchestration", f"{label}: SIGTERM until all gone", served["stopped"], "s"))
    return results


if __name__ == "__main__":
    for row in run(argparse.Namespace(repeats=5, quick=False)):
        ratio = f"  ({row['ratio']:.2f}x {row['reference_label']})" if row["ratio"] is not None else ""
        print(f"{row['case']:48} {row['value']:10.3f} {row['unit']}{ratio}")
        for process in row["details"].get("processes", []):
            print(f"{'':52}{process['role']:28} RSS {process['rss_mb']:7.1f} MB  PSS {process['pss_mb']:7.1f} MB")
