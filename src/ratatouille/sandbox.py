"""The query sandbox: read-only SQL over the lakehouse tables a caller may read, and nothing else.

Two locks, each enough on its own for file and network access:

1. **DuckDB's own settings.** Each sandbox is a separate DuckDB instance. After the iceberg
   extension is loaded and the views of the allowed tables are created, it sets
   ``allowed_directories`` to the allowed workspaces' warehouse folders
   (``<warehouse>/<workspace>/``, local or ``s3://``), ``enable_external_access = false``
   (no other file, no URL, no ``ATTACH``, no extension loading), autoinstall/autoload off, and
   ``lock_configuration = true`` so no statement can undo any of it. Its temporary directory
   (where DuckDB spills, and which DuckDB always allows) is its own, so it only ever holds data
   of the same workspaces.
2. **A statement check with DuckDB's parser.** Exactly one statement, of type ``SELECT``
   (which covers ``WITH``, ``UNION``, ``VALUES``, ``DESCRIBE``, ``SHOW`` and ``SUMMARIZE``), or
   an ``EXPLAIN [ANALYZE]`` of one. Table functions are limited to a few that read no files
   (``range``, ``generate_series``, ``unnest``, ...), and a file name in ``FROM`` is refused, so
   the only way to data is through the views. ``PRAGMA`` (which DuckDB parses as a ``SELECT``)
   is refused because it is not a plain ``SELECT`` tree.

Loading the iceberg extension takes ~0.5 s, so a :class:`SandboxPool` keeps one instance per
set of allowed workspaces and every query runs on its own cursor. A view is re-created only
when its table's metadata location changed (and only when a query reads it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from ratatouille.engine import literal, load_extensions, quote
from ratatouille.errors import QueryError, RatatouilleError, TableNotFoundError
from ratatouille.storage.catalog import TableRef

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from ratatouille.project import Project

log = logging.getLogger("ratatouille.sandbox")

BATCH_ROWS = 65_536
MAX_INSTANCES = 4
# Table functions that compute rows and read nothing. Everything else (read_csv, read_parquet,
# glob, iceberg_scan, query, query_table, ...) either reads paths or runs SQL we cannot see.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})
_PATH_LIKE = re.compile(r"[/\\:*?]|\.(csv|tsv|txt|json|jsonl|ndjson|parquet|avro|arrow|xlsx|gz|zst|db|duckdb)$", re.I)
_RULES = (
    "the query API runs one read-only SELECT over the lakehouse tables you may read "
    "(no file system or network access, ATTACH, INSTALL/LOAD, COPY, EXPORT, SET, PRAGMA or writes)"
)
_KINDS = {
    "COPY": "COPY (to download a result, ask for ?format=csv, parquet or arrow)",
    "EXPORT": "EXPORT",
    "ATTACH": "ATTACH",
    "DETACH": "DETACH",
    "LOAD": "INSTALL/LOAD",
    "SET": "SET/RESET/USE",
    "VARIABLE_SET": "SET VARIABLE",
    "PRAGMA": "PRAGMA",
    "CALL": "CALL",
    "INSERT": "a write (INSERT)",
    "UPDATE": "a write (UPDATE)",
    "DELETE": "a write (DELETE/TRUNCATE)",
    "MERGE_INTO": "a write (MERGE)",
    "CREATE": "a write (CREATE)",
    "CREATE_FUNC": "a write (CREATE)",
    "DROP": "a write (DROP)",
    "ALTER": "a write (ALTER)",
    "TRANSACTION": "a transaction statement",
    "VACUUM": "VACUUM/ANALYZE",
    "PREPARE": "PREPARE",
    "EXECUTE": "EXECUTE",
}


class QueryRefusedError(QueryError):
    """The sandbox refuses the statement: it is not one read-only query over allowed tables."""


class QueryTimeoutError(QueryError):
    """The query ran longer than the statement timeout and was stopped."""


# -- the statement check ------------------------------------------------------------------


def check_sql(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, frozenset[tuple[str, str, str]]]:
    """Check that ``sql`` is one read-only query and return it with the tables it names.

    ``con`` must be a sandboxed connection: DuckDB's parser reads files for some statements
    (``IMPORT DATABASE``), which the sandbox's settings forbid.

    Returns:
        The statement (without a trailing ``;``) and the ``(catalog, schema, table)`` names it
        reads (catalog or schema empty when the SQL leaves them out).

    Raises:
        QueryRefusedError: it is not a single SELECT, EXPLAIN of one, or it reads files.
        QueryError: it does not parse.
    """
    import duckdb

    text = sql.strip().rstrip(";").strip()
    try:
        statements = con.extract_statements(text) if text else []
    except duckdb.PermissionException as exc:  # IMPORT DATABASE reads files while parsing
        raise QueryRefusedError(f"{_clean(exc).splitlines()[0]}: {_RULES}") from None
    except duckdb.Error as exc:
        raise QueryError(_clean(exc)) from None
    if not statements:
        raise QueryRefusedError(f"the query is empty; {_RULES}")
    if len(statements) > 1:
        raise QueryRefusedError(f"{len(statements)} statements were sent; send one at a time ({_RULES})")
    kind = statements[0].type.name
    if kind == "EXPLAIN":
        inner = _explain_target(text)
        if inner is None:
            raise QueryRefusedError(f"cannot read this EXPLAIN; write EXPLAIN [ANALYZE] SELECT ... ({_RULES})")
        _, names = check_sql(con, inner)
        return text, names
    if kind != "SELECT":
        first = _first_keyword(text)
        what = _KINDS.get(kind) or (f"`{first}`" if first else kind)
        raise QueryRefusedError(f"{what} is not allowed: {_RULES}")
    return text, _check_select(con, text)


def _check_select(con: duckdb.DuckDBPyConnection, sql: str) -> frozenset[tuple[str, str, str]]:
    row = con.execute(f"SELECT json_serialize_sql({literal(sql)})").fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        first = _first_keyword(sql)
        what = "PRAGMA" if first == "PRAGMA" else f"`{first or 'this statement'}`"
        raise QueryRefusedError(f"{what} is not allowed: {_RULES}")
    names: set[tuple[str, str, str]] = set()
    for node in _walk(tree):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise QueryRefusedError(
                    f"table function `{name}` is not allowed: {_RULES}. Read tables by name "
                    f"(layer.table or workspace.layer.table); allowed table functions: "
                    f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}"
                )
        elif kind == "BASE_TABLE":
            table = str(node.get("table_name") or "")
            if _PATH_LIKE.search(table):
                raise QueryRefusedError(f"reading the file `{table}` is not allowed: {_RULES}")
            names.add((str(node.get("catalog_name") or ""), str(node.get("schema_name") or ""), table))
    return frozenset(names)


def _walk(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _tokens(sql: str) -> list[tuple[int, str]]:
    """``(position, kind)`` of each token (comments skipped), from DuckDB's tokenizer."""
    import duckdb

    return [(int(pos), str(getattr(kind, "name", kind))) for pos, kind in duckdb.tokenize(sql)]


