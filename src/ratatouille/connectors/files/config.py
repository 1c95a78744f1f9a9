"""The ``sources/<name>.yaml`` of a files source (``type: files``), as frozen pydantic models.

Example::

    name: sales
    type: files
    path: landing/sales/*.csv          # glob; 'landing/' = the configured landing zone (local or s3://)
    format: csv                        # csv | tsv | json | ndjson | parquet | excel (default: from the extension)
    options: {header: true, delimiter: ",", skip_rows: 0, quote: '"', encoding: utf-8}
    columns: {txn_id: bigint, unit_price: decimal(10,2)}
    filename_pattern: 'sales_(?P<store_group>\\w+)_(?P<date>\\d{4}-\\d{2}-\\d{2})\\.csv'
    on_error: quarantine               # quarantine | fail
    schema_drift: evolve               # evolve | fail (enforced by the writer)

``options`` depend on the format; each format has its own model below and rejects keys it does
not know, naming the ones it takes. ``columns`` values are DuckDB type names: their spelling is
checked here, whether DuckDB knows them is checked when the source is read
(:meth:`FilesSourceConfig.check_column_types`), so loading a project never imports DuckDB.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ratatouille.connectors.base import SourceConfig
from ratatouille.errors import ConfigError, Problem

if TYPE_CHECKING:
    import duckdb

FileFormat = Literal["csv", "tsv", "json", "ndjson", "parquet", "excel"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "json", "ndjson", "parquet", "excel")

# Columns every output carries besides the file's own.
SOURCE_FILE_COLUMN = "_source_file"
INGESTED_AT_COLUMN = "_ingested_at"
RESERVED_COLUMNS = (SOURCE_FILE_COLUMN, INGESTED_AT_COLUMN)

_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "excel",
}
_COMPRESSIONS = (".gz", ".zst", ".zstd")
# A DuckDB type name as written in YAML: BIGINT, decimal(10,2), VARCHAR[], STRUCT(a INT, "b c" VARCHAR),
# TIMESTAMP WITH TIME ZONE. No quotes other than double quotes, no statement separators or comments.
_TYPE = re.compile(r'^[A-Za-z][A-Za-z0-9_ ,()\[\]"]*$')
_ENCODINGS: dict[str, str] = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "utf-16": "utf-16",
    "utf16": "utf-16",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "iso-8859-1": "latin-1",
    "iso8859-1": "latin-1",
}


def _error(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as written (no ``Value error,`` prefix)."""
    return PydanticCustomError("files_config", message)


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CsvOptions(_Options):
    """Options of ``format: csv``.

    Attributes:
        header: the first line (after ``skip_rows``) holds the column names.
        delimiter: the field separator (one character, or a few for exotic files).
        quote: the quote character; ``""`` for files that never quote.
        escape: the character escaping a quote inside a quoted value; defaults to ``quote`` (``""``).
        skip_rows: lines of junk above the header (or the data) to skip.
        encoding: ``utf-8``, ``utf-16`` or ``latin-1``.
        sample_size: rows the type sniffer looks at; ``-1`` reads the whole file first.
        null_values: strings read as NULL (default: the empty string).
        date_format / timestamp_format: strptime formats, e.g. ``%d/%m/%Y`` (default: detected).
        decimal_separator: ``.`` or ``,``.
    """

    header: bool = True
    delimiter: str = ","
    quote: str = '"'
    escape: str | None = None
    skip_rows: int = Field(default=0, ge=0)
    encoding: str = "utf-8"
    sample_size: int = Field(default=20480, ge=-1)
    null_values: list[str] | None = None
    date_format: str | None = None
    timestamp_format: str | None = None
    decimal_separator: Literal[".", ","] = "."

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if not value or len(value.encode()) > 4 or any(ch in value for ch in "\r\n"):
            raise _error("must be 1 to 4 bytes and no line break, e.g. `,`, `;`, `|` or `\\t`")
        return value

    @field_validator("quote", "escape")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 1 or value in ("\r", "\n")):
            raise _error('must be a single character (or "" for none)')
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        canonical = _ENCODINGS.get(value.strip().lower())
        if canonical is None:
            raise _error(f"unsupported encoding `{value}`; use utf-8, utf-16 or latin-1")
        return canonical

    @field_validator("sample_size")
    @classmethod
    def _sample(cls, value: int) -> int:
        if value == 0:
            raise _error("must be a positive number of rows, or -1 for the whole file")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> CsvOptions:
        if self.quote and self.quote == self.delimiter:
            raise _error("`quote` and `delimiter` must differ")
        return self

    @property
    def escape_char(self) -> str:
        """The escape character actually used (the quote unless set)."""
        return self.quote if self.escape is None else self.escape


