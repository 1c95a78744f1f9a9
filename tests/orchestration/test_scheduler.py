"""``Scheduler``: one code server shared by the daemon and the UI, restarts, reloads on change."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from orchestration.conftest import free_port, process_tree, wait_for
from ratatouille.orchestration.daemon import _TRAMPOLINE, alive, prepare_home
from ratatouille.orchestration.scheduler import Scheduler, project_files, socket_dir


def test_project_files_see_pipelines_sources_macros_and_config_but_not_data_or_notebooks(shop: Path) -> None:
    ws = shop / "workspaces" / "default"
    before = project_files(shop)
    assert "ratatouille.yaml" in before
    assert "workspaces/default/pipelines/gold/by_customer.sql" in before
    assert "workspaces/default/sources/drops.yaml" in before
    for ignored in (
        ws / "notebooks" / "explore.ipynb",
        ws / "pipelines" / "__pycache__" / "x.pyc",
        ws / "pipelines" / ".hidden.sql",
        shop / "data" / "landing" / "drops" / "a.csv",
        shop / ".rat" / "state.db",
    ):
        ignored.parent.mkdir(parents=True, exist_ok=True)
        ignored.write_text("x")
    assert project_files(shop) == before
    (ws / "macros").mkdir()
    (ws / "macros" / "cents.sql").write_text("{% macro cents(x) %}{{ x }} * 100{% endmacro %}\n")
    assert set(project_files(shop)) - set(before) == {"workspaces/default/macros/cents.sql"}
    sql = ws / "pipelines" / "gold" / "by_customer.sql"
    changed = project_files(shop)
    sql.write_text(sql.read_text() + "\n-- edited\n")
    assert (
        project_files(shop)["workspaces/default/pipelines/gold/by_customer.sql"]
        != changed["workspaces/default/pipelines/gold/by_customer.sql"]
    )


def test_with_a_socket_the_daemon_and_the_ui_load_the_project_from_the_shared_code_server(
    shop: Path, tmp_path: Path
) -> None:
    workspace = prepare_home(shop, tmp_path / "home", socket=tmp_path / "run" / "code.sock")
    assert yaml.safe_load(workspace.read_text()) == {
        "load_from": [{"grpc_server": {"socket": str(tmp_path / "run" / "code.sock"), "location_name": "shop"}}]
    }
    alone = yaml.safe_load(prepare_home(shop, tmp_path / "home").read_text())["load_from"][0]["python_module"]
    assert alone["module_name"] == "ratatouille.orchestration.location"
    assert alone["executable_path"] == sys.executable


def test_a_socket_directory_left_by_a_killed_server_is_removed_by_the_next_start(tmp_path: Path) -> None:
    made = [socket_dir(tmp_path / "home")]
    (made[0] / "code.sock").touch()  # what a killed server leaves
    unrelated = Path(tempfile.mkdtemp(prefix="not-rat-"))
    try:
        made.append(socket_dir(tmp_path / "home"))
        assert not made[0].exists() and made[1].is_dir() and made[1] != made[0]
        assert made[1].stat().st_mode & 0o777 == 0o700
        (tmp_path / "home" / "code-server.dir").write_text(str(unrelated))  # never removes what it did not make
        made.append(socket_dir(tmp_path / "home"))
        assert unrelated.is_dir()
    finally:
        for folder in [*made, unrelated]:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_trampoline_gives_up_when_the_process_that_started_it_is_gone(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()"
    # The parent pid it is given is not its parent: as if that parent had died before prctl.
    proc = subprocess.run(
        [sys.executable, "-c", _TRAMPOLINE, "1", sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "has already exited" in proc.stderr
    assert not marker.exists()
    proc = subprocess.run(
        [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()


@pytest.mark.slow
def test_the_scheduler_shares_one_code_server_restarts_what_exits_and_stops_everything(
    shop: Path, tmp_path: Path
) -> None:
    scheduler = Scheduler(shop, tmp_path / "dagster", webserver_port=free_port(), restart_delay_s=1, poll_s=0.2)
    scheduler.start()
    try:
        assert scheduler.wait_ready(120), (tmp_path / "dagster" / "ratatouille-logs" / "code-server.log").read_text()
        processes = scheduler.processes
        assert set(processes) == {"code-server", "daemon", "webserver"}
        # One process loads the project (under the code server), and neither the daemon nor the
        # UI starts one of its own.
        time.sleep(5)
        loaders = [p for p in process_tree(os.getpid()) if "dagster api grpc" in p.cmdline]
        assert len(loaders) == 1, [p.cmdline for p in process_tree(os.getpid())]
        assert loaders[0].pid in [q.pid for q in process_tree(processes["code-server"].pid)]
        assert process_tree(processes["daemon"].pid)[1:] == []
        daemon = processes["daemon"]
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        restarted = wait_for(
            lambda: (p := scheduler.processes["daemon"]) is not daemon and p.poll() is None and p,
            30,
            "the daemon was not started again",
        )
        tree = [q for p in scheduler.processes.values() for q in process_tree(p.pid)]
    finally:
        scheduler.stop()
    assert not alive(restarted.pid)
    assert [p.cmdline for p in tree if p.running()] == []
    assert scheduler.socket is not None and not scheduler.socket.parent.exists()