def _first_keyword(sql: str) -> str:
    tokens = _tokens(sql)
    if not tokens:
        return ""
    start = tokens[0][0]
    end = tokens[1][0] if len(tokens) > 1 else len(sql)
    return sql[start:end].strip().upper()


def _explain_target(sql: str) -> str | None:
    """The statement after ``EXPLAIN [ANALYZE] [(options)]``, or ``None`` if that cannot be found."""
    tokens = _tokens(sql)

    def word(i: int) -> str:
        start = tokens[i][0]
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        return sql[start:end].strip().upper()

    if not tokens or word(0) != "EXPLAIN":
        return None
    i = 1
    if i < len(tokens) and word(i) == "ANALYZE":
        i += 1
    if i < len(tokens) and word(i).startswith("("):
        depth = 0
        while i < len(tokens):
            text = word(i)
            depth += text.count("(") - text.count(")")
            i += 1
            if depth <= 0:
                break
    if i >= len(tokens):
        return None
    return sql[tokens[i][0] :]


# -- a sandbox instance -------------------------------------------------------------------


class Sandbox:
    """A locked-down DuckDB instance that sees the tables of some workspaces."""

    def __init__(self, project: Project, workspaces: frozenset[str]) -> None:
        import duckdb

        from ratatouille.engine import connect

        if not workspaces:
            raise RatatouilleError("a query sandbox needs at least one workspace")
        self.project = project
        self.workspaces = workspaces
        lakehouse = project.lakehouse
        digest = hashlib.sha256("\0".join(sorted(workspaces)).encode()).hexdigest()[:16]
        temp = project.temp_directory / "sandbox" / digest
        s3 = project.config.storage.s3
        self.con = connect(project.profile, temp, s3 if lakehouse.is_s3 else None)
        self._lock = threading.Lock()
        self._parse_lock = threading.Lock()
        self._views: dict[tuple[str, str, str], str] = {}
        self._schemas: set[tuple[str, str]] = set()
        self.broken = False
        try:
            load_extensions(self.con, "iceberg")
            for workspace in sorted(workspaces):
                self.con.execute(f"ATTACH ':memory:' AS {quote(workspace)}")
            allowed = ", ".join(literal(f"{lakehouse.warehouse}/{w}/") for w in sorted(workspaces))
            # DuckDB always allows its temp directory, where engine.connect puts the extension
            # directory: move that out, and point the repositories at nothing, so that not even
            # an INSTALL slipping past the check could write a file or reach the network.
            nowhere = literal(str(project.temp_directory / "sandbox" / "no-extensions"))
            self.con.execute(f"SET extension_directory = {nowhere}")
            self.con.execute(f"SET custom_extension_repository = {nowhere}")
            self.con.execute(f"SET autoinstall_extension_repository = {nowhere}")
            self.con.execute(f"SET allowed_directories = [{allowed}]")
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET autoinstall_known_extensions = false")
            self.con.execute("SET autoload_known_extensions = false")
            self.con.execute("SET allow_community_extensions = false")
            self.con.execute("SET lock_configuration = true")
            self._parser = self.con.cursor()
            self.refresh(self.tables(), everything=True)
        except duckdb.Error as exc:
            self.con.close()
            raise RatatouilleError(f"cannot set up the query sandbox: {exc}") from exc

    def tables(self) -> list[TableRef]:
        """The catalog's tables in this sandbox's workspaces."""
        return [t for t in self.project.lakehouse.list_tables() if t.workspace in self.workspaces]

    def refresh(
        self,
        tables: list[TableRef],
        wanted: Collection[tuple[str, str, str]] = (),
        *,
        everything: bool = False,
    ) -> None:
        """Create views for new tables, re-create the ``wanted`` (or all) whose metadata moved,
        drop those of deleted tables."""
        import duckdb

        with self._lock:
            current = {t.identifier: t for t in tables if t.metadata_location}
            for key in [k for k in self._views if k not in current]:
                self.con.execute(f"DROP VIEW IF EXISTS {'.'.join(quote(p) for p in key)}")
                del self._views[key]
            for key, ref in current.items():
                known = self._views.get(key)
                if known is None or (known != ref.metadata_location and (everything or key in wanted)):
                    try:
                        self._create_view(ref)
                    except duckdb.Error as exc:  # one unreadable table must not hide the others
                        log.warning("cannot create the sandbox view of %s: %s", ref.qualified, exc)

    def _create_view(self, ref: TableRef) -> None:
        assert ref.metadata_location is not None
        if (ref.workspace, ref.layer) not in self._schemas:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(ref.workspace)}.{quote(ref.layer)}")
            self._schemas.add((ref.workspace, ref.layer))
        target = ".".join(quote(p) for p in ref.identifier)
        source = f"iceberg_scan({literal(ref.metadata_location)})"
        self.con.execute(f"CREATE OR REPLACE VIEW {target} AS SELECT * FROM {source}")
        self._views[ref.identifier] = ref.metadata_location

    def check(self, sql: str) -> tuple[str, frozenset[tuple[str, str, str]]]:
        """``check_sql`` on this sandbox's own parser connection.

        Raises:
            QueryRefusedError: the statement is not allowed.
            QueryError: it does not parse.
        """
        with self._parse_lock:
            return check_sql(self._parser, sql)

    def cursor(self, workspace: str) -> duckdb.DuckDBPyConnection:
        """A new connection to this instance whose unqualified ``layer.table`` names mean ``workspace``."""
        with self._lock:
            cursor = self.con.cursor()
        cursor.execute(f"USE {quote(workspace)}")
        return cursor

    def visible(self) -> list[str]:
        """``workspace.layer.table`` of every table this sandbox has a view for."""
        with self._lock:
            return sorted(".".join(k) for k in self._views)

    def close(self) -> None:
        """Close the instance (queries still streaming keep it alive until they finish)."""
        with self._parse_lock:
            self._parser.close()
        self.con.close()


