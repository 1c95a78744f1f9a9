"""Database sources: how to read a PostgreSQL / MySQL table into Arrow batches, measured.

``run(args)`` (called by ``bench/run.py``) creates a scratch database on the local servers
(PostgreSQL 127.0.0.1:5432 as ``postgres``, MariaDB/MySQL 127.0.0.1:3306 as ``root``; override
with ``RAT_BENCH_POSTGRES_URL`` / ``RAT_BENCH_MYSQL_URL``, admin URLs without a database), fills
a table of 12 mixed-type columns in SQL (``generate_series`` / a sequence), then reads it whole
with each method in a fresh child process (this file run as ``bench_database.py child ...``),
which reports its wall time (imports and connecting included) and its peak RSS (``VmHWM``):

* ``ratatouille``: the ``DatabaseConnector`` (what ``rat ingest`` runs);
* ``duckdb attach``: DuckDB's scanner through ``ATTACH ... (READ_ONLY)``, streamed
  with ``to_arrow_reader`` (PostgreSQL: parallel ctid ranges);
* ``duckdb postgres_query`` / ``duckdb mysql_query``: the same, one pass-through query;
* ``connectorx``: ``read_sql(..., return_type="arrow")`` (materializes the whole result),
  also partitioned on the key (4 partitions), and ``return_type="arrow_stream"`` (batches);
* ``psycopg cursor`` / ``pymysql SSCursor``: a server-side cursor, rows turned into Arrow batches;
* ``dlt sql_table``: dlt's SQL source with the pyarrow and connectorx backends, iterated
  without a pipeline (HOME, ``DLT_DATA_DIR`` and the working directory in a temp dir,
  telemetry off: nothing is written elsewhere and nothing is downloaded).

Each child also reports the Arrow types of the money, timestamptz and UUID columns, so the table
shows which methods keep them. Usage outside the runner: ``python bench/bench_database.py
[--quick] [--only postgres|mysql]`` prints the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import Result, peak_rss_mb, report, result, run_child  # noqa: E402

NAME = "database"
BENCHMARKS = ("postgres", "mysql")
PG_ROWS, MYSQL_ROWS = 1_000_000, 100_000
QUICK_PG_ROWS, QUICK_MYSQL_ROWS = 100_000, 20_000
BATCH_ROWS = 100_000
RSS_TARGET_MB = 500.0
OVERHEAD_TARGET = 1.3  # the connector against the raw DuckDB scan it is built on
MAX_REPEATS = 3
SINGLE_RUN = {"dlt sql_table (pyarrow)", "psycopg cursor", "pymysql SSCursor", "dlt sql_table (connectorx)"}
TABLE = "bench_source"
CHECKED_COLUMNS = ("amount", "created_at", "uid")

PG_METHODS = (
    "ratatouille",
    "duckdb attach",
    "duckdb postgres_query",
    "connectorx",
    "connectorx partitioned",
    "connectorx arrow_stream",
    "psycopg cursor",
    "dlt sql_table (connectorx)",
    "dlt sql_table (pyarrow)",
)
MYSQL_METHODS = (
    "ratatouille",
    "duckdb attach",
    "duckdb mysql_query",
    "connectorx",
    "connectorx partitioned",
    "connectorx arrow_stream",
    "pymysql SSCursor",
    "dlt sql_table (pyarrow)",
)

# -- the data ---------------------------------------------------------------------------------

PG_CREATE = f"""
CREATE TABLE public.{TABLE} (
  id bigint PRIMARY KEY, customer_id integer, amount numeric(12,2), ratio double precision, name text,
  created_at timestamptz, updated_at timestamp, day date, flag boolean, uid uuid, payload jsonb, tags text[]
);
INSERT INTO public.{TABLE}
SELECT i, i % 1000, ((i::bigint * 7919) % 1000000) / 100.0, i / 7.0, 'customer name ' || i,
  timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', timestamp '2024-01-01' + i * interval '1 second',
  date '2020-01-01' + (i % 2000), i % 3 = 0, md5(i::text)::uuid, jsonb_build_object('i', i, 'k', 'value'),
  ARRAY['a' || (i % 10), 'b']
