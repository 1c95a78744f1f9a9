"""PostgreSQL and MySQL/MariaDB sources (``type: postgres`` / ``type: mysql``): a table or a query,
as a full snapshot or incrementally by a cursor column. See ``reader`` for how rows are read."""

from __future__ import annotations

from ratatouille.connectors.database.config import ConnectionInfo, DatabaseSourceConfig, IncrementalConfig
from ratatouille.connectors.database.reader import DatabaseConnector

__all__ = ["ConnectionInfo", "DatabaseConnector", "DatabaseSourceConfig", "IncrementalConfig"]
