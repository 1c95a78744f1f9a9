"""Every bad input of a pipeline project is reported at once, with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_project
from ratatouille.errors import ConfigError
from ratatouille.workspace import Workspace
from runs.conftest import FILES, write_files


def problems(root: Path) -> str:
    ws = Workspace.open(root)
    try:
        with pytest.raises(ConfigError) as err:
            ws.graph()
        return str(err.value)
    finally:
        ws.close()


def test_unknown_ref_names_the_closest_model_and_the_line(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    write_files(root, {**FILES, "pipelines/gold/by_customer.sql": "SELECT 1\nFROM {{ ref('silver.order') }}\n"})
    text = problems(root)
    assert "gold/by_customer.sql:2: refs `silver.order`, which does not exist; did you mean `silver.orders`?" in text


def test_a_disabled_model_is_out_of_the_dag_and_refs_to_it_say_so(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    write_files(root, {"pipelines/silver/old.sql": "-- @enabled: false\nSELECT 1 AS x\n"})
    ws = Workspace.open(root)
    try:
        assert "silver.old" not in ws.graph().dag.nodes
    finally:
        ws.close()
    write_files(root, {"pipelines/gold/uses_old.sql": "SELECT *\nFROM {{ ref('silver.old') }}\n"})
    text = problems(root)
    assert "gold/uses_old.sql:2: refs `silver.old`, which is disabled (`enabled: false` in " in text


def test_cycles_are_printed_as_the_cycle(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    write_files(
        root,
        {
            "pipelines/silver/a.sql": "SELECT * FROM {{ ref('silver.b') }}",
            "pipelines/silver/b.sql": "SELECT * FROM {{ ref('silver.c') }}",
            "pipelines/silver/c.sql": "SELECT * FROM {{ ref('silver.a') }}",
        },
    )
    assert "cycle (each reads the next): silver.a -> silver.b -> silver.c -> silver.a" in problems(root)


def test_unknown_yaml_keys_header_conflicts_and_syntax_errors_all_at_once(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    write_files(
        root,
        {
            **FILES,
            "pipelines/silver/orders.yaml": "description: x\nmaterialised: table\ncolumns:\n  - name: id\n    tests: [not_nul]\n",
            "pipelines/gold/by_customer.sql": "-- @materialized: view\nSELECT customer,\n  count(*) AS n\nFROM {{ ref('silver.orders') }}\nGROUP BY customer\n",
            "pipelines/gold/by_customer.yaml": "materialized: table\n",
            "pipelines/gold/broken.sql": "SELECT id,\n  FROM WHERE {{ ref('bronze.orders') }}\n",
        },
    )
    text = problems(root)
    assert "silver/orders.yaml:2: materialised: unknown key" in text
    assert "silver/orders.yaml:5: columns.0.tests.0.kind:" in text and "unknown test `not_nul`" in text
    assert "gold/by_customer.sql:1: materialized: is `view` here but `table` in by_customer.yaml:1" in text
    assert "gold/broken.sql:2: SQL syntax error" in text


def test_unknown_source_and_missing_var(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    write_files(
        root,
        {
            "pipelines/silver/a.sql": "SELECT * FROM {{ source('sale') }}",
            "pipelines/silver/b.sql": "SELECT {{ var('threshold') }} AS t",
        },
    )
    text = problems(root)
    assert "silver/a.sql:1: source `sale` does not exist" in text
    assert "silver/b.sql:1: var `threshold` is not set" in text


def test_incremental_merge_without_unique_key_is_refused(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    write_files(root, {"pipelines/silver/a.sql": "-- @materialized: incremental\nSELECT 1 AS id"})
    assert "needs a unique_key" in problems(root)


def test_python_pipeline_import_error_points_at_its_line(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    write_files(root, {"pipelines/bronze/raw.py": "import os\n\nx = 1 / 0\n"})
    assert "bronze/raw.py:3: importing it failed: ZeroDivisionError" in problems(root)


def test_python_pipeline_syntax_error_points_at_its_line(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    write_files(root, {"pipelines/bronze/raw.py": "import os\n\n\ndef ingest(:\n    pass\n"})
    assert "bronze/raw.py:4: importing it failed: SyntaxError: invalid syntax" in problems(root)


def test_the_graph_cache_skips_compiling_unchanged_models_and_never_hides_a_new_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ratatouille.models.compiler import Compiler

    root = write_project(tmp_path / "p")
    write_files(root, FILES)
    ws = Workspace.open(root)
    try:
        first = ws.graph()
        deps = {key: set(node.upstream) for key, node in first.dag.nodes.items()}
        assert (root / ".rat" / "cache" / "graph-default.json").exists()

        def no_compiling(*args: object, **kwargs: object) -> None:
            raise AssertionError("an unchanged model was compiled again")

        with monkeypatch.context() as patch:
            patch.setattr(Compiler, "compile", no_compiling)
            again = ws.graph()
        assert {key: set(node.upstream) for key, node in again.dag.nodes.items()} == deps
    finally:
        ws.close()
    model = next(p for p in (root / "workspaces" / "default" / "pipelines").rglob("*.sql"))
    model.write_text(model.read_text() + "\nWHERE (\n")
    assert "SQL syntax error" in problems(root)
