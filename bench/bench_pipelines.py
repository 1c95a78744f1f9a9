"""POS pipelines end to end: full build, one-day incremental and no-op ``rat run``, against plain DuckDB.

``run(args)`` (called by ``bench/run.py``) does, for each size N (1M and 10M rows; 200k with
``--quick``; only N when the runner passes another ``--rows``), in a temporary directory under /tmp
that is removed afterwards:

1. **Ratatouille.** ``create_project(tmp/"pos", rows=N)`` writes the POS example with N sales rows
   over 14 days (not timed). Then ``rat run --json`` runs as a subprocess, timed from spawn to exit,
   with the peak RSS of the process tree (``ru_maxrss`` of the child, the max over the process and
   the descendants it waited for, read by GNU ``time -f %M``): the **full build** (CSV ingestion
   into bronze, silver, gold, and every data test). One new day (N/14 rows, 2026-01-15, seed 99,
   ``txn_id`` shifted by 10^9 as ``tests/runs/test_pos_example.py`` does) is then dropped into the
   landing zone (not timed) and ``rat run`` is timed again: the **one-day incremental**. Both are
   repeated (the runner's ``--repeats``, at most 3; medians reported, rat and reference alternating):
   each full repeat starts from an empty ``.rat/``, each incremental repeat from a copy of the state
   the full build left. Then ``rat run`` with nothing new, 5 times: the **no-op** (median and min).
2. **Reference: a plain DuckDB script** (this file run as ``bench_pipelines.py child ref MODE``, a
   fresh process that imports only DuckDB, with the project profile's ``memory_limit`` and
   ``threads``). It runs the SAME SQL: each model is compiled by Ratatouille beforehand (in a
   throw-away copy of the example, so the measured project is untouched) and the compiled SQL
   runs unchanged, its ``"default"."layer"."table"`` references resolving to views over the
   reference's own Parquet files. Full: ``read_csv`` of the landing files with the sources' column
   types and file-name columns -> bronze Parquet; every silver and gold model -> ``COPY ... TO``
   Parquet (zstd, as Ratatouille writes). Incremental: only the new files -> a new bronze part;
   the models' incremental SQL over those rows; ``merge`` / ``delete+insert`` as an anti-join on
   the unique key + ``UNION ALL`` into a new Parquet file; ``table`` models downstream of a change
   rebuilt; models with unchanged inputs skipped. No-op: list the landing zone against its
   manifest, find nothing new, exit. The reference runs no data tests (Ratatouille does).
3. **Correctness guard.** After each build, row counts (and the gold revenue total) of
   silver.sales, silver.sales_rejects, gold.daily_sales_kpis and gold.product_performance are read
   from both sides and must be equal; a mismatch is printed loudly and its row says ``MISSED``.
4. **Where the time goes.** Per-node durations and start offsets of each timed run (from
   ``rat run --json`` and ``rat logs RUN --json``), the start-up overhead (process wall time minus
   the run's own duration), the slowest imports of a no-op run (``python -X importtime``) and a
   cProfile of a no-op run that also profiles the worker threads (nodes run on a thread pool,
   which plain ``cProfile`` misses). ``--profile-full`` adds the same thread-aware cProfile of a
   full build on a copy of the landing data (one extra full build per size).

Targets (from the issue): full build within 1.3x of the reference, incremental within 2x, no-op
under 0.5 s. Timings are process wall times on both sides (interpreter start and imports
included), with byte-code caching on and warmed first (see :func:`child_env`), as in an install. Standalone: ``python bench/bench_pipelines.py [--quick] [--rows N ...] [--repeats R]
[--profile-full] [--keep]`` prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import RESULT_MARKER, Result, clean_env, peak_rss_mb, report, result  # noqa: E402

NAME = "pipelines"
BENCHMARKS = ("pos",)
SIZES = (1_000_000, 10_000_000)
QUICK_ROWS = 200_000
RUNNER_DEFAULT_ROWS = (1_000_000, 10_000_000)  # what bench/run.py passes when no --rows is given
DAYS = 14  # create_project writes 14 days from 2026-01-01
NEW_DAY = dt.date(2026, 1, 15)
NEW_DAY_SEED = 99
TXN_SHIFT = 1_000_000_000
NOOP_REPEATS = 5
MAX_REPEATS = 3  # full and incremental builds: the runner's --repeats, capped
FULL_TARGET = 1.3
INCREMENTAL_TARGET = 2.0
NOOP_TARGET_S = 0.5
TOP = 12
WORKSPACE = "default"
REFERENCE_LABEL = (
    "plain DuckDB script, fresh process, same memory_limit/threads: read_csv -> the models' compiled SQL -> "
    "COPY to Parquet (zstd); incremental = new files only + anti-join merge; no tests"
)
CHECK_SQL = """
SELECT
    (SELECT count(*) FROM silver.sales) AS silver_sales,
    (SELECT count(DISTINCT txn_id) FROM silver.sales) AS silver_sales_txn_ids,
    (SELECT count(*) FROM silver.sales_rejects) AS silver_sales_rejects,
    (SELECT count(*) FROM gold.daily_sales_kpis) AS gold_daily_sales_kpis,
    (SELECT sum(revenue) FROM gold.daily_sales_kpis)::VARCHAR AS gold_daily_revenue,
    (SELECT count(*) FROM gold.product_performance) AS gold_product_performance
