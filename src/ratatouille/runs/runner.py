"""Run a selection of the DAG with write-audit-publish.

For each node, in dependency order and in parallel up to the profile's limit:

1. compile (SQL) against the run's view of the lakehouse: upstream tables written earlier in
   this run are read at their audit snapshot, everything else at ``main`` as of the run's start;
2. write the result to the target's audit branch ``audit_<run>`` (sources ingest the same way);
3. run the model's tests against that branch; an ``error`` failure stops the model's
   descendants and keeps its output unpublished (a sample of failing rows is reported);
4. when every node has finished, publish every audit branch that passed, all at once
   (``storage.publish``): readers never see half a run.

Every node's status, rows, duration, snapshot, watermark, tests and error go to the state store.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ratatouille.engine import literal, quote
from ratatouille.errors import CommitConflictError, PipelineError, RatatouilleError, TestFailure
from ratatouille.models.compiler import CompileContext, CompileProblem
from ratatouille.models.config import Materialized, Strategy
from ratatouille.models.loader import Model
from ratatouille.models.testing import TestResult, data_tests, run_tests
from ratatouille.runs.dag import Node
from ratatouille.runs.graph import Graph
from ratatouille.state.store import StateStore
from ratatouille.storage.catalog import Lakehouse, TableRef
from ratatouille.storage.publish import Publication, fault, publish
from ratatouille.storage.results import Mode, NullKeys, WriteResult

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger("ratatouille.run")
_TICK_S = 0.2


@dataclass
class NodeResult:
    """One node's outcome in a run."""

    key: str
    kind: str
    status: str = "pending"  # success | failed | skipped | blocked
    materialized: str | None = None
    rows_written: int = 0
    rows_deleted: int = 0
    rows_quarantined: int = 0
    duration_s: float = 0.0
    snapshot_id: int | None = None
    watermark: str | None = None
    error: str | None = None
    tests: list[TestResult] = field(default_factory=list)
    up_to_date: bool = False  # skipped: its definition and inputs did not change since it was built
    progress: float | None = None  # while running: DuckDB's progress (0-100) through its current statement


@dataclass
class RunResult:
    """A whole run's outcome."""

    run_id: str
    status: str
    nodes: list[NodeResult]
    published: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every node succeeded and everything was published."""
        return self.status == "success"


# Events: "started", "progress" (while running, about every 0.2 s when DuckDB reports a change),
# then the node's final status ("success", "failed", "skipped").
ProgressCallback = Callable[[str, NodeResult], None]
# A source node gets a function that opens its DuckDB cursor: a source with nothing new to read
# never needs one (and a run with nothing to do never imports DuckDB).
SourceRunner = Callable[["RunContext", Node, Callable[[], "duckdb.DuckDBPyConnection"]], NodeResult]


@dataclass
class RunContext:
    """What a node sees of the run it belongs to (also used by Python pipelines and sources)."""

    run_id: str
    workspace: str
    branch: str
    lakehouse: Lakehouse
    state: StateStore
    full_refresh: bool
    bases: dict[str, int | None]  # table key -> main snapshot at run start (published tables)
    listed: dict[str, str | None] | None = None  # the workspace's tables at run start (key -> metadata)
    touched: dict[str, TableRef] = field(default_factory=dict)  # tables written to the branch
    stages: dict[str, str] = field(default_factory=dict)  # new table key -> hidden stage name
    changed: set[str] = field(default_factory=set)  # tables that got a new snapshot in this run
    # Table key -> every data file of its head, when the run wrote it once and that write is all
    # it holds (``WriteResult.files``); None once it is written again.
    files: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # table key -> node that wrote it
    after_publish: list[tuple[str, Callable[[], None]]] = field(default_factory=list)  # (node, hook)
    lock: threading.RLock = field(default_factory=threading.RLock)
    key_locks: dict[str, threading.Lock] = field(default_factory=dict)

    def write(
        self,
        con: duckdb.DuckDBPyConnection,
        key: str,
        source_sql: str,
        mode: Mode,
        **options: Any,
    ) -> WriteResult:
        """Write to ``key``'s audit branch (creating the branch at ``main`` first)."""
        ref = self.ref(key)
        owner = options.pop("owner", None) or key
        self.prepare_branch(key)
        from ratatouille.storage.writer import TableWriter

        writer = TableWriter(self.lakehouse, con)
        properties = {"rat.run_id": self.run_id, "rat.node": key, **options.pop("properties", {})}
        target, branch = self.target(key)
        with self.lock:  # a stage table is created by its first write
            new_table = key in self.stages and key not in self.touched
        from ratatouille.engine import register_data

        source, cleanup = register_data(con, source_sql)
        try:
            result = writer.write(
                target, source, mode=mode, branch=branch, properties=properties, new_table=new_table, **options
            )
        finally:
            cleanup()
        with self.lock:
            self.touched[key] = ref
            self.owners.setdefault(key, owner)
            if result.committed:
                self.changed.add(key)
                # A second write (in whichever order the commits landed) makes the list unknown.
                self.files[key] = None if key in self.files else result.files
        return result

    def ref(self, key: str) -> TableRef:
        """The table of a node key ``layer.name`` in this workspace."""
        layer, name = key.split(".", 1)
        return TableRef(self.workspace, layer, name)

    def target(self, key: str) -> tuple[TableRef, str | None]:
        """Where this run writes ``key``: the audit branch of the table, or its hidden stage table."""
        ref = self.ref(key)
        if key in self.stages:
            return TableRef(ref.workspace, ref.layer, self.stages[key]), None
        return ref, self.branch

    def prepare_branch(self, key: str) -> None:
        """Create the audit branch of an existing table at its ``main`` snapshot, or choose a
        stage name for a table that does not exist yet (Iceberg branches need a snapshot)."""
        from ratatouille.storage.catalog import stage_name

        with self.lock:
            if key in self.bases:
                return
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:  # catalog calls outside the run's lock: other tables need not wait
            if key in self.bases:
                return
            ref = self.ref(key)
            base: int | None = None
            table = None
            if self.listed is None or key in self.listed:  # else it did not exist: no need to wait for the catalog
                catalog = self.lakehouse.catalog
                table = catalog.load_table(ref.identifier) if catalog.table_exists(ref.identifier) else None
            current = table.current_snapshot() if table is not None else None
            if table is not None and current is not None:
                base = current.snapshot_id  # the writer creates the branch here, with its first commit
            elif table is not None:  # an empty leftover (no snapshot): replaced on publish
                self.lakehouse.catalog.drop_table(ref.identifier)
            with self.lock:
                if base is None:
                    self.stages[key] = stage_name(ref.name, stage_token(self.run_id))
                self.bases[key] = base


