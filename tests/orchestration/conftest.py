"""A small scheduled project (the runs pipeline plus a files source), a webhook receiver, Dagster."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers import write_project
from runs.conftest import FILES, write_files

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