FROM generate_series(1, %(rows)s) AS i;
VACUUM ANALYZE public.{TABLE};
"""

MYSQL_CREATE = f"""
CREATE TABLE {TABLE} (
  id bigint PRIMARY KEY, customer_id int, amount decimal(12,2), ratio double, name varchar(100),
  created_at timestamp(6) NULL, updated_at datetime(6), day date, flag tinyint(1), uid char(36), payload json,
  qty int unsigned
)
"""

MYSQL_INSERT = f"""
INSERT INTO {TABLE}
SELECT n, n % 1000, ((n * 7919) % 1000000) / 100.0, n / 7.0, concat('customer name ', n),
  timestamp('2024-01-01') + interval n second, timestamp('2024-01-01') + interval n second,
  date('2020-01-01') + interval (n % 2000) day, n % 3 = 0, md5(n), json_object('i', n, 'k', 'value'), n % 100000
FROM ({{numbers}}) AS numbers
"""


def _pg_admin_url() -> str:
    return os.environ.get("RAT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def _mysql_admin_url() -> str:
    return os.environ.get("RAT_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306")


def _pg_create(rows: int) -> str:
    """A fresh database with the bench table; returns its URL."""
    import psycopg
    from psycopg import sql

    name = f"rat_bench_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin_url().rstrip("/")
    with psycopg.connect(admin + "/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{admin}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in PG_CREATE.replace("%(rows)s", str(int(rows))).split(";"):
            if statement.strip():
                conn.execute(statement)
    return url


def _pg_drop(url: str) -> None:
    import psycopg
    from psycopg import sql

    admin, name = url.rsplit("/", 1)
    with psycopg.connect(admin + "/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _mysql_connect(url: str, database: str | None = None) -> Any:
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=database,
        autocommit=True,
    )


def _mysql_create(rows: int) -> str:
    """A fresh database with the bench table (MariaDB's sequence engine, else a recursive CTE)."""
    name = f"rat_bench_{uuid.uuid4().hex[:8]}"
    admin = _mysql_admin_url().rstrip("/")
    conn = _mysql_connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(f"USE `{name}`")
            cur.execute(MYSQL_CREATE)
            try:
                cur.execute(MYSQL_INSERT.format(numbers=f"SELECT seq AS n FROM seq_1_to_{int(rows)}"))
            except Exception:  # MySQL: no sequence engine
                cur.execute(f"SET SESSION cte_max_recursion_depth = {int(rows) + 1}")
                numbers = f"WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {int(rows)}) "
                cur.execute(MYSQL_INSERT.format(numbers=numbers + "SELECT n FROM s"))
            cur.execute(f"ANALYZE TABLE {TABLE}")
    finally:
        conn.close()
    return f"{admin}/{name}"


def _mysql_drop(url: str) -> None:
    admin, name = url.rsplit("/", 1)
    conn = _mysql_connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


# -- the children -----------------------------------------------------------------------------


def _duckdb(extension: str) -> Any:
    import duckdb

    from ratatouille.engine import extension_path

    con = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "threads": max(1, min(4, os.cpu_count() or 1)),
            "memory_limit": "1GB",
        }
    )
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"LOAD '{extension_path(extension)}'")
    return con


def _pg_dsn(url: str) -> str:
    parts = urlsplit(url)
    dsn = f"host={parts.hostname} port={parts.port or 5432} dbname={parts.path.lstrip('/')}"
    dsn += f" user={parts.username or 'postgres'}"
    return dsn + (f" password={parts.password}" if parts.password else "")


def _mysql_dsn(url: str) -> str:
    parts = urlsplit(url)
    dsn = f"host={parts.hostname} port={parts.port or 3306} database={parts.path.lstrip('/')}"
    dsn += f" user={parts.username or 'root'}"
    return dsn + (f" passwd={parts.password}" if parts.password else "")


def _batches_of_rows(names: list[str], fetch: Any, batch_rows: int) -> Any:
    """Arrow batches from a DB-API cursor's ``fetchmany`` (column-wise ``pa.array`` conversion)."""
    import pyarrow as pa

    while True:
        rows = fetch(batch_rows)
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        yield pa.RecordBatch.from_arrays([pa.array(c) for c in columns], names=names)


