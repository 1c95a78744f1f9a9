"""The service fixtures of ``fixtures.services`` work: S3 (weed mini), PostgreSQL, MariaDB, and they clean up."""

from __future__ import annotations

import importlib.resources
import socket
import tempfile
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pytest
from pyarrow import fs as pafs
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy import create_engine, text

from fixtures.services import (
    LOOPBACK,
    S3Server,
    mysql_database,
    mysql_database_exists,
    mysql_query,
    pg_database_exists,
    postgres_database,
    run_weed_mini,
)


def _arrow_s3(s3: S3Server) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=s3.endpoint,
        access_key=s3.access_key_id,
        secret_key=s3.secret_access_key,
        scheme="http",
        region=s3.region,
        force_virtual_addressing=False,
    )


def _duckdb_with_httpfs() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with httpfs loaded from its wheel (never downloaded)."""
    extensions = Path(str(importlib.resources.files("duckdb_extension_httpfs"))) / "extensions"
    path = extensions / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{path}'")
    return con


@pytest.mark.s3
def test_s3_put_get_list_with_pyarrow(s3_server: S3Server, s3_prefix: str) -> None:
    s3 = _arrow_s3(s3_server)
    base = f"{s3_server.bucket}/{s3_prefix}"
    with s3.open_output_stream(f"{base}/a/one.txt") as out:
        out.write(b"hello")
    with s3.open_output_stream(f"{base}/b.txt") as out:
        out.write(b"world")

    with s3.open_input_stream(f"{base}/a/one.txt") as src:
        assert src.read() == b"hello"
    files = s3.get_file_info(pafs.FileSelector(base, recursive=True))
    assert sorted(f.path for f in files if f.type == pafs.FileType.File) == [f"{base}/a/one.txt", f"{base}/b.txt"]


@pytest.mark.s3
def test_s3_prefixes_are_unique(s3_prefix: str, s3_server: S3Server) -> None:
    assert s3_prefix.startswith("t-")
    assert s3_server.url(s3_prefix) == f"s3://{s3_server.bucket}/{s3_prefix}"
    s3 = _arrow_s3(s3_server)
    assert s3.get_file_info(pafs.FileSelector(f"{s3_server.bucket}/{s3_prefix}", allow_not_found=True)) == []


@pytest.mark.s3
def test_s3_copy_and_read_with_duckdb_httpfs(s3_server: S3Server, s3_prefix: str) -> None:
    con = _duckdb_with_httpfs()
    try:
        con.execute(
            f"CREATE SECRET (TYPE s3, KEY_ID '{s3_server.access_key_id}', SECRET '{s3_server.secret_access_key}', "
            f"REGION '{s3_server.region}', ENDPOINT '{s3_server.host_port}', URL_STYLE 'path', USE_SSL false)"
        )
        url = f"{s3_server.url(s3_prefix)}/x.parquet"
        con.execute(f"COPY (SELECT 42 AS x) TO '{url}' (FORMAT parquet)")
        assert con.execute(f"SELECT x FROM read_parquet('{url}')").fetchall() == [(42,)]
        assert con.execute(f"SELECT file FROM glob('{s3_server.url(s3_prefix)}/*')").fetchall() == [(url,)]
    finally:
        con.close()
    # Written by DuckDB, visible to Arrow: both clients talk to the same server.
    info = _arrow_s3(s3_server).get_file_info(url.removeprefix("s3://"))
    assert info.type == pafs.FileType.File


@pytest.mark.s3
@pytest.mark.postgres
def test_pyiceberg_sql_catalog_on_postgres_and_s3(s3_server: S3Server, s3_prefix: str, postgres_url: str) -> None:
    catalog = SqlCatalog(
        "t",
        uri=postgres_url,
        warehouse=s3_server.url(s3_prefix),
        **{
            "s3.endpoint": s3_server.endpoint,
            "s3.access-key-id": s3_server.access_key_id,
            "s3.secret-access-key": s3_server.secret_access_key,
            "s3.region": s3_server.region,
            "s3.force-virtual-addressing": "false",
        },
    )
    try:
        catalog.create_namespace("sales")
        data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": pa.array(["a", "b", "c"], pa.string())})
        table = catalog.create_table("sales.orders", schema=data.schema)
        table.append(data)
        loaded = catalog.load_table("sales.orders")
        assert loaded.scan().to_arrow().sort_by("id").equals(data)
        assert loaded.metadata_location.startswith(s3_server.url(s3_prefix) + "/")
    finally:
        catalog.engine.dispose()


@pytest.mark.postgres
def test_postgres_url_is_a_fresh_database(postgres_url: str) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    assert postgres_url.startswith(f"postgresql+psycopg://postgres@{LOOPBACK}:5432/rat_test_")
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == name
            assert conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar_one() == 0
            conn.execute(text("CREATE TABLE t (id int)"))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_database_is_dropped_even_with_open_sessions() -> None:
    with postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        assert pg_database_exists(name)
        # A session left open by the code under test must not block the drop.
        lingering = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert not pg_database_exists(name)
    finally:
        lingering.close()


def test_mysql_url_database_can_hold_a_table(mysql_url: str) -> None:
    assert mysql_url.startswith(f"mysql://root@{LOOPBACK}:3306/rat_test_")
    mysql_query(
        mysql_url, "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20)); INSERT INTO t VALUES (1, 'a'), (2, 'b')"
    )
    assert mysql_query(mysql_url, "SELECT id, name FROM t ORDER BY id") == [["1", "a"], ["2", "b"]]
    assert mysql_query(mysql_url, "SELECT DATABASE()") == [[mysql_url.rsplit("/", 1)[1]]]


def test_mysql_database_is_dropped() -> None:
    with mysql_database() as url:
        name = url.rsplit("/", 1)[1]
        assert mysql_database_exists(name)
    assert not mysql_database_exists(name)


def _listening_inet_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP or bound UDP socket of ``pid``, from /proc (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[len("socket:[") : -1])
    found: set[tuple[str, int]] = set()
    for table, family in (
        ("tcp", socket.AF_INET),
        ("tcp6", socket.AF_INET6),
        ("udp", socket.AF_INET),
        ("udp6", socket.AF_INET6),
    ):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes or (table.startswith("tcp") and state != "0A"):  # 0A = LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc prints the address as host-order 32-bit words.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, words), int(port_hex, 16)))
    return found


def _tcp_listeners_on(ports: set[int]) -> set[int]:
    """Which of ``ports`` something listens on (any address), from /proc/net/tcp{,6}."""
    busy = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[1].split(":")[1], 16)
            if fields[3] == "0A" and port in ports:
                busy.add(port)
    return busy


def _process_group_members(pgid: int) -> list[int]:
    """Pids of live processes in process group ``pgid``, from /proc (Linux)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:  # after "pid (comm)": state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


@pytest.mark.s3
def test_weed_mini_listens_on_loopback_only_and_stops_cleanly(s3_server: S3Server, tmp_path: Path) -> None:
    # A second server beside the session one: ports do not clash.
    with run_weed_mini(tmp_path) as weed:
        assert weed.server.endpoint != s3_server.endpoint
        listening = _listening_inet_sockets(weed.process.pid)
        assert {addr for addr, _ in listening} == {LOOPBACK}
        assert {port for _, port in listening} == set(weed.ports.values())
        assert weed.log_path.is_file()
    assert weed.process.returncode is not None
    assert _process_group_members(weed.process.pid) == []
    assert _tcp_listeners_on(set(weed.ports.values())) == set()
    ours = {f"-{port}.sock" for port in weed.ports.values()}
    leftovers = [p for p in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock") if p.name[p.name.rfind("-") :] in ours]
    assert leftovers == []
