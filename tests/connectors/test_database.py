"""The database connector (``type: postgres`` / ``type: mysql``) against the real local servers.

PostgreSQL tests are marked ``postgres``; MariaDB tests are not (the server is always there).
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from pydantic import ValidationError

from fixtures.services import mysql_query
from ratatouille.connectors.base import Output, ReadContext
from ratatouille.connectors.database.config import DatabaseSourceConfig, parse_connection, redact, split_name
from ratatouille.connectors.database.reader import DatabaseConnector
from ratatouille.errors import ConnectorError

SECRET = "Sup3r-S3cret-pa55"
LOG = logging.getLogger("test.database")


# --- helpers --------------------------------------------------------------------------------------


class Read:
    """One read: the output, its rows as a table, its batches, and the connector's new state."""

    def __init__(self, output: Output, batches: list[pa.RecordBatch], state: dict[str, Any]) -> None:
        self.output = output
        self.batches = batches
        assert output.schema is not None
        self.table = pa.Table.from_batches(batches, schema=output.schema)
        self.state = state

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.table.to_pylist()
        return rows

    def ids(self) -> list[int]:
        return sorted(self.table.column("id").to_pylist())


def config(**keys: Any) -> DatabaseSourceConfig:
    data: dict[str, Any] = {"name": "shop"}
    data.update(keys)
    return DatabaseSourceConfig.model_validate(data)


def read(cfg: DatabaseSourceConfig, state: dict[str, Any] | None = None, batch_rows: int = 100_000) -> Read:
    connector = DatabaseConnector(cfg)
    outputs = list(connector.read(ReadContext(state=state or {}, log=LOG, batch_rows=batch_rows)))
    assert len(outputs) == 1
    (output,) = outputs
    assert output.table == ""
    batches = list(output.batches)
    # The state is saved as JSON by the state store: make the round trip here too.
    return Read(output, batches, json.loads(json.dumps(connector.new_state)))


def pg_execute(url: str, sql: str, params: Any = None) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(sql, params)


