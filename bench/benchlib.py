"""Small helpers shared by the benchmark modules: result rows, memory readings, child processes.

Kept free of Ratatouille imports so that a child process that only runs plain DuckDB does not
pay for (or get its peak RSS inflated by) importing the project.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

RESULT_MARKER = "BENCH_RESULT "


class Result(TypedDict):
    """One row of the results table (and of the JSON file)."""

    benchmark: str
    case: str
    value: float
    unit: str
    reference: float | None
    reference_label: str | None
    ratio: float | None
    target: str | None
    ok: bool | None
    details: dict[str, Any]


def result(
    benchmark: str,
    case: str,
    value: float,
    unit: str,
    *,
    reference: float | None = None,
    reference_label: str | None = None,
    target: str | None = None,
    ok: bool | None = None,
    details: dict[str, Any] | None = None,
) -> Result:
    """Build a result row; ``ratio`` is ``value / reference`` when there is a reference."""
    ratio = value / reference if reference else None
    return Result(
        benchmark=benchmark,
        case=case,
        value=value,
        unit=unit,
        reference=reference,
        reference_label=reference_label,
        ratio=ratio,
        target=target,
        ok=ok,
        details=details or {},
    )


# -- memory -------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or ``None`` elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (10**6 bytes).

    ``VmHWM`` from ``/proc/self/status``; falls back to ``ru_maxrss`` (KiB on Linux).
    """
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024 / 1e6


def current_rss_mb() -> float:
    """Current resident set size of this process, in MB (0.0 where unknown)."""
    kib = _status_kib("VmRSS")
    return (kib or 0) * 1024 / 1e6


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far: less sensitive to a busy machine than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_anon_rss_mb() -> float:
    """Current anonymous resident memory (``RssAnon``: heap, not shared-library pages), in MB."""
    kib = _status_kib("RssAnon")
    return (kib or 0) * 1024 / 1e6


def report(payload: dict[str, Any]) -> None:
    """Print a child's result as one marked JSON line on stdout (the parent looks for the marker)."""
    sys.stdout.write(RESULT_MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


# -- processes ----------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment for child processes, without ``RAT_*`` overrides that would skew a run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAT_")}


def run_child(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 7200) -> dict[str, Any]:
    """Run a child that ends with ``report(...)``; return its payload plus ``process_seconds``.

    Raises:
        RuntimeError: the child failed or printed no result (its stderr tail is in the message).
    """
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv), cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"benchmark child {' '.join(argv)} failed (exit {proc.returncode}):\n{tail}")
    payload: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARKER) :])
    payload["process_seconds"] = elapsed
    return payload


def wall_times(argv: Sequence[str], repeats: int, *, cwd: Path | None = None, warmup: int = 1) -> list[float]:
    """Wall time of ``repeats`` runs of a command (after ``warmup`` unmeasured runs), in seconds.

    Raises:
        RuntimeError: the command exits with an error.
    """
    env = clean_env()
    times: list[float] = []
    for i in range(warmup + repeats):
        started = time.perf_counter()
        proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        if i >= warmup:
            times.append(elapsed)
    return times


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a list of timings."""
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}