class Runner:
    """Executes one run of a workspace's graph."""

    def __init__(
        self,
        *,
        graph: Graph,
        lakehouse: Lakehouse,
        state: StateStore,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        workspace: str,
        landing: str,
        max_parallel: int,
        full_refresh: bool = False,
        trigger: str = "cli",
        source_runner: SourceRunner | None = None,
        progress: ProgressCallback | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> None:
        self.graph = graph
        self.lakehouse = lakehouse
        self.state = state
        self._connect = connect
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()
        self.workspace = workspace
        self.landing = landing
        self.max_parallel = max(1, max_parallel)
        self.full_refresh = full_refresh
        self.trigger = trigger
        self.source_runner = source_runner
        self.progress = progress or (lambda event, result: None)
        self.on_start = on_start
        self._view_lock = threading.Lock()
        self._iceberg_lock = threading.Lock()
        self._iceberg_loaded = False
        self._view_builder: threading.Thread | None = None
        self._builder_lock = threading.Lock()  # not the view lock: the builder holds that one
        self._cursors: dict[str, duckdb.DuckDBPyConnection] = {}
        self._cursor_lock = threading.Lock()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The workspace's DuckDB session, opened when a node first needs it."""
        with self._con_lock:
            if self._con is None:
                self._con = self._connect()
            return self._con

    # -- the run --------------------------------------------------------------------------

    def run(self, selection: set[str], selectors: str = "") -> RunResult:
        """Run the selected nodes and publish what passed.

        Raises:
            RatatouilleError: the run could not start (state store or catalog unreachable).
        """
        with _short_gil_turns():
            return self._run(selection, selectors)

    def _run(self, selection: set[str], selectors: str) -> RunResult:
        started = time.perf_counter()
        settle_abandoned(self.state, self.lakehouse)
        run_id = self.state.start_run(self.workspace, self.trigger, selectors or "*")
        branch = audit_branch(run_id)
        ctx = RunContext(run_id, self.workspace, branch, self.lakehouse, self.state, self.full_refresh, {})
        self.db = f"__rat_run_{re.sub(r'[^a-z0-9]', '_', run_id.lower())}"
        self._views_ready = False
        self._view_builder = None
        try:  # from here on, whatever goes wrong closes the run record as failed
            if self.on_start is not None:
                self.on_start(run_id)  # e.g. the API answers with the id while the run goes on
            order = self.graph.dag.order(selection)
            results = {key: NodeResult(key, self.graph.dag.nodes[key].kind) for key in order}
            self.state.add_nodes(run_id, [(key, results[key].kind) for key in order])
            self.locations = {r.short: r.metadata_location for r in self.lakehouse.list_tables(self.workspace)}
            ctx.listed = self.locations
            self.previous = {} if self.full_refresh else self.state.node_states(self.workspace)
            self._execute(ctx, order, results)
            published, error = self._publish(ctx, results)
            if error is None:
                self._remember_inputs(ctx, results)
        except BaseException as exc:
            self._cleanup_branches(ctx)
            self.state.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if self._view_builder is not None:
                self._view_builder.join()
            self._drop_views()
        failed = [r for r in results.values() if r.status != "success"]
        status = "success" if not failed and error is None else "failed"
        self.state.finish_run(run_id, status, error or (f"{len(failed)} node(s) did not succeed" if failed else None))
        return RunResult(run_id, status, list(results.values()), published, error, time.perf_counter() - started)

    def _execute(self, ctx: RunContext, order: list[str], results: dict[str, NodeResult]) -> None:
        dag = self.graph.dag
        pending = list(order)
        running: dict[Future[NodeResult], str] = {}
        done: set[str] = set()
        with ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="rat-node") as pool:
            while pending or running:
                for key in list(pending):
                    ups = [u for u in dag.nodes[key].upstream if u in results]
                    if any(results[u].status in ("failed", "skipped") for u in ups):
                        failed_up = next(u for u in ups if results[u].status in ("failed", "skipped"))
                        result = results[key]
                        result.status = "skipped"
                        result.error = f"skipped because `{failed_up}` did not succeed"
                        self.state.node_update(ctx.run_id, key, status="skipped", error=result.error)
                        self.progress("skipped", result)
                        pending.remove(key)
                        done.add(key)
                        continue
                    if all(u in done for u in ups) and len(running) < self.max_parallel:
                        pending.remove(key)
                        results[key].status = "running"
                        self.progress("started", results[key])
                        running[pool.submit(self._run_node, ctx, dag.nodes[key], results[key])] = key
                if not running:
                    continue
                finished, _ = wait(running, timeout=_TICK_S, return_when=FIRST_COMPLETED)
                self._report_progress(running.values(), results)
                for future in finished:
                    key = running.pop(future)
                    future.result()  # _run_node records its own errors
                    done.add(key)
                    self.progress(results[key].status, results[key])

    def _report_progress(self, keys: Iterable[str], results: dict[str, NodeResult]) -> None:
        for key in keys:
            with self._cursor_lock:  # never while the node closes its cursor
                cursor = self._cursors.get(key)
                try:
                    value = cursor.query_progress() if cursor is not None else -1.0
                except Exception:  # DuckDB has nothing to report: no progress shown
                    continue
            result = results[key]
            if value >= 0 and value != result.progress:
                result.progress = value
                self.progress("progress", result)

    # -- one node -------------------------------------------------------------------------

    def _run_node(self, ctx: RunContext, node: Node, result: NodeResult) -> NodeResult:
        started = time.perf_counter()
        self.state.node_update(ctx.run_id, node.key, status="running", started_at=_now())
        opened: list[duckdb.DuckDBPyConnection] = []

        def cursor() -> duckdb.DuckDBPyConnection:
            """The node's own cursor, opened on first use."""
            if not opened:
                con = self.con.cursor()
                con.execute("SET enable_progress_bar = true")  # query_progress() for the live view
                con.execute("SET enable_progress_bar_print = false")
                with self._cursor_lock:
                    self._cursors[node.key] = con
                opened.append(con)
            return opened[0]

        try:
            if node.kind == "source":
                if self.source_runner is None:
                    raise PipelineError(f"source `{node.name}` cannot run: no ingestion is configured")
                outcome = self.source_runner(ctx, node, cursor)
                for key, owner in list(ctx.owners.items()):
                    if owner == node.key and key in ctx.changed:
                        self._refresh_view(ctx, key, None, cursor())
                result.rows_written = outcome.rows_written
                result.rows_quarantined = outcome.rows_quarantined
                result.snapshot_id = outcome.snapshot_id
            else:
                model = node.payload
                assert isinstance(model, Model)
                result.materialized = model.materialized.value
                if self._is_up_to_date(ctx, node, model):
                    result.up_to_date = True
                    result.status = "success"
                    return self._record(ctx, node, result, started)
                con = cursor()
                self.lakehouse.warm_up()
                self.ensure_views()
                if model.kind == "python":
                    self._run_python(ctx, model, result, con)
                else:
                    self._run_sql(ctx, model, result, con)
                for key, owner in list(ctx.owners.items()):
                    if owner == node.key and key != node.key:
                        self._refresh_view(ctx, key, None, con)
                self._refresh_view(ctx, node.key, model, con)
                self._run_tests(ctx, model, result, con)
            result.status = "success"
        except TestFailure as exc:
            result.status = "failed"
            result.error = str(exc)
        except CompileProblem as exc:
            result.status = "failed"
            result.error = str(exc.problem)
        except RatatouilleError as exc:
            result.status = "failed"
            result.error = str(exc)
        except Exception as exc:  # user code (Python pipelines) or DuckDB: report, never crash the run
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}"
            log.debug("node %s failed", node.key, exc_info=True)
        finally:
            with self._cursor_lock:
                self._cursors.pop(node.key, None)
                for con in opened:
                    con.close()
        return self._record(ctx, node, result, started)

    def _record(self, ctx: RunContext, node: Node, result: NodeResult, started: float) -> NodeResult:
        result.duration_s = time.perf_counter() - started
        self.state.node_update(
            ctx.run_id,
            node.key,
            status=result.status,
            materialized=result.materialized,
            rows_written=result.rows_written,
            rows_deleted=result.rows_deleted,
            rows_quarantined=result.rows_quarantined,
            duration_s=result.duration_s,
            snapshot_id=result.snapshot_id,
            watermark=result.watermark,
            error=result.error,
            finished_at=_now(),
        )
        if result.error:
            self.state.log(ctx.run_id, "ERROR", result.error, node.key)
        return result

    # -- change detection -----------------------------------------------------------------

    def fingerprint(self, model: Model) -> str:
        """What defines a model's output besides its inputs: its SQL, config, macros and vars."""
        import hashlib
        import json

        parts = [
            model.sql or "",
            model.config.model_dump_json(),
            json.dumps(self.graph.compiler.macros, sort_keys=True),
            json.dumps(self.graph.model_vars(model), sort_keys=True, default=str),
        ]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()

    def _is_up_to_date(self, ctx: RunContext, node: Node, model: Model) -> bool:
        """A SQL table or incremental model whose definition, inputs and own table are all as they
        were when it was last built has nothing new to compute (SQLMesh-style no-op)."""
        if ctx.full_refresh or model.kind != "sql" or model.materialized == Materialized.VIEW:
            return False
        previous = self.previous.get(node.key)
        if previous is None or previous["fingerprint"] != self.fingerprint(model):
            return False
        if previous["output"] is None or previous["output"] != self.locations.get(node.key):
            return False
        inputs = previous["inputs"]
        if any(ctx.owners.get(table, table) in node.upstream for table in ctx.changed):
            return False  # an upstream node wrote something new in this run
        return all(inputs.get(table) == self.locations.get(table) for table in node.reads)

    def _remember_inputs(self, ctx: RunContext, results: dict[str, NodeResult]) -> None:
        """After a published run: what each successful SQL model was built from."""
        end = {r.short: r.metadata_location for r in self.lakehouse.list_tables(self.workspace)}
        states = {}
        for key, result in results.items():
            model = self.graph.models.get(key)
            if result.status != "success" or model is None or model.kind != "sql":
                continue
            if model.materialized == Materialized.VIEW:
                continue
            node = self.graph.dag.nodes[key]
            states[key] = {
                "fingerprint": self.fingerprint(model),
                "inputs": {table: end.get(table) for table in node.reads},
                "output": end.get(key),
            }
        if states:
            self.state.save_node_states(self.workspace, states, ctx.run_id)

    def _compile_context(self, ctx: RunContext, model: Model, con: duckdb.DuckDBPyConnection) -> CompileContext:
        this = self.relation(model.key)
        exists = self._has_rows(con, model.key)
        incremental = model.materialized == Materialized.INCREMENTAL and exists and not ctx.full_refresh

        def watermark(column: str) -> str:
            row = con.execute(
                f"SELECT max({quote(column)})::VARCHAR, typeof(max({quote(column)})) FROM {this}"
            ).fetchone()
            if row is None or row[0] is None:
                return "NULL"
            return f"CAST('{str(row[0]).replace(chr(39), chr(39) * 2)}' AS {row[1]})"

        return CompileContext(
            relation=self.relation,
            this=this,
            incremental=incremental,
            watermark=watermark,
            vars=self.graph.model_vars(model),
        )

    def _run_sql(self, ctx: RunContext, model: Model, result: NodeResult, con: duckdb.DuckDBPyConnection) -> None:
        import duckdb

        cctx = self._compile_context(ctx, model, con)
        compiled = self.graph.compiler.compile(model, cctx)
        if model.materialized == Materialized.VIEW:
            with self._view_lock:
                try:
                    con.execute(f"CREATE OR REPLACE VIEW {self.relation(model.key)} AS {compiled.sql}")
                except duckdb.Error as exc:
                    raise PipelineError(f"{model.path}: {exc}") from None
            return
        config = model.config
        keys = config.unique_key
        mode: Mode
        if model.materialized == Materialized.TABLE or ctx.full_refresh or not cctx.incremental:
            mode = "overwrite"
        elif config.incremental.strategy == Strategy.APPEND:
            mode = "append"
        elif config.incremental.strategy == Strategy.MERGE:
            mode = "merge"
        else:
            mode = "delete+insert"
        if cctx.incremental and config.incremental.watermark:
            result.watermark = cctx.watermark(config.incremental.watermark)
        null_keys = None
        if keys and model.materialized == Materialized.INCREMENTAL:
            null_keys = self._quarantine_null_keys(ctx, model, con, keys, result)
        try:
            written = ctx.write(
                con,
                model.key,
                compiled.sql,
                mode,
                unique_key=keys if mode in ("merge", "delete+insert") else None,
                partition_by=config.partition_by if (config.partition_by or mode == "overwrite") else None,
                schema_drift=config.schema_drift,
                null_keys=null_keys,
            )
        except duckdb.Error as exc:
            raise PipelineError(f"{model.path}: {_first_line(exc)}") from None
        result.rows_written = written.rows_written
        result.rows_deleted = written.rows_deleted
        result.snapshot_id = written.snapshot_id

    def _quarantine_null_keys(
        self,
        ctx: RunContext,
        model: Model,
        con: duckdb.DuckDBPyConnection,
        keys: list[str],
        result: NodeResult,
    ) -> NullKeys:
        """Rows whose unique key is NULL go to ``quarantine.<layer>_<name>``, not into the table
        (checked on the files the write produced: the model's SQL runs once)."""
        reason = f"NULL in unique key ({', '.join(keys)})"

        def divert(select: str, count: int) -> None:
            ctx.write(
                con,
                f"quarantine.{model.layer}_{model.name}",
                f"SELECT *, {literal(reason)} AS _reason, {literal(ctx.run_id)} AS _run_id, "
                f"now() AS _quarantined_at FROM ({select})",
                "append",
                owner=model.key,
            )
            result.rows_quarantined = count
            self.state.log(ctx.run_id, "WARN", f"{count} row(s) quarantined: {reason}", model.key)

        return NullKeys(tuple(keys), divert)

    def _run_python(self, ctx: RunContext, model: Model, result: NodeResult, con: duckdb.DuckDBPyConnection) -> None:
        from ratatouille.runs.context import python_pipeline_scope

        assert model.function is not None
        try:
            with python_pipeline_scope(ctx, model, con, self) as scope:
                model.function()
        except Exception as exc:  # the user's code, or a rat helper it called wrongly
            raise self._user_error(ctx, model, exc) from exc
        result.rows_written = scope.rows_written
        result.snapshot_id = scope.snapshot_id

    def _user_error(self, ctx: RunContext, model: Model, exc: Exception) -> PipelineError:
        """The error of a Python pipeline as the user's: their file, line and function first,
        and their frames of the traceback in the run's log (``rat logs RUN``)."""
        import traceback

        from ratatouille.models.loader import user_frames

        log.debug("pipeline %s raised", model.key, exc_info=exc)
        message = str(exc) if isinstance(exc, RatatouilleError) else f"{type(exc).__name__}: {exc}"
        frames = user_frames(exc, model.path)
        if not frames:
            return PipelineError(f"{model.path}: {message}")
        where = frames[-1]
        shown = "".join(traceback.format_list(frames)).rstrip()
        self.state.log(ctx.run_id, "ERROR", f"Traceback (your code, most recent call last):\n{shown}", model.key)
        return PipelineError(f"{model.path}:{where.lineno} in {where.name}: {message}")

    # -- tests ----------------------------------------------------------------------------

    def _run_tests(self, ctx: RunContext, model: Model, result: NodeResult, con: duckdb.DuckDBPyConnection) -> None:
        import duckdb

        relation = self.relation(model.key)
        if model.materialized != Materialized.VIEW and model.key not in ctx.touched:
            return  # a Python pipeline that wrote nothing: nothing to test

        def render(sql: str) -> str:
            fake = Model(model.layer, model.name, model.path, model.config, sql=sql)
            return self.graph.compiler.compile(fake, CompileContext(relation=self.relation, this=relation)).sql

        blocking: list[TestResult] = []
        for outcome in run_tests(con, model.key, data_tests(model, relation, self.relation, render)):
            result.tests.append(outcome)
            self.state.add_test_result(
                ctx.run_id,
                model.key,
                test=outcome.name,
                severity=outcome.severity,
                status=outcome.status,
                failures=outcome.failures,
                sample=outcome.sample,
                message=outcome.message,
            )
            if outcome.status == "fail":
                blocking.append(outcome)
        _ = duckdb
        if blocking:
            lines = []
            for failure in blocking:
                lines.append(f"{failure.name}: {failure.message}")
                for row in failure.sample:
                    lines.append(f"    {row}")
            raise TestFailure(
                f"{len(blocking)} test(s) failed on `{model.key}`, so it was not published:\n  " + "\n  ".join(lines)
            )

    # -- views of the run -----------------------------------------------------------------

    def relation(self, key: str) -> str:
        """The SQL name under which this run reads ``key`` (``layer.name`` or ``ws.layer.name``)."""
        parts = key.split(".")
        if len(parts) == 3:
            return ".".join(quote(p) for p in parts)
        return f"{quote(self.db)}.{quote(parts[0])}.{quote(parts[1])}"

    def ensure_views(self) -> None:
        """Create the run's views of the lakehouse if no node has yet."""
        with self._view_lock:
            if not self._views_ready:
                self._snapshot_views()
                self._views_ready = True

    def warm_views(self) -> None:
        """Start building the views on a thread (once): a source that writes does not read them,
        and its read should not wait for them, but the models after it will."""
        with self._builder_lock:
            if self._views_ready or self._view_builder is not None:
                return

            def build() -> None:
                try:
                    self.ensure_views()
                except Exception:  # the next node that needs the views reports the error
                    log.debug("building the run's views failed", exc_info=True)

            self._view_builder = threading.Thread(target=build, name="rat-views", daemon=True)
            self._view_builder.start()

    def _iceberg(self) -> None:
        """Load DuckDB's iceberg extension on the run's session, once (0.2-0.3 s of CPU: a build
        from scratch, whose views all read files the run wrote, never loads it)."""
        with self._iceberg_lock:
            if not self._iceberg_loaded:
                from ratatouille.engine import load_extensions

                load_extensions(self.con, "iceberg")
                self._iceberg_loaded = True

    def _snapshot_views(self) -> None:
        """Views of every table of the workspace at ``main`` as of the run's start, in a database of
        this run (created when the first node needs them: an up-to-date run never pays for it)."""
        self.con.execute(f"ATTACH ':memory:' AS {quote(self.db)}")
        layers = {k.split(".")[0] for k in self.graph.dag.nodes} | {"bronze", "silver", "gold", "quarantine"}
        for layer in sorted(layers):
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.db)}.{quote(layer)}")
        for ref in self.lakehouse.list_tables(self.workspace):
            if ref.metadata_location:
                self._iceberg()
                self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.db)}.{quote(ref.layer)}")
                self.con.execute(
                    f"CREATE OR REPLACE VIEW {self.relation(ref.short)} AS "
                    f"SELECT * FROM iceberg_scan('{_sql(ref.metadata_location)}')"
                )
        # Tables of other workspaces, for ws.layer.name refs.
        for ref in self.lakehouse.list_tables():
            if ref.workspace == self.workspace or not ref.metadata_location:
                continue
            self._iceberg()
            self.con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {quote(ref.workspace)}")
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(ref.workspace)}.{quote(ref.layer)}")
            self.con.execute(
                f"CREATE OR REPLACE VIEW {'.'.join(quote(p) for p in ref.identifier)} AS "
                f"SELECT * FROM iceberg_scan('{_sql(ref.metadata_location)}')"
            )

    def _has_rows(self, con: duckdb.DuckDBPyConnection, key: str) -> bool:
        import duckdb

        try:
            row = con.execute(f"SELECT 1 FROM {self.relation(key)} LIMIT 1").fetchone()
        except duckdb.CatalogException:
            return False
        return row is not None

    def _refresh_view(self, ctx: RunContext, key: str, model: Model | None, con: duckdb.DuckDBPyConnection) -> None:
        """After a node wrote its audit branch, downstream nodes and tests read that version."""
        if (model is not None and model.materialized == Materialized.VIEW) or key not in ctx.changed:
            return
        self.ensure_views()
        with ctx.lock:
            files = ctx.files.get(key)
        if files and not any(c in path for path in files for c in _GLOB):
            # The files are the whole table, written with its schema: read them directly.
            listed = ", ".join(f"'{_sql(path.removeprefix('file://'))}'" for path in files)
            source = f"read_parquet([{listed}], hive_partitioning = false)"
        else:
            target, branch = ctx.target(key)
            table = self.lakehouse.catalog.load_table(target.identifier)
            head = table.snapshot_by_name(branch) if branch else table.current_snapshot()
            if head is None:
                return
            self._iceberg()
            source = f"iceberg_scan('{_sql(table.metadata_location)}', snapshot_from_id={head.snapshot_id})"
        with self._view_lock:
            con.execute(f"CREATE OR REPLACE VIEW {self.relation(key)} AS SELECT * FROM {source}")

    def _drop_views(self) -> None:
        if not self._views_ready:
            return
        try:
            self.con.execute("USE memory")
            self.con.execute(f"DETACH DATABASE IF EXISTS {quote(self.db)}")
        except Exception:  # the connection may be gone after a crash; nothing to keep
            log.debug("could not detach %s", self.db)

    # -- publish --------------------------------------------------------------------------

    def _publish(self, ctx: RunContext, results: dict[str, NodeResult]) -> tuple[dict[str, int], str | None]:
        """Publish every touched table whose node (and whose upstream) succeeded, at once."""
        items = []
        # In dependency order (``results`` is): a catalog that publishes table by table (REST)
        # never shows a table newer than the tables it was built from.
        position = {key: index for index, key in enumerate(results)}

        def rank(key: str) -> tuple[int, str]:
            return position.get(ctx.owners.get(key, key), len(position)), key

        for key in sorted(ctx.touched, key=rank):
            ref = ctx.touched[key]
            owner = ctx.owners.get(key, key)
            status = results[owner].status if owner in results else "success"
            if key.startswith("quarantine."):
                status = "success"  # quarantined rows are kept even when their model fails its tests
            if status != "success":
                continue
            stage = ctx.stages.get(key)
            items.append(Publication(ref, None if stage else ctx.branch, ctx.bases.get(key), stage))
        error: str | None = None
        published: dict[str, int] = {}
        try:
            fault("run:before_publish")
            published = publish(self.lakehouse, items)
        except CommitConflictError as exc:
            error = str(exc)
            for result in results.values():
                if result.status == "success" and result.key in ctx.touched:
                    result.status = "failed"
                    result.error = error
        self._cleanup_branches(ctx)
        if error is None:
            for owner, hook in ctx.after_publish:
                # Bookkeeping (file registry, cursors) only for nodes whose output was published:
                # a node that failed must read the same input again next time.
                if owner not in results or results[owner].status == "success":
                    hook()
            for key, snapshot in published.items():
                if key in results:
                    results[key].snapshot_id = snapshot
                    self.state.node_update(ctx.run_id, key, snapshot_id=snapshot)
        return published, error

    def _cleanup_branches(self, ctx: RunContext) -> None:
        """Remove this run's audit branches that were not published; drop tables this run created
        that never got a published snapshot."""
        if not ctx.touched:
            return
        catalog = self.lakehouse.catalog
        for key, ref in ctx.touched.items():
            try:
                if key in ctx.stages:
                    stage = (ref.workspace, ref.layer, ctx.stages[key])
                    if catalog.table_exists(stage):
                        catalog.drop_table(stage)  # not published: the stage table goes away
                    continue
                table = catalog.load_table(ref.identifier)
                if table.snapshot_by_name(ctx.branch) is not None:
                    table.manage_snapshots().remove_branch(ctx.branch).commit()
            except Exception:  # cleanup must not hide the run's own outcome
                log.debug("could not clean up %s", key, exc_info=True)


