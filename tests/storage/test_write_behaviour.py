"""One behaviour suite for the write path, run on every backend (local + SQLite, S3 + PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pyarrow as pa
import pytest

from ratatouille.errors import DataError, SchemaError, TableNotFoundError
from ratatouille.storage.reader import AsOf
from ratatouille.storage.results import WriteResult
from ratatouille.workspace import Workspace

ALL_TYPES = """
SELECT
    i::BIGINT AS id,
    i::INTEGER AS small,
    (i * 1.5)::DOUBLE AS ratio,
    (i / 4)::DECIMAL(10, 2) AS amount,
    'name ' || i AS name,
    i % 2 = 0 AS even,
    DATE '2026-01-01' + i::INTEGER AS day,
    TIMESTAMP '2026-01-01 10:00:00' + to_hours(i) AS ts,
    TIMESTAMPTZ '2026-01-01 10:00:00+00' + to_hours(i) AS ts_tz,
    [i, i + 1] AS pair,
    {'a': i, 'b': 'x' || i} AS info,
    MAP {'k': i} AS attrs,
    '00000000-0000-0000-0000-00000000000' || (i % 10) AS uid_text,
    ('bytes' || i)::BLOB AS raw,
    CASE WHEN i % 3 = 0 THEN NULL ELSE i END AS maybe
