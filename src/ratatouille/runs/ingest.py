"""Run a declarative source as a node of a run: read with its connector, write bronze.

Outputs go to the run's audit branch like every model's, so a source is published together with
the models that read it. Bookkeeping that must not run ahead of the data (the file registry,
a connector's cursor state) is saved only after the run has published.

Files are ingested exactly once, keyed on path + size + checksum: a new file is read, an
unchanged one skipped, a changed one re-read (its previous rows are replaced, and the change is
logged); new files are hashed while they are read, off the run's critical path. Before its run
publishes, a source notes the files it read as pending (with the run's id) in its source state; after the publish they go to the registry. If the process dies in
between, the next run finds the note: when that run's snapshot is in the table's ``main``
history the files are registered (their rows are published), otherwise they are read again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ratatouille.connectors.base import Output, ReadContext, SourceConfig
from ratatouille.connectors.registry import connector_class
from ratatouille.runs.dag import Node
from ratatouille.storage.files import FileInfo, Landing

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from ratatouille.runs.runner import NodeResult, RunContext, Runner

log = logging.getLogger("ratatouille.ingest")


def run_source(
    runner: Runner, ctx: RunContext, node: Node, cursor: Callable[[], duckdb.DuckDBPyConnection]
) -> NodeResult:
    """Ingest one source into ``bronze.<name>`` on the run's branch (``cursor()`` opens the node's
    DuckDB cursor; a files source with nothing new never calls it).

    Raises:
        ConnectorError: the source cannot be read (or a bad row with ``on_error: fail``).
    """
    from ratatouille.runs.runner import NodeResult

    config, _path = node.payload
    assert isinstance(config, SourceConfig)
    result = NodeResult(node.key, "source")
    landing = Landing(runner.landing, runner.lakehouse.config.storage.s3)
    state: dict[str, Any] = dict(ctx.state.source_state(ctx.workspace, config.name))
    changed: list[str] = []
    files: list[dict[str, Any]] = []
    checksums: _Checksums | None = None
    if config.type == "files":
        files, changed = _new_files(runner, ctx, node, landing)
        state = {"files": [f["path"] for f in files]}
        if not files:
            ctx.state.log(ctx.run_id, "INFO", "no new files", node.key)
            return result
        checksums = _Checksums(landing, [f for f in files if f["checksum"] is None])
    runner.lakehouse.warm_up()  # the write needs the catalog: open it while the files are read
    con = cursor()
    runner.warm_views()  # downstream nodes need them: built while the files are read
    connector = connector_class(config.type)(config)  # after the check: no new file, no import
    from datetime import UTC, datetime

    ingested_at = datetime.now(UTC)
    setattr(connector, "con", con)  # noqa: B010 - connectors may use the run's connection
    setattr(connector, "sql_outputs", True)  # noqa: B010 - CSV straight from DuckDB, no Arrow round trip
    extra = {} if config.type == "files" else {"_source": config.name, "_ingested_at": ingested_at}
    outputs: list[Output] = []

    def write(table: str, group: list[Output]) -> None:
        key = node.key if not table else f"{node.key}_{table}"
        first = group[0]
        mode = {"append": "append", "merge": "merge", "replace": "overwrite"}[first.mode]
        options: dict[str, Any] = {"schema_drift": config.schema_drift}
        if mode == "merge":
            options["unique_key"] = first.primary_key
        if changed and not table:
            # Changed files replace the rows of their previous version, in the same commit.
            listed = ", ".join("'" + p.replace("'", "''") + "'" for p in changed)
            mode, options["where"] = "overwrite", f"_source_file IN ({listed})"
        queries = [f"SELECT * FROM ({o.sql})" for o in group if o.sql is not None]
        if queries:
            # CSV: DuckDB reads the files straight into the table's Parquet files, in one COPY.
            written = ctx.write(con, key, " UNION ALL BY NAME ".join(queries), mode, owner=node.key, **options)  # type: ignore[arg-type]
            result.rows_written += written.rows_written
            result.snapshot_id = written.snapshot_id
            # Then each file's rejects are collected; rows read again after a runaway quote (a
            # few lines each) come back as batches, appended in a second commit of the branch.
            rest = [batch for output in group for batch in output.batches]
            if not rest:
                return
            import pyarrow as pa

            tables = [pa.Table.from_batches([batch]) for batch in rest]
            data: Any = pa.concat_tables(tables, promote_options="permissive")
            mode, options = "append", {"schema_drift": config.schema_drift}
        else:
            data = _one_stream(group, extra)
            if data is None:
                return
        written = ctx.write(con, key, data, mode, owner=node.key, **options)  # type: ignore[arg-type]
        result.rows_written += written.rows_written
        result.snapshot_id = written.snapshot_id

    reading = connector.read(ReadContext(state=state, log=log))
    try:
        _read_and_write(config, reading, outputs, write)
    finally:
        if checksums is not None:
            checksums.join()  # also when the read failed: no thread outlives its run
    # Connectors fill in quarantine while their batches are read, so collect it afterwards.
    quarantined = [row for output in outputs for row in output.quarantine]
    if changed:
        for path in changed:
            ctx.state.log(ctx.run_id, "WARN", f"{path} changed since it was ingested; re-ingested", node.key)
    if quarantined:
        import pyarrow as pa

        table = pa.Table.from_pylist([{k: _text(v) for k, v in row.items()} for row in quarantined])
        ctx.write(con, f"quarantine.bronze_{config.name}", table, "append", owner=node.key)
        result.rows_quarantined = len(quarantined)
        ctx.state.log(ctx.run_id, "WARN", f"{len(quarantined)} bad row(s) quarantined", node.key)
    new_state = dict(connector.new_state)
    workspace = ctx.workspace
    if files:
        ctx.state.save_source_state(workspace, config.name, {"pending": {"run_id": ctx.run_id, "files": files}})

    def save() -> None:
        if files:
            ctx.state.record_files(workspace, node.key, files, ctx.run_id)
            ctx.state.save_source_state(workspace, config.name, {})
        if config.type != "files" and new_state:
            ctx.state.save_source_state(workspace, config.name, new_state)

    ctx.after_publish.append((node.key, save))
    return result


def _read_and_write(
    config: SourceConfig, reading: Iterator[Output], outputs: list[Output], write: Callable[[str, list[Output]], None]
) -> None:
    """Consume the connector's outputs into ``outputs``, writing each table as it comes."""
    if config.type == "files":
        # One output per file: all files of a table go into one commit, in one stream.
        outputs.extend(reading)
        by_table: dict[str, list[Output]] = {}
        for output in outputs:
            by_table.setdefault(output.table, []).append(output)
        for table, group in by_table.items():
            write(table, group)
    else:
        # Other connectors stream: each output must be consumed before the next is read.
        for output in reading:
            outputs.append(output)
            write(output.table, [output])


