"""The files connector (``type: files``): every format, quarantine of bad rows, S3, the POS sample."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import SecretStr, ValidationError

from ratatouille.config import S3Config
from ratatouille.connectors.base import Output, ReadContext
from ratatouille.connectors.files.config import CsvOptions, ExcelOptions, FilesSourceConfig, TsvOptions
from ratatouille.connectors.files.reader import FilesConnector
from ratatouille.connectors.registry import connector_class
from ratatouille.engine import Profile, connect, extension_path
from ratatouille.errors import ConfigError, ConnectorError
from ratatouille.sample.pos import generate_pos
from ratatouille.storage.files import Landing

LOG = logging.getLogger("test.files")
TINY = Profile(name="tiny", memory_limit="1GB", threads=2, max_parallel_pipelines=1)


# --- helpers ------------------------------------------------------------------------------------------------------


class Read:
    """One file's output: its rows (as a table) and its quarantine records.

    With ``sql_outputs`` the ingestion runs the outputs' queries (one may read several files)
    and then exhausts every output's batches; ``queried`` is this file's share of those rows."""

    def __init__(self, output: Output, queried: pa.Table | None = None) -> None:
        self.output = output
        tables = [queried] if queried is not None else []
        batches = list(output.batches)  # quarantine is complete only after this
        tables += [pa.Table.from_batches([b]) for b in batches]
        self.table = pa.concat_tables(tables, promote_options="permissive") if tables else None
        if self.table is None and output.schema is not None:
            self.table = output.schema.empty_table()
        self.schema = self.table.schema if self.table is not None else None
        self.quarantine = output.quarantine

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.table.to_pylist() if self.table is not None else []

    @property
    def lines(self) -> list[int | None]:
        return [q["_line"] for q in self.quarantine]

    def column(self, name: str) -> list[Any]:
        assert self.table is not None
        return self.table.column(name).to_pylist()


SQL_MODE = {"on": False}


@pytest.fixture(params=["arrow", "sql"])
def csv_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a CSV test both ways the connector reads: Arrow batches, and ``sql_outputs`` (as ``rat ingest``)."""
    monkeypatch.setitem(SQL_MODE, "on", request.param == "sql")


def config(path: str, **keys: Any) -> FilesSourceConfig:
    return FilesSourceConfig.model_validate({"name": "sales", "type": "files", "path": path, **keys})


def connector(landing: Path | Landing, path: str, **keys: Any) -> FilesConnector:
    land = landing if isinstance(landing, Landing) else Landing(str(landing), S3Config())
    conn = FilesConnector(config(path, **keys), landing=land, profile=TINY, temp_directory=Path(land.root) / ".tmp")
    if SQL_MODE["on"]:
        conn.sql_outputs = True
        conn.con = connect(TINY, Path(land.root) / ".tmp" / "duckdb")
    return conn


def read(conn: FilesConnector, files: list[str] | None = None, batch_rows: int = 100_000) -> list[Read]:
    state: dict[str, Any] = {} if files is None else {"files": files}
    try:
        outputs = list(conn.read(ReadContext(state=state, log=LOG, batch_rows=batch_rows)))
        if not SQL_MODE["on"]:
            return [Read(out) for out in outputs]
        assert conn.con is not None
        results = [conn.con.sql(out.sql).arrow().read_all() for out in outputs if out.sql is not None]
        queried = pa.concat_tables(results, promote_options="permissive") if results else None
        paths = [conn._landing().resolve(f) for f in files] if files is not None else conn.files()
        reads = []
        queries = " ".join(out.sql for out in outputs if out.sql is not None)
        for out, path in zip(outputs, paths, strict=True):
            read_by_sql = queried is not None and "'" + path.replace("'", "''") + "'" in queries
            mine = queried.filter(pc.field("_source_file") == path) if read_by_sql and queried is not None else None
            reads.append(Read(out, mine))
        return reads
    finally:
        conn.close()
        if SQL_MODE["on"] and conn.con is not None:
            conn.con.close()


def read_one(landing: Path | Landing, path: str, **keys: Any) -> Read:
    reads = read(connector(landing, path, **keys))
    assert len(reads) == 1
    return reads[0]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def data_lines(path: Path) -> int:
    """Lines after the header that hold something."""
    return sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:] if line.strip())


