"""Lakehouse core benchmarks: CLI start-up, append and merge, each against plain DuckDB.

``run(args)`` is called by ``bench/run.py``. The append and merge measurements each run in a
fresh child process (this file run as a script: ``bench_core.py child MODE ...``) so the peak
RSS each reports is its own: the child reads its high-water mark (``VmHWM``) once the write has
finished and prints the numbers as JSON.

Ratatouille and the DuckDB reference get the same ``memory_limit`` and ``threads`` (those of
the project's ``small`` profile) and write the same rows, generated in SQL, as zstd Parquet.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Result, cpu_seconds, current_rss_mb, peak_rss_mb, report, result, run_child, summarize, wall_times

NAME = "core"
BENCHMARKS = ("cli", "append", "merge")
TABLE = "silver.bench"
PROFILE = "small"
HELP_TARGET_S = 0.3
MERGE_RSS_TARGET_MB = 500.0
INCOMING_EPOCH = "2025-01-01"

# -- the data -----------------------------------------------------------------------------


def _pos_select(ids: str, epoch: str) -> str:
    """POS-like rows for every ``i`` produced by the ``ids`` subquery, timestamped from ``epoch``.

    Values come from ``hash(i)`` so they are deterministic but not trivially compressible.
    """
    return (
        "SELECT i AS txn_id, "
        "'store_' || (i % 50) AS store_id, "
        "'SKU-' || lpad((hash(i) % 5000)::VARCHAR, 5, '0') AS product_sku, "
        "(hash(i * 31) % 200000)::BIGINT AS customer_id, "
        "(1 + hash(i * 7) % 5)::INTEGER AS quantity, "
        "((hash(i * 13) % 50000) / 100)::DECIMAL(10, 2) AS unit_price, "
        "((1 + hash(i * 7) % 5) * ((hash(i * 13) % 50000) / 100))::DECIMAL(12, 2) AS total_amount, "
        "['card', 'cash', 'mobile'][1 + (hash(i * 17) % 3)::INTEGER] AS payment_method, "
        f"TIMESTAMP '{epoch}' + to_seconds(i * 3 % 31536000) AS transaction_ts "
        f"FROM ({ids}) AS ids"
    )


def base_sql(rows: int) -> str:
    """``rows`` POS rows with ``txn_id`` 0 .. rows-1, in 2024."""
    return _pos_select(f"SELECT range AS i FROM range({int(rows)})", "2024-01-01")


def incoming_sql(rows: int, merge_rows: int) -> str:
    """``merge_rows`` rows in 2025: the first half update keys spread over the whole table, the rest are new."""
    half = merge_rows // 2
    step = max(1, rows // max(1, half))
    ids = (
        f"SELECT CASE WHEN range < {half} THEN range * {step} ELSE {rows} + range - {half} END AS i "
        f"FROM range({int(merge_rows)})"
    )
    return _pos_select(ids, INCOMING_EPOCH)


def verify_sql(source: str) -> str:
    """Rows, distinct keys and rows from the incoming batch in ``source``."""
    return (
        "SELECT count(*), count(DISTINCT txn_id), "
        f"count(*) FILTER (WHERE transaction_ts >= TIMESTAMP '{INCOMING_EPOCH}') FROM {source}"
    )


# -- children -----------------------------------------------------------------------------


def _duck_connect(opts: argparse.Namespace) -> Any:
    import duckdb

    Path(opts.dir, "duck_tmp").mkdir(parents=True, exist_ok=True)
    return duckdb.connect(
        config={
            "memory_limit": opts.memory_limit,
            "threads": opts.threads,
            "temp_directory": str(Path(opts.dir, "duck_tmp")),
        }
    )


def _child_duck_append(opts: argparse.Namespace) -> dict[str, Any]:
    con = _duck_connect(opts)
    target = Path(opts.dir, "base.parquet")
    before = current_rss_mb()
    cpu = cpu_seconds()
    started = time.perf_counter()
    con.execute(f"COPY ({base_sql(opts.rows)}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": before,
        "bytes": target.stat().st_size,
    }


def _child_duck_merge(opts: argparse.Namespace) -> dict[str, Any]:
    con = _duck_connect(opts)
    base, target = Path(opts.dir, "base.parquet"), Path(opts.dir, "merged.parquet")
    incoming = incoming_sql(opts.rows, opts.merge_rows)
    merged = (
        f"SELECT * FROM read_parquet('{base}') AS o ANTI JOIN (SELECT txn_id FROM ({incoming})) AS s USING (txn_id) "
        f"UNION ALL {incoming}"
    )
    before = current_rss_mb()
    cpu = cpu_seconds()
    started = time.perf_counter()
    con.execute(f"COPY ({merged}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    peak = peak_rss_mb()
    row = con.execute(verify_sql(f"read_parquet('{target}')")).fetchone()
    assert row is not None
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "rss_before_mb": before,
        "verify": [int(v) for v in row],
    }


def _open_workspace(opts: argparse.Namespace) -> Any:
    from ratatouille.workspace import Workspace

    workspace = Workspace.open(opts.project)
    workspace.con  # noqa: B018 - open the DuckDB session before the clock starts
    return workspace


def _child_rat_append(opts: argparse.Namespace) -> dict[str, Any]:
    workspace = _open_workspace(opts)
    before = current_rss_mb()
    cpu = cpu_seconds()
    started = time.perf_counter()
    written = workspace.append(TABLE, base_sql(opts.rows))
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    peak = peak_rss_mb()
    data = Path(opts.project, ".rat")
    size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "rss_before_mb": before,
        "bytes": size,
        "rows_written": written.rows_written,
        "files_added": written.files_added,
    }


def _child_rat_merge(opts: argparse.Namespace) -> dict[str, Any]:
    workspace = _open_workspace(opts)
    before = current_rss_mb()
    cpu = cpu_seconds()
    started = time.perf_counter()
    written = workspace.merge(TABLE, incoming_sql(opts.rows, opts.merge_rows), unique_key="txn_id")
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    peak = peak_rss_mb()
    check = workspace.query(verify_sql(TABLE)).to_pylist()[0]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "rss_before_mb": before,
        "verify": [int(v) for v in check.values()],
        "rows_written": written.rows_written,
        "rows_deleted": written.rows_deleted,
        "files_added": written.files_added,
        "files_removed": written.files_removed,
    }


_CHILDREN = {
    "duck-append": _child_duck_append,
    "duck-merge": _child_duck_merge,
    "rat-append": _child_rat_append,
    "rat-merge": _child_rat_merge,
}


def child_main(argv: list[str]) -> None:
    """Run one measurement in this (fresh) process and print its result as JSON."""
    parser = argparse.ArgumentParser(prog="bench_core.py child")
    parser.add_argument("mode", choices=sorted(_CHILDREN))
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--merge-rows", type=int, required=True)
    parser.add_argument("--memory-limit", required=True)
    parser.add_argument("--threads", type=int, required=True)
    opts = parser.parse_args(argv)
    report(_CHILDREN[opts.mode](opts))


# -- parent -------------------------------------------------------------------------------


class _Setup:
    """The temporary project and reference directory of one run, and how to start children."""

    def __init__(self, root: Path, rows: int, merge_rows: int) -> None:
        self.root = root
        self.project = root / "project"
        self.reference = root / "reference"
        self.rows = rows
        self.merge_rows = merge_rows
        self.rat = Path(sys.executable).with_name("rat")
        self.reference.mkdir(parents=True)
        init = [str(self.rat), "init", str(self.project), "--empty"]
        wall_times(init, 1, warmup=0)
        config = self.project / "ratatouille.yaml"
        text = config.read_text()
        lines = [f"profile: {PROFILE}" if line.startswith("profile:") else line for line in text.splitlines()]
        config.write_text("\n".join(lines) + "\n")

        from ratatouille.project import Project

        profile = Project.load(self.project).profile
        if profile.name != PROFILE:
            raise RuntimeError(f"the bench project resolved profile {profile.name!r}, not {PROFILE!r}")
        self.memory_limit = profile.memory_limit
        self.threads = profile.threads

    def child(self, mode: str) -> dict[str, Any]:
        """Run one child measurement."""
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "child",
            mode,
            "--project",
            str(self.project),
            "--dir",
            str(self.reference),
            "--rows",
            str(self.rows),
            "--merge-rows",
            str(self.merge_rows),
            "--memory-limit",
            self.memory_limit,
            "--threads",
            str(self.threads),
        ]
        return run_child(argv, cwd=self.project)


def _cli(setup: _Setup, repeats: int) -> list[Result]:
    python = sys.executable
    help_t = summarize(wall_times([str(setup.rat), "--help"], repeats))
    query_t = summarize(wall_times([str(setup.rat), "query", "select 1"], repeats, cwd=setup.project))
    bare_t = summarize(wall_times([python, "-c", "pass"], repeats))
    duck_code = "import duckdb; duckdb.sql('select 1').fetchall()"
    duck_t = summarize(wall_times([python, "-c", duck_code], repeats))
    bare_label, duck_label = "python -c pass", f'python -c "{duck_code}"'
    return [
        result(
            "cli",
            f"rat --help, median of {repeats}",
            help_t["median"],
            "s",
            reference=bare_t["median"],
            reference_label=bare_label,
            target=f"< {HELP_TARGET_S} s",
            ok=help_t["median"] < HELP_TARGET_S,
            details={"rat": help_t, "reference": bare_t},
        ),
        result(
            "cli",
            f"rat --help, min of {repeats}",
            help_t["min"],
            "s",
            reference=bare_t["min"],
            reference_label=bare_label,
        ),
        result(
            "cli",
            f'rat query "select 1", median of {repeats}',
            query_t["median"],
            "s",
            reference=duck_t["median"],
            reference_label=duck_label,
            details={"rat": query_t, "reference": duck_t},
        ),
        result(
            "cli",
            f'rat query "select 1", min of {repeats}',
            query_t["min"],
            "s",
            reference=duck_t["min"],
            reference_label=duck_label,
        ),
    ]


def _append(setup: _Setup, rat: dict[str, Any], duck: dict[str, Any]) -> list[Result]:
    n = setup.rows
    label = "DuckDB COPY to one zstd Parquet file"
    details = {"ratatouille": rat, "reference": duck}
    return [
        result(
            "append",
            f"{n:,} rows: time",
            rat["seconds"],
            "s",
            reference=duck["seconds"],
            reference_label=label,
            details=details,
        ),
        result(
            "append", "throughput", n / rat["seconds"], "rows/s", reference=n / duck["seconds"], reference_label=label
        ),
        result(
            "append",
            "CPU time (user+sys)",
            rat["cpu_seconds"],
            "s",
            reference=duck["cpu_seconds"],
            reference_label=label,
        ),
        result("append", "peak RSS", rat["peak_rss_mb"], "MB", reference=duck["peak_rss_mb"], reference_label=label),
        result(
            "append",
            "RSS before the write",
            rat["rss_before_mb"],
            "MB",
            reference=duck["rss_before_mb"],
            reference_label=label,
        ),
        result(
            "append",
            "Parquet written",
            rat["bytes"] / 1e6,
            "MB",
            reference=duck["bytes"] / 1e6,
            reference_label=label,
        ),
    ]


def _merge(setup: _Setup, rat: dict[str, Any], duck: dict[str, Any]) -> list[Result]:
    n, m = setup.rows, setup.merge_rows
    label = "DuckDB anti-join + UNION ALL to a new Parquet file"
    expected = [n + m // 2, n + m // 2, m]
    rat_ok = rat["verify"] == expected
    duck_ok = duck["verify"] == expected
    details = {"ratatouille": rat, "reference": duck, "expected": expected}
    return [
        result(
            "merge",
            f"{m:,} rows into {n:,}: time",
            rat["seconds"],
            "s",
            reference=duck["seconds"],
            reference_label=label,
            details=details,
        ),
        result(
            "merge",
            "throughput (incoming rows)",
            m / rat["seconds"],
            "rows/s",
            reference=m / duck["seconds"],
            reference_label=label,
        ),
        result(
            "merge",
            "CPU time (user+sys)",
            rat["cpu_seconds"],
            "s",
            reference=duck["cpu_seconds"],
            reference_label=label,
        ),
        result(
            "merge",
            "peak RSS",
            rat["peak_rss_mb"],
            "MB",
            reference=duck["peak_rss_mb"],
            reference_label=label,
            target=f"< {MERGE_RSS_TARGET_MB:.0f} MB",
            ok=rat["peak_rss_mb"] < MERGE_RSS_TARGET_MB,
        ),
        result(
            "merge",
            "RSS before the write",
            rat["rss_before_mb"],
            "MB",
            reference=duck["rss_before_mb"],
            reference_label=label,
        ),
        result(
            "merge",
            "rows after (= distinct keys)",
            rat["verify"][0],
            "rows",
            reference=duck["verify"][0],
            reference_label=label,
            target=f"= {expected[0]:,}",
            ok=rat_ok and duck_ok,
            details={"ratatouille [rows, keys, incoming]": rat["verify"], "reference": duck["verify"]},
        ),
    ]


def run(args: argparse.Namespace) -> list[Result]:
    """Run the core benchmarks (all, or the one named by ``args.only``)."""
    only: str | None = args.only if args.only in BENCHMARKS else None
    rows: int = args.rows
    merge_rows = max(2, rows // 10)
    root = Path(tempfile.mkdtemp(prefix="rat-bench-"))
    results: list[Result] = []
    try:
        setup = _Setup(root, rows, merge_rows)
        print(f"  project: {setup.project} (profile {PROFILE}: {setup.memory_limit}, {setup.threads} threads)")
        if only in (None, "cli"):
            print(f"  cli: {args.repeats} runs each ...", flush=True)
            results += _cli(setup, args.repeats)
        if only in (None, "append", "merge"):
            print(f"  append: {rows:,} rows, Ratatouille then DuckDB ...", flush=True)
            rat_append = setup.child("rat-append")
            duck_append = setup.child("duck-append")
            if only != "merge":
                results += _append(setup, rat_append, duck_append)
        if only in (None, "merge"):
            print(f"  merge: {merge_rows:,} rows into {rows:,}, Ratatouille then DuckDB ...", flush=True)
            rat_merge = setup.child("rat-merge")
            duck_merge = setup.child("duck-merge")
            results += _merge(setup, rat_merge, duck_merge)
    finally:
        if args.keep:
            print(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with bench/run.py (this file runs as a script only as a child)")
