"""The state store: runs, model runs, test results, logs, the file registry and source state.

SQLite in ``.rat/state.db`` by default, PostgreSQL when ``state.uri`` says so; the same tables
on both. Whoever starts a run (CLI, schedule, API, notebook) records it here.

The store speaks DB-API directly (``sqlite3`` from the standard library, psycopg 3 for
PostgreSQL) rather than through SQLAlchemy: every ``rat`` command that records a run would
otherwise pay about 0.25 s to import it, half the budget of a run with nothing to do. The tables
are the ones SQLAlchemy created in earlier versions, so existing state databases keep working;
the user and token tables (``state.auth``) still use SQLAlchemy, through :attr:`StateStore.engine`.

Times are stored in UTC and come back as timezone-aware datetimes on both databases; JSON
columns come back as Python objects.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.config import resolve_uri
from ratatouille.errors import RatatouilleError

if TYPE_CHECKING:
    from sqlalchemy import Engine


def now() -> datetime:
    """The current time in UTC (timezone-aware)."""
    return datetime.now(UTC)


# Column kinds that need converting between Python and the database.
_TIMES = {"started_at", "finished_at", "at", "ingested_at", "updated_at"}
_JSON = {"details", "sample", "state", "inputs"}

# (name, sqlite type, postgresql type, constraint) per column; the same DDL SQLAlchemy emitted.
_SCHEMA: dict[str, list[tuple[str, str, str, str]]] = {
    "rat_runs": [
        ("id", "VARCHAR(40)", "VARCHAR(40)", "NOT NULL"),
        ("workspace", "VARCHAR(200)", "VARCHAR(200)", "NOT NULL"),
        ("kind", "VARCHAR(20)", "VARCHAR(20)", "NOT NULL"),  # run | ingest | test
        ("trigger", "VARCHAR(40)", "VARCHAR(40)", "NOT NULL"),  # cli | schedule | sensor | api | sdk
        ("status", "VARCHAR(20)", "VARCHAR(20)", "NOT NULL"),  # running | success | failed
        ("selection", "TEXT", "TEXT", ""),
        ("started_at", "DATETIME", "TIMESTAMP WITH TIME ZONE", "NOT NULL"),
        ("finished_at", "DATETIME", "TIMESTAMP WITH TIME ZONE", ""),
        ("error", "TEXT", "TEXT", ""),
        ("pid", "INTEGER", "INTEGER", ""),
    ],
    "rat_model_runs": [
        ("run_id", "VARCHAR(40)", "VARCHAR(40)", "NOT NULL"),
        ("node", "VARCHAR(300)", "VARCHAR(300)", "NOT NULL"),
        ("kind", "VARCHAR(20)", "VARCHAR(20)", "NOT NULL"),  # model | source
        ("status", "VARCHAR(20)", "VARCHAR(20)", "NOT NULL"),  # pending | running | success | failed | skipped
        ("materialized", "VARCHAR(20)", "VARCHAR(20)", ""),
        ("rows_written", "BIGINT", "BIGINT", ""),
        ("rows_deleted", "BIGINT", "BIGINT", ""),
        ("rows_quarantined", "BIGINT", "BIGINT", ""),
        ("duration_s", "FLOAT", "FLOAT", ""),
        ("snapshot_id", "BIGINT", "BIGINT", ""),
        ("watermark", "TEXT", "TEXT", ""),
        ("details", "JSON", "JSON", ""),
        ("error", "TEXT", "TEXT", ""),
        ("started_at", "DATETIME", "TIMESTAMP WITH TIME ZONE", ""),
        ("finished_at", "DATETIME", "TIMESTAMP WITH TIME ZONE", ""),
    ],
    "rat_test_results": [
        ("id", "INTEGER", "SERIAL", "NOT NULL"),
        ("run_id", "VARCHAR(40)", "VARCHAR(40)", "NOT NULL"),
        ("node", "VARCHAR(300)", "VARCHAR(300)", "NOT NULL"),
        ("test", "VARCHAR(300)", "VARCHAR(300)", "NOT NULL"),
        ("severity", "VARCHAR(10)", "VARCHAR(10)", "NOT NULL"),
        ("status", "VARCHAR(10)", "VARCHAR(10)", "NOT NULL"),  # pass | fail | warn | error
        ("failures", "BIGINT", "BIGINT", ""),
        ("sample", "JSON", "JSON", ""),
        ("message", "TEXT", "TEXT", ""),
    ],
    "rat_logs": [
        ("id", "INTEGER", "SERIAL", "NOT NULL"),
        ("run_id", "VARCHAR(40)", "VARCHAR(40)", "NOT NULL"),
        ("at", "DATETIME", "TIMESTAMP WITH TIME ZONE", "NOT NULL"),
        ("level", "VARCHAR(10)", "VARCHAR(10)", "NOT NULL"),
        ("node", "VARCHAR(300)", "VARCHAR(300)", ""),
        ("message", "TEXT", "TEXT", "NOT NULL"),
    ],
    "rat_files": [
        ("workspace", "VARCHAR(200)", "VARCHAR(200)", "NOT NULL"),
        ("source", "VARCHAR(200)", "VARCHAR(200)", "NOT NULL"),
        ("path", "VARCHAR(2000)", "VARCHAR(2000)", "NOT NULL"),
        ("size", "BIGINT", "BIGINT", "NOT NULL"),
        ("checksum", "VARCHAR(80)", "VARCHAR(80)", "NOT NULL"),
        ("mtime_ns", "BIGINT", "BIGINT", ""),
        ("rows", "BIGINT", "BIGINT", ""),
        ("run_id", "VARCHAR(40)", "VARCHAR(40)", ""),
        ("ingested_at", "DATETIME", "TIMESTAMP WITH TIME ZONE", "NOT NULL"),
    ],
    "rat_source_state": [
        ("workspace", "VARCHAR(200)", "VARCHAR(200)", "NOT NULL"),
        ("source", "VARCHAR(200)", "VARCHAR(200)", "NOT NULL"),
        ("state", "JSON", "JSON", "NOT NULL"),
        ("updated_at", "DATETIME", "TIMESTAMP WITH TIME ZONE", "NOT NULL"),
    ],
    "rat_node_state": [
        ("workspace", "VARCHAR(200)", "VARCHAR(200)", "NOT NULL"),
        ("node", "VARCHAR(300)", "VARCHAR(300)", "NOT NULL"),
        ("fingerprint", "VARCHAR(80)", "VARCHAR(80)", "NOT NULL"),
        ("inputs", "JSON", "JSON", "NOT NULL"),  # upstream table -> metadata location it was built from
        ("output", "TEXT", "TEXT", ""),  # its own table's metadata location after the run
        ("run_id", "VARCHAR(40)", "VARCHAR(40)", ""),
        ("updated_at", "DATETIME", "TIMESTAMP WITH TIME ZONE", "NOT NULL"),
    ],
}
_KEYS = {
    "rat_runs": ("id",),
    "rat_model_runs": ("run_id", "node"),
    "rat_test_results": ("id",),
    "rat_logs": ("id",),
    "rat_files": ("workspace", "source", "path"),
    "rat_source_state": ("workspace", "source"),
    "rat_node_state": ("workspace", "node"),
}
_INDEXES = [
    ("ix_rat_runs_started", "rat_runs", "started_at"),
    ("ix_rat_test_results_run_id", "rat_test_results", "run_id"),
    ("ix_rat_logs_run_id", "rat_logs", "run_id"),
]


def _ddl(postgres: bool) -> list[str]:
    statements = []
    for table, columns in _SCHEMA.items():
        parts = [f'"{name}" {pg if postgres else lite} {constraint}'.rstrip() for name, lite, pg, constraint in columns]
        parts.append(f"PRIMARY KEY ({', '.join(_KEYS[table])})")
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(parts)})")
    statements += [f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})" for name, table, column in _INDEXES]
    return statements


class _Database:
    """One DB-API connection (sqlite3 or psycopg), used one transaction at a time."""

    def __init__(self, uri: str) -> None:
        if not uri.startswith(("sqlite:", "postgresql")):
            raise RatatouilleError(f"the state store must be SQLite or PostgreSQL, not {uri.split(':', 1)[0]}")
        self.uri = uri
        self.postgres = uri.startswith("postgresql")
        self._lock = threading.RLock()
        try:
            self.conn: Any = self._connect()
            with self.transaction() as cur:
                for statement in _ddl(self.postgres):
                    cur.execute(statement)
        except Exception as exc:
            raise RatatouilleError(f"cannot open the state store: {exc}; check `state.uri`") from exc

    def _connect(self) -> Any:
        if self.postgres:
            import psycopg

            return psycopg.connect(_libpq_uri(self.uri), autocommit=True)
        import sqlite3

        path = self.uri.removeprefix("sqlite:///") if self.uri.startswith("sqlite:///") else ":memory:"
        # isolation_level=None: transactions are ours (writers BEGIN IMMEDIATE, taking the write
        # lock up front, so two processes never deadlock upgrading a read lock).
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives the process being killed, without an fsync per commit
        # (a run writes dozens of small records).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Any]:
        """A cursor inside one transaction, committed at the end (rolled back on an error)."""
        with self._lock:
            if self.postgres:
                if self.conn.closed or self.conn.broken:  # e.g. the server restarted under `rat serve`
                    self.conn = self._connect()
                with self.conn.transaction(), self.conn.cursor() as cur:
                    yield cur
                return
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
            except BaseException:
                self.conn.rollback()
                raise
            else:
                self.conn.commit()
            finally:
                cur.close()

    def execute(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement; ``?`` placeholders, values converted for the database."""
        if self.postgres:
            sql = sql.replace("?", "%s")
        cur.execute(sql, [self._value(v) for v in params])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a ``SELECT`` as dicts, times and JSON converted back."""
        with self.transaction(write=False) as cur:
            self.execute(cur, sql, params)
            names = [d[0] for d in cur.description]
            return [{n: _from_db(n, v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]

    def _value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            value = value.astimezone(UTC)
            # SQLite: the text form SQLAlchemy used, so that times sort and compare as before.
            return value if self.postgres else value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(value, dict | list):
            if self.postgres:
                from psycopg.types.json import Json

                return Json(value, dumps=_dumps)
            return _dumps(value)
        return value

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _from_db(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _TIMES:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value
    if name in _JSON and isinstance(value, str | bytes):
        return json.loads(value)
    return value


def _libpq_uri(uri: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy's spelling) -> ``postgresql://...``."""
    return "postgresql://" + uri.split("://", 1)[1]


