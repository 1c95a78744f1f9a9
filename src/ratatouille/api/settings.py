"""Limits of the API, read from ``server:`` in ``ratatouille.yaml`` when the keys exist."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# Defaults, used when ``server:`` does not set the key. Results stream, so the row limit bounds
# the work and the transfer, not the server's memory.
QUERY_ROW_LIMIT = 10_000_000
STATEMENT_TIMEOUT_SECONDS = 300.0
QUERY_BATCH_ROWS = 65_536
PREVIEW_ROWS = 100
MAX_PREVIEW_ROWS = 10_000
RUN_START_TIMEOUT_SECONDS = 120.0
SHUTDOWN_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class ApiSettings:
    """What the API allows: rows per query, how long a statement may run, preview sizes."""

    query_row_limit: int = QUERY_ROW_LIMIT
    statement_timeout_seconds: float | None = STATEMENT_TIMEOUT_SECONDS
    query_batch_rows: int = QUERY_BATCH_ROWS
    preview_rows: int = PREVIEW_ROWS
    run_start_timeout_seconds: float = RUN_START_TIMEOUT_SECONDS
    shutdown_grace_seconds: float = SHUTDOWN_GRACE_SECONDS

    @classmethod
    def from_config(cls, server: Any, **overrides: Any) -> ApiSettings:
        """Take every field that ``server`` (the ``server:`` config section) sets, then ``overrides``.

        A statement timeout of 0 means none.
        """
        values = {
            name: getattr(server, name) for name in cls.__dataclass_fields__ if getattr(server, name, None) is not None
        }
        settings = replace(cls(**values), **overrides)
        if settings.statement_timeout_seconds is not None and settings.statement_timeout_seconds <= 0:
            settings = replace(settings, statement_timeout_seconds=None)
        return settings
