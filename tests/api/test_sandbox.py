"""The query sandbox itself: DuckDB's settings hold even for statements that slip past the check."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from helpers import write_project
from ratatouille.errors import QueryError, TableNotFoundError
from ratatouille.sandbox import QueryRefusedError, QueryTimeoutError, Sandbox, SandboxPool, check_sql, pool_for
from ratatouille.workspace import Workspace


def _two_workspaces(root: Path, extra: str = "") -> Path:
    write_project(root, extra)
    (root / "workspaces" / "other").mkdir(parents=True)
    (root / "workspaces" / "other" / "workspace.yaml").write_text("name: other\n")
    ws = Workspace.open(root)
    ws.append("silver.sales", "SELECT range AS id, range % 7 AS k FROM range(1000)")
    ws.close()
    other = Workspace.open(root, "other")
    other.append("silver.secret", "SELECT 'top secret' AS s")
    other.close()
    return root


@pytest.fixture
def project(tmp_path: Path, project_config: str) -> Iterator[Workspace]:
    """Two workspaces on the parametrized backend (local + SQLite, S3 + PostgreSQL)."""
    ws = Workspace.open(_two_workspaces(tmp_path / "p", project_config))
    yield ws
    ws.close_sandboxes()
    ws.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Workspace]:
    """Two workspaces on local files + SQLite."""
    ws = Workspace.open(_two_workspaces(tmp_path / "p"))
    yield ws
    ws.close_sandboxes()
    ws.close()


def _rows(ws: Workspace, sql: str, readable: list[str] | None = None) -> list[dict[str, object]]:
    with ws.sandboxed_sql(sql, readable) as query:
        return [row for batch in query for row in batch.to_pylist()]


def test_reads_allowed_tables_and_nothing_else(project: Workspace) -> None:
    assert _rows(project, "SELECT count(*) AS n FROM silver.sales") == [{"n": 1000}]
    with pytest.raises(QueryError, match="other"):
        _rows(project, "SELECT * FROM other.silver.secret")
    assert _rows(project, "SELECT s FROM other.silver.secret", ["other"]) == [{"s": "top secret"}]


def test_settings_hold_even_past_the_statement_check(project: Workspace) -> None:
    """Statements run straight on the sandbox's connection, skipping ``check_sql``."""
    sandbox = pool_for(project.project).get(frozenset({"default"}))
    con = sandbox.cursor("default")
    try:
        lakehouse = project.project.lakehouse
        other = next(t for t in lakehouse.list_tables() if t.workspace == "other")
        denied = [
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM read_text('/etc/passwd')",
            "SELECT * FROM glob('/etc/*')",
            f"SELECT * FROM iceberg_scan('{other.metadata_location}')",
            f"SELECT * FROM read_text('{lakehouse.warehouse}/other/silver/secret/metadata/*.json')",
            f"SELECT * FROM read_text('{lakehouse.warehouse}/default/../other/silver/secret/metadata/*.json')",
            "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
            "ATTACH '/tmp/sandbox-escape.duckdb' AS x",
            "COPY (SELECT 1) TO '/tmp/sandbox-escape.csv'",
            "INSTALL httpfs",
            "LOAD '/tmp/evil.duckdb_extension'",
        ]
        for sql in denied:
            if "../" in sql and lakehouse.is_s3:
                # S3 keys are literal: DuckDB lets the prefix through, and the store has no such key
                assert con.sql(sql).fetchall() == []
                continue
            with pytest.raises(duckdb.PermissionException) as caught:
                rows = con.sql(sql)
                if rows is not None:
                    rows.fetchall()
            assert "root:" not in str(caught.value)
        for setting in (
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "RESET lock_configuration",
            "SET autoinstall_known_extensions = true",
        ):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(setting)
        assert not Path("/tmp/sandbox-escape.csv").exists()
        assert con.sql("SELECT count(*) FROM silver.sales").fetchall() == [(1000,)]
    finally:
        con.close()


def test_unredacted_secrets_are_not_shown(project: Workspace) -> None:
    sandbox = pool_for(project.project).get(frozenset({"default"}))
    con = sandbox.cursor("default")
    try:
        with pytest.raises(duckdb.Error):
            con.sql("SELECT * FROM duckdb_secrets(redact = false)").fetchall()
        secret = project.project.config.storage.s3.secret_access_key
        if secret is not None:
            shown = str(con.sql("SELECT * FROM duckdb_secrets()").fetchall())
            assert secret.get_secret_value() not in shown
    finally:
        con.close()


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("SELECT 1", False),
        ("WITH a AS (SELECT 1) SELECT * FROM a", False),
        ("SELECT 1 UNION SELECT 2", False),
        ("DESCRIBE silver.sales", False),
        ("SHOW TABLES", False),
        ("EXPLAIN SELECT 1", False),
        ("EXPLAIN ANALYZE SELECT 1", False),
        ("PRAGMA version", True),
        ("EXPLAIN COPY (SELECT 1) TO 'x.csv'", True),
        ("SELECT * FROM read_csv('x')", True),
        ("COPY (SELECT 1) TO 'x.csv'", True),
        ("SELECT 1; SELECT 2", True),
    ],
)
def test_check_sql(local: Workspace, sql: str, refused: bool) -> None:
    sandbox = pool_for(local.project).get(frozenset({"default"}))
    if refused:
        with pytest.raises(QueryRefusedError):
            sandbox.check(sql)
    else:
        statement, _names = sandbox.check(sql)
        assert statement == sql


