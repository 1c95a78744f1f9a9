"""Our data-file metrics equal PyIceberg's, and the warehouse FileIO reads, writes and deletes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform, TruncateTransform

from ratatouille.engine import quote
from ratatouille.storage import types
from ratatouille.storage.stats import data_file_statistics, read_footers
from ratatouille.storage.writer import _new_schema
from ratatouille.workspace import Workspace
from storage.test_write_behaviour import ALL_TYPES

EDGES = """
SELECT
    i AS id,
    repeat('abcdefghij', 3) || i AS long_text,
    CASE WHEN i % 2 = 0 THEN 'zz' || chr(1114111) || chr(1114111) || repeat('q', 20) ELSE 'a' END AS top_chars,
    '' AS empty_text,
    NULL::VARCHAR AS only_nulls,
    NULL::BIGINT AS null_numbers,
    repeat('\\xFF', 20)::BLOB AS high_bytes,
    ('\\x5Cx41' || i)::BLOB AS backslash_bytes,
    (i % 700 / 7)::DECIMAL(4, 2) AS dec_int32,
    (i * 1234.567)::DECIMAL(18, 3) AS dec_int64,
    ((i % 9)::HUGEINT * 100000000000000000000000000 + 0.1234567891)::DECIMAL(38, 10) AS dec_wide,
    -(i / 3)::DECIMAL(9, 4) AS dec_negative,
    i::FLOAT / 3 AS f32,
    CASE WHEN i % 5 = 0 THEN 'NaN'::DOUBLE ELSE i / 3 END AS with_nan,
    TIMESTAMP '2026-01-01 00:00:00' + to_microseconds(i * 1001) AS ts_us,
    DATE '1960-01-01' + i::INTEGER AS old_day,
    uuid() AS real_uuid,
    TIME '10:00:00' + to_seconds(i) AS at_time,
    TIMESTAMPTZ '1969-12-31 23:59:59+00' + to_microseconds(i) AS ts_tz_pre_epoch,
    (i % 200)::UTINYINT AS tiny
FROM range(1, 3001) AS r(i)
"""


def write(con: duckdb.DuckDBPyConnection, path: Path, sql: str, row_group_size: int | None = None) -> Schema:
    """Write ``sql`` as the writer does: columns cast to the Iceberg schema's types, with field ids."""
    relation = con.sql(sql)
    schema = _new_schema([(n, types.to_iceberg(t, n)) for n, t in zip(relation.columns, relation.types, strict=True)])
    columns = ", ".join(
        f"CAST({quote(f.name)} AS {types.to_duckdb(f.field_type)}) AS {quote(f.name)}" for f in schema.fields
    )
    options = f"FORMAT parquet, FIELD_IDS {types.field_ids_option(schema)}, COMPRESSION zstd"
    if row_group_size:
        options += f", ROW_GROUP_SIZE {row_group_size}"
    con.execute(f"COPY (SELECT {columns} FROM ({sql})) TO '{path}' ({options})")
    return schema


def both(path: Path, schema: Schema, properties: dict[str, str]) -> tuple[Any, Any]:
    """Ours, from DuckDB's reading of the footer; PyIceberg's, from pyarrow's."""
    theirs = data_file_statistics_from_parquet_metadata(
        pq.read_metadata(path), compute_statistics_plan(schema, properties), parquet_path_to_id_mapping(schema)
    )
    footers = read_footers(duckdb.connect(), [str(path)])
    return data_file_statistics(footers[str(path)], schema, properties), theirs


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {"write.metadata.metrics.default": "counts"},
        {"write.metadata.metrics.default": "none", "write.metadata.metrics.column.id": "full"},
        {"write.metadata.metrics.default": "truncate(4)", "write.metadata.metrics.column.long_text": "none"},
        {"write.metadata.metrics.default": "full"},
    ],
    ids=["default", "counts", "none-but-id", "truncate4", "full"],
)
@pytest.mark.parametrize("sql", [ALL_TYPES, EDGES], ids=["all-types", "edges"])
@pytest.mark.parametrize("row_group_size", [None, 700], ids=["one-group", "groups"])
def test_metrics_equal_pyiceberg(
    tmp_path: Path, sql: str, properties: dict[str, str], row_group_size: int | None
) -> None:
    con = duckdb.connect()
    path = tmp_path / "data.parquet"
    schema = write(con, path, sql, row_group_size)
    ours, theirs = both(path, schema, properties)
    assert ours.to_serialized_dict() == theirs.to_serialized_dict()
    if row_group_size and sql is EDGES:  # DuckDB's row groups hold at least 2048 rows
        assert len(ours.split_offsets) > 1
    if not properties and sql is EDGES:
        lower = ours.to_serialized_dict()["lower_bounds"]
        assert lower and len(lower) >= 10  # bounds were really computed, not both empty


def test_partition_values_equal_pyiceberg(tmp_path: Path) -> None:
    con = duckdb.connect()
    path = tmp_path / "part.parquet"
    sql = (
        "SELECT i AS id, 'north' AS region, 'AB' || i AS code, "
        "TIMESTAMP '2026-03-04 05:06:07' + to_seconds(i) AS ts FROM range(100) AS r(i)"
    )
    schema = write(con, path, sql)
    ids = {f.name: f.field_id for f in schema.fields}
    spec = PartitionSpec(
        PartitionField(ids["region"], 1000, IdentityTransform(), "region"),
        PartitionField(ids["ts"], 1001, DayTransform(), "ts_day"),
        PartitionField(ids["code"], 1002, TruncateTransform(2), "code_trunc"),
    )
    ours, theirs = both(path, schema, {})
    assert ours.partition(spec, schema) == theirs.partition(spec, schema)
    assert ours.partition(spec, schema)[0] == "north"


def test_the_warehouse_file_io_reads_writes_and_deletes(workspace: Workspace) -> None:
    lakehouse = workspace.project.lakehouse
    io = lakehouse.catalog._load_file_io(lakehouse.io_properties())  # noqa: SLF001 - what the writer uses
    assert type(io).__name__ == "WarehouseFileIO"
    location = f"{lakehouse.warehouse}/scratch/probe.bin"
    if not lakehouse.is_s3:
        location = "file://" + location
    output = io.new_output(location)
    with output.create() as stream:
        stream.write(b"hello iceberg")
    with pytest.raises(FileExistsError):
        output.create()
    with output.create(overwrite=True) as stream:
        stream.write(b"hello again")
    assert output.exists() and len(output) == 11
    source = io.new_input(location)
    with source.open() as stream:
        stream.seek(6)
        assert stream.read() == b"again"
    io.delete(location)
    assert not io.new_input(location).exists()
    with pytest.raises(FileNotFoundError):
        io.new_input(location).open()