def with_password(url: str, password: str = SECRET) -> str:
    """``scheme://user@host...`` -> ``scheme://user:password@host...``."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    text = f"{exc}\n{exc!r}\n{caplog.text}"
    for secret in secrets or (SECRET,):
        assert secret not in text
        assert secret.replace("-", "%2D") not in text
    # the driver's own exception (which may echo the DSN) is not chained into tracebacks
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


# --- configuration ----------------------------------------------------------------------------------


def test_config_accepts_the_documented_forms() -> None:
    cfg = config(
        type="postgres",
        connection=f"postgresql+psycopg://app:{SECRET}@db.example.com:6543/shop?sslmode=require",
        table="public.customers",
        incremental={"cursor": "updated_at", "primary_key": "id"},
        batch_rows=5000,
    )
    assert cfg.incremental is not None and cfg.incremental.primary_key == ["id"]
    info = cfg.connection_info()
    assert (info.host, info.port, info.user, info.database, info.password) == (
        "db.example.com",
        6543,
        "app",
        "shop",
        SECRET,
    )
    assert info.options == {"sslmode": "require"}
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.model_dump()) and SECRET not in repr(info)
    assert info.where() == "app@db.example.com:6543/shop"
    for url in ("postgres://u@h/d", "postgresql://u@h/d", "postgresql+psycopg2://u@h/d"):
        assert config(type="postgres", connection=url, table="t").connection_info().port == 5432
    for url in ("mysql://u@h/d", "mariadb://u@h/d", "mysql+pymysql://u@h/d"):
        assert config(type="mysql", connection=url, query="SELECT 1").connection_info().port == 3306


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"table": "t", "query": "SELECT 1"}, "exactly one of `table`"),
        ({}, "exactly one of `table`"),
        ({"table": "a.b.c"}, "write `table` or `schema.table`"),
        ({"table": "t", "connection": f"mysql://u:{SECRET}@h/d"}, "use `type: mysql`"),
        ({"table": "t", "connection": f"u:{SECRET}@h/d"}, "must be a URL"),
        ({"query": "SELECT 1; DROP TABLE t"}, "single SELECT statement"),
        ({"table": "t", "batch_rows": 0}, "greater than 0"),
        ({"table": "t", "incremental": {"cursor": ""}}, "must name the column"),
        ({"table": "t", "incremental": {"cursor": "u", "primary_key": ["id", "id"]}}, "lists a column twice"),
        ({"table": "t", "colour": "red"}, "Extra inputs"),
    ],
)
def test_config_errors_are_clear_and_hide_the_connection(keys: dict[str, Any], message: str) -> None:
    data = {"type": "postgres", "connection": f"postgresql://u:{SECRET}@h/d", **keys}
    with pytest.raises(ValidationError) as info:
        config(**data)
    assert message in str(info.value)
    assert SECRET not in str(info.value)


def test_query_may_end_with_a_semicolon_and_contain_quoted_ones() -> None:
    cfg = config(type="postgres", connection="postgresql://u@h/d", query="SELECT ';' AS x; ")
    assert cfg.query == "SELECT ';' AS x"


def test_split_name() -> None:
    assert split_name("public.customers") == ["public", "customers"]
    assert split_name('"My Schema"."Odd.Name"') == ["My Schema", "Odd.Name"]
    assert split_name("`db`.`t``x`") == ["db", "t`x"]
    assert split_name("customers") == ["customers"]


def test_redact_masks_every_form_of_the_password() -> None:
    message = (
        f'IO Error: Unable to connect to Postgres at "host=h port=5432 password={SECRET} dbname=d": '
        f"refused; url postgresql://app:{SECRET.replace('-', '%2D')}@h/d; passwd='{SECRET}' and {SECRET}"
    )
    cleaned = redact(message, [SECRET])
    assert SECRET not in cleaned and "%2D" not in cleaned
    assert "password=***" in cleaned and "app:***@h" in cleaned
    info = parse_connection(f"mysql://root:{SECRET}@127.0.0.1/db", "mysql")
    assert info.redact(f"passwd={SECRET} user=root") == "passwd=*** user=root"


# --- PostgreSQL -----------------------------------------------------------------------------------

PG_TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TABLE public.everything (
    id integer PRIMARY KEY,
    small smallint, regular integer, big bigint, single real, double double precision,
    amount numeric(20, 6), free_numeric numeric, huge numeric(50, 10), price money,
    flag boolean, label text, code varchar(10), fixed char(3),
    day date, at_time time, at_timetz timetz, local_ts timestamp, instant timestamptz, span interval,
    ident uuid, doc json, docb jsonb, ints integer[], words text[], amounts numeric[], blob bytea,
    feeling mood, positive positive_int, address inet
);
INSERT INTO public.everything VALUES (
    1, -32768, 2147483647, 9223372036854775807, 1.5, 2.000000000000001,
    12345678901234.123456, 3.14159265358979323846264338327950288419716939937510,
    1234567890123456789012345678901234567890.1234567890, 12.34,
    true, 'héllo wörld ☃', 'abc', 'xy',
    '2024-02-29', '13:45:56.123456', '13:45:56+02', '2024-01-02 03:04:05.678901',
    '2024-01-02 03:04:05.678901+05:30', '1 day 02:00:00',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": {"c": null}}',
    '{1,NULL,3}', '{"x","y z"}', '{1.5,2.25}', '\\x00ff10', 'happy', 7, '192.168.0.1/24'
);
INSERT INTO public.everything (id) VALUES (2);
"""


