"""The Iceberg catalog and the warehouse: where tables are found and where their files go.

Namespaces are ``<workspace>.<layer>``; a table lives at ``<warehouse>/<workspace>/<layer>/<name>``.
The SQL catalog (SQLite by default, PostgreSQL in production) is read with one query when
listing tables, so opening a query session does not load every table's metadata.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.config import ProjectConfig, resolve_uri
from ratatouille.errors import CatalogError, TableNotFoundError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table


@dataclass(frozen=True)
class TableRef:
    """A table's identity and where its current metadata is."""

    workspace: str
    layer: str
    name: str
    metadata_location: str | None = None

    @property
    def identifier(self) -> tuple[str, str, str]:
        """The catalog identifier."""
        return (self.workspace, self.layer, self.name)

    @property
    def qualified(self) -> str:
        """``workspace.layer.name``."""
        return f"{self.workspace}.{self.layer}.{self.name}"

    @property
    def short(self) -> str:
        """``layer.name``, as written inside a workspace."""
        return f"{self.layer}.{self.name}"


STAGE_PREFIX = "__rat_stage_"


def stage_name(name: str, run: str) -> str:
    """The hidden name under which a run builds a table that does not exist yet."""
    return f"{STAGE_PREFIX}{run}__{name}"


def final_name(name: str) -> str:
    """The table a stage name stands for (a plain name is returned as is)."""
    return name.split("__", 2)[-1] if name.startswith(STAGE_PREFIX) else name


log = logging.getLogger(__name__)