class _Checksums:
    """The checksums of new files, computed on a thread while the files are read.

    A new file needs no checksum to be read, only to be registered after the run; hashing it
    first held up the run's critical path (60 MB for the 1M-row POS example). Each entry gets
    its checksum in place; a file that changed while it was hashed gets none (``""``), so the
    next run sees it as changed and reads it again.
    """

    def __init__(self, landing: Landing, entries: list[dict[str, Any]]) -> None:
        self.landing = landing
        self.entries = entries
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if entries:
            self.thread = threading.Thread(target=self._run, name="rat-checksums", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            for entry in self.entries:
                checksum = self.landing.checksum(entry["path"])
                now = self.landing.stat(entry["path"])
                unchanged = now is not None and (now.size, now.mtime_ns) == (entry["size"], entry["mtime_ns"])
                entry["checksum"] = checksum if unchanged else ""
        except BaseException as exc:  # raised again by ``join``, on the run's thread
            self.error = exc

    def join(self) -> None:
        """Wait for every checksum.

        Raises:
            ConnectorError: a file could not be read.
        """
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error


def _text(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _one_stream(outputs: list[Output], extra: dict[str, Any]) -> pa.RecordBatchReader | None:
    """All outputs of one table as one stream, each batch aligned to their unified schema, with
    the ``extra`` constant columns (``_source``, ``_ingested_at``) added."""
    import pyarrow as pa

    schemas = [o.schema for o in outputs if o.schema is not None]
    if not schemas:
        return None
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    for name, value in extra.items():
        if schema.get_field_index(name) < 0:
            schema = schema.append(pa.field(name, pa.scalar(value).type))

    def batches() -> Iterator[pa.RecordBatch]:
        for output in outputs:
            for batch in output.batches:
                columns = []
                for f in schema:
                    index = batch.schema.get_field_index(f.name)
                    if index < 0 and f.name in extra:
                        columns.append(pa.array([extra[f.name]] * batch.num_rows, f.type))
                    elif index < 0:
                        columns.append(pa.nulls(batch.num_rows, f.type))
                    else:
                        columns.append(batch.column(index).cast(f.type))
                yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _new_files(runner: Runner, ctx: RunContext, node: Node, landing: Landing) -> tuple[list[dict[str, Any]], list[str]]:
    """Files to read: new or changed since their registry entry. Returns entries and changed paths."""
    config = node.payload[0]
    _settle_pending(runner, ctx, node)
    found: list[FileInfo] = landing.glob(str(getattr(config, "path")))  # noqa: B009
    registry = ctx.state.file_records(ctx.workspace, node.key)
    todo: list[dict[str, Any]] = []
    changed: list[str] = []
    for info in found:
        record = registry.get(info.path)
        if record is None:  # new: read it; its checksum is computed while it is read (``_Checksums``)
            todo.append({"path": info.path, "size": info.size, "checksum": None, "mtime_ns": info.mtime_ns})
            continue
        if record["size"] == info.size and record.get("mtime_ns") == info.mtime_ns:
            continue  # unchanged (same size and modification time): no need to read it
        checksum = landing.checksum(info.path)
        if record["size"] == info.size and record["checksum"] == checksum:
            continue
        changed.append(info.path)
        todo.append({"path": info.path, "size": info.size, "checksum": checksum, "mtime_ns": info.mtime_ns})
    return todo, changed


def _settle_pending(runner: Runner, ctx: RunContext, node: Node) -> None:
    """Files an earlier run read but did not register (it died around its publish): registered
    if that run published, forgotten (so read again) if it did not."""
    name = node.payload[0].name
    pending = ctx.state.source_state(ctx.workspace, name).get("pending")
    if not pending:
        return
    from ratatouille.storage.publish import published_by

    run_id, files = str(pending["run_id"]), list(pending["files"])
    tables = [node.key, f"quarantine.bronze_{name}"]
    if any(published_by(runner.lakehouse, ctx.ref(key), run_id) for key in tables if key in runner.locations):
        ctx.state.record_files(ctx.workspace, node.key, files, run_id)
        message = f"{len(files)} file(s) read by run {run_id} were published but not registered; registered"
        ctx.state.log(ctx.run_id, "INFO", message, node.key)
    ctx.state.save_source_state(ctx.workspace, name, {})


__all__ = ["run_source"]