@pytest.mark.postgres
def test_postgres_types_round_trip(postgres_url: str) -> None:
    pg_execute(postgres_url, PG_TYPES)
    result = read(config(type="postgres", connection=postgres_url, table="public.everything"))
    schema = result.output.schema
    assert schema is not None
    expected_types = {
        "small": pa.int16(),
        "regular": pa.int32(),
        "big": pa.int64(),
        "single": pa.float32(),
        "double": pa.float64(),
        "amount": pa.decimal128(20, 6),
        "free_numeric": pa.string(),  # exact text: an unconstrained numeric fits no decimal128
        "huge": pa.string(),
        "price": pa.decimal128(19, 2),
        "flag": pa.bool_(),
        "day": pa.date32(),
        "at_time": pa.time64("us"),
        "at_timetz": pa.time64("us"),
        "local_ts": pa.timestamp("us"),
        "instant": pa.timestamp("us", tz="UTC"),
        "span": pa.string(),
        "ident": pa.string(),
        "doc": pa.string(),
        "docb": pa.string(),
        "ints": pa.list_(pa.field("l", pa.int32())),
        "words": pa.list_(pa.field("l", pa.string())),
        "amounts": pa.list_(pa.field("l", pa.string())),
        "blob": pa.binary(),
        "feeling": pa.string(),
        "positive": pa.int32(),
        "address": pa.string(),
    }
    for name, arrow_type in expected_types.items():
        assert schema.field(name).type == arrow_type, name
    rows = {row["id"]: row for row in result.rows}
    assert result.output.mode == "replace"
    assert rows[1] == {
        "id": 1,
        "small": -32768,
        "regular": 2147483647,
        "big": 9223372036854775807,
        "single": 1.5,
        "double": 2.000000000000001,
        "amount": Decimal("12345678901234.123456"),
        "free_numeric": "3.14159265358979323846264338327950288419716939937510",
        "huge": "1234567890123456789012345678901234567890.1234567890",
        "price": Decimal("12.34"),
        "flag": True,
        "label": "héllo wörld ☃",
        "code": "abc",
        "fixed": "xy",
        "day": date(2024, 2, 29),
        "at_time": time(13, 45, 56, 123456),
        "at_timetz": time(11, 45, 56),  # in UTC
        "local_ts": datetime(2024, 1, 2, 3, 4, 5, 678901),
        "instant": datetime(2024, 1, 1, 21, 34, 5, 678901, tzinfo=UTC),
        "span": "1 day 02:00:00",
        "ident": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "doc": '{"a": [1, 2]}',
        "docb": '{"b": {"c": null}}',
        "ints": [1, None, 3],
        "words": ["x", "y z"],
        "amounts": ["1.5", "2.25"],
        "blob": b"\x00\xff\x10",
        "feeling": "happy",
        "positive": 7,
        "address": "192.168.0.1/24",
    }
    assert rows[1]["instant"].utcoffset() == timedelta(0)
    assert all(value is None for key, value in rows[2].items() if key != "id"), rows[2]


@pytest.mark.postgres
def test_postgres_query_source(postgres_url: str) -> None:
    pg_execute(
        postgres_url,
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(10, 2), placed timestamptz);"
        "INSERT INTO orders SELECT i, 'c' || (i % 3), i * 1.25, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour'"
        " FROM generate_series(1, 20) AS i;",
    )
    cfg = config(
        type="postgres",
        connection=postgres_url,
        query="""
            -- revenue per customer; a ';' inside a string literal is fine
            SELECT customer, sum(amount) AS revenue, count(*) AS orders, max(placed) AS last_order, ';' AS sep
            FROM orders WHERE id <= 18 GROUP BY customer ORDER BY customer;
        """,
    )
    result = read(cfg)
    assert result.output.mode == "replace"
    assert result.table.schema.field("revenue").type == pa.string()  # sum(numeric) has no precision: exact text
    assert result.table.schema.field("orders").type == pa.int64()
    rows = {r["customer"]: r for r in result.rows}
    assert set(rows) == {"c0", "c1", "c2"}
    assert Decimal(rows["c0"]["revenue"]) == sum(Decimal(i) * Decimal("1.25") for i in range(3, 19, 3))
    assert rows["c0"]["last_order"] == datetime(2024, 1, 1, 18, tzinfo=UTC)


