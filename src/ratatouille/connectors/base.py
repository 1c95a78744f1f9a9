"""What a connector is: something that reads a source and yields Arrow batches for bronze.

A connector reads; it never writes tables or state. The ingestion layer (``ratatouille.ingest``)
writes every ``Output`` into ``bronze`` as one atomic commit per output, and saves the
connector's new ``state`` only after those commits succeed, so a crash re-reads rather than
loses. Connectors live in folders with the same file names (``config.py``: the pydantic
config of the ``sources/*.yaml`` file; ``reader.py``: the ``Connector`` subclass), and are
found by ``registry.py``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import pyarrow as pa


class SourceConfig(BaseModel):
    """Keys every ``sources/<name>.yaml`` has; each connector's config extends it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: str
    description: str = ""
    owner: str = ""
    tags: list[str] = []
    schedule: str | None = None
    on_error: Literal["quarantine", "fail"] = "quarantine"
    schema_drift: Literal["evolve", "fail"] = "evolve"


@dataclass
class Output:
    """One table's worth of rows from a read.

    Attributes:
        table: suffix of the bronze table: ``""`` for ``bronze.<source>``, else
            ``bronze.<source>_<table>`` (REST resources, nested child tables).
        batches: the rows, streamed; consumed exactly once.
        mode: ``append``, ``merge`` (by ``primary_key``) or ``replace`` (a full snapshot).
        primary_key: key columns for ``merge``.
        quarantine: rows that could not be read, each with at least ``_source``,
            ``_line`` (or another locator), ``_raw`` and ``_reason`` columns.
        sql: when set, a DuckDB ``SELECT`` (on the connection the connector was given) that yields
            the rows; the consumer runs it to completion first and then exhausts ``batches``,
            which holds only what the query could not produce (e.g. rows read again).
    """

    table: str
    batches: Iterator[pa.RecordBatch]
    schema: pa.Schema | None = None
    mode: Literal["append", "merge", "replace"] = "append"
    primary_key: list[str] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    sql: str | None = None


@dataclass
class ReadContext:
    """What a connector gets for one read."""

    state: Mapping[str, Any]
    log: logging.Logger
    batch_rows: int = 100_000


class Connector(ABC):
    """Base class of every connector."""

    config_class: ClassVar[type[SourceConfig]]

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.new_state: dict[str, Any] = {}

    @abstractmethod
    def read(self, ctx: ReadContext) -> Iterator[Output]:
        """Yield the outputs of one read. After the iterator is exhausted, ``self.new_state``
        holds the state to save once every output is committed.

        Raises:
            ConnectorError: the source cannot be reached or read; the message says what to fix
                and never contains credentials.
        """
