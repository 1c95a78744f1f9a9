"""Helpers shared by tests (importable as `helpers`)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_project(root: Path, extra: str = "") -> Path:
    """Write a minimal ratatouille.yaml (tiny profile, so tests respect small machines)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratatouille.yaml").write_text(f"name: test\nprofile: tiny\n{textwrap.dedent(extra)}")
    return root
