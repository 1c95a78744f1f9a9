"""The files connector: landing files (CSV, TSV, JSON, NDJSON, Parquet, Excel) to Arrow batches for bronze."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ratatouille.connectors.base import Connector, Output, ReadContext
from ratatouille.connectors.files.config import INGESTED_AT_COLUMN, SOURCE_FILE_COLUMN, FilesSourceConfig
from ratatouille.connectors.files.formats import Bad, CsvFile, FileRead, FileSpec, UnreadableFile, combine, reader_for
from ratatouille.errors import ConnectorError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from ratatouille.engine import Profile
    from ratatouille.storage.files import Landing

log = logging.getLogger(__name__)


class FilesConnector(Connector):
    """Reads the files of a ``type: files`` source, one :class:`Output` per file.

    The connector does not decide which files are new: the ingestion layer passes the paths to
    read in ``ctx.state["files"]`` (absolute, ``s3://`` or ``landing/...``); without that key
    every file matching ``path`` is read. Each file becomes one ``Output(table="", mode="append")``
    so the caller can commit, and record, file by file.

    Every output's rows carry the file's columns (header names with surrounding whitespace
    stripped), then the ``filename_pattern`` groups as strings, ``_source_file`` (the full path)
    and ``_ingested_at`` (one UTC timestamp for the whole read).

    ``Output.quarantine`` is complete only once ``Output.batches`` is exhausted: rows are
    streamed, and bad rows are known when the file has been read. Each record is
    ``{"_source_file", "_line", "_raw", "_reason", "_ingested_at"}``; a file that cannot be read
    at all gives one record with ``_line`` None and an output without batches. With
    ``on_error: fail`` the first bad row raises :class:`ConnectorError` (``file:line: reason``)
    from the batches iterator, after the file's good rows were streamed: the caller must not
    commit an output whose batches raised.

    Attributes set by the caller before :meth:`read` (all optional):
        con: the DuckDB connection to read with, e.g. the workspace's (``connector.con = con``).
            Each file is read on its own cursor of it (``con.cursor()``, closed when the file's
            batches are exhausted or dropped), so the caller's session settings are left alone;
            S3 paths get the landing zone's S3 secret if the connection has none, and Excel
            sources load the ``excel`` extension from its wheel. Without ``con`` the connector
            opens its own with :func:`ratatouille.engine.connect` (``profile``,
            ``temp_directory``) and keeps it until :meth:`close`.
        landing: the project's :class:`~ratatouille.storage.files.Landing` (resolves
            ``landing/`` and lists files, local or S3); default ``data/landing`` under the
            working directory.
        profile: engine limits of the connector's own connection (default: ``auto``).
        temp_directory: spill and scratch space (default: ``<system temp>/ratatouille-files``);
            CSV and NDJSON lines read a second time are written there briefly.
        sql_outputs: CSV/TSV outputs carry ``Output.sql``, a query over ``con`` itself (not a
            cursor) that reads the file, instead of streaming it through Arrow; files read alike
            are read by one query, on the first of them (the others' ``sql`` is ``None``). The
            caller runs the queries on ``con`` (e.g. inside a ``COPY``), then exhausts every
            output's ``batches``, which then yield only rows read again after a runaway quote
            and complete the quarantine.
    """

    config_class = FilesSourceConfig

    def __init__(
        self,
        config: FilesSourceConfig,
        *,
        con: duckdb.DuckDBPyConnection | None = None,
        landing: Landing | None = None,
        profile: Profile | None = None,
        temp_directory: Path | None = None,
    ) -> None:
        super().__init__(config)
        self.con = con
        self.landing = landing
        self.profile = profile
        self.temp_directory = temp_directory
        self.sql_outputs = False
        self._own: duckdb.DuckDBPyConnection | None = None

    @property
    def source(self) -> FilesSourceConfig:
        """The source's configuration."""
        return cast(FilesSourceConfig, self.config)

    # -- files ------------------------------------------------------------------------------------

    def _landing(self) -> Landing:
        if self.landing is None:
            from ratatouille.config import S3Config
            from ratatouille.storage.files import Landing

            self.landing = Landing(str(Path("data/landing").resolve()), S3Config())
        return self.landing

    def files(self) -> list[str]:
        """Every file matching the source's ``path``, sorted.

        Raises:
            ConnectorError: the landing zone cannot be listed.
        """
        return [f.path for f in self._landing().glob(self.source.path)]

    def _paths(self, state: Mapping[str, Any]) -> list[str]:
        wanted = state.get("files")
        if wanted is None:
            return self.files()
        landing = self._landing()
        paths: list[str] = []
        for item in wanted:
            if isinstance(item, str):
                raw = item
            elif isinstance(item, Mapping) and "path" in item:
                raw = str(item["path"])
            else:
                raw = str(getattr(item, "path", item))
            paths.append(landing.resolve(raw))
        return paths

    # -- connection -------------------------------------------------------------------------------

    def _scratch(self) -> Path:
        return self.temp_directory or Path(tempfile.gettempdir()) / "ratatouille-files"

    def connection(self, paths: Sequence[str] = ()) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection reads use, able to read ``paths`` (S3 secret, excel extension).

        Raises:
            ConnectorError: an extension cannot be loaded or S3 cannot be configured.
        """
        from ratatouille.errors import RatatouilleError

        needs_s3 = any(p.startswith("s3://") for p in paths)
        try:
            con = self.con
            if con is None:
                if self._own is None:
                    from ratatouille.config import EngineConfig
                    from ratatouille.engine import connect, resolve_profile

                    profile = self.profile or resolve_profile("auto", EngineConfig())
                    self._own = connect(profile, self._scratch() / "duckdb")
                con = self._own
            if needs_s3:
                row = con.execute("SELECT count(*) FROM duckdb_secrets() WHERE type = 's3'").fetchone()
                if not row or not row[0]:
                    from ratatouille.engine import configure_s3

                    configure_s3(con, self._landing().s3)
            if self.source.format == "excel":
                _load_excel(con)
        except RatatouilleError as exc:
            raise ConnectorError(f"source `{self.source.name}`: {exc}") from exc
        return con

    def close(self) -> None:
        """Close the connection the connector opened itself (not the caller's ``con``)."""
        if self._own is not None:
            self._own.close()
            self._own = None

    # -- reading ----------------------------------------------------------------------------------

    def read(self, ctx: ReadContext) -> Iterator[Output]:
        """Yield one output per file (see the class docstring).

        Raises:
            ConnectorError: the landing zone cannot be listed, DuckDB cannot be set up, a file cannot
                be read while streaming, or (``on_error: fail``) a row or file is bad.
            ConfigError: a type in ``columns`` is not a DuckDB type.
        """
        self.new_state = {}
        paths = self._paths(ctx.state)
        if not paths:
            ctx.log.info("source %s: no files to read", self.source.name)
            return
        ingested_at = datetime.now(UTC)
        con = self.connection(paths)
        columns = self.source.check_column_types(con)
        if not self._deferred:
            for path in paths:
                yield self._output(con, path, ctx, ingested_at, columns)[0]
            return
        con.execute("SET TimeZone = 'UTC'")  # the caller runs the deferred reads on ``con`` itself
        # Bind every file first, then read the files that share a layout with one scan.
        opened = [self._output(con, path, ctx, ingested_at, columns) for path in paths]
        queries = combine([file for _, file in opened if isinstance(file, CsvFile)])
        for output, file in opened:
            if output.sql is not None:
                output.sql = queries.get(id(file))  # the group's query, on its first file only
            yield output

    def _spec(
        self,
        path: str,
        ctx: ReadContext,
        ingested_at: datetime,
        columns: dict[str, str],
        *,
        recover: bool | None = None,
        defer: bool | None = None,
    ) -> FileSpec:
        extras: list[tuple[str, Any]] = list(self._groups(path, ctx.log).items())
        extras += [(SOURCE_FILE_COLUMN, path), (INGESTED_AT_COLUMN, ingested_at)]
        return FileSpec(
            path=path,
            extras=extras,
            columns=columns,
            batch_rows=ctx.batch_rows,
            landing=self._landing(),
            temp_dir=self._scratch(),
            log=ctx.log,
            recover=self.source.on_error == "quarantine" if recover is None else recover,
            defer=self._deferred if defer is None else defer,
        )

    @property
    def _deferred(self) -> bool:
        return self.sql_outputs and self.source.format in ("csv", "tsv")

    def _groups(self, path: str, logger: logging.Logger) -> dict[str, str | None]:
        pattern = self.source.pattern
        if pattern is None:
            return {}
        name = path.rsplit("/", 1)[-1]
        match = pattern.search(name) or pattern.search(path)
        if match is None:
            logger.warning("%s does not match filename_pattern %r: its columns are NULL", path, pattern.pattern)
            return dict.fromkeys(self.source.pattern_groups)
        groups = match.groupdict()
        return {g: groups.get(g) for g in self.source.pattern_groups}

    def _open(self, con: duckdb.DuckDBPyConnection, spec: FileSpec) -> tuple[duckdb.DuckDBPyConnection, FileRead]:
        cur = con if spec.defer else con.cursor()
        try:
            if cur is not con:
                cur.execute("SET TimeZone = 'UTC'")  # cursors do not inherit session settings
            file = reader_for(self.source.format, spec, cur, self.source.options)
            file.open()
        except BaseException:
            if cur is not con:
                cur.close()
            raise
        if file.names:
            extras = {name for name, _ in spec.extras}
            data = file.names[: len(file.names) - len(extras)]
            clash = sorted(extras.intersection(data))
            if clash:
                if cur is not con:
                    cur.close()
                raise UnreadableFile(
                    f"the file has columns named like those Ratatouille adds ({', '.join(clash)}); "
                    "rename them or the filename_pattern groups"
                )
        return cur, file

    def _output(
        self,
        con: duckdb.DuckDBPyConnection,
        path: str,
        ctx: ReadContext,
        ingested_at: datetime,
        columns: dict[str, str],
    ) -> tuple[Output, FileRead | None]:
        import duckdb

        spec = self._spec(path, ctx, ingested_at, columns)
        try:
            cur, file = self._open(con, spec)
        except (UnreadableFile, duckdb.Error, OSError) as exc:
            reason = str(exc) if isinstance(exc, UnreadableFile) else f"cannot read: {exc}"
            if self.source.on_error == "fail":
                raise ConnectorError(f"{path}: {reason}") from exc
            ctx.log.warning("%s: quarantined as a whole: %s", path, reason)
            record = _record(path, Bad(None, None, reason), ingested_at)
            return Output(table="", batches=iter(()), schema=None, mode="append", quarantine=[record]), None
        quarantine: list[dict[str, Any]] = []
        batches = self._stream(cur, file, path, ingested_at, quarantine, ctx.log, close=cur is not con)
        sql = getattr(file, "sql", None) if spec.defer else None
        output = Output(table="", batches=batches, schema=file.schema, mode="append", quarantine=quarantine, sql=sql)
        return output, file

    def _stream(
        self,
        cur: duckdb.DuckDBPyConnection,
        file: FileRead,
        path: str,
        ingested_at: datetime,
        quarantine: list[dict[str, Any]],
        logger: logging.Logger,
        *,
        close: bool = True,
    ) -> Iterator[pa.RecordBatch]:
        try:
            rows = 0
            for batch in file.batches():
                rows += batch.num_rows
                yield batch
            problems = sorted(file.problems, key=lambda b: (b.line is None, b.line or 0))
            if problems and self.source.on_error == "fail":
                first = problems[0]
                where = f"{path}:{first.line}" if first.line is not None else path
                more = f" (and {len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
                raise ConnectorError(f"{where}: {first.reason}{more}; set `on_error: quarantine` to set bad rows aside")
            quarantine.extend(_record(path, bad, ingested_at) for bad in problems)
            if problems:
                logger.warning("%s: %d rows read, %d quarantined", path, rows, len(problems))
        except Exception as exc:
            if not _read_error(exc):
                raise
            raise ConnectorError(f"cannot read {path}: {exc}") from exc
        finally:
            if close:
                cur.close()

    def describe_files(self, paths: Sequence[str] | None = None) -> pa.Schema:
        """The schema the source's files would land with (their schemas unified), without reading rows
        beyond what type inference needs.

        Raises:
            ConnectorError: no file to describe, or one cannot be read.
        """
        import pyarrow as pa

        from ratatouille.connectors.base import ReadContext

        targets = [self._landing().resolve(p) for p in paths] if paths is not None else self.files()
        if not targets:
            raise ConnectorError(f"source `{self.source.name}`: no file matches {self.source.path}")
        con = self.connection(targets)
        columns = self.source.check_column_types(con)
        ctx = ReadContext(state={}, log=log)
        now = datetime.now(UTC)
        schemas = []
        for path in targets:
            try:
                cur, file = self._open(con, self._spec(path, ctx, now, columns, recover=False, defer=False))
            except UnreadableFile as exc:
                raise ConnectorError(f"{path}: {exc}") from exc
            if cur is not con:
                cur.close()
            if file.schema is not None:
                schemas.append(file.schema)
        if not schemas:
            raise ConnectorError(f"source `{self.source.name}`: no file has any column")
        return pa.unify_schemas(schemas, promote_options="permissive")


def _read_error(exc: Exception) -> bool:
    """Whether reading a file failed (DuckDB, the file system, or pyarrow if a read imported it:
    CSV read by DuckDB straight into Parquet never does, and need not import it to know)."""
    import sys

    import duckdb

    pa = sys.modules.get("pyarrow")
    return isinstance(exc, duckdb.Error | OSError) or (pa is not None and isinstance(exc, pa.ArrowException))


def _record(path: str, bad: Bad, ingested_at: datetime) -> dict[str, Any]:
    return {
        "_source_file": path,
        "_line": bad.line,
        "_raw": bad.raw,
        "_reason": bad.reason,
        "_ingested_at": ingested_at,
    }


def _load_excel(con: duckdb.DuckDBPyConnection) -> None:
    """Load the excel extension from its wheel, once (``engine.load_extensions`` covers only its own list).

    Raises:
        RatatouilleError: the wheel is missing or the extension does not load.
    """
    import duckdb

    from ratatouille.engine import extension_path, literal
    from ratatouille.errors import RatatouilleError

    row = con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'excel'").fetchone()
    if row and row[0]:
        return
    path = extension_path("excel")
    try:
        con.execute(f"LOAD {literal(str(path))}")
    except duckdb.Error as exc:
        raise RatatouilleError(f"cannot load the DuckDB `excel` extension from {path}: {exc}") from exc