class Lakehouse:
    """The project's catalog and warehouse."""

    def __init__(self, root: Path, config: ProjectConfig) -> None:
        self.root = root
        self.config = config
        warehouse = config.storage.warehouse
        if "://" in warehouse:
            self.warehouse = warehouse.rstrip("/")
        else:
            self.warehouse = str((root / warehouse).resolve())
        self.is_s3 = self.warehouse.startswith(("s3://", "s3a://"))
        self._lock = threading.Lock()
        self._catalog_lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._warming = False
        self._namespaces: set[tuple[str, str]] = set()

    def io_properties(self) -> dict[str, str]:
        """PyIceberg FileIO properties for the warehouse."""
        s3 = self.config.storage.s3
        from ratatouille.storage.fileio import IMPL

        props: dict[str, str] = {"py-io-impl": IMPL, "s3.region": s3.region}
        if s3.endpoint:
            props["s3.endpoint"] = s3.endpoint
        if s3.access_key_id:
            props["s3.access-key-id"] = s3.access_key_id
        if s3.secret_access_key:
            props["s3.secret-access-key"] = s3.secret_access_key.get_secret_value()
        props["s3.force-virtual-addressing"] = "false" if s3.path_style else "true"
        return props

    @property
    def catalog(self) -> Catalog:
        """The PyIceberg catalog, opened on first use (once, whichever thread asks first).

        Raises:
            CatalogError: the catalog cannot be reached or initialised.
        """
        if self._catalog is None:
            with self._catalog_lock:
                if self._catalog is None:
                    self._catalog = self._open_catalog()
        return self._catalog

    def warm_up(self) -> None:
        """Open the catalog on a background thread (once): importing PyIceberg takes one to two
        seconds, which a run spends better while DuckDB reads its first files."""
        # No lock here: the catalog's is held while it opens, and this must never wait for it.
        if self._catalog is not None or self._warming:
            return
        self._warming = True

        def open_quietly() -> None:
            try:
                self.catalog  # noqa: B018 - opened for its side effect
            except Exception:  # whoever needs the catalog next reports the error
                log.debug("warming up the catalog failed", exc_info=True)

        threading.Thread(target=open_quietly, name="rat-catalog", daemon=True).start()

    def _open_catalog(self) -> Catalog:
        cfg = self.config.catalog
        props = {**self.io_properties(), **cfg.properties}
        try:
            if cfg.type == "sql":
                from ratatouille.storage.sqlcatalog import SqlCatalog

                warehouse = self.warehouse if self.is_s3 else f"file://{self.warehouse}"
                return SqlCatalog(cfg.name, uri=resolve_uri(cfg.uri, self.root), warehouse=warehouse, **props)
            from pyiceberg.catalog.rest import RestCatalog

            return RestCatalog(cfg.name, uri=cfg.uri, warehouse=self.warehouse, **props)
        except Exception as exc:  # the drivers raise anything from OSError to their own errors
            raise CatalogError(
                f"cannot open the {cfg.type} catalog at {_redact(cfg.uri)}: {exc}; "
                "check `catalog.uri` in ratatouille.yaml"
            ) from exc

    def close(self) -> None:
        """Release catalog connections (the SQL catalog keeps a connection pool)."""
        with self._catalog_lock:
            catalog, self._catalog, self._warming = self._catalog, None, False
        self._namespaces.clear()
        if catalog is not None:
            catalog.close()  # both SqlCatalog and RestCatalog have it

    def location(self, workspace: str, layer: str, name: str) -> str:
        """Where a table's files live (a staged table already lives where it will be published)."""
        return f"{self.warehouse}/{workspace}/{layer}/{final_name(name)}"

    def ensure_namespace(self, workspace: str, layer: str) -> None:
        """Create ``workspace.layer`` if it does not exist (safe when several writers race)."""
        if (workspace, layer) in self._namespaces:
            return
        with self._lock:
            try:
                self.catalog.create_namespace_if_not_exists((workspace, layer))
            except Exception:
                # Another thread or process created it between the check and the insert.
                if (workspace, layer) not in {tuple(n) for n in self.catalog.list_namespaces(workspace)}:
                    raise
            self._namespaces.add((workspace, layer))

    def list_tables(self, workspace: str | None = None, *, stages: bool = False) -> list[TableRef]:
        """Every table (of one workspace, or all), with its current metadata location; with
        ``stages``, also the hidden tables runs build before they publish them.

        Raises:
            CatalogError: the catalog cannot be read.
        """
        if self.config.catalog.type == "sql":
            refs = self._list_sql()
        else:
            refs = self._list_generic()
        visible = (r for r in refs if stages or not r.name.startswith(STAGE_PREFIX))
        return sorted((r for r in visible if workspace is None or r.workspace == workspace), key=lambda r: r.qualified)

    def _list_sql(self) -> list[TableRef]:
        uri = resolve_uri(self.config.catalog.uri, self.root)
        if uri.startswith("sqlite:///"):
            return self._list_sqlite(uri.removeprefix("sqlite:///"))
        catalog: Any = self.catalog
        query = "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables WHERE catalog_name = ?"
        try:
            rows = catalog.db.rows(query, (self.config.catalog.name,))
        except Exception as exc:  # the driver's own errors (psycopg, sqlite3)
            raise CatalogError(f"cannot read the catalog: {exc}") from exc
        return _refs(rows)

    def _list_sqlite(self, path: str) -> list[TableRef]:
        """List tables with the standard library: importing SQLAlchemy and PyIceberg's catalog
        costs 0.5 s, too much for `rat query`."""
        import sqlite3

        if not Path(path).exists():
            return []
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
                rows = conn.execute(
                    "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables WHERE catalog_name = ?",
                    (self.config.catalog.name,),
                ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise CatalogError(f"cannot read the catalog {path}: {exc}") from exc
        return _refs(rows)

    def _list_generic(self) -> list[TableRef]:
        refs = []
        for namespace in self.catalog.list_namespaces():
            for child in self.catalog.list_namespaces(namespace) or [namespace]:
                if len(child) != 2:
                    continue
                for ident in self.catalog.list_tables(child):
                    table = self.catalog.load_table(ident)
                    refs.append(TableRef(child[0], child[1], ident[-1], table.metadata_location))
        return refs

    def load(self, workspace: str, layer: str, name: str) -> Table:
        """Load a table.

        Raises:
            TableNotFoundError: it does not exist (the message lists the tables that do).
        """
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.catalog.load_table((workspace, layer, name))
        except NoSuchTableError:
            existing = [r.qualified for r in self.list_tables()]
            raise TableNotFoundError(f"{workspace}.{layer}.{name}", existing) from None

    def exists(self, workspace: str, layer: str, name: str) -> bool:
        """Whether the table exists."""
        return bool(self.catalog.table_exists((workspace, layer, name)))

    def drop(self, workspace: str, layer: str, name: str) -> None:
        """Drop a table from the catalog (its files stay until cleaned)."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            self.catalog.drop_table((workspace, layer, name))
        except NoSuchTableError:
            existing = [r.qualified for r in self.list_tables()]
            raise TableNotFoundError(f"{workspace}.{layer}.{name}", existing) from None


def _refs(rows: Iterable[Sequence[Any]]) -> list[TableRef]:
    refs = []
    for namespace, name, location in rows:
        parts = str(namespace).split(".")
        if len(parts) == 2:
            refs.append(TableRef(parts[0], parts[1], str(name), location))
    return refs


def _redact(uri: str) -> str:
    """Hide a password in a connection URL."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", uri)