class StateStore:
    """Run records and ingestion bookkeeping."""

    def __init__(self, uri: str, root: Path) -> None:
        self.uri = resolve_uri(uri, root)
        self._db: _Database | None = None
        self._engine: Engine | None = None
        self._open_lock = threading.Lock()

    @property
    def db(self) -> _Database:
        """The connection; tables are created on first use.

        Raises:
            RatatouilleError: the state database cannot be reached.
        """
        if self._db is None:
            with self._open_lock:
                if self._db is None:
                    self._db = _Database(self.uri)
        return self._db

    @property
    def engine(self) -> Engine:
        """A SQLAlchemy engine on the same database, for the user and token tables (``state.auth``).

        Raises:
            RatatouilleError: the state database cannot be reached.
        """
        if self._engine is None:
            from sqlalchemy import create_engine, event

            self.db  # noqa: B018 - the store's own tables first
            engine = create_engine(self.uri)
            if engine.dialect.name == "sqlite":

                @event.listens_for(engine, "connect")
                def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                    cursor = dbapi_connection.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                    cursor.execute("PRAGMA busy_timeout=30000")
                    cursor.close()

            self._engine = engine
        return self._engine

    def close(self) -> None:
        """Release connections."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        db = self.db
        with db.transaction() as cur:
            for sql, params in statements:
                db.execute(cur, sql, params)

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, workspace: str, trigger: str, selection: str, kind: str = "run") -> str:
        """Record a new running run; returns its id."""
        import os

        run_id = now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        row = {
            "id": run_id,
            "workspace": workspace,
            "kind": kind,
            "trigger": trigger,
            "status": "running",
            "selection": selection,
            "started_at": now(),
            "pid": os.getpid(),
        }
        self._write([_insert("rat_runs", row)])
        return run_id

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """Close a run."""
        self._write(
            [
                (
                    "UPDATE rat_runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                    (status, now(), error, run_id),
                )
            ]
        )

    def node_update(self, run_id: str, node: str, **values: Any) -> None:
        """Create or update a node's row in a run."""
        _check_columns("rat_model_runs", values)
        db = self.db
        with db.transaction() as cur:
            db.execute(cur, "SELECT 1 FROM rat_model_runs WHERE run_id = ? AND node = ?", (run_id, node))
            if cur.fetchone() is not None:
                if values:
                    assignments = ", ".join(f'"{name}" = ?' for name in values)
                    db.execute(
                        cur,
                        f"UPDATE rat_model_runs SET {assignments} WHERE run_id = ? AND node = ?",
                        (*values.values(), run_id, node),
                    )
                return
            row = {"kind": "model", "status": "pending", **values, "run_id": run_id, "node": node}
            db.execute(cur, *_insert("rat_model_runs", row))

    def add_nodes(self, run_id: str, nodes: list[tuple[str, str]]) -> None:
        """Record the (node, kind) pairs of a run as pending, in one transaction."""
        self._write(
            [
                _insert("rat_model_runs", {"run_id": run_id, "node": node, "kind": kind, "status": "pending"})
                for node, kind in nodes
            ]
        )

    def add_test_result(self, run_id: str, node: str, **values: Any) -> None:
        """Record one test result."""
        _check_columns("rat_test_results", values)
        self._write([_insert("rat_test_results", {**values, "run_id": run_id, "node": node})])

    def log(self, run_id: str, level: str, message: str, node: str | None = None) -> None:
        """Append a log line to a run."""
        row = {"run_id": run_id, "at": now(), "level": level, "node": node, "message": message}
        self._write([_insert("rat_logs", row)])

    def runs(self, workspace: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        where, params = ("WHERE workspace = ? ", [workspace]) if workspace else ("", [])
        return self.db.query(
            f"SELECT {_columns('rat_runs')} FROM rat_runs {where}ORDER BY started_at DESC LIMIT ?", [*params, limit]
        )

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its nodes, tests and logs (``None`` if unknown). A unique prefix works."""
        db = self.db
        pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = db.query(f"SELECT {_columns('rat_runs')} FROM rat_runs WHERE id LIKE ? ESCAPE '\\' LIMIT 2", [pattern])
        if len(rows) != 1:
            return None
        run = rows[0]
        rid = run["id"]
        run["nodes"] = db.query(
            f"SELECT {_columns('rat_model_runs')} FROM rat_model_runs WHERE run_id = ? ORDER BY started_at", [rid]
        )
        run["tests"] = db.query(
            f"SELECT {_columns('rat_test_results')} FROM rat_test_results WHERE run_id = ? ORDER BY id", [rid]
        )
        run["logs"] = db.query(f"SELECT {_columns('rat_logs')} FROM rat_logs WHERE run_id = ? ORDER BY id", [rid])
        return run

    def latest_test_results(self, workspace: str, node: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The id of the latest run of ``workspace`` that tested ``node``, and its results for it."""
        db = self.db
        latest = db.query(
            "SELECT t.run_id FROM rat_test_results t JOIN rat_runs r ON r.id = t.run_id "
            "WHERE r.workspace = ? AND t.node = ? ORDER BY r.started_at DESC LIMIT 1",
            [workspace, node],
        )
        if not latest:
            return None, []
        run_id = str(latest[0]["run_id"])
        rows = db.query(
            f"SELECT {_columns('rat_test_results')} FROM rat_test_results WHERE run_id = ? AND node = ? ORDER BY id",
            [run_id, node],
        )
        return run_id, rows

    def mark_abandoned(self) -> list[str]:
        """Runs still 'running' whose process is gone become 'failed' (killed). Returns their ids."""
        import os

        db = self.db
        fixed: list[str] = []
        with db.transaction() as cur:
            db.execute(cur, "SELECT id, pid FROM rat_runs WHERE status = 'running'")
            for run_id, pid in cur.fetchall():
                alive = False
                if pid:
                    try:
                        os.kill(int(pid), 0)
                        alive = True
                    except OSError:
                        alive = False
                if not alive:
                    db.execute(
                        cur,
                        "UPDATE rat_runs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                        (now(), "the process stopped before the run finished", run_id),
                    )
                    fixed.append(str(run_id))
        return fixed

    # -- ingestion bookkeeping ------------------------------------------------------------

    def file_record(self, workspace: str, source: str, path: str) -> dict[str, Any] | None:
        """The registry entry of a file, if it was ingested."""
        rows = self.db.query(
            f"SELECT {_columns('rat_files')} FROM rat_files WHERE workspace = ? AND source = ? AND path = ?",
            [workspace, source, path],
        )
        return rows[0] if rows else None

    def file_records(self, workspace: str, source: str) -> dict[str, dict[str, Any]]:
        """Every registry entry of a source, by path."""
        rows = self.db.query(
            f"SELECT {_columns('rat_files')} FROM rat_files WHERE workspace = ? AND source = ?", [workspace, source]
        )
        return {r["path"]: r for r in rows}

    def record_files(self, workspace: str, source: str, entries: list[dict[str, Any]], run_id: str) -> None:
        """Register ingested files (replacing older entries for the same paths)."""
        statements: list[tuple[str, Sequence[Any]]] = []
        for entry in entries:
            _check_columns("rat_files", entry)
            statements.append(
                (
                    "DELETE FROM rat_files WHERE workspace = ? AND source = ? AND path = ?",
                    (workspace, source, entry["path"]),
                )
            )
            row = {**entry, "workspace": workspace, "source": source, "run_id": run_id, "ingested_at": now()}
            statements.append(_insert("rat_files", row))
        self._write(statements)

    def source_state(self, workspace: str, source: str) -> dict[str, Any]:
        """A connector's saved state (``{}`` before its first successful read)."""
        rows = self.db.query(
            "SELECT state FROM rat_source_state WHERE workspace = ? AND source = ?", [workspace, source]
        )
        return dict(rows[0]["state"]) if rows else {}

    def save_source_state(self, workspace: str, source: str, state: dict[str, Any]) -> None:
        """Save a connector's state after its outputs were committed."""
        row = {"workspace": workspace, "source": source, "state": json.loads(_dumps(state)), "updated_at": now()}
        self._write(
            [
                ("DELETE FROM rat_source_state WHERE workspace = ? AND source = ?", (workspace, source)),
                _insert("rat_source_state", row),
            ]
        )

    # -- change detection -----------------------------------------------------------------

    def node_states(self, workspace: str) -> dict[str, dict[str, Any]]:
        """What each model was last built from (for skipping models that are up to date)."""
        rows = self.db.query(
            f"SELECT {_columns('rat_node_state')} FROM rat_node_state WHERE workspace = ?", [workspace]
        )
        return {row["node"]: row for row in rows}

    def save_node_states(self, workspace: str, states: dict[str, dict[str, Any]], run_id: str) -> None:
        """Record what models were built from."""
        statements: list[tuple[str, Sequence[Any]]] = []
        for node, state in states.items():
            statements.append(("DELETE FROM rat_node_state WHERE workspace = ? AND node = ?", (workspace, node)))
            row = {
                "workspace": workspace,
                "node": node,
                "fingerprint": state["fingerprint"],
                "inputs": state["inputs"],
                "output": state["output"],
                "run_id": run_id,
                "updated_at": now(),
            }
            statements.append(_insert("rat_node_state", row))
        self._write(statements)

    def forget_node_states(self, workspace: str) -> None:
        """Forget change detection (a full refresh rebuilds everything)."""
        self._write([("DELETE FROM rat_node_state WHERE workspace = ?", (workspace,))])


def _columns(table: str) -> str:
    return ", ".join(f'"{name}"' for name, *_ in _SCHEMA[table])


def _check_columns(table: str, values: dict[str, Any]) -> None:
    """Column names go into SQL text: only the table's own are accepted."""
    unknown = set(values) - {name for name, *_ in _SCHEMA[table]}
    if unknown:
        raise ValueError(f"{table} has no column(s) {', '.join(sorted(unknown))}")


def _insert(table: str, row: dict[str, Any]) -> tuple[str, Sequence[Any]]:
    _check_columns(table, row)
    names = ", ".join(f'"{name}"' for name in row)
    marks = ", ".join("?" for _ in row)
    return f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(row.values())