ITEMS = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, updated_at timestamptz);
INSERT INTO items SELECT i, 'item ' || i, timestamptz '2024-01-01 00:00:00.000001+00' + i * interval '1 minute'
FROM generate_series(1, 10) AS i;
"""


@pytest.mark.postgres
def test_postgres_incremental_reads_exactly_the_changes(postgres_url: str) -> None:
    pg_execute(postgres_url, ITEMS)
    cfg = config(
        type="postgres",
        connection=postgres_url,
        table="items",
        incremental={"cursor": "updated_at", "primary_key": "id"},
    )
    first = read(cfg)
    assert first.ids() == list(range(1, 11))
    assert first.output.mode == "replace"  # no state yet: a full snapshot
    assert first.output.primary_key == ["id"]
    assert first.state == {"cursor": "2024-01-01T00:10:00.000001+00:00", "cursor_column": "updated_at"}

    # 3 updates (one of them the row that held the last cursor value) and 2 inserts sharing a cursor value.
    pg_execute(
        postgres_url,
        "UPDATE items SET name = name || ' v2', updated_at = '2024-01-02 00:00:00+00' WHERE id IN (2, 5, 10);"
        "INSERT INTO items VALUES (11, 'item 11', '2024-01-03 00:00:00.5+00'), (12, 'item 12', '2024-01-03 00:00:00.5+00');",
    )
    second = read(cfg, first.state)
    assert second.ids() == [2, 5, 10, 11, 12]
    assert second.output.mode == "merge" and second.output.primary_key == ["id"]
    assert {r["id"]: r["name"] for r in second.rows}[5] == "item 5 v2"
    assert second.state == {"cursor": "2024-01-03T00:00:00.500000+00:00", "cursor_column": "updated_at"}

    # No changes: the read is `updated_at >= last`, so it returns exactly the rows sitting at the last
    # cursor value (11 and 12) again. Merged by id, they change nothing; in exchange, a row committed
    # later with that same cursor value is not lost, which `>` would do (next step).
    third = read(cfg, second.state)
    assert third.ids() == [11, 12]
    assert all(r["updated_at"] == datetime(2024, 1, 3, 0, 0, 0, 500000, tzinfo=UTC) for r in third.rows)
    assert third.state == second.state

    pg_execute(postgres_url, "INSERT INTO items VALUES (13, 'late commit', '2024-01-03 00:00:00.5+00')")
    fourth = read(cfg, third.state)
    assert fourth.ids() == [11, 12, 13]


@pytest.mark.postgres
def test_postgres_incremental_without_key_appends_strictly_newer_rows(postgres_url: str) -> None:
    pg_execute(postgres_url, ITEMS)
    cfg = config(type="postgres", connection=postgres_url, table="items", incremental={"cursor": "updated_at"})
    first = read(cfg)
    assert len(first.ids()) == 10
    second = read(cfg, first.state)
    assert second.ids() == [] and second.output.mode == "append"
    assert second.state == first.state  # nothing read: the cursor stays
    pg_execute(postgres_url, "INSERT INTO items VALUES (11, 'new', now())")
    assert read(cfg, second.state).ids() == [11]


@pytest.mark.postgres
def test_postgres_changed_cursor_column_reads_everything(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    pg_execute(postgres_url, ITEMS)
    cfg = config(type="postgres", connection=postgres_url, table="items", incremental={"cursor": "id"})
    result = read(cfg, {"cursor": "2024-01-01T00:10:00+00:00", "cursor_column": "updated_at"})
    assert len(result.ids()) == 10 and result.output.mode == "replace"
    assert result.state == {"cursor": "10", "cursor_column": "id"}
    assert "cursor column changed" in caplog.text


@pytest.mark.postgres
def test_postgres_views_quoted_names_and_numeric_cursor(postgres_url: str) -> None:
    pg_execute(
        postgres_url,
        'CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Orders" (id int PRIMARY KEY, version numeric, note text);'
        """INSERT INTO "Sales"."Orders" VALUES (1, 9.5, 'a'), (2, 10.25, 'b'), (3, NULL, 'c');"""
        'CREATE VIEW recent AS SELECT id, note FROM "Sales"."Orders" WHERE id > 1;',
    )
    assert read(config(type="postgres", connection=postgres_url, table="recent")).ids() == [2, 3]
    cfg = config(
        type="postgres",
        connection=postgres_url,
        table='"Sales"."Orders"',
        incremental={"cursor": "version", "primary_key": "id"},
    )
    first = read(cfg)
    assert first.ids() == [1, 2, 3]
    # an unconstrained numeric is read as exact text, but compared as a number: 10.25 > 9.5
    assert first.state["cursor"] == "10.25"
    pg_execute(postgres_url, 'UPDATE "Sales"."Orders" SET version = 11, note = \'a2\' WHERE id = 1')
    assert read(cfg, first.state).ids() == [1, 2]


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_million_rows_stream_in_bounded_memory(postgres_url: str) -> None:
    rows, batch_rows = 1_000_000, 50_000
    pg_execute(
        postgres_url,
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text, amount numeric(12, 2), at timestamptz);"
        f"INSERT INTO big SELECT i, repeat(md5(i::text), 6), i / 100.0, now() FROM generate_series(1, {rows}) AS i;",
    )
    connector = DatabaseConnector(config(type="postgres", connection=postgres_url, table="big"))
    (output,) = list(connector.read(ReadContext(state={}, log=LOG, batch_rows=batch_rows)))
    baseline = _rss_mb()
    peak = baseline
    total = batches = largest = 0
    payload_bytes = 0
    for batch in output.batches:  # each batch is dropped before the next: nothing accumulates
        total += batch.num_rows
        batches += 1
        largest = max(largest, batch.num_rows)
        payload_bytes += batch.nbytes
        peak = max(peak, _rss_mb())
    assert total == rows
    assert batches > 1 and largest <= batch_rows
    whole = payload_bytes / 1e6  # the table as Arrow: about 260 MB
    assert whole > 200
    assert peak - baseline < whole / 2, f"RSS grew {peak - baseline:.0f} MB while streaming {whole:.0f} MB"


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.postgres
def test_postgres_errors_name_the_source_and_hide_the_password(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pg_execute(postgres_url, "CREATE TABLE customers (id int PRIMARY KEY, name text)")
    good = with_password(postgres_url)
    base, database = good.rsplit("/", 1)
    cases: list[tuple[dict[str, Any], list[str]]] = [
        # unreachable: nothing listens on the port
        (
            {"connection": f"postgresql://app:{SECRET}@127.0.0.1:{closed_port()}/x", "table": "t"},
            ["cannot reach the PostgreSQL server at 127.0.0.1:", "Check the host and port"],
        ),
        # unknown database
        (
            {"connection": f"{base}/no_such_db_{uuid.uuid4().hex[:6]}", "table": "t"},
            ["database `no_such_db_", "does not exist", "Check the database name"],
        ),
        # unknown login (127.0.0.1 uses trust auth here, so a wrong password cannot be refused: a wrong role can)
        (
            {
                "connection": f"postgresql://nobody_{uuid.uuid4().hex[:6]}:{SECRET}@127.0.0.1:5432/{database}",
                "table": "t",
            },
            ["refused the login of user `nobody_", "Check the user name and password"],
        ),
        # unknown table, with a suggestion
        (
            {"connection": good, "table": "public.custmers"},
            ["table `public.custmers` does not exist", "did you mean `public.customers`?"],
        ),
        # bad SQL
        ({"connection": good, "query": "SELEC id FROM customers"}, ["the query failed", "syntax error", "`query`"]),
        # a query on a missing table
        ({"connection": good, "query": "SELECT * FROM missing_table"}, ["the query failed", "missing_table"]),
        # a cursor that is not a column
        (
            {"connection": good, "table": "customers", "incremental": {"cursor": "nmae", "primary_key": "id"}},
            ["incremental.cursor `nmae` is not a column", "did you mean `name`?"],
        ),
    ]
    for keys, fragments in cases:
        with pytest.raises(ConnectorError) as info:
            read(config(type="postgres", **keys))
        message = str(info.value)
        assert message.startswith("source `shop`"), message
        for fragment in fragments:
            assert fragment in message, (fragment, message)
        assert_no_secret(info.value, caplog)


# --- MySQL / MariaDB --------------------------------------------------------------------------------


def _is_mariadb(url: str) -> bool:
    return "mariadb" in mysql_query(url, "SELECT VERSION()")[0][0].lower()


def test_mysql_types_round_trip(mysql_url: str) -> None:
    mariadb = _is_mariadb(mysql_url)
    extra_columns = ", ident uuid, address inet6" if mariadb else ""
    extra_values = ", 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '::1'" if mariadb else ""
    mysql_query(
        mysql_url,
        f"""
        SET NAMES utf8mb4;
        CREATE TABLE everything (
            id bigint PRIMARY KEY, tiny tinyint, yes_no tinyint(1), flag bool, small smallint, medium mediumint,
            regular int, big bigint, u8 tinyint unsigned, u16 smallint unsigned, u24 mediumint unsigned,
            u32 int unsigned, u64 bigint unsigned, single float, double_ double, amount decimal(20, 6),
            huge decimal(65, 30), day date, clock time(6), local_dt datetime(6), instant timestamp(6) NULL,
            yr year, fixed char(3), code varchar(20), body text, blob_ blob, bytes varbinary(10), doc json,
            choice enum('a', 'b', 'c'), choices set('x', 'y'), bits bit(8), bit1 bit(1){extra_columns}
        ) CHARACTER SET utf8mb4;
        SET time_zone = '+02:00';
        INSERT INTO everything VALUES (
            1, -128, 1, false, -32768, -8388608, -2147483648, -9223372036854775808, 255, 65535, 16777215,
            4294967295, 18446744073709551615, 1.5, 2.000000000000001, 12345678901234.123456,
            12345678901234567890123456789012345.123456789012345678901234567890, '2024-02-29', '838:59:59.000000',
            '2024-01-02 03:04:05.678901', '2024-01-02 03:04:05.678901', 2024, 'xy', 'abc', 'héllo 😀',
            X'00FF10', X'0102', '{{"a": [1, 2]}}', 'b', 'x,y', b'10101010', b'1'{extra_values}
        );
        INSERT INTO everything (id) VALUES (2);
        """,
    )
    result = read(config(type="mysql", connection=mysql_url, table="everything"))
    schema = result.table.schema
    assert schema.field("u8").type == pa.int16()
    assert schema.field("u16").type == pa.int32()
    assert schema.field("u32").type == pa.int64()
    assert schema.field("u64").type == pa.decimal128(20, 0)
    assert schema.field("amount").type == pa.decimal128(20, 6)
    assert schema.field("huge").type == pa.string()
    assert schema.field("local_dt").type == pa.timestamp("us")
    assert schema.field("instant").type == pa.timestamp("us", tz="UTC")
    assert schema.field("doc").type == pa.string()
    assert schema.field("blob_").type == pa.binary()
    rows = {row["id"]: row for row in result.rows}
    expected: dict[str, Any] = {
        "id": 1,
        "tiny": -128,
        "yes_no": True,
        "flag": False,
        "small": -32768,
        "medium": -8388608,
        "regular": -2147483648,
        "big": -9223372036854775808,
        "u8": 255,
        "u16": 65535,
        "u24": 16777215,
        "u32": 4294967295,
        "u64": Decimal("18446744073709551615"),
        "single": 1.5,
        "double_": 2.000000000000001,
        "amount": Decimal("12345678901234.123456"),
        "huge": "12345678901234567890123456789012345.123456789012345678901234567890",
        "day": date(2024, 2, 29),
        "clock": "838:59:59",  # MySQL TIME is a duration (up to 838 h): kept as text
        "local_dt": datetime(2024, 1, 2, 3, 4, 5, 678901),
        "instant": datetime(2024, 1, 2, 1, 4, 5, 678901, tzinfo=UTC),  # written at +02:00
        "yr": 2024,
        "fixed": "xy",
        "code": "abc",
        "body": "héllo 😀",
        "blob_": b"\x00\xff\x10",
        "bytes": b"\x01\x02",
        "doc": '{"a": [1, 2]}',
        "choice": "b",
        "choices": "x,y",
        "bits": b"\xaa",
        "bit1": True,
    }
    if mariadb:
        expected |= {"ident": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "address": "::1"}
    assert rows[1] == expected
    assert all(value is None for key, value in rows[2].items() if key != "id"), rows[2]


def test_mysql_query_source_reads_text_columns_as_text(mysql_url: str) -> None:
    mysql_query(
        mysql_url,
        "SET NAMES utf8mb4; CREATE TABLE events (id int PRIMARY KEY, doc json, tag varchar(10) COLLATE utf8mb4_bin, raw blob);"
        """INSERT INTO events VALUES (1, '{"k": "ü"}', 'Tag', X'FF00'), (2, NULL, NULL, NULL);""",
    )
    result = read(
        config(type="mysql", connection=mysql_url, query="SELECT id, doc, tag, raw, id * 2 AS twice FROM events")
    )
    assert result.table.schema.field("doc").type == pa.string()
    assert result.table.schema.field("tag").type == pa.string()
    assert result.table.schema.field("raw").type == pa.binary()
    assert sorted(result.rows, key=lambda r: r["id"]) == [
        {"id": 1, "doc": '{"k": "ü"}', "tag": "Tag", "raw": b"\xff\x00", "twice": 2},
        {"id": 2, "doc": None, "tag": None, "raw": None, "twice": 4},
    ]


def test_mysql_incremental_reads_exactly_the_changes(mysql_url: str) -> None:
    mysql_query(
        mysql_url,
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(50), updated_at timestamp(6) NULL);"
        "SET time_zone = '+00:00';"
        "INSERT INTO items SELECT seq, concat('item ', seq), timestamp('2024-01-01 00:00:00.000001') + interval seq minute"
        " FROM seq_1_to_10;",
    )
    cfg = config(
        type="mysql",
        connection=mysql_url,
        table="items",
        incremental={"cursor": "updated_at", "primary_key": ["id"]},
    )
    first = read(cfg)
    assert first.ids() == list(range(1, 11)) and first.output.mode == "replace"
    assert first.state == {"cursor": "2024-01-01T00:10:00.000001+00:00", "cursor_column": "updated_at"}
    # Changes written in another session time zone: TIMESTAMP values are instants, compared in UTC.
    mysql_query(
        mysql_url,
        "SET time_zone = '+05:00';"
        "UPDATE items SET name = concat(name, ' v2'), updated_at = '2024-01-02 05:00:00' WHERE id IN (2, 5, 10);"
        "INSERT INTO items VALUES (11, 'item 11', '2024-01-03 05:00:00.5'), (12, 'item 12', '2024-01-03 05:00:00.5');",
    )
    second = read(cfg, first.state)
    assert second.ids() == [2, 5, 10, 11, 12]
    assert second.output.mode == "merge"
    assert {r["id"]: r["name"] for r in second.rows}[10] == "item 10 v2"
    assert second.state["cursor"] == "2024-01-03T00:00:00.500000+00:00"
    third = read(cfg, second.state)  # `>=`: exactly the rows at the last cursor value (see the PostgreSQL test)
    assert third.ids() == [11, 12]


def test_mysql_streams_in_batches(mysql_url: str) -> None:
    mysql_query(
        mysql_url,
        "CREATE TABLE numbers (id int PRIMARY KEY, label varchar(20));"
        "INSERT INTO numbers SELECT seq, concat('n', seq) FROM seq_1_to_25000;",
    )
    result = read(config(type="mysql", connection=mysql_url, table="numbers"), batch_rows=10_000)
    assert result.table.num_rows == 25_000
    assert len(result.batches) > 1 and max(b.num_rows for b in result.batches) <= 10_000


@pytest.fixture
def mysql_user(mysql_url: str) -> Iterator[tuple[str, str]]:
    """A MariaDB user with a password and SELECT on the test database: (user, password)."""
    user = f"rat_{uuid.uuid4().hex[:8]}"
    database = mysql_url.rsplit("/", 1)[1]
    mysql_query(
        mysql_url, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'; GRANT SELECT ON `{database}`.* TO '{user}'@'%'"
    )
    try:
        yield user, SECRET
    finally:
        mysql_query(mysql_url, f"DROP USER IF EXISTS '{user}'@'%'")


def test_mysql_password_login_and_errors_hide_the_password(
    mysql_url: str, mysql_user: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user, password = mysql_user
    database = mysql_url.rsplit("/", 1)[1]
    mysql_query(
        mysql_url,
        "CREATE TABLE customers (id int PRIMARY KEY, name varchar(20)); INSERT INTO customers VALUES (1, 'a')",
    )
    good = f"mysql://{user}:{password}@127.0.0.1:3306/{database}"
    assert read(config(type="mysql", connection=good, table="customers")).ids() == [1]  # the password works
    wrong = "Wr0ng-" + SECRET[::-1]
    cases: list[tuple[dict[str, Any], list[str]]] = [
        (
            {"connection": f"mysql://{user}:{wrong}@127.0.0.1:3306/{database}", "table": "customers"},
            [f"refused the login of user `{user}`", "Check the user name and password"],
        ),
        (
            {"connection": f"mysql://{user}:{password}@127.0.0.1:{closed_port()}/{database}", "table": "customers"},
            ["cannot reach the MySQL/MariaDB server at 127.0.0.1:", "Check the host and port"],
        ),
        (
            {"connection": f"mariadb://{user}:{password}@127.0.0.1:3306/no_such_db", "table": "customers"},
            ["database `no_such_db` does not exist", "Check the database name"],
        ),
        (
            {"connection": good, "table": "custmers"},
            ["table `custmers` does not exist", "did you mean `customers`?"],
        ),
        ({"connection": good, "query": "SELEC 1"}, ["the query failed", "SQL syntax", "`query`"]),
        ({"connection": good, "query": "SELECT * FROM missing_table"}, ["the query failed", "missing_table"]),
    ]
    for keys, fragments in cases:
        with pytest.raises(ConnectorError) as info:
            read(config(type="mysql", **keys))
        message = str(info.value)
        assert message.startswith("source `shop`"), message
        for fragment in fragments:
            assert fragment in message, (fragment, message)
        assert_no_secret(info.value, caplog, SECRET, wrong)
