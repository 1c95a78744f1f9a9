"""A small scheduled project (the runs pipeline plus a files source), a webhook receiver, Dagster,
and ``rat serve`` as a real process (``rat_serve``) with what it started (``process_tree``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from helpers import write_project
from ratatouille.orchestration.daemon import alive, descendants
from runs.conftest import FILES, write_files

T = TypeVar("T")
RAT = str(Path(sys.executable).parent / "rat")

SCHEDULED = {
    **FILES,
    "pipelines/gold/by_customer.yaml": """
        schedule: "* * * * *"
        tests:
          - name: five_customers
            sql: SELECT count(*) FROM {{ this }}
            expect: 5
    """,
    "sources/drops.yaml": """
        name: drops
        type: files
        path: landing/drops/*.csv
        format: csv
        columns: {id: bigint, amount: double}
    """,
    "pipelines/silver/drops.sql": """
        SELECT id, amount, _source_file FROM {{ source('drops') }}
    """,
    "pipelines/silver/drops.yaml": """
        schedule: "*/5 * * * *"
        columns:
          - name: id
            tests: [not_null]
    """,
}


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """The pipeline project of tests/runs with a schedule on gold.by_customer and a files source."""
    root = write_project(tmp_path / "shop")
    write_files(root, SCHEDULED)
    (root / "data" / "landing" / "drops").mkdir(parents=True)
    return root


def drop(root: Path, name: str, text: str) -> Path:
    """Put a file into the drops landing folder."""
    path = root / "data" / "landing" / "drops" / name
    path.write_text(text)
    return path


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: records every POST, answers with scripted statuses."""

    url: str
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    statuses: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer, in order

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.requests if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver running in a thread for the test."""
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append((self.path, json.loads(self.rfile.read(length) or b"null")))
            queue = state.statuses.get(self.path) or []
            status = queue.pop(0) if queue else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


# -- rat serve as a real process ----------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: Callable[[], T | None], timeout: float, message: Callable[[], str] | str, poll: float = 0.5) -> T:
    """Call ``what`` until it returns something truthy (returned); fail with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(message() if callable(message) else message)
        time.sleep(poll)


@dataclass
class Served:
    """A ``rat serve`` process on 127.0.0.1, its output going to ``log``."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_healthy(self, timeout: float = 60) -> None:
        def up() -> bool:
            assert self.process.poll() is None, f"rat serve exited ({self.process.returncode}):\n{self.output()}"
            return self.healthy()

        wait_for(up, timeout, lambda: f"rat serve did not answer on /api/v1/health:\n{self.output()}", poll=0.1)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def serve_env() -> dict[str, str]:
    """The test's environment without RAT_* variables (the autouse fixture only cleans this process)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAT_")}


@contextlib.contextmanager
def rat_serve(root: Path, *args: str, log: Path, port: int | None = None) -> Iterator[Served]:
    """Start ``rat serve --port <free> --project root *args`` in its own session; whatever
    happens in the test, it is stopped (SIGTERM, then SIGKILL to its process group)."""
    port = port or free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [RAT, "serve", "--port", str(port), "--project", str(root), *args],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=serve_env(),
            start_new_session=True,
        )
    served = Served(process, port, log)
    try:
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # Dagster's processes get SIGTERM as it dies
                process.wait(10)


@dataclass(frozen=True)
class Proc:
    """A process as seen once: its pid, start time (so a reused pid is told apart) and command line."""

    pid: int
    started: int
    cmdline: str

    def running(self) -> bool:
        """Whether this very process (not another one with its pid) still runs."""
        return alive(self.pid) and _start_time(self.pid) == self.started


def _start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_tree(pid: int) -> list[Proc]:
    """``pid`` and every process below it, from /proc."""
    found = []
    for each in [pid, *descendants(pid)]:
        started = _start_time(each)
        try:
            cmdline = Path(f"/proc/{each}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if started is not None:
            found.append(Proc(each, started, cmdline))
    return found
