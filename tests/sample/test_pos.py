"""Tests of the point-of-sale sample data generator."""

from __future__ import annotations

import collections
import csv
import datetime
import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from ratatouille.sample.pos import REGIONS, SampleSummary, generate_pos

SALES_HEADER = [
    "txn_id",
    "transaction_ts",
    "store_id",
    "product_id",
    "quantity",
    "unit_price",
    "total_amount",
    "payment_method",
    "customer_id",
]
STORES_HEADER = ["store_id", "store_name", "city", "region", "opened_on", "sq_meters"]
PRODUCTS_HEADER = ["product_id", "sku", "product_name", "category", "brand", "unit_price", "cost"]
SALES_NAME = re.compile(r"sales_(north|south|east|west)_(\d{4}-\d{2}-\d{2})\.csv")
ISO_TS = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
DMY_TS = re.compile(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}")
PRICE = re.compile(r"-?\d+\.\d{2}")
CLEAN_STORE = re.compile(r"S\d{3}")

ROWS = 20_000
DAYS = 14
START = datetime.date(2026, 1, 1)  # a Thursday


@dataclass(frozen=True)
class Sale:
    file: pathlib.Path
    group: str
    file_date: datetime.date
    line: tuple[str, ...]

    def __getattr__(self, name: str) -> str:
        return self.line[SALES_HEADER.index(name)]


@dataclass(frozen=True)
class Dataset:
    landing: pathlib.Path
    summary: SampleSummary
    sales: list[Sale]
    stores: list[dict[str, str]]
    products: list[dict[str, str]]


