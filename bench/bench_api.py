"""REST API: latency and throughput of a typical gold query over HTTP, against the same query in-process.

``run(args)`` (called by ``bench/run.py``) builds a project with one POS-like table of 1M rows
(``Workspace.append``; fewer if ``--rows`` is lower), then times a gold-style group-by over it
(50 groups of count, sum, avg):

* ``in-process`` (the reference): ``Workspace.query(sql)`` in a loop, one caller;
* ``http``: ``rat serve`` in its own process on 127.0.0.1, and 1, 8 and 32 client threads, each
  with its own keep-alive ``httpx.Client``, sending ``POST /api/v1/query`` (JSON) in a loop. Every
  answer is checked (status 200, 50 rows); a single error is a missed target.

Each phase runs 20 s (10 s with ``--quick``). Rows: p50 and p99 latency (ms) and throughput
(queries/s) per concurrency, each with the in-process number as reference, and the error count.
On this kind of machine client and server share the CPUs, so 8 and 32 clients measure queueing
as much as the server.

Alone: ``.venv/bin/python bench/bench_api.py [--quick] [--seconds S]`` prints the rows as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_core import base_sql  # noqa: E402 - needs BENCH_DIR on sys.path first
from benchlib import Result, clean_env, result  # noqa: E402

NAME = "api"
BENCHMARKS = ("api",)
ROWS = 1_000_000
SECONDS = 20.0
QUICK_SECONDS = 10.0
CONCURRENCY = (1, 8, 32)
MAX_REQUESTS_PER_CLIENT = 1_000_000  # a bound on every loop, whatever the clock does
GROUPS = 50
QUERY = (
    "SELECT store_id, count(*) AS sales, sum(total_amount) AS revenue, avg(quantity) AS avg_quantity "
    "FROM silver.sales GROUP BY store_id ORDER BY store_id"
)
REFERENCE = "Workspace.query of the same SQL in-process, one caller"


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    if len(latencies) < 2:
        value = latencies[0] * 1000 if latencies else float("nan")
        return value, value
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return statistics.median(latencies) * 1000, cuts[98] * 1000


def build_project(root: Path, rows: int) -> str:
    """A project with ``silver.sales`` and an admin token; returns the token."""
    from ratatouille.workspace import Workspace

    root.mkdir(parents=True)
    (root / "ratatouille.yaml").write_text("name: bench-api\nprofile: small\n")
    ws = Workspace.open(root)
    ws.append("silver.sales", base_sql(rows))
    token, _ = ws.auth.create_token("bench", "admin")
    ws.close()
    return token


def in_process(root: Path, seconds: float) -> dict[str, Any]:
    """The reference: the same query through ``Workspace.query``."""
    from ratatouille.workspace import Workspace

    ws = Workspace.open(root)
    try:
        assert ws.query(QUERY).num_rows == GROUPS  # warm: views registered, extension loaded
        latencies: list[float] = []
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline and len(latencies) < MAX_REQUESTS_PER_CLIENT:
            t0 = time.perf_counter()
            table = ws.query(QUERY)
            latencies.append(time.perf_counter() - t0)
            assert table.num_rows == GROUPS
        elapsed = time.perf_counter() - started
    finally:
        ws.close()
    p50, p99 = _percentiles(latencies)
    return {"p50": p50, "p99": p99, "throughput": len(latencies) / elapsed, "requests": len(latencies)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``rat serve`` in its own process (its log goes to a file, not to a pipe nobody reads)."""

    def __init__(self, root: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        command = [
            sys.executable,
            "-m",
            "ratatouille.cli.main",
            "serve",
            "--project",
            str(root),
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=clean_env())

    def wait(self, timeout: float = 60.0) -> None:
        """Until ``/api/v1/health`` answers.

        Raises:
            RuntimeError: the server exited or did not answer in time.
        """
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rat serve exited with {self.process.returncode}; see {self._log.name}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"rat serve did not answer within {timeout:.0f} s; see {self._log.name}")

    def stop(self) -> None:
        """SIGTERM, then wait (kill after 30 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def over_http(url: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads sending the query for ``seconds``; latencies, throughput, errors."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    lock = threading.Lock()
    # Clients are made first (an httpx.Client costs ~0.1 s: its SSL context), then all start together.
    ready = threading.Barrier(clients + 1)
    go = threading.Barrier(clients + 1)
    deadline_box: list[float] = []

    def client(index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            ready.wait()
            go.wait()
            deadline = deadline_box[0]
            mine = latencies[index]
            while time.perf_counter() < deadline and len(mine) < MAX_REQUESTS_PER_CLIENT:
                t0 = time.perf_counter()
                try:
                    response = http.post("/api/v1/query", json={"sql": QUERY})
                    ok = response.status_code == 200 and len(response.json()["rows"]) == GROUPS
                    problem = "" if ok else f"{response.status_code}: {response.text[:200]}"
                except Exception as exc:  # counted, the loop goes on
                    problem = f"{type(exc).__name__}: {exc}"
                if problem:
                    with lock:
                        errors.append(problem)
                else:
                    mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    deadline_box.append(started + seconds)
    go.wait()
    for thread in threads:
        thread.join(seconds + 300)
    elapsed = time.perf_counter() - started
    every = [x for per in latencies for x in per]
    p50, p99 = _percentiles(every)
    return {
        "p50": p50,
        "p99": p99,
        "throughput": len(every) / elapsed,
        "requests": len(every),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def run(args: argparse.Namespace) -> list[Result]:
    """Build the project, measure in-process, then over HTTP at each concurrency."""
    import httpx

    rows = min(int(getattr(args, "rows", ROWS) or ROWS), ROWS)
    seconds = float(getattr(args, "seconds", None) or (QUICK_SECONDS if getattr(args, "quick", False) else SECONDS))
    workdir = Path(tempfile.mkdtemp(prefix="rat-bench-api-"))
    out: list[Result] = []
    try:
        root = workdir / "project"
        token = build_project(root, rows)
        print(f"  [api] {rows:,} rows; in-process for {seconds:g} s", flush=True)
        reference = in_process(root, seconds)
        server = Server(root, workdir / "serve.log")
        try:
            server.wait()
            t0 = time.perf_counter()
            headers = {"Authorization": f"Bearer {token}"}
            first = httpx.post(f"{server.url}/api/v1/query", json={"sql": QUERY}, headers=headers, timeout=120)
            cold = time.perf_counter() - t0
            if first.status_code != 200:
                raise RuntimeError(f"the first query failed: {first.status_code} {first.text[:300]}")
            out.append(
                result(NAME, "first query after start (cold sandbox)", cold * 1000, "ms", details={"rows": rows})
            )
            total_errors = 0
            for clients in CONCURRENCY:
                print(f"  [api] {clients} client(s) for {seconds:g} s", flush=True)
                measured = over_http(server.url, token, clients, seconds)
                total_errors += measured["errors"]
                details = {"requests": measured["requests"], "errors": measured["errors"], "rows": rows}
                if measured["first_errors"]:
                    details["first_errors"] = measured["first_errors"]
                for metric, unit in (("p50", "ms"), ("p99", "ms"), ("throughput", "queries/s")):
                    label = f"{metric} latency" if metric != "throughput" else "throughput"
                    out.append(
                        result(
                            NAME,
                            f"http {label}, {clients} client{'s' if clients > 1 else ''}",
                            measured[metric],
                            unit,
                            reference=reference[metric],
                            reference_label=REFERENCE,
                            details=details,
                        )
                    )
            out.append(
                result(
                    NAME,
                    "http errors, all runs",
                    float(total_errors),
                    "errors",
                    target="0",
                    ok=total_errors == 0,
                    details={"in_process_requests": reference["requests"]},
                )
            )
        finally:
            server.stop()
    finally:
        if not getattr(args, "keep", False):
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run standalone and print the result rows as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:g} s per phase instead of {SECONDS:g}")
    parser.add_argument("--rows", type=int, default=ROWS, help=f"table rows (at most {ROWS:,})")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per phase")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args(argv)
    os.environ.pop("RAT_PROJECT", None)
    for row in run(args):
        print(json.dumps(row, default=str))


if __name__ == "__main__":
    main()