""".strip()


# -- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """A finished child process: wall time, peak RSS of its tree, exit code and output."""

    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> Proc:
        """Raise with the stderr tail when the process failed.

        Raises:
            RuntimeError: the exit code is not 0.
        """
        if self.returncode != 0:
            tail = "\n".join(self.stderr.strip().splitlines()[-25:])
            raise RuntimeError(f"{what} failed (exit {self.returncode}):\n{tail}")
        return self

    def payload(self) -> dict[str, Any]:
        """The child's ``benchlib.report`` line.

        Raises:
            RuntimeError: the child printed none.
        """
        lines = [line for line in self.stdout.splitlines() if line.startswith(RESULT_MARKER)]
        if not lines:
            raise RuntimeError(f"the child printed no result:\n{self.stderr.strip()[-2000:]}")
        data: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARKER) :])
        return data


GNU_TIME = Path("/usr/bin/time")


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Proc:
    """Run ``argv``: wall time from spawn to exit, and the peak RSS of the process tree.

    The peak is ``ru_maxrss`` of the child as ``wait4`` reports it (the max over the process and the
    descendants it waited for), taken by GNU ``time -f %M``: Linux starts a child's ``ru_maxrss`` at
    the RSS of the process that forked it, so reading it here (a parent with Ratatouille, DuckDB and
    PyArrow loaded) would floor every reading at this process's own RSS. Without ``/usr/bin/time``
    it falls back to ``os.wait4`` here, floor included.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as rss:
        command = list(argv)
        if GNU_TIME.exists():
            command = [str(GNU_TIME), "-f", "%M", "-o", rss.name, *command]
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env or clean_env(), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: keep Popen from waiting again
        kib = usage.ru_maxrss  # KiB on Linux
        if GNU_TIME.exists():
            lines = Path(rss.name).read_text().split()
            kib = int(lines[-1]) if lines and lines[-1].isdigit() else kib
        out.seek(0)
        err.seek(0)
        return Proc(
            seconds=seconds,
            peak_rss_mb=kib * 1024 / 1e6,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


CHILD_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); import bench_pipelines; bench_pipelines.child_main(sys.argv[2:])"
)


def child_env(pycache: Path) -> dict[str, str]:
    """The environment of every measured process: no ``RAT_*`` overrides, and byte-code caching on.

    This dev environment sets ``PYTHONDONTWRITEBYTECODE=1`` and its edited sources have no fresh
    ``.pyc``, so every ``rat`` would compile its modules from source (0.2-0.5 s here), which an
    installed package never does. Children write and reuse ``.pyc`` files under ``pycache``
    (``PYTHONPYCACHEPREFIX``, so nothing is written next to the sources); :meth:`Bench.warm_up`
    fills it before anything is timed.
    """
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def rat_executable() -> str:
    """The ``rat`` script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "rat"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rat")
    if found is None:
        raise RuntimeError("cannot find the `rat` command next to this Python or on PATH")
    return found


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


# -- the reference: a plain DuckDB script (child process) -----------------------------------


def _ref_connect(spec: dict[str, Any], out: Path) -> Any:
    import duckdb

    (out / "tmp").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={"memory_limit": spec["memory_limit"], "threads": spec["threads"], "temp_directory": str(out / "tmp")}
    )
    con.execute("SET TimeZone = 'UTC'")  # as Ratatouille's sessions: CAST(timestamptz AS DATE) must agree
    con.execute(f"ATTACH ':memory:' AS {_ident(WORKSPACE)}")
    for layer in ("bronze", "silver", "gold"):
        con.execute(f"CREATE SCHEMA {_ident(WORKSPACE)}.{_ident(layer)}")
    con.execute(f"USE {_ident(WORKSPACE)}")
    return con


def _ref_view(con: Any, key: str, files: list[str]) -> None:
    layer, name = key.split(".")
    listed = "[" + ", ".join(_sql_str(f) for f in files) + "]"
    con.execute(
        f"CREATE OR REPLACE VIEW {_ident(WORKSPACE)}.{_ident(layer)}.{_ident(name)} AS "
        f"SELECT * FROM read_parquet({listed})"
    )


def _ref_landing_files(spec: dict[str, Any], source: dict[str, Any]) -> list[str]:
    pattern = str(source["path"])
    pattern = spec["landing"] + "/" + pattern.removeprefix("landing/")
    return sorted(glob.glob(pattern))


def _ref_read_source_sql(source: dict[str, Any], files: list[str], ingested_at: str) -> str:
    """``read_csv`` of ``files`` with the source's types, plus file-name columns, ``_source_file``, ``_ingested_at``."""
    options = source.get("options") or {}
    args = [
        f"header = {str(options.get('header', True)).lower()}",
        f"delim = {_sql_str(str(options.get('delimiter', ',')))}",
        "filename = true",
    ]
    columns: dict[str, str] = source.get("columns") or {}
    if columns:
        types = ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in columns.items())
        args.append(f"types = {{{types}}}")
    extras: list[str] = []
    pattern = source.get("filename_pattern")
    if pattern:
        names = sorted(re.compile(pattern).groupindex.items(), key=lambda item: item[1])
        extras += [f"regexp_extract(filename, {_sql_str(pattern)}, {i}) AS {_ident(n)}" for n, i in names]
    extras += ["filename AS _source_file", f"TIMESTAMPTZ {_sql_str(ingested_at)} AS _ingested_at"]
    listed = "[" + ", ".join(_sql_str(f) for f in files) + "]"
    return f"SELECT * EXCLUDE (filename), {', '.join(extras)} FROM read_csv({listed}, {', '.join(args)})"


