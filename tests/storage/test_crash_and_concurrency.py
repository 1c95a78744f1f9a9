"""Atomicity under stress: a killed writer, and two processes committing at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ratatouille.workspace import Workspace

WORKER = textwrap.dedent(
    """
    import sys
    from ratatouille.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    tag, rounds, rows = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print("started", flush=True)
    for i in range(rounds):
        ws.append("silver.shared", f"SELECT range AS id, '{tag}' AS writer, {i} AS round FROM range({rows})")
    print("done", flush=True)
    """
)


def _spawn(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_kill_9_during_a_large_append_leaves_the_previous_snapshot(workspace: Workspace) -> None:
    workspace.append("silver.shared", "SELECT 0 AS id, 'seed' AS writer, 0 AS round")
    before = workspace.describe("silver.shared")
    worker = _spawn(workspace.project.root, "big", "1", "200000000")
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "started"
    time.sleep(3.0)  # well into the COPY of 200M rows, long before its commit
    assert worker.poll() is None, worker.communicate()
    os.killpg(worker.pid, signal.SIGKILL)
    worker.communicate()

    workspace.close()
    after = workspace.describe("silver.shared")
    assert after["snapshot_id"] == before["snapshot_id"]
    assert workspace.query("SELECT count(*) AS n FROM silver.shared").column("n")[0].as_py() == 1
    result = workspace.append("silver.shared", "SELECT 1 AS id, 'next' AS writer, 1 AS round")
    assert result.rows_written == 1
    assert workspace.query("SELECT count(*) AS n FROM silver.shared").column("n")[0].as_py() == 2


@pytest.mark.slow
def test_two_processes_committing_at_once_lose_nothing(workspace: Workspace) -> None:
    workspace.append("silver.shared", "SELECT 0 AS id, 'seed' AS writer, 0 AS round")
    rounds, rows = 8, 1000
    workers = [_spawn(workspace.project.root, tag, str(rounds), str(rows)) for tag in ("a", "b")]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert out.splitlines()[-1] == "done"
    workspace.close()
    got = workspace.query("SELECT writer, count(*) AS n FROM silver.shared GROUP BY 1 ORDER BY 1").to_pylist()
    assert got == [{"writer": "a", "n": rounds * rows}, {"writer": "b", "n": rounds * rows}, {"writer": "seed", "n": 1}]
    assert len(workspace.history("silver.shared")) == 1 + 2 * rounds
