"""Reading one landing file of each format with DuckDB, streamed, with its bad rows set apart.

Every reader opens a file on a DuckDB cursor, exposes the Arrow ``schema`` of its output and
streams ``batches()`` of good rows (the file's columns plus the constant columns of
:class:`FileSpec`). Rows that cannot be read land in ``problems`` as :class:`Bad` records; the
list is complete once ``batches()`` is exhausted. A file that cannot be read at all raises
:class:`UnreadableFile` from ``open()``, before any row is produced.

How each format finds its bad rows:

* CSV/TSV: DuckDB's ``store_rejects`` (a rejects table with the byte offset, the raw line and
  the reason of each rejected row). Line numbers are physical lines, counted by streaming the
  file once in Python, only when it had rejects (DuckDB's own ``line`` counts records). A
  quoted value that never closes makes DuckDB swallow the following lines into one rejected
  record: the first line is quarantined and the swallowed lines are read again on their own.
* NDJSON: ``read_json(ignore_errors=true)`` turns a malformed line into an all-NULL row; such
  rows are held back and, for files that had any, the lines are read in Python to tell
  malformed lines and non-objects (quarantined) from records whose values are all null (kept)
  and from valid lines DuckDB lost to a malformed line before them (read again on their own).
* JSON (an array or a stream of documents): a file DuckDB cannot parse is unreadable as a whole.
* Parquet: a file whose footer or schema cannot be read is unreadable as a whole.
* Excel: the sheet is read as text and converted in SQL, so a cell that does not fit its column
  type sends its row to quarantine rather than turning NULL.
* Explicit ``columns`` types (all formats): a value that does not convert sends its row to
  quarantine, with the column and the value in the reason.
"""

from __future__ import annotations

import codecs
import html
import json
import logging
import re
import uuid
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.connectors.files.config import CsvOptions, ExcelOptions, JsonOptions
from ratatouille.engine import literal

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from ratatouille.storage.files import Landing

_CHUNK = 1 << 20
_TEXT_CAP = 1 << 20  # longest raw line kept in a quarantine record
_CSV_LINE_CAP = 10_000  # DuckDB truncates csv_line in its rejects table at this length
_MAX_RECOVERY_DEPTH = 50
_BAD = "__rat_bad"
_RAW = "__rat_raw"
_ORD = "__rat_n"
_FILE = "__rat_file"
_TEMPORAL = re.compile(r"date|time|interval", re.IGNORECASE)
_CSV_ERRORS = {
    "CAST": "bad value",
    "MISSING COLUMNS": "too few fields",
    "TOO MANY COLUMNS": "too many fields",
    "UNQUOTED VALUE": "bad quoting",
    "LINE SIZE OVER MAXIMUM": "line too long",
    "INVALID ENCODING": "invalid encoding",
    "INVALID STATE": "invalid CSV",
}


class UnreadableFile(Exception):
    """The file cannot be read at all (not the format it claims, corrupt, missing sheet...)."""


class _EmptyFile(Exception):
    """The file holds nothing but whitespace: no rows, no schema, nothing to quarantine."""


def is_blank(landing: Landing, path: str, encoding: str = "utf-8") -> bool:
    """Whether a file holds nothing but whitespace (read until the first other byte)."""
    for chunk in open_view(landing, path, encoding, chunk_size=1 << 16):
        if chunk.strip(b" \t\r\n\x00\xef\xbb\xbf\xfe\xff"):
            return False
    return True


@dataclass(frozen=True)
class Bad:
    """One row (or region) that could not be read.

    Attributes:
        line: physical line (CSV, NDJSON), sheet row (Excel) or row number (Parquet), 1-based;
            ``None`` where the format has no such locator.
        raw: the raw text of the row, as found in the file (or its values as JSON).
        reason: why it was rejected.
    """

    line: int | None
    raw: str | None
    reason: str


@dataclass
class FileSpec:
    """What every reader needs to know about the file it reads.

    Attributes:
        path: the file (absolute local path or ``s3://``), as reported in ``_source_file``.
        extras: constant columns appended to every row, in order (name, value: str, datetime or None).
        columns: explicit DuckDB types by column name (canonical names).
        batch_rows: rows per Arrow batch.
        landing: opens the file in Python (line accounting, Excel sheet extent).
        temp_dir: where recovered CSV regions are written while they are read again.
        log: where warnings go.
        recover: read past bad rows (``on_error: quarantine``); when false, stop at the first one.
        defer: CSV only: ``open()`` binds the file without reading it and leaves the query in
            the reader's ``sql``; the caller runs it on the reader's cursor (e.g. inside a
            ``COPY``), then exhausts ``batches()``, which yields only the rows read again after a
            runaway quote and fills ``problems``. No Arrow round trip for the bulk of the rows.
    """

    path: str
    extras: list[tuple[str, Any]]
    columns: dict[str, str]
    batch_rows: int
    landing: Landing
    temp_dir: Path
    log: logging.Logger
    recover: bool = True
    defer: bool = False

    def extras_sql(self) -> str:
        """``, 'v' AS "name", ...`` for the constant columns."""
        return "".join(f", {_constant(value)} AS {quote_ident(name)}" for name, value in self.extras)

    def column_type(self, name: str) -> str | None:
        """The explicit type of a column (exact name first, then ignoring case)."""
        if name in self.columns:
            return self.columns[name]
        folded = {key.lower(): value for key, value in self.columns.items()}
        return folded.get(name.lower())


