"""Ratatouille: a self-hosted data platform in one install.

``from ratatouille import rat`` gives the SDK; ``Workspace`` is the object everything runs on.
Heavy libraries (DuckDB, PyArrow, PyIceberg) load only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ratatouille.errors import RatatouilleError

if TYPE_CHECKING:
    from ratatouille.models.loader import pipeline
    from ratatouille.project import Project
    from ratatouille.sdk import Rat, Result, rat
    from ratatouille.storage.results import WriteResult
    from ratatouille.workspace import Workspace

__all__ = ["Project", "Rat", "RatatouilleError", "Result", "Workspace", "WriteResult", "pipeline", "rat"]

_LAZY = {
    "Project": "ratatouille.project",
    "Rat": "ratatouille.sdk",
    "Result": "ratatouille.sdk",
    "rat": "ratatouille.sdk",
    "pipeline": "ratatouille.models.loader",
    "Workspace": "ratatouille.workspace",
    "WriteResult": "ratatouille.storage.results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ratatouille' has no attribute {name!r}")
