"""The engine is air-gapped: extensions come from wheels, nothing is downloaded."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from ratatouille.config import EngineConfig
from ratatouille.engine import OFFLINE_REPOSITORY, connect, load_extensions, resolve_profile
from ratatouille.errors import QueryError
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


@pytest.mark.parametrize("sql", ["INSTALL spatial", "FORCE INSTALL httpfs", "install 'spatial'"])
def test_install_fails_fast_from_an_empty_local_repository(tmp_path: Path, sql: str) -> None:
    import duckdb

    con = connect(resolve_profile("tiny", EngineConfig()), tmp_path / "tmp")
    offline = str(tmp_path / "tmp" / OFFLINE_REPOSITORY)
    settings = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('custom_extension_repository', "
            "'autoinstall_extension_repository', 'allow_community_extensions')"
        ).fetchall()
    )
    assert settings == {
        "custom_extension_repository": offline,
        "autoinstall_extension_repository": offline,
        "allow_community_extensions": "false",
    }
    started = time.perf_counter()
    with pytest.raises(duckdb.IOException) as caught:
        con.execute(sql)
    assert time.perf_counter() - started < 2
    text = str(caught.value)
    # DuckDB looked for a local file in the offline folder: no URL was tried.
    assert "Failed to install local extension" in text and offline in text
    assert "http://" not in text and "https://" not in text
    assert not (tmp_path / "tmp" / OFFLINE_REPOSITORY).exists()
    con.close()


def test_install_in_a_query_says_extensions_are_never_downloaded(tmp_path: Path) -> None:
    (tmp_path / "ratatouille.yaml").write_text("profile: tiny\n")
    ws = Workspace.open(tmp_path)
    for sql in ("INSTALL spatial", "LOAD spatial"):
        started = time.perf_counter()
        with pytest.raises(QueryError) as caught:
            ws.query(sql)
        assert time.perf_counter() - started < 2
        assert "Ratatouille never downloads DuckDB extensions" in str(caught.value)
        assert "avro, iceberg, httpfs, excel" in str(caught.value)
    assert ws.query("SELECT 42 AS answer").column("answer")[0].as_py() == 42
    ws.close()
