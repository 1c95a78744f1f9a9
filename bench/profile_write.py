"""Where does a Ratatouille write spend its time and memory? A phase-by-phase profile.

Not part of ``make bench`` (``run.py`` only picks up ``bench_*.py``); run it by hand::

    .venv/bin/python bench/profile_write.py                  # merge 1M rows into 10M
    .venv/bin/python bench/profile_write.py --rows 1000000   # smaller
    .venv/bin/python bench/profile_write.py --mode append
    .venv/bin/python bench/profile_write.py --block pandas  # as if pandas (a dev dependency) were absent

It builds the same temporary project and data as ``bench_core`` (the N-row table is appended
in an unprofiled child first, for ``--mode merge``), then runs the profiled write in a fresh
child process. There, a thread samples the process RSS (``VmRSS``) every 2 ms and DuckDB's own
buffer-manager accounting (``duckdb_memory()``) every 20 ms, while the writer's steps are
labelled by wrapping ``TableWriter`` methods, PyIceberg's commit, and each SQL statement the
writer sends to DuckDB. For every phase it reports the wall time, the RSS when it started and
ended, and the peak RSS, peak anonymous RSS (``RssAnon``: heap, without shared-library pages)
and peak DuckDB memory while it ran (peaks are inclusive: a phase's peak covers its sub-phases).
"""

from __future__ import annotations

import argparse
import importlib.abc
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_core import TABLE, _Setup, base_sql, incoming_sql
from benchlib import current_anon_rss_mb, current_rss_mb, peak_rss_mb, report, run_child


@dataclass
class Phase:
    """One labelled step of the write."""

    name: str
    depth: int
    seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    peak_rss_mb: float = 0.0
    peak_anon_mb: float = 0.0
    peak_duckdb_mb: float = 0.0
    imported: str = ""


HEAVY_MODULES = (
    "pyarrow",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "pyarrow.fs",
    "pyiceberg.table",
    "pyiceberg.io.pyarrow",
    "pyiceberg.io.fsspec",
    "pyiceberg.catalog.sql",
    "sqlalchemy",
    "pandas",
)


def _heavy_modules() -> set[str]:
    """Which of the big imports are loaded already."""
    return {m for m in HEAVY_MODULES if m in sys.modules}


class Profiler:
    """Samples RSS and DuckDB memory in a thread, attributing peaks to the open phases."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self._open: list[Phase] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._duck_cursor: Any = None
        self._threads = [
            threading.Thread(target=self._sample_rss, daemon=True),
            threading.Thread(target=self._sample_duckdb, daemon=True),
        ]

    def start(self, con: Any) -> None:
        """Start sampling; ``con`` is the workspace's DuckDB connection (a cursor reads its memory)."""
        self._duck_cursor = con.cursor()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Label the code inside as one phase."""
        item = Phase(name=name, depth=len(self._open), rss_start_mb=current_rss_mb())
        item.peak_rss_mb = item.rss_start_mb
        item.peak_anon_mb = current_anon_rss_mb()
        modules_before = _heavy_modules()
        with self._lock:
            self.phases.append(item)
            self._open.append(item)
        started = time.perf_counter()
        try:
            yield
        finally:
            item.seconds = time.perf_counter() - started
            item.rss_end_mb = current_rss_mb()
            item.imported = ", ".join(sorted(_heavy_modules() - modules_before))
            with self._lock:
                item.peak_rss_mb = max(item.peak_rss_mb, item.rss_end_mb)
                item.peak_anon_mb = max(item.peak_anon_mb, current_anon_rss_mb())
                self._open.remove(item)

    def _sample_rss(self) -> None:
        while not self._stop.wait(0.002):
            rss, anon = current_rss_mb(), current_anon_rss_mb()
            with self._lock:
                for item in self._open:
                    item.peak_rss_mb = max(item.peak_rss_mb, rss)
                    item.peak_anon_mb = max(item.peak_anon_mb, anon)

    def _sample_duckdb(self) -> None:
        while not self._stop.wait(0.02):
            try:
                row = self._duck_cursor.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
            except Exception:  # the cursor is busy or closed: skip this sample
                continue
            used = (row[0] or 0) / 1e6 if row else 0.0
            with self._lock:
                for item in self._open:
                    item.peak_duckdb_mb = max(item.peak_duckdb_mb, used)


class _Blocker(importlib.abc.MetaPathFinder):
    """Makes some packages look uninstalled (e.g. pandas, a dev-only dependency that pyarrow imports if present)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by profile_write.py)", name=fullname)
        return None


def _statement_label(sql: str) -> str:
    text = " ".join(sql.split())
    if text.startswith("COPY") and "ANTI JOIN" in text:
        return "SQL: COPY rewrite (anti-join of affected files)"
    if text.startswith("COPY"):
        return "SQL: COPY incoming rows to staged Parquet"
    if "SEMI JOIN" in text:
        return "SQL: find affected files (semi join)"
    if "count(DISTINCT" in text:
        return "SQL: check merge keys (nulls, duplicates)"
    if text.startswith("DESCRIBE"):
        return "SQL: DESCRIBE affected files"
    return "SQL: " + text[:50]


