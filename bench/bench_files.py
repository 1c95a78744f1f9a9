"""Files source: CSV ingest of the POS sales files by ``rat ingest``, against DuckDB's own read_csv -> Parquet.

``run(args)`` (called by ``bench/run.py``) generates the POS sample once with
``generate_pos(dir, rows=N)`` (N = 10M, 1M with ``--quick``; cached under
``<tmp>/rat-bench-files/pos-N`` and reused by later runs), then measures, each in a fresh child
process (this file run as ``bench_files.py child MODE ...``) reporting wall time and peak RSS:

* ``ingest`` (the headline): ``rat ingest sales`` in a project holding only the POS example's
  ``sources/sales.yaml`` (explicit column types, ``filename_pattern`` columns, quarantine on),
  its landing folder linked to the sample; timed from spawn to exit of the ``rat`` process:
  start-up, file registry and checksums, reading, the Iceberg commit on an audit branch, the
  publish and the run records included. Peak RSS is the ``rat`` process's (``RUSAGE_CHILDREN``).
* ``duck`` (the reference): a Python process that imports DuckDB and runs
  ``COPY (SELECT * FROM read_csv('<dir>/sales/*.csv')) TO 'x.parquet' (FORMAT parquet)`` with the
  same ``memory_limit`` and ``threads``; timed from spawn to exit as well.
* ``connector`` (for insight): ``FilesConnector.read`` alone in-process, its Arrow batches
  written with ``pyarrow.parquet.ParquetWriter`` (the path Python pipelines use).

Target: ``rat ingest`` within 1.5x of the reference. The modes alternate, ``repeats`` times
each (at most 3), and the medians are compared. Usage outside the runner:
``python bench/bench_files.py [--quick] [--rows N] [--repeats R]`` prints the rows as JSON lines.
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
REFERENCE_LABEL = (
    "a Python process running DuckDB COPY (SELECT * FROM read_csv('sales/*.csv')) TO Parquet, "
    "same memory_limit and threads, spawn to exit"
)
SOURCE_YAML = (
    Path(__file__).resolve().parents[1] / "src/ratatouille/templates/pos/workspaces/default/sources/sales.yaml"
)


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
    from ratatouille.connectors.files.config import FilesSourceConfig
    from ratatouille.connectors.files.reader import FilesConnector
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


def _spawned(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv`` to completion: wall seconds from spawn to exit and the child's peak RSS."""
    import resource
    import subprocess

    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb": peak, "stdout": proc.stdout}


def _child_ingest(opts: argparse.Namespace) -> dict[str, Any]:
    import os

    project = opts.out / "project"
    rat = str(Path(sys.executable).with_name("rat"))
    _spawned([rat, "init", str(project), "--empty"], opts.out)
    sources = next(project.glob("workspaces/*/")) / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    (sources / "sales.yaml").write_text(SOURCE_YAML.read_text())
    landing = project / "data" / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "sales").symlink_to(opts.data / "sales")
    env = {**os.environ, "RAT_ENGINE__MEMORY_LIMIT": opts.memory_limit, "RAT_ENGINE__THREADS": str(opts.threads)}
    measured = _spawned([rat, "ingest", "sales", "--json"], project, env)
    payload = json.loads(measured.pop("stdout"))
    nodes = payload.get("nodes") or []
    measured["rows"] = sum(int(n.get("rows_written") or 0) for n in nodes)
    measured["quarantined"] = sum(int(n.get("rows_quarantined") or 0) for n in nodes)
    measured["files"] = len(list((opts.data / "sales").glob("*.csv")))
    measured["bytes"] = sum(p.stat().st_size for p in project.glob(".rat/warehouse/**/*.parquet"))
    return measured


def _child_duck(opts: argparse.Namespace) -> dict[str, Any]:
    target = opts.out / "duck.parquet"
    source = str(opts.data / "sales" / "*.csv").replace("'", "''")
    script = (
        "import duckdb\n"
        f"con = duckdb.connect(config={{'memory_limit': {opts.memory_limit!r}, 'threads': {opts.threads}, "
        f"'temp_directory': {str(opts.out / 'tmp')!r}}})\n"
        f"con.execute(\"COPY (SELECT * FROM read_csv('{source}')) TO '{target}' (FORMAT parquet)\")\n"
    )
    measured = _spawned([sys.executable, "-c", script], opts.out)
    measured.pop("stdout")
    import duckdb

    row = duckdb.sql(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()
    measured["rows"] = int(row[0]) if row else 0
    measured["bytes"] = target.stat().st_size
    return measured


_CHILDREN = {"connector": _child_rat, "ingest": _child_ingest, "duck": _child_duck}


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
    runs: dict[str, list[dict[str, Any]]] = {"ingest": [], "duck": [], "connector": []}
    try:
        for i in range(repeats):
            print(
                f"  csv: {expected:,} rows, run {i + 1}/{repeats}: rat ingest, DuckDB, connector alone ...", flush=True
            )
            for mode, measured in runs.items():
                measured.append(_measure(mode, data, scratch, memory_limit, threads))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rat, duck, conn = runs["ingest"], runs["duck"], runs["connector"]
    rat_s, duck_s, conn_s = _median(rat, "seconds"), _median(duck, "seconds"), _median(conn, "seconds")
    details = {"runs": runs, "memory_limit": memory_limit, "threads": threads, "data": str(data)}
    complete = all(r["rows"] == expected and r["quarantined"] == 0 for r in rat + conn) and all(
        d["rows"] == expected for d in duck
    )
    return [
        result(
            "files-csv",
            f"rat ingest, {expected:,} POS rows in {rat[0]['files']} files: time (median of {repeats})",
            rat_s,
            "s",
            reference=duck_s,
            reference_label=REFERENCE_LABEL,
            target=f"<= {TARGET}x reference",
            ok=rat_s <= TARGET * duck_s,
            details=details,
        ),
        result("files-csv", "rat ingest throughput", expected / rat_s, "rows/s", reference=expected / duck_s),
        result(
            "files-csv",
            "rat ingest peak RSS (max over runs)",
            max(r["peak_rss_mb"] for r in rat),
            "MB",
            reference=max(d["peak_rss_mb"] for d in duck),
        ),
        result(
            "files-csv",
            "Parquet written (zstd vs DuckDB's snappy)",
            rat[0]["bytes"] / 1e6,
            "MB",
            reference=duck[0]["bytes"] / 1e6,
        ),
        result(
            "files-csv",
            "connector alone to Arrow -> Parquet, in-process (Python pipelines' path)",
            conn_s,
            "s",
            reference=duck_s,
        ),
        result(
            "files-csv",
            "rows ingested (none quarantined)",
            float(rat[0]["rows"]),
            "rows",
            reference=float(duck[0]["rows"]),
            target=f"= {expected:,}",
            ok=complete,
            details={"quarantined": [r["quarantined"] for r in rat + conn]},
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