class TsvOptions(CsvOptions):
    """Options of ``format: tsv``: those of CSV with a tab as the delimiter."""

    delimiter: str = "\t"


class JsonOptions(_Options):
    """Options of ``format: json`` (an array of objects, or objects one after another) and ``ndjson``.

    Attributes:
        sample_size: records the schema is inferred from; ``-1`` (the default) reads the whole
            file first, so a key that appears only late is not dropped.
        date_format / timestamp_format: strptime formats of dates and timestamps held in strings.
        maximum_object_size: the largest record, in bytes.
    """

    sample_size: int = Field(default=-1, ge=-1)
    date_format: str | None = None
    timestamp_format: str | None = None
    maximum_object_size: int = Field(default=16 * 1024 * 1024, gt=0)

    @field_validator("sample_size")
    @classmethod
    def _sample(cls, value: int) -> int:
        if value == 0:
            raise _error("must be a positive number of records, or -1 for the whole file")
        return value


class ParquetOptions(_Options):
    """``format: parquet`` takes no options: the file carries its schema."""


class ExcelOptions(_Options):
    """Options of ``format: excel`` (``.xlsx``).

    Attributes:
        sheet: the sheet to read (default: the first one).
        header: the first row (after ``skip_rows``) holds the column names.
        skip_rows: rows of junk (titles, notes) above the header.
    """

    sheet: str | None = None
    header: bool = True
    skip_rows: int = Field(default=0, ge=0)

    @field_validator("sheet")
    @classmethod
    def _sheet(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise _error("must name a sheet (leave it out to read the first one)")
        return value


FormatOptions = CsvOptions | JsonOptions | ParquetOptions | ExcelOptions

OPTIONS: dict[str, type[_Options]] = {
    "csv": CsvOptions,
    "tsv": TsvOptions,
    "json": JsonOptions,
    "ndjson": JsonOptions,
    "parquet": ParquetOptions,
    "excel": ExcelOptions,
}


def format_from_path(path: str) -> str | None:
    """The format a path's extension implies (``x.csv.gz`` -> ``csv``), or ``None``."""
    name = path.rsplit("/", 1)[-1].lower()
    for suffix in _COMPRESSIONS:
        name = name.removesuffix(suffix)
    dot = name.rfind(".")
    return _EXTENSIONS.get(name[dot:]) if dot >= 0 else None


class FilesSourceConfig(SourceConfig):
    """A ``type: files`` source: files in the landing zone, one bronze table.

    Attributes:
        path: a glob (``*``, ``?``, ``**``); ``landing/...`` is the configured landing zone.
        format: the file format; defaults to the one the extension of ``path`` implies.
        options: format options (see :class:`CsvOptions`, :class:`JsonOptions`, :class:`ExcelOptions`).
        columns: DuckDB types of some columns; the others are inferred.
        filename_pattern: a regular expression matched against each file's name (then its
            full path); its named groups become string columns.
    """

    type: Literal["files"]
    path: str
    format: FileFormat
    options: FormatOptions = Field(default_factory=CsvOptions, validate_default=True)
    columns: dict[str, str] = {}
    filename_pattern: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and "format" not in data and isinstance(data.get("path"), str):
            guessed = format_from_path(data["path"])
            if guessed is None:
                raise _error(
                    f"cannot tell the format of `{data['path']}` from its extension; "
                    f"add `format:` one of {', '.join(FORMATS)}"
                )
            data = {**data, "format": guessed}
        return data

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip():
            raise _error("must be a file or a glob, e.g. landing/sales/*.csv")
        if value.endswith("/"):
            raise _error(f"`{value}` is a folder; add a file glob, e.g. {value}*.csv")
        return value.strip()

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any, info: ValidationInfo) -> Any:
        fmt = info.data.get("format")
        if fmt not in OPTIONS:
            return CsvOptions()  # the format itself is reported invalid
        model = OPTIONS[fmt]
        if value is None:
            value = {}
        if isinstance(value, BaseModel):
            value = value.model_dump(exclude_unset=True)
        if not isinstance(value, dict):
            raise _error(f"must be a mapping of {fmt} options, e.g. {{header: true}}")
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            allowed = ", ".join(sorted(model.model_fields)) or "none"
            errors: list[Any] = []
            for err in exc.errors():
                message = err["msg"]
                if err["type"] == "extra_forbidden":
                    message = f"`{err['loc'][-1]}` is not an option of format {fmt}; {fmt} options: {allowed}"
                errors.append({"type": _error(message), "loc": err["loc"], "input": err.get("input")})
            raise ValidationError.from_exception_data(cls.__name__, errors) from None

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, kind in value.items():
            if not name.strip():
                raise _error("column names must not be empty")
            if name in RESERVED_COLUMNS:
                raise _error(f"`{name}` is added by Ratatouille and cannot be typed")
            if not isinstance(kind, str) or not _TYPE.match(kind.strip()):
                raise _error(
                    f"`{name}: {kind}` is not a DuckDB type name; write one like bigint, varchar, "
                    "decimal(10,2), date or timestamp"
                )
        return {name.strip(): kind.strip() for name, kind in value.items()}

    @field_validator("filename_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise _error(f"is not a valid regular expression: {exc}") from None
        if not compiled.groupindex:
            raise _error("has no named group; name the parts to keep, e.g. sales_(?P<store>\\w+)\\.csv")
        for name in compiled.groupindex:
            if name in RESERVED_COLUMNS:
                raise _error(f"group `{name}` would replace a column Ratatouille adds; rename it")
        return value

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """``filename_pattern`` compiled."""
        return re.compile(self.filename_pattern) if self.filename_pattern else None

    @property
    def pattern_groups(self) -> list[str]:
        """The named groups of ``filename_pattern``, in order: the extra string columns."""
        pattern = self.pattern
        if pattern is None:
            return []
        return [name for name, _ in sorted(pattern.groupindex.items(), key=lambda item: item[1])]

    def check_column_types(self, con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        """Check that DuckDB knows every type in ``columns``, by casting NULL to each.

        Returns:
            The columns with DuckDB's canonical type names (``decimal(10,2)`` -> ``DECIMAL(10,2)``).

        Raises:
            ConfigError: naming every column whose type DuckDB does not know.
        """
        import duckdb

        canonical: dict[str, str] = {}
        problems: list[Problem] = []
        for name, kind in self.columns.items():
            try:
                row = con.execute(f"SELECT typeof(CAST(NULL AS {kind}))").fetchone()
            except duckdb.Error as exc:
                reason = str(exc).splitlines()[0]
                problems.append(
                    Problem(
                        f"sources/{self.name}.yaml",
                        None,
                        f"columns.{name}",
                        f"`{kind}` is not a DuckDB type ({reason})",
                    )
                )
                continue
            canonical[name] = str(row[0]) if row else kind
        if problems:
            raise ConfigError(problems)
        return canonical
