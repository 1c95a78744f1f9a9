"""Result formats of ``/api/v1/query``: choosing one, and encoding Arrow batches as they stream."""

from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ratatouille.api.errors import NotAcceptableError

if TYPE_CHECKING:
    import pyarrow as pa

MEDIA_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
_ALIASES = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/json-seq": "ndjson",
    "text/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/vnd.apache.arrow.stream": "arrow",
    "application/vnd.apache.arrow.file": "arrow",
}
DEFAULT_FORMAT = "json"


def negotiate(explicit: str | None, accept: str | None) -> str:
    """The format to answer in: ``?format=`` wins, then the ``Accept`` header (by q), else JSON.

    Raises:
        NotAcceptableError: ``Accept`` names only types the API cannot produce.
    """
    if explicit:
        return explicit
    if not accept or not accept.strip():
        return DEFAULT_FORMAT
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media in ("*/*", "application/*", "text/*", ""):
            found = DEFAULT_FORMAT if media != "text/*" else "csv"
        else:
            found = _ALIASES.get(media, "")
        if found:
            choices.append((-quality, index, found))
    if not choices:
        raise NotAcceptableError(
            f"cannot answer in `{accept}`; ask for one of {', '.join(MEDIA_TYPES.values())} "
            "(or pass ?format=json|csv|ndjson|parquet|arrow)"
        )
    return min(choices)[2]


def media_type(fmt: str) -> str:
    """The Content-Type of a format."""
    media = MEDIA_TYPES[fmt]
    return f"{media}; charset=utf-8" if media.startswith("text/") else media


# -- JSON values --------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Decimal | timedelta):
        return str(value)
    return str(value)


def plain(value: Any) -> Any:
    """A JSON-ready value: decimals, times, UUIDs as strings, bytes as base64, NaN/inf as null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return _default(value)


def _dumps(row: dict[str, Any]) -> str:
    try:
        return json.dumps(row, default=_default, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError:  # NaN or infinity somewhere: not JSON
        return json.dumps(plain(row), separators=(",", ":"), ensure_ascii=False)


def json_rows(batch: pa.RecordBatch) -> list[str]:
    """Each row of a batch as a JSON object."""
    return [_dumps(row) for row in batch.to_pylist()]


# -- encoders -----------------------------------------------------------------------------


class _Sink:
    """A write-only file that hands over what was written since the last ``take``."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.chunks.append(chunk)
        return len(chunk)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


class Encoder:
    """Turns a stream of Arrow batches into the bytes of one format, piece by piece."""

    def __init__(self, fmt: str, columns: list[tuple[str, str]], schema: pa.Schema) -> None:
        self.fmt = fmt
        self.columns = columns
        self.schema = schema
        self._sink = _Sink()
        self._writer: Any = None
        self._first = True

    def start(self) -> bytes:
        """The bytes before the first row (header, schema)."""
        if self.fmt == "json":
            columns = [{"name": n, "type": t} for n, t in self.columns]
            return b'{"columns":' + json.dumps(columns).encode() + b',"rows":['
        if self.fmt == "csv":
            import pyarrow.csv as pacsv

            self._writer = pacsv.CSVWriter(self._sink, self.schema)
        elif self.fmt == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self._sink, self.schema, compression="zstd")
        elif self.fmt == "arrow":
            import pyarrow.ipc as ipc

            self._writer = ipc.new_stream(self._sink, self.schema)
        return self._sink.take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        """The bytes of one batch of rows."""
        if batch.num_rows == 0:
            return b""
        if self.fmt == "json":
            text = ",".join(json_rows(batch))
            prefix = "" if self._first else ","
            self._first = False
            return (prefix + text).encode()
        if self.fmt == "ndjson":
            return ("\n".join(json_rows(batch)) + "\n").encode()
        self._writer.write_batch(batch)
        return self._sink.take()

    def finish(self, rows: int, truncated: bool) -> bytes:
        """The bytes after the last row (footer, end-of-stream marker, counts)."""
        if self.fmt == "json":
            return f'],"row_count":{rows},"truncated":{"true" if truncated else "false"}}}'.encode()
        if self._writer is not None:
            self._writer.close()
        return self._sink.take()
