"""Start and stop Dagster's daemon (schedules, sensors, the run queue) and its web UI for a project.

No Dagster import here: the processes are ``python -m dagster._daemon run`` and
``python -m dagster_webserver``, loading the project's code location from
``ratatouille.orchestration.location`` (``$RAT_PROJECT`` says which project), with
``$DAGSTER_HOME`` holding Dagster's own instance (run history, schedule ticks, sensor cursors).

Each process starts in its own session, so ``stop`` can end it with everything it spawned (code
servers, run workers) by signalling the process group. SIGINT is reset to its default before
Dagster starts: a process started in the background inherits an *ignored* SIGINT, and Dagster,
like any Python program, then never turns Ctrl-C or its own SIGTERM handling into a shutdown.
The reset happens in a two-line ``python -c`` trampoline that ``exec``s Dagster, rather than in
``preexec_fn``, which is not safe when the parent has threads (``rat serve`` runs uvicorn).

The instance's ``dagster.yaml`` is written once (and then left to the user): telemetry off (the
platform is air-gapped) and at most one queued run per workspace at a time (tag
``rat/workspace``), so a schedule and a sensor never run the same workspace concurrently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

LOCATION_MODULE = "ratatouille.orchestration.location"
LOG_DIR = "ratatouille-logs"  # not "logs": Dagster treats $DAGSTER_HOME/logs/ as its telemetry queue

_TRAMPOLINE = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)

DAGSTER_YAML = """\
# Written by Ratatouille the first time the scheduler started; edit freely, it is not rewritten.
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: {max_runs}
  tag_concurrency_limits:
    - key: rat/workspace
      value:
        applyLimitPerUniqueValue: true
      limit: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
"""


def default_home(project_root: Path | str) -> Path:
    """Where a project keeps Dagster's instance by default: ``.rat/dagster``."""
    return Path(project_root).resolve() / ".rat" / "dagster"


def prepare_home(project_root: Path | str, dagster_home: Path | str, *, max_runs: int = 4) -> Path:
    """Create ``dagster_home`` with a ``dagster.yaml`` (if missing) and a ``workspace.yaml`` that
    loads this project's code location with this interpreter. Returns the workspace file."""
    home = Path(dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance = home / "dagster.yaml"
    if not instance.exists():
        instance.write_text(DAGSTER_YAML.format(max_runs=max_runs), encoding="utf-8")
    root = Path(project_root).resolve()
    workspace = home / "workspace.yaml"
    workspace.write_text(
        "# Written by Ratatouille each time the scheduler starts.\n"
        "load_from:\n"
        "  - python_module:\n"
        f"      module_name: {LOCATION_MODULE}\n"
        f"      location_name: {_yaml_string(root.name or 'ratatouille')}\n"
        f"      working_directory: {_yaml_string(str(root))}\n"
        f"      executable_path: {_yaml_string(sys.executable)}\n",
        encoding="utf-8",
    )
    return workspace


def _yaml_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _environment(project_root: Path, home: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DAGSTER_HOME": str(home), "RAT_PROJECT": str(project_root), "PYTHONUNBUFFERED": "1"})
    # Dagster uploads $DAGSTER_HOME/logs/ to telemetry.dagster.io from a thread of the daemon and
    # the webserver, whatever dagster.yaml says; this variable is the only switch that stops it.
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    env.update(extra or {})
    return env


def _spawn(args: list[str], env: dict[str, str], log_file: Path, cwd: Path) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, sys.executable, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it with its children
        )


def start_daemon(
    project_root: Path | str,
    dagster_home: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
) -> subprocess.Popen[bytes]:
    """Start ``dagster-daemon run`` for the project: schedules, sensors and the run queue.

    Its output goes to ``<dagster_home>/ratatouille-logs/daemon.log``. End it with ``stop([process])``.
    """
    root = Path(project_root).resolve()
    home = Path(dagster_home).resolve()
    workspace = prepare_home(root, home)
    args = ["-m", "dagster._daemon", "run", "-w", str(workspace), "--log-level", log_level]
    return _spawn(args, _environment(root, home, env), home / LOG_DIR / "daemon.log", root)


def start_webserver(
    project_root: Path | str,
    dagster_home: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    path_prefix: str = "",
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start Dagster's web UI for the project on ``host:port`` (loopback by default).

    Its output goes to ``<dagster_home>/ratatouille-logs/webserver.log``. End it with ``stop([process])``.
    """
    root = Path(project_root).resolve()
    home = Path(dagster_home).resolve()
    workspace = prepare_home(root, home)
    args = ["-m", "dagster_webserver", "-w", str(workspace), "-h", host, "-p", str(port)]
    if path_prefix:
        args += ["--path-prefix", path_prefix]
    return _spawn(args, _environment(root, home, env), home / LOG_DIR / "webserver.log", root)


def start(
    project_root: Path | str,
    dagster_home: Path | str | None = None,
    *,
    webserver_port: int | None = None,
    host: str = "127.0.0.1",
    path_prefix: str = "",
) -> list[subprocess.Popen[bytes]]:
    """The daemon, and the web UI when ``webserver_port`` is given: what ``rat serve`` starts."""
    home = Path(dagster_home) if dagster_home is not None else default_home(project_root)
    processes = [start_daemon(project_root, home)]
    if webserver_port is not None:
        try:
            processes.append(
                start_webserver(project_root, home, host=host, port=webserver_port, path_prefix=path_prefix)
            )
        except BaseException:
            stop(processes)
            raise
    return processes


# -- stopping ---------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from ``/proc``; empty without it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """End processes started here with everything they spawned: SIGTERM to each process group
    (and to descendants that left it), then SIGKILL to whatever is still there after ``timeout``."""
    processes = list(processes)
    tree: dict[int, list[int]] = {p.pid: descendants(p.pid) for p in processes if p.poll() is None}
    for process in processes:
        _signal_group(process.pid, signal.SIGTERM)
        for pid in tree.get(process.pid, []):
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    everything = [pid for p in processes for pid in [p.pid, *tree.get(p.pid, [])]]
    while time.monotonic() < deadline and any(alive(pid) for pid in everything):
        time.sleep(0.1)
    for process in processes:
        _signal_group(process.pid, signal.SIGKILL)
        for pid in tree.get(process.pid, []):
            if alive(pid):
                _signal(pid, signal.SIGKILL)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
