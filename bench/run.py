"""Run Ratatouille's benchmarks, print them as a table and save them as JSON.

Usage (``make bench`` runs the first)::

    .venv/bin/python bench/run.py                 # everything, 10M rows
    .venv/bin/python bench/run.py --quick         # 1M rows, fewer repeats: checks the bench works
    .venv/bin/python bench/run.py --only merge    # one module (core) or benchmark (cli, append, merge)

Every ``bench/bench_*.py`` module provides ``NAME``, ``BENCHMARKS`` (the names ``--only``
accepts) and ``run(args) -> list[Result]`` (see ``benchlib.Result``). Results go to
``bench/results/<UTC timestamp>.json`` and ``bench/results/latest.json``. A missed target is
printed as ``MISSED`` but does not fail the run; a benchmark that crashes does (exit code 1).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
COLUMNS = ("benchmark", "case", "value", "unit", "reference", "ratio", "target", "ok")

if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import Result  # noqa: E402 - needs BENCH_DIR on sys.path first


def discover() -> tuple[list[ModuleType], list[dict[str, str]]]:
    """Import every ``bench_*.py`` module next to this file, in name order; also the import errors."""
    modules, errors = [], []
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a broken module must not stop the others
            traceback.print_exc()
            errors.append({"module": path.stem, "error": f"cannot import: {type(exc).__name__}: {exc}"})
            continue
        module.__dict__.setdefault("NAME", path.stem.removeprefix("bench_"))
        module.__dict__.setdefault("BENCHMARKS", ())
        modules.append(module)
    return modules, errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` lowers rows and repeats unless they are given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=None, help="table size for append/merge (default 10,000,000)")
    parser.add_argument("--quick", action="store_true", help="1M rows and 3 repeats: check that the bench works")
    parser.add_argument("--only", default=None, help="run one module or benchmark (e.g. core, cli, append, merge)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per CLI timing (default 10, 3 with --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project and reference files")
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = 1_000_000 if args.quick else 10_000_000
    if args.repeats is None:
        args.repeats = 3 if args.quick else 10
    if args.rows < 20 or args.repeats < 1:
        parser.error("--rows must be at least 20 and --repeats at least 1")
    return args


# -- formatting ---------------------------------------------------------------------------


def fmt_number(value: float | None) -> str:
    """A number for the table: thousands separators for big ones, three significant digits for small."""
    if value is None:
        return ""
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ok(ok: bool | None) -> str:
    """``ok``, ``MISSED`` or nothing (no target)."""
    return "" if ok is None else ("ok" if ok else "MISSED")


def render_table(results: list[Result]) -> str:
    """The results as a plain-text table, with a legend of the references under it."""
    rows = [
        [
            r["benchmark"],
            r["case"],
            fmt_number(r["value"]),
            r["unit"],
            fmt_number(r["reference"]),
            f"{r['ratio']:.2f}x" if r["ratio"] is not None else "",
            r["target"] or "",
            fmt_ok(r["ok"]),
        ]
        for r in results
    ]
    numeric = {"value", "reference", "ratio"}
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        parts = [
            cell.rjust(width) if name in numeric else cell.ljust(width)
            for cell, width, name in zip(cells, widths, COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(COLUMNS), line(tuple("-" * w for w in widths))]
    previous = None
    for r, row in zip(results, rows, strict=True):
        if previous is not None and r["benchmark"] != previous:
            out.append("")
        previous = r["benchmark"]
        out.append(line(row))
    legend: dict[str, list[str]] = {}
    for r in results:
        if r["reference_label"]:
            names = legend.setdefault(r["reference_label"], [])
            if r["benchmark"] not in names:
                names.append(r["benchmark"])
    if legend:
        out += ["", "reference = the same work without Ratatouille, measured in this run; ratio = value / reference:"]
        out += [f"  {', '.join(names)}: {label}" for label, names in legend.items()]
    return "\n".join(out)


# -- metadata -----------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    return proc.stdout.strip() or None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_bytes": memory,
        "ratatouille": _version("ratatouille"),
        "duckdb": _version("duckdb"),
        "pyiceberg": _version("pyiceberg"),
        "pyarrow": _version("pyarrow"),
        "git_commit": _git_commit(),
    }


def load_average() -> float | None:
    """The 1-minute load average (``None`` where unknown)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def busy_warning(loads: list[float | None]) -> str | None:
    """A warning when other work competed for the CPUs during the run (timings then mean little)."""
    cpus = os.cpu_count() or 1
    worst = max((x for x in loads if x is not None), default=0.0)
    if worst <= cpus:
        return None
    return (
        f"WARNING: the machine was busy (load average up to {worst:.1f} on {cpus} CPUs): "
        "timings and their ratios are unreliable (peak RSS is not). Run again on a quiet machine."
    )


def save(payload: dict[str, Any], stamp: str) -> Path:
    """Write the run to ``results/<stamp>.json`` and ``results/latest.json``; return the first."""
    RESULTS_DIR.mkdir(exist_ok=True)
    text = json.dumps(payload, indent=2, default=str) + "\n"
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    return path


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; 0 unless one crashed (a missed target is not a failure)."""
    args = parse_args(argv)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    modules, errors = discover()
    selected = []
    for module in modules:
        names = (module.NAME, *module.BENCHMARKS)
        if args.only is None or args.only in names:
            selected.append(module)
    if not selected:
        known = sorted({n for m in modules for n in (m.NAME, *m.BENCHMARKS)})
        print(f"no benchmark named {args.only!r}; choose from: {', '.join(known)}", file=sys.stderr)
        return 2

    loads = [load_average()]
    results: list[Result] = []
    clock = time.perf_counter()
    for module in selected:
        print(f"[{module.NAME}] rows={args.rows:,} repeats={args.repeats}", flush=True)
        module_started = time.perf_counter()
        try:
            results += module.run(args)
        except Exception as exc:  # report and go on with the other modules
            traceback.print_exc()
            errors.append({"module": module.NAME, "error": f"{type(exc).__name__}: {exc}"})
        loads.append(load_average())
        print(f"[{module.NAME}] done in {time.perf_counter() - module_started:.1f} s", flush=True)

    print()
    print(render_table(results) if results else "(no results)")
    missed = [r for r in results if r["ok"] is False]
    met = [r for r in results if r["ok"] is True]
    print()
    print(f"targets: {len(met)} met, {len(missed)} MISSED")
    for r in missed:
        print(f"  MISSED: {r['benchmark']} / {r['case']}: {fmt_number(r['value'])} {r['unit']} (target {r['target']})")
    for error in errors:
        print(f"  ERROR: {error['module']}: {error['error']}")
    warning = busy_warning(loads)
    if warning:
        print(warning)

    payload = {
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - clock,
        "args": vars(args),
        "machine": machine(),
        "load_average": loads,
        "warning": warning,
        "results": results,
        "errors": errors,
    }
    path = save(payload, stamp)
    print(f"saved {path.relative_to(BENCH_DIR.parent)} and bench/results/latest.json")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
