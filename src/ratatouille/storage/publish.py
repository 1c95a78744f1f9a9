"""All-or-nothing publish of a run's audit branches.

A run writes each model to an audit branch ``audit_<run>`` of its table. Publishing moves every
table's ``main`` to its audit snapshot at once:

1. For each table, new metadata is prepared in which ``main`` points at the audit snapshot
   and the audit branch is gone; the metadata file is written (nothing refers to it yet).
2. On a SQL catalog, one database transaction swaps every table's ``metadata_location``,
   each guarded by the location the run started from. Either every pointer moves or none
   does; readers, which list all pointers in one query, never see half a run.
3. If any table changed under the run (another writer published to ``main``), nothing moves
   and the run reports the conflict.

A process killed before step 2 commits leaves only unreferenced metadata files: every table
is still at its last published state and the next run starts over. There is nothing to
recover, because the catalog's own transaction is the journal. Catalogs without SQL access
(REST) publish table by table, in dependency order; that is documented as not atomic
across tables.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ratatouille.errors import CommitConflictError
from ratatouille.storage.catalog import Lakehouse, TableRef

if TYPE_CHECKING:
    from pyiceberg.table import Table


@dataclass(frozen=True)
class Publication:
    """One table to publish.

    Either an existing table whose ``main`` moves to the head of ``branch``, or a new table that
    the run built under a hidden stage name (``stage``) and that becomes visible under its name.
    """

    ref: TableRef
    branch: str | None
    base_snapshot_id: int | None  # main when the run started; main must still be there
    stage: str | None = None


def fault(point: str) -> None:
    """Fault injection for the crash tests: ``RATATOUILLE_FAULT=<point>`` kills the process here."""
    if os.environ.get("RATATOUILLE_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def publish(lakehouse: Lakehouse, items: list[Publication]) -> dict[str, int]:
    """Publish every item's branch to ``main`` at once. Returns the new main snapshot per table.

    Raises:
        CommitConflictError: a table's ``main`` moved since the run started; nothing was published.
    """
    if not items:
        return {}
    catalog = lakehouse.catalog
    staged = []
    renames: list[tuple[Publication, Table]] = []
    steps: list[Callable[[], object]] = []  # for catalogs without SQL: one table after the other, in order
    result: dict[str, int] = {}
    for item in items:
        if item.stage is not None:
            stage_table = catalog.load_table((item.ref.workspace, item.ref.layer, item.stage))
            if catalog.table_exists(item.ref.identifier):
                raise CommitConflictError(
                    f"`{item.ref.short}` was created by another writer during this run; nothing was published. "
                    "Run it again"
                )
            current_stage = stage_table.current_snapshot()
            if current_stage is not None:
                result[item.ref.short] = current_stage.snapshot_id
            renames.append((item, stage_table))
            stage = (item.ref.workspace, item.ref.layer, item.stage)
            steps.append(partial(catalog.rename_table, stage, item.ref.identifier))
            continue
        assert item.branch is not None
        table = catalog.load_table(item.ref.identifier)
        current = table.current_snapshot()
        current_id = current.snapshot_id if current else None
        if current_id != item.base_snapshot_id:
            raise CommitConflictError(
                f"`{item.ref.short}` was changed by another writer during this run (main is at {current_id}, "
                f"the run started from {item.base_snapshot_id}); nothing was published. Run it again"
            )
        head = table.snapshot_by_name(item.branch)
        if head is None:
            continue
        result[item.ref.short] = head.snapshot_id
        prepared = _stage(table, item.branch, head.snapshot_id)
        staged.append((item, table, prepared))
        steps.append(partial(table.catalog.commit_table, table, prepared[3], prepared[2]))
    fault("publish:before_commit")
    if lakehouse.config.catalog.type == "sql":
        _swap_sql(lakehouse, staged, renames)
    else:
        for step in steps:
            step()
            fault("publish:between_tables")
    fault("publish:after_commit")
    return result


def published_by(lakehouse: Lakehouse, ref: TableRef, run_id: str) -> bool | None:
    """Whether run ``run_id`` published ``ref``: ``None`` when the table has no snapshot of that
    run (it wrote nothing there), else whether one of them is in the history of ``main``.
    Publishing is all or nothing, so one table a run wrote tells for the whole run."""
    from pyiceberg.table.snapshots import ancestors_of

    table = lakehouse.catalog.load_table(ref.identifier)

    def of_run(snapshot: Any) -> bool:
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        return bool(summary.get("rat.run_id") == run_id)

    if not any(of_run(s) for s in table.metadata.snapshots):
        return None
    current = table.current_snapshot()
    return current is not None and any(of_run(s) for s in ancestors_of(current, table.metadata))


def _stage(table: Table, branch: str, snapshot_id: int) -> tuple[Any, str, Any, Any]:
    """Prepare and write the new metadata of one table (not yet referenced by the catalog)."""
    from pyiceberg.table.update.snapshot import ManageSnapshots

    tx = table.transaction()
    ManageSnapshots(tx).set_current_snapshot(snapshot_id=snapshot_id).remove_branch(branch).commit()
    schema_id = table.metadata.snapshot_by_id(snapshot_id).schema_id  # type: ignore[union-attr]
    if schema_id is not None and schema_id != table.metadata.current_schema_id:
        # The run changed the schema on its branch only (storage.writer): it becomes current now.
        from pyiceberg.table.update import SetCurrentSchemaUpdate

        tx._stage((SetCurrentSchemaUpdate(schema_id=schema_id),))  # noqa: SLF001
    updates = tx._updates  # noqa: SLF001 - pinned PyIceberg 0.12: there is no public staging API
    requirements = tx._requirements  # noqa: SLF001
    catalog: Any = table.catalog
    staged = catalog._update_and_stage_table(table, table.name(), requirements, updates)  # noqa: SLF001
    catalog._write_metadata(staged.metadata, staged.io, staged.metadata_location)  # noqa: SLF001
    return staged.metadata, staged.metadata_location, updates, requirements


def _swap_sql(
    lakehouse: Lakehouse,
    staged: list[tuple[Publication, Table, tuple[Any, str, Any, Any]]],
    renames: list[tuple[Publication, Table]],
) -> None:
    catalog: Any = lakehouse.catalog
    name = lakehouse.config.catalog.name
    statement = (
        "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? "
        "WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location = ?"
    )
    rename = (
        "UPDATE iceberg_tables SET table_name = ? "
        "WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location = ?"
    )
    with catalog.db.transaction() as db:
        for item, stage_table in renames:
            namespace = f"{item.ref.workspace}.{item.ref.layer}"
            moved = db.execute(rename, (item.ref.name, name, namespace, item.stage, stage_table.metadata_location))
            if moved != 1:
                raise CommitConflictError(f"`{item.ref.short}` could not be published; nothing was published")
            fault("publish:between_tables")
        for item, table, (_metadata, new_location, _u, _r) in staged:
            namespace = f"{item.ref.workspace}.{item.ref.layer}"
            old_location = table.metadata_location
            moved = db.execute(statement, (new_location, old_location, name, namespace, item.ref.name, old_location))
            if moved != 1:
                raise CommitConflictError(
                    f"`{item.ref.short}` was changed by another writer while publishing; nothing was published. "
                    "Run it again"
                )
            fault("publish:between_tables")
