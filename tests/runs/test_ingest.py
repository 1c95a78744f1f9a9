"""Sources as DAG nodes: exactly-once files, changed files, quarantine, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import write_project
from ratatouille.workspace import Workspace
from runs.conftest import write_files

SOURCE = """
name: orders
type: files
path: landing/orders/*.csv
format: csv
columns: {id: bigint, amount: double}
filename_pattern: 'orders_(?P<day>\\d+)\\.csv'
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "ing")
    write_files(root, {"sources/orders.yaml": SOURCE})
    (root / "data" / "landing" / "orders").mkdir(parents=True)
    return root


def drop(root: Path, name: str, text: str) -> Path:
    path = root / "data" / "landing" / "orders" / name
    path.write_text(text)
    return path


def rows(ws: Workspace, sql: str) -> list[dict[str, object]]:
    return ws.query(sql).to_pylist()


def test_files_are_ingested_exactly_once(root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    drop(root, "orders_1.csv", "id,amount\n1,10\n2,20\n")
    ws = open_ws(root)
    first = ws.run(sources_only=True)
    assert first.ok and first.nodes[0].rows_written == 2
    assert rows(ws, "SELECT id, day, _source_file LIKE '%orders_1.csv' AS f FROM bronze.orders ORDER BY id") == [
        {"id": 1, "day": "1", "f": True},
        {"id": 2, "day": "1", "f": True},
    ]
    assert ws.run(sources_only=True).nodes[0].rows_written == 0  # nothing new
    drop(root, "orders_2.csv", "id,amount\n3,30\n")
    assert ws.run(sources_only=True).nodes[0].rows_written == 1
    assert rows(ws, "SELECT count(*) AS n FROM bronze.orders") == [{"n": 3}]


def test_a_changed_file_replaces_its_previous_rows_and_is_logged(
    root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    path = drop(root, "orders_1.csv", "id,amount\n1,10\n2,20\n")
    drop(root, "orders_2.csv", "id,amount\n3,30\n")
    ws = open_ws(root)
    assert ws.run(sources_only=True).ok
    path.write_text("id,amount\n1,11\n2,21\n4,40\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    result = ws.run(sources_only=True)
    assert result.ok
    assert rows(ws, "SELECT id, amount FROM bronze.orders ORDER BY id") == [
        {"id": 1, "amount": 11.0},
        {"id": 2, "amount": 21.0},
        {"id": 3, "amount": 30.0},
        {"id": 4, "amount": 40.0},
    ]
    logs = ws.run_record(result.run_id)["logs"]
    assert any("orders_1.csv changed since it was ingested; re-ingested" in line["message"] for line in logs)


def test_a_file_touched_while_it_is_hashed_is_read_again_next_run(
    root: Path, open_ws: Callable[[Path], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """New files are hashed while they are read: one that changes meanwhile is registered
    without a checksum, so the next run reads it again instead of trusting what it read."""
    from ratatouille.storage.files import Landing

    path = drop(root, "orders_1.csv", "id,amount\n1,10\n2,20\n")
    drop(root, "orders_2.csv", "id,amount\n3,30\n")
    hash_file = Landing.checksum

    def touched_while_hashed(self: Landing, name: str) -> str:
        digest = hash_file(self, name)
        if name == str(path):
            os.utime(path, (time.time() + 5, time.time() + 5))
        return digest

    monkeypatch.setattr(Landing, "checksum", touched_while_hashed)
    ws = open_ws(root)
    assert ws.run(sources_only=True).nodes[0].rows_written == 3
    registry = ws.state.file_records(ws.name, "bronze.orders")
    assert registry[str(path)]["checksum"] == ""
    assert len(registry[str(path).replace("orders_1", "orders_2")]["checksum"]) == 64
    monkeypatch.setattr(Landing, "checksum", hash_file)
    again = ws.run(sources_only=True)
    assert again.ok and again.nodes[0].rows_written == 2
    assert rows(ws, "SELECT count(*) AS n FROM bronze.orders") == [{"n": 3}]  # replaced, not doubled
    logs = ws.run_record(again.run_id)["logs"]
    assert any("orders_1.csv changed since it was ingested" in line["message"] for line in logs)
    assert ws.run(sources_only=True).nodes[0].rows_written == 0  # registered with its checksum now


def test_dirty_rows_are_quarantined_with_line_numbers(root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    drop(root, "orders_1.csv", 'id,amount\n1,10\n2,"unterminated\n3,abc\n4,40,extra\n5,50\n')
    ws = open_ws(root)
    result = ws.run(sources_only=True)
    assert result.ok
    good = [r["id"] for r in rows(ws, "SELECT id FROM bronze.orders ORDER BY id")]
    bad = rows(ws, "SELECT _line, _reason FROM quarantine.bronze_orders ORDER BY _line")
    assert 1 in good and 5 in good
    assert len(good) + len(bad) == 5  # every data line is either in bronze or in quarantine
    assert all(r["_line"] and r["_reason"] for r in bad)
    assert result.nodes[0].rows_quarantined == len(bad)


KILL_RUN = """
import sys
from ratatouille.workspace import Workspace
Workspace.open(sys.argv[1]).run(sources_only=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["publish:before_commit", "publish:after_commit"])
def test_kill_9_while_ingesting_then_rerun_keeps_every_row_exactly_once(
    root: Path, open_ws: Callable[[Path], Workspace], point: str
) -> None:
    for day in range(1, 6):
        drop(root, f"orders_{day}.csv", "id,amount\n" + "".join(f"{day * 100 + i},{i}\n" for i in range(50)))
    proc = subprocess.run(
        [sys.executable, "-c", KILL_RUN, str(root)], env={**os.environ, "RATATOUILLE_FAULT": point}, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ws = open_ws(root)
    rerun = ws.run(sources_only=True)
    assert rerun.ok
    logs = " ".join(line["message"] for line in ws.run_record(rerun.run_id)["logs"])
    if point == "publish:after_commit":  # published, never registered: registered, not read again
        assert rerun.nodes[0].rows_written == 0
        assert "5 file(s) read by run" in logs and "were published but not registered; registered" in logs
    else:  # never published: read again
        assert rerun.nodes[0].rows_written == 250 and "registered" not in logs
    assert ws.run(sources_only=True).ok
    assert rows(ws, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM bronze.orders") == [{"n": 250, "d": 250}]


@pytest.mark.slow
def test_kill_9_in_the_middle_of_reading_files(root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    for day in range(1, 9):
        drop(root, f"orders_{day}.csv", "id,amount\n" + "".join(f"{day * 1_000_000 + i},{i}\n" for i in range(300_000)))
    proc = subprocess.Popen([sys.executable, "-c", KILL_RUN, str(root)], stderr=subprocess.PIPE)
    time.sleep(3)
    proc.kill()
    proc.communicate()
    ws = open_ws(root)
    assert ws.run(sources_only=True).ok
    assert rows(ws, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM bronze.orders") == [
        {"n": 2_400_000, "d": 2_400_000}
    ]


def test_rest_source_through_a_run_keeps_its_cursor_only_after_publish(
    tmp_path: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    from connectors.fake_api import FakeApi, Reply, Request, serve

    records = [{"id": 1, "updated_at": "2024-01-05", "items": [{"sku": "a"}]}, {"id": 2, "updated_at": "2024-02-01"}]
    with serve(FakeApi()) as api:

        @api.route("/v1/orders")
        def _(request: Request) -> Reply:
            since = request.query.get("updated_since", "")
            return Reply({"data": [r for r in records if r["updated_at"] > since]})

        root = write_project(tmp_path / "rest")
        write_files(
            root,
            {
                "sources/shop.yaml": f"""
                    name: shop
                    type: rest
                    base_url: {api.url}/v1
                    paginator: none
                    resources:
                      - name: orders
                        path: /orders
                        data_path: data
                        primary_key: id
                        incremental: {{cursor: updated_at, param: updated_since, initial: "2024-01-01"}}
                """,
                "pipelines/silver/orders.sql": "SELECT id, updated_at FROM {{ ref('bronze.shop_orders') }}",
            },
        )
        ws = open_ws(root)
        first = ws.run()
        assert first.ok, [(n.key, n.error) for n in first.nodes]
        assert rows(ws, "SELECT id, _source FROM bronze.shop_orders ORDER BY id") == [
            {"id": 1, "_source": "shop"},
            {"id": 2, "_source": "shop"},
        ]
        assert rows(ws, "SELECT sku FROM bronze.shop_orders__items") == [{"sku": "a"}]
        records.append({"id": 3, "updated_at": "2024-03-01"})
        second = ws.run(["shop"], sources_only=True)
        assert second.ok
        assert api.calls("/v1/orders")[-1].query["updated_since"] == "2024-02-01"
        assert rows(ws, "SELECT count(*) AS n FROM bronze.shop_orders") == [{"n": 3}]


@pytest.mark.postgres
def test_postgres_source_incremental_through_rat_ingest(
    tmp_path: Path, open_ws: Callable[[Path], Workspace], postgres_url: str
) -> None:
    import psycopg

    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE customers (id int primary key, name text, amount numeric(10,2), "
            "updated_at timestamptz default now())"
        )
        conn.execute(
            "INSERT INTO customers (id, name, amount) SELECT g, 'c' || g, g * 1.5 FROM generate_series(1, 100) g"
        )
    root = write_project(tmp_path / "db")
    write_files(
        root,
        {
            "sources/customers.yaml": f"""
                name: customers
                type: postgres
                connection: {dsn}
                table: public.customers
                incremental: {{cursor: updated_at, primary_key: id}}
            """
        },
    )
    ws = open_ws(root)
    assert ws.run(sources_only=True).ok
    assert rows(ws, "SELECT count(*) AS n, sum(amount) AS s FROM bronze.customers")[0]["n"] == 100
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE customers SET name = 'changed', updated_at = now() + interval '1 minute' WHERE id <= 3")
        conn.execute(
            "INSERT INTO customers (id, name, amount, updated_at) VALUES (101, 'new', 1, now() + interval '1 minute')"
        )
    second = ws.run(sources_only=True)
    assert second.ok
    assert rows(ws, "SELECT count(*) AS n, count(*) FILTER (WHERE name = 'changed') AS c FROM bronze.customers") == [
        {"n": 101, "c": 3}
    ]


@pytest.mark.s3
def test_files_from_an_s3_landing_zone(
    tmp_path: Path, open_ws: Callable[[Path], Workspace], s3_server, s3_prefix
) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        endpoint_override=s3_server.host_port,
        scheme="http",
        access_key=s3_server.access_key_id,
        secret_key=s3_server.secret_access_key,
        region=s3_server.region,
        force_virtual_addressing=False,
    )
    with fs.open_output_stream(f"{s3_server.bucket}/{s3_prefix}/landing/orders/orders_1.csv") as out:
        out.write(b"id,amount\n1,10\n2,20\n")
    root = write_project(
        tmp_path / "s3land",
        f"""
storage:
  landing: {s3_server.url(s3_prefix)}/landing
  s3:
    endpoint: {s3_server.endpoint}
    access_key_id: {s3_server.access_key_id}
    secret_access_key: {s3_server.secret_access_key}
""",
    )
    write_files(root, {"sources/orders.yaml": SOURCE})
    ws = open_ws(root)
    first = ws.run(sources_only=True)
    assert first.ok, [(n.key, n.error) for n in first.nodes]
    assert rows(ws, "SELECT count(*) AS n, min(_source_file) LIKE 's3://%' AS s3 FROM bronze.orders") == [
        {"n": 2, "s3": True}
    ]
    assert ws.run(sources_only=True).nodes[0].rows_written == 0  # registered: not read twice