def _read(kind: str, method: str, url: str, batch_rows: int, workdir: Path) -> Any:
    """Yield the Arrow batches of the whole table, read the ``method`` way."""
    sqlalchemy_url = url.replace("postgresql://", "postgresql+psycopg://").replace("mysql://", "mysql+pymysql://")
    select = f"SELECT * FROM {TABLE}"
    if method == "ratatouille":
        import logging

        from ratatouille.connectors.base import ReadContext
        from ratatouille.connectors.database.config import DatabaseSourceConfig
        from ratatouille.connectors.database.reader import DatabaseConnector

        config = DatabaseSourceConfig(name="bench", type=kind, connection=url, table=TABLE, batch_rows=batch_rows)
        (output,) = list(DatabaseConnector(config).read(ReadContext(state={}, log=logging.getLogger("bench"))))
        yield from output.batches
    elif method in ("duckdb attach", "duckdb postgres_query", "duckdb mysql_query"):
        con = _duckdb("postgres_scanner" if kind == "postgres" else "mysql_scanner")
        if kind == "postgres":
            con.execute(f"ATTACH '{_pg_dsn(url)}' AS src (TYPE postgres, READ_ONLY)")
            source = f"src.public.{TABLE}" if method == "duckdb attach" else f"postgres_query('src', '{select}')"
        else:
            con.execute("SET mysql_session_time_zone = '+00:00'")
            con.execute(f"ATTACH '{_mysql_dsn(url)}' AS src (TYPE mysql, READ_ONLY)")
            source = f"src.{TABLE}" if method == "duckdb attach" else f"mysql_query('src', '{select}')"
        yield from con.sql(f"SELECT * FROM {source}").to_arrow_reader(batch_rows)
        con.close()
    elif method.startswith("connectorx"):
        import connectorx as cx

        if method == "connectorx arrow_stream":
            yield from cx.read_sql(url, select, return_type="arrow_stream", batch_size=batch_rows)
            return
        options: dict[str, Any] = {}
        if method == "connectorx partitioned":
            options = {"partition_on": "id", "partition_num": 4}
        table = cx.read_sql(url, select, return_type="arrow", **options)
        yield from table.to_batches(batch_rows)
    elif method == "psycopg cursor":
        import psycopg

        with psycopg.connect(url) as conn, conn.cursor(name="bench") as cur:
            cur.itersize = batch_rows
            cur.execute(select)
            names = [d.name for d in cur.description or []]
            yield from _batches_of_rows(names, cur.fetchmany, batch_rows)
    elif method == "pymysql SSCursor":
        import pymysql.cursors

        conn = _mysql_connect(url, urlsplit(url).path.lstrip("/"))
        conn.cursorclass = pymysql.cursors.SSCursor
        try:
            with conn.cursor(pymysql.cursors.SSCursor) as cur:
                cur.execute(select)
                names = [d[0] for d in cur.description]
                yield from _batches_of_rows(names, cur.fetchmany, batch_rows)
        finally:
            conn.close()
    elif method.startswith("dlt sql_table"):
        os.environ.update(
            {
                "HOME": str(workdir),
                "DLT_DATA_DIR": str(workdir / "dlt"),
                "RUNTIME__DLTHUB_TELEMETRY": "false",
                "DLT_TELEMETRY": "false",
            }
        )
        os.chdir(workdir)
        from dlt.sources.sql_database import sql_table

        backend = "connectorx" if "connectorx" in method else "pyarrow"
        resource = sql_table(
            credentials=sqlalchemy_url,
            table=TABLE,
            backend=backend,
            chunk_size=batch_rows,
            reflection_level="full_with_precision",
        )
        for item in resource:
            yield from (item.to_batches() if hasattr(item, "to_batches") else [item])
    else:
        raise SystemExit(f"unknown method {method!r}")


def child_main(argv: list[str]) -> None:
    """``child KIND METHOD URL BATCH_ROWS``: read the table, report time, peak RSS and types."""
    kind, method, url, batch_rows = argv[0], argv[1], argv[2], int(argv[3])
    with tempfile.TemporaryDirectory(prefix="rat-bench-db-") as workdir:
        started = time.perf_counter()
        rows = batches = 0
        types: dict[str, str] = {}
        for batch in _read(kind, method, url, batch_rows, Path(workdir)):
            if not types:
                types = {c: str(batch.schema.field(c).type) for c in CHECKED_COLUMNS if c in batch.schema.names}
            rows += batch.num_rows
            batches += 1
        seconds = time.perf_counter() - started
    report({"rows": rows, "batches": batches, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "types": types})


# -- the parent -------------------------------------------------------------------------------