def test_check_sql_reports_the_tables_named(local: Workspace) -> None:
    con = duckdb.connect()
    try:
        _, names = check_sql(con, 'SELECT * FROM silver.a JOIN "other".gold.b USING (id), (SELECT 1) AS c')
    finally:
        con.close()
    assert names == {("", "silver", "a"), ("other", "gold", "b")}


def test_syntax_errors_are_query_errors(local: Workspace) -> None:
    with pytest.raises(QueryError, match="syntax error"):
        _rows(local, "SELEC 1")


def test_unknown_tables_list_only_readable_ones(local: Workspace) -> None:
    with pytest.raises(TableNotFoundError) as caught:
        _rows(local, "SELECT * FROM silver.sale")
    assert "silver.sales" in str(caught.value) and "secret" not in str(caught.value)


def test_views_follow_new_commits_and_new_tables(local: Workspace) -> None:
    pool = pool_for(local.project)
    sandbox = pool.get(frozenset({"default"}))
    assert _rows(local, "SELECT count(*) AS n FROM silver.sales") == [{"n": 1000}]
    writer = Workspace.open(local.project.root)
    writer.append("silver.sales", "SELECT 5000 AS id, 1 AS k")
    writer.append("silver.fresh", "SELECT 1 AS one")
    writer.close()
    assert _rows(local, "SELECT count(*) AS n FROM silver.sales") == [{"n": 1001}]
    assert _rows(local, "SELECT one FROM silver.fresh") == [{"one": 1}]
    assert pool.get(frozenset({"default"})) is sandbox  # same instance, views refreshed in place
    writer = Workspace.open(local.project.root)
    writer.project.lakehouse.drop("default", "silver", "fresh")
    writer.close()
    with pytest.raises(TableNotFoundError):
        _rows(local, "SELECT one FROM silver.fresh")


def test_one_instance_per_set_of_workspaces(local: Workspace) -> None:
    pool = pool_for(local.project)
    assert pool is pool_for(local.project)
    only_default = pool.get(frozenset({"default"}))
    both = pool.get(frozenset({"default", "other"}))
    assert only_default is not both
    assert pool.get(frozenset({"other", "default"})) is both


def test_least_recently_used_instances_are_closed(local: Workspace) -> None:
    pool = SandboxPool(local.project, max_instances=1)
    try:
        first = pool.get(frozenset({"default"}))
        pool.get(frozenset({"other"}))
        with pytest.raises(duckdb.Error):
            first.con.execute("SELECT 1")
    finally:
        pool.close()


def test_a_sandbox_needs_a_workspace(local: Workspace) -> None:
    with pytest.raises(Exception, match="at least one workspace"):
        Sandbox(local.project, frozenset())


def test_parallel_queries(local: Workspace) -> None:
    errors: list[BaseException] = []
    results: list[object] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(_rows(local, "SELECT sum(id) AS s FROM silver.sales", ["other"])[0]["s"])
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == [499500] * 40


def test_timeout_interrupts(local: Workspace) -> None:
    slow = "SELECT sum(hash(a.range * b.range)) FROM range(100000) a, range(100000) b"
    with pytest.raises(QueryTimeoutError, match="0.3 s"):
        with local.sandboxed_sql(slow, timeout=0.3) as query:
            list(query)
    assert _rows(local, "SELECT 1 AS one") == [{"one": 1}]


def test_limit_and_truncated(local: Workspace) -> None:
    with local.sandboxed_sql("SELECT * FROM range(100)", limit=10, batch_rows=3) as query:
        batches = list(query)
    assert sum(b.num_rows for b in batches) == 10 and query.truncated and query.rows == 10
    with local.sandboxed_sql("SELECT * FROM range(10)", limit=10) as query:
        list(query)
    assert not query.truncated


def test_spill_directory_is_per_sandbox(local: Workspace) -> None:
    one = pool_for(local.project).get(frozenset({"default"}))
    two = pool_for(local.project).get(frozenset({"other"}))
    setting = "SELECT current_setting('temp_directory')"
    first, second = one.con.sql(setting).fetchall(), two.con.sql(setting).fetchall()
    assert first != second
