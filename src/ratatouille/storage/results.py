"""What a write is asked to do and what it did (light: no PyIceberg import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Mode = Literal["append", "overwrite", "merge", "delete+insert"]
KEYED = ("merge", "delete+insert")
SchemaDrift = Literal["evolve", "fail"]


@dataclass(frozen=True)
class WriteResult:
    """What one write did."""

    table: str
    operation: str
    snapshot_id: int | None
    rows_written: int
    rows_deleted: int = 0
    files_added: int = 0
    files_removed: int = 0
    created: bool = False
    schema_changes: tuple[str, ...] = ()
    committed: bool = True  # False when there was nothing to write (no new snapshot)
    # Every data file of the new snapshot, when this write is all the table holds (its first
    # write, or a full overwrite): readers can scan them without Iceberg metadata. Else None.
    files: tuple[str, ...] | None = None


@dataclass(frozen=True)
class NullKeys:
    """Rows whose ``keys`` hold a NULL are not written; ``divert`` gets them first.

    ``divert(select, count)`` receives a DuckDB ``SELECT`` over those rows (valid only during the
    call, on the writer's connection) and how many there are, e.g. to append them to a
    quarantine table. The check costs one scan of the key columns of the written files; the
    rows are never materialized twice.
    """

    keys: tuple[str, ...]
    divert: Callable[[str, int], None]
