"""The engine is air-gapped: extensions come from wheels, nothing is downloaded."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ratatouille.config import EngineConfig
from ratatouille.engine import connect, load_extensions, resolve_profile
from ratatouille.workspace import Workspace


def test_profiles_set_limits() -> None:
    tiny = resolve_profile("tiny", EngineConfig())
    assert (tiny.memory_limit, tiny.threads, tiny.max_parallel_pipelines) == ("1GB", 1, 1)
    custom = resolve_profile("tiny", EngineConfig(memory_limit="300MB", threads=2))
    assert (custom.memory_limit, custom.threads) == ("300MB", 2)
    assert resolve_profile("auto", EngineConfig()).name in ("tiny", "small", "medium", "large")


def test_no_network_is_attempted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open a session, load extensions, write and read an Iceberg table with sockets forbidden."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network access attempted in an air-gapped test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no extension cache to fall back on
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "ratatouille.yaml").write_text("profile: tiny\n")
    ws = Workspace.open(tmp_path / "p")
    ws.append("silver.t", "SELECT 1 AS id")
    assert ws.query("SELECT count(*) AS n FROM silver.t").column("n")[0].as_py() == 1
    settings = dict(
        ws.con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('autoinstall_known_extensions', 'autoload_known_extensions', 'memory_limit', 'threads')"
        ).fetchall()
    )
    assert settings["autoinstall_known_extensions"] == "false"
    assert settings["autoload_known_extensions"] == "false"
    assert settings["threads"] == "1"
    loaded = {r[0] for r in ws.con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert {"iceberg", "avro"} <= loaded  # loaded from the wheels when the first table was read
    load_extensions(ws.con, "httpfs")
    ws.close()
    assert attempts == []
    assert not (tmp_path / "home" / ".duckdb").exists()


def test_unknown_extension_is_not_downloaded(tmp_path: Path) -> None:
    con = connect(resolve_profile("tiny", EngineConfig()), tmp_path / "tmp")
    import duckdb

    with pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM st_read('x.shp')")  # spatial: not installed, must not autoinstall
    con.close()
