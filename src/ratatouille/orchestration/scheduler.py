"""``Scheduler``: Dagster's processes for one project, run and watched over as ``rat serve`` needs.

- One code server (``daemon.start_code_server``) on a Unix socket in a private temporary
  directory, shared by the daemon and, when asked for, Dagster's web UI: the code location is
  imported once, not once per process and again every minute (see ``daemon``).
- The daemon and the web UI start once the code server listens. On a first start the code server
  creates Dagster's instance database; processes started together would race to create it.
- A process that exits by itself is started again (not sooner than ``RESTART_DELAY_S``, 30 s, after its
  previous start, so a process that cannot start does not spin).
- When the project's files change (``ratatouille.yaml``, a workspace's pipelines, sources or
  macros), the code server reloads the code location: new schedules, sensors and models are picked
  up without restarting ``rat serve`` (the daemon reads the reloaded definitions within a minute).
  Runs under way finish on the code they started with.

Processes are started and stopped by one supervising thread, which outlives them: on Linux each
process gets SIGTERM when the thread that started it ends (see ``daemon``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ratatouille.orchestration.daemon import (
    CODE_SERVER_LOG,
    LOG_DIR,
    SENSOR_INTERVAL_ENV,
    default_home,
    environment,
    start_code_server,
    start_daemon,
    start_webserver,
    stop,
)

log = logging.getLogger("ratatouille.orchestration")

RESTART_DELAY_S = 30.0
SOCKET_DIR_FILE = "code-server.dir"  # in Dagster's home: the socket's directory, removed by the next start
WATCHED_DIRS = ("pipelines", "sources", "macros")  # inside each workspace, with workspace.yaml

# A gRPC call to the code server, in a child process so that `rat serve` never imports Dagster.
_RELOAD = (
    "import sys\n"
    "from dagster._grpc.client import DagsterGrpcClient\n"
    "DagsterGrpcClient(socket=sys.argv[1]).reload_code(timeout=int(sys.argv[2]))\n"
)


def project_files(root: Path) -> dict[str, tuple[int, int]]:
    """``ratatouille.yaml`` and every file a code location is built from, with (mtime, size)."""
    found: dict[str, tuple[int, int]] = {}

    def add(path: Path) -> None:
        try:
            info = path.stat()
        except OSError:
            return
        found[str(path.relative_to(root))] = (info.st_mtime_ns, info.st_size)

    def walk(folder: Path) -> Iterator[Path]:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from walk(Path(entry.path))
            else:
                yield Path(entry.path)

    add(root / "ratatouille.yaml")
    workspaces = root / "workspaces"
    for workspace in sorted(workspaces.iterdir()) if workspaces.is_dir() else []:
        if not workspace.is_dir():
            continue
        add(workspace / "workspace.yaml")
        for name in WATCHED_DIRS:
            for path in walk(workspace / name):
                add(path)
    return found


def socket_dir(dagster_home: Path) -> Path:
    """A new private (0700) temporary directory for the code server's socket, recorded in
    ``dagster_home``; the one recorded by a previous start is removed first (a ``rat serve``
    that was killed outright could not remove it itself)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    record = dagster_home / SOCKET_DIR_FILE
    try:
        previous = Path(record.read_text(encoding="utf-8").strip())
    except OSError:
        previous = None
    if (
        previous is not None
        and previous.parent == Path(tempfile.gettempdir())
        and previous.name.startswith("rat-dagster-")
    ):
        shutil.rmtree(previous, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="rat-dagster-"))  # Unix socket paths are short: not in the project
    record.write_text(str(folder) + "\n", encoding="utf-8")
    return folder


