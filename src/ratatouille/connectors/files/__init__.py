"""Files in the landing zone (CSV, TSV, JSON, NDJSON, Parquet, Excel) as a source: ``type: files``.

``config.py`` is the source file's schema, ``reader.py`` the connector, ``formats.py`` one reader
per format. Nothing is imported here, so that loading a project's sources (``config``) does not
import the readers.
"""
