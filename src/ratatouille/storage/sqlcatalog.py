"""The Iceberg SQL catalog on plain DB-API drivers: ``sqlite3`` and psycopg.

It keeps PyIceberg's ``SqlCatalog`` tables, columns and semantics (``iceberg_tables`` and
``iceberg_namespace_properties``, the same as Iceberg's JDBC catalog), so a catalog stays
readable and writable by PyIceberg, Spark or Trino; only the storage layer differs. PyIceberg's
own class goes through SQLAlchemy's ORM, whose import alone took 0.27 s of CPU in every
``rat run`` (on the critical path of a 1M-row build, ``bench/bench_pipelines.py``) and whose
sessions cost about 1 ms a call. Metadata files, commits and their checks stay PyIceberg's
(``MetastoreCatalog``).

A commit swaps a table's pointer with ``UPDATE ... WHERE metadata_location = <the one it
read>``: zero rows updated means another writer won, and PyIceberg's ``CommitFailedException``
tells the writer to rebuild its commit. One connection per catalog, used by one thread at a
time (SQLite then never sees two writers of the same process); other processes wait up to 30 s
for SQLite's lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import Catalog, MetastoreCatalog, PropertiesUpdateSummary
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import CommitTableResponse, Table, TableProperties
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import new_table_metadata
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortOrder
from pyiceberg.typedef import EMPTY_DICT, Identifier, Properties

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.table.update import TableRequirement, TableUpdate
    from pyiceberg.view import View
    from pyiceberg.view.metadata import ViewVersion

log = logging.getLogger("ratatouille.catalog")
_NO_VIEWS = "the SQL catalog keeps no Iceberg views (as PyIceberg's SqlCatalog); use a REST catalog for them"

TABLE_TYPE = "TABLE"
# Views of other engines may share iceberg_tables; they are not tables to load or list.
_TABLES_ONLY = " AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)"
_DDL = (
    "CREATE TABLE IF NOT EXISTS iceberg_tables ("
    "catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL, "
    "table_name VARCHAR(255) NOT NULL, metadata_location VARCHAR(1000), "
    "previous_metadata_location VARCHAR(1000), iceberg_type VARCHAR(5), "
    "PRIMARY KEY (catalog_name, table_namespace, table_name))",
    "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties ("
    "catalog_name VARCHAR(255) NOT NULL, namespace VARCHAR(255) NOT NULL, "
    "property_key VARCHAR(255) NOT NULL, property_value VARCHAR(1000) NOT NULL, "
    "PRIMARY KEY (catalog_name, namespace, property_key))",
)


class _Database:
    """One DB-API connection (autocommit; ``transaction()`` for several statements), shared by
    the threads of a process one at a time."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.sqlite = uri.startswith("sqlite:")
        self.lock = threading.RLock()
        self.conn: Any = None
        self._connect()

    def _connect(self) -> None:
        if self.sqlite:
            import sqlite3

            path = self.uri.split(":///", 1)[1] if ":///" in self.uri else ":memory:"
            # Autocommit: transactions are begun explicitly, so a read never holds a lock.
            self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self.integrity: type[Exception] = sqlite3.IntegrityError
            return
        if not self.uri.startswith(("postgresql", "postgres:")):
            raise ValueError("a SQL catalog is `sqlite:///path` or `postgresql://user@host/db`")
        import psycopg

        conninfo = "postgresql://" + self.uri.split("://", 1)[1]  # postgresql+psycopg://... -> libpq's form
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.integrity = psycopg.IntegrityError

    def _sql(self, statement: str) -> str:
        return statement if self.sqlite else statement.replace("?", "%s")

    def _ready(self) -> Any:
        if not self.sqlite and (self.conn.closed or self.conn.broken):
            log.info("the catalog's connection was lost; reconnecting")
            self._connect()
        return self.conn

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            cursor = self._ready().execute(self._sql(statement), tuple(params))
            return list(cursor.fetchall())

    def execute(self, statement: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""
        with self.lock:
            return int(self._ready().execute(self._sql(statement), tuple(params)).rowcount)

    @contextmanager
    def transaction(self) -> Iterator[_Database]:
        """Statements that commit together (or not at all, if the block raises)."""
        with self.lock:
            conn = self._ready()
            conn.execute("BEGIN IMMEDIATE" if self.sqlite else "BEGIN")
            try:
                yield self
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


class SqlCatalog(MetastoreCatalog):
    """An Iceberg SQL catalog (``uri``: ``sqlite:///path`` or ``postgresql+psycopg://...``)."""

    def __init__(self, name: str, **properties: str) -> None:
        super().__init__(name, **properties)
        self.db = _Database(self.properties["uri"])
        for statement in _DDL:
            self.db.execute(statement)
        try:  # catalogs created by PyIceberg before 0.10 have no iceberg_type column
            self.db.rows("SELECT iceberg_type FROM iceberg_tables WHERE 1 = 0")
            self._typed = True
        except Exception:
            self._typed = False

    # -- tables ---------------------------------------------------------------------------

    def _where_table(self) -> str:
        return "catalog_name = ? AND table_namespace = ? AND table_name = ?" + (_TABLES_ONLY if self._typed else "")

    def _insert(self, db: _Database, namespace: str, name: str, metadata_location: str) -> None:
        columns = "catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location"
        values: list[Any] = [self.name, namespace, name, metadata_location, None]
        if self._typed:
            columns += ", iceberg_type"
            values.append(TABLE_TYPE)
        try:
            db.execute(f"INSERT INTO iceberg_tables ({columns}) VALUES ({', '.join('?' * len(values))})", values)
        except db.integrity as exc:
            raise TableAlreadyExistsError(f"Table {namespace}.{name} already exists") from exc

    @staticmethod
    def _split(identifier: str | Identifier) -> tuple[str, str]:
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        return namespace, Catalog.table_name_from(identifier)

    def create_table(
        self,
        identifier: str | Identifier,
        schema: Schema | pa.Schema,
        location: str | None = None,
        partition_spec: PartitionSpec = UNPARTITIONED_PARTITION_SPEC,
        sort_order: SortOrder = UNSORTED_SORT_ORDER,
        properties: Properties = EMPTY_DICT,
    ) -> Table:
        version = int(properties.get(TableProperties.FORMAT_VERSION, TableProperties.DEFAULT_FORMAT_VERSION))
        iceberg_schema = self._convert_schema_if_needed(schema, version)  # type: ignore[arg-type]
        namespace, name = self._split(identifier)
        if not self.namespace_exists(namespace):
            raise NoSuchNamespaceError(f"Namespace does not exist: {namespace}")
        location = self._resolve_table_location(location, namespace, name)
        metadata_location = load_location_provider(location, properties).new_table_metadata_file_location()
        metadata = new_table_metadata(
            location=location,
            schema=iceberg_schema,
            partition_spec=partition_spec,
            sort_order=sort_order,
            properties=properties,
        )
        self._write_metadata(metadata, self._load_file_io(location=metadata_location), metadata_location)
        self._insert(self.db, namespace, name, metadata_location)
        return self.load_table(identifier)

    def register_table(self, identifier: str | Identifier, metadata_location: str, overwrite: bool = False) -> Table:
        if overwrite:
            raise NotImplementedError("`overwrite` isn't supported")
        namespace, name = self._split(identifier)
        if not self.namespace_exists(namespace):
            raise NoSuchNamespaceError(f"Namespace does not exist: {namespace}")
        self._insert(self.db, namespace, name, metadata_location)
        return self.load_table(identifier)

    def load_table(self, identifier: str | Identifier) -> Table:
        namespace, name = self._split(identifier)
        found = self.db.rows(
            f"SELECT metadata_location FROM iceberg_tables WHERE {self._where_table()}", (self.name, namespace, name)
        )
        if not found or not found[0][0]:
            raise NoSuchTableError(f"Table does not exist: {namespace}.{name}")
        metadata_location = str(found[0][0])
        io = self._load_file_io(location=metadata_location)
        metadata = FromInputFile.table_metadata(io.new_input(metadata_location))
        return Table(
            identifier=(*Catalog.identifier_to_tuple(namespace), name),
            metadata=metadata,
            metadata_location=metadata_location,
            io=self._load_file_io(metadata.properties, metadata_location),
            catalog=self,
        )

    def drop_table(self, identifier: str | Identifier) -> None:
        namespace, name = self._split(identifier)
        if self.db.execute(f"DELETE FROM iceberg_tables WHERE {self._where_table()}", (self.name, namespace, name)) < 1:
            raise NoSuchTableError(f"Table does not exist: {namespace}.{name}")

    def rename_table(self, from_identifier: str | Identifier, to_identifier: str | Identifier) -> Table:
        namespace, name = self._split(from_identifier)
        to_namespace, to_name = self._split(to_identifier)
        if not self.namespace_exists(to_namespace):
            raise NoSuchNamespaceError(f"Namespace does not exist: {to_namespace}")
        try:
            moved = self.db.execute(
                f"UPDATE iceberg_tables SET table_namespace = ?, table_name = ? WHERE {self._where_table()}",
                (to_namespace, to_name, self.name, namespace, name),
            )
        except self.db.integrity as exc:
            raise TableAlreadyExistsError(f"Table {to_namespace}.{to_name} already exists") from exc
        if moved < 1:
            raise NoSuchTableError(f"Table does not exist: {name}")
        return self.load_table(to_identifier)

    def commit_table(
        self, table: Table, requirements: tuple[TableRequirement, ...], updates: tuple[TableUpdate, ...]
    ) -> CommitTableResponse:
        namespace, name = self._split(table.name())
        current: Table | None
        try:
            current = self.load_table(table.name())
        except NoSuchTableError:
            current = None
        staged = self._update_and_stage_table(current, table.name(), requirements, updates)
        if current is not None and staged.metadata == current.metadata:
            return CommitTableResponse(metadata=current.metadata, metadata_location=current.metadata_location)
        self._write_metadata(staged.metadata, staged.io, staged.metadata_location)
        if current is None:
            self._insert(self.db, namespace, name, staged.metadata_location)
        else:
            moved = self.db.execute(
                "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? "
                f"WHERE {self._where_table()} AND metadata_location = ?",
                (
                    staged.metadata_location,
                    current.metadata_location,
                    self.name,
                    namespace,
                    name,
                    current.metadata_location,
                ),
            )
            if moved < 1:
                raise CommitFailedException(f"Table has been updated by another process: {namespace}.{name}")
        return CommitTableResponse(metadata=staged.metadata, metadata_location=staged.metadata_location)

    def list_tables(self, namespace: str | Identifier) -> list[Identifier]:
        if namespace and not self.namespace_exists(namespace):
            raise NoSuchNamespaceError(f"Namespace does not exist: {namespace}")
        text = Catalog.namespace_to_string(namespace)
        where = "catalog_name = ? AND table_namespace = ?" + (_TABLES_ONLY if self._typed else "")
        rows = self.db.rows(f"SELECT table_namespace, table_name FROM iceberg_tables WHERE {where}", (self.name, text))
        return [(*Catalog.identifier_to_tuple(str(ns)), str(name)) for ns, name in rows]

    # -- namespaces -----------------------------------------------------------------------

    def namespace_exists(self, identifier: str | Identifier) -> bool:
        text = Catalog.namespace_to_string(Catalog.identifier_to_tuple(identifier), NoSuchNamespaceError)
        below = text.replace("!", "!!").replace("_", "!_").replace("%", "!%") + ".%"
        for table, column in (("iceberg_tables", "table_namespace"), ("iceberg_namespace_properties", "namespace")):
            found = self.db.rows(
                f"SELECT 1 FROM {table} WHERE catalog_name = ? AND ({column} = ? OR {column} LIKE ? ESCAPE '!') LIMIT 1",
                (self.name, text, below),
            )
            if found:
                return True
        return False

    def create_namespace(self, namespace: str | Identifier, properties: Properties = EMPTY_DICT) -> None:
        if self.namespace_exists(namespace):
            raise NamespaceAlreadyExistsError(f"Namespace {namespace} already exists")
        text = Catalog.namespace_to_string(namespace, NoSuchNamespaceError)
        try:
            with self.db.transaction() as db:
                for key, value in (properties or {"exists": "true"}).items():
                    db.execute(
                        "INSERT INTO iceberg_namespace_properties "
                        "(catalog_name, namespace, property_key, property_value) VALUES (?, ?, ?, ?)",
                        (self.name, text, key, value),
                    )
        except self.db.integrity as exc:  # another writer created it first
            raise NamespaceAlreadyExistsError(f"Namespace {namespace} already exists") from exc

    def drop_namespace(self, namespace: str | Identifier) -> None:
        if not self.namespace_exists(namespace):
            raise NoSuchNamespaceError(f"Namespace does not exist: {namespace}")
        text = Catalog.namespace_to_string(namespace)
        if tables := self.list_tables(namespace):
            raise NamespaceNotEmptyError(f"Namespace {text} is not empty. {len(tables)} tables exist.")
        self.db.execute(
            "DELETE FROM iceberg_namespace_properties WHERE catalog_name = ? AND namespace = ?", (self.name, text)
        )

    def list_namespaces(self, namespace: str | Identifier = ()) -> list[Identifier]:
        if namespace and not self.namespace_exists(namespace):
            raise NoSuchNamespaceError(f"Namespace does not exist: {namespace}")
        like = (Catalog.namespace_to_string(namespace, NoSuchNamespaceError) if namespace else "") + "%"
        rows = self.db.rows(
            "SELECT table_namespace FROM iceberg_tables WHERE catalog_name = ? AND table_namespace LIKE ? "
            "UNION SELECT namespace FROM iceberg_namespace_properties WHERE catalog_name = ? AND namespace LIKE ?",
            (self.name, like, self.name, like),
        )
        parent = Catalog.identifier_to_tuple(namespace)
        depth = len(parent) + 1
        found = {Catalog.identifier_to_tuple(str(r[0])) for r in rows}
        return list({ns[:depth] for ns in found if len(ns) >= depth and ns[: depth - 1] == parent})

    def load_namespace_properties(self, namespace: str | Identifier) -> Properties:
        text = Catalog.namespace_to_string(namespace)
        if not self.namespace_exists(namespace):
            raise NoSuchNamespaceError(f"Namespace {text} does not exists")
        rows = self.db.rows(
            "SELECT property_key, property_value FROM iceberg_namespace_properties "
            "WHERE catalog_name = ? AND namespace = ?",
            (self.name, text),
        )
        return {str(k): str(v) for k, v in rows}

    def update_namespace_properties(
        self, namespace: str | Identifier, removals: set[str] | None = None, updates: Properties = EMPTY_DICT
    ) -> PropertiesUpdateSummary:
        text = Catalog.namespace_to_string(namespace)
        current = self.load_namespace_properties(namespace)
        summary = self._get_updated_props_and_update_summary(current, removals, updates)[0]
        where = "catalog_name = ? AND namespace = ? AND property_key = ?"
        with self.db.transaction() as db:
            for key in [*(removals or ()), *updates]:
                db.execute(f"DELETE FROM iceberg_namespace_properties WHERE {where}", (self.name, text, key))
            for key, value in updates.items():
                db.execute(
                    "INSERT INTO iceberg_namespace_properties "
                    "(catalog_name, namespace, property_key, property_value) VALUES (?, ?, ?, ?)",
                    (self.name, text, key, value),
                )
        return summary

    # -- views: not supported, as in PyIceberg's SqlCatalog ------------------------------

    def create_view(
        self,
        identifier: str | Identifier,
        schema: Schema | pa.Schema,
        view_version: ViewVersion,
        location: str | None = None,
        properties: Properties = EMPTY_DICT,
    ) -> View:
        raise NotImplementedError(_NO_VIEWS)

    def list_views(self, namespace: str | Identifier) -> list[Identifier]:
        raise NotImplementedError(_NO_VIEWS)

    def view_exists(self, identifier: str | Identifier) -> bool:
        raise NotImplementedError(_NO_VIEWS)

    def register_view(self, identifier: str | Identifier, metadata_location: str) -> View:
        raise NotImplementedError(_NO_VIEWS)

    def drop_view(self, identifier: str | Identifier) -> None:
        raise NotImplementedError(_NO_VIEWS)

    def load_view(self, identifier: str | Identifier) -> View:
        raise NotImplementedError(_NO_VIEWS)

    def close(self) -> None:
        """Close the catalog's connection."""
        self.db.close()


__all__ = ["SqlCatalog"]
