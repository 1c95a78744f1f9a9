"""POST /api/v1/query: formats, limits, timeouts, streaming, and the sandbox's refusals, over HTTP."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from api.conftest import Api, live_server
from helpers import write_project
from ratatouille.api.app import create_app
from ratatouille.errors import ConfigError
from ratatouille.workspace import Workspace

GROUP_BY = (
    "SELECT customer, count(*) AS orders, sum(amount) AS total FROM silver.orders GROUP BY customer ORDER BY customer"
)
MEDIA = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}


def _rows(fmt: str, response: httpx.Response) -> list[dict[str, object]]:
    """Parse a query result in any format into a list of row dicts (values as the format gives them)."""
    if fmt == "json":
        body = response.json()
        assert set(body) == {"columns", "rows", "row_count", "truncated"}
        assert body["row_count"] == len(body["rows"])
        rows: list[dict[str, object]] = body["rows"]
        return rows
    if fmt == "ndjson":
        return [json.loads(line) for line in response.text.splitlines()]
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(response.text)))
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(response.content)).to_pylist()
    reader = ipc.open_stream(response.content)
    return reader.read_all().to_pylist()


@pytest.mark.parametrize("fmt", list(MEDIA))
def test_every_format_by_accept_header_and_by_parameter(client: httpx.Client, fmt: str) -> None:
    by_accept = client.post("/api/v1/query", json={"sql": GROUP_BY}, headers={"Accept": MEDIA[fmt].split(";")[0]})
    by_param = client.post("/api/v1/query", params={"format": fmt}, json={"sql": GROUP_BY})
    for response in (by_accept, by_param):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == MEDIA[fmt]
        rows = _rows(fmt, response)
        assert [int(str(r["customer"])) for r in rows] == [0, 1, 2, 3, 4]
        assert all(int(str(r["orders"])) == 20 for r in rows)
    assert by_accept.content == by_param.content or fmt == "parquet"


def test_format_parameter_wins_and_accept_is_negotiated(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/query", params={"format": "csv"}, json={"sql": "SELECT 1 AS a"}, headers={"Accept": "application/json"}
    )
    assert response.headers["content-type"].startswith("text/csv")
    response = client.post(
        "/api/v1/query",
        json={"sql": "SELECT 1 AS a"},
        headers={"Accept": "text/html;q=1, application/vnd.apache.arrow.stream;q=0.5, text/csv;q=0.4"},
    )
    assert response.headers["content-type"] == MEDIA["arrow"]
    for accept in ("*/*", "application/*", ""):
        response = client.post("/api/v1/query", json={"sql": "SELECT 1 AS a"}, headers={"Accept": accept})
        assert response.headers["content-type"] == "application/json"
    response = client.post("/api/v1/query", json={"sql": "SELECT 1 AS a"}, headers={"Accept": "text/html"})
    assert response.status_code == 406 and response.json()["error"]["type"] == "NotAcceptableError"
    response = client.post("/api/v1/query", params={"format": "xml"}, json={"sql": "SELECT 1"})
    assert response.status_code == 422


@pytest.mark.parametrize("fmt", list(MEDIA))
def test_empty_results_are_valid_in_every_format(client: httpx.Client, fmt: str) -> None:
    response = client.post(
        "/api/v1/query", params={"format": fmt}, json={"sql": "SELECT * FROM silver.orders WHERE false"}
    )
    assert response.status_code == 200
    assert _rows(fmt, response) == []
    if fmt == "csv":
        assert response.text.splitlines() == ['"order_key","id","customer","amount","ts"']
    if fmt in ("parquet", "arrow"):
        table = (
            pq.read_table(io.BytesIO(response.content))
            if fmt == "parquet"
            else ipc.open_stream(response.content).read_all()
        )
        assert table.schema.names == ["order_key", "id", "customer", "amount", "ts"]


def test_json_values(client: httpx.Client) -> None:
    sql = (
        "SELECT 1.50::DECIMAL(10, 2) AS d, TIMESTAMP '2026-01-02 03:04:05' AS ts, DATE '2026-01-02' AS day, "
        "'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, 2.5::DOUBLE AS f, '\\x00\\xff'::BLOB AS b, NULL AS n, "
        "[1, 2] AS l, {'k': 'v'} AS s, 'é' AS text"
    )
    body = client.post("/api/v1/query", json={"sql": sql}).json()
    assert body["rows"] == [
        {
            "d": "1.50",
            "ts": "2026-01-02T03:04:05",
            "day": "2026-01-02",
            "nan": None,
            "inf": None,
            "f": 2.5,
            "b": "AP8=",
            "n": None,
            "l": [1, 2],
            "s": {"k": "v"},
            "text": "é",
        }
    ]
    assert [c["type"] for c in body["columns"]][:3] == ["DECIMAL(10,2)", "TIMESTAMP", "DATE"]


def test_workspace_and_qualified_names(api: Api) -> None:
    admin = api.client(as_="admin")
    body = admin.post("/api/v1/query", json={"sql": "SELECT secret FROM silver.x", "workspace": "other"}).json()
    assert body["rows"] == [{"secret": 42}]
    joined = admin.post(
        "/api/v1/query",
        json={"sql": 'SELECT count(*) AS n FROM "default".silver.orders, other.silver.x WHERE secret = 42'},
    ).json()
    assert joined["rows"] == [{"n": 100}]
    response = admin.post("/api/v1/query", json={"sql": "SELECT 1", "workspace": "nowhere"})
    assert response.status_code == 404


def test_cross_workspace_queries_are_refused(api: Api) -> None:
    viewer = api.client(as_="viewer")
    response = viewer.post("/api/v1/query", json={"sql": "SELECT * FROM other.silver.x"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "other" in message and "42" not in response.text
    response = viewer.post("/api/v1/query", json={"sql": "SELECT * FROM silver.x", "workspace": "other"})
    assert response.status_code == 403
    other = api.client(as_="other_viewer")
    response = other.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM default.silver.orders"})
    assert response.status_code == 403  # the default workspace is not its own
    sql = 'SELECT count(*) AS n FROM "default".silver.orders'
    response = other.post("/api/v1/query", json={"sql": sql, "workspace": "other"})
    assert response.status_code == 400 and "default" in response.json()["error"]["message"]
    response = other.post("/api/v1/query", json={"sql": "SHOW ALL TABLES", "workspace": "other"})
    assert {r["name"] for r in response.json()["rows"]} == {"x"}


def test_unknown_table_names_what_exists(client: httpx.Client) -> None:
    response = client.post("/api/v1/query", json={"sql": "SELECT * FROM silver.ordrs"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "TableNotFoundError" and "silver.orders" in error["message"]
    response = client.post("/api/v1/query", json={"sql": "SELEC 1"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "QueryError"
    assert "syntax error" in response.json()["error"]["message"]


def test_request_limit_and_truncation(client: httpx.Client) -> None:
    body = client.post("/api/v1/query", json={"sql": "SELECT * FROM silver.orders", "limit": 7}).json()
    assert body["row_count"] == 7 and body["truncated"] is True
    body = client.post("/api/v1/query", json={"sql": "SELECT * FROM silver.orders", "limit": 100}).json()
    assert body["row_count"] == 100 and body["truncated"] is False
    body = client.post("/api/v1/query", json={"sql": "SELECT * FROM silver.orders", "limit": 0}).json()
    assert body["rows"] == [] and body["truncated"] is True
    assert client.post("/api/v1/query", json={"sql": ""}).status_code == 422
    csv_rows = client.post("/api/v1/query?format=csv", json={"sql": "SELECT * FROM range(50)", "limit": 5}).text
    assert len(csv_rows.splitlines()) == 6
    assert client.post("/api/v1/query", json={"sql": "SELECT 1", "limit": -1}).status_code == 422


# -- server limits ------------------------------------------------------------------------


LIMITS = """\
server:
  query_row_limit: 1000
  statement_timeout_seconds: 1
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server over a project whose ratatouille.yaml sets a 1,000-row limit and a 1 s statement timeout."""
    root = write_project(tmp_path_factory.mktemp("limited") / "project", LIMITS)
    app = create_app(root)
    token, _info = app.state.ctx.auth.create_token("viewer", "viewer", "default")
    with (
        live_server(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client,
    ):
        yield client


def test_server_row_limit_caps_every_request(limited: httpx.Client) -> None:
    body = limited.post("/api/v1/query", json={"sql": "SELECT * FROM range(5000)"}).json()
    assert body["row_count"] == 1000 and body["truncated"] is True
    body = limited.post("/api/v1/query", json={"sql": "SELECT * FROM range(5000)", "limit": 1_000_000}).json()
    assert body["row_count"] == 1000
    body = limited.post("/api/v1/query", json={"sql": "SELECT * FROM range(1000)"}).json()
    assert body["row_count"] == 1000 and body["truncated"] is False
    response = limited.post("/api/v1/query?format=arrow", json={"sql": "SELECT * FROM range(5000)"})
    assert ipc.open_stream(response.content).read_all().num_rows == 1000
    assert response.headers["x-rat-row-limit"] == "1000"
    response = limited.post("/api/v1/query?format=csv", json={"sql": "SELECT * FROM range(5000)", "limit": 10})
    assert len(response.text.splitlines()) == 11 and response.headers["x-rat-row-limit"] == "10"


@pytest.mark.parametrize(
    "slow",
    [
        "SELECT sum(hash(a.range * b.range)) AS s FROM range(100000) a, range(100000) b",
        "SELECT count(*) AS n FROM range(10000000000) WHERE hash(range) % 7 = 3",
    ],
    ids=["cross-join", "range-1e10"],
)
def test_statement_timeout_interrupts_the_query(limited: httpx.Client, slow: str) -> None:
    started = time.monotonic()
    response = limited.post("/api/v1/query", json={"sql": slow})
    elapsed = time.monotonic() - started
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "QueryTimeoutError"
    assert "ran longer than 1 s" in error["message"] and "server.statement_timeout_seconds" in error["message"]
    assert 0.9 < elapsed < 15
    assert limited.post("/api/v1/query", json={"sql": "SELECT 1 AS one"}).json()["rows"] == [{"one": 1}]


def test_keyword_limits_override_the_config_and_are_checked(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project", LIMITS)
    settings = create_app(root, preview_rows=5).state.ctx.settings
    assert (settings.query_row_limit, settings.statement_timeout_seconds, settings.preview_rows) == (1000, 1.0, 5)
    with pytest.raises(ConfigError) as caught:
        create_app(root, query_row_limit=0, statement_timeout_seconds=-1, row_limit=5)
    message = str(caught.value)
    assert "3 problems" in message
    assert "query_row_limit: Input should be greater than or equal to 1" in message
    assert "statement_timeout_seconds: Input should be greater than 0" in message
    assert "row_limit: unknown key" in message


# -- the sandbox over HTTP ----------------------------------------------------------------

REFUSED = [
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto"),
    ("FROM read_text('/etc/passwd')", "read_text"),
    ("FROM read_blob('/etc/passwd')", "read_blob"),
    ("SELECT * FROM read_parquet('s3://bucket/data.parquet')", "read_parquet"),
    ("SELECT * FROM read_json('http://127.0.0.1:9/x.json')", "read_json"),
    ("SELECT * FROM glob('/etc/*')", "glob"),
    ("SELECT * FROM iceberg_scan('/etc')", "iceberg_scan"),
    ("SELECT * FROM parquet_metadata('/etc/x.parquet')", "parquet_metadata"),
    ("SELECT * FROM query('SELECT 1')", "query"),
    ("SELECT * FROM query_table('silver.orders')", "query_table"),
    ("SELECT * FROM '/etc/passwd'", "/etc/passwd"),
    ("SELECT * FROM 's3://bucket/x.parquet'", "s3://bucket/x.parquet"),
    ("SELECT * FROM 'data.csv'", "data.csv"),
    ("SELECT (SELECT count(*) FROM read_text('/etc/passwd')) AS n", "read_text"),
    ("SELECT * FROM silver.orders WHERE id IN (SELECT 1 FROM glob('/*'))", "glob"),
    ("SUMMARIZE SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("ATTACH '/tmp/other.duckdb' AS o", "ATTACH"),
    ("ATTACH 'postgres:dbname=x' AS p (TYPE postgres)", "ATTACH"),
    ("DETACH other", "DETACH"),
    ("INSTALL httpfs", "INSTALL/LOAD"),
    ("LOAD httpfs", "INSTALL/LOAD"),
    ("LOAD '/tmp/evil.duckdb_extension'", "INSTALL/LOAD"),
    ("COPY (SELECT 1) TO '/tmp/out.csv'", "COPY"),
    ("COPY silver.orders TO '/tmp/out.parquet' (FORMAT parquet)", "COPY"),
    ("COPY silver.orders FROM '/etc/passwd'", "COPY"),
    ("EXPORT DATABASE '/tmp/dump'", "EXPORT"),
    ("IMPORT DATABASE '/etc'", "/etc"),
    ("SET enable_external_access = true", "SET"),
    ("SET allowed_directories = ['/']", "SET"),
    ("RESET lock_configuration", "SET"),
    ("SET VARIABLE x = 1", "SET"),
    ("USE other", "SET"),
    ("PRAGMA version", "PRAGMA"),
    ("PRAGMA enable_profiling", "PRAGMA"),
    ("PRAGMA threads = 1", "PRAGMA"),
    ("CALL pragma_version()", "CALL"),
    ("CHECKPOINT", "CALL"),
    ("INSERT INTO silver.orders SELECT * FROM silver.orders", "INSERT"),
    ("UPDATE silver.orders SET amount = 0", "UPDATE"),
    ("DELETE FROM silver.orders", "DELETE"),
    ("TRUNCATE silver.orders", "DELETE"),
    ("MERGE INTO silver.orders USING silver.orders AS s ON true WHEN MATCHED THEN DELETE", "MERGE"),
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("CREATE OR REPLACE VIEW silver.orders AS SELECT 1 AS fake", "CREATE"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE"),
    ("CREATE MACRO m() AS 1", "CREATE"),
    ("DROP VIEW silver.orders", "DROP"),
    ("ALTER VIEW silver.orders RENAME TO o", "ALTER"),
    ("WITH x AS (SELECT 1 AS a) INSERT INTO t SELECT * FROM x", "INSERT"),
    ("BEGIN TRANSACTION", "transaction"),
    ("VACUUM", "VACUUM"),
    ("PREPARE p AS SELECT 1", "PREPARE"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/out.csv'", "COPY"),
    ("EXPLAIN DELETE FROM silver.orders", "DELETE"),
    ("EXPLAIN SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT 1; SELECT 2", "one at a time"),
    ("SELECT 1; DROP VIEW silver.orders", "one at a time"),
    ("  ;  ", "empty"),
    ("-- only a comment", "empty"),
]


@pytest.mark.parametrize(("sql", "fragment"), REFUSED, ids=[s[:40] or "empty" for s, _ in REFUSED])
def test_forbidden_sql_is_refused(client: httpx.Client, sql: str, fragment: str) -> None:
    response = client.post("/api/v1/query", json={"sql": sql})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "QueryRefusedError"
    assert fragment in error["message"]
    assert "read-only SELECT over the lakehouse tables you may read" in error["message"]
    assert "root:" not in response.text  # nothing of /etc/passwd


ALLOWED = [
    ("WITH c AS (SELECT customer FROM silver.orders) SELECT count(*) AS n FROM c", [{"n": 100}]),
    ("SELECT 1 AS n UNION ALL SELECT 2", [{"n": 1}, {"n": 2}]),
    ("VALUES (1), (2)", [{"col0": 1}, {"col0": 2}]),
    ("FROM gold.by_customer SELECT count(*) AS n", [{"n": 5}]),
    ("SELECT count(*) AS n FROM range(10)", [{"n": 10}]),
    ("SELECT count(*) AS n FROM generate_series(1, 3)", [{"n": 3}]),
    ("SELECT unnest([1, 2]) AS n", [{"n": 1}, {"n": 2}]),
    ('SELECT count(*) AS n FROM "default".silver.orders;', [{"n": 100}]),
]


@pytest.mark.parametrize(("sql", "rows"), ALLOWED)
def test_read_only_forms_are_allowed(client: httpx.Client, sql: str, rows: list[dict[str, object]]) -> None:
    response = client.post("/api/v1/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == rows


@pytest.mark.parametrize(
    "sql",
    [
        "DESCRIBE silver.orders",
        "SHOW silver.orders",
        "SHOW ALL TABLES",
        "SUMMARIZE silver.orders",
        "EXPLAIN SELECT * FROM silver.orders",
        "EXPLAIN ANALYZE SELECT count(*) FROM silver.orders",
        "/* a comment */ EXPLAIN (FORMAT json) SELECT 1",
    ],
)
def test_describe_show_summarize_explain(client: httpx.Client, sql: str) -> None:
    response = client.post("/api/v1/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    assert response.json()["rows"]


# -- streaming ----------------------------------------------------------------------------

BIG_ROWS = 2_000_000


@pytest.fixture(scope="module")
def big_table(api_root: Path) -> str:
    """A 2M-row table in the default workspace."""
    ws = Workspace.open(api_root)
    ws.append(
        "silver.big",
        f"SELECT range AS id, 'row-' || range AS label, range * 0.5 AS half FROM range({BIG_ROWS})",
    )
    ws.close()
    return "silver.big"


@pytest.fixture(scope="module")
def streaming(api: Api) -> Iterator[httpx.Client]:
    """A second server over the same project whose limits let results of millions of rows through."""
    app = create_app(api.root, query_row_limit=100_000_000, statement_timeout_seconds=300)
    with (
        live_server(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api.tokens['admin']}"}, timeout=60) as client,
    ):
        yield client


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "arrow"])
def test_two_million_rows_stream_complete(streaming: httpx.Client, big_table: str, fmt: str) -> None:
    client = streaming
    sql = f"SELECT * FROM {big_table}"
    chunks = 0
    body = io.BytesIO()
    with client.stream("POST", "/api/v1/query", params={"format": fmt}, json={"sql": sql}) as response:
        assert response.status_code == 200, response.read()
        assert "content-length" not in response.headers  # streamed, not built then sent
        assert response.headers["transfer-encoding"] == "chunked"
        for chunk in response.iter_raw():
            chunks += 1
            body.write(chunk)
    assert chunks > 20
    data = body.getvalue()
    if fmt == "csv":
        lines = data.decode().splitlines()
        assert len(lines) == BIG_ROWS + 1 and lines[0] == '"id","label","half"'
        ids = {int(line.split(",", 1)[0]) for line in lines[1:]}
        assert ids == set(range(BIG_ROWS))
    else:
        table = ipc.open_stream(data).read_all()
        assert table.num_rows == BIG_ROWS
        assert pa.compute.sum(table["id"]).as_py() == BIG_ROWS * (BIG_ROWS - 1) // 2
        assert table.column("label")[BIG_ROWS - 1].as_py() == f"row-{BIG_ROWS - 1}"


def _metric(client: httpx.Client, prefix: str) -> float:
    text = client.get("/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_an_error_after_the_first_rows_cuts_the_stream_short(streaming: httpx.Client) -> None:
    client = streaming
    late = "SELECT range AS i, CASE WHEN range >= 500000 THEN error('late failure') END AS x FROM range(1000000)"
    errors_before = _metric(client, 'rat_queries_total{outcome="error"}')
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", "/api/v1/query", params={"format": "csv"}, json={"sql": late}) as response:
            assert response.status_code == 200  # the first rows were already on their way
            for _ in response.iter_raw():
                pass
    assert _metric(client, 'rat_queries_total{outcome="error"}') == errors_before + 1
    assert client.post("/api/v1/query", json={"sql": "SELECT 1 AS ok"}).json()["rows"] == [{"ok": 1}]


def test_a_client_going_away_stops_the_query(streaming: httpx.Client) -> None:
    client = streaming
    aborted_before = _metric(client, 'rat_queries_total{outcome="aborted"}')
    with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=60) as leaving:
        with leaving.stream(
            "POST", "/api/v1/query", params={"format": "csv"}, json={"sql": "SELECT * FROM range(100000000)"}
        ) as response:
            assert response.status_code == 200
            next(response.iter_raw())
    deadline = time.monotonic() + 30
    while _metric(client, 'rat_queries_total{outcome="aborted"}') < aborted_before + 1:
        assert time.monotonic() < deadline, "the server did not notice the client left"
        time.sleep(0.1)