class _ConProxy:
    """A DuckDB connection whose ``execute`` calls are labelled as phases."""

    def __init__(self, con: Any, profiler: Profiler) -> None:
        self._con = con
        self._profiler = profiler

    def execute(self, sql: str, *args: Any) -> Any:
        with self._profiler.phase(_statement_label(sql)):
            return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _wrap(owner: Any, attribute: str, label: str, profiler: Profiler) -> None:
    original: Callable[..., Any] = getattr(owner, attribute)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with profiler.phase(label):
            return original(*args, **kwargs)

    setattr(owner, attribute, wrapper)


def _instrument(profiler: Profiler) -> None:
    """Label the writer's steps (ratatouille's ``TableWriter`` and PyIceberg 0.12 internals), in place."""
    from pyiceberg.table import Transaction

    from ratatouille.storage import writer

    cls = writer.TableWriter
    original_init = cls.__init__

    def init(self: Any, lakehouse: Any, con: Any, *args: Any, **kwargs: Any) -> None:
        proxy: Any = _ConProxy(con, profiler)
        original_init(self, lakehouse, proxy, *args, **kwargs)

    cls.__init__ = init  # type: ignore[method-assign]
    for attribute, label in [
        ("write", "write (total)"),
        ("_attempt", "attempt: load/create table, schema diff"),
        ("_finish", "finish: stage, rewrite, manifests + commit"),
        ("_copy", "stage incoming rows"),
        ("_check_keys", "check merge keys"),
        ("_rewrite", "rewrite affected files"),
        ("_write_files", "DuckDB COPY + Parquet footers -> DataFiles"),
        ("_remove", "remove unreferenced files"),
    ]:
        if hasattr(cls, attribute):
            _wrap(cls, attribute, label, profiler)
    for attribute, label in [
        ("_current_files", "PyIceberg plan_files (current files)"),
        ("_data_file", "PyIceberg: read footer, build DataFile"),
    ]:
        if hasattr(writer, attribute):
            _wrap(writer, attribute, label, profiler)
    _wrap(Transaction, "commit_transaction", "PyIceberg commit_transaction", profiler)


def child_main(argv: list[str]) -> None:
    """Profile one write in this fresh process; print the phases as JSON."""
    parser = argparse.ArgumentParser(prog="profile_write.py child")
    parser.add_argument("--mode", choices=["append", "merge"], required=True)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--merge-rows", type=int, required=True)
    parser.add_argument("--block", action="append", default=[])
    opts = parser.parse_args(argv)
    if opts.block:
        sys.meta_path.insert(0, _Blocker(opts.block))

    profiler = Profiler()
    imports_started = current_rss_mb()
    with profiler.phase("import ratatouille + open workspace session"):
        from ratatouille.workspace import Workspace

        workspace = Workspace.open(opts.project)
        con = workspace.con
    with profiler.phase("instrumenting: import pyiceberg.table (the write imports it too)"):
        _instrument(profiler)
    profiler.start(con)
    if opts.mode == "append":
        workspace.append(TABLE, base_sql(opts.rows))
    else:
        workspace.merge(TABLE, incoming_sql(opts.rows, opts.merge_rows), unique_key="txn_id")
    profiler.stop()
    report(
        {
            "rss_at_start_mb": imports_started,
            "peak_rss_mb": peak_rss_mb(),
            "phases": [asdict(p) for p in profiler.phases],
        }
    )


def _print(payload: dict[str, Any]) -> None:
    header = (
        f"{'phase':<64} {'seconds':>8} {'RSS start':>10} {'RSS end':>8} {'peak RSS':>9} {'peak anon':>9} {'peak DuckDB':>12}  "
        "first imported here"
    )
    print(header)
    print("-" * len(header))
    for p in payload["phases"]:
        name = ("  " * p["depth"] + p["name"])[:64]
        print(
            f"{name:<64} {p['seconds']:>8.2f} {p['rss_start_mb']:>10.0f} {p['rss_end_mb']:>8.0f} "
            f"{p['peak_rss_mb']:>9.0f} {p['peak_anon_mb']:>9.0f} {p['peak_duckdb_mb']:>12.0f}  {p['imported']}"
        )
    print(
        f"\nRSS at process start {payload['rss_at_start_mb']:.0f} MB, process peak (VmHWM) "
        f"{payload['peak_rss_mb']:.0f} MB. Memory in MB (10**6 bytes); anon = RssAnon, the RSS without "
        "shared-library and file pages."
    )


def main() -> None:
    """Set up the table and profile one write in a child."""
    parser = argparse.ArgumentParser(description="Profile one Ratatouille write, phase by phase.")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--mode", choices=["append", "merge"], default="merge")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--block", action="append", default=[], metavar="PACKAGE", help="make PACKAGE unimportable (e.g. pandas)"
    )
    args = parser.parse_args()
    merge_rows = max(2, args.rows // 10)
    root = Path(tempfile.mkdtemp(prefix="rat-profile-"))
    try:
        setup = _Setup(root, args.rows, merge_rows)
        if args.mode == "merge":
            print(f"appending {args.rows:,} rows (unprofiled) ...", flush=True)
            setup.child("rat-append")
        print(f"profiling the {args.mode} ...", flush=True)
        argv = [sys.executable, str(Path(__file__).resolve()), "child", "--mode", args.mode]
        argv += ["--project", str(setup.project), "--rows", str(args.rows), "--merge-rows", str(merge_rows)]
        for package in args.block:
            argv += ["--block", package]
        _print(run_child(argv, cwd=setup.project))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        main()