def _measure(kind: str, methods: tuple[str, ...], url: str, rows: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Median time and max peak RSS per method; repeats go round-robin so load changes hit every method alike."""
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    failed: dict[str, str] = {}
    for repeat in range(repeats):
        for method in methods:
            if method in failed or (repeat and method in SINGLE_RUN):
                continue
            argv = [sys.executable, __file__, "child", kind, method, url, str(BATCH_ROWS)]
            try:
                payload = run_child(argv)
            except RuntimeError as exc:
                failed[method] = str(exc).splitlines()[-1][:300]
                print(f"    {method}: FAILED {failed[method]}", flush=True)
                continue
            if payload["rows"] != rows:
                raise RuntimeError(f"{kind} {method} read {payload['rows']} rows, expected {rows}")
            runs[method].append(payload)
            print(f"    {method}: {payload['seconds']:.2f} s, peak RSS {payload['peak_rss_mb']:.0f} MB", flush=True)
    measured: dict[str, dict[str, Any]] = {}
    for method in methods:
        if method in failed:
            measured[method] = {"error": failed[method]}
            continue
        done = runs[method]
        measured[method] = {
            **done[0],
            "seconds": statistics.median(r["seconds"] for r in done),
            "rss": max(r["peak_rss_mb"] for r in done),
            "runs": len(done),
            "all_seconds": [round(r["seconds"], 2) for r in done],
        }
    for method, m in measured.items():
        if "error" not in m:
            print(
                f"  {kind} {method}: median {m['seconds']:.2f} s of {m['all_seconds']}, peak RSS {m['rss']:.0f} MB, "
                f"types {m['types']}",
                flush=True,
            )
    return measured


def _rows_for(kind: str, measured: dict[str, dict[str, Any]], rows: int) -> list[Result]:
    bench = "pg-read" if kind == "postgres" else "mysql-read"
    ours = measured.get("ratatouille", {})
    raw = measured.get("duckdb attach" if kind == "postgres" else "duckdb mysql_query", {})
    results: list[Result] = []
    for method, m in measured.items():
        if "error" in m:
            results.append(
                result(f"{bench}-time", f"{method}: {rows:,} rows", float("nan"), "s", details={"error": m["error"]})
            )
            continue
        details = {
            "types": m["types"],
            "batches": m["batches"],
            "seconds_each_run": m["all_seconds"],
            "peak_rss_mb": m["rss"],
        }
        if method == "ratatouille" and "seconds" in raw:
            results.append(
                result(
                    f"{bench}-time",
                    f"{method}: {rows:,} rows",
                    m["seconds"],
                    "s",
                    reference=raw["seconds"],
                    reference_label="the raw DuckDB scan the connector uses, same table",
                    target=f"<= {OVERHEAD_TARGET}x reference",
                    ok=m["seconds"] <= OVERHEAD_TARGET * raw["seconds"],
                    details=details,
                )
            )
        else:
            results.append(result(f"{bench}-time", f"{method}: {rows:,} rows", m["seconds"], "s", details=details))
    for method, m in measured.items():
        if "error" in m:
            continue
        bounded = method == "ratatouille"
        results.append(
            result(
                f"{bench}-peak-rss",
                f"{method}: {rows:,} rows",
                m["rss"],
                "MB",
                target=f"< {RSS_TARGET_MB:.0f} MB" if bounded else None,
                ok=m["rss"] < RSS_TARGET_MB if bounded else None,
                details={"types": m["types"]},
            )
        )
    if "seconds" in ours:
        results.append(
            result(
                f"{bench}-rows-per-second",
                "ratatouille",
                rows / ours["seconds"],
                "rows/s",
                details={"batches": ours["batches"]},
            )
        )
    return results


def run(args: argparse.Namespace) -> list[Result]:
    """Run the database benchmarks (both, or the one named by ``args.only``)."""
    only = getattr(args, "only", None)
    only = only if only in BENCHMARKS else None
    quick = bool(getattr(args, "quick", False))
    repeats = max(1, min(int(getattr(args, "repeats", MAX_REPEATS) or MAX_REPEATS), MAX_REPEATS))
    results: list[Result] = []
    if only in (None, "postgres"):
        rows = QUICK_PG_ROWS if quick else PG_ROWS
        print(f"  postgres: creating {rows:,} rows ...", flush=True)
        url = _pg_create(rows)
        try:
            results += _rows_for("postgres", _measure("postgres", PG_METHODS, url, rows, repeats), rows)
        finally:
            _pg_drop(url)
    if only in (None, "mysql"):
        rows = QUICK_MYSQL_ROWS if quick else MYSQL_ROWS
        print(f"  mysql: creating {rows:,} rows ...", flush=True)
        url = _mysql_create(rows)
        try:
            results += _rows_for("mysql", _measure("mysql", MYSQL_METHODS, url, rows, repeats), rows)
        finally:
            _mysql_drop(url)
    return results


def main(argv: list[str] | None = None) -> None:
    """Run standalone and print the result rows as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PG_ROWS:,} / {QUICK_MYSQL_ROWS:,} rows")
    parser.add_argument("--only", choices=BENCHMARKS, default=None)
    parser.add_argument("--repeats", type=int, default=MAX_REPEATS)
    args = parser.parse_args(argv)
    for row in run(args):
        print(json.dumps(row, default=str))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        main()
