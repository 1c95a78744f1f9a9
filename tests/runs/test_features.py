"""Selection, Python pipelines, unit tests, freshness, views, full refresh, parallelism."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ratatouille.errors import ConfigError
from ratatouille.workspace import Workspace
from runs.conftest import write_files


def keys(result: object) -> list[str]:
    return sorted(n.key for n in result.nodes)  # type: ignore[attr-defined]


def test_selection(local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    ws = open_ws(local_pipeline_root)
    dag = ws.graph().dag
    assert dag.select(["silver.orders"]) == {"silver.orders"}
    assert dag.select(["orders"]) == {"bronze.orders", "silver.orders"}
    assert dag.select(["+gold.by_customer"]) == {"bronze.orders", "silver.orders", "gold.by_customer"}
    assert dag.select(["silver.orders+"]) == {"silver.orders", "gold.by_customer"}
    assert dag.select(["layer:gold", "tag:core"]) == {"gold.by_customer", "silver.orders"}
    with pytest.raises(ConfigError, match="did you mean `silver.orders`"):
        dag.select(["silver.ordres"])
    assert keys(ws.run(["+silver.orders"])) == ["bronze.orders", "silver.orders"]
    assert [t.short for t in ws.tables()] == ["bronze.orders", "silver.orders"]


def test_python_pipeline_with_rat_helpers(tmp_path: Path, open_ws: Callable[[Path], Workspace]) -> None:
    from helpers import write_project

    root = write_project(tmp_path / "py")
    landing = root / "data" / "landing" / "sales"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text("id,amount\n1,10\n2,20\n")
    write_files(
        root,
        {
            "pipelines/bronze/raw_sales.py": """
                from ratatouille import pipeline, rat

                @pipeline(name="raw_sales", layer="bronze", schedule="0 * * * *")
                def ingest_sales():
                    for path in rat.ls("landing/sales/*.csv"):
                        if rat.is_ingested(path):
                            continue
                        df = rat.read_file(path)
                        rat.append("bronze.raw_sales", df)
                        rat.mark_ingested(path)
                        rat.log.info("ingested %s rows from %s", df.num_rows, path)
            """,
            "pipelines/silver/sales.sql": "SELECT id, amount * 2 AS doubled FROM {{ ref('bronze.raw_sales') }}",
        },
    )
    ws = open_ws(root)
    first = ws.run()
    assert first.ok, first
    assert ws.query("SELECT sum(doubled) AS s FROM silver.sales").to_pylist() == [{"s": 60}]
    logs = ws.run_record(first.run_id)["logs"]
    assert any("ingested 2 rows" in line["message"] for line in logs)
    second = ws.run()  # the file is registered: nothing is read twice
    assert second.ok
    assert ws.query("SELECT count(*) AS n FROM bronze.raw_sales").to_pylist() == [{"n": 2}]
    (landing / "b.csv").write_text("id,amount\n3,30\n")
    assert ws.run().ok
    assert ws.query("SELECT count(*) AS n FROM bronze.raw_sales").to_pylist() == [{"n": 3}]


def test_failing_python_pipeline_reports_its_error(tmp_path: Path, open_ws: Callable[[Path], Workspace]) -> None:
    from helpers import write_project

    root = write_project(tmp_path / "py")
    write_files(
        root,
        {
            "pipelines/bronze/bad.py": """
                from ratatouille import pipeline, rat

                @pipeline(layer="bronze")
                def bad():
                    rat.append("bronze.bad", [{"x": 1}])
                    raise ValueError("the API said no")
            """
        },
    )
    ws = open_ws(root)
    result = ws.run()
    assert not result.ok
    path = root / "workspaces" / "default" / "pipelines" / "bronze" / "bad.py"
    assert result.nodes[0].error == f"{path}:6 in bad: ValueError: the API said no"
    assert ws.tables() == []  # its write was never published


def test_unit_tests_pass_and_fail(local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    write_files(
        local_pipeline_root,
        {
            "pipelines/gold/by_customer.yaml": """
                unit_tests:
                  - name: sums_per_customer
                    given:
                      silver.orders:
                        - {customer: 1, amount: 2.5}
                        - {customer: 1, amount: 1.5}
                        - {customer: 2, amount: 7}
                    expect:
                      - {customer: 1, orders: 2, total: 4.0}
                      - {customer: 2, orders: 1, total: 7}
                  - name: wrong_on_purpose
                    given:
                      silver.orders: [{customer: 1, amount: 1}]
                    expect:
                      - {customer: 1, orders: 5}
            """
        },
    )
    ws = open_ws(local_pipeline_root)
    results = {r.name: r for r in ws.test(unit=True)}
    assert results["sums_per_customer"].passed
    assert not results["wrong_on_purpose"].passed
    assert results["wrong_on_purpose"].missing == [{"customer": 1, "orders": 5}]
    assert results["wrong_on_purpose"].unexpected == [{"customer": 1, "orders": 1}]


def test_data_tests_on_published_tables(local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    ws = open_ws(local_pipeline_root)
    assert ws.run().ok
    results = ws.test(["silver.orders"])
    assert {r.name for r in results} == {"not_null(order_key)", "unique(order_key)", "non_negative(amount)"}
    assert all(r.status == "pass" for r in results)


def test_freshness_from_commit_times(local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    write_files(
        local_pipeline_root,
        {"pipelines/gold/by_customer.yaml": "freshness: {warn_after: {minutes: 0}, error_after: {hours: 1}}\n"},
    )
    ws = open_ws(local_pipeline_root)
    assert [r.status for r in ws.freshness()] == ["never"]
    assert ws.run().ok
    (result,) = ws.freshness()
    assert result.status == "warn" and result.age_hours is not None and result.age_hours < 1


def test_view_models_are_queryable(local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]) -> None:
    write_files(
        local_pipeline_root,
        {
            "pipelines/gold/big_customers.sql": "-- @materialized: view\nSELECT * FROM {{ ref('gold.by_customer') }} WHERE total > 1500"
        },
    )
    ws = open_ws(local_pipeline_root)
    result = ws.run()
    assert result.ok, result
    assert "gold.big_customers" not in [t.short for t in ws.tables()]
    assert ws.query("SELECT count(*) AS n FROM gold.big_customers").to_pylist() == [{"n": 2}]


def test_incompatible_change_suggests_full_refresh(
    local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    ws = open_ws(local_pipeline_root)
    assert ws.run().ok
    write_files(
        local_pipeline_root,
        {
            "pipelines/silver/orders.sql": """
                -- @materialized: incremental
                -- @unique_key: order_key
                SELECT order_key, id, customer, 'n/a' AS amount, ts FROM {{ ref('bronze.orders') }}
                {% if is_incremental() %} WHERE ts > {{ watermark('ts') }} {% endif %}
            """
        },
    )
    result = ws.run(["silver.orders"], variables={"n": 110})
    silver = next(n for n in result.nodes if n.key == "silver.orders")
    assert silver.status == "failed" and "--full-refresh" in (silver.error or "")


def test_independent_models_run_in_parallel(tmp_path: Path, open_ws: Callable[[Path], Workspace]) -> None:
    from helpers import write_project

    root = write_project(tmp_path / "par", "engine: {max_parallel_pipelines: 4}\n")
    write_files(
        root, {f"pipelines/silver/m{i}.sql": f"SELECT range AS id, {i} AS m FROM range(1000)" for i in range(6)}
    )
    ws = open_ws(root)
    seen: list[tuple[str, str]] = []
    result = ws.run(progress=lambda event, node: seen.append((event, node.key)))
    assert result.ok, [(n.key, n.status, n.error) for n in result.nodes]
    # Several models were started before the first one finished.
    first_finish = next(i for i, (event, _) in enumerate(seen) if event != "started")
    assert first_finish >= 2
    assert len(ws.tables()) == 6


def test_failed_python_pipeline_does_not_mark_its_files_ingested(
    tmp_path: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    from helpers import write_project

    root = write_project(tmp_path / "py")
    landing = root / "data" / "landing" / "in"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text("id,reason\n1,\n")
    pipeline = """
        from ratatouille import pipeline, rat

        @pipeline(layer="bronze", columns=[{"name": "reason", "tests": [TESTS]}])
        def raw():
            for path in rat.ls("landing/in/*.csv"):
                if not rat.is_ingested(path):
                    rat.append("bronze.raw", rat.read_file(path, all_varchar=True))
                    rat.mark_ingested(path)
    """
    write_files(root, {"pipelines/bronze/raw.py": pipeline.replace("TESTS", '"not_null"')})
    ws = open_ws(root)
    assert not ws.run().ok  # the test fails: nothing published, and the file stays unread
    write_files(root, {"pipelines/bronze/raw.py": pipeline.replace("TESTS", "")})
    ws.close()
    assert ws.run().ok
    assert ws.query("SELECT count(*) AS n FROM bronze.raw").to_pylist() == [{"n": 1}]


def test_running_nodes_report_duckdb_progress(tmp_path: Path, open_ws: Callable[[Path], Workspace]) -> None:
    from helpers import write_project

    root = write_project(tmp_path / "prog")
    write_files(root, {"pipelines/silver/slow.sql": "SELECT count(*) AS n FROM range(150000000) t(x) WHERE x % 7 = 3"})
    ws = open_ws(root)
    seen: list[tuple[str, float | None]] = []
    result = ws.run(progress=lambda event, node: seen.append((event, node.progress)))
    assert result.ok
    values = [value for event, value in seen if event == "progress"]
    assert values and all(value is not None and 0 <= value <= 100 for value in values)
    assert values == sorted(values)  # reported as it moves on, never backwards
    assert seen[-1][0] == "success"


def test_the_cli_shows_a_bar_per_running_node_and_a_line_when_it_ends() -> None:
    import io

    from rich.console import Console

    from ratatouille.cli.render import RunProgress
    from ratatouille.runs.runner import NodeResult

    screen = io.StringIO()
    progress = RunProgress()
    progress.out = Console(file=screen, force_terminal=True, width=100)
    node = NodeResult("bronze.sales", "source")
    with progress:
        progress("started", node)
        node.progress = 42.0
        progress("progress", node)
        assert progress._bars is not None and progress._bars.tasks[0].completed == 42.0
        node.status, node.rows_written, node.duration_s = "success", 1000, 1.5
        progress("success", node)
        assert not progress._bars.tasks  # the bar makes way for the line
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "✓ bronze.sales  1,000 rows  1.50s" in text


def test_var_precedence_project_workspace_model_then_command_line(
    tmp_path: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    from helpers import write_project

    root = write_project(tmp_path / "vars", "vars: {a: project, b: project, c: project, d: project}\n")
    write_files(
        root,
        {
            "workspace.yaml": "name: default\nvars: {b: workspace, c: workspace, d: workspace}\n",
            "pipelines/silver/v.sql": (
                "-- @vars: {c: model, d: model}\n"
                "SELECT '{{ var(\"a\") }}' AS a, '{{ var(\"b\") }}' AS b, '{{ var(\"c\") }}' AS c, "
                "'{{ var(\"d\") }}' AS d"
            ),
        },
    )
    ws = open_ws(root)
    assert ws.run(variables={"d": "cli"}).ok
    assert ws.query("SELECT * FROM silver.v").to_pylist() == [
        {"a": "project", "b": "workspace", "c": "model", "d": "cli"}
    ]
    assert "'cli' AS d" in ws.compile("silver.v", variables={"d": "cli"})


def test_a_run_that_fails_before_its_nodes_start_is_recorded_as_failed(
    local_pipeline_root: Path, open_ws: Callable[[Path], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ratatouille.errors import CatalogError
    from ratatouille.storage.catalog import Lakehouse

    ws = open_ws(local_pipeline_root)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise CatalogError("the catalog is down")

    monkeypatch.setattr(Lakehouse, "list_tables", unreachable)
    with pytest.raises(CatalogError):
        ws.run()
    (latest,) = ws.runs(1)
    assert latest["status"] == "failed" and "the catalog is down" in latest["error"]


INCOMPATIBLE_ORDERS = """
    -- @materialized: incremental
    -- @unique_key: order_key
    SELECT order_key, id, customer, 'n/a' AS amount, ts FROM {{ ref('bronze.orders') }}
    {% if is_incremental() %} WHERE ts > {{ watermark('ts') }} {% endif %}