def quote_ident(name: str) -> str:
    """A SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _error_text(exc: BaseException) -> str:
    """A DuckDB error without its ``Invalid Input Error:`` prefix and SQL excerpt, on one line."""
    text = str(exc).strip().split("\nLINE ", 1)[0]
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return re.sub(r"^[A-Za-z ]+ Error: ", "", text)[:2000]


class FileRead(ABC):
    """A file being read: ``schema``, ``batches()`` and, once they are exhausted, ``problems``."""

    def __init__(self, spec: FileSpec, cur: duckdb.DuckDBPyConnection) -> None:
        self.spec = spec
        self.cur = cur
        self.problems: list[Bad] = []
        self.schema: pa.Schema | None = None

    @property
    def names(self) -> list[str]:
        """The output's column names (the file's, then the constant columns); none for an empty file."""
        return self.schema.names if self.schema is not None else []

    @abstractmethod
    def open(self) -> None:
        """Bind the file and start reading it.

        Raises:
            UnreadableFile: the file cannot be read at all.
        """

    @abstractmethod
    def batches(self) -> Iterator[pa.RecordBatch]:
        """The good rows, streamed."""


# --- the file as UTF-8 bytes, for line accounting ---------------------------------------------------------------


def open_view(landing: Landing, path: str, encoding: str = "utf-8", chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """The file's content (decompressed, transcoded to UTF-8) in chunks: the bytes DuckDB's offsets refer to."""
    decoder = None if encoding == "utf-8" else codecs.getincrementaldecoder(encoding)(errors="replace")
    with _open_stream(landing, path) as stream:
        while True:
            chunk = stream.read(chunk_size)
            if not chunk:
                break
            if decoder is not None:
                chunk = decoder.decode(chunk).encode("utf-8")
            yield bytes(chunk)
    if decoder is not None:
        tail = decoder.decode(b"", final=True).encode("utf-8")
        if tail:
            yield tail


_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4", ".br")


def _open_stream(landing: Landing, path: str) -> Any:
    """A binary stream of the file, decompressed; plain local files without importing pyarrow."""
    if not path.startswith("s3://") and not path.lower().endswith(_COMPRESSED):
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's ``with``
    fs, inner = landing.filesystem(path)
    return fs.open_input_stream(inner, compression="detect")


def _text(data: bytes | bytearray) -> str:
    return bytes(data[:_TEXT_CAP]).decode("utf-8", errors="replace").rstrip("\r")


def locate_lines(chunks: Iterator[bytes], offsets: Sequence[int]) -> dict[int, tuple[int, str]]:
    """Physical line number and text of the line at each byte offset of DuckDB's rejects.

    An offset may point at the ``\\n`` that ends the previous line (DuckDB does so after a
    ``\\r\\n``); the line is then the next one.

    Returns:
        For each offset found in the file: (1-based line number, the line's text without its line break).
    """
    wanted = sorted(set(offsets))
    result: dict[int, tuple[int, str]] = {}
    pending: list[tuple[int, bytearray]] = []
    index = 0
    base = 0
    newlines = 0
    for chunk in chunks:
        still: list[tuple[int, bytearray]] = []
        for off, buf in pending:
            cut = chunk.find(b"\n")
            if cut < 0:
                buf += chunk[: max(0, _TEXT_CAP - len(buf))]
                still.append((off, buf))
            else:
                buf += chunk[: min(cut, max(0, _TEXT_CAP - len(buf)))]
                result[off] = (result[off][0], _text(buf))
        pending = still
        end = base + len(chunk)
        while index < len(wanted) and wanted[index] < end:
            off = wanted[index]
            index += 1
            k = off - base
            line = newlines + chunk.count(b"\n", 0, k + 1) + 1
            start = k + 1 if chunk[k : k + 1] == b"\n" else k
            cut = chunk.find(b"\n", start)
            if cut >= 0:
                result[off] = (line, _text(chunk[start:cut]))
            else:
                result[off] = (line, "")
                pending.append((off, bytearray(chunk[start : start + _TEXT_CAP])))
        newlines += chunk.count(b"\n")
        base = end
    for off, buf in pending:
        result[off] = (result[off][0], _text(buf))
    return result


# States of the region scanner.
_FIELD, _UNQUOTED, _QUOTED, _AFTER_QUOTE, _ESCAPED, _TO_EOL = range(6)


def unquoted_region_end(chunks: Iterator[bytes], start: int, delimiter: int, quote: int, escape: int) -> int | None:
    """Where DuckDB's rejected record with a runaway quoted value ends.

    Replays DuckDB's CSV state machine from the record's start: a value opened by a quote runs,
    over line breaks, until a closing quote; if what follows is not a delimiter or a line break
    the record is in error and ends with that physical line. A quote left open runs to the end.

    Returns:
        The offset just past the record (past its final line break, or the end of the file), or
        ``None`` if the record ends without such an error (nothing to recover).
    """
    state = _FIELD
    base = 0
    specials = re.compile(b"[" + re.escape(bytes([delimiter])) + b"\r\n]")
    for chunk in chunks:
        end = base + len(chunk)
        if end <= start:
            base = end
            continue
        i = max(0, start - base)
        n = len(chunk)
        while i < n:
            if state == _QUOTED:
                j = chunk.find(bytes([quote]), i)
                if escape != quote:
                    e = chunk.find(bytes([escape]), i)
                    if e >= 0 and (j < 0 or e < j):
                        state, i = _ESCAPED, e + 1
                        continue
                if j < 0:
                    i = n
                    break
                state, i = _AFTER_QUOTE, j + 1
                continue
            if state == _TO_EOL:
                j = chunk.find(b"\n", i)
                if j < 0:
                    i = n
                    break
                return base + j + 1
            c = chunk[i]
            if state == _ESCAPED:
                state, i = _QUOTED, i + 1
            elif state == _AFTER_QUOTE:
                if c == quote and escape == quote:
                    state, i = _QUOTED, i + 1
                elif c == delimiter:
                    state, i = _FIELD, i + 1
                elif c in (10, 13):
                    return None
                else:
                    state = _TO_EOL
            elif state == _FIELD:
                if c == quote:
                    state, i = _QUOTED, i + 1
                elif c in (10, 13):
                    return None
                else:
                    state = _UNQUOTED
            else:  # _UNQUOTED
                m = specials.search(chunk, i)
                if m is None:
                    i = n
                    break
                if chunk[m.start()] == delimiter:
                    state, i = _FIELD, m.start() + 1
                else:
                    return None
        base = end
    return base if state in (_QUOTED, _ESCAPED, _TO_EOL, _AFTER_QUOTE) else None


def copy_range(chunks: Iterator[bytes], begin: int, end: int, target: Path) -> None:
    """Write bytes ``[begin, end)`` of the view to ``target``."""
    base = 0
    with target.open("wb") as out:
        for chunk in chunks:
            stop = base + len(chunk)
            if stop > begin and base < end:
                out.write(chunk[max(0, begin - base) : min(len(chunk), end - base)])
            if stop >= end:
                break
            base = stop


def first_newline_after(chunks: Iterator[bytes], start: int) -> int | None:
    """Offset of the first ``\\n`` at or after ``start``."""
    base = 0
    for chunk in chunks:
        stop = base + len(chunk)
        if stop > start:
            j = chunk.find(b"\n", max(0, start - base))
            if j >= 0:
                return base + j
        base = stop
    return None


# --- splitting batches into good rows and bad ones --------------------------------------------------------------


def _cast_sql(name: str, target: str) -> tuple[str, str]:
    """``TRY_CAST`` of a column and the reason it failed (NULL when it did not)."""
    col = quote_ident(name)
    converted = f"TRY_CAST({col} AS {target})"
    reason = (
        f"CASE WHEN {col} IS NOT NULL AND {converted} IS NULL THEN "
        f"{literal(f'column {name}: cannot convert ')} || left(CAST({col} AS VARCHAR), 200) || "
        f"{literal(f' to {target}')} END"
    )
    return converted, reason


def _json_object_sql(names: Sequence[str]) -> str:
    if not names:
        return "CAST('{}' AS VARCHAR)"
    args = ", ".join(f"{literal(n)}, {quote_ident(n)}" for n in names)
    return f"CAST(json_object({args}) AS VARCHAR)"


def _reason_sql(reasons: Sequence[str]) -> str:
    if not reasons:
        return "CAST(NULL AS VARCHAR)"
    return f"NULLIF(concat_ws('; ', {', '.join(reasons)}), '')"


@dataclass
class _Held:
    """Rows held back from a batch: their locator, reason (None: all-NULL row) and raw text."""

    ordinals: list[int] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    raws: list[str | None] = field(default_factory=list)


def _split(
    batch: pa.RecordBatch,
    *,
    keep: Sequence[str],
    null_check: Sequence[str],
    held: _Held,
) -> pa.RecordBatch | None:
    """Keep the good rows of ``batch`` (columns ``keep``); hold back the others.

    A row is bad when its ``__rat_bad`` column is set, or (for ``null_check`` columns) when all
    of them are NULL. Held rows need ``__rat_n`` (their locator) in the batch.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = batch.schema.names
    bad_mask = None
    if _BAD in names:
        bad_mask = pc.is_valid(batch.column(_BAD))
    null_mask = None
    if null_check:
        null_mask = pc.is_null(batch.column(null_check[0]))
        for name in null_check[1:]:
            null_mask = pc.and_(null_mask, pc.is_null(batch.column(name)))
    masks = [m for m in (bad_mask, null_mask) if m is not None]
    out = pa.RecordBatch.from_arrays([batch.column(n) for n in keep], names=list(keep))
    if not masks:
        return out
    held_mask = masks[0] if len(masks) == 1 else pc.or_(masks[0], masks[1])
    if not pc.any(held_mask).as_py():
        return out
    rows = batch.filter(held_mask)
    ordinals = rows.column(_ORD).to_pylist()
    reasons = rows.column(_BAD).to_pylist() if _BAD in names else [None] * rows.num_rows
    raws = rows.column(_RAW).to_pylist() if _RAW in names else [None] * rows.num_rows
    held.ordinals.extend(int(o) for o in ordinals)
    held.reasons.extend(reasons)
    held.raws.extend(raws)
    good = out.filter(pc.invert(held_mask))
    return good if good.num_rows else None


def _strip_names(names: Sequence[str]) -> list[str]:
    """Header names without surrounding whitespace, made unique (``a``, ``a_1``)."""
    seen: set[str] = set()
    result: list[str] = []
    for index, raw in enumerate(names):
        name = raw.strip() or f"column{index}"
        candidate, n = name, 1
        while candidate in seen:
            candidate = f"{name}_{n}"
            n += 1
        seen.add(candidate)
        result.append(candidate)
    return result


# --- CSV / TSV -----------------------------------------------------------------------------------------------------


class CsvFile(FileRead):
    """A CSV or TSV file, read by ``read_csv`` with the dialect fixed and the types sniffed once."""

    _counter = 0

    def __init__(
        self,
        spec: FileSpec,
        cur: duckdb.DuckDBPyConnection,
        options: CsvOptions,
        *,
        read_path: str | None = None,
        header: bool | None = None,
        skip: int | None = None,
        encoding: str | None = None,
        columns: list[tuple[str, str]] | None = None,
        formats: dict[str, str] | None = None,
        line_offset: int = 0,
        depth: int = 0,
    ) -> None:
        super().__init__(spec, cur)
        self.options = options
        self.read_path = read_path or spec.path
        self.header = options.header if header is None else header
        self.skip = options.skip_rows if skip is None else skip
        self.encoding = encoding or options.encoding
        self.columns = columns
        self.formats = dict(formats or {})
        self.line_offset = line_offset
        self.depth = depth
        CsvFile._counter += 1
        self.rejects = f"__rat_rejects_{CsvFile._counter}"
        self.scans = f"__rat_scans_{CsvFile._counter}"
        self.sql: str | None = None
        self.shared: _SharedRejects | None = None  # read by one scan with other files (``combine``)
        self._bound: list[str] = []
        self._reader: pa.RecordBatchReader | None = None

    @property
    def names(self) -> list[str]:
        return self._bound if self.spec.defer else super().names

    # -- options ----------------------------------------------------------------------------------

    def _dialect_sql(self, *, lenient: bool = False) -> str:
        """The dialect as ``read_csv`` arguments; ``lenient`` leaves a default escape to the sniffer."""
        o = self.options
        parts = [
            f"header = {str(self.header).lower()}",
            f"skip = {self.skip}",
            f"delim = {literal(o.delimiter)}",
            f"quote = {literal(o.quote)}",
            f"encoding = {literal(self.encoding)}",
            f"decimal_separator = {literal(o.decimal_separator)}",
        ]
        if not (lenient and o.escape is None):
            parts.append(f"escape = {literal(o.escape_char if o.quote else '')}")
        if lenient:
            parts.append("strict_mode = false")
        if o.null_values is not None:
            parts.append("nullstr = [" + ", ".join(literal(v) for v in o.null_values) + "]")
        return ", ".join(parts)

    def _format_sql(self) -> str:
        o = self.options
        date_format = o.date_format or self.formats.get("date")
        timestamp_format = o.timestamp_format or self.formats.get("timestamp")
        parts = []
        if date_format:
            parts.append(f", dateformat = {literal(date_format)}")
        if timestamp_format:
            parts.append(f", timestampformat = {literal(timestamp_format)}")
        return "".join(parts)

    # -- schema -----------------------------------------------------------------------------------

    def _sniff(self) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """Column names and types: DuckDB's sniffer with the dialect fixed, explicit types on top."""
        import duckdb

        path = literal(self.read_path)
        rest = f", sample_size = {self.options.sample_size}, ignore_errors = true{self._format_sql()}"
        row = None
        for lenient in (False, True):
            try:
                row = self.cur.execute(
                    "SELECT Columns, DateFormat, TimestampFormat "
                    f"FROM sniff_csv({path}, {self._dialect_sql(lenient=lenient)}{rest})"
                ).fetchone()
                break
            except duckdb.Error as exc:
                if lenient and is_blank(self.spec.landing, self.read_path, self.encoding):
                    raise _EmptyFile from exc
                if lenient:
                    self.spec.log.warning(
                        "%s: DuckDB cannot sniff the column types (%s); reading every column as text",
                        self.spec.path,
                        _first_line(exc),
                    )
                else:
                    self.spec.log.info("%s: sniffing again, leniently: %s", self.spec.path, _first_line(exc))
        formats: dict[str, str] = {}
        if row is not None:
            names = [str(c["name"]) for c in row[0]]
            types = [str(c["type"]) for c in row[0]]
            if row[1]:
                formats["date"] = str(row[1])
            if row[2]:
                formats["timestamp"] = str(row[2])
        else:
            names = self._header_names()
            types = ["VARCHAR"] * len(names)
        if not names:
            raise UnreadableFile("no columns found (is the file empty, or is the delimiter right?)")
        names = _strip_names(names)
        columns = [(name, self.spec.column_type(name) or kind) for name, kind in zip(names, types, strict=True)]
        self._warn_missing(names)
        return columns, formats

    def _warn_missing(self, names: list[str]) -> None:
        missing = [c for c in self.spec.columns if c.lower() not in {n.lower() for n in names}]
        if missing:
            self.spec.log.warning("%s: typed columns not in the file: %s", self.spec.path, ", ".join(missing))

    def _typed_header(self) -> tuple[list[tuple[str, str]], dict[str, str]] | None:
        """Names from the header line, when ``columns`` types every one of them: no sniffing
        (DuckDB's sniffer costs ~30 ms a file). ``None`` when anything is left to infer, or a
        typed column is a date or time (the sniffer finds its format)."""
        if not self.spec.columns or any(_TEMPORAL.search(t) for t in self.spec.columns.values()):
            return None
        try:
            names = _strip_names([n.lstrip("\ufeff") for n in self._header_names()])
        except (OSError, UnicodeError, ValueError):
            return None
        typed = [self.spec.column_type(name) for name in names]
        if not names or any(t is None for t in typed):
            return None
        self._warn_missing(names)
        return [(name, str(t)) for name, t in zip(names, typed, strict=True)], {}

    def _header_names(self) -> list[str]:
        """Names from the header line read in Python (when DuckDB cannot sniff the file at all)."""
        import csv
        import io

        o = self.options
        text = b""
        for chunk in open_view(self.spec.landing, self.read_path, self.encoding, chunk_size=1 << 16):
            text += chunk
            if text.count(b"\n") > self.skip + 1 or len(text) > 4 * _CHUNK:
                break
        lines = text.decode("utf-8", errors="replace").splitlines()[self.skip :]
        if not lines:
            return []
        if len(o.delimiter) != 1:
            fields = lines[0].split(o.delimiter)
        else:
            reader = csv.reader(io.StringIO(lines[0]), delimiter=o.delimiter, quotechar=o.quote or None)
            fields = next(reader, [])
        if self.header:
            return fields
        return [f"column{i}" for i in range(len(fields))]

    # -- reading ----------------------------------------------------------------------------------

    def open(self) -> None:
        import duckdb

        typed = False
        if self.columns is None:
            try:
                header = self._typed_header()
                typed = header is not None
                self.columns, self.formats = header or self._sniff()
            except _EmptyFile:
                return
        self.sql = (
            f"SELECT *{self.spec.extras_sql()} FROM read_csv({literal(self.read_path)}, {self.read_args()}, "
            f"store_rejects = true, rejects_table = {literal(self.rejects)}, rejects_scan = {literal(self.scans)})"
        )
        try:
            if self.spec.defer and typed:
                # The header was read and every column is typed: nothing for a bind to find out.
                self._bound = [name for name, _ in self.columns] + [name for name, _ in self.spec.extras]
                return
            if self.spec.defer:
                self._bound = list(self.cur.sql(self.sql).columns)  # binding checks the file
                return
            self.cur.execute(self.sql)
            self._reader = self.cur.to_arrow_reader(self.spec.batch_rows)
        except duckdb.Error as exc:
            raise UnreadableFile(_error_text(exc)) from exc
        self.schema = self._reader.schema

    def read_args(self) -> str:
        """``read_csv`` arguments after the path: the dialect and the columns, fixed (no sniffing)."""
        assert self.columns is not None
        columns = "{" + ", ".join(f"{literal(n)}: {literal(t)}" for n, t in self.columns) + "}"
        return (
            f"auto_detect = false, {self._dialect_sql()}{self._format_sql()}, columns = {columns}, "
            "null_padding = false, strict_mode = true"
        )

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self.sql is None:  # an empty file
            return
        if self._reader is not None:  # else deferred: the caller ran ``sql`` itself
            yield from self._reader
        yield from self._collect_rejects()

    def _collect_rejects(self) -> Iterator[pa.RecordBatch]:
        import duckdb

        if self.shared is not None:  # one scan of several files (see ``combine``): this file's rejects only
            rows = self.shared.rows(self.cur, self.read_path)
        else:
            # DISTINCT: a query run twice (a retried write) records its rejects twice.
            query = f"SELECT DISTINCT {_REJECT_COLUMNS} FROM {self.rejects} AS r"
            try:
                rows = self.cur.execute(f"{query} ORDER BY r.line_byte_position, r.line").fetchall()
            except duckdb.CatalogException:
                return  # the deferred query never ran: no rows, nothing rejected
            self.cur.execute(f"DROP TABLE IF EXISTS {self.rejects}")
            self.cur.execute(f"DROP TABLE IF EXISTS {self.scans}")
        if not rows:
            return
        # One record per rejected row (DuckDB may report several errors for one row).
        records: dict[tuple[int, int], list[tuple[str, str, str]]] = {}
        for line, position, error_type, csv_line, message in rows:
            key = (int(position) if position is not None else -1, int(line or 0))
            records.setdefault(key, []).append((str(error_type), str(csv_line or ""), str(message or "")))
        located = self._locate([pos - 1 for pos, _ in records if pos > 0])
        for (position, line), errors in records.items():
            off = position - 1
            csv_line = errors[0][1].lstrip("\r\n").rstrip("\r")
            where = located.get(off)
            reason = "; ".join(dict.fromkeys(f"{_CSV_ERRORS.get(t, t.lower())}: {m}" for t, _, m in errors))
            if where is None or not _same_line(where[1], csv_line):
                number = line + self.line_offset if line else None
                self.problems.append(Bad(number, csv_line, reason))
                continue
            number = where[0] + self.line_offset
            multi_line = "\n" in csv_line
            if multi_line and any(t == "UNQUOTED VALUE" for t, _, _ in errors) and self.spec.recover:
                recovered = yield from self._recover(off, where[0], reason)
                if recovered:
                    self.problems.append(Bad(number, where[1], recovered))
                    continue
            raw = where[1] if len(csv_line) >= _CSV_LINE_CAP and not multi_line else csv_line
            self.problems.append(Bad(number, raw, reason))

    def _locate(self, offsets: list[int]) -> dict[int, tuple[int, str]]:
        try:
            return locate_lines(open_view(self.spec.landing, self.read_path, self.encoding), offsets)
        except Exception as exc:  # the file is read again; if that fails, keep DuckDB's record numbers
            self.spec.log.warning("%s: cannot count lines (%s); line numbers are record numbers", self.spec.path, exc)
            return {}

    def _recover(self, off: int, line: int, reason: str) -> Generator[pa.RecordBatch, None, str | None]:
        """Read again, on their own, the lines a runaway quoted value swallowed.

        Returns (as the generator's value) the reason to record for the first line, or ``None``
        when nothing could be recovered.
        """
        o = self.options
        dialect = [ch.encode() for ch in (o.delimiter, o.quote, o.escape_char)]
        if self.depth >= _MAX_RECOVERY_DEPTH or any(len(b) != 1 for b in dialect):
            return None
        delimiter, quote, escape = (b[0] for b in dialect)

        def view() -> Iterator[bytes]:
            return open_view(self.spec.landing, self.read_path, self.encoding)

        start = off + 1 if _byte_at(view(), off) == b"\n" else off
        end = unquoted_region_end(view(), start, delimiter, quote, escape)
        first_break = first_newline_after(view(), start)
        if end is None or first_break is None or first_break + 1 >= end:
            return None
        self.spec.temp_dir.mkdir(parents=True, exist_ok=True)
        tail = self.spec.temp_dir / f"rat-recover-{uuid.uuid4().hex}.csv"
        try:
            copy_range(view(), first_break + 1, end, tail)
            again = CsvFile(
                replace(self.spec, defer=False),
                self.cur,
                self.options,
                read_path=str(tail),
                header=False,
                skip=0,
                encoding="utf-8",
                columns=self.columns,
                formats=self.formats,
                line_offset=self.line_offset + line,
                depth=self.depth + 1,
            )
            try:
                again.open()
            except UnreadableFile as exc:
                self.spec.log.warning("%s: cannot read the lines after line %d again: %s", self.spec.path, line, exc)
                return None
            yield from again.batches()
            self.problems.extend(again.problems)
        finally:
            tail.unlink(missing_ok=True)
        swallowed = reason.removeprefix("bad quoting: ")
        return (
            f"bad quoting: a quoted value opened on this line does not close properly ({swallowed}); "
            "the lines it ran over were read again on their own"
        )


def combine(files: Sequence[CsvFile]) -> dict[int, str]:
    """One ``read_csv`` for deferred CSV files read alike (the same columns, types and dialect).

    DuckDB reads a list of files in parallel; a ``UNION ALL`` of one scan per file is read a
    file at a time (measured: 10M rows in 120 files, 6.3 s against 11.4 s). Each file's
    constant columns come from a join on the file name, and its rejects from the shared rejects
    table, by file (``CsvFile.shared``).

    Returns:
        ``id(file) -> query`` for the first file of each group; the others of a group are read
        by that query (their own ``sql`` must not run).
    """
    groups: dict[str, list[CsvFile]] = {}
    for file in files:
        if file.sql is not None:
            constants = tuple(name for name, _ in file.spec.extras)
            groups.setdefault(f"{file.read_args()}|{constants}", []).append(file)
    queries: dict[int, str] = {}
    for group in groups.values():
        first = group[0]
        if len(group) == 1:
            queries[id(first)] = str(first.sql)
            continue
        extras = [name for name, _ in first.spec.extras]
        rows = ", ".join(
            "(" + ", ".join([literal(f.read_path), *(_constant(v) for _, v in f.spec.extras)]) + ")" for f in group
        )
        names = ", ".join([_FILE, *(quote_ident(n) for n in extras)])
        paths = "[" + ", ".join(literal(f.read_path) for f in group) + "]"
        shared = _SharedRejects(first.rejects, first.scans)
        for file in group:
            file.rejects, file.scans, file.shared = first.rejects, first.scans, shared
        queries[id(first)] = (
            f"SELECT r.* EXCLUDE ({_FILE}), x.* EXCLUDE ({_FILE}) FROM read_csv({paths}, {first.read_args()}, "
            f"filename = {literal(_FILE)}, store_rejects = true, rejects_table = {literal(first.rejects)}, "
            f"rejects_scan = {literal(first.scans)}) AS r JOIN (VALUES {rows}) AS x({names}) USING ({_FILE})"
        )
    return queries


_REJECT_COLUMNS = "r.line, r.line_byte_position, r.error_type, r.csv_line, r.error_message"


class _SharedRejects:
    """The rejects of one scan of several files, read with one query for all of them (the first
    file that asks), then handed out by file: a query per file cost ~3 ms each, on the run's
    critical path (56 files in the 1M-row POS example)."""

    def __init__(self, rejects: str, scans: str) -> None:
        self.rejects = rejects
        self.scans = scans
        self._by_file: dict[str, list[tuple[Any, ...]]] | None = None

    def rows(self, cur: duckdb.DuckDBPyConnection, path: str) -> list[tuple[Any, ...]]:
        """``path``'s rejected rows, in file order (none if the scan never ran)."""
        import duckdb

        if self._by_file is None:
            # DISTINCT: a query run twice (a retried write) records its rejects twice.
            query = (
                f"SELECT DISTINCT s.file_path, {_REJECT_COLUMNS} FROM {self.rejects} AS r "
                f"JOIN {self.scans} AS s USING (scan_id, file_id) "
                "ORDER BY s.file_path, r.line_byte_position, r.line"
            )
            try:
                found = cur.execute(query).fetchall()
            except duckdb.CatalogException:
                found = []  # the deferred query never ran: no rows, nothing rejected
            self._by_file = {}
            for file_path, *row in found:
                self._by_file.setdefault(str(file_path), []).append(tuple(row))
        return self._by_file.get(path, [])


def _constant(value: Any) -> str:
    """A constant column's value as SQL (as ``FileSpec.extras_sql`` writes it)."""
    if value is None:
        return "CAST(NULL AS VARCHAR)"
    if isinstance(value, datetime):
        return f"CAST({literal(value.isoformat())} AS TIMESTAMPTZ)"
    return literal(str(value))


def _byte_at(chunks: Iterator[bytes], offset: int) -> bytes:
    base = 0
    for chunk in chunks:
        if offset < base + len(chunk):
            return chunk[offset - base : offset - base + 1]
        base += len(chunk)
    return b""


def _same_line(found: str, csv_line: str) -> bool:
    """Whether the line found at DuckDB's offset is the rejected one (a guard against offset drift)."""
    first = csv_line.split("\n", 1)[0].rstrip("\r")
    a, b = found[:200], first[:200]
    if a == b:
        return True
    # Invalid bytes are shown differently by DuckDB and Python: compare the ASCII skeleton.
    strip = re.compile(r"[^\x20-\x7e]|\?")
    return strip.sub("", a) == strip.sub("", b)


# --- JSON / NDJSON -------------------------------------------------------------------------------------------------


_JSON_TYPES = {"UBIGINT": "BIGINT", "BIGINT": "BIGINT", "DOUBLE": "DOUBLE", "VARCHAR": "VARCHAR", "BOOLEAN": "BOOLEAN"}


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


class JsonFile(FileRead):
    """A JSON file (``format: json``) or newline-delimited JSON (``format: ndjson``)."""

    def __init__(
        self,
        spec: FileSpec,
        cur: duckdb.DuckDBPyConnection,
        options: JsonOptions,
        *,
        lines: bool,
        read_path: str | None = None,
        forced: dict[str, str] | None = None,
        depth: int = 0,
    ) -> None:
        super().__init__(spec, cur)
        self.options = options
        self.lines = lines
        self.read_path = read_path or spec.path
        self.forced = forced
        self.depth = depth
        self._reader: pa.RecordBatchReader | None = None
        self._cast: duckdb.DuckDBPyConnection | None = None
        self._data: list[str] = []
        self._types: dict[str, str] = {}
        self._ordinal = ""
        self._cast_sql: str | None = None
        self._held = _Held()
        self._max_ordinal = 0

    def _args(self, extra: str = "") -> str:
        o = self.options
        fmt = "newline_delimited" if self.lines else "auto"
        args = (
            f"{literal(self.read_path)}, format = {literal(fmt)}, sample_size = {o.sample_size}, "
            f"maximum_object_size = {o.maximum_object_size}"
        )
        if self.lines:
            args += ", ignore_errors = true"
        if o.date_format:
            args += f", dateformat = {literal(o.date_format)}"
        if o.timestamp_format:
            args += f", timestampformat = {literal(o.timestamp_format)}"
        return args + extra

    def _execute(self, extra: str = "") -> None:
        sql = f"SELECT *{self.spec.extras_sql()} FROM (SELECT * FROM read_json({self._args(extra)}) WITH ORDINALITY)"
        self.cur.execute(sql)

    def open(self) -> None:
        import duckdb

        try:
            if not self.lines:  # a malformed document fails the whole file: find out before any row is out
                row = self.cur.execute(f"SELECT count(*) FROM read_json({self._args()})").fetchone()
                if not row or not row[0]:
                    return  # `[]`: no records, so no columns to speak of
            if self.forced is not None:
                self._execute(_columns_arg(self.forced))
            else:
                self._execute()
            description = self.cur.description or []
            n_data = len(description) - len(self.spec.extras) - 1
            if self.lines and n_data == 1 and description[0][0] == "json" and str(description[0][1]) == "JSON":
                # Some lines are not objects (arrays, numbers), or there are none: DuckDB fell back to one JSON column.
                if is_blank(self.spec.landing, self.read_path):
                    return
                self._execute(_columns_arg(self._record_columns()))
                description = self.cur.description or []
            self._reader = self.cur.to_arrow_reader(self.spec.batch_rows)
        except duckdb.Error as exc:
            raise UnreadableFile(_error_text(exc)) from exc
        schema = self._reader.schema
        n_data = len(schema) - len(self.spec.extras) - 1
        self._data = schema.names[:n_data]
        self._types = {str(d[0]): str(d[1]) for d in description[:n_data]}
        self._ordinal = schema.names[n_data]
        self._plan_casts(schema)
        self.schema = self._output_schema(schema)

    def _record_columns(self) -> dict[str, str]:
        """Column types built from the structure of the lines that are objects.

        Raises:
            UnreadableFile: no line holds an object.
        """
        row = self.cur.execute(
            f"SELECT json_group_structure(json) FROM read_json({self._args()}) WHERE json_type(json) = 'OBJECT'"
        ).fetchone()
        if row is None or row[0] is None:
            raise UnreadableFile("no line holds a JSON object")
        structure = json.loads(row[0])
        if not isinstance(structure, dict) or not structure:
            raise UnreadableFile("no line holds a JSON object with keys")
        return {k: (_JSON_TYPES.get(v, "JSON") if isinstance(v, str) else "JSON") for k, v in structure.items()}

    def _plan_casts(self, schema: pa.Schema) -> None:
        typed = [(name, self.spec.column_type(name)) for name in self._data]
        casts = [(name, kind) for name, kind in typed if kind is not None]
        missing = [c for c in self.spec.columns if c.lower() not in {n.lower() for n in self._data}]
        if missing and self.depth == 0:
            self.spec.log.warning("%s: typed columns not in the file: %s", self.spec.path, ", ".join(missing))
        if not casts:
            return
        replaced, reasons = [], []
        for name, kind in casts:
            converted, reason = _cast_sql(name, kind)
            replaced.append(f"{converted} AS {quote_ident(name)}")
            reasons.append(reason)
        bad = _reason_sql(reasons)
        self._cast_sql = (
            f"SELECT * REPLACE ({', '.join(replaced)}), {bad} AS {_BAD}, "
            f"CASE WHEN {bad} IS NOT NULL THEN {_json_object_sql(self._data)} END AS {_RAW} FROM __rat_batch"
        )
        self._cast = self.cur.cursor()
        self._cast.execute("SET TimeZone = 'UTC'")

    def _cast_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa

        assert self._cast is not None and self._cast_sql is not None
        self._cast.register("__rat_batch", pa.Table.from_batches([batch]))
        try:
            table = self._cast.execute(self._cast_sql).to_arrow_table()
        finally:
            self._cast.unregister("__rat_batch")
        batches = table.combine_chunks().to_batches()
        return batches[0] if batches else _empty_batch(table.schema)

    def _output_schema(self, schema: pa.Schema) -> pa.Schema:
        import pyarrow as pa

        if self._cast_sql is not None:
            schema = self._cast_batch(_empty_batch(schema)).schema
        keep = [f for f in schema if f.name not in (self._ordinal, _ORD, _BAD, _RAW)]
        return pa.schema(keep)

    def batches(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc

        if self._reader is None or self.schema is None:  # no records
            return
        keep = self.schema.names
        null_check = self._data if self.lines else []
        for batch in self._reader:
            if batch.num_rows == 0:
                continue
            self._max_ordinal = max(self._max_ordinal, int(pc.max(batch.column(self._ordinal)).as_py()))
            if self._ordinal != _ORD:
                batch = batch.rename_columns([_ORD if n == self._ordinal else n for n in batch.schema.names])
            if self._cast_sql is not None:
                batch = self._cast_batch(batch)
            good = _split(batch, keep=keep, null_check=null_check, held=self._held)
            if good is not None:
                yield good
        if self._cast is not None:
            self._cast.close()
        yield from self._settle()

    def _settle(self) -> Iterator[pa.RecordBatch]:
        """Turn the held rows into quarantine records; put back records that are really all null, and
        read again the lines DuckDB lost to a malformed line before them."""
        held = self._held
        if not held.ordinals:
            return
        if not self.lines:
            for ordinal, reason, raw in zip(held.ordinals, held.reasons, held.raws, strict=True):
                self.problems.append(Bad(None, raw, f"record {ordinal}: {reason}"))
            return
        lines = self._lines(set(held.ordinals))
        all_null = 0
        retry: list[tuple[int | None, str]] = []
        for ordinal, reason, raw in zip(held.ordinals, held.reasons, held.raws, strict=True):
            number, text = lines.get(ordinal, (None, raw))
            if reason is not None:
                self.problems.append(Bad(number, text, reason))
                continue
            verdict = _classify_json_line(text)
            if verdict is None:
                all_null += 1
            elif verdict == _RETRY and text is not None and self.depth < 3:
                retry.append((number, text))
            else:
                self.problems.append(Bad(number, text, _LOST if verdict == _RETRY else verdict))
        if all_null:
            yield _null_rows(self.schema, all_null, self.spec.extras)
        if retry:
            yield from self._retry(retry)

    def _retry(self, retry: list[tuple[int | None, str]]) -> Iterator[pa.RecordBatch]:
        """Read again, on their own and with this file's column types, lines DuckDB could not read here
        although they are valid objects (a malformed line before them ran into them)."""
        self.spec.temp_dir.mkdir(parents=True, exist_ok=True)
        tail = self.spec.temp_dir / f"rat-recover-{uuid.uuid4().hex}.ndjson"
        tail.write_text("\n".join(text for _, text in retry) + "\n", encoding="utf-8")
        try:
            again = JsonFile(
                self.spec,
                self.cur,
                self.options,
                lines=True,
                read_path=str(tail),
                forced=self._types,
                depth=self.depth + 1,
            )
            try:
                again.open()
            except UnreadableFile as exc:
                self.spec.log.warning("%s: cannot read %d lines again: %s", self.spec.path, len(retry), exc)
                self.problems.extend(Bad(number, text, _LOST) for number, text in retry)
                return
            yield from again.batches()
            for bad in again.problems:
                number = retry[bad.line - 1][0] if bad.line is not None and 0 < bad.line <= len(retry) else None
                self.problems.append(Bad(number, bad.raw, bad.reason))
        finally:
            tail.unlink(missing_ok=True)

    def _lines(self, ordinals: set[int]) -> dict[int, tuple[int, str]]:
        """Line number and text of the k-th non-blank line (DuckDB's record ordinal), for the wanted k."""
        found: dict[int, tuple[int, str]] = {}
        ordinal = 0
        number = 0
        carry = b""
        try:
            for chunk in open_view(self.spec.landing, self.read_path):
                parts = (carry + chunk).split(b"\n")
                carry = parts.pop()
                for part in parts:
                    number += 1
                    if part.strip():
                        ordinal += 1
                        if ordinal in ordinals:
                            found[ordinal] = (number, _text(part))
            if carry.strip():
                number += 1
                ordinal += 1
                if ordinal in ordinals:
                    found[ordinal] = (number, _text(carry))
        except Exception as exc:
            self.spec.log.warning(
                "%s: cannot read the lines again (%s); bad lines have no line number", self.spec.path, exc
            )
            return {}
        if ordinal != self._max_ordinal:
            self.spec.log.warning(
                "%s: DuckDB read %d records but the file has %d non-blank lines; bad lines have no line number",
                self.spec.path,
                self._max_ordinal,
                ordinal,
            )
            return {}
        return found


_RETRY = "retry"
_LOST = "DuckDB could not read this record (check maximum_object_size and the value types)"


def _columns_arg(columns: dict[str, str]) -> str:
    listed = ", ".join(f"{literal(k)}: {literal(v)}" for k, v in columns.items())
    return f", records = 'true', columns = {{{listed}}}"


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def _classify_json_line(text: str | None) -> str | None:
    """Why a line DuckDB read as all NULL is bad, or ``None`` when it is an object whose values are all null."""
    if text is None:
        return "could not be read as JSON"
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return f"malformed JSON: {exc}"
    if not isinstance(value, dict):
        return f"not a JSON object but {type(value).__name__ if value is not None else 'null'}"
    if any(v is not None for v in value.values()):
        return _RETRY
    return None


def _null_rows(schema: pa.Schema | None, count: int, extras: list[tuple[str, Any]]) -> pa.RecordBatch:
    """``count`` rows whose file columns are all NULL, with the constant columns filled in."""
    import pyarrow as pa

    assert schema is not None
    values = dict(extras)
    arrays = []
    for f in schema:
        if f.name in values and values[f.name] is not None:
            arrays.append(pa.array([values[f.name]] * count, type=f.type))
        else:
            arrays.append(pa.nulls(count, type=f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# --- Parquet -------------------------------------------------------------------------------------------------------


class ParquetFile(FileRead):
    """A Parquet file: its own schema, explicit types cast on top."""

    def __init__(self, spec: FileSpec, cur: duckdb.DuckDBPyConnection) -> None:
        super().__init__(spec, cur)
        self._reader: pa.RecordBatchReader | None = None
        self._keep: list[str] = []
        self._held = _Held()
        self._checked = False

    def open(self) -> None:
        import duckdb

        path = literal(self.spec.path)
        try:
            described = self.cur.execute(f"DESCRIBE SELECT * FROM read_parquet({path})").fetchall()
            if self.spec.recover and described:
                # Decode every value once: a corrupt page found mid-stream could not be set aside any more.
                self.cur.execute(f"SELECT max(hash(COLUMNS(*))) FROM read_parquet({path})").fetchall()
            names = [str(r[0]) for r in described]
            casts = [(n, kind) for n in names if (kind := self.spec.column_type(n)) is not None]
            missing = [c for c in self.spec.columns if c.lower() not in {n.lower() for n in names}]
            if missing:
                self.spec.log.warning("%s: typed columns not in the file: %s", self.spec.path, ", ".join(missing))
            select = [quote_ident(n) for n in names]
            tail = ""
            if casts and "file_row_number" not in names:
                reasons = []
                for name, kind in casts:
                    converted, reason = _cast_sql(name, kind)
                    select[names.index(name)] = f"{converted} AS {quote_ident(name)}"
                    reasons.append(reason)
                bad = _reason_sql(reasons)
                tail = (
                    f", {bad} AS {_BAD}, file_row_number + 1 AS {_ORD}, "
                    f"CASE WHEN {bad} IS NOT NULL THEN {_json_object_sql(names)} END AS {_RAW}"
                )
                source = f"read_parquet({path}, file_row_number = true)"
                self._checked = True
            else:
                source = f"read_parquet({path})"
            self.cur.execute(f"SELECT {', '.join(select)}{self.spec.extras_sql()}{tail} FROM {source}")
            self._reader = self.cur.to_arrow_reader(self.spec.batch_rows)
        except duckdb.Error as exc:
            raise UnreadableFile(_error_text(exc)) from exc
        import pyarrow as pa

        self._keep = [n for n in self._reader.schema.names if n not in (_BAD, _ORD, _RAW)]
        self.schema = pa.schema([self._reader.schema.field(n) for n in self._keep])

    def batches(self) -> Iterator[pa.RecordBatch]:
        assert self._reader is not None
        if not self._checked:
            yield from self._reader
            return
        for batch in self._reader:
            good = _split(batch, keep=self._keep, null_check=[], held=self._held)
            if good is not None:
                yield good
        held = self._held
        for ordinal, reason, raw in zip(held.ordinals, held.reasons, held.raws, strict=True):
            self.problems.append(Bad(ordinal, raw, f"row {ordinal}: {reason}"))


# --- Excel ---------------------------------------------------------------------------------------------------------

_CELL = re.compile(rb"<(?:\w+:)?(row|c)\b([^>]*?)(/?)>")
_REF = re.compile(rb'\br="([A-Z]+)(\d+)"')
_ROW_NUMBER = re.compile(rb'\br="(\d+)"')


def column_letters(index: int) -> str:
    """1 -> A, 27 -> AA."""
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _column_index(letters: bytes) -> int:
    index = 0
    for ch in letters:
        index = index * 26 + (ch - 64)
    return index


@dataclass(frozen=True)
class SheetExtent:
    """The cells of a sheet that hold something: rows and columns, 1-based and inclusive."""

    sheet: str
    first_row: int
    last_row: int
    first_col: int
    last_col: int


def xlsx_extent(handle: Any, sheet: str | None) -> SheetExtent | None:
    """Where the data of a sheet is, found by scanning the sheet's XML for cells that hold a value.

    DuckDB's ``read_xlsx`` stops at the first empty row unless given a range, and a range with no
    last row reads a million empty rows, so the real extent is looked up first.

    Returns:
        The extent, or ``None`` when the sheet holds no cell.

    Raises:
        UnreadableFile: not an xlsx file, or no such sheet.
    """
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableFile(f"not an .xlsx file ({exc})") from exc
    with archive:
        try:
            workbook = archive.read("xl/workbook.xml").decode("utf-8", errors="replace")
            rels = archive.read("xl/_rels/workbook.xml.rels").decode("utf-8", errors="replace")
        except KeyError as exc:
            raise UnreadableFile(f"not an .xlsx workbook ({exc})") from exc
        sheets: list[tuple[str, str]] = []
        for tag in re.findall(r"<(?:\w+:)?sheet\b[^>]*>", workbook):
            name = re.search(r'\bname="([^"]*)"', tag)
            rid = re.search(r'\br:id="([^"]*)"|\b\w+:id="([^"]*)"', tag)
            if name and rid:
                sheets.append((html.unescape(name.group(1)), rid.group(1) or rid.group(2)))
        targets: dict[str, str] = {}
        for tag in re.findall(r"<(?:\w+:)?Relationship\b[^>]*>", rels):
            rid = re.search(r'\bId="([^"]*)"', tag)
            found = re.search(r'\bTarget="([^"]*)"', tag)
            if rid and found:
                targets[rid.group(1)] = html.unescape(found.group(1))
        if not sheets:
            raise UnreadableFile("the workbook lists no sheet")
        if sheet is None:
            chosen = sheets[0]
        else:
            match = [s for s in sheets if s[0] == sheet] or [s for s in sheets if s[0].lower() == sheet.lower()]
            if not match:
                raise UnreadableFile(f"no sheet `{sheet}`; sheets: {', '.join(s[0] for s in sheets)}")
            chosen = match[0]
        target = targets.get(chosen[1], "")
        member = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        if member not in archive.namelist():
            raise UnreadableFile(f"sheet `{chosen[0]}` has no data part ({member})")
        first_row = first_col = 1 << 30
        last_row = last_col = 0
        row = 0
        col = 0
        carry = b""
        with archive.open(member) as stream:
            while True:
                chunk = stream.read(_CHUNK)
                data = carry + chunk
                cut = data.rfind(b"<") if chunk else len(data)
                cut = len(data) if cut < 0 else cut
                for m in _CELL.finditer(data, 0, cut):
                    if m.group(1) == b"row":
                        number = _ROW_NUMBER.search(m.group(2))
                        row = int(number.group(1)) if number else row + 1
                        col = 0
                        continue
                    ref = _REF.search(m.group(2))
                    if ref:
                        col = _column_index(ref.group(1))
                        row = int(ref.group(2))
                    else:
                        col += 1
                    if m.group(3):  # <c .../>: no value
                        continue
                    first_row, last_row = min(first_row, row), max(last_row, row)
                    first_col, last_col = min(first_col, col), max(last_col, col)
                carry = data[cut:]
                if not chunk:
                    break
    if last_row == 0:
        return None
    return SheetExtent(chosen[0], first_row, last_row, first_col, last_col)


def _excel_convert(col: str, target: str) -> str:
    """SQL converting a cell read as text to ``target`` (dates and times come as Excel serial numbers)."""
    kind = target.upper()
    number = f"TRY_CAST({col} AS DOUBLE)"
    micros = f"to_microseconds(CAST(round({number} * 86400000000) AS BIGINT))"
    if kind == "VARCHAR":
        return col
    if kind == "DATE":
        return (
            f"CASE WHEN {number} IS NOT NULL THEN CAST(DATE '1899-12-30' + CAST(floor({number}) AS INTEGER) AS DATE) "
            f"ELSE TRY_CAST({col} AS DATE) END"
        )
    if kind in ("TIMESTAMP", "DATETIME"):
        return f"CASE WHEN {number} IS NOT NULL THEN TIMESTAMP '1899-12-30' + {micros} ELSE TRY_CAST({col} AS TIMESTAMP) END"
    if kind == "TIME":
        frac = f"to_microseconds(CAST(round(({number} - floor({number})) * 86400000000) AS BIGINT))"
        return f"CASE WHEN {number} IS NOT NULL THEN TIME '00:00:00' + {frac} ELSE TRY_CAST({col} AS TIME) END"
    return f"TRY_CAST({col} AS {target})"


class ExcelFile(FileRead):
    """A sheet of an ``.xlsx`` workbook, read by the excel extension's ``read_xlsx`` as text, then typed."""

    def __init__(self, spec: FileSpec, cur: duckdb.DuckDBPyConnection, options: ExcelOptions) -> None:
        super().__init__(spec, cur)
        self.options = options
        self._reader: pa.RecordBatchReader | None = None
        self._keep: list[str] = []
        self._held = _Held()
        self._first_data_row = 1

    def _extent(self) -> SheetExtent | None:
        fs, inner = self.spec.landing.filesystem(self.spec.path)
        try:
            with fs.open_input_file(inner) as handle:
                return xlsx_extent(handle, self.options.sheet)
        except OSError as exc:
            raise UnreadableFile(f"cannot open: {exc}") from exc

    def open(self) -> None:
        import duckdb
        import pyarrow as pa

        extent = self._extent()
        skip = self.options.skip_rows
        start = skip + 1 if skip or extent is None else extent.first_row
        if extent is None or extent.last_row < start + (1 if self.options.header else 0):
            # Nothing below the header: no rows (and no schema to speak of).
            self.schema = None
            return
        cell_range = f"{column_letters(extent.first_col)}{start}:{column_letters(extent.last_col)}{extent.last_row}"
        self._first_data_row = start + (1 if self.options.header else 0)
        args = (
            f"{literal(self.spec.path)}, sheet = {literal(extent.sheet)}, range = {literal(cell_range)}, "
            f"header = {str(self.options.header).lower()}, stop_at_empty = false"
        )
        try:
            described = self.cur.execute(f"DESCRIBE SELECT * FROM read_xlsx({args})").fetchall()
            names = [str(r[0]) for r in described]
            inferred = {str(r[0]): str(r[1]) for r in described}
            stripped = _strip_names(names)
            targets = {n: self.spec.column_type(s) or inferred[n] for n, s in zip(names, stripped, strict=True)}
            text = f"(SELECT * FROM read_xlsx({args}, all_varchar = true) WITH ORDINALITY AS __t({', '.join(quote_ident(n) for n in names)}, {_ORD}))"
            loose = [n for n, s in zip(names, stripped, strict=True) if self.spec.column_type(s) is None]
            self._widen(targets, loose, text)
            select, reasons = [], []
            for name, out in zip(names, stripped, strict=True):
                col = quote_ident(name)
                converted = _excel_convert(col, targets[name])
                select.append(f"{converted} AS {quote_ident(out)}")
                if converted != col:
                    reasons.append(
                        f"CASE WHEN {col} IS NOT NULL AND ({converted}) IS NULL THEN "
                        f"{literal(f'column {out}: cannot convert ')} || left({col}, 200) || "
                        f"{literal(' to ' + targets[name])} END"
                    )
            bad = _reason_sql(reasons)
            not_empty = " OR ".join(f"{quote_ident(n)} IS NOT NULL" for n in names) or "true"
            sql = (
                f"SELECT {', '.join(select)}{self.spec.extras_sql()}, {_ORD}, {bad} AS {_BAD}, "
                f"CASE WHEN {bad} IS NOT NULL THEN {_json_object_sql(names)} END AS {_RAW} "
                f"FROM {text} WHERE {not_empty}"
            )
            self.cur.execute(sql)
            self._reader = self.cur.to_arrow_reader(self.spec.batch_rows)
        except duckdb.Error as exc:
            raise UnreadableFile(_error_text(exc)) from exc
        self._keep = [n for n in self._reader.schema.names if n not in (_BAD, _ORD, _RAW)]
        self.schema = pa.schema([self._reader.schema.field(n) for n in self._keep])

    def _widen(self, targets: dict[str, str], loose: list[str], text: str) -> None:
        """Inferred types come from the first row only: make text of any column where a later cell does not fit."""
        checks = [(n, targets[n]) for n in loose if targets[n].upper() != "VARCHAR"]
        if not checks:
            return
        counts = ", ".join(
            f"count(*) FILTER (WHERE {quote_ident(n)} IS NOT NULL AND ({_excel_convert(quote_ident(n), t)}) IS NULL)"
            for n, t in checks
        )
        row = self.cur.execute(f"SELECT {counts} FROM {text}").fetchone()
        for (name, kind), misfits in zip(checks, row or (), strict=False):
            if misfits:
                self.spec.log.info(
                    "%s: column %s read as text: %d cells are not %s", self.spec.path, name, misfits, kind
                )
                targets[name] = "VARCHAR"

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self._reader is None:
            return
        for batch in self._reader:
            good = _split(batch, keep=self._keep, null_check=[], held=self._held)
            if good is not None:
                yield good
        held = self._held
        for ordinal, reason, raw in zip(held.ordinals, held.reasons, held.raws, strict=True):
            self.problems.append(Bad(self._first_data_row + ordinal - 1, raw, str(reason)))


# --- choosing a reader ---------------------------------------------------------------------------------------------


def reader_for(fmt: str, spec: FileSpec, cur: duckdb.DuckDBPyConnection, options: Any) -> FileRead:
    """The reader of a format."""
    readers: dict[str, Callable[[], FileRead]] = {
        "csv": lambda: CsvFile(spec, cur, options),
        "tsv": lambda: CsvFile(spec, cur, options),
        "json": lambda: JsonFile(spec, cur, options, lines=False),
        "ndjson": lambda: JsonFile(spec, cur, options, lines=True),
        "parquet": lambda: ParquetFile(spec, cur),
        "excel": lambda: ExcelFile(spec, cur, options),
    }
    return readers[fmt]()
