"""The REST connector: each resource of a ``type: rest`` source becomes bronze tables.

For each resource, in the order of the source file, the read fetches every page, splits the
records into rows of the resource's table and of its nested child tables
(``<resource>__<field>``, see ``normalize``), and spools the rows to a temporary directory.
When the last page is in, it yields one ``Output`` per table, whose batches stream from the
spool with one schema inferred over all pages. A failure on any page raises before the
resource's first output, so a resource is read completely or not at all.

Incremental resources keep ``{"cursor": <largest value seen>, "boundary": [...]}`` in the
state; the next read sends the cursor as the ``param`` query parameter. ``boundary`` holds
digests of the records that carry exactly the largest cursor value, so an API whose filter is
inclusive (``>=``) does not make an append-only table ingest them twice.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from ratatouille.connectors.base import Connector, Output, ReadContext, SourceConfig
from ratatouille.connectors.rest.client import RestHttp
from ratatouille.connectors.rest.config import IncrementalConfig, ResourceConfig, RestSourceConfig
from ratatouille.connectors.rest.normalize import Normaliser, ResourceSpool

MAX_BOUNDARY = 10_000


class RestConnector(Connector):
    """Reads the resources of a REST API source."""

    config_class: ClassVar[type[SourceConfig]] = RestSourceConfig

    def read(self, ctx: ReadContext) -> Iterator[Output]:
        """Yield the tables of every resource; ``new_state`` holds the cursors once exhausted.

        Consume each output's batches before asking for the next output: a resource's spool is
        removed when the read moves on.

        Raises:
            ConnectorError: the API refused the credentials, failed after the retries, could not be
                reached, or answered something that does not fit the source file. The message names
                the source and resource and never contains credentials.
        """
        config = self.config
        assert isinstance(config, RestSourceConfig)
        self.new_state = copy.deepcopy(dict(ctx.state))
        http = RestHttp(config, ctx.log)
        try:
            for resource in config.resources:
                yield from self._read_resource(http, config, resource, ctx)
        finally:
            http.close()

    def _read_resource(
        self, http: RestHttp, config: RestSourceConfig, resource: ResourceConfig, ctx: ReadContext
    ) -> Iterator[Output]:
        cursor = None
        params: dict[str, Any] = dict(resource.params)
        if resource.incremental is not None:
            cursor = CursorTracker(resource.incremental, ctx.state.get(resource.name))
            if cursor.last is not None:
                params[resource.incremental.param] = cursor.last
        normaliser = Normaliser(resource.name, resource.primary_key, resource.nested)
        with tempfile.TemporaryDirectory(prefix=f"rat-rest-{config.name}-{resource.name}-") as directory:
            spool = ResourceSpool(Path(directory))
            pages = records = skipped = 0
            try:
                for page in http.pages(resource, params):
                    pages += 1
                    for record in page:
                        if cursor is not None and not cursor.accept(record):
                            skipped += 1
                            continue
                        records += 1
                        normaliser.split(record, spool.add)
            finally:
                spool.close()
            ctx.log.info(
                "source `%s` resource `%s`: %s records in %s pages%s",
                config.name,
                resource.name,
                records,
                pages,
                f" ({skipped} already read at the cursor boundary)" if skipped else "",
            )
            if cursor is not None:
                state = cursor.state()
                if state:
                    self.new_state[resource.name] = state
            for name, rows in spool.tables.items():
                if rows.rows == 0:
                    continue
                key = normaliser.keys[name]
                yield Output(
                    table=name,
                    batches=rows.batches(ctx.batch_rows),
                    schema=rows.schema(),
                    mode=key.mode,
                    primary_key=list(key.primary_key),
                )


def cursor_order(value: Any) -> tuple[int, Any]:
    """A sort key for cursor values: numbers, then ISO timestamps (as instants), then text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (1, parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    return (2, str(value))


def record_digest(record: Any) -> str:
    """A stable digest of a record's content."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class CursorTracker:
    """The incremental cursor of one resource during a read."""

    def __init__(self, config: IncrementalConfig, previous: Any) -> None:
        self.path = config.cursor.split(".")
        previous = previous if isinstance(previous, Mapping) else {}
        saved = previous.get("cursor")
        self.last: Any = saved if saved is not None else config.initial
        self.seen: set[str] = set(previous.get("boundary") or []) if saved is not None else set()
        self.max: Any = saved
        self.boundary: set[str] = set(self.seen)

    def value(self, record: Any) -> Any:
        """The cursor value of a record, or ``None``."""
        for part in self.path:
            if not isinstance(record, dict):
                return None
            record = record.get(part)
        return record

    def accept(self, record: Any) -> bool:
        """Track the record's cursor; ``False`` when it was read before, at the boundary."""
        value = self.value(record)
        if value is None:
            return True
        order = cursor_order(value)
        digest = None
        if self.last is not None and order == cursor_order(self.last):
            digest = record_digest(record)
            if digest in self.seen:
                return False
        if self.max is None or order > cursor_order(self.max):
            self.max = value
            self.boundary = {digest or record_digest(record)}
        elif order == cursor_order(self.max) and len(self.boundary) < MAX_BOUNDARY:
            self.boundary.add(digest or record_digest(record))
        return True

    def state(self) -> dict[str, Any]:
        """The state to save: the largest cursor and the digests of its records."""
        if self.max is None:
            return {}
        return {"cursor": self.max, "boundary": sorted(self.boundary)}
