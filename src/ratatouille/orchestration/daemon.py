"""Start and stop Dagster's processes for a project: code server, daemon, web UI.

No Dagster import here: the processes are ``python -m dagster code-server start`` (the project's
code location, ``ratatouille.orchestration.location``, with ``$RAT_PROJECT`` saying which
project), ``python -m dagster._daemon run`` (schedules, sensors, the run queue) and
``python -m dagster_webserver``, with ``$DAGSTER_HOME`` holding Dagster's own instance (run
history, schedule ticks, sensor cursors). ``scheduler.Scheduler`` runs them together for
``rat serve``.

Given a code server's socket, the daemon and the web UI load the code location from it
(``grpc_server`` in ``workspace.yaml``). Without one, the daemon starts a code server of its own,
and replaces it with a fresh one every minute (Dagster's daemon reloads its workspace that often),
so the code location is imported and built again each minute and, for the ~40 s the old server
takes to notice it is no longer used, held in memory twice; the web UI would start yet another.

Each process starts in its own session, so ``stop`` can end it with everything it spawned (code
servers, run workers) by signalling the process group. Two things happen in a ``python -c``
trampoline that then ``exec``s Dagster (rather than in ``preexec_fn``, which is not safe when the
parent has threads, as ``rat serve`` has):

- SIGINT is reset to its default: a process started in the background inherits an *ignored*
  SIGINT, and Dagster, like any Python program, then never turns Ctrl-C or its own SIGTERM
  handling into a shutdown;
- on Linux, the process asks for SIGTERM when the thread that started it ends
  (``PR_SET_PDEATHSIG``), so a ``rat serve`` that is killed outright (SIGKILL, the OOM killer)
  does not leave a scheduler running behind it.

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

CODE_SERVER_LOG = "code-server.log"
LOCATION_HEARTBEAT_TTL_S = 5
SENSOR_INTERVAL_ENV = "RAT_SENSOR_INTERVAL_S"  # read by ``location``: how often landing zones are looked at

# argv: parent pid, executable, arguments. PR_SET_PDEATHSIG is 1; if the parent is already gone
# (it died between fork and prctl), the signal would never come, so give up at once.
_TRAMPOLINE = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
if sys.platform == "linux":
    import ctypes
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))
    if os.getppid() != int(sys.argv[1]):
        sys.exit("rat: the process that started this one has already exited")
os.execv(sys.argv[2], sys.argv[2:])
"""

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


def location_name(project_root: Path | str) -> str:
    """The code location's name in Dagster: the project directory's name."""
    return Path(project_root).resolve().name or "ratatouille"


def prepare_home(
    project_root: Path | str, dagster_home: Path | str, *, max_runs: int = 4, socket: Path | str | None = None
) -> Path:
    """Create ``dagster_home`` with a ``dagster.yaml`` (if missing) and a ``workspace.yaml`` that
    loads this project's code location: from the code server listening on ``socket``, or else
    (no socket) from a code server each process starts itself, with this interpreter.
    Returns the workspace file."""
    home = Path(dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance = home / "dagster.yaml"
    if not instance.exists():
        instance.write_text(DAGSTER_YAML.format(max_runs=max_runs), encoding="utf-8")
    root = Path(project_root).resolve()
    name = _yaml_string(location_name(root))
    if socket is not None:
        entry = f"  - grpc_server:\n      socket: {_yaml_string(str(socket))}\n      location_name: {name}\n"
    else:
        entry = (
            "  - python_module:\n"
            f"      module_name: {LOCATION_MODULE}\n"
            f"      location_name: {name}\n"
            f"      working_directory: {_yaml_string(str(root))}\n"
            f"      executable_path: {_yaml_string(sys.executable)}\n"
        )
    workspace = home / "workspace.yaml"
    workspace.write_text(
        f"# Written by Ratatouille each time the scheduler starts.\nload_from:\n{entry}", encoding="utf-8"
    )
    return workspace


def _yaml_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def environment(project_root: Path, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of Dagster's processes for a project: this one, plus ``DAGSTER_HOME``,
    ``RAT_PROJECT``, telemetry off, and ``extra``."""
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
            [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), sys.executable, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it with its children
        )


def start_code_server(
    project_root: Path | str,
    dagster_home: Path | str,
    socket: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
) -> subprocess.Popen[bytes]:
    """Start the project's code server on the Unix socket ``socket``: ``dagster code-server start``,
    which loads the code location in a child process it replaces on a reload (letting the old one
    finish the runs it started) and launches the runs.

    The socket appears once the code location is loaded (or failed to load, which the server then
    reports to its clients). Its output goes to ``<dagster_home>/ratatouille-logs/code-server.log``.
    End it with ``stop([process])``.
    """
    root = Path(project_root).resolve()
    home = Path(dagster_home).resolve()
    prepare_home(root, home, socket=socket)
    args = [
        "-m",
        "dagster",
        "code-server",
        "start",
        "-m",
        LOCATION_MODULE,
        "--socket",
        str(socket),
        "--location-name",
        location_name(root),
        "--use-python-environment-entry-point",  # runs start with this interpreter, not a `dagster` on PATH
        # The process that loads the code location gets a heartbeat from this server every
        # second and stops without one for this long. Dagster's default, 30 s, kept it alive
        # that long after a killed `rat serve` (which the code server itself follows at once).
        "--heartbeat-ttl",
        str(LOCATION_HEARTBEAT_TTL_S),
        "--log-level",
        log_level,
    ]
    return _spawn(args, environment(root, home, env), home / LOG_DIR / CODE_SERVER_LOG, root)


def start_daemon(
    project_root: Path | str,
    dagster_home: Path | str,
    *,
    socket: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
) -> subprocess.Popen[bytes]:
    """Start ``dagster-daemon run`` for the project: schedules, sensors and the run queue, with
    the code location of the code server on ``socket`` (or, without one, of a code server the
    daemon starts and replaces every minute).

    Its output goes to ``<dagster_home>/ratatouille-logs/daemon.log``. End it with ``stop([process])``.
    """
    root = Path(project_root).resolve()
    home = Path(dagster_home).resolve()
    workspace = prepare_home(root, home, socket=socket)
    args = ["-m", "dagster._daemon", "run", "-w", str(workspace), "--log-level", log_level]
    return _spawn(args, environment(root, home, env), home / LOG_DIR / "daemon.log", root)


def start_webserver(
    project_root: Path | str,
    dagster_home: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    path_prefix: str = "",
    socket: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start Dagster's web UI for the project on ``host:port`` (loopback by default), with the
    code location of the code server on ``socket`` (or of one it starts itself).

    Its output goes to ``<dagster_home>/ratatouille-logs/webserver.log``. End it with ``stop([process])``.
    """
    root = Path(project_root).resolve()
    home = Path(dagster_home).resolve()
    workspace = prepare_home(root, home, socket=socket)
    args = ["-m", "dagster_webserver", "-w", str(workspace), "-h", host, "-p", str(port)]
    if path_prefix:
        args += ["--path-prefix", path_prefix]
    return _spawn(args, environment(root, home, env), home / LOG_DIR / "webserver.log", root)


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
