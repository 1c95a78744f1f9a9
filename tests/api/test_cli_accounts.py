"""`rat users`, `rat tokens` and `rat serve` (a real server process, stopped with SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from helpers import write_project
from ratatouille.cli.main import cli
from ratatouille.workspace import Workspace


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "p")
    (root / "workspaces" / "sales").mkdir(parents=True)
    return root


def rat(root: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args, "--project", str(root)], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_tokens_create_prints_the_token_once(root: Path) -> None:
    code, out, err = rat(root, "tokens", "create", "--user", "admin", "--role", "admin")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("rat_") and "\n" not in token
    assert "only time" in err and "every workspace" in err
    ws = Workspace.open(root)
    principal = ws.auth.authenticate(token)
    assert principal.user == "admin" and principal.role.value == "admin" and principal.workspace is None
    ws.close()


def test_tokens_create_json_is_exactly_the_token(root: Path) -> None:
    code, out, _ = rat(
        root,
        "tokens",
        "create",
        "--user",
        "ana",
        "--role",
        "editor",
        "--workspace",
        "sales",
        "--expires-days",
        "3",
        "--json",
    )
    assert code == 0
    body = json.loads(out)
    assert list(body) == ["token"]
    ws = Workspace.open(root)
    principal = ws.auth.authenticate(body["token"])
    assert principal.workspace == "sales" and principal.role.value == "editor"
    [info] = ws.auth.tokens()
    assert info.expires_at is not None and 2.9 < (info.expires_at - info.created_at).total_seconds() / 86400 < 3.1
    ws.close()


def test_tokens_create_checks_workspace_and_role(root: Path) -> None:
    code, _, err = rat(root, "tokens", "create", "--user", "a", "--role", "viewer", "--workspace", "nope")
    assert code == 1 and "workspace `nope` does not exist" in err and "sales" in err
    code, _, err = rat(root, "tokens", "create", "--user", "a", "--role", "owner")
    assert code == 2 and "owner" in err


def test_tokens_list_and_revoke_never_show_values(root: Path) -> None:
    _, token, _ = rat(root, "tokens", "create", "--user", "bob", "--role", "viewer")
    code, out, _ = rat(root, "tokens", "list", "--json")
    assert code == 0
    [listed] = json.loads(out)
    assert listed["user"] == "bob" and listed["status"] == "active" and listed["workspace"] is None
    assert token.strip() not in out
    code, table, _ = rat(root, "tokens", "list")
    assert code == 0 and listed["id"] in table and token.strip() not in table
    code, out, _ = rat(root, "tokens", "revoke", listed["id"])
    assert code == 0 and "Revoked" in out
    _, out, _ = rat(root, "tokens", "list", "--json")
    assert json.loads(out)[0]["status"] == "revoked"
    code, _, err = rat(root, "tokens", "revoke", "tok_nope")
    assert code == 1 and "no token `tok_nope`" in err


def test_users_add_list_remove(root: Path) -> None:
    code, out, err = rat(root, "users", "add", "carol", "--password-stdin", stdin="pa55word\n")
    assert code == 0, err
    assert "with a password" in out
    assert rat(root, "users", "add", "dave")[0] == 0
    code, _, err = rat(root, "users", "add", "dave")
    assert code == 1 and "already exists" in err
    code, _, _ = rat(root, "users", "add", "erin", "--password-stdin", stdin="\n")
    assert code == 2
    rat(root, "tokens", "create", "--user", "dave", "--role", "viewer")
    _, out, _ = rat(root, "users", "list", "--json")
    users = {u["name"]: u for u in json.loads(out)}
    assert users["carol"]["has_password"] and not users["dave"]["has_password"]
    assert users["dave"]["active_tokens"] == 1
    ws = Workspace.open(root)
    assert ws.auth.verify_password("carol", "pa55word")
    ws.close()
    code, out, _ = rat(root, "users", "remove", "dave")
    assert code == 0 and "1 token" in out
    _, out, _ = rat(root, "users", "list", "--json")
    assert [u["name"] for u in json.loads(out)] == ["carol"]
    assert rat(root, "users", "remove", "dave")[0] == 1


def test_help_does_not_import_fastapi() -> None:
    code = (
        "import sys\n"
        "from ratatouille.cli.main import main\n"
        "sys.argv = ['rat', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'starlette', 'argon2', 'prometheus_client') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "HEAVY []" in proc.stdout
    assert "serve" in proc.stdout and "tokens" in proc.stdout and "users" in proc.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_rat_serve_starts_hints_at_the_first_token_and_stops_cleanly(root: Path, stop: signal.Signals) -> None:
    port = _free_port()
    rat_bin = str(Path(sys.executable).parent / "rat")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAT_")}
    proc = subprocess.Popen(
        [rat_bin, "serve", "--port", str(port), "--project", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "rat serve did not come up"
            time.sleep(0.1)
        _, token, _ = rat(root, "tokens", "create", "--user", "admin", "--role", "admin")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token.strip()}"}, timeout=60) as client:
            assert client.post("/api/v1/query", json={"sql": "SELECT 41 + 1 AS x"}).json()["rows"] == [{"x": 42}]
            assert client.get("/api/v1/tables").status_code == 200
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it
    # stopped (SIGTERM: killed by the signal, which systemd and Docker count as a clean stop;
    # Ctrl-C: the CLI's "Interrupted." and 130)
    assert proc.returncode == (-signal.SIGTERM if stop == signal.SIGTERM else 130), err
    assert err.count("rat tokens create --user admin --role admin") == 1
    assert "Application shutdown complete" in err
    assert "Traceback" not in err
    # The scheduler (Dagster's daemon and its code server) stopped with it.
    deadline = time.monotonic() + 20
    while _processes_of(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_of(root) == []


def _processes_of(root: Path) -> list[str]:
    """Command lines of live processes that mention the project (Dagster's home is inside it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline or f"DAGSTER_HOME={root}" in environ:
            found.append(cmdline)
    return found