FROM range(1, 101) AS r(i)
"""


def count(ws: Workspace, table: str) -> int:
    return int(ws.query(f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py())


def snapshots(ws: Workspace, table: str) -> int:
    return len(ws.history(table))


def test_create_and_append_keeps_every_type(workspace: Workspace) -> None:
    result = workspace.append("silver.typed", ALL_TYPES)
    assert result.created and result.rows_written == 100
    row = workspace.query("SELECT * FROM silver.typed WHERE id = 4").to_pylist()[0]
    assert row["amount"] == Decimal("1.00")
    assert row["day"] == dt.date(2026, 1, 5)
    assert row["ts"] == dt.datetime(2026, 1, 1, 14, 0)
    assert row["ts_tz"] == dt.datetime(2026, 1, 1, 14, 0, tzinfo=dt.UTC)
    assert row["pair"] == [4, 5]
    assert row["info"] == {"a": 4, "b": "x4"}
    assert row["raw"] == b"bytes4"
    assert workspace.query("SELECT count(*) AS n FROM silver.typed WHERE maybe IS NULL").column("n")[0].as_py() == 33
    types = {c["name"]: c["type"] for c in workspace.describe("silver.typed")["columns"]}
    assert types["amount"] == "decimal(10, 2)" and types["ts_tz"] == "timestamptz" and types["id"] == "long"

    workspace.append("silver.typed", ALL_TYPES)
    assert count(workspace, "silver.typed") == 200
    assert snapshots(workspace, "silver.typed") == 2


def test_append_from_arrow_stream_and_pandas(workspace: Workspace) -> None:
    schema = pa.schema([("id", pa.int64()), ("label", pa.string())])
    batches = [
        pa.record_batch([pa.array(range(i * 10, i * 10 + 10)), pa.array(["x"] * 10)], schema=schema) for i in range(5)
    ]
    reader = pa.RecordBatchReader.from_batches(schema, iter(batches))
    assert workspace.append("bronze.stream", reader).rows_written == 50
    import pandas as pd

    workspace.append("bronze.stream", pd.DataFrame({"id": [1000], "label": ["pandas"]}))
    assert count(workspace, "bronze.stream") == 51


def test_overwrite_replaces_everything(workspace: Workspace) -> None:
    workspace.append("silver.t", "SELECT range AS id FROM range(10)")
    result = workspace.overwrite("silver.t", "SELECT range + 100 AS id FROM range(3)")
    assert (result.rows_written, result.rows_deleted) == (3, 10)
    assert workspace.query("SELECT min(id) AS m FROM silver.t").column("m")[0].as_py() == 100


def test_overwrite_where_replaces_only_matching_rows(workspace: Workspace) -> None:
    workspace.append("silver.t", "SELECT range AS id, range % 3 AS g FROM range(30)")
    result = workspace.overwrite("silver.t", "SELECT 1000 + range AS id, 1 AS g FROM range(2)", where="g = 1")
    assert result.rows_deleted == 10 and result.rows_written == 2
    got = workspace.query("SELECT g, count(*) AS n FROM silver.t GROUP BY g ORDER BY g").to_pylist()
    assert got == [{"g": 0, "n": 10}, {"g": 1, "n": 2}, {"g": 2, "n": 10}]


def test_merge_updates_and_inserts_by_key(workspace: Workspace) -> None:
    workspace.append("silver.m", "SELECT range AS id, 'old' AS v FROM range(1000)")
    result = workspace.merge("silver.m", "SELECT range AS id, 'new' AS v FROM range(990, 1010)", unique_key="id")
    assert (result.rows_written, result.rows_deleted) == (20, 10)
    got = workspace.query("SELECT v, count(*) AS n, count(DISTINCT id) AS d FROM silver.m GROUP BY v ORDER BY v")
    assert got.to_pylist() == [{"v": "new", "n": 20, "d": 20}, {"v": "old", "n": 990, "d": 990}]


def test_merge_by_composite_key(workspace: Workspace) -> None:
    workspace.append("silver.c", "SELECT range % 10 AS a, range // 10 AS b, 0 AS v FROM range(100)")
    workspace.merge("silver.c", "SELECT 1 AS a, 1 AS b, 9 AS v UNION ALL SELECT 99, 99, 9", unique_key=["a", "b"])
    assert count(workspace, "silver.c") == 101
    assert workspace.query("SELECT sum(v) AS s FROM silver.c").column("s")[0].as_py() == 18


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("SELECT NULL::BIGINT AS id, 'x' AS v", "NULL in the merge key"),
        ("SELECT 1 AS id, 'x' AS v UNION ALL SELECT 1, 'y'", "duplicate key"),
    ],
)
def test_bad_merge_keys_write_nothing(workspace: Workspace, data: str, message: str) -> None:
    workspace.append("silver.k", "SELECT range AS id, 'a' AS v FROM range(5)")
    before = workspace.describe("silver.k")
    with pytest.raises(DataError, match=message):
        workspace.merge("silver.k", data, unique_key="id")
    after = workspace.describe("silver.k")
    assert after["snapshot_id"] == before["snapshot_id"]
    assert after["files"] == before["files"]


def test_new_columns_evolve_the_table(workspace: Workspace) -> None:
    workspace.append("silver.e", "SELECT 1 AS id")
    result = workspace.append("silver.e", "SELECT 2 AS id, 'hello' AS note")
    assert result.schema_changes == ("new column `note` string",)
    rows = workspace.query("SELECT id, note FROM silver.e ORDER BY id").to_pylist()
    assert rows == [{"id": 1, "note": None}, {"id": 2, "note": "hello"}]


def test_widening_a_type_evolves_the_table(workspace: Workspace) -> None:
    workspace.append("silver.w", "SELECT 1::INTEGER AS n")
    workspace.append("silver.w", "SELECT 3000000000::BIGINT AS n")
    assert workspace.describe("silver.w")["columns"][0]["type"] == "long"
    assert workspace.query("SELECT max(n) AS m FROM silver.w").column("m")[0].as_py() == 3_000_000_000


def test_schema_drift_fail_refuses_before_writing(workspace: Workspace) -> None:
    workspace.append("silver.f", "SELECT 1 AS id")
    with pytest.raises(SchemaError, match="new column `extra`"):
        workspace.append("silver.f", "SELECT 2 AS id, 3 AS extra", schema_drift="fail")
    assert snapshots(workspace, "silver.f") == 1
    assert [c["name"] for c in workspace.describe("silver.f")["columns"]] == ["id"]


def test_conflicting_type_fails_before_anything_is_committed(workspace: Workspace) -> None:
    workspace.append("silver.x", "SELECT 1 AS id, DATE '2026-01-01' AS day")
    with pytest.raises(SchemaError, match="column `day` is string in the data but date in the table"):
        workspace.append("silver.x", "SELECT 2 AS id, 'not a date' AS day")
    assert snapshots(workspace, "silver.x") == 1
    assert count(workspace, "silver.x") == 1


def test_failed_first_write_leaves_no_table(workspace: Workspace) -> None:
    with pytest.raises(DataError):
        workspace.merge("silver.never", "SELECT NULL::INT AS id", unique_key="id")
    with pytest.raises(TableNotFoundError):
        workspace.describe("silver.never")


@pytest.mark.parametrize(
    ("spec", "partitions"),
    [
        (["day(ts)"], 3),
        (["store"], 2),
        (["month(ts)", "store"], 2),
        (["truncate(2, sku)"], 2),
        (["bucket(4, id)"], None),
    ],
)
def test_partitioned_tables_write_one_file_per_partition(
    workspace: Workspace, spec: list[str], partitions: int | None
) -> None:
    data = """
        SELECT range AS id, TIMESTAMP '2026-03-01' + to_hours(range * 20) AS ts,
               CASE WHEN range % 2 = 0 THEN 'A' ELSE 'B' END AS store,
               CASE WHEN range < 2 THEN 'ab-1' ELSE 'cd-2' END AS sku
        FROM range(4)
    """
    workspace.append("silver.p", data, partition_by=spec)
    info = workspace.describe("silver.p")
    assert info["partitioning"] == spec
    table = workspace.load_table("silver.p")
    files = list(table.scan().plan_files())
    values = {tuple(f.file.partition) for f in files}
    assert len(files) == len(values)  # one file per partition value
    if partitions is not None:
        assert len(values) == partitions
    # Iceberg's own reader agrees with DuckDB's on the content.
    assert table.scan().to_arrow().num_rows == 4 == count(workspace, "silver.p")
    # A merge keeps partitioning.
    workspace.merge(
        "silver.p", "SELECT 0 AS id, TIMESTAMP '2026-03-05' AS ts, 'A' AS store, 'zz' AS sku", unique_key="id"
    )
    assert count(workspace, "silver.p") == 4
    assert table.refresh().scan().to_arrow().num_rows == 4


def test_partitioning_cannot_change_without_full_refresh(workspace: Workspace) -> None:
    workspace.append("silver.q", "SELECT 1 AS id, 'a' AS s", partition_by=["s"])
    with pytest.raises(SchemaError, match="full-refresh"):
        workspace.append("silver.q", "SELECT 2 AS id, 'b' AS s", partition_by=["id"])
    workspace.overwrite("silver.q", "SELECT 2 AS id, 'b' AS s", partition_by=["id"])
    assert workspace.describe("silver.q")["partitioning"] == ["id"]


def test_time_travel_by_snapshot_and_timestamp(workspace: Workspace) -> None:
    workspace.append("gold.tt", "SELECT 1 AS v")
    first = workspace.history("gold.tt")[0]
    time.sleep(0.05)
    moment = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    workspace.append("gold.tt", "SELECT 2 AS v")
    assert count(workspace, "gold.tt") == 2
    by_id = workspace.query("SELECT count(*) AS n FROM gold.tt", AsOf(snapshot_id=first["snapshot_id"]))
    assert by_id.column("n")[0].as_py() == 1
    by_time = workspace.query("SELECT count(*) AS n FROM gold.tt", AsOf(timestamp=moment.replace(tzinfo=None)))
    assert by_time.column("n")[0].as_py() == 1
    assert workspace.table("gold.tt", snapshot_id=first["snapshot_id"]).num_rows == 1
    assert workspace.table("gold.tt").num_rows == 2
    # After time travel, plain queries see main again.
    assert count(workspace, "gold.tt") == 2


def test_branch_writes_do_not_touch_main(workspace: Workspace) -> None:
    workspace.append("silver.b", "SELECT 1 AS v")
    table = workspace.load_table("silver.b")
    table.manage_snapshots().create_branch(table.current_snapshot().snapshot_id, "audit").commit()
    workspace.append("silver.b", "SELECT 2 AS v", branch="audit")
    assert count(workspace, "silver.b") == 1
    assert workspace.table("silver.b", ref="audit").num_rows == 2


def test_schema_changes_on_a_branch_stay_there_until_publish(workspace: Workspace) -> None:
    from ratatouille.storage.catalog import TableRef
    from ratatouille.storage.publish import Publication, publish

    workspace.append("silver.evo", "SELECT 1 AS v")
    table = workspace.load_table("silver.evo")
    base = table.current_snapshot().snapshot_id
    workspace.append("silver.evo", "SELECT 2 AS v, 'x' AS note", branch="audit")
    # A second write to the branch builds on the branch's schema: the column is not added twice.
    workspace.append("silver.evo", "SELECT 3 AS v, 'y' AS note", branch="audit")
    assert workspace.query("SELECT * FROM silver.evo").column_names == ["v"]  # main: unchanged
    assert [f.name for f in workspace.load_table("silver.evo").schema().fields] == ["v"]
    on_branch = workspace.table("silver.evo", ref="audit")
    assert sorted(on_branch.to_pylist(), key=lambda r: r["v"]) == [
        {"v": 1, "note": None},
        {"v": 2, "note": "x"},
        {"v": 3, "note": "y"},
    ]
    publish(workspace.project.lakehouse, [Publication(TableRef("default", "silver", "evo"), "audit", base)])
    assert [f.name for f in workspace.load_table("silver.evo").schema().fields] == ["v", "note"]
    assert workspace.query("SELECT count(note) AS n FROM silver.evo").to_pylist() == [{"n": 2}]


def test_a_full_overwrite_replaces_a_retyped_column_and_a_partial_one_refuses(workspace: Workspace) -> None:
    first = workspace.append("silver.retype", "SELECT 1 AS id, 10 AS amount, 'a' AS tag")
    with pytest.raises(SchemaError, match="--full-refresh"):
        workspace.overwrite("silver.retype", "SELECT 1 AS id, 'ten' AS amount, 'a' AS tag", where="id = 1")
    result = workspace.overwrite("silver.retype", "SELECT 2 AS id, 'twenty' AS amount, 'b' AS tag")
    assert result.schema_changes and "amount" in result.schema_changes[0]
    assert workspace.query("SELECT * FROM silver.retype").to_pylist() == [{"id": 2, "amount": "twenty", "tag": "b"}]
    # The old snapshot keeps its own schema.
    assert workspace.table("silver.retype", snapshot_id=first.snapshot_id).to_pylist() == [
        {"id": 1, "amount": 10, "tag": "a"}
    ]
    # Iceberg keeps partition fields bound to their column: retyping one is refused, untouched.
    workspace.append("silver.by_region", "SELECT 1 AS id, 'north' AS region", partition_by=["region"])
    with pytest.raises(SchemaError, match="partitioned on `region`, whose type changed"):
        workspace.overwrite("silver.by_region", "SELECT 2 AS id, 7 AS region")
    assert workspace.query("SELECT * FROM silver.by_region").to_pylist() == [{"id": 1, "region": "north"}]


def test_workspace_qualified_names(workspace: Workspace) -> None:
    workspace.append("gold.kpi", "SELECT 7 AS v")
    assert workspace.query('SELECT v FROM "default".gold.kpi').column("v")[0].as_py() == 7


def test_python_numbers_fit_decimal_columns(workspace: Workspace) -> None:
    workspace.append("silver.prices", "SELECT 1 AS id, 12.50::DECIMAL(10, 2) AS price")
    workspace.append("silver.prices", [{"id": 2, "price": 7.25}, {"id": 3, "price": 3}])
    assert workspace.query("SELECT sum(price) AS s FROM silver.prices").to_pylist() == [{"s": Decimal("22.75")}]
    with pytest.raises(DataError, match="cannot write the data"):
        workspace.append("silver.prices", [{"id": 4, "price": 1e20}])
    assert count(workspace, "silver.prices") == 3


def test_history_counts_logical_rows(workspace: Workspace) -> None:
    workspace.append("silver.h", "SELECT range AS id, 'a' AS v FROM range(300)")
    workspace.merge("silver.h", "SELECT 5 AS id, 'b' AS v", unique_key="id")
    latest = workspace.history("silver.h")[0]
    assert (latest["added_rows"], latest["deleted_rows"], latest["total_rows"]) == (1, 1, 300)


def _data_files_on_disk(workspace: Workspace, name: str) -> set[str]:
    location = workspace.load_table(name).metadata.location.removeprefix("file://")
    rows = workspace.con.execute(f"SELECT file FROM glob('{location}/data/**/*.parquet')").fetchall()
    return {str(r[0]).removeprefix("file://") for r in rows}


def _referenced(workspace: Workspace, name: str) -> set[str]:
    return {t.file.file_path.removeprefix("file://") for t in workspace.load_table(name).scan().plan_files()}


def test_a_table_known_to_be_new_is_written_before_the_catalog_is_asked(workspace: Workspace) -> None:
    from ratatouille.storage.writer import TableWriter

    writer = TableWriter(workspace.project.lakehouse, workspace.con)
    data = "SELECT range AS id, CASE WHEN range % 2 = 0 THEN 'A' ELSE 'B' END AS store FROM range(10)"
    result = writer.write(workspace.resolve("silver.early"), data, partition_by=["store"], new_table=True)
    assert result.created and result.rows_written == 10
    assert count(workspace, "silver.early") == 10
    assert workspace.describe("silver.early")["partitioning"] == ["store"]
    assert _data_files_on_disk(workspace, "silver.early") == _referenced(workspace, "silver.early")


def test_early_files_that_do_not_fit_a_table_created_meanwhile_are_written_again(workspace: Workspace) -> None:
    """Another writer created the table first, with other field ids and no partitioning: the
    files written ahead are replaced by ones shaped for that table, and none is left behind."""
    from ratatouille.storage.writer import TableWriter

    workspace.append("silver.raced", "SELECT 'x' AS note, 1 AS id")
    writer = TableWriter(workspace.project.lakehouse, workspace.con)
    ref = workspace.resolve("silver.raced")
    with pytest.raises(SchemaError, match="full-refresh"):  # refused: the early files are removed
        writer.write(ref, "SELECT 2 AS id", partition_by=["id"], new_table=True)
    assert _data_files_on_disk(workspace, "silver.raced") == _referenced(workspace, "silver.raced")
    result = writer.write(ref, "SELECT 2 AS id", new_table=True)
    assert not result.created and result.rows_written == 1
    rows = workspace.query("SELECT id, note FROM silver.raced ORDER BY id").to_pylist()
    assert rows == [{"id": 1, "note": "x"}, {"id": 2, "note": None}]
    assert _data_files_on_disk(workspace, "silver.raced") == _referenced(workspace, "silver.raced")


def test_a_write_that_is_the_whole_table_lists_its_files(workspace: Workspace) -> None:
    """``WriteResult.files`` is every data file of the new snapshot when the write is all the
    table holds (first write, full overwrite; partitioned too), and unknown otherwise."""

    def files(result: WriteResult) -> set[str] | None:
        return None if result.files is None else {p.removeprefix("file://") for p in result.files}

    first = workspace.write("silver.listed", "SELECT range AS id, range % 3 AS g FROM range(30)", partition_by=["g"])
    assert files(first) == _referenced(workspace, "silver.listed") and len(_referenced(workspace, "silver.listed")) == 3
    assert files(workspace.append("silver.listed", "SELECT 99 AS id, 1 AS g")) is None
    assert files(workspace.merge("silver.listed", "SELECT 1 AS id, 1 AS g", unique_key="id")) is None
    assert files(workspace.overwrite("silver.listed", "SELECT 5 AS id, 0 AS g", where="g = 0")) is None
    whole = workspace.overwrite("silver.listed", "SELECT range AS id, 0 AS g FROM range(4)")
    assert files(whole) == _referenced(workspace, "silver.listed")