class Scheduler:
    """The code server, the daemon and optionally the web UI of one project, supervised.

    Args:
        project_root: the project directory.
        dagster_home: Dagster's instance directory (default: ``.rat/dagster``).
        webserver_port: also serve Dagster's web UI on ``host:webserver_port``.
        host: where the web UI listens (loopback by default: it has no authentication).
        path_prefix: the web UI's path prefix, behind a reverse proxy.
        sensor_interval_s: how often the landing-zone sensors look for files (default 30 s).
        poll_s: how often processes are checked on.
        watch_s: how often the project's files are checked for changes.
        restart_delay_s: the least time between two starts of one process.
    """

    def __init__(
        self,
        project_root: Path | str,
        dagster_home: Path | str | None = None,
        *,
        webserver_port: int | None = None,
        host: str = "127.0.0.1",
        path_prefix: str = "",
        sensor_interval_s: int | None = None,
        poll_s: float = 1.0,
        watch_s: float = 5.0,
        restart_delay_s: float = RESTART_DELAY_S,
    ) -> None:
        self.root = Path(project_root).resolve()
        self.home = Path(dagster_home).resolve() if dagster_home is not None else default_home(self.root)
        self.webserver_port = webserver_port
        self.host = host
        self.path_prefix = path_prefix
        self.env: dict[str, str] = {SENSOR_INTERVAL_ENV: str(sensor_interval_s)} if sensor_interval_s else {}
        self.poll_s = poll_s
        self.watch_s = watch_s
        self.restart_delay_s = restart_delay_s
        self.socket: Path | None = None
        self._dir: Path | None = None
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._started_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_timeout = 20.0

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The processes running now, by role: ``code-server``, ``daemon``, ``webserver``."""
        with self._lock:
            return dict(self._processes)

    def start(self) -> None:
        """Start the code server and the thread that starts the rest and watches over them."""
        if self._thread is not None:
            raise RuntimeError("this scheduler was already started")
        self._dir = socket_dir(self.home)  # 0700: only this user may connect
        self.socket = self._dir / "code.sock"
        self._thread = threading.Thread(target=self._supervise, name="rat-scheduler", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the daemon (and web UI) started, after the code server began listening."""
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every process (SIGTERM to its process group, SIGKILL after ``timeout``). Idempotent."""
        self._stop_timeout = timeout
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout + 10)
        with self._lock:  # in case the thread could not (it died, or is stuck)
            left = list(self._processes.values())
            self._processes.clear()
        if left:
            stop(left, timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- the supervising thread ---------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            self._spawn("code-server")
            seen = project_files(self.root)
            checked = time.monotonic()
            waited_since = time.monotonic()
            warned = False
            while not self._stopping.wait(self.poll_s):
                if not self._ready.is_set():
                    if self.socket is not None and self.socket.exists():
                        self._spawn("daemon")
                        if self.webserver_port is not None:
                            self._spawn("webserver")
                        self._ready.set()
                    elif not warned and time.monotonic() - waited_since > 120:
                        warned = True
                        log.warning("the Dagster code server is still loading the project; see %s", self._log())
                self._restart_exited()
                if time.monotonic() - checked >= self.watch_s:
                    checked = time.monotonic()
                    now = project_files(self.root)
                    if now != seen and self._ready.is_set():
                        seen = now
                        self._reload()
        except Exception:
            log.exception("the scheduler's supervisor failed; schedules and sensors may have stopped")
        finally:
            with self._lock:
                running = list(self._processes.values())
                self._processes.clear()
            stop(running, self._stop_timeout)

    def _spawn(self, role: str) -> None:
        assert self.socket is not None
        with self._lock:
            if self._stopping.is_set():
                return
            if role == "code-server":
                self.socket.unlink(missing_ok=True)  # left by a code server that died
                process = start_code_server(self.root, self.home, self.socket, env=self.env)
            elif role == "daemon":
                process = start_daemon(self.root, self.home, socket=self.socket, env=self.env)
            else:
                process = start_webserver(
                    self.root,
                    self.home,
                    host=self.host,
                    port=self.webserver_port or 3000,
                    path_prefix=self.path_prefix,
                    socket=self.socket,
                    env=self.env,
                )
            self._processes[role] = process
            self._started_at[role] = time.monotonic()

    def _restart_exited(self) -> None:
        for role, process in self.processes.items():
            code = process.poll()
            if code is None or time.monotonic() - self._started_at[role] < self.restart_delay_s:
                continue
            log.warning("Dagster's %s exited (code %s); starting it again. Its log: %s", role, code, self._log(role))
            self._spawn(role)

    def _reload(self) -> None:
        """Ask the code server to load the code location again (a child process does the call)."""
        assert self.socket is not None
        log.info("project files changed: reloading schedules, sensors and pipelines")
        env = environment(self.root, self.home, self.env)
        with (self.home / LOG_DIR / CODE_SERVER_LOG).open("ab") as output:
            call = subprocess.Popen(
                [sys.executable, "-c", _RELOAD, str(self.socket), "300"],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        while call.poll() is None:
            if self._stopping.wait(0.2):
                call.kill()
                call.wait()
                return
        if call.returncode != 0:
            log.warning("could not reload the code location (exit %s); see %s", call.returncode, self._log())

    def _log(self, role: str = "code-server") -> Path:
        return self.home / LOG_DIR / (CODE_SERVER_LOG if role == "code-server" else f"{role}.log")