_GLOB = "*?[{"  # a path with these is a pattern to read_parquet: such files are read through Iceberg

_GIL_TURN_S = 0.0005
_turns_lock = threading.Lock()
_turns: list[float] = []  # the interval to restore, while runs go on


@contextmanager
def _short_gil_turns() -> Iterator[None]:
    """Hand the GIL between threads every 0.5 ms instead of Python's 5 ms while runs go on.

    A run's threads mostly wait on DuckDB and files, and take the GIL back after each call.
    While another thread runs Python (PyIceberg's import, a commit), each of those takes waits
    up to the switch interval: a source's few hundred small calls (file checks, binds) added
    tenths of a second to the 1M-row POS build (``bench/bench_pipelines.py``).
    """
    with _turns_lock:
        if not _turns:
            _turns.append(sys.getswitchinterval())
            sys.setswitchinterval(_GIL_TURN_S)
        else:
            _turns.append(_turns[0])
    try:
        yield
    finally:
        with _turns_lock:
            restore = _turns.pop()
            if not _turns:
                sys.setswitchinterval(restore)


def audit_branch(run_id: str) -> str:
    """The audit branch a run writes existing tables to."""
    return "audit_" + re.sub(r"[^a-z0-9]", "_", run_id.lower())


def stage_token(run_id: str) -> str:
    """The part of a run's id in the hidden names of the tables it creates."""
    return audit_branch(run_id).removeprefix("audit_")[-8:]


