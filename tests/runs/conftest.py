"""A small SQL-only pipeline project: bronze -> silver (incremental) -> gold, with tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import write_project
from ratatouille.workspace import Workspace

FILES = {
    "pipelines/bronze/orders.sql": """
        -- @materialized: table
        SELECT range AS id, range % 5 AS customer, (range * 1.5)::DECIMAL(10, 2) AS amount,
               TIMESTAMP '2026-01-01' + to_hours(range) AS ts,
               CASE WHEN range = {{ var('null_key_at', -1) }} THEN NULL ELSE range END AS order_key
        FROM range({{ var('n', 100) }})
    """,
    "pipelines/silver/orders.sql": """
        -- @materialized: incremental
        -- @unique_key: order_key
        SELECT order_key, id, customer, amount - {{ var('discount', 0) }} AS amount, ts
        FROM {{ ref('bronze.orders') }}
        {% if is_incremental() %}
        WHERE ts > {{ watermark('ts') }}
        {% endif %}
    """,
    "pipelines/silver/orders.yaml": """
        description: Orders, incremental by ts.
        tags: [core]
        columns:
          - name: order_key
            tests: [not_null, unique]
          - name: amount
            tests: [non_negative]
    """,
    "pipelines/gold/by_customer.sql": """
        SELECT customer, count(*) AS orders, sum(amount) AS total
        FROM {{ ref('silver.orders') }} GROUP BY customer
    """,
    "pipelines/gold/by_customer.yaml": """
        tests:
          - name: five_customers
            sql: SELECT count(*) FROM {{ this }}
            expect: 5
    """,
}


def write_files(root: Path, files: dict[str, str]) -> None:
    """Write workspace files (paths relative to workspaces/default)."""
    for relative, text in files.items():
        path = root / "workspaces" / "default" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def pipeline_root(tmp_path: Path, project_config: str) -> Path:
    """The pipeline project on the parametrized backend."""
    root = write_project(tmp_path / "shop", project_config)
    write_files(root, FILES)
    return root


@pytest.fixture
def local_pipeline_root(tmp_path: Path) -> Path:
    """The pipeline project on local files + SQLite."""
    root = write_project(tmp_path / "shop")
    write_files(root, FILES)
    return root


@pytest.fixture
def open_ws() -> Iterator[Callable[[Path], Workspace]]:
    """Open workspaces and close them after the test."""
    opened: list[Workspace] = []

    def open_(root: Path) -> Workspace:
        ws = Workspace.open(root)
        opened.append(ws)
        return ws

    yield open_
    for ws in opened:
        ws.close()