@pytest.fixture
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{extension_path('excel')}'")
    yield con
    con.close()


# --- configuration ------------------------------------------------------------------------------------------------


def test_registry_finds_the_files_connector() -> None:
    assert connector_class("files") is FilesConnector


def test_format_comes_from_the_extension_and_options_are_per_format() -> None:
    assert config("landing/s/*.csv").format == "csv"
    assert config("landing/s/*.csv.gz").format == "csv"
    assert config("landing/s/*.jsonl").format == "ndjson"
    assert config("landing/s/*.xlsx").format == "excel"
    tsv = config("landing/s/*.tsv")
    assert isinstance(tsv.options, TsvOptions) and tsv.options.delimiter == "\t"
    excel = config("landing/s/*.xlsx", options={"sheet": "Sales", "skip_rows": 2})
    assert excel.options == ExcelOptions(sheet="Sales", header=True, skip_rows=2)
    assert config("landing/s/*.csv", options={"encoding": "LATIN1"}).options == CsvOptions(encoding="latin-1")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"path": "landing/s/*"}, "add `format:`"),
        ({"options": {"sheet": "x"}}, "`sheet` is not an option of format csv; csv options: date_format"),
        ({"format": "parquet", "options": {"header": True}}, "parquet options: none"),
        ({"options": {"delimiter": ""}}, "must be 1 to 4 bytes"),
        ({"options": {"encoding": "ebcdic"}}, "unsupported encoding"),
        ({"options": {"quote": ","}}, "`quote` and `delimiter` must differ"),
        ({"columns": {"id": "bigint; DROP TABLE x"}}, "is not a DuckDB type name"),
        ({"filename_pattern": "sales_(\\w+)"}, "has no named group"),
        ({"filename_pattern": "(?P<_source_file>x)"}, "would replace a column"),
        ({"filename_pattern": "(?P<a"}, "not a valid regular expression"),
        ({"format": "xml"}, "Input should be"),
    ],
)
def test_invalid_configs_say_what_is_wrong(keys: dict[str, Any], message: str) -> None:
    data = {"name": "sales", "type": "files", "path": "landing/s/*.csv", **keys}
    with pytest.raises(ValidationError) as info:
        FilesSourceConfig.model_validate(data)
    assert message in str(info.value)


