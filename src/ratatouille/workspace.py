"""``Workspace``: the one object that does the work. CLI, API, SDK and orchestration are thin.

A workspace owns a DuckDB session (created on first use) in which its tables are ``layer.name``
and other workspaces' tables are ``workspace.layer.name``; it queries, describes and writes
tables through the lakehouse.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.config import WorkspaceConfig
from ratatouille.errors import QueryError, RatatouilleError, TableNotFoundError
from ratatouille.project import Project
from ratatouille.storage.catalog import TableRef
from ratatouille.storage.reader import ALL_TABLES, AsOf, TableViews
from ratatouille.storage.results import Mode, SchemaDrift, WriteResult

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from ratatouille.runs.graph import Graph
    from ratatouille.runs.runner import ProgressCallback, RunResult
    from ratatouille.state.store import StateStore


class Workspace:
    """One workspace of a project."""

    def __init__(self, project: Project, name: str | None = None) -> None:
        self.project = project
        self.name = name or project.config.default_workspace
        self.config: WorkspaceConfig = project.workspace_config(self.name)
        self._lock = threading.RLock()

    @classmethod
    def open(cls, project: Path | str | None = None, workspace: str | None = None) -> Workspace:
        """Find the project like the CLI does and open one of its workspaces.

        Raises:
            ProjectNotFoundError: no project was found.
            ConfigError: the configuration is invalid or the workspace does not exist.
        """
        return cls(Project.load(project), workspace)

    @property
    def directory(self) -> Path:
        """``workspaces/<name>``."""
        return self.project.workspace_dir(self.name)

    # -- engine ---------------------------------------------------------------------------

    @cached_property
    def con(self) -> duckdb.DuckDBPyConnection:
        """This workspace's DuckDB session."""
        from ratatouille.engine import connect, literal

        lakehouse = self.project.lakehouse
        s3 = self.project.config.storage.s3
        needs_s3 = lakehouse.is_s3 or self.project.landing.startswith("s3://") or s3.endpoint is not None
        con = connect(self.project.profile, self.project.temp_directory, s3 if needs_s3 else None)
        # Relative paths in SQL (read_csv('data/landing/...')) mean the project's, wherever
        # the process runs: a notebook in workspaces/default/notebooks sees the same files.
        con.execute(f"SET file_search_path = {literal(str(self.project.root))}")
        return con

    @cached_property
    def _views(self) -> TableViews:
        return TableViews(self.con, self.name)

    def close(self) -> None:
        """Close the DuckDB session, catalog and state connections (new ones open on next use)."""
        self.project.lakehouse.close()
        if "state" in self.__dict__:
            self.state.close()
        if "con" in self.__dict__:
            self.con.close()
            del self.__dict__["con"]
            self.__dict__.pop("_views", None)

    @cached_property
    def state(self) -> StateStore:
        """Run records, the file registry and source state."""
        from ratatouille.state.store import StateStore

        return StateStore(self.project.config.state.uri, self.project.root)

    # -- catalog --------------------------------------------------------------------------

    def tables(self, all_workspaces: bool = False) -> list[TableRef]:
        """Tables of this workspace (or of every workspace)."""
        return self.project.lakehouse.list_tables(None if all_workspaces else self.name)

    def resolve(self, name: str) -> TableRef:
        """Turn ``layer.name`` or ``workspace.layer.name`` into a table reference (it may not exist yet).

        Raises:
            RatatouilleError: the name is not of either form.
        """
        parts = [p.strip().strip('"') for p in name.split(".")]
        if len(parts) == 2 and all(parts):
            return TableRef(self.name, parts[0].lower(), parts[1].lower())
        if len(parts) == 3 and all(parts):
            return TableRef(parts[0], parts[1].lower(), parts[2].lower())
        raise RatatouilleError(f"cannot read table name `{name}`; write it as layer.table, e.g. silver.sales")

    def existing(self, name: str) -> TableRef:
        """Resolve a name to a table that exists.

        Raises:
            TableNotFoundError: it does not (the message lists those that do).
        """
        ref = self.resolve(name)
        everything = self.tables(all_workspaces=True)
        for table in everything:
            if table.identifier == ref.identifier:
                return table
        raise TableNotFoundError(name, [self._display(t) for t in everything])

    def _display(self, ref: TableRef) -> str:
        return ref.short if ref.workspace == self.name else ref.qualified

    def load_table(self, name: str) -> Any:
        """The PyIceberg table object (for advanced use).

        Raises:
            TableNotFoundError: it does not exist.
        """
        ref = self.existing(name)
        return self.project.lakehouse.load(*ref.identifier)

    # -- query ----------------------------------------------------------------------------

    def sql(self, sql: str, as_of: AsOf | None = None) -> duckdb.DuckDBPyRelation:
        """Prepare a query over the lakehouse and return the DuckDB relation (lazy, streamable).

        Raises:
            QueryError: the SQL does not parse, bind or run (with DuckDB's position marker).
            TableNotFoundError: it names a table that does not exist.
        """
        import duckdb

        with self._lock:
            views = self._views
            everything: list[TableRef] = []
            names = views.referenced_names(sql)
            if names:
                everything = self.tables(all_workspaces=True)
                for ref in everything:
                    if names is ALL_TABLES or ref.identifier in names:
                        views.register(ref, as_of)
                known = {t.identifier for t in everything}
                missing = [n for n in names if n[0] == self.name and n not in known and n != ("*", "*", "*")]
                if missing:
                    self._register_view_models(missing)
            try:
                return self.con.sql(sql)
            except duckdb.CatalogException as exc:
                raise self._missing_table(exc, everything or self.tables(all_workspaces=True)) from None
            except duckdb.Error as exc:
                raise QueryError(_clean(exc)) from None

    def _register_view_models(self, names: list[tuple[str, str, str]]) -> None:
        """Models materialized as views are not tables: compile them into DuckDB views on demand."""
        from ratatouille.errors import ConfigError
        from ratatouille.models.config import Materialized

        wanted = {f"{layer}.{name}" for _ws, layer, name in names}
        if not (self.directory / "pipelines").is_dir():
            return
        try:
            graph = self.graph()
        except ConfigError:
            return  # the query's own error ("table does not exist") is clearer than a pipeline error
        for key in graph.dag.order(graph.models):
            model = graph.models[key]
            if model.materialized != Materialized.VIEW or not (key in wanted or wanted & graph.dag.descendants(key)):
                continue
            sql = self.compile(key)
            self.sql(sql)  # registers the tables the view reads
            layer, name = key.split(".")
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(self.name)}.{_q(layer)}")
            self.con.execute(f"CREATE OR REPLACE VIEW {_q(self.name)}.{_q(layer)}.{_q(name)} AS {sql}")

    def query(self, sql: str, as_of: AsOf | None = None) -> pa.Table:
        """Run a query and return the result as an Arrow table.

        Raises:
            QueryError: the SQL fails.
            TableNotFoundError: it names a table that does not exist.
        """
        import duckdb

        relation = self.sql(sql, as_of)
        if relation is None:
            import pyarrow as pa

            return pa.table({})
        try:
            with self._lock:
                return relation.to_arrow_table()
        except duckdb.Error as exc:
            raise QueryError(_clean(exc)) from None

    def _missing_table(self, exc: Exception, everything: list[TableRef]) -> RatatouilleError:
        import re

        text = _clean(exc)
        match = re.search(r"Table with name (\S+) does not exist", text)
        if match:
            return TableNotFoundError(match.group(1), [self._display(t) for t in everything])
        return QueryError(text)

    def table(
        self, name: str, *, snapshot_id: int | None = None, as_of: datetime | None = None, ref: str | None = None
    ) -> pa.Table:
        """Read a whole table as Arrow, at ``main`` or at a snapshot, a time or a branch/tag.

        Raises:
            TableNotFoundError: the table does not exist.
            QueryError: the version asked for does not exist.
        """
        table = self.existing(name)
        if ref is not None:
            iceberg = self.project.lakehouse.load(*table.identifier)
            snapshot = iceberg.snapshot_by_name(ref)
            if snapshot is None:
                raise QueryError(f"`{name}` has no branch or tag `{ref}`; see `rat history {name}`")
            snapshot_id = snapshot.snapshot_id
        version = AsOf(snapshot_id=snapshot_id, timestamp=_utc(as_of)) if snapshot_id or as_of else None
        view = f"__rat_{uuid.uuid4().hex}" if version else table.name
        with self._lock:
            self._views.register(table, version, view_name=view)
            target = f"{_q(table.workspace)}.{_q(table.layer)}.{_q(view)}"
            try:
                return self.con.sql(f"SELECT * FROM {target}").to_arrow_table()
            except Exception as exc:
                raise QueryError(f"cannot read `{name}` at that version: {_clean(exc)}") from None
            finally:
                if version:
                    self.con.execute(f"DROP VIEW IF EXISTS {target}")

    # -- describe -------------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any]:
        """Schema, partitioning, location, properties and current statistics of a table.

        Raises:
            TableNotFoundError: the table does not exist.
        """
        table = self.load_table(name)
        snapshot = table.current_snapshot()
        summary = dict(snapshot.summary.additional_properties) if snapshot and snapshot.summary else {}
        return {
            "table": self._display(self.existing(name)),
            "location": table.location(),
            "columns": [
                {"id": f.field_id, "name": f.name, "type": str(f.field_type), "required": f.required, "doc": f.doc}
                for f in table.schema().fields
            ],
            "partitioning": [str(p) for p in _partitioning(table)],
            "snapshot_id": snapshot.snapshot_id if snapshot else None,
            "updated_at": _ms(snapshot.timestamp_ms) if snapshot else None,
            "rows": int(summary.get("total-records", 0)),
            "files": int(summary.get("total-data-files", 0)),
            "bytes": int(summary.get("total-files-size", 0)),
            "branches": sorted(r for r in table.metadata.refs if r != "main"),
            "properties": dict(table.properties),
        }

    def history(self, name: str) -> list[dict[str, Any]]:
        """The table's snapshots, newest first, with what each changed.

        Raises:
            TableNotFoundError: the table does not exist.
        """
        table = self.load_table(name)
        current = table.current_snapshot()
        on_main = set()
        walker = current
        while walker is not None:
            on_main.add(walker.snapshot_id)
            walker = table.snapshot_by_id(walker.parent_snapshot_id) if walker.parent_snapshot_id else None
        rows = []
        for snap in sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True):
            summary = dict(snap.summary.additional_properties) if snap.summary else {}
            rows.append(
                {
                    "snapshot_id": snap.snapshot_id,
                    "parent_id": snap.parent_snapshot_id,
                    "committed_at": _ms(snap.timestamp_ms),
                    "operation": summary.get("rat.operation") or (snap.summary.operation.value if snap.summary else ""),
                    "added_rows": int(summary.get("rat.rows-written") or summary.get("added-records") or 0),
                    "deleted_rows": int(summary.get("rat.rows-replaced") or summary.get("deleted-records") or 0),
                    "total_rows": int(summary.get("total-records", 0)),
                    "current": current is not None and snap.snapshot_id == current.snapshot_id,
                    "on_main": snap.snapshot_id in on_main,
                    "run_id": summary.get("rat.run_id"),
                }
            )
        return rows

    # -- pipelines ------------------------------------------------------------------------

    def vars(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Values for ``var()``: project, then workspace, then the caller's overrides."""
        return {**self.project.config.vars, **self.config.vars, **(overrides or {})}

    def graph(self, variables: dict[str, Any] | None = None) -> Graph:
        """Load and validate this workspace's sources and models.

        Raises:
            ConfigError: listing every problem found (file:line each).
        """
        from ratatouille.runs.graph import load_graph

        cache = self.project.state_dir / "cache" / f"graph-{self.name}.json"
        return load_graph(self.directory, self.name, tuple(self.config.layers), self.vars(), variables, cache)

    def run(
        self,
        select: list[str] | None = None,
        *,
        full_refresh: bool = False,
        trigger: str = "cli",
        variables: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        sources_only: bool = False,
        on_start: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Run the selected sources and models with write-audit-publish.

        Selecting a model also ingests the sources it depends on.

        Raises:
            ConfigError: the pipelines are invalid or the selection matches nothing.
        """
        from ratatouille.runs.ingest import run_source
        from ratatouille.runs.runner import Runner

        graph = self.graph(variables)
        dag = graph.dag
        if sources_only:
            sources = {k for k, n in dag.nodes.items() if n.kind == "source"}
            chosen = {k for k in dag.select(select) if k in sources} if select else sources
            if select and not chosen:
                from ratatouille.errors import ConfigError

                raise ConfigError(f"no source matches {' '.join(select)}; sources: {', '.join(sorted(sources))}")
        else:
            chosen = dag.select(select)
            for key in list(chosen):
                chosen |= {a for a in dag.ancestors(key) if dag.nodes[a].kind == "source"}
        with self._lock:
            runner = Runner(
                graph=graph,
                lakehouse=self.project.lakehouse,
                state=self.state,
                connect=lambda: self.con,
                workspace=self.name,
                landing=self.project.landing,
                max_parallel=self.config.resources.max_parallel_pipelines
                or self.project.profile.max_parallel_pipelines,
                full_refresh=full_refresh,
                trigger=trigger,
                source_runner=lambda ctx, node, con: run_source(runner, ctx, node, con),
                progress=progress,
                on_start=on_start,
            )
            result = runner.run(chosen, " ".join(select or []))
            self.__dict__.pop("_views", None)
        # Outside the lock: a slow webhook must not hold up other users of the workspace.
        self.notify(result, trigger=trigger)
        return result

    def compile(self, name: str, *, incremental: bool = False, variables: dict[str, Any] | None = None) -> str:
        """The SQL a model runs, with refs resolved to the tables ``rat query`` reads.

        Raises:
            ConfigError: the model does not exist or does not compile.
        """
        from ratatouille.errors import ConfigError
        from ratatouille.models.compiler import CompileContext, CompileProblem

        graph = self.graph(variables)
        model = _find_model(graph, name)
        if model.sql is None:
            raise ConfigError(f"`{model.key}` is a Python pipeline ({model.path}); there is no SQL to compile")

        def relation(key: str) -> str:
            parts = key.split(".")
            full = parts if len(parts) == 3 else [self.name, *parts]
            return ".".join(_q(p) for p in full)

        ctx = CompileContext(
            relation=relation,
            this=relation(model.key),
            incremental=incremental,
            watermark=lambda column: f"(SELECT max({_q(column)}) FROM {relation(model.key)})",
            vars=graph.model_vars(model),
        )
        try:
            return graph.compiler.compile(model, ctx).sql
        except CompileProblem as exc:
            raise ConfigError([exc.problem]) from None

    def _published_relation(self, key: str) -> str:
        parts = key.split(".")
        full = parts if len(parts) == 3 else [self.name, *parts]
        return ".".join(_q(p) for p in full)

    def test(
        self, select: list[str] | None = None, *, unit: bool = False, variables: dict[str, Any] | None = None
    ) -> list[Any]:
        """Run data tests against the published tables, or (``unit``) the models' unit tests.

        Raises:
            ConfigError: the pipelines are invalid or the selection matches nothing.
        """
        from ratatouille.runs.checks import data_checks, unit_tests

        graph = self.graph(variables)
        keys = [k for k in graph.dag.order(graph.dag.select(select)) if k in graph.models]
        if unit:
            return list(unit_tests(graph, keys, self.con))
        with self._lock:
            # Tests may read other tables too (relationships, ref() in custom tests): make every
            # table visible, not only the selected ones.
            for ref in self.tables(all_workspaces=True):
                self._views.register(ref)
            return list(data_checks(graph, keys, self.con, self._published_relation))

    def freshness(self) -> list[Any]:
        """Freshness SLAs of the models, from their last commit times."""
        from ratatouille.runs.checks import freshness

        graph = self.graph()
        tables = {t.short: t for t in self.tables()}

        def published_at(key: str) -> datetime | None:
            if key not in tables:
                return None
            snapshot = self.project.lakehouse.load(*tables[key].identifier).current_snapshot()
            return datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=UTC) if snapshot else None

        return freshness(graph, published_at)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs of this workspace, newest first."""
        from ratatouille.runs.runner import settle_abandoned

        settle_abandoned(self.state, self.project.lakehouse)
        return self.state.runs(self.name, limit)

    def run_record(self, run_id: str) -> dict[str, Any]:
        """One run with its nodes, tests and logs (a unique prefix of the id works).

        Raises:
            RatatouilleError: no such run.
        """
        record = self.state.run(run_id)
        if record is None:
            raise RatatouilleError(f"no run `{run_id}`; `rat runs` lists them")
        return record

    # -- write ----------------------------------------------------------------------------

    def write(
        self,
        name: str,
        data: Any,
        *,
        mode: Mode = "append",
        where: str | None = None,
        unique_key: str | Sequence[str] | None = None,
        partition_by: Sequence[str] | None = None,
        schema_drift: SchemaDrift = "evolve",
        branch: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> WriteResult:
        """Write data into a table as one atomic commit (see ``storage.writer``).

        ``data`` may be a SQL ``SELECT`` over this workspace, an Arrow table / record batch /
        record batch reader (streamed), a pandas or polars data frame, or a DuckDB relation of
        this workspace's connection.

        Raises:
            SchemaError: the data does not fit the table; nothing was written.
            DataError: the data cannot be written as asked; nothing was written.
            CommitConflictError: other writers kept committing first.
        """
        from ratatouille.storage.writer import TableWriter

        ref = self.resolve(name)
        keys = [unique_key] if isinstance(unique_key, str) else list(unique_key or [])
        with self._lock:
            source, cleanup = self._source(data)
            try:
                writer = TableWriter(self.project.lakehouse, self.con)
                return writer.write(
                    ref,
                    source,
                    mode=mode,
                    where=where,
                    unique_key=keys,
                    partition_by=partition_by,
                    schema_drift=schema_drift,
                    branch=branch,
                    properties=properties,
                )
            finally:
                cleanup()

    def append(self, name: str, data: Any, **options: Any) -> WriteResult:
        """Append rows; see ``write``."""
        return self.write(name, data, mode="append", **options)

    def overwrite(self, name: str, data: Any, *, where: str | None = None, **options: Any) -> WriteResult:
        """Replace all rows, or the rows matching ``where``; see ``write``."""
        return self.write(name, data, mode="overwrite", where=where, **options)

    def merge(self, name: str, data: Any, *, unique_key: str | Sequence[str], **options: Any) -> WriteResult:
        """Insert rows, replacing those whose ``unique_key`` already exists; see ``write``."""
        return self.write(name, data, mode="merge", unique_key=unique_key, **options)

    def _source(self, data: Any) -> tuple[str, Any]:
        """Turn supported data into SQL over this connection, and a function that cleans up."""
        from ratatouille.engine import register_data

        if isinstance(data, str):
            self.sql(data.strip().rstrip(";"))  # registers the tables it reads and checks it binds
        return register_data(self.con, data)

    # -- sandboxed queries and accounts (for the API) -------------------------------------

    if TYPE_CHECKING:  # here rather than at the top: this part of the class was added as one block
        from ratatouille.sandbox import SandboxQuery
        from ratatouille.state.auth import AuthStore

    def sandboxed_sql(
        self,
        sql: str,
        readable: Sequence[str] | None = None,
        *,
        limit: int | None = None,
        timeout: float | None = None,
        batch_rows: int | None = None,
    ) -> SandboxQuery:
        """Run one read-only query in the query sandbox and stream its result.

        The sandbox sees only the lakehouse tables of this workspace and of ``readable`` (other
        workspaces the caller may read): no files, no network, no writes, no settings (see
        ``ratatouille.sandbox``). ``layer.table`` means this workspace's table. Close the result.

        Args:
            sql: one SELECT (or WITH/UNION/VALUES/DESCRIBE/SHOW/SUMMARIZE, or EXPLAIN of one).
            readable: other workspaces whose tables the query may read.
            limit: at most this many rows (``truncated`` tells whether more were cut).
            timeout: stop the query after this many seconds, including streaming its result.
            batch_rows: rows per Arrow batch.

        Raises:
            QueryRefusedError: the statement is not allowed in the sandbox.
            QueryError: it does not parse, bind or run.
            TableNotFoundError: it names a table that does not exist or may not be read.
        """
        from ratatouille.sandbox import BATCH_ROWS, pool_for

        return pool_for(self.project).query(
            sql,
            self.name,
            [self.name, *(readable or [])],
            limit=limit,
            timeout=timeout,
            batch_rows=batch_rows or BATCH_ROWS,
        )

    def close_sandboxes(self) -> None:
        """Close the project's query sandboxes (new ones open on next use)."""
        from ratatouille.sandbox import close_pool

        close_pool(self.project)

    @cached_property
    def auth(self) -> AuthStore:
        """Users and API tokens, kept in the state store."""
        from ratatouille.state.auth import AuthStore

        return AuthStore(self.state)

    # -- orchestration and alerts -----------------------------------------------------------

    if TYPE_CHECKING:  # here rather than at the top: this part of the class was added as one block
        from contextlib import AbstractContextManager

        from ratatouille.alerts import AlertsConfig, Delivery
        from ratatouille.storage.files import FileInfo

    def notify(
        self, result: RunResult, *, trigger: str | None = None, config: AlertsConfig | None = None
    ) -> list[Delivery]:
        """Send the alert a finished run deserves (see ``ratatouille.alerts``) to the configured
        webhooks (``config``, else the project's ``alerts:``), and return the deliveries.

        Sends nothing inside ``holding_alerts()`` or for a run already notified by this object.
        Never raises: an unreachable webhook or a broken ``alerts:`` section is logged, not fatal.
        """
        import logging

        from ratatouille.alerts import alerts_for, load_alerts, send

        notified: set[str] = self.__dict__.setdefault("_notified_runs", set())
        if self.__dict__.get("_alerts_held", 0) or result.run_id in notified:
            return []
        notified.add(result.run_id)
        try:
            alerts = alerts_for(result, workspace=self.name, trigger=trigger)
            if not alerts:
                return []
            return send(alerts, config or load_alerts(self.project), project=self.project.name)
        except Exception:  # alerts must never fail a run
            logging.getLogger("ratatouille.alerts").warning("could not send alerts of %s", result.run_id, exc_info=True)
            return []

    def holding_alerts(self) -> AbstractContextManager[None]:
        """A block within which ``notify`` sends nothing (for a caller that may retry the run and
        notifies once, at the end, itself)."""
        import contextlib
        from collections.abc import Iterator

        @contextlib.contextmanager
        def hold() -> Iterator[None]:
            self.__dict__["_alerts_held"] = self.__dict__.get("_alerts_held", 0) + 1
            try:
                yield
            finally:
                self.__dict__["_alerts_held"] -= 1

        return hold()

    def pending_files(self, source: str, path: str | None = None) -> list[FileInfo]:
        """Files of a files source that its next ingestion would read: new, or changed since their
        registry entry (same rule as ingestion: size and modification time, then checksum).

        ``path`` is the source's glob when the caller knows it (a sensor polling every few seconds
        then does not load the pipelines each time).

        Raises:
            ConfigError: there is no files source of that name.
            ConnectorError: the landing zone cannot be listed.
        """
        from ratatouille.errors import ConfigError
        from ratatouille.storage.files import Landing

        name = source.removeprefix("bronze.")
        if path is None:
            graph = self.graph()
            entry = graph.sources.get(name)
            if entry is None or entry[0].type != "files":
                files = sorted(n for n, (c, _p) in graph.sources.items() if c.type == "files")
                raise ConfigError(f"no files source `{name}`; files sources: {', '.join(files) or 'none'}")
            path = str(getattr(entry[0], "path"))  # noqa: B009 - files sources have a path
        landing = Landing(self.project.landing, self.project.config.storage.s3)
        registry = self.state.file_records(self.name, f"bronze.{name}")
        pending = []
        for info in landing.glob(path):
            record = registry.get(info.path)
            if record is not None and record["size"] == info.size:
                if record.get("mtime_ns") == info.mtime_ns or record["checksum"] == landing.checksum(info.path):
                    continue
            pending.append(info)
        return pending

    def latest_test_results(self, node: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The test results of the latest run that tested ``node`` (``layer.name``): its id and its
        results for that node, or ``(None, [])``."""
        return self.state.latest_test_results(self.name, node)


def _find_model(graph: Graph, name: str) -> Any:
    from ratatouille.errors import ConfigError

    for key, model in graph.models.items():
        if name in (key, model.name):
            return model
    import difflib

    close = difflib.get_close_matches(name, sorted(graph.models), n=1)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    raise ConfigError(f"no model `{name}`{hint} Models: {', '.join(sorted(graph.models)) or 'none'}")


def _partitioning(table: Any) -> list[Any]:
    from ratatouille.storage.writer import current_partitioning

    return current_partitioning(table.metadata)


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _clean(exc: Exception) -> str:
    from ratatouille.engine import error_message

    return error_message(exc)


def _ms(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
