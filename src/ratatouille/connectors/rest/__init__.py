"""REST API sources (``type: rest``): dlt's REST client, pages spooled to Arrow, nested JSON to child tables.

``config.py`` is the source file's schema, ``client.py`` the HTTP side (auth, pagination,
retries, error messages without credentials), ``normalize.py`` records to typed rows, and
``reader.py`` the ``Connector``. dlt, requests and pyarrow are imported only when a read runs.
"""
