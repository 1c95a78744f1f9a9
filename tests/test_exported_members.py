"""The public API is exactly what __all__ says."""

from __future__ import annotations

import ratatouille


def test_all_lists_exactly_the_public_names() -> None:
    assert sorted(ratatouille.__all__) == [
        "Project",
        "Rat",
        "RatatouilleError",
        "Result",
        "Workspace",
        "WriteResult",
        "pipeline",
        "rat",
    ]
    for name in ratatouille.__all__:
        assert getattr(ratatouille, name) is not None