"""


def test_full_refresh_replaces_a_column_whose_type_changed(
    local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    ws = open_ws(local_pipeline_root)
    assert ws.run().ok
    before = ws.query("SELECT * FROM silver.orders LIMIT 0").column_names
    write_files(
        local_pipeline_root,
        {
            "pipelines/silver/orders.sql": INCOMPATIBLE_ORDERS,
            "pipelines/silver/orders.yaml": "columns:\n  - name: order_key\n    tests: [not_null, unique]\n",
            "pipelines/gold/by_customer.sql": "SELECT customer, count(*) AS orders FROM {{ ref('silver.orders') }} GROUP BY customer",
        },
    )
    result = ws.run(["silver.orders"], full_refresh=True)
    assert result.ok, [(n.key, n.error) for n in result.nodes]
    assert ws.query("SELECT * FROM silver.orders LIMIT 0").column_names == before  # same position
    assert ws.query("SELECT DISTINCT amount FROM silver.orders").to_pylist() == [{"amount": "n/a"}]
    assert ws.query("SELECT typeof(amount) AS t FROM silver.orders LIMIT 1").to_pylist() == [{"t": "VARCHAR"}]


def test_failed_full_refresh_with_a_type_change_leaves_readers_unchanged(
    local_pipeline_root: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    ws = open_ws(local_pipeline_root)
    assert ws.run().ok
    before = ws.query("SELECT * FROM silver.orders ORDER BY id").to_pylist()
    failing = INCOMPATIBLE_ORDERS.replace("'n/a' AS amount", "'n/a' AS amount, NULL::INT AS must_be_set")
    write_files(
        local_pipeline_root,
        {
            "pipelines/silver/orders.sql": failing,
            "pipelines/silver/orders.yaml": "columns:\n  - name: must_be_set\n    tests: [not_null]\n",
        },
    )
    result = ws.run(["silver.orders"], full_refresh=True)
    assert not result.ok
    assert ws.query("SELECT * FROM silver.orders ORDER BY id").to_pylist() == before
    ws.close()
    ws = open_ws(local_pipeline_root)
    assert ws.query("SELECT * FROM silver.orders ORDER BY id").to_pylist() == before


FAILING_PIPELINE = """from ratatouille import pipeline, rat


