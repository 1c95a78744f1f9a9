"""Files source: CSV ingest throughput of the POS sales files through the files connector, against DuckDB.

``run(args)`` (called by ``bench/run.py``) generates the POS sample once with
``generate_pos(dir, rows=N)`` (N = 10M, 1M with ``--quick``; cached under
``<tmp>/rat-bench-files/pos-N`` and reused by later runs), then reads ``sales/*.csv`` in a fresh
child process per measurement (this file run as ``bench_files.py child MODE ...``), each
reporting its wall time and its peak RSS (``VmHWM``):

* ``ratatouille``: ``FilesConnector.read`` with its own connection (profile ``small``: 2GB,
  2 threads), every output's batches written to Parquet with ``pyarrow.parquet.ParquetWriter``
  (one file per source file, as the writer commits file by file): the connector's overhead,
  sniffing, rejects bookkeeping and the ``_source_file`` / ``_ingested_at`` columns included;
* ``duckdb``: ``COPY (SELECT * FROM read_csv('<dir>/sales/*.csv')) TO 'x.parquet' (FORMAT parquet)``
  with the same ``memory_limit`` and ``threads``.

Both write snappy Parquet (the default of each). Target: the connector within 1.5x of DuckDB's
time. The two alternate, ``repeats`` times each (at most 3), and the medians are compared.
Usage outside the runner: ``python bench/bench_files.py [--quick] [--rows N] [--repeats R]``
prints the result rows as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import Result, peak_rss_mb, report, result, run_child  # noqa: E402

NAME = "files"
BENCHMARKS = ("csv",)
ROWS, QUICK_ROWS = 10_000_000, 1_000_000
MAX_REPEATS = 3
TARGET = 1.5
PROFILE = "small"
BATCH_ROWS = 100_000
CACHE = Path(tempfile.gettempdir()) / "rat-bench-files"
REFERENCE_LABEL = "DuckDB COPY (SELECT * FROM read_csv('sales/*.csv')) TO Parquet, same memory_limit and threads"


# -- data ---------------------------------------------------------------------------------


def pos_data(rows: int) -> tuple[Path, int]:
    """The POS landing directory for ``rows`` sales rows (generated once, then reused) and its row count."""
    folder = CACHE / f"pos-{rows}"
    marker = folder / ".complete"
    if marker.exists():
        return folder, int(marker.read_text())
    from ratatouille.sample.pos import generate_pos

    shutil.rmtree(folder, ignore_errors=True)
    print(f"  generating the POS sample ({rows:,} rows) in {folder} ...", flush=True)
    summary = generate_pos(folder, rows=rows)
    marker.write_text(str(summary.rows))
    return folder, summary.rows


def _limits() -> tuple[str, int]:
    from ratatouille.config import EngineConfig
    from ratatouille.engine import resolve_profile

    profile = resolve_profile(PROFILE, EngineConfig())
    return profile.memory_limit, profile.threads


# -- children -----------------------------------------------------------------------------


def _child_rat(opts: argparse.Namespace) -> dict[str, Any]:
    import logging

    import pyarrow.parquet as pq

    from ratatouille.config import EngineConfig, S3Config
    from ratatouille.connectors.base import ReadContext
    from ratatouille.connectors.files import FilesConnector, FilesSourceConfig
    from ratatouille.engine import resolve_profile
    from ratatouille.storage.files import Landing

    config = FilesSourceConfig.model_validate({"name": "sales", "type": "files", "path": "landing/sales/*.csv"})
    connector = FilesConnector(
        config,
        landing=Landing(str(opts.data), S3Config()),
        profile=resolve_profile(PROFILE, EngineConfig()),
        temp_directory=opts.out / "tmp",
    )
    connector.connection()  # open DuckDB before the clock starts, as the ingestion layer's would be
    started = time.perf_counter()
    rows = quarantined = files = 0
    ctx = ReadContext(state={}, log=logging.getLogger("bench.files"), batch_rows=BATCH_ROWS)
    for index, output in enumerate(connector.read(ctx)):
        writer = None
        for batch in output.batches:
            if writer is None:
                writer = pq.ParquetWriter(opts.out / f"part-{index:05d}.parquet", batch.schema)
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is not None:
            writer.close()
        quarantined += len(output.quarantine)
        files += 1
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    connector.close()
    size = sum(p.stat().st_size for p in opts.out.glob("*.parquet"))
    return {
        "seconds": seconds,
        "peak_rss_mb": peak,
        "rows": rows,
        "quarantined": quarantined,
        "files": files,
        "bytes": size,
    }


def _child_duck(opts: argparse.Namespace) -> dict[str, Any]:
    import duckdb

    (opts.out / "tmp").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={"memory_limit": opts.memory_limit, "threads": opts.threads, "temp_directory": str(opts.out / "tmp")}
    )
    target = opts.out / "duck.parquet"
    source = str(opts.data / "sales" / "*.csv").replace("'", "''")
    started = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM read_csv('{source}')) TO '{target}' (FORMAT parquet)")
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    row = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()
    con.close()
    return {"seconds": seconds, "peak_rss_mb": peak, "rows": int(row[0]) if row else 0, "bytes": target.stat().st_size}


_CHILDREN = {"rat": _child_rat, "duck": _child_duck}


def child_main(argv: list[str]) -> None:
    """Run one measurement in this (fresh) process and print its result as JSON."""
    parser = argparse.ArgumentParser(prog="bench_files.py child")
    parser.add_argument("mode", choices=sorted(_CHILDREN))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--memory-limit", required=True)
    parser.add_argument("--threads", type=int, required=True)
    opts = parser.parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    report(_CHILDREN[opts.mode](opts))


# -- parent -------------------------------------------------------------------------------


def _measure(mode: str, data: Path, scratch: Path, memory_limit: str, threads: int) -> dict[str, Any]:
    out = scratch / f"{mode}-{time.monotonic_ns()}"
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "child",
        mode,
        "--data",
        str(data),
        "--out",
        str(out),
        "--memory-limit",
        memory_limit,
        "--threads",
        str(threads),
    ]
    try:
        return run_child(argv)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def run(args: argparse.Namespace) -> list[Result]:
    """Run the CSV ingest benchmark."""
    quick = bool(getattr(args, "quick", False))
    rows = int(getattr(args, "rows", None) or (QUICK_ROWS if quick else ROWS))
    repeats = max(1, min(int(getattr(args, "repeats", MAX_REPEATS) or MAX_REPEATS), MAX_REPEATS))
    data, expected = pos_data(rows)
    memory_limit, threads = _limits()
    scratch = Path(tempfile.mkdtemp(prefix="rat-bench-files-"))
    rat: list[dict[str, Any]] = []
    duck: list[dict[str, Any]] = []
    try:
        for i in range(repeats):
            print(f"  csv: {expected:,} rows, run {i + 1}/{repeats}: connector then DuckDB ...", flush=True)
            rat.append(_measure("rat", data, scratch, memory_limit, threads))
            duck.append(_measure("duck", data, scratch, memory_limit, threads))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rat_s, duck_s = _median(rat, "seconds"), _median(duck, "seconds")
    details = {
        "ratatouille": rat,
        "reference": duck,
        "memory_limit": memory_limit,
        "threads": threads,
        "data": str(data),
    }
    complete = all(r["rows"] == expected and r["quarantined"] == 0 for r in rat) and all(
        d["rows"] == expected for d in duck
    )
    return [
        result(
            "files-csv",
            f"{expected:,} POS rows, {rat[0]['files']} files: time (median of {repeats})",
            rat_s,
            "s",
            reference=duck_s,
            reference_label=REFERENCE_LABEL,
            target=f"<= {TARGET}x reference",
            ok=rat_s <= TARGET * duck_s,
            details=details,
        ),
        result(
            "files-csv",
            "throughput",
            expected / rat_s,
            "rows/s",
            reference=expected / duck_s,
            reference_label=REFERENCE_LABEL,
        ),
        result(
            "files-csv",
            "peak RSS (max over runs)",
            max(r["peak_rss_mb"] for r in rat),
            "MB",
            reference=max(d["peak_rss_mb"] for d in duck),
            reference_label=REFERENCE_LABEL,
        ),
        result(
            "files-csv",
            "Parquet written",
            rat[0]["bytes"] / 1e6,
            "MB",
            reference=duck[0]["bytes"] / 1e6,
            reference_label=REFERENCE_LABEL,
        ),
        result(
            "files-csv",
            "rows read (none quarantined)",
            float(rat[0]["rows"]),
            "rows",
            reference=float(duck[0]["rows"]),
            reference_label=REFERENCE_LABEL,
            target=f"= {expected:,}",
            ok=complete,
            details={"quarantined": [r["quarantined"] for r in rat]},
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """Run standalone and print the result rows as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows instead of {ROWS:,}")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=MAX_REPEATS)
    args = parser.parse_args(argv)
    for row in run(args):
        print(json.dumps(row, default=str))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        main()
