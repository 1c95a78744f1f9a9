"""PostgreSQL and MySQL/MariaDB sources (``type: postgres`` / ``type: mysql``): a table or a query,
as a full snapshot or incrementally by a cursor column. See ``reader`` for how rows are read.

Nothing is imported here, so that loading a project's sources (``config``) does not import the reader.
"""