# -- a query ------------------------------------------------------------------------------


class SandboxQuery:
    """A running sandboxed query: its columns, then its rows as a stream of Arrow batches.

    Close it (or use it as a context manager) when done; the statement timeout keeps running
    while the result streams.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        cursor: duckdb.DuckDBPyConnection,
        sql: str,
        *,
        limit: int | None,
        timeout: float | None,
        batch_rows: int,
        workspace: str,
    ) -> None:
        import duckdb

        self.sandbox = sandbox
        self.workspace = workspace
        self.limit = limit
        self.timeout = timeout
        self.rows = 0
        self.truncated = False
        self.started = time.perf_counter()
        self._cursor = cursor
        self._closed = False
        self._timed_out = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._interrupt)
            self._timer.daemon = True
            self._timer.start()
        try:
            relation = cursor.sql(sql)
            if relation is None:
                raise QueryRefusedError(f"the statement returns no rows; {_RULES}")
            if limit is not None:
                relation = relation.limit(limit + 1)  # one more, to tell whether rows were cut
            self.columns: list[tuple[str, str]] = [
                (str(n), str(t)) for n, t in zip(relation.columns, relation.types, strict=True)
            ]
            self._reader = relation.to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            self.close()
            raise self._error(exc) from None
        except BaseException:
            self.close()
            raise

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the result."""
        return self._reader.schema

    def _interrupt(self) -> None:
        self._timed_out = True
        try:
            self._cursor.interrupt()
        except Exception:  # the cursor may have just closed
            log.debug("interrupting a finished query", exc_info=True)

    def next_batch(self) -> pa.RecordBatch | None:
        """The next batch of rows, or ``None`` at the end (the row limit applied).

        Raises:
            QueryTimeoutError: the statement timeout stopped the query.
            QueryRefusedError: the query tried to read a file it may not.
            TableNotFoundError: it names a table that does not exist (or may not be read).
            QueryError: anything else DuckDB reports.
        """
        import duckdb

        with self._lock:
            if self._closed or self.truncated:
                return None
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                return None
            except duckdb.Error as exc:
                raise self._error(exc) from None
            except Exception as exc:  # pyarrow wraps errors raised inside DuckDB's stream
                raise self._error(exc) from None
            if self.limit is not None and self.rows + batch.num_rows > self.limit:
                batch = batch.slice(0, self.limit - self.rows)
                self.truncated = True
            self.rows += batch.num_rows
            return batch

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (batch := self.next_batch()) is not None:
            yield batch

    def _error(self, exc: BaseException) -> RatatouilleError:
        import duckdb

        text = _clean(exc)
        if self._timed_out or isinstance(exc, duckdb.InterruptException) or "INTERRUPT" in text[:20]:
            return QueryTimeoutError(
                f"the query ran longer than {self.timeout:g} s and was stopped; narrow it (a WHERE, a LIMIT, "
                "a pre-aggregated gold table) or raise server.statement_timeout_seconds"
            )
        if isinstance(exc, duckdb.FatalException):
            self.sandbox.broken = True
        if isinstance(exc, duckdb.PermissionException) or "Permission Error" in text:
            return QueryRefusedError(f"{text.splitlines()[0]}: {_RULES}")
        match = re.search(r"Table with name (\S+) does not exist", text)
        if match:
            return TableNotFoundError(match.group(1), _display(self.sandbox.visible(), self.workspace))
        match = re.search(r'Catalog "([^"]+)" does not exist', text)
        if match:
            return QueryError(
                f"workspace `{match.group(1)}` does not exist or may not be read with these credentials; "
                f"tables you may read: {', '.join(_display(self.sandbox.visible(), self.workspace)) or 'none yet'}"
            )
        return QueryError(text)

    def close(self) -> None:
        """Stop the query and release its cursor (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._closed:
            return
        try:
            self._cursor.interrupt()
        except Exception:
            log.debug("interrupting on close", exc_info=True)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._cursor.close()
            except Exception:
                log.debug("closing a sandbox cursor", exc_info=True)

    def __enter__(self) -> SandboxQuery:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _display(qualified: list[str], workspace: str) -> list[str]:
    prefix = workspace + "."
    return [q.removeprefix(prefix) for q in qualified]


def _clean(exc: BaseException) -> str:
    return str(exc).strip()


# -- the pool -----------------------------------------------------------------------------


class SandboxPool:
    """Sandbox instances of one project, one per set of allowed workspaces (the least recently
    used is closed beyond ``max_instances``). Thread-safe."""

    def __init__(self, project: Project, max_instances: int = MAX_INSTANCES) -> None:
        self.project = project
        self.max_instances = max_instances
        self._lock = threading.Lock()
        self._instances: OrderedDict[frozenset[str], Sandbox] = OrderedDict()
        self._creating: dict[frozenset[str], threading.Lock] = {}

    def get(self, workspaces: frozenset[str]) -> Sandbox:
        """The sandbox for exactly these workspaces (created on first use, ~0.5 s).

        Raises:
            RatatouilleError: DuckDB or the iceberg extension cannot be set up.
        """
        with self._lock:
            found = self._instances.get(workspaces)
            if found is not None and not found.broken:
                self._instances.move_to_end(workspaces)
                return found
            creating = self._creating.setdefault(workspaces, threading.Lock())
        with creating:  # two first queries for the same set build one instance
            with self._lock:
                found = self._instances.get(workspaces)
                if found is not None and not found.broken:
                    return found
            sandbox = Sandbox(self.project, workspaces)
            evicted: list[Sandbox] = []
            with self._lock:
                old = self._instances.pop(workspaces, None)
                if old is not None:
                    evicted.append(old)
                self._instances[workspaces] = sandbox
                while len(self._instances) > self.max_instances:
                    evicted.append(self._instances.popitem(last=False)[1])
            for instance in evicted:
                instance.close()
            return sandbox

    def query(
        self,
        sql: str,
        workspace: str,
        readable: Collection[str],
        *,
        limit: int | None = None,
        timeout: float | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> SandboxQuery:
        """Check and start a query in ``workspace`` that may read the tables of ``readable``.

        Raises:
            QueryRefusedError: the statement is not allowed.
            QueryError: it does not parse, bind or run.
            TableNotFoundError: it names a table that does not exist or may not be read.
        """
        allowed = frozenset(readable) | {workspace}
        sandbox = self.get(allowed)
        statement, names = sandbox.check(sql)
        wanted = {((c or workspace).lower(), s.lower(), t.lower()) for c, s, t in names if s}
        sandbox.refresh(sandbox.tables(), wanted)
        # A cursor sees the views that existed when it was made: make it after the refresh.
        cursor = sandbox.cursor(workspace)
        return SandboxQuery(
            sandbox, cursor, statement, limit=limit, timeout=timeout, batch_rows=batch_rows, workspace=workspace
        )

    def close(self) -> None:
        """Close every instance."""
        with self._lock:
            instances = list(self._instances.values())
            self._instances.clear()
        for instance in instances:
            instance.close()


_POOLS: weakref.WeakKeyDictionary[Project, SandboxPool] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()


def pool_for(project: Project) -> SandboxPool:
    """The sandbox pool of a loaded project (one per ``Project`` object)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(project)
        if pool is None:
            pool = _POOLS[project] = SandboxPool(project)
        return pool


def close_pool(project: Project) -> None:
    """Close the project's sandboxes, if it has any."""
    with _POOLS_LOCK:
        pool = _POOLS.pop(project, None)
    if pool is not None:
        pool.close()
