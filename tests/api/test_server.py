"""One ``rat serve`` per project: the lock, in one process and with real server processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import write_project
from orchestration.conftest import RAT, free_port, process_tree, rat_serve, serve_env, wait_for
from ratatouille.api.server import AlreadyRunningError, ServeLock, holder


def test_the_lock_is_exclusive_says_who_holds_it_and_is_free_again_once_released(tmp_path: Path) -> None:
    path = tmp_path / ".rat" / "serve.lock"
    first = ServeLock.acquire(path, url="http://127.0.0.1:8080")
    try:
        assert holder(path)["pid"] == os.getpid()
        with pytest.raises(AlreadyRunningError) as caught:
            ServeLock.acquire(path, url="http://127.0.0.1:9090")
        assert str(caught.value) == (
            f"rat serve is already running for this project (pid {os.getpid()}, http://127.0.0.1:8080); "
            f"stop it first (lock: {path})"
        )
        assert holder(path)["url"] == "http://127.0.0.1:8080", "a refused attempt must not overwrite the holder"
    finally:
        first.release()
    first.release()  # idempotent
    second = ServeLock.acquire(path, url="http://127.0.0.1:9090")
    second.release()


def test_a_held_lock_without_details_still_refuses(tmp_path: Path) -> None:
    import fcntl

    path = tmp_path / "serve.lock"
    with path.open("w") as held:  # an older or crashed writer: locked, nothing written
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(AlreadyRunningError, match=r"already running for this project \(pid unknown\)"):
            ServeLock.acquire(path)


def start_second(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAT, "serve", "--port", str(free_port()), "--project", str(root)],
        capture_output=True,
        text=True,
        env=serve_env(),
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_a_second_rat_serve_on_the_same_project_says_it_is_already_running(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    with rat_serve(root, "--no-scheduler", log=tmp_path / "first.log") as first:
        first.wait_healthy()
        second = start_second(root)
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"Error: rat serve is already running for this project (pid {first.pid}, {first.url}); "
            f"stop it first (lock: {root / '.rat' / 'serve.lock'})"
        )
        assert "Uvicorn running" not in second.stderr and first.healthy()
        assert first.stop() == -signal.SIGTERM
    # Stopped: the project is free again.
    with rat_serve(root, "--no-scheduler", log=tmp_path / "third.log") as third:
        third.wait_healthy()


@pytest.mark.slow
def test_a_killed_rat_serve_leaves_neither_its_lock_nor_its_scheduler_behind(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    with rat_serve(root, log=tmp_path / "first.log") as first:
        first.wait_healthy()
        tree = wait_for(
            lambda: (t := process_tree(first.pid)) and any("dagster._daemon run" in p.cmdline for p in t) and t,
            120,
            lambda: f"Dagster's daemon did not start\n{first.output()}",
        )
        assert len(tree) >= 4, [p.cmdline for p in tree]  # rat serve, code server + its location, daemon
        os.kill(first.pid, signal.SIGKILL)  # no handler runs: the kernel drops the lock, Dagster gets SIGTERM
        assert first.process.wait(10) == -signal.SIGKILL
    deadline = time.monotonic() + 20
    while any(p.running() for p in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p.cmdline for p in tree if p.running()] == []
    with rat_serve(root, "--no-scheduler", log=tmp_path / "second.log") as second:
        second.wait_healthy()
