"""The `rat` command line: init, sample, query, tables, describe, history, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ratatouille.cli.main import cli
from ratatouille.workspace import Workspace


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    result = CliRunner().invoke(cli, ["init", str(root), "--rows", "3000"])
    assert result.exit_code == 0, result.output
    ws = Workspace.open(root)
    ws.append("bronze.stores", "SELECT * FROM read_csv('data/landing/stores/stores.csv')")
    ws.close()
    return root


def rat(project: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args, "--project", str(project)])
    return result.exit_code, result.stdout, result.stderr


def test_init_writes_a_project_with_sample_data(project: Path) -> None:
    assert (project / "ratatouille.yaml").is_file()
    assert (project / "workspaces" / "default" / "workspace.yaml").is_file()
    assert (project / ".gitignore").read_text().count(".rat/") == 1
    assert list((project / "data" / "landing" / "sales").glob("sales_*.csv"))
    for folder in ("sources", "pipelines/silver", "pipelines/gold", "macros", "notebooks"):
        assert (project / "workspaces" / "default" / folder).is_dir()


def test_init_empty_and_refuses_a_full_directory(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(tmp_path / "e"), "--empty"]).exit_code == 0
    assert not (tmp_path / "e" / "data" / "landing" / "sales").exists()
    again = runner.invoke(cli, ["init", str(tmp_path / "e"), "--empty"])
    assert again.exit_code == 1 and "not empty" in again.stderr


def test_sample_pos_is_deterministic(project: Path) -> None:
    code, _, _ = rat(project, "sample", "pos", "--rows", "2000", "--days", "3", "--seed", "7")
    assert code == 0
    first = {p.name: p.read_bytes() for p in (project / "data" / "landing" / "sales").glob("*2026-01-0[1-3].csv")}
    rat(project, "sample", "pos", "--rows", "2000", "--days", "3", "--seed", "7")
    again = {p.name: p.read_bytes() for p in (project / "data" / "landing" / "sales").glob("*2026-01-0[1-3].csv")}
    assert first == again


def test_query_formats(project: Path, tmp_path: Path) -> None:
    sql = "SELECT store_id, region FROM bronze.stores ORDER BY store_id LIMIT 3"
    code, out, _ = rat(project, "query", sql, "--format", "csv")
    assert code == 0 and out.splitlines()[0] == '"store_id","region"' and len(out.splitlines()) == 4
    code, out, _ = rat(project, "query", sql, "--format", "json")
    assert [r["store_id"] for r in json.loads(out)] == ["S001", "S002", "S003"]
    code, out, _ = rat(project, "query", sql, "--format", "table")
    assert "S001" in out and "3 rows" in out
    target = tmp_path / "out.parquet"
    code, _, _ = rat(project, "query", sql, "--output", str(target))
    assert code == 0 and pq.read_table(target).num_rows == 3
    code, out, _ = rat(project, "--json", "query", "SELECT 1 AS x")
    assert json.loads(out) == [{"x": 1}]


def test_query_as_of(project: Path) -> None:
    ws = Workspace.open(project)
    first = ws.history("bronze.stores")[0]["snapshot_id"]
    ws.append("bronze.stores", "SELECT * FROM bronze.stores")
    ws.close()
    code, out, _ = rat(project, "query", "SELECT count(*) AS n FROM bronze.stores", "--format", "csv")
    assert out.splitlines()[1] == "24"
    code, out, _ = rat(
        project, "query", "SELECT count(*) AS n FROM bronze.stores", "--as-of", str(first), "--format", "csv"
    )
    assert code == 0 and out.splitlines()[1] == "12"
    code, _, err = rat(project, "query", "SELECT 1", "--as-of", "yesterday")
    assert code == 1 and "--as-of" in err
    code, _, err = rat(project, "query", "SELECT count(*) FROM bronze.stores", "--as-of", "2020-01-01")
    assert code == 1
    assert err.startswith("Error: `bronze.stores` did not exist yet at 2020-01-01 00:00:00 UTC (its history starts at ")


def test_missing_table_names_the_existing_ones(project: Path) -> None:
    code, _, err = rat(project, "query", "SELECT * FROM bronze.store")
    assert code == 1
    assert err.startswith("Error: table `bronze.store` does not exist; did you mean `bronze.stores`?")
    assert "Traceback" not in err


def test_sql_error_points_at_the_problem(project: Path) -> None:
    code, _, err = rat(project, "query", "SELECT FROM WHERE")
    assert code == 1 and "syntax error" in err and "^" in err


def test_tables_describe_history(project: Path) -> None:
    code, out, _ = rat(project, "tables", "--json")
    assert code == 0 and json.loads(out)[0]["table"] == "default.bronze.stores"
    code, out, _ = rat(project, "describe", "bronze.stores", "--json")
    info = json.loads(out)
    assert info["rows"] == 12 and info["columns"][0]["name"] == "store_id"
    code, out, _ = rat(project, "history", "bronze.stores")
    assert code == 0 and "append" in out
    code, _, err = rat(project, "describe", "silver.nope")
    assert code == 1 and "does not exist" in err


def test_global_options_work_before_and_after(project: Path) -> None:
    before = CliRunner().invoke(cli, ["--project", str(project), "--json", "tables"])
    after = CliRunner().invoke(cli, ["tables", "--json", "--project", str(project)])
    assert before.exit_code == after.exit_code == 0 and before.stdout == after.stdout


def test_invalid_config_lists_every_problem(project: Path) -> None:
    (project / "ratatouille.yaml").write_text("profile: huge\nstorage: {warehose: x}\n")
    code, _, err = rat(project, "tables")
    assert code == 1
    assert "ratatouille.yaml:1: profile" in err and "ratatouille.yaml:2: storage.warehose" in err


def test_debug_shows_the_traceback(project: Path) -> None:
    result = CliRunner().invoke(cli, ["query", "SELECT * FROM bronze.nope", "--debug", "--project", str(project)])
    assert result.exit_code == 1 and "Traceback" in result.stderr


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from ratatouille.cli.main import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('duckdb', 'pyarrow', 'pyiceberg', 'pydantic', 'rich', 'sqlalchemy') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_a_build_of_the_pos_example_imports_neither_pyarrow_nor_the_iceberg_extension(tmp_path: Path) -> None:
    """CSV goes from DuckDB straight to Parquet, footers are read by DuckDB, and the views read
    the files the run wrote: pyarrow (and numpy), 0.13 s of CPU, and DuckDB's iceberg extension,
    0.2 s, stay unloaded in a build from scratch (``bench/bench_pipelines.py``)."""
    root = tmp_path / "pos"
    assert CliRunner().invoke(cli, ["init", str(root), "--rows", "3000"]).exit_code == 0
    code = (
        "import sys, contextlib, io; from ratatouille.cli.main import cli\n"
        "from ratatouille.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        cli(['run', '--json', '--project', sys.argv[1]])\n    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "cons = [c for c in main._OPENED if hasattr(c, 'con')]\n"
        "loaded = [c.con.execute(\"SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'iceberg'\")"
        ".fetchone()[0] for c in cons]\n"
        "print('HEAVY', [m for m in ('pyarrow', 'numpy', 'pandas') if m in sys.modules], loaded)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY [] [False]" in proc.stdout