def read_rows(path: pathlib.Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        header, *body = list(csv.reader(handle))
    return header, body


def read_dicts(path: pathlib.Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_sales(landing: pathlib.Path) -> list[Sale]:
    sales: list[Sale] = []
    for path in sorted((landing / "sales").iterdir()):
        match = SALES_NAME.fullmatch(path.name)
        assert match, path.name
        header, body = read_rows(path)
        assert header == SALES_HEADER, path.name
        file_date = datetime.date.fromisoformat(match.group(2))
        sales.extend(Sale(path, match.group(1), file_date, tuple(line)) for line in body)
    return sales


def parse_ts(value: str) -> datetime.datetime:
    if ISO_TS.fullmatch(value):
        return datetime.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    assert DMY_TS.fullmatch(value), value
    return datetime.datetime.strptime(value, "%d/%m/%Y %H:%M:%S")


def tree_bytes(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    landing = tmp_path_factory.mktemp("landing")
    summary = generate_pos(landing, rows=ROWS, days=DAYS, seed=7, start=START)
    stores = read_dicts(landing / "stores" / "stores.csv")
    products = read_dicts(landing / "products" / "products.csv")
    return Dataset(landing, summary, read_sales(landing), stores, products)


def share(sales: list[Sale], predicate: Callable[[Sale], bool]) -> float:
    return sum(1 for sale in sales if predicate(sale)) / len(sales)


# --- layout -------------------------------------------------------------------------------------------


def test_summary_and_files(dataset: Dataset) -> None:
    summary = dataset.summary
    assert (summary.rows, summary.days, summary.stores, summary.products) == (ROWS, DAYS, 12, 250)
    assert summary.files == sorted(summary.files)
    on_disk = sorted(p for p in dataset.landing.rglob("*") if p.is_file())
    assert summary.files == on_disk
    assert dataset.landing / "stores" / "stores.csv" in summary.files
    assert dataset.landing / "products" / "products.csv" in summary.files
    sales_files = [p for p in summary.files if p.parent.name == "sales"]
    expected = {
        f"sales_{group}_{(START + datetime.timedelta(days=d)).isoformat()}.csv"
        for d in range(DAYS)
        for group in REGIONS
    }
    assert {p.name for p in sales_files} == expected
    assert len(dataset.sales) == ROWS


def test_stores_file(dataset: Dataset) -> None:
    header, _ = read_rows(dataset.landing / "stores" / "stores.csv")
    assert header == STORES_HEADER
    assert [s["store_id"] for s in dataset.stores] == [f"S{i:03d}" for i in range(1, 13)]
    assert {s["region"] for s in dataset.stores} == set(REGIONS)
    assert len({s["store_name"] for s in dataset.stores}) == 12
    for store in dataset.stores:
        assert datetime.date.fromisoformat(store["opened_on"]) < START
        assert 200 <= int(store["sq_meters"]) <= 5000


def test_products_file(dataset: Dataset) -> None:
    header, _ = read_rows(dataset.landing / "products" / "products.csv")
    assert header == PRODUCTS_HEADER
    assert [int(p["product_id"]) for p in dataset.products] == list(range(1, 251))
    assert len({p["sku"] for p in dataset.products}) == 250
    categories = {p["category"] for p in dataset.products}
    assert {"Produce", "Dairy", "Bakery", "Beverages", "Snacks", "Household", "Frozen", "Meat"} <= categories
    for product in dataset.products:
        assert PRICE.fullmatch(product["unit_price"]) and PRICE.fullmatch(product["cost"])
        assert Decimal("0") < Decimal(product["cost"]) < Decimal(product["unit_price"])
        assert product["brand"] and product["product_name"]


# --- content ------------------------------------------------------------------------------------------


def test_rows_are_consistent(dataset: Dataset) -> None:
    store_region = {s["store_id"]: s["region"] for s in dataset.stores}
    price_of = {p["product_id"]: Decimal(p["unit_price"]) for p in dataset.products}
    for sale in dataset.sales:
        int(sale.txn_id)
        store_id = sale.store_id.strip().upper()
        assert store_region[store_id] == sale.group, sale
        assert sale.product_id in price_of
        if sale.unit_price == "":
            assert sale.total_amount == ""
        else:
            assert PRICE.fullmatch(sale.unit_price) and PRICE.fullmatch(sale.total_amount), sale
            assert Decimal(sale.total_amount) == int(sale.quantity) * Decimal(sale.unit_price)
            # catalogue price, or the 20% promotion
            list_price = price_of[sale.product_id]
            assert Decimal(sale.unit_price) in {
                list_price,
                (list_price * Decimal("0.8")).quantize(Decimal("0.01")),
            }
        assert sale.payment_method.strip().lower() in {"card", "cash", "mobile"}
        assert sale.customer_id == "" or int(sale.customer_id) > 0


def test_every_row_date_matches_its_file(dataset: Dataset) -> None:
    for sale in dataset.sales:
        ts = parse_ts(sale.transaction_ts)
        assert ts.date() == sale.file_date, sale
        assert 7 <= ts.hour <= 21


def test_both_timestamp_formats(dataset: Dataset) -> None:
    iso = share(dataset.sales, lambda s: ISO_TS.fullmatch(s.transaction_ts) is not None)
    dmy = share(dataset.sales, lambda s: DMY_TS.fullmatch(s.transaction_ts) is not None)
    assert iso + dmy == 1
    assert 0.04 <= dmy <= 0.06


def test_files_are_ordered_by_txn_id(dataset: Dataset) -> None:
    by_file: dict[pathlib.Path, list[Sale]] = collections.defaultdict(list)
    for sale in dataset.sales:
        by_file[sale.file].append(sale)
    for sales in by_file.values():
        ids = [int(s.txn_id) for s in sales]
        assert ids == sorted(ids)
        times = [parse_ts(s.transaction_ts) for s in sales]
        assert times == sorted(times)  # txn_id follows the time of day


def test_txn_id_unique_among_clean_rows(dataset: Dataset) -> None:
    lines_by_id: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    for sale in dataset.sales:
        lines_by_id[sale.txn_id].add(sale.line)
    # A repeated txn_id is always an exact re-send of the same line, never a different transaction.
    assert all(len(lines) == 1 for lines in lines_by_id.values())
    distinct = {s.line for s in dataset.sales}
    assert len(lines_by_id) == len(distinct)


def test_resent_rows(dataset: Dataset) -> None:
    counts = collections.Counter((s.file, s.line) for s in dataset.sales)
    extra = sum(c - 1 for c in counts.values())
    assert 0.003 <= extra / ROWS <= 0.007
    assert max(counts.values()) == 2


def test_dirt_proportions(dataset: Dataset) -> None:
    sales = dataset.sales
    bad_quantity = share(sales, lambda s: int(s.quantity) <= 0)
    assert 0.0015 <= bad_quantity <= 0.005
    assert any(s.quantity == "0" for s in sales) and any(int(s.quantity) < 0 for s in sales)
    missing_price = share(sales, lambda s: s.unit_price == "")
    assert 0.0015 <= missing_price <= 0.005
    odd_payment = share(sales, lambda s: s.payment_method not in {"card", "cash", "mobile"})
    assert 0.015 <= odd_payment <= 0.025
    payments = {s.payment_method for s in sales}
    assert {" Card", "CASH ", "Mobile"} <= payments
    odd_store = share(sales, lambda s: CLEAN_STORE.fullmatch(s.store_id) is None)
    assert 0.006 <= odd_store <= 0.014
    assert any(s.store_id.startswith(" s") for s in sales)
    assert any(s.store_id.endswith(" ") for s in sales)
    no_customer = share(sales, lambda s: s.customer_id == "")
    assert 0.27 <= no_customer <= 0.33


def test_realistic_distributions(dataset: Dataset) -> None:
    sales = dataset.sales
    per_weekday: collections.Counter[int] = collections.Counter(s.file_date.weekday() for s in sales)
    dates = [START + datetime.timedelta(days=d) for d in range(DAYS)]
    days_per_weekday = collections.Counter(date.weekday() for date in dates)
    per_day = {wd: per_weekday[wd] / days_per_weekday[wd] for wd in range(7)}
    assert per_day[5] > 1.3 * max(per_day[wd] for wd in range(4))  # Saturday vs Monday-Thursday

    hours = collections.Counter(parse_ts(s.transaction_ts).hour for s in sales)
    assert hours[12] > 2 * hours[9] and hours[18] > 2 * hours[15] and hours[18] > 3 * hours[7]

    stores = collections.Counter(s.store_id.strip().upper() for s in sales)
    assert max(stores.values()) > 3 * min(stores.values())

    products = collections.Counter(s.product_id for s in sales).most_common()
    assert products[0][1] > 10 * products[len(products) // 2][1]

    quantities = collections.Counter(abs(int(s.quantity)) for s in sales)
    assert quantities[1] > quantities[2] > quantities[3] > quantities[4]
    assert (quantities[1] + quantities[2] + quantities[3]) / ROWS > 0.85

    payments = collections.Counter(s.payment_method.strip().lower() for s in sales)
    assert payments["card"] > payments["cash"] > payments["mobile"] > 0.1 * ROWS


# --- determinism --------------------------------------------------------------------------------------


def test_same_arguments_give_identical_bytes(tmp_path: pathlib.Path) -> None:
    first = generate_pos(tmp_path / "a", rows=5_000, days=5, seed=3)
    second = generate_pos(tmp_path / "b", rows=5_000, days=5, seed=3)
    names = [p.relative_to(tmp_path / "a") for p in first.files]
    assert names == [p.relative_to(tmp_path / "b") for p in second.files]
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")


def test_other_seed_gives_other_data(tmp_path: pathlib.Path) -> None:
    generate_pos(tmp_path / "a", rows=5_000, days=5, seed=3)
    generate_pos(tmp_path / "b", rows=5_000, days=5, seed=4)
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    for name in set(a) & set(b):
        assert a[name] != b[name], name


def test_overwrites_existing_files(tmp_path: pathlib.Path) -> None:
    generate_pos(tmp_path / "ref", rows=2_000, days=2)
    target = tmp_path / "landing"
    stale = target / "sales" / f"sales_north_{START.isoformat()}.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("garbage\n")
    other = target / "keep.txt"
    other.write_text("untouched")
    generate_pos(target, rows=2_000, days=2)
    generate_pos(target, rows=2_000, days=2)
    assert stale.read_bytes() == (tmp_path / "ref" / stale.relative_to(target)).read_bytes()
    assert other.read_text() == "untouched"


def test_tiny_dataset(tmp_path: pathlib.Path) -> None:
    summary = generate_pos(tmp_path, rows=1, days=3, stores=1, products=1)
    sales_files = [p for p in summary.files if p.parent.name == "sales"]
    assert len(sales_files) == 1
    assert len(read_sales(tmp_path)) == 1
    assert summary.rows == 1 and summary.stores == 1 and summary.products == 1


def test_custom_sizes(tmp_path: pathlib.Path) -> None:
    start = datetime.date(2024, 2, 28)
    summary = generate_pos(tmp_path, rows=3_000, days=3, stores=30, products=40, start=start)
    sales = read_sales(tmp_path)
    assert len(sales) == 3_000 == summary.rows
    assert {s.file_date for s in sales} == {
        datetime.date(2024, 2, 28),
        datetime.date(2024, 2, 29),
        datetime.date(2024, 3, 1),
    }
    assert {s.store_id.strip().upper() for s in sales} <= {f"S{i:03d}" for i in range(1, 31)}
    assert {int(s.product_id) for s in sales} <= set(range(1, 41))


# --- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 0}, "rows"),
        ({"rows": -5}, "rows"),
        ({"days": 0}, "days"),
        ({"stores": 0}, "stores"),
        ({"stores": 1000}, "stores"),
        ({"products": 0}, "products"),
        ({"rows": 1.5}, "rows"),
        ({"rows": True}, "rows"),
        ({"days": "3"}, "days"),
        ({"seed": "42"}, "seed"),
        ({"start": "2026-01-01"}, "start"),
        ({"start": datetime.date(9999, 12, 1), "days": 40}, "start"),
    ],
)
def test_invalid_arguments(tmp_path: pathlib.Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_pos(tmp_path / "landing", **kwargs)
    assert not (tmp_path / "landing").exists()