def settle_abandoned(state: StateStore, lakehouse: Lakehouse) -> None:
    """Close the runs whose process died: ``failed``, unless the run had already published (its
    snapshots are in its tables' ``main`` history), then ``success`` with a note. Publishing is
    all or nothing, so one table tells. Then what the dead run left unpublished (its audit
    branches, its hidden stage tables) is removed. Runs of every workspace are settled: the
    first command after a crash may be in another workspace."""
    for run_id in state.mark_abandoned():
        record = state.run(run_id)
        if record is None:
            continue
        run_workspace = str(record.get("workspace"))
        try:
            published = _published(lakehouse, run_workspace, run_id, record["nodes"])
        except Exception:  # the run stays failed; never stop the caller over this
            log.debug("could not tell whether run %s published", run_id, exc_info=True)
            published = False
        if published:
            state.finish_run(run_id, "success", "the process stopped after publishing; its tables were published")
        try:
            removed = remove_leftovers(lakehouse, run_workspace, run_id)
        except Exception:  # leftovers stay invisible to readers and later runs
            log.debug("could not remove what run %s left behind", run_id, exc_info=True)
            continue
        if removed:
            state.log(run_id, "INFO", "removed what this run left unpublished: " + ", ".join(removed))


def remove_leftovers(lakehouse: Lakehouse, workspace: str, run_id: str) -> list[str]:
    """Remove a dead run's audit branches and purge its stage tables (never visible to readers,
    never published). Returns what was removed."""
    from ratatouille.storage.catalog import stage_name

    branch, stage_prefix = audit_branch(run_id), stage_name("", stage_token(run_id))
    catalog = lakehouse.catalog
    removed = []
    for ref in lakehouse.list_tables(workspace, stages=True):
        if ref.name.startswith(stage_prefix):
            catalog.purge_table(ref.identifier)
            removed.append(f"stage table of {ref.layer}.{ref.name.removeprefix(stage_prefix)}")
            continue
        table = catalog.load_table(ref.identifier)
        if table.snapshot_by_name(branch) is not None:
            table.manage_snapshots().remove_branch(branch).commit()
            removed.append(f"branch {branch} of {ref.short}")
    return removed


def _published(lakehouse: Lakehouse, workspace: str, run_id: str, nodes: list[dict[str, Any]]) -> bool:
    from ratatouille.storage.publish import published_by

    known = {r.short for r in lakehouse.list_tables(workspace)}
    for node in nodes:
        if node.get("snapshot_id") is None or node["node"] not in known:
            continue
        verdict = published_by(lakehouse, TableRef(workspace, *node["node"].split(".", 1)), run_id)
        if verdict is not None:
            return verdict
    return False


def _now() -> Any:
    from ratatouille.state.store import now

    return now()


def _sql(value: str) -> str:
    return value.replace("'", "''")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip()


__all__ = ["NodeResult", "RunContext", "RunResult", "Runner", "TestResult"]