def _ref_copy(con: Any, sql: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({sql}) TO {_sql_str(str(target))} (FORMAT parquet, COMPRESSION zstd)")


def _ref_counts(con: Any) -> dict[str, Any]:
    cursor = con.execute(CHECK_SQL)
    names = [d[0] for d in cursor.description]
    row = cursor.fetchone()
    return dict(zip(names, row, strict=True))


def child_ref(mode: str, spec_path: Path, out: Path) -> dict[str, Any]:
    """The plain DuckDB pipeline: ``full`` build, ``incremental`` (new files only) or ``noop``."""
    import duckdb  # noqa: F401 - a plain script imports it first thing, also when there is nothing to do

    started = time.perf_counter()
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    manifest_path = out / "manifest.json"
    if mode == "full":
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        state: dict[str, Any] = {"ingested": {}, "files": {}, "version": 0}
    else:
        state = json.loads(manifest_path.read_text())
    # What is new: landing files not in the manifest (path, size, mtime), per source.
    new_files: dict[str, list[str]] = {}
    for name, source in spec["sources"].items():
        fresh = []
        for path in _ref_landing_files(spec, source):
            info = os.stat(path)
            if state["ingested"].get(path) != [info.st_size, info.st_mtime_ns]:
                fresh.append(path)
        if fresh:
            new_files[f"bronze.{name}"] = fresh
    if not new_files:
        return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "changed": []}

    con = _ref_connect(spec, out)
    version = state["version"] + (0 if mode == "full" else 1)
    ingested_at = dt.datetime.now(dt.UTC).isoformat()
    steps: dict[str, float] = {}
    changed: set[str] = set()
    for key, files in state["files"].items():  # the tables as the previous build left them
        _ref_view(con, key, files)
    # Bronze: the new files only, as one new part per source.
    for key, fresh in new_files.items():
        clock = time.perf_counter()
        target = out / key.replace(".", "/") / f"part-{version:05d}.parquet"
        _ref_copy(con, _ref_read_source_sql(spec["sources"][key.split(".")[1]], fresh, ingested_at), target)
        state["files"][key] = [*state["files"].get(key, []), str(target)]
        _ref_view(con, key, [str(target)])  # models read the new rows only (all of them in a full build)
        for path in fresh:
            info = os.stat(path)
            state["ingested"][path] = [info.st_size, info.st_mtime_ns]
        changed.add(key)
        steps[key] = time.perf_counter() - clock
    # Silver and gold: the same compiled SQL; incremental models merge into a new file.
    for key in spec["order"]:
        model = spec["models"][key]
        if not set(model["upstream"]) & changed:
            continue  # inputs unchanged: up to date
        clock = time.perf_counter()
        target = out / key.replace(".", "/") / f"v{version:05d}.parquet"
        incremental = mode != "full" and model["materialized"] == "incremental" and key in state["files"]
        if not incremental:
            _ref_copy(con, model["sql"], target)
        else:
            con.execute(f"CREATE OR REPLACE TEMP TABLE __new AS {model['incremental_sql']}")
            previous = "[" + ", ".join(_sql_str(f) for f in state["files"][key]) + "]"
            if model["strategy"] == "append":
                merged = f"SELECT * FROM read_parquet({previous}) UNION ALL BY NAME SELECT * FROM __new"
            else:
                using = ", ".join(_ident(k) for k in model["unique_key"])
                merged = (
                    f"SELECT * FROM read_parquet({previous}) ANTI JOIN __new USING ({using}) "
                    "UNION ALL BY NAME SELECT * FROM __new"
                )
            _ref_copy(con, merged, target)
            con.execute("DROP TABLE __new")
        state["files"][key] = [str(target)]
        _ref_view(con, key, [str(target)])
        changed.add(key)
        steps[key] = time.perf_counter() - clock
    state["version"] = version
    manifest_path.write_text(json.dumps(state))
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    for key, files in state["files"].items():  # whole tables again, for the check
        _ref_view(con, key, files)
    counts = _ref_counts(con)
    con.close()
    return {"seconds": seconds, "peak_rss_mb": peak, "changed": sorted(changed), "steps": steps, "counts": counts}


# -- profiling children ---------------------------------------------------------------------


def child_profile(out: Path, rat_args: list[str]) -> None:
    """Run the ``rat`` CLI in this process under cProfile, every thread included; dump merged stats."""
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    original = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.runcall(original, self)

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile()
    sys.argv = ["rat", *rat_args]
    code = 0
    main_profile.enable()
    try:
        from ratatouille.cli.main import main

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        main_profile.disable()
    threading.Thread.run = original  # type: ignore[method-assign]
    stats = pstats.Stats(main_profile)
    for profile in profiles:
        stats.add(profile)
    stats.dump_stats(str(out))
    sys.exit(code)


