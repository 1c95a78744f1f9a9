"""Files in the landing zone (CSV, TSV, JSON, NDJSON, Parquet, Excel) as a source: ``type: files``."""

from ratatouille.connectors.files.config import FilesSourceConfig
from ratatouille.connectors.files.reader import FilesConnector

__all__ = ["FilesConnector", "FilesSourceConfig"]