def test_unknown_duckdb_type_is_reported_when_read(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a.csv", "id\n1\n")
    with pytest.raises(ConfigError, match=r"columns.id: `bigblob` is not a DuckDB type"):
        read(connector(tmp_path, "landing/s/*.csv", columns={"id": "bigblob"}))


# --- CSV: clean files ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("csv_mode")
def test_glob_gives_one_output_per_file_with_pattern_columns(tmp_path: Path) -> None:
    for group, day, rows in [("north", "2026-01-01", 2), ("south", "2026-01-01", 1), ("north", "2026-01-02", 3)]:
        body = "".join(f"{i},{group}-{i}\n" for i in range(rows))
        write(tmp_path / "sales" / f"sales_{group}_{day}.csv", "txn_id,label\n" + body)
    write(tmp_path / "sales" / "notes.txt", "not a csv")
    conn = connector(
        tmp_path,
        "landing/sales/*.csv",
        filename_pattern=r"sales_(?P<store_group>\w+)_(?P<date>\d{4}-\d{2}-\d{2})\.csv",
    )
    reads = read(conn)
    assert [len(r.rows) for r in reads] == [2, 3, 1]  # sorted by path
    first = reads[0]
    assert first.schema is not None
    assert first.schema.names == ["txn_id", "label", "store_group", "date", "_source_file", "_ingested_at"]
    assert first.schema.field("_ingested_at").type == pa.timestamp("us", tz="UTC")
    assert first.rows[0]["store_group"] == "north" and first.rows[0]["date"] == "2026-01-01"
    assert first.column("_source_file") == [str(tmp_path / "sales" / "sales_north_2026-01-01.csv")] * 2
    stamps = {r.column("_ingested_at")[0] for r in reads}
    assert len(stamps) == 1  # one timestamp for the whole read
    assert abs((stamps.pop() - datetime.now(UTC)).total_seconds()) < 60
    assert all(not r.quarantine for r in reads)


def test_reads_only_the_files_the_ingestion_layer_passes(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / "in" / f"{name}.csv", "x\n1\n")
    conn = connector(tmp_path, "landing/in/*.csv")
    reads = read(conn, files=[str(tmp_path / "in" / "c.csv"), "landing/in/a.csv"])
    assert [r.column("_source_file")[0] for r in reads] == [str(tmp_path / "in" / n) for n in ("c.csv", "a.csv")]
    assert read(connector(tmp_path, "landing/in/*.csv"), files=[]) == []


@pytest.mark.usefixtures("csv_mode")
def test_explicit_types_override_inference_and_names_are_stripped(tmp_path: Path) -> None:
    write(
        tmp_path / "s" / "a.csv",
        " txn_id , unit_price,qty ,sold_on\n1,2.50,3,2026-01-02\n2,10.10,1,2026-01-03\n",
    )
    r = read_one(tmp_path, "landing/s/a.csv", columns={"txn_id": "varchar", "unit_price": "decimal(10,2)"})
    assert r.schema is not None
    assert r.schema.names[:4] == ["txn_id", "unit_price", "qty", "sold_on"]
    assert r.schema.field("txn_id").type == pa.string()
    assert r.schema.field("unit_price").type == pa.decimal128(10, 2)
    assert r.schema.field("qty").type == pa.int64()  # inferred
    assert r.schema.field("sold_on").type == pa.date32()  # inferred
    assert r.rows[0]["unit_price"] == Decimal("2.50") and r.rows[1]["sold_on"] == date(2026, 1, 3)


@pytest.mark.usefixtures("csv_mode")
def test_tsv_semicolons_latin1_and_skip_rows(tmp_path: Path) -> None:
    write(tmp_path / "t" / "a.tsv", "id\tname\n1\tx y\n2\tz\n")
    assert read_one(tmp_path, "landing/t/a.tsv").column("name") == ["x y", "z"]
    write(tmp_path / "l" / "a.csv", "exported by SAP\n\nid;name\n1;Zoë\n".encode("latin-1"))
    r = read_one(tmp_path, "landing/l/a.csv", options={"delimiter": ";", "encoding": "latin-1", "skip_rows": 2})
    assert r.rows[0]["id"] == 1 and r.rows[0]["name"] == "Zoë"


# --- CSV: dirty files ---------------------------------------------------------------------------------------------

DIRTY = (
    "txn_id,store,amount\n"  # 1
    "1,S001,1.50\n"  # 2
    '2,"S002,2.50\n'  # 3  unterminated quote: swallows the next lines in DuckDB
    "3,S003,3.50\n"  # 4
    "4,S004,4.50,extra\n"  # 5  too many fields
    "5,S005\n"  # 6  too few fields
    "abc,S006,6.50\n"  # 7  not a bigint
    '7,"S""007",7.50\n'  # 8  a closing quote for line 3's: DuckDB's runaway value ends here
    "8,S008,8.50\n"  # 9
    '9,"multi\nline",9.50\n'  # 10-11  a legitimate quoted line break
    "10,S010,ten\n"  # 12 not a double
    "11,S011,11.50\n"  # 13
)


@pytest.mark.usefixtures("csv_mode")
def test_dirty_csv_rows_are_quarantined_with_line_and_raw_text(tmp_path: Path) -> None:
    path = write(tmp_path / "s" / "dirty.csv", DIRTY)
    r = read_one(tmp_path, "landing/s/dirty.csv", columns={"txn_id": "bigint", "amount": "double"})
    assert sorted(r.column("txn_id")) == [1, 3, 7, 8, 9, 11]
    assert r.lines == [3, 5, 6, 7, 12]
    by_line = {q["_line"]: q for q in r.quarantine}
    assert by_line[3]["_raw"] == '2,"S002,2.50' and "bad quoting" in by_line[3]["_reason"]
    assert by_line[5]["_raw"] == "4,S004,4.50,extra" and "too many fields" in by_line[5]["_reason"]
    assert by_line[6]["_raw"] == "5,S005" and "too few fields" in by_line[6]["_reason"]
    assert by_line[7]["_raw"] == "abc,S006,6.50" and '"abc"' in by_line[7]["_reason"]
    assert by_line[12]["_raw"] == "10,S010,ten" and "DOUBLE" in by_line[12]["_reason"]
    for record in r.quarantine:
        assert set(record) == {"_source_file", "_line", "_raw", "_reason", "_ingested_at"}
        assert record["_source_file"] == str(path)
    assert r.rows[0]["_ingested_at"] == r.quarantine[0]["_ingested_at"]
    # Nothing lost: every data line is a row or a quarantine record (the quoted line break makes 2 lines 1 row).
    assert len(r.rows) + len(r.quarantine) == data_lines(path) - 1


@pytest.mark.usefixtures("csv_mode")
def test_unterminated_quote_does_not_swallow_the_rest_of_a_big_file(tmp_path: Path) -> None:
    lines = ["id,name"] + [f"{i},n{i}" for i in range(1, 50_001)]
    lines[10] = '10,"broken'
    lines[30_000] = "30000,a,b"
    path = write(tmp_path / "s" / "big.csv", "\n".join(lines) + "\n")
    r = read_one(tmp_path, "landing/s/big.csv", columns={"id": "bigint"})
    assert r.lines == [11, 30_001]
    assert len(r.rows) == 50_000 - 2
    assert sorted(r.column("id")) == [i for i in range(1, 50_001) if i not in (10, 30_000)]
    assert len(r.rows) + len(r.quarantine) == data_lines(path)


@pytest.mark.usefixtures("csv_mode")
def test_crlf_line_numbers(tmp_path: Path) -> None:
    write(tmp_path / "s" / "w.csv", "id,name\r\n1,a\r\n2\r\n3,c\r\nx,d\r\n")
    r = read_one(tmp_path, "landing/s/w.csv", columns={"id": "bigint"})
    assert r.column("name") == ["a", "c"]
    assert [(q["_line"], q["_raw"]) for q in r.quarantine] == [(3, "2"), (5, "x,d")]


@pytest.mark.usefixtures("csv_mode")
def test_one_odd_value_inside_the_sample_widens_the_column(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a.csv", "id,qty\n1,1\n2,two\n3,3\n")
    r = read_one(tmp_path, "landing/s/a.csv")
    assert r.schema is not None and r.schema.field("qty").type == pa.string()
    assert r.column("qty") == ["1", "two", "3"] and not r.quarantine


@pytest.mark.usefixtures("csv_mode")
def test_a_value_past_the_sniffer_sample_is_quarantined_not_dropped(tmp_path: Path) -> None:
    rows = [f"{i},{i * 10}" for i in range(1, 3001)]
    rows[2500] = "2501,n/a"
    path = write(tmp_path / "s" / "a.csv", "id,qty\n" + "\n".join(rows) + "\n")
    r = read_one(tmp_path, "landing/s/a.csv", options={"sample_size": 100})
    assert r.schema is not None and r.schema.field("qty").type == pa.int64()
    assert [(q["_line"], q["_raw"]) for q in r.quarantine] == [(2502, "2501,n/a")]
    assert len(r.rows) + len(r.quarantine) == data_lines(path) == 3000
    whole = read_one(tmp_path, "landing/s/a.csv", options={"sample_size": -1})
    assert whole.schema is not None and whole.schema.field("qty").type == pa.string() and not whole.quarantine


@pytest.mark.usefixtures("csv_mode")
def test_on_error_fail_names_file_line_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "s" / "dirty.csv", DIRTY)
    conn = connector(tmp_path, "landing/s/*.csv", columns={"txn_id": "bigint"}, on_error="fail")
    with pytest.raises(ConnectorError, match=rf"^{path}:3: bad quoting: .*set `on_error: quarantine`"):
        read(conn)
    other = write(tmp_path / "t" / "b.csv", "id,name\n1,a\n2\n3,c\nx,d\n4,e,f\n")
    conn = connector(tmp_path, "landing/t/*.csv", columns={"id": "bigint"}, on_error="fail")
    with pytest.raises(ConnectorError, match=rf"^{other}:3: too few fields: .* \(and 2 more bad rows\)"):
        read(conn)


def test_on_error_fail_on_an_unreadable_file(tmp_path: Path) -> None:
    write(tmp_path / "p" / "x.parquet", b"PAR1 garbage")
    with pytest.raises(ConnectorError, match=r"x\.parquet: .*magic bytes"):
        read(connector(tmp_path, "landing/p/*.parquet", on_error="fail"))


@pytest.mark.usefixtures("csv_mode")
def test_empty_files_give_no_rows_and_no_quarantine(tmp_path: Path) -> None:
    write(tmp_path / "e" / "a.csv", "")
    write(tmp_path / "e" / "b.csv", "id,name\n")
    empty, header_only = read(connector(tmp_path, "landing/e/*.csv"))
    assert (empty.schema, empty.rows, empty.quarantine) == (None, [], [])
    assert header_only.schema is not None and header_only.schema.names[:2] == ["id", "name"]
    assert header_only.rows == [] and header_only.quarantine == []
    write(tmp_path / "j" / "a.ndjson", "\n\n")
    write(tmp_path / "j" / "b.json", "[]")
    for path in ("landing/j/a.ndjson", "landing/j/b.json"):
        r = read_one(tmp_path, path)
        assert (r.schema, r.rows, r.quarantine) == (None, [], [])


@pytest.mark.usefixtures("csv_mode")
def test_gzipped_csv_line_numbers(tmp_path: Path) -> None:
    import gzip

    write(tmp_path / "z" / "a.csv.gz", gzip.compress(b"id,name\n1,a\n2\n3,c\n"))
    r = read_one(tmp_path, "landing/z/*.csv.gz")
    assert r.column("name") == ["a", "c"] and [(q["_line"], q["_raw"]) for q in r.quarantine] == [(3, "2")]


def test_quarantine_is_complete_once_batches_are_consumed(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a.csv", "id\n1\nx\n")
    conn = connector(tmp_path, "landing/s/a.csv", columns={"id": "int"})
    (output,) = list(conn.read(ReadContext(state={}, log=LOG)))
    assert output.quarantine == [] and output.table == "" and output.mode == "append"
    assert sum(b.num_rows for b in output.batches) == 1
    assert [q["_raw"] for q in output.quarantine] == ["x"]
    conn.close()


def test_uses_the_callers_connection(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a.csv", "id\n1\n2\n")
    con = connect(TINY, tmp_path / "duck")
    try:
        conn = connector(tmp_path, "landing/s/a.csv")
        conn.con = con
        (r,) = read(conn)
        assert r.column("id") == [1, 2]
        assert con.execute("SELECT 42").fetchone() == (42,)  # still usable, not closed
        assert conn._own is None
    finally:
        con.close()


def test_describe_files_unifies_schemas(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a.csv", "id,name\n1,a\n")
    write(tmp_path / "s" / "b.csv", "id,name,extra\n2,b,true\n")
    conn = connector(tmp_path, "landing/s/*.csv")
    schema = conn.describe_files()
    conn.close()
    assert schema.names == ["id", "name", "_source_file", "_ingested_at", "extra"]


# --- JSON ---------------------------------------------------------------------------------------------------------


def test_ndjson_malformed_lines_go_to_quarantine_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "j" / "a.ndjson",
        '{"id": 1, "name": "a"}\n'  # 1
        "\n"  # 2 blank: skipped
        '{"id": 2, "name": "b"\n'  # 3 malformed
        '{"id": "x3", "name": "c"}\n'  # 4 not a bigint
        "[1, 2]\n"  # 5 not an object
        "{}\n"  # 6 an empty record: kept, all NULL
        '{"id": 5, "name": "e", "late_key": true}\n',  # 7
    )
    r = read_one(tmp_path, "landing/j/*.ndjson", columns={"id": "bigint"})
    assert r.schema is not None and r.schema.field("id").type == pa.int64()
    kept = sorted(((x["id"] or 0), x["name"], x["late_key"]) for x in r.rows)
    assert kept == [(0, None, None), (1, "a", None), (5, "e", True)]  # `{}` is a record whose values are all null
    assert set(r.column("_source_file")) == {str(path)}
    assert [(q["_line"], q["_raw"]) for q in r.quarantine] == [
        (3, '{"id": 2, "name": "b"'),
        (4, '{"id": "x3", "name": "c"}'),
        (5, "[1, 2]"),
    ]
    assert "malformed JSON" in r.quarantine[0]["_reason"]
    assert "column id" in r.quarantine[1]["_reason"] and "BIGINT" in r.quarantine[1]["_reason"]
    assert "not a JSON object" in r.quarantine[2]["_reason"]


def test_ndjson_a_truncated_line_does_not_take_the_next_one(tmp_path: Path) -> None:
    write(
        tmp_path / "j" / "t.ndjson",
        '{"id": 1, "at": "2026-01-01"}\n{"id": 2, "at": \n{"id": 3, "at": "2026-01-03"}\n{"id": "x", "at": null}\n',
    )
    r = read_one(tmp_path, "landing/j/t.ndjson", columns={"id": "integer"})
    assert r.schema is not None and r.schema.field("at").type == pa.date32()
    assert sorted(r.column("id")) == [1, 3]
    assert [(q["_line"], q["_raw"]) for q in r.quarantine] == [(2, '{"id": 2, "at": '), (4, '{"id": "x", "at": null}')]


def test_ndjson_bad_lines_in_a_bigger_file(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "v": i / 2}) for i in range(1, 20_001)]
    for index in (0, 9_999, 19_999):
        lines[index] = '{"id": oops'
    write(tmp_path / "j" / "big.ndjson", "\n".join(lines) + "\n")
    r = read_one(tmp_path, "landing/j/big.ndjson")
    assert r.lines == [1, 10_000, 20_000]
    assert len(r.rows) == 19_997


def test_json_array_file_and_a_malformed_one(tmp_path: Path) -> None:
    write(tmp_path / "j" / "a.json", json.dumps([{"id": 1, "tags": ["x"]}, {"id": 2, "tags": []}]))
    write(tmp_path / "j" / "b.json", '[{"id": 1}, {"id": 2')
    good, bad = read(connector(tmp_path, "landing/j/*.json"))
    assert good.column("id") == [1, 2] and good.column("tags") == [["x"], []]
    assert bad.schema is None and bad.rows == []
    assert len(bad.quarantine) == 1 and bad.quarantine[0]["_line"] is None
    assert bad.quarantine[0]["_source_file"].endswith("b.json") and bad.quarantine[0]["_reason"]


# --- Parquet ------------------------------------------------------------------------------------------------------


def test_parquet_with_explicit_types_and_a_corrupt_file(tmp_path: Path, duck: duckdb.DuckDBPyConnection) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    duck.execute(
        "COPY (SELECT range AS id, CASE WHEN range = 3 THEN 'n/a' ELSE CAST(range * 10 AS VARCHAR) END AS qty "
        f"FROM range(5)) TO '{folder / 'a.parquet'}' (FORMAT parquet)"
    )
    data = (folder / "a.parquet").read_bytes()
    write(folder / "b.parquet", data[: len(data) // 2])  # truncated
    good, corrupt = read(connector(tmp_path, "landing/p/*.parquet", columns={"qty": "integer"}))
    assert good.schema is not None and good.schema.field("qty").type == pa.int32()
    assert good.column("id") == [0, 1, 2, 4] and good.column("qty") == [0, 10, 20, 40]
    assert [(q["_line"], json.loads(q["_raw"])) for q in good.quarantine] == [(4, {"id": 3, "qty": "n/a"})]
    assert "cannot convert n/a to INTEGER" in good.quarantine[0]["_reason"]
    assert corrupt.rows == [] and [q["_line"] for q in corrupt.quarantine] == [None]


def test_parquet_corrupt_pages_quarantine_the_whole_file(tmp_path: Path, duck: duckdb.DuckDBPyConnection) -> None:
    target = tmp_path / "p" / "a.parquet"
    target.parent.mkdir()
    duck.execute(
        "COPY (SELECT range AS id, md5(CAST(range AS VARCHAR)) AS h FROM range(100000)) "
        f"TO '{target}' (FORMAT parquet, COMPRESSION uncompressed, ROW_GROUP_SIZE 20000)"
    )
    data = bytearray(target.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1000] = b"\xff" * 1000
    target.write_bytes(bytes(data))
    r = read_one(tmp_path, "landing/p/a.parquet")
    assert r.rows == [] and len(r.quarantine) == 1 and r.quarantine[0]["_line"] is None


# --- Excel --------------------------------------------------------------------------------------------------------


def test_excel_with_junk_rows_a_named_sheet_and_a_blank_row(tmp_path: Path, duck: duckdb.DuckDBPyConnection) -> None:
    target = tmp_path / "x" / "report.xlsx"
    target.parent.mkdir()
    rows = [
        ("Sales report", None, None),
        ("generated 2026-01-05", None, None),
        (" id ", "store", "amount"),
        ("1", "S001", "1.5"),
        ("2", "S002", "2.5"),
        (None, None, None),  # a blank row: the rows below it must not be lost
        ("oops", "S003", "3.5"),
        ("4", "S004", "4.5"),
    ]
    values = ", ".join("(" + ", ".join("NULL" if v is None else f"'{v}'" for v in row) + ")" for row in rows)
    duck.execute(
        f"COPY (SELECT * FROM (VALUES {values}) AS t(a, b, c)) TO '{target}' (FORMAT xlsx, HEADER false, SHEET 'Data')"
    )
    r = read_one(
        tmp_path,
        "landing/x/*.xlsx",
        options={"sheet": "Data", "skip_rows": 2},
        columns={"id": "bigint", "amount": "decimal(10,2)"},
    )
    assert r.schema is not None and r.schema.names[:3] == ["id", "store", "amount"]
    assert r.column("id") == [1, 2, 4] and r.column("amount") == [Decimal("1.5"), Decimal("2.5"), Decimal("4.5")]
    assert [q["_line"] for q in r.quarantine] == [7]  # the sheet's row number
    assert json.loads(r.quarantine[0]["_raw"])["id"] == "oops"
    assert "column id: cannot convert oops to BIGINT" in r.quarantine[0]["_reason"]

    missing = read_one(tmp_path, "landing/x/*.xlsx", options={"sheet": "Nope"})
    assert missing.rows == [] and "no sheet `Nope`; sheets: Data" in missing.quarantine[0]["_reason"]


def test_excel_typed_cells_and_inference_over_the_whole_sheet(tmp_path: Path, duck: duckdb.DuckDBPyConnection) -> None:
    target = tmp_path / "x" / "typed.xlsx"
    target.parent.mkdir()
    duck.execute(
        "COPY (SELECT range AS id, DATE '2026-01-01' + CAST(range AS INTEGER) AS day, range * 1.25 AS amount "
        f"FROM range(300)) TO '{target}' (FORMAT xlsx, HEADER true)"
    )
    r = read_one(tmp_path, "landing/x/typed.xlsx")
    assert r.schema is not None
    assert r.schema.field("day").type == pa.date32() and r.schema.field("amount").type == pa.float64()
    assert len(r.rows) == 300 and r.rows[299]["day"] == date(2026, 10, 27) and not r.quarantine


# --- S3 -----------------------------------------------------------------------------------------------------------


def _s3_landing(s3_server: Any, s3_prefix: str) -> Landing:
    s3 = S3Config(
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=SecretStr(s3_server.secret_access_key),
    )
    return Landing(s3_server.url(s3_prefix) + "/landing", s3)


def _upload(landing: Landing, path: str, data: bytes) -> None:
    fs, inner = landing.filesystem(landing.resolve(path))
    with fs.open_output_stream(inner) as out:
        out.write(data)


@pytest.mark.s3
def test_reads_csv_from_s3_through_landing(tmp_path: Path, s3_server: Any, s3_prefix: str) -> None:
    landing = _s3_landing(s3_server, s3_prefix)
    _upload(landing, "landing/sales/sales_east_2026-01-01.csv", b"txn_id,amount\n1,2.5\n2,x\n3,4.5\n")
    conn = FilesConnector(
        config(
            "landing/sales/*.csv",
            columns={"amount": "double"},
            filename_pattern=r"sales_(?P<store_group>\w+)_(?P<date>[\d-]+)\.csv",
        ),
        landing=landing,
        profile=TINY,
        temp_directory=tmp_path / "tmp",
    )
    (r,) = read(conn)
    assert r.column("txn_id") == [1, 3] and r.column("store_group") == ["east", "east"]
    assert r.column("_source_file")[0] == f"{s3_server.url(s3_prefix)}/landing/sales/sales_east_2026-01-01.csv"
    assert [(q["_line"], q["_raw"]) for q in r.quarantine] == [(3, "2,x")]


@pytest.mark.s3
def test_reads_ndjson_and_excel_from_s3(
    tmp_path: Path, s3_server: Any, s3_prefix: str, duck: duckdb.DuckDBPyConnection
) -> None:
    landing = _s3_landing(s3_server, s3_prefix)
    _upload(landing, "landing/events/a.ndjson", b'{"id": 1}\n{"id": \n{"id": 3}\n')
    (events,) = read(
        FilesConnector(config("landing/events/*.ndjson"), landing=landing, profile=TINY, temp_directory=tmp_path)
    )
    assert events.column("id") == [1, 3] and [(q["_line"], q["_raw"]) for q in events.quarantine] == [(2, '{"id": ')]

    local = tmp_path / "book.xlsx"
    duck.execute(
        f"COPY (SELECT range AS id, 'n' || range AS name FROM range(3)) TO '{local}' (FORMAT xlsx, HEADER true, SHEET 'S')"
    )
    _upload(landing, "landing/books/book.xlsx", local.read_bytes())
    (book,) = read(
        FilesConnector(
            config("landing/books/*.xlsx", options={"sheet": "S"}),
            landing=landing,
            profile=TINY,
            temp_directory=tmp_path,
        )
    )
    assert book.column("name") == ["n0", "n1", "n2"] and not book.quarantine


# --- the POS sample -----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("csv_mode")
def test_pos_sample_is_read_fully(tmp_path: Path) -> None:
    summary = generate_pos(tmp_path / "landing", rows=5000, days=3)
    landing = tmp_path / "landing"
    sales = read(
        connector(
            landing,
            "landing/sales/*.csv",
            columns={"txn_id": "bigint", "unit_price": "decimal(10,2)"},
            filename_pattern=r"sales_(?P<store_group>\w+)_(?P<date>\d{4}-\d{2}-\d{2})\.csv",
        )
    )
    assert len(sales) == len(list((landing / "sales").glob("*.csv")))
    assert sum(len(r.rows) for r in sales) == summary.rows
    assert all(not r.quarantine for r in sales)  # the dirt is semantic, not malformed
    table = pa.concat_tables([r.table for r in sales if r.table is not None], promote_options="permissive")
    assert {"north", "south", "east", "west"} == set(table.column("store_group").to_pylist())
    assert table.column("txn_id").null_count == 0
    assert table.column("unit_price").null_count > 0  # missing prices stay NULL
    for name, expected in (("stores", summary.stores), ("products", summary.products)):
        (r,) = read(connector(landing, f"landing/{name}/*.csv"))
        assert len(r.rows) == expected and not r.quarantine


@pytest.mark.usefixtures("csv_mode")
def test_fully_typed_files_are_not_sniffed_and_keep_their_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ratatouille.connectors.files import formats

    def no_sniff(self: formats.CsvFile) -> None:
        raise AssertionError("a fully typed file must not be sniffed")

    monkeypatch.setattr(formats.CsvFile, "_sniff", no_sniff)
    write(tmp_path / "s" / "a.csv", '\ufeff id ,"the, name",amount\n1,"a, b",1.5\nx,c,2\n3,d,2.5\n')
    r = read_one(tmp_path, "landing/s/a.csv", columns={"id": "bigint", "the, name": "varchar", "AMOUNT": "double"})
    assert r.schema is not None and r.schema.names[:3] == ["id", "the, name", "amount"]
    assert r.rows[0]["the, name"] == "a, b" and r.column("amount") == [1.5, 2.5]
    assert [(q["_line"], q["_raw"]) for q in r.quarantine] == [(3, "x,c,2")]


@pytest.mark.usefixtures("csv_mode")
def test_files_read_together_keep_their_own_rows_rejects_and_lines(tmp_path: Path) -> None:
    write(tmp_path / "m" / "a.csv", 'id,name\n1,a\nx,b\n3,"broken\n4,d\n5,e\n')
    write(tmp_path / "m" / "b.csv", "id,name\n10,k\n11,l,extra\n12,m\n")
    a, b = read(connector(tmp_path, "landing/m/*.csv", columns={"id": "bigint", "name": "varchar"}))
    assert sorted(a.column("id")) == [1, 4, 5] and sorted(b.column("id")) == [10, 12]
    assert set(a.column("_source_file")) == {str(tmp_path / "m" / "a.csv")}
    assert [(q["_line"], q["_raw"]) for q in a.quarantine] == [(3, "x,b"), (4, '3,"broken')]
    assert [(q["_line"], q["_raw"]) for q in b.quarantine] == [(3, "11,l,extra")]
    assert {q["_source_file"] for q in b.quarantine} == {str(tmp_path / "m" / "b.csv")}
