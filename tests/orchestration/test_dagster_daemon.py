"""The real Dagster daemon runs a project's schedule and stops with every process it started."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from orchestration.conftest import drop
from ratatouille.orchestration.daemon import alive, descendants, start_daemon, stop
from ratatouille.workspace import Workspace

pytestmark = pytest.mark.slow


def ignored_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigIgn in /proc status")


def started_with(home: Path) -> list[str]:
    """Command lines of the live processes whose environment has ``DAGSTER_HOME=home``."""
    marker = f"DAGSTER_HOME={home.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def test_the_daemon_runs_the_schedule_and_stops_with_everything_it_started(shop: Path, tmp_path: Path) -> None:
    drop(shop, "a.csv", "id,amount\n1,10\n")
    ws = Workspace.open(shop)
    try:
        assert ws.run().ok  # built once from the CLI; the schedule then refreshes gold.by_customer
        # Started the way a backgrounded `rat serve` would be: with SIGINT ignored.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process = start_daemon(shop, tmp_path / "dagster")
        finally:
            signal.signal(signal.SIGINT, previous)
        tree: set[int] = set()  # every process seen under the daemon
        try:
            time.sleep(1)
            assert not ignored_signals(process.pid) & (1 << (signal.SIGINT - 1)), "SIGINT must be reset"
            deadline = time.monotonic() + 150  # the first tick is at the next minute, then a run worker starts
            scheduled = None
            while scheduled is None and time.monotonic() < deadline:
                assert process.poll() is None, (tmp_path / "dagster" / "ratatouille-logs" / "daemon.log").read_text()
                tree |= set(descendants(process.pid))
                time.sleep(2)
                scheduled = next(
                    (
                        r
                        for r in ws.runs()
                        if (r["trigger"], r["selection"]) == ("schedule", "gold.by_customer")
                        and r["status"] != "running"
                    ),
                    None,
                )
            log = (tmp_path / "dagster" / "ratatouille-logs" / "daemon.log").read_text()
            assert scheduled is not None, log[-3000:]
            assert scheduled["status"] == "success", ws.run_record(scheduled["id"])
            assert "started by Dagster run" in ws.run_record(scheduled["id"])["logs"][0]["message"]
            tree |= set(descendants(process.pid))
            assert tree, "the daemon runs its code server as a child process"
        finally:
            stop([process], timeout=30)
        assert process.returncode is not None and not alive(process.pid)
        # Every process it started carries its DAGSTER_HOME (PIDs seen earlier may be reused by now).
        assert started_with(tmp_path / "dagster") == [], "processes left after stop"
        assert not (tmp_path / "dagster" / "logs").exists() or not any((tmp_path / "dagster" / "logs").iterdir())
    finally:
        ws.close()