def _short(path: str) -> str:
    for marker in ("/src/ratatouille/", "/site-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return re.sub(r".*/lib/python3\.\d+/", "", path)


def summarize_profile(path: Path, top: int = TOP) -> dict[str, list[dict[str, Any]]]:
    """The costliest parts of a dump, three ways.

    * ``by_own_time``: functions by time spent in themselves (idle thread-pool waits left out). A
      ``with lock:`` wait shows as own time of the function holding the ``with``.
    * ``ratatouille_by_cumulative``: Ratatouille's functions by cumulative time. Worker threads are
      merged in, so times of different threads add up (they overlap in wall time).
    * ``calls_out``: time spent in other libraries (DuckDB, PyIceberg, SQLite, imports, lock waits)
      by the Ratatouille function that called them: which of our code paths the time goes through.
    """
    import pstats

    stats = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        return f"{_short(file)}:{line}({func})" if line else func

    def ours(key: tuple[str, int, str]) -> bool:
        return "/src/ratatouille/" in key[0]

    wrappers = ("cli/main.py", "__main__", "_execute", "workspace.py:326(run)", "runner.py:204(run)")
    entries = []
    calls_out: dict[tuple[str, str], float] = {}
    for key, (_cc, ncalls, tottime, cumtime, callers) in raw.items():
        entries.append(
            {
                "function": name(key),
                "calls": ncalls,
                "own_s": round(tottime, 4),
                "cumulative_s": round(cumtime, 4),
                "ours": ours(key),
            }
        )
        if ours(key):
            continue
        for caller, timings in callers.items():
            if ours(caller) and not any(w in name(caller) for w in wrappers):
                pair = (name(caller), name(key))
                calls_out[pair] = calls_out.get(pair, 0.0) + float(timings[3])
    idle = ("SimpleQueue' objects>", "_queue.SimpleQueue")
    by_own = sorted((e for e in entries if not any(i in e["function"] for i in idle)), key=lambda e: -e["own_s"])
    ours_cum = sorted((e for e in entries if e["ours"]), key=lambda e: -e["cumulative_s"])
    ours_cum = [e for e in ours_cum if not any(w in e["function"] for w in wrappers)]
    out = [
        {"caller": a, "callee": b, "cumulative_s": round(t, 4)}
        for (a, b), t in sorted(calls_out.items(), key=lambda kv: -kv[1])[:top]
    ]
    return {"by_own_time": by_own[:top], "ratatouille_by_cumulative": ours_cum[:top], "calls_out": out}


def summarize_importtime(stderr: str, top: int = TOP) -> dict[str, Any]:
    """Total import time and the slowest top-level imports from ``-X importtime`` output."""
    tops: list[tuple[str, float]] = []
    everything: list[tuple[str, float]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|", 2)
        seconds = int(cumulative.strip()) / 1e6
        everything.append((name.strip(), seconds))
        if not name.startswith("  "):  # two spaces = depth 1 (the line always starts with one)
            tops.append((name.strip(), seconds))
    heavy = ("duckdb", "pyarrow", "pyiceberg", "sqlalchemy", "pydantic", "jinja2", "sqlglot", "pandas", "fastapi")
    return {
        "total_s": round(sum(s for _, s in tops), 3),
        "top_level": [{"module": n, "cumulative_s": round(s, 3)} for n, s in sorted(tops, key=lambda t: -t[1])[:top]],
        "heavy_packages": {
            h: round(max((s for n, s in everything if n == h), default=0.0), 3)
            for h in heavy
            if any(n == h for n, _ in everything)
        },
    }


# -- the parent ------------------------------------------------------------------------------


def sizes_for(args: argparse.Namespace) -> list[int]:
    """Which sizes to run: 1M and 10M; 200k with --quick; a --rows the runner did not default."""
    explicit = getattr(args, "pipeline_rows", None)
    if explicit:
        return list(explicit)
    rows = getattr(args, "rows", None)
    if getattr(args, "quick", False) and rows in (None, *RUNNER_DEFAULT_ROWS):
        return [QUICK_ROWS]
    if rows is None or rows in RUNNER_DEFAULT_ROWS:
        return list(SIZES)
    return [int(rows)]


def _label(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"


def build_spec(scratch: Path, root: Path) -> dict[str, Any]:
    """The reference's recipe: sources, the models' compiled SQL (full and incremental), order, limits.

    Compiled in a throw-away copy of the example (rows=100) so the measured project gets no state
    before its first ``rat run``.
    """
    import yaml

    from ratatouille.project import Project
    from ratatouille.scaffold import create_project
    from ratatouille.workspace import Workspace

    profile = Project.load(root).profile
    sources: dict[str, Any] = {}
    for path in sorted((root / "workspaces" / WORKSPACE / "sources").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        sources[config["name"]] = config
    copy = create_project(scratch / "compile", rows=100).root
    ws = Workspace.open(copy)
    try:
        graph = ws.graph()
        order = [k for k in graph.dag.order(graph.dag.select(None)) if k in graph.models]
        models = {}
        for key in order:
            model = graph.models[key]
            models[key] = {
                "sql": ws.compile(key),
                "incremental_sql": ws.compile(key, incremental=True),
                "materialized": model.materialized.value,
                "strategy": model.config.incremental.strategy.value,
                "unique_key": list(model.config.unique_key),
                "upstream": sorted(graph.dag.nodes[key].upstream),
            }
    finally:
        ws.close()
        shutil.rmtree(copy, ignore_errors=True)
    return {
        "landing": str(root / "data" / "landing"),
        "sources": sources,
        "order": order,
        "models": models,
        "memory_limit": profile.memory_limit,
        "threads": profile.threads,
        "profile": profile.name,
    }


def add_day(root: Path, rows: int, scratch: Path) -> list[Path]:
    """Drop one new day of sales files into the landing zone, ``txn_id`` shifted to stay unique."""
    import duckdb

    from ratatouille.sample.pos import generate_pos

    staging = scratch / f"new-{NEW_DAY}"
    generate_pos(staging, rows=rows, days=1, start=NEW_DAY, seed=NEW_DAY_SEED)
    target = root / "data" / "landing" / "sales"
    written = []
    con = duckdb.connect()
    try:
        for path in sorted((staging / "sales").glob("*.csv")):
            con.execute(
                "COPY (SELECT * REPLACE ((txn_id::BIGINT + "
                f"{TXN_SHIFT})::VARCHAR AS txn_id) FROM read_csv({_sql_str(str(path))}, all_varchar = true)) "
                f"TO {_sql_str(str(target / path.name))} (FORMAT csv, HEADER)"
            )
            written.append(target / path.name)
    finally:
        con.close()
    shutil.rmtree(staging, ignore_errors=True)
    return written


class Bench:
    """One size: the project, the reference and what was measured."""

    def __init__(self, rows: int, scratch: Path, *, repeats: int, profile_full: bool, profile_noop: bool) -> None:
        self.rows = rows
        self.repeats = repeats
        self.scratch = scratch
        self.root = scratch / "pos"
        self.ref_out = scratch / "ref"
        self.spec_path = scratch / "spec.json"
        self.rat = rat_executable()
        self.env = child_env(scratch / "pycache")
        # The children import this module (rather than run it as a script) so that it is byte-compiled once.
        self.child = [sys.executable, "-c", CHILD_BOOT, str(BENCH_DIR)]
        self.profile_full = profile_full
        self.profile_noop = profile_noop
        self.details: dict[str, Any] = {"rows": rows, "load_average": {}}

    def say(self, text: str) -> None:
        print(f"  [{_label(self.rows)}] {text}", flush=True)

    # -- steps ----------------------------------------------------------------------------

    def rat_run(self, what: str, *extra: str) -> tuple[Proc, dict[str, Any]]:
        proc = timed([self.rat, "run", "--json", *extra], cwd=self.root, env=self.env).check(f"`rat run` ({what})")
        data: dict[str, Any] = json.loads(proc.stdout)
        if data.get("status") != "success":
            failed = [(n["key"], n["error"]) for n in data["nodes"] if n["status"] != "success"]
            raise RuntimeError(f"`rat run` ({what}) did not succeed: {data.get('error')} {failed}")
        return proc, data

    def reference(self, mode: str) -> tuple[Proc, dict[str, Any]]:
        argv = [*self.child, "ref", mode]
        argv += ["--spec", str(self.spec_path), "--out", str(self.ref_out)]
        proc = timed(argv, cwd=self.scratch, env=self.env).check(f"reference ({mode})")
        return proc, proc.payload()

    def rat_counts(self) -> dict[str, Any]:
        proc = timed([self.rat, "query", CHECK_SQL, "--format", "json"], cwd=self.root, env=self.env).check(
            "`rat query`"
        )
        rows: list[dict[str, Any]] = json.loads(proc.stdout)
        return {k: (str(v) if k == "gold_daily_revenue" else v) for k, v in rows[0].items()}

    def timeline(self, run: dict[str, Any], wall: float) -> dict[str, Any]:
        """Per-node durations and start offsets of a run, slowest first, and the start-up overhead."""
        proc = timed([self.rat, "logs", run["run_id"], "--json"], cwd=self.root, env=self.env).check("`rat logs`")
        record: dict[str, Any] = json.loads(proc.stdout)
        start = _timestamp(record["started_at"])
        logged = {n["node"]: n for n in record["nodes"]}
        nodes = []
        for node in run["nodes"]:
            row = logged.get(node["key"], {})
            began = _timestamp(row["started_at"]) if row.get("started_at") else None
            nodes.append(
                {
                    "node": node["key"],
                    "seconds": round(node["duration_s"], 3),
                    "starts_at_s": round((began - start).total_seconds(), 3) if began and start else None,
                    "rows_written": node["rows_written"],
                    "up_to_date": node["up_to_date"],
                    "tests": len(node.get("tests") or []),
                }
            )
        nodes.sort(key=lambda n: -n["seconds"])
        return {
            "process_s": round(wall, 3),
            "run_s": round(run["duration_s"], 3),
            "outside_run_s": round(wall - run["duration_s"], 3),  # interpreter, imports, project, graph, output
            "nodes": nodes,
            "log_lines": len(record.get("logs") or []),
        }

    def profile_noop_run(self) -> dict[str, Any]:
        imports = timed([sys.executable, "-X", "importtime", self.rat, "run", "--json"], cwd=self.root, env=self.env)
        imports.check("`rat run` under -X importtime")
        dump = self.scratch / "noop.prof"
        argv = [*self.child, "profile", "--out", str(dump), "--"]
        timed([*argv, "run", "--json"], cwd=self.root, env=self.env).check("`rat run` under cProfile")
        return {
            "importtime": summarize_importtime(imports.stderr),
            "cprofile": summarize_profile(dump),
        }

    def profile_full_run(self, copy: Path) -> dict[str, Any]:
        dump = self.scratch / "full.prof"
        argv = [*self.child, "profile", "--out", str(dump), "--"]
        proc = timed([*argv, "run", "--json"], cwd=copy, env=self.env).check("full `rat run` under cProfile")
        summary: dict[str, Any] = dict(summarize_profile(dump, top=20))
        summary["wall_s_under_profiler"] = round(proc.seconds, 2)
        return summary

    def warm_up(self) -> None:
        """Fill the byte-code cache: a tiny project run, a no-op, a query, and the reference's imports."""
        from ratatouille.scaffold import create_project

        tiny = create_project(self.scratch / "warm-up", rows=1000).root
        for argv in ([self.rat, "run", "--json"], [self.rat, "run", "--json"], [self.rat, "query", "SELECT 1"]):
            timed(argv, cwd=tiny, env=self.env).check(f"warm-up `{' '.join(argv[1:])}`")
        boot = "import sys; sys.path.insert(0, sys.argv[1]); import bench_pipelines, duckdb, glob, json"
        timed([sys.executable, "-c", boot, str(BENCH_DIR)], cwd=self.scratch, env=self.env).check("warm-up")
        shutil.rmtree(tiny, ignore_errors=True)

    # -- the whole size ------------------------------------------------------------------

    def run(self) -> list[Result]:
        from ratatouille.scaffold import create_project

        label = _label(self.rows)
        self.details["load_average"]["start"] = load_average()
        self.say(f"generating the POS example ({self.rows:,} rows, {DAYS} days; not timed) ...")
        clock = time.perf_counter()
        create_project(self.root, rows=self.rows)
        self.details["setup_generate_s"] = round(time.perf_counter() - clock, 2)
        self.spec_path.write_text(json.dumps(build_spec(self.scratch, self.root)))
        spec = json.loads(self.spec_path.read_text())
        self.details["profile"] = {k: spec[k] for k in ("profile", "memory_limit", "threads")}
        self.say("warming the byte-code cache (not timed) ...")
        self.warm_up()
        profile_copy = None
        if self.profile_full:
            profile_copy = self.scratch / "pos-profile"
            shutil.copytree(self.root, profile_copy)

        # Full build: rat and the reference alternate; each rat repeat starts from an empty .rat/.
        full_runs: list[tuple[Proc, dict[str, Any]]] = []
        ref_fulls: list[tuple[Proc, dict[str, Any]]] = []
        for i in range(self.repeats):
            if i:
                shutil.rmtree(self.root / ".rat")  # catalog, state and warehouse: a fresh project again
            self.details["load_average"][f"full_{i + 1}"] = load_average()
            self.say(f"full build {i + 1}/{self.repeats}: rat run ...")
            full_runs.append(self.rat_run("full build"))
            ref_fulls.append(self.reference("full"))
            self.say(
                f"full build {i + 1}/{self.repeats}: rat {full_runs[-1][0].seconds:.2f} s "
                f"{full_runs[-1][0].peak_rss_mb:.0f} MB, reference {ref_fulls[-1][0].seconds:.2f} s "
                f"{ref_fulls[-1][0].peak_rss_mb:.0f} MB"
            )
        checks = {"full": _compare(self.rat_counts(), ref_fulls[-1][1]["counts"])}
        self.details["full_timeline"] = self.timeline(full_runs[-1][1], full_runs[-1][0].seconds)
        if self.repeats > 1:  # to start every incremental repeat from the same state
            shutil.copytree(self.root / ".rat", self.scratch / "rat-after-full")
            shutil.copytree(self.ref_out, self.scratch / "ref-after-full")

        # One-day incremental.
        clock = time.perf_counter()
        new_files = add_day(self.root, self.rows // DAYS, self.scratch)
        self.details["setup_new_day_s"] = round(time.perf_counter() - clock, 2)
        incr_runs: list[tuple[Proc, dict[str, Any]]] = []
        ref_incrs: list[tuple[Proc, dict[str, Any]]] = []
        for i in range(self.repeats):
            if i:
                shutil.rmtree(self.root / ".rat")
                shutil.copytree(self.scratch / "rat-after-full", self.root / ".rat")
                shutil.rmtree(self.ref_out)
                shutil.copytree(self.scratch / "ref-after-full", self.ref_out)
            self.details["load_average"][f"incremental_{i + 1}"] = load_average()
            self.say(f"incremental {i + 1}/{self.repeats}: {len(new_files)} new files for {NEW_DAY}; rat run ...")
            incr_runs.append(self.rat_run("incremental"))
            ref_incrs.append(self.reference("incremental"))
            self.say(
                f"incremental {i + 1}/{self.repeats}: rat {incr_runs[-1][0].seconds:.2f} s "
                f"{incr_runs[-1][0].peak_rss_mb:.0f} MB, reference {ref_incrs[-1][0].seconds:.2f} s "
                f"{ref_incrs[-1][0].peak_rss_mb:.0f} MB"
            )
        shutil.rmtree(self.scratch / "rat-after-full", ignore_errors=True)
        shutil.rmtree(self.scratch / "ref-after-full", ignore_errors=True)
        checks["incremental"] = _compare(self.rat_counts(), ref_incrs[-1][1]["counts"])
        self.details["incremental_timeline"] = self.timeline(incr_runs[-1][1], incr_runs[-1][0].seconds)
        nodes = {n["key"]: n for n in incr_runs[-1][1]["nodes"]}
        self.details["incremental_rows"] = {k: n["rows_written"] for k, n in nodes.items()}
        ref_full_data, ref_incr_data = ref_fulls[-1][1], ref_incrs[-1][1]

        # No-op.
        self.say(f"no-op: rat run x{NOOP_REPEATS}, reference x{NOOP_REPEATS} ...")
        self.details["load_average"]["noop"] = load_average()
        noops: list[Proc] = []
        noop_runs: list[dict[str, Any]] = []
        ref_noops: list[Proc] = []
        for _ in range(NOOP_REPEATS):
            proc, data = self.rat_run("no-op")
            noops.append(proc)
            noop_runs.append(data)
            ref_proc, ref_data = self.reference("noop")
            if ref_data["changed"]:
                raise RuntimeError(f"the reference found work in a no-op: {ref_data['changed']}")
            ref_noops.append(ref_proc)
        idle = [
            n["key"]
            for data in noop_runs
            for n in data["nodes"]
            if not (n["up_to_date"] or (n["kind"] == "source" and n["rows_written"] == 0))
        ]
        self.details["noop_not_idle"] = sorted(set(idle))
        self.details["noop_timeline"] = self.timeline(noop_runs[0], noops[0].seconds)
        if self.profile_noop:
            self.say("profiling a no-op run (-X importtime, cProfile with threads) ...")
            self.details["noop_profile"] = self.profile_noop_run()
        if profile_copy is not None:
            self.say("profiling a full build on a copy (cProfile with threads) ...")
            self.details["full_profile"] = self.profile_full_run(profile_copy)
            shutil.rmtree(profile_copy, ignore_errors=True)
        self.details["load_average"]["end"] = load_average()

        self.details["checks"] = checks
        for stage, check in checks.items():
            if not check["equal"]:
                print(f"\n  !!! [{label}] MISMATCH after the {stage} build: {check['differences']} !!!\n", flush=True)
        self.details["reference"] = {
            "full": ref_full_data,
            "incremental": ref_incr_data,
            "noop_in_script_s": [p.payload()["seconds"] for p in ref_noops],
        }
        full_s = statistics.median(p.seconds for p, _ in full_runs)
        ref_full_s = statistics.median(p.seconds for p, _ in ref_fulls)
        incr_s = statistics.median(p.seconds for p, _ in incr_runs)
        ref_incr_s = statistics.median(p.seconds for p, _ in ref_incrs)
        self.details["times_s"] = {
            "full": [p.seconds for p, _ in full_runs],
            "reference_full": [p.seconds for p, _ in ref_fulls],
            "incremental": [p.seconds for p, _ in incr_runs],
            "reference_incremental": [p.seconds for p, _ in ref_incrs],
        }
        noop_times = [p.seconds for p in noops]
        ref_noop_times = [p.seconds for p in ref_noops]
        self.details["noop_times_s"] = noop_times
        self.details["reference_noop_times_s"] = ref_noop_times
        tested = checks["incremental"]["rat"]
        return [
            result(
                NAME,
                f"{label} full build: time (median of {self.repeats})",
                full_s,
                "s",
                reference=ref_full_s,
                target=f"<= {FULL_TARGET}x reference",
                ok=full_s <= FULL_TARGET * ref_full_s,
                details=self.details,
                reference_label=REFERENCE_LABEL,
            ),
            result(
                NAME,
                f"{label} full build: peak RSS (max)",
                max(p.peak_rss_mb for p, _ in full_runs),
                "MB",
                reference=max(p.peak_rss_mb for p, _ in ref_fulls),
                reference_label=REFERENCE_LABEL,
            ),
            result(
                NAME,
                f"{label} one-day incremental ({self.rows // DAYS:,} rows): time (median of {self.repeats})",
                incr_s,
                "s",
                reference=ref_incr_s,
                target=f"<= {INCREMENTAL_TARGET}x reference",
                ok=incr_s <= INCREMENTAL_TARGET * ref_incr_s,
                reference_label=REFERENCE_LABEL,
            ),
            result(
                NAME,
                f"{label} one-day incremental: peak RSS (max)",
                max(p.peak_rss_mb for p, _ in incr_runs),
                "MB",
                reference=max(p.peak_rss_mb for p, _ in ref_incrs),
                reference_label=REFERENCE_LABEL,
            ),
            result(
                NAME,
                f"{label} no-op rat run: median of {NOOP_REPEATS}",
                statistics.median(noop_times),
                "s",
                reference=statistics.median(ref_noop_times),
                target=f"< {NOOP_TARGET_S} s",
                ok=statistics.median(noop_times) < NOOP_TARGET_S and not self.details["noop_not_idle"],
                reference_label=REFERENCE_LABEL,
            ),
            result(
                NAME,
                f"{label} no-op rat run: min of {NOOP_REPEATS}",
                min(noop_times),
                "s",
                reference=min(ref_noop_times),
                reference_label=REFERENCE_LABEL,
            ),
            result(
                NAME,
                f"{label} no-op: peak RSS",
                max(p.peak_rss_mb for p in noops),
                "MB",
                reference=max(p.peak_rss_mb for p in ref_noops),
                reference_label=REFERENCE_LABEL,
            ),
            result(
                NAME,
                f"{label} check: silver.sales rows after incremental (+ 5 more counts, full and incr.)",
                float(tested["silver_sales"]),
                "rows",
                reference=float(checks["incremental"]["reference"]["silver_sales"]),
                target="all equal to reference",
                ok=all(c["equal"] for c in checks.values()),
                details={"checks": checks},
                reference_label=REFERENCE_LABEL,
            ),
        ]


def _timestamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(str(text))


def _compare(rat: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    normal = {k: (str(v) if k == "gold_daily_revenue" else v) for k, v in ref.items()}
    differences = {k: {"rat": rat.get(k), "reference": normal[k]} for k in normal if rat.get(k) != normal[k]}
    return {"equal": not differences, "rat": rat, "reference": normal, "differences": differences}


def print_findings(rows: int, details: dict[str, Any]) -> None:
    """Where Ratatouille's time went, for a human."""
    label = _label(rows)
    print(f"\n  [{label}] where the time goes (load average: {details['load_average']})", flush=True)
    for name in ("full_timeline", "incremental_timeline", "noop_timeline"):
        t = details.get(name)
        if not t:
            continue
        print(
            f"    {name.removesuffix('_timeline')}: process {t['process_s']} s = run {t['run_s']} s "
            f"+ outside the run {t['outside_run_s']} s (start-up, imports, graph, output)"
        )
        for n in t["nodes"][:6]:
            state = " (up to date)" if n["up_to_date"] else ""
            print(
                f"      {n['node']:<26} {n['seconds']:>8.3f} s  starts at {n['starts_at_s']} s  "
                f"rows {n['rows_written']:,}  tests {n['tests']}{state}"
            )
    ref = details.get("reference", {})
    for mode in ("full", "incremental"):
        steps = ref.get(mode, {}).get("steps")
        if steps:
            listed = ", ".join(f"{k} {v:.2f}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1]))
            print(f"    reference {mode} steps (s): {listed}")
    noop = details.get("noop_profile")
    if noop:
        imp = noop["importtime"]
        print(f"    no-op imports: {imp['total_s']} s; heavy packages (cumulative s): {imp['heavy_packages']}")
        print(
            "      slowest top-level imports: "
            + ", ".join(f"{i['module']} {i['cumulative_s']}" for i in imp["top_level"][:6])
        )
        _print_profile("no-op cProfile", noop["cprofile"])
    full = details.get("full_profile")
    if full:
        print(f"    full build under cProfile: {full['wall_s_under_profiler']} s")
        _print_profile("full-build cProfile", full)


def _print_profile(title: str, summary: dict[str, Any]) -> None:
    print(f"    {title}, own time (all threads):")
    for e in summary["by_own_time"][:8]:
        print(f"      {e['own_s']:>8.3f} s  {e['calls']:>7} calls  {e['function']}")
    print(f"    {title}, Ratatouille functions by cumulative time (threads add up):")
    for e in summary["ratatouille_by_cumulative"][:10]:
        print(f"      {e['cumulative_s']:>8.3f} s  {e['calls']:>7} calls  {e['function']}")
    print(f"    {title}, time in other libraries by the Ratatouille function calling them:")
    for e in summary["calls_out"][:10]:
        print(f"      {e['cumulative_s']:>8.3f} s  {e['caller']} -> {e['callee']}")


def run(args: argparse.Namespace) -> list[Result]:
    """Run the pipeline benchmark for each size; every temporary directory is removed unless ``--keep``."""
    keep = bool(getattr(args, "keep", False))
    results: list[Result] = []
    for rows in sizes_for(args):
        scratch = Path(tempfile.mkdtemp(prefix=f"rat-bench-pipelines-{_label(rows)}-", dir="/tmp"))
        bench = Bench(
            rows,
            scratch,
            repeats=max(1, min(int(getattr(args, "repeats", None) or MAX_REPEATS), MAX_REPEATS)),
            profile_full=bool(getattr(args, "profile_full", False)),
            profile_noop=not getattr(args, "no_profile", False),
        )
        try:
            results += bench.run()
            print_findings(rows, bench.details)
        finally:
            if keep:
                print(f"  [{_label(rows)}] kept {scratch}", flush=True)
            else:
                shutil.rmtree(scratch, ignore_errors=True)
    return results


# -- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run standalone and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows only")
    parser.add_argument(
        "--rows", dest="pipeline_rows", type=int, action="append", help="a size to run (repeatable; default 1M and 10M)"
    )
    parser.add_argument(
        "--repeats", type=int, default=MAX_REPEATS, help=f"full and incremental builds per size (at most {MAX_REPEATS})"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--profile-full", action="store_true", help="also cProfile a full build (one more build)")
    parser.add_argument("--no-profile", action="store_true", help="skip the no-op importtime / cProfile runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the result rows to this file")
    args = parser.parse_args(argv)
    results = run(args)
    try:
        from run import render_table

        print()
        print(render_table(results))
    except ImportError:
        for row in results:
            print(json.dumps({k: v for k, v in row.items() if k != "details"}, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


def child_main(argv: list[str]) -> None:
    """``child ref MODE --spec S --out O`` or ``child profile --out F -- RAT_ARGS...``."""
    if argv and argv[0] == "profile":
        split = argv.index("--") if "--" in argv else len(argv)
        parser = argparse.ArgumentParser(prog="bench_pipelines.py child profile")
        parser.add_argument("--out", type=Path, required=True)
        opts = parser.parse_args(argv[1:split])
        child_profile(opts.out, argv[split + 1 :])
        return
    parser = argparse.ArgumentParser(prog="bench_pipelines.py child ref")
    parser.add_argument("kind", choices=["ref"])
    parser.add_argument("mode", choices=["full", "incremental", "noop"])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    opts = parser.parse_args(argv)
    report(child_ref(opts.mode, opts.spec, opts.out))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        main()