def helper(n):
    return 10 / n


@pipeline(name="boom", layer="bronze")
def boom():
    rat.log.info("starting")
    rat.append("bronze.fine", "SELECT 1 AS id")
    {call}
"""


@pytest.mark.parametrize(
    ("call", "line", "function", "message"),
    [
        ("helper(0)", 5, "helper", "ZeroDivisionError: division by zero"),
        ("raise KeyError('store_id')", 12, "boom", "KeyError: 'store_id'"),
        ('rat.append("bronze.dupes", "SELECT 1 AS a, 2 AS A")', 12, "boom", "two columns named `a` and `A`"),
        ('rat.append("events", "SELECT 1 AS a")', 12, "boom", "write `layer.name`, e.g. `bronze.events`"),
        ('rat.append("other.bronze.x", "SELECT 1 AS a")', 12, "boom", "writes only its own tables"),
    ],
    ids=["in-a-helper", "in-the-pipeline", "rat-helper-error", "bare-name", "other-workspace"],
)
def test_python_pipeline_errors_name_the_users_file_and_line(
    tmp_path: Path, open_ws: Callable[[Path], Workspace], call: str, line: int, function: str, message: str
) -> None:
    from helpers import write_project

    root = write_project(tmp_path / "py")
    path = root / "workspaces" / "default" / "pipelines" / "bronze" / "boom.py"
    path.parent.mkdir(parents=True)
    path.write_text(FAILING_PIPELINE.format(call=call))
    ws = open_ws(root)
    result = ws.run()
    node = next(n for n in result.nodes if n.key == "bronze.boom")
    assert node.status == "failed"
    assert (node.error or "").startswith(f"{path}:{line} in {function}: "), node.error
    assert message in (node.error or "")
    assert "bronze.fine" not in [t.short for t in ws.tables()]  # nothing of the failed pipeline published
    logs = [entry["message"] for entry in ws.run_record(result.run_id)["logs"]]
    assert "starting" in logs
    assert node.error in logs  # `rat logs RUN` shows the located error
    traceback = next(m for m in logs if m.startswith("Traceback (your code"))
    assert f'File "{path}", line {line}, in {function}' in traceback
    assert "ratatouille" not in traceback.replace(str(path), "")  # only the user's frames


def test_runs_shorten_the_gil_switch_interval_and_restore_it() -> None:
    import sys

    from ratatouille.runs.runner import _short_gil_turns

    before = sys.getswitchinterval()
    with _short_gil_turns():
        short = sys.getswitchinterval()
        with _short_gil_turns():  # a second run of the same process (the API's)
            assert sys.getswitchinterval() == short
        assert sys.getswitchinterval() == short  # the first run still goes on
    assert short < before
    assert sys.getswitchinterval() == before


def _iceberg_loaded(ws: Workspace) -> bool:
    row = ws.con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'iceberg'").fetchone()
    return bool(row and row[0])


def test_a_build_from_scratch_reads_the_files_it_wrote_without_iceberg(
    tmp_path: Path, open_ws: Callable[[Path], Workspace]
) -> None:
    """Tables the run wrote whole are read from their files (no iceberg extension, 0.2 s of CPU);
    a table written twice, or one that existed before, is read through its Iceberg metadata."""
    from helpers import write_project

    root = write_project(tmp_path / "scan")
    write_files(
        root,
        {
            "pipelines/bronze/twice.py": """
                from ratatouille import pipeline, rat

                @pipeline(name="twice", layer="bronze")
                def twice():
                    rat.append("bronze.twice", "SELECT 1 AS id")
                    rat.append("bronze.twice", "SELECT 2 AS id")
            """,
            "pipelines/silver/numbers.sql": """
                -- @partition_by: [g]
                SELECT range AS id, range % 3 AS g FROM range(30)
            """,
            "pipelines/gold/totals.sql": """
                SELECT g, count(*) AS n FROM {{ ref('silver.numbers') }} GROUP BY g
            """,
            "pipelines/gold/copy.sql": "SELECT * FROM {{ ref('silver.numbers') }}",
        },
    )
    ws = open_ws(root)
    first = ws.run(["silver.numbers+"])
    assert first.ok, [(n.key, n.error) for n in first.nodes]
    assert not _iceberg_loaded(ws)
    assert ws.query("SELECT sum(n) AS n FROM gold.totals").to_pylist() == [{"n": 30}]
    assert [c["name"] for c in ws.describe("gold.copy")["columns"]] == ["id", "g"]  # no partition folder column

    write_files(root, {"pipelines/silver/ids.sql": "SELECT count(*) AS n FROM {{ ref('bronze.twice') }}"})
    ws = open_ws(root)
    second = ws.run(["+silver.ids"])
    assert second.ok, [(n.key, n.error) for n in second.nodes]
    assert _iceberg_loaded(ws)  # bronze.twice was written twice: read through Iceberg
    assert ws.query("SELECT n FROM silver.ids").to_pylist() == [{"n": 2}]  # both appends seen
