"""The REST connector against a real HTTP server on 127.0.0.1 (tests/connectors/fake_api.py)."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from connectors.fake_api import FakeApi, Reply, Request, serve
from ratatouille.connectors.base import Output, ReadContext
from ratatouille.connectors.registry import connector_class, load_sources
from ratatouille.connectors.rest.config import LinkHeaderPaginator, RestSourceConfig
from ratatouille.connectors.rest.reader import RestConnector
from ratatouille.errors import ConnectorError

TOKEN = "s3cret-token-value"
FAST_RETRIES = {"max_attempts": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 2}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with serve(FakeApi()) as running:
        yield running


def source(api: FakeApi, resources: list[dict[str, Any]], **keys: Any) -> RestSourceConfig:
    data: dict[str, Any] = {
        "name": "shop",
        "type": "rest",
        "base_url": f"{api.url}/v1",
        "retries": FAST_RETRIES,
        "timeout_seconds": 5,
        "resources": resources,
    }
    data.update(keys)
    return RestSourceConfig.model_validate(data)


class Result:
    """What one read produced: outputs by table, their rows, and the new state."""

    def __init__(
        self,
        outputs: dict[str, Output],
        tables: dict[str, pa.Table],
        batches: dict[str, list[pa.RecordBatch]],
        state: dict[str, Any],
    ) -> None:
        self.outputs = outputs
        self.tables = tables
        self.batches = batches
        self.state = state

    def rows(self, table: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.tables[table].to_pylist()
        return rows


def read(config: RestSourceConfig, state: dict[str, Any] | None = None, batch_rows: int = 100_000) -> Result:
    connector = RestConnector(config)
    outputs: dict[str, Output] = {}
    tables: dict[str, pa.Table] = {}
    batches: dict[str, list[pa.RecordBatch]] = {}
    ctx = ReadContext(state=state or {}, log=logging.getLogger("test.rest"), batch_rows=batch_rows)
    for output in connector.read(ctx):
        outputs[output.table] = output
        batches[output.table] = list(output.batches)
        tables[output.table] = pa.Table.from_batches(batches[output.table], schema=output.schema)
    return Result(outputs, tables, batches, connector.new_state)


def read_error(config: RestSourceConfig) -> str:
    with pytest.raises(ConnectorError) as caught:
        read(config)
    return str(caught.value)


def orders(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"id": i, "total": i * 10} for i in range(start, start + n)]


# --- auth -------------------------------------------------------------------------------------

AUTHS: dict[str, tuple[dict[str, Any], Callable[[Request], bool]]] = {
    "bearer": ({"type": "bearer", "token": TOKEN}, lambda r: r.headers.get("authorization") == f"Bearer {TOKEN}"),
    "api_key_header": (
        {"type": "api_key", "name": "X-API-Key", "location": "header", "key": TOKEN},
        lambda r: r.headers.get("x-api-key") == TOKEN,
    ),
    "api_key_query": (
        {"type": "api_key", "name": "api_key", "location": "query", "key": TOKEN},
        lambda r: r.query.get("api_key") == TOKEN,
    ),
    "basic": (
        {"type": "basic", "username": "ann", "password": TOKEN},
        lambda r: r.headers.get("authorization") == "Basic " + base64.b64encode(f"ann:{TOKEN}".encode()).decode(),
    ),
}


@pytest.mark.parametrize("kind", list(AUTHS))
def test_each_auth_kind_signs_every_request(api: FakeApi, kind: str) -> None:
    auth, accepted = AUTHS[kind]

    @api.route("/v1/orders")
    def _(request: Request) -> Reply:
        if not accepted(request):
            return Reply({"error": "unauthorized"}, status=401)
        page = int(request.query.get("page", 1))
        return Reply({"data": orders(2, start=page * 2 - 1), "meta": {"total_pages": 2}})

    config = source(
        api,
        [{"name": "orders", "path": "/orders", "data_path": "data", "primary_key": "id"}],
        auth=auth,
        paginator={"type": "page_number", "total_path": "meta.total_pages"},
    )
    result = read(config)

    assert [r["id"] for r in result.rows("orders")] == [1, 2, 3, 4]
    assert len(api.calls("/v1/orders")) == 2
    assert all(accepted(r) for r in api.calls("/v1/orders"))
    assert "authorization" not in api.calls("/v1/orders")[0].headers or kind in ("bearer", "basic")


@pytest.mark.parametrize(("expires_in", "token_calls"), [(3600, 1), (0, 3)])
def test_oauth2_client_credentials_token_is_reused_until_it_expires(
    api: FakeApi, expires_in: int, token_calls: int
) -> None:
    issued: list[str] = []

    @api.route("/oauth/token")
    def _(request: Request) -> Reply:
        form = request.form()
        if (form.get("grant_type"), form.get("client_id"), form.get("client_secret")) != (
            "client_credentials",
            "my-app",
            TOKEN,
        ):
            return Reply({"error": "invalid_client"}, status=401)
        assert form.get("scope") == "orders:read customers:read"
        issued.append(f"tok-{len(issued) + 1}")
        return Reply({"access_token": issued[-1], "token_type": "bearer", "expires_in": expires_in})

    @api.route("/v1/orders")
    def _(request: Request) -> Reply:
        if request.headers.get("authorization") not in {f"Bearer {t}" for t in issued}:
            return Reply({"error": "bad token"}, status=401)
        page = int(request.query["page"])
        return Reply({"data": orders(1, start=page), "meta": {"total_pages": 3}})

    config = source(
        api,
        [{"name": "orders", "path": "/orders", "data_path": "data"}],
        auth={
            "type": "oauth2",
            "token_url": f"{api.url}/oauth/token",
            "client_id": "my-app",
            "client_secret": TOKEN,
            "scopes": ["orders:read", "customers:read"],
        },
        paginator={"type": "page_number", "total_path": "meta.total_pages"},
    )
    result = read(config)

    assert [r["id"] for r in result.rows("orders")] == [1, 2, 3]
    assert len(api.calls("/oauth/token")) == token_calls


def test_oauth2_refused_client_secret_is_a_clear_error(api: FakeApi) -> None:
    api.route("/oauth/token")(lambda r: Reply({"error": "invalid_client"}, status=401))
    config = source(
        api,
        [{"name": "orders", "path": "/orders"}],
        auth={"type": "oauth2", "token_url": f"{api.url}/oauth/token", "client_id": "my-app", "client_secret": TOKEN},
    )
    message = read_error(config)
    assert "token endpoint" in message and "refused the client credentials" in message and "401" in message
    assert TOKEN not in message


# --- paginators -------------------------------------------------------------------------------


def test_page_number_paginator_stops_at_total_pages(api: FakeApi) -> None:
    @api.route("/v1/orders")
    def _(request: Request) -> Reply:
        page = int(request.query["page"])
        return Reply({"data": orders(2, start=page * 2 - 1), "meta": {"total_pages": 3}})

    config = source(
        api,
        [{"name": "orders", "path": "/orders", "params": {"status": "paid"}, "data_path": "data"}],
        paginator={"type": "page_number", "page_param": "page", "total_path": "meta.total_pages"},
    )
    result = read(config)

    assert [r["id"] for r in result.rows("orders")] == [1, 2, 3, 4, 5, 6]
    calls = api.calls("/v1/orders")
    assert [c.query["page"] for c in calls] == ["1", "2", "3"]
    assert all(c.query["status"] == "paid" for c in calls)
    assert result.outputs["orders"].mode == "append"


def test_offset_paginator_with_total_and_detected_data_path(api: FakeApi) -> None:
    items = [{"sku": f"s{i}"} for i in range(5)]

    @api.route("/v1/items")
    def _(request: Request) -> Reply:
        offset, limit = int(request.query["offset"]), int(request.query["lim"])
        return Reply({"items": items[offset : offset + limit], "total": len(items)})

    config = source(
        api,
        [{"name": "items", "path": "/items"}],
        paginator={"type": "offset", "limit": 2, "limit_param": "lim", "total_path": "total"},
    )
    result = read(config)

    assert [r["sku"] for r in result.rows("items")] == ["s0", "s1", "s2", "s3", "s4"]
    assert [c.query["offset"] for c in api.calls("/v1/items")] == ["0", "2", "4"]


def test_cursor_paginator_reads_the_cursor_from_the_body(api: FakeApi) -> None:
    pages = {"": (["a", "b"], "c2"), "c2": (["c"], "c3"), "c3": (["d"], None)}

    @api.route("/v1/events")
    def _(request: Request) -> Reply:
        names, nxt = pages[request.query.get("after", "")]
        return Reply({"results": [{"name": n} for n in names], "paging": {"next": nxt}})

    config = source(
        api,
        [
            {
                "name": "events",
                "path": "/events",
                "data_path": "results",
                "paginator": {"type": "cursor", "cursor_path": "paging.next", "cursor_param": "after"},
            }
        ],
        paginator="none",  # the resource's paginator overrides the source's
    )
    result = read(config)

    assert [r["name"] for r in result.rows("events")] == ["a", "b", "c", "d"]
    assert [c.query.get("after") for c in api.calls("/v1/events")] == [None, "c2", "c3"]


def test_link_header_paginator_follows_rel_next(api: FakeApi) -> None:
    @api.route("/v1/users")
    def _(request: Request) -> Reply:
        page = int(request.query.get("page", 1))
        headers = {}
        if page < 3:
            headers["Link"] = (
                f'<{api.url}/v1/users?page={page + 1}&per_page=2>; rel="next", <{api.url}/v1/users?page=1>; rel="first"'
            )
        return Reply([{"login": f"u{page}{i}"} for i in range(2)], headers=headers)

    config = source(api, [{"name": "users", "path": "/users", "params": {"per_page": 2}}], paginator="link_header")
    result = read(config)

    assert [r["login"] for r in result.rows("users")] == ["u10", "u11", "u20", "u21", "u30", "u31"]
    assert [c.query.get("page") for c in api.calls("/v1/users")] == [None, "2", "3"]


# --- retries and errors -----------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["seconds", "http-date"])
def test_429_with_retry_after_waits_then_completes(api: FakeApi, retry_after: str) -> None:
    limited = {"done": False}

    @api.route("/v1/orders")
    def _(request: Request) -> Reply:
        page = int(request.query["page"])
        if page == 2 and not limited["done"]:
            limited["done"] = True
            # an HTTP date has one-second resolution: two seconds ahead waits between one and two
            value = "1" if retry_after == "seconds" else formatdate(time.time() + 2, usegmt=True)
            return Reply({"error": "slow down"}, status=429, headers={"Retry-After": value})
        return Reply({"data": orders(2, start=page * 2 - 1), "meta": {"total_pages": 3}})

    config = source(
        api,
        [{"name": "orders", "path": "/orders", "data_path": "data"}],
        paginator={"type": "page_number", "total_path": "meta.total_pages"},
        retries={"max_attempts": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 5},
    )
    result = read(config)

    assert [r["id"] for r in result.rows("orders")] == [1, 2, 3, 4, 5, 6]
    calls = api.calls("/v1/orders")
    assert [c.query["page"] for c in calls] == ["1", "2", "2", "3"]
    waited = calls[2].at - calls[1].at
    assert 0.9 <= waited < 2.5, waited


def test_500_recovers_on_retry(api: FakeApi) -> None:
    failures = {"left": 2}

    @api.route("/v1/orders")
    def _(request: Request) -> Reply:
        if failures["left"]:
            failures["left"] -= 1
            return Reply({"error": "boom"}, status=500)
        return Reply(orders(3))

    result = read(source(api, [{"name": "orders", "path": "/orders", "paginator": "none"}]))

    assert [r["id"] for r in result.rows("orders")] == [1, 2, 3]
    assert len(api.calls("/v1/orders")) == 3


def test_retries_exhausted_says_attempts_and_last_status(api: FakeApi) -> None:
    api.route("/v1/orders")(lambda r: Reply({"error": "down"}, status=503))
    message = read_error(source(api, [{"name": "orders", "path": "/orders", "paginator": "none"}]))

    assert "after 3 attempts" in message and "HTTP 503" in message and "/v1/orders" in message
    assert len(api.calls("/v1/orders")) == 3


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_fail_clearly_without_the_token(api: FakeApi, status: int) -> None:
    api.route("/v1/orders")(lambda r: Reply({"error": f"token {TOKEN} is not valid"}, status=status))
    config = source(api, [{"name": "orders", "path": "/orders"}], auth={"type": "bearer", "token": TOKEN})
    message = read_error(config)

    assert "source `shop` resource `orders`" in message
    assert "refused the credentials" in message and f"HTTP {status}" in message and "auth: bearer" in message
    assert TOKEN not in message
    assert len(api.calls("/v1/orders")) == 1  # not retried


def test_api_key_in_query_is_redacted_from_errors_and_logs(api: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api.route("/v1/orders")(lambda r: Reply({"error": f"key {r.query.get('appid')} may not read"}, status=403))
    config = source(
        api,
        [{"name": "orders", "path": "/orders", "params": {"q": "x"}}],
        auth={"type": "api_key", "name": "appid", "location": "query", "key": TOKEN},
    )
    message = read_error(config)

    assert api.calls("/v1/orders")[0].query["appid"] == TOKEN
    assert "appid=***" in message and TOKEN not in message
    assert "appid=***" in caplog.text and TOKEN not in caplog.text


def test_404_names_the_url_path(api: FakeApi) -> None:
    message = read_error(source(api, [{"name": "orders", "path": "/ordres"}]))
    assert "404" in message and "/v1/ordres" in message and "`path`" in message


def test_connection_refused_says_the_base_url_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = RestSourceConfig.model_validate(
        {
            "name": "shop",
            "type": "rest",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "retries": {"max_attempts": 2, "backoff_seconds": 0.01},
            "resources": [{"name": "orders", "path": "/orders"}],
        }
    )
    message = read_error(config)
    assert f"base URL http://127.0.0.1:{port}/v1 is unreachable" in message
    assert "Connection refused" in message and "2 attempts" in message


def test_slow_answer_is_a_timeout_error(api: FakeApi) -> None:
    def slow(request: Request) -> Reply:
        time.sleep(0.3)
        return Reply([])

    api.route("/v1/orders")(slow)
    config = source(api, [{"name": "orders", "path": "/orders"}], timeout_seconds=0.1, retries={"max_attempts": 1})
    message = read_error(config)
    assert "did not answer within 0.1 s" in message


def test_non_json_answer_is_a_clear_error(api: FakeApi) -> None:
    api.route("/v1/orders")(lambda r: Reply(raw=b"<html>login</html>", headers={"Content-Type": "text/html"}))
    message = read_error(source(api, [{"name": "orders", "path": "/orders"}]))
    assert "is not JSON" in message and "text/html" in message


# --- incremental ------------------------------------------------------------------------------


def test_incremental_sends_the_last_cursor_and_reads_only_new_records(api: FakeApi) -> None:
    records: list[dict[str, Any]] = [
        {"id": 1, "updated_at": "2024-01-05T00:00:00Z"},
        {"id": 2, "updated_at": "2024-02-01T00:00:00Z"},
        {"id": 3, "updated_at": "2024-03-01T00:00:00Z"},
    ]

    @api.route("/v1/orders")
    def _(request: Request) -> Reply:
        since = request.query.get("updated_since", "")
        return Reply({"data": [r for r in records if r["updated_at"] >= since]})  # inclusive, like many APIs

    config = source(
        api,
        [
            {
                "name": "orders",
                "path": "/orders",
                "data_path": "data",
                "incremental": {"cursor": "updated_at", "param": "updated_since", "initial": "2024-01-01T00:00:00Z"},
            }
        ],
        paginator="none",
    )
    first = read(config)
    assert [r["id"] for r in first.rows("orders")] == [1, 2, 3]
    assert api.calls("/v1/orders")[0].query["updated_since"] == "2024-01-01T00:00:00Z"
    assert first.state["orders"]["cursor"] == "2024-03-01T00:00:00Z"

    saved = json.loads(json.dumps(first.state))  # the state store keeps JSON
    records.append({"id": 4, "updated_at": "2024-04-01T00:00:00Z"})
    second = read(config, state=saved)
    assert api.calls("/v1/orders")[1].query["updated_since"] == "2024-03-01T00:00:00Z"
    assert [r["id"] for r in second.rows("orders")] == [4]  # id 3 came back (>=) but was read before
    assert second.state["orders"]["cursor"] == "2024-04-01T00:00:00Z"

    third = read(config, state=json.loads(json.dumps(second.state)))
    assert third.outputs == {}
    assert third.state == second.state


def test_incremental_numeric_cursor_in_a_nested_field(api: FakeApi) -> None:
    @api.route("/v1/events")
    def _(request: Request) -> Reply:
        since = int(request.query.get("since", 0))
        return Reply([{"id": i, "meta": {"seq": i * 10}} for i in range(1, 4) if i * 10 > since])

    config = source(
        api,
        [
            {
                "name": "events",
                "path": "/events",
                "primary_key": "id",
                "incremental": {"cursor": "meta.seq", "param": "since"},
            }
        ],
        paginator="none",
    )
    first = read(config)
    assert first.state["events"]["cursor"] == 30 and "since" not in api.calls("/v1/events")[0].query
    second = read(config, state=first.state)
    assert api.calls("/v1/events")[1].query["since"] == "30"
    assert second.outputs == {}
    assert first.outputs["events"].mode == "merge" and first.outputs["events"].primary_key == ["id"]


# --- nested JSON and schema -------------------------------------------------------------------

NESTED = [
    {
        "id": 1,
        "customer": {"name": "Ann", "address": {"city": "Lyon"}},
        "items": [{"sku": "a", "qty": 1, "discounts": [{"code": "D1"}, {"code": "D2"}]}, {"sku": "b", "qty": 2}],
        "tags": ["new", "gift"],
    },
    {"id": 2, "customer": {"name": "Bob", "address": None}, "items": [], "tags": []},
    {"id": 3, "customer": {"name": "Cid"}, "items": [{"sku": "c", "qty": 5}]},
]


def test_nested_lists_become_child_tables_with_parent_keys(api: FakeApi) -> None:
    api.route("/v1/orders")(lambda r: Reply({"data": NESTED}))
    config = source(
        api, [{"name": "orders", "path": "/orders", "data_path": "data", "primary_key": "id"}], paginator="none"
    )
    result = read(config)

    assert set(result.outputs) == {"orders", "orders__items", "orders__items__discounts"}
    assert result.tables["orders"].schema.names == ["id", "customer__name", "customer__address__city", "tags"]
    assert result.tables["orders"].schema.field("tags").type == pa.list_(pa.string())
    assert result.rows("orders")[0] == {
        "id": 1,
        "customer__name": "Ann",
        "customer__address__city": "Lyon",
        "tags": ["new", "gift"],
    }
    assert result.rows("orders")[1]["tags"] is None

    items = result.rows("orders__items")
    assert [(r["_parent_id"], r["_index"], r["sku"], r["qty"]) for r in items] == [
        (1, 0, "a", 1),
        (1, 1, "b", 2),
        (3, 0, "c", 5),
    ]
    assert result.outputs["orders__items"].mode == "merge"
    assert result.outputs["orders__items"].primary_key == ["_parent_id", "_index"]

    discounts = result.rows("orders__items__discounts")
    assert [(r["_parent_id"], r["_index"], r["code"]) for r in discounts] == [
        (items[0]["_rat_id"], 0, "D1"),
        (items[0]["_rat_id"], 1, "D2"),
    ]
    assert items[1]["_rat_id"] is None  # only rows with children get an id
    assert result.outputs["orders__items__discounts"].primary_key == ["_parent_id", "_index"]

    again = read(config)  # ids of nested rows are stable across reads, so merges line up
    assert again.rows("orders__items__discounts") == discounts


def test_nested_without_primary_key_gets_generated_parent_ids(api: FakeApi) -> None:
    api.route("/v1/orders")(lambda r: Reply(NESTED))
    result = read(source(api, [{"name": "orders", "path": "/orders"}], paginator="none"))

    parents = {r["customer__name"]: r["_rat_id"] for r in result.rows("orders")}
    assert parents["Bob"] is None and len({parents["Ann"], parents["Cid"]}) == 2
    children = result.rows("orders__items")
    assert [c["_parent_id"] for c in children] == [parents["Ann"], parents["Ann"], parents["Cid"]]
    assert result.outputs["orders__items"].mode == "append" and result.outputs["orders__items"].primary_key == []


def test_nested_keep_stores_lists_of_objects_as_json(api: FakeApi) -> None:
    api.route("/v1/orders")(lambda r: Reply(NESTED))
    result = read(source(api, [{"name": "orders", "path": "/orders", "nested": "keep"}], paginator="none"))

    assert set(result.outputs) == {"orders"}
    rows = result.rows("orders")
    assert json.loads(rows[0]["items"]) == NESTED[0]["items"]
    assert rows[1]["items"] is None


def test_schema_is_stable_across_pages_with_missing_fields_and_mixed_types(api: FakeApi) -> None:
    pages = {
        1: [{"id": 1, "amount": 5, "name": "a"}, {"id": 2, "amount": 6, "name": "b"}],
        2: [{"id": 3, "amount": 6.5, "email": "c@x.org"}],
        3: [{"id": "x4", "amount": 7, "name": "d", "vip": True}],
    }
    api.route("/v1/people")(lambda r: Reply({"data": pages[int(r.query["page"])], "meta": {"total_pages": 3}}))
    config = source(
        api,
        [{"name": "people", "path": "/people", "data_path": "data"}],
        paginator={"type": "page_number", "total_path": "meta.total_pages"},
    )
    result = read(config, batch_rows=2)

    expected = pa.schema(
        [
            ("id", pa.string()),
            ("amount", pa.float64()),
            ("name", pa.string()),
            ("email", pa.string()),
            ("vip", pa.bool_()),
        ]
    )
    assert result.outputs["people"].schema == expected
    assert len(result.batches["people"]) == 2
    assert all(batch.schema == expected for batch in result.batches["people"])
    assert result.rows("people") == [
        {"id": "1", "amount": 5.0, "name": "a", "email": None, "vip": None},
        {"id": "2", "amount": 6.0, "name": "b", "email": None, "vip": None},
        {"id": "3", "amount": 6.5, "name": None, "email": "c@x.org", "vip": None},
        {"id": "x4", "amount": 7.0, "name": "d", "email": None, "vip": True},
    ]


def test_several_resources_each_yield_their_table(api: FakeApi) -> None:
    api.route("/v1/orders")(lambda r: Reply(orders(2)))
    api.route("/v1/customers")(lambda r: Reply({"data": [{"id": "c1"}]}))
    config = source(
        api,
        [{"name": "orders", "path": "/orders"}, {"name": "customers", "path": "customers", "data_path": "data"}],
        paginator="none",
        headers={"X-Tenant": "acme"},
    )
    result = read(config)
    assert list(result.outputs) == ["orders", "customers"]
    assert result.rows("customers") == [{"id": "c1"}]
    assert all(c.headers["x-tenant"] == "acme" for c in api.requests)
    assert all(c.headers["accept"] == "application/json" for c in api.requests)


# --- config and isolation ---------------------------------------------------------------------


def test_config_validation_messages() -> None:
    base = {"name": "shop", "type": "rest", "base_url": "https://api.example.com"}
    with pytest.raises(ValidationError, match="auth needs `type:` one of bearer, api_key, basic, oauth2"):
        RestSourceConfig.model_validate({**base, "auth": {"type": "jwt"}, "resources": [{"name": "a", "path": "/a"}]})
    with pytest.raises(ValidationError, match="resource `a` is defined twice"):
        RestSourceConfig.model_validate(
            {**base, "resources": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}]}
        )
    with pytest.raises(ValidationError, match="is not an http"):
        RestSourceConfig.model_validate(
            {**base, "base_url": "api.example.com", "resources": [{"name": "a", "path": "/a"}]}
        )
    with pytest.raises(ValidationError, match="not a valid resource name"):
        RestSourceConfig.model_validate({**base, "resources": [{"name": "Orders", "path": "/a"}]})
    with pytest.raises(ValidationError, match="paginator needs `type:`"):
        RestSourceConfig.model_validate({**base, "paginator": "pages", "resources": [{"name": "a", "path": "/a"}]})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RestSourceConfig.model_validate(
            {**base, "auth": {"type": "bearer", "token": "t", "x": 1}, "resources": [{"name": "a", "path": "/a"}]}
        )

    config = RestSourceConfig.model_validate(
        {
            **base,
            "paginator": "link_header",
            "auth": {"type": "bearer", "token": TOKEN},
            "resources": [{"name": "a", "path": "/a"}],
        }
    )
    assert isinstance(config.paginator, LinkHeaderPaginator)
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())


def test_registry_loads_a_rest_source_file_with_env_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_TOKEN", TOKEN)
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "shop.yaml").write_text(
        "type: rest\n"
        "base_url: https://api.example.com/v1\n"
        "auth:\n"
        "  type: bearer\n"
        "  token: ${env:SHOP_TOKEN}\n"  # in a flow mapping ({...}) it must be quoted: "${env:SHOP_TOKEN}"
        "paginator: {type: page_number, page_param: page, total_path: meta.total_pages}\n"
        "resources:\n"
        "  - {name: orders, path: /orders, primary_key: id, incremental: {cursor: updated_at, param: updated_since}}\n"
    )
    config, _ = load_sources(tmp_path)["shop"]
    assert connector_class("rest") is RestConnector
    assert isinstance(config, RestSourceConfig)
    assert config.auth is not None and config.auth.type == "bearer"
    assert config.auth.token.get_secret_value() == TOKEN


def test_dlt_telemetry_is_off_and_nothing_is_written_home(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "unset-by-test")
    monkeypatch.delenv("RUNTIME__DLTHUB_TELEMETRY")
    monkeypatch.chdir(tmp_path)
    api.route("/v1/orders")(lambda r: Reply(orders(1)))

    read(source(api, [{"name": "orders", "path": "/orders"}], paginator="none"))

    assert os.environ["RUNTIME__DLTHUB_TELEMETRY"] == "false"
    assert list(home.iterdir()) == [] and list(tmp_path.iterdir()) == [home]


def test_spools_are_removed_and_outputs_must_be_consumed_in_order(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    api.route("/v1/orders")(lambda r: Reply(NESTED))
    config = source(api, [{"name": "orders", "path": "/orders", "primary_key": "id"}], paginator="none")

    assert set(read(config).outputs) == {"orders", "orders__items", "orders__items__discounts"}
    assert list(tmp_path.iterdir()) == []

    outputs = list(RestConnector(config).read(ReadContext(state={}, log=logging.getLogger("test.rest"))))
    with pytest.raises(ConnectorError, match="consume each output's batches"):
        list(outputs[0].batches)
    assert list(tmp_path.iterdir()) == []

    reading = RestConnector(config).read(ReadContext(state={}, log=logging.getLogger("test.rest")))
    assert isinstance(reading, Generator)
    next(reading)
    reading.close()  # a consumer that stops early leaves nothing behind
    assert list(tmp_path.iterdir()) == []
