"""The docs cannot drift: generated reference pages are current, and marked examples run.

A fenced block in a docs page is run by these tests when the line before it (blank lines
aside) is an HTML comment:

- ``<!-- test: run -->``: run it. ``bash`` blocks run in one shell per page, in page order, so
  ``cd`` and variables carry over; consecutive ``python`` blocks run as one Python program in
  that shell's current directory.
- ``<!-- test: file NAME -->``: write the block to ``NAME`` in the shell's current directory
  (a script the page then runs).

Each page runs in an empty temporary directory with the test interpreter's ``bin`` first on
``PATH``, so ``rat`` and ``python`` are the project's. Every command must exit with code 0.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from fixtures.services import S3Server
from ratatouille.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!--\s*test:\s*(run|file\s+(\S+))\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
HEREDOC = "RAT_DOCS_EOF"


@dataclass(frozen=True)
class Block:
    """A marked code block of a docs page."""

    page: Path
    line: int
    language: str
    action: str  # "run" or "file"
    filename: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{_shown(self.page)}:{self.line}"


def _shown(path: Path) -> str:
    """A path as the failure messages show it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def marked_blocks(page: Path) -> list[Block]:
    """The blocks of ``page`` that carry a test marker.

    Raises:
        AssertionError: a marker is not followed by a fenced block, or a fence is not closed.
    """
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        marker = MARKER.match(lines[index].strip())
        index += 1
        if not marker:
            continue
        while index < len(lines) and not lines[index].strip():
            index += 1
        opening = FENCE.match(lines[index]) if index < len(lines) else None
        assert opening, f"{_shown(page)}:{index}: a test marker must be followed by a fenced code block"
        start = index + 1
        end = start
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        assert end < len(lines), f"{_shown(page)}:{start}: the code block is never closed"
        action = "file" if marker.group(2) else "run"
        language = opening.group(1) or "bash"
        assert action == "file" or language in ("bash", "python"), f"cannot run a `{language}` block"
        blocks.append(Block(page, start, language, action, marker.group(2), "\n".join(lines[start:end]) + "\n"))
        index = end + 1
    return blocks


def shell_script(blocks: list[Block]) -> str:
    """One bash script that runs the blocks in order and says which block it is in."""
    parts = ["set -euo pipefail"]
    python: list[Block] = []

    def flush_python() -> None:
        if python:
            code = "".join(f"# {b.where}\n{b.code}" for b in python)
            parts.append(f"echo '>>> python {python[0].where}' >&2\npython - <<'{HEREDOC}'\n{code}{HEREDOC}")
            python.clear()

    for block in blocks:
        assert HEREDOC not in block.code
        if block.action == "run" and block.language == "python":
            python.append(block)
            continue
        flush_python()
        if block.action == "file":
            parts.append(f"cat > {block.filename} <<'{HEREDOC}'\n{block.code}{HEREDOC}")
        else:
            parts.append(f"echo '>>> {block.where}' >&2\n{block.code}")
    flush_python()
    return "\n".join(parts) + "\n"


def run_page(
    page: Path, cwd: Path, setup: str = "", env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the marked blocks of ``page`` in ``cwd`` (after ``setup``, with ``env`` added), failing with their output."""
    blocks = marked_blocks(page)
    assert any(b.action == "run" for b in blocks), f"{_shown(page)} has no blocks marked <!-- test: run -->"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAT_")}, **(env or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    script = (f"{setup}\n" if setup else "") + shell_script(blocks)
    result = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"a marked example in {_shown(page)} failed (exit {result.returncode}); the last `>>>` line "
        f"of stderr says which block.\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )
    return result


# --- the reference pages are generated and current ------------------------------------------


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    """``scripts/gen_reference.py``, imported (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_pages_are_current(generator: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    code = generator.main(["--check"])
    assert code == 0, capsys.readouterr().err


def test_check_mode_fails_on_a_stale_page_and_passes_once_regenerated(
    generator: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "cli.md"
    page.write_text("# out of date\n", encoding="utf-8")
    monkeypatch.setattr(generator, "generate", lambda: {page: generator.render_cli()})
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    assert generator.main(["--check"]) == 1
    assert page.read_text(encoding="utf-8") == "# out of date\n"  # check mode writes nothing
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0


def test_every_config_key_has_a_row(generator: ModuleType) -> None:
    from ratatouille.config import ProjectConfig, WorkspaceConfig

    text = generator.render_configuration()
    for model in (ProjectConfig, WorkspaceConfig):
        for path, _ in generator._walk(model):
            assert f"| `{path}` |" in text, f"configuration.md lacks `{path}`"


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        ("PROJECT_KEYS", {"storage.gone": "a key that no longer exists"}, "no longer exist: storage.gone"),
        ("WORKSPACE_KEYS", {"description": None}, "`description` in workspace.yaml has no description"),
    ],
)
def test_hand_written_descriptions_are_checked(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch, table: str, change: dict[str, str | None], message: str
) -> None:
    keys = dict(getattr(generator, table))
    for key, value in change.items():
        if value is None:
            del keys[key]
        else:
            keys[key] = value
    monkeypatch.setattr(generator, table, keys)
    with pytest.raises(generator.ReferenceError, match=re.escape(message)):
        generator.render_configuration()


def _key_paths(
    generator: ModuleType,
    model: type[BaseModel],
    prefix: str = "",
    skip: tuple[str, ...] = (),
    seen: set[type[BaseModel]] | None = None,
) -> list[str]:
    """Every key of ``model`` as the reference pages write it (``columns[].name``, ``auth.token``);
    a nested model met a second time is linked to, not listed again."""
    seen = set() if seen is None else seen
    paths: list[str] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        path = f"{prefix}{name}"
        paths.append(path)
        shape, members = generator._nested(field.annotation)
        for member in members:
            if member.__name__ in ("ColumnTest", "Duration") or member in seen:  # shown as types, or linked
                continue
            seen.add(member)
            tagged = ("type",) if shape == "|" and generator._discriminator_value(member) else ()
            inner = f"{path}[]." if shape == "[]" else f"{path}."
            paths += _key_paths(generator, member, inner, tagged, seen)
    return paths


def test_every_model_key_has_a_row(generator: ModuleType) -> None:
    from ratatouille.models.config import BUILTIN_TESTS, ModelConfig

    text = generator.render_models()
    for path in _key_paths(generator, ModelConfig):
        assert f"| `{path}` |" in text, f"models.md lacks `{path}`"
    for test in BUILTIN_TESTS:
        assert f"| `{test}` |" in text, f"models.md lacks the built-in test `{test}`"


def test_every_source_key_has_a_row(generator: ModuleType) -> None:
    from ratatouille.connectors.base import SourceConfig
    from ratatouille.connectors.registry import CONNECTORS, connector_class

    text = generator.render_sources()
    for path in _key_paths(generator, SourceConfig):
        assert f"| `{path}` |" in text, f"sources.md lacks `{path}`"
    for kind in CONNECTORS:
        assert f"`type: {kind}`" in text, f"sources.md lacks a section for `type: {kind}`"
        config = connector_class(kind).config_class
        for path in _key_paths(generator, config, skip=tuple(n for n in SourceConfig.model_fields if n != "type")):
            assert f"| `{path}` |" in text, f"sources.md lacks `{path}` of `type: {kind}`"


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        ("MODEL_KEYS", {"gone": "a key that no longer exists"}, "no longer exist: gone"),
        ("MODEL_KEYS", {"owner": None}, "`owner` of a model (ModelConfig.owner) has no description"),
        ("BUILTIN_TEST_DOCS", {"unique": None}, "built-in test(s) unique has no description"),
        ("JINJA", {"gone": "a function"}, "describes Jinja name(s) that no longer exist: gone"),
    ],
)
def test_model_descriptions_are_checked(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch, table: str, change: dict[str, str | None], message: str
) -> None:
    keys = dict(getattr(generator, table))
    for key, value in change.items():
        if value is None:
            del keys[key]
        else:
            keys[key] = value
    monkeypatch.setattr(generator, table, keys)
    with pytest.raises(generator.ReferenceError, match=re.escape(message)):
        generator.render_models()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"RestSourceConfig.gone": "x"}, "no longer exist: RestSourceConfig.gone"),
        (
            {"RestSourceConfig.auth[bearer].token": None},
            "`RestSourceConfig.auth[bearer].token` of `type: rest` sources",
        ),
        ({"SourceConfig.on_error": None}, "`SourceConfig.on_error` of sources/*.yaml"),
    ],
)
def test_source_descriptions_are_checked(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch, change: dict[str, str | None], message: str
) -> None:
    keys = dict(generator.SOURCE_KEYS)
    for key, value in change.items():
        if value is None:
            del keys[key]
        else:
            keys[key] = value
    monkeypatch.setattr(generator, "SOURCE_KEYS", keys)
    with pytest.raises(generator.ReferenceError, match=re.escape(message)):
        generator.render_sources()


def test_a_connector_that_does_not_import_is_left_out_with_a_note(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ratatouille.connectors import registry

    monkeypatch.setitem(registry.CONNECTORS, "ftp", "ratatouille.connectors.ftp.reader:FtpConnector")
    text = generator.render_sources()
    assert "## Not documented here" in text
    assert "- `ftp`: the connector does not import" in text
    assert "## `type: files`" in text  # the others are still there


def test_attribute_docs_read_google_style_attributes(generator: ModuleType) -> None:
    class Options:
        """Options.

        Attributes:
            header: the first line holds ``names``.
            date_format / timestamp_format: strptime formats,
                e.g. ``%d/%m/%Y``.
            kind: see :class:`Other`.
        """

    assert generator.attribute_docs(Options) == {
        "header": "The first line holds `names`.",
        "date_format": "Strptime formats, e.g. `%d/%m/%Y`.",
        "timestamp_format": "Strptime formats, e.g. `%d/%m/%Y`.",
        "kind": "See `Other`.",
    }


def test_every_cli_command_and_option_has_a_section(generator: ModuleType) -> None:
    import click

    from ratatouille.cli.main import cli

    text = generator.render_cli()

    def walk(group: click.Group, path: str) -> None:
        for name, command in group.commands.items():
            assert f"## `{path} {name}`" in text, f"cli.md lacks `{path} {name}`"
            for param in command.params:
                if isinstance(param, click.Option):
                    assert f"`{param.opts[0]}`" in text, f"cli.md lacks {param.opts[0]} of `{path} {name}`"
            if isinstance(command, click.Group):
                walk(command, f"{path} {name}")

    walk(cli, "rat")


def test_marker_parsing(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n<!-- test: run -->\n\n```bash\necho hi\n```\n```bash\nnot marked\n```\n"
        "<!-- test: file x.py -->\n```python\nprint(1)\n```\n",
        encoding="utf-8",
    )
    blocks = [(b.action, b.language, b.filename, b.code) for b in marked_blocks(page)]
    assert blocks == [("run", "bash", None, "echo hi\n"), ("file", "python", "x.py", "print(1)\n")]
    page.write_text("<!-- test: run -->\nno fence here\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="must be followed by a fenced code block"):
        marked_blocks(page)


def test_architecture_page_lists_the_enforced_import_layers() -> None:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c["layers"] for c in contracts["contracts"] if c["type"] == "layers")
    enforced = [" | ".join(p.strip().removeprefix("ratatouille.") for p in layer.split("|")) for layer in layers]
    lines = (DOCS / "explanation" / "architecture.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("<!-- layers:")) + 2
    end = lines.index("```", start)
    documented = [line.split("#")[0].strip() for line in lines[start:end]]
    assert documented == enforced, "update the layer list in docs/explanation/architecture.md to match pyproject.toml"


# --- the examples a user would copy run ------------------------------------------------------


@pytest.mark.slow
def test_tutorial_first_project_runs(tmp_path: Path) -> None:
    result = run_page(DOCS / "tutorial" / "first-project.md", tmp_path)
    assert (tmp_path / "shop" / "ratatouille.yaml").is_file()
    assert "1000000002,1," in result.stdout  # the time-travel query saw the row before the correction


@pytest.mark.slow
def test_tutorial_pos_example_runs(tmp_path: Path) -> None:
    result = run_page(DOCS / "tutorial" / "pos-example.md", tmp_path)
    out = result.stdout
    assert "21 of 21 passed" in out  # rat test on the published tables
    assert "rat run exited with code 1" in out  # the voucher failed accepted_values
    assert "1 of 1 passed" in out  # the unit test
    assert out.count("\n4950,172\n") == 2  # the same counts before and after --full-refresh
    assert "Could not convert string" in out  # the quarantined line
    silver = (tmp_path / "shop" / "workspaces" / "default" / "pipelines" / "silver" / "sales.yaml").read_text()
    assert "[card, cash, mobile, voucher]" in silver


@pytest.mark.slow
def test_how_to_write_a_model_runs(tmp_path: Path) -> None:
    result = run_page(DOCS / "how-to" / "write-a-model.md", tmp_path)
    out = result.stdout
    assert "26 of 26 passed" in out
    assert "2 of 2 passed" in out  # the unit tests
    assert "HAVING sum(s.total_amount) >= 2000" in out  # --var reached the compiled SQL
    assert "5 tests, 1 warn" in out  # the warn test reported without blocking the publish


@pytest.mark.slow
@pytest.mark.postgres
def test_how_to_add_a_source_runs(tmp_path: Path, postgres_url: str) -> None:
    import psycopg

    # The page's database source reads `customers` from the URL in SHOP_DB_URL.
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text, updated_at timestamptz);"
            "INSERT INTO customers VALUES (1, 'Ada', '2026-01-01 10:00+00'), (2, 'Bob', '2026-01-02 10:00+00')"
        )
    result = run_page(DOCS / "how-to" / "add-a-source.md", tmp_path, env={"SHOP_DB_URL": postgres_url})
    out = result.stdout
    assert 'Could not convert string ""12.5O""' in out  # the quarantined row
    assert '5,7.20,"web","2026-03-02","SPRING"' in out  # the new column evolved the table
    assert '3,12.50,"web","2026-03-01",' in out  # the changed file replaced its rows
    assert "changed since it was" in out
    assert '"view",2026-03-01 09:14:02' in out  # NDJSON, typed by `columns`
    assert '2,"Bob",2026-01-02 10:00:00' in out  # the PostgreSQL table
    assert "bronze.shop (source)" in out  # the REST source validates


@pytest.mark.slow
def test_how_to_python_pipelines_runs(tmp_path: Path) -> None:
    result = run_page(DOCS / "how-to" / "python-pipelines.md", tmp_path)
    out = result.stdout
    assert '2026-03-01,"PRO-000002",1,"wrong item"' in out
    assert "returns_2026-03-02.csv: 1 returns" in out  # rat.log lines reach `rat logs`
    assert out.startswith("bronze.returns (python)\n")  # `rat dag` lists it
    assert "✓ bronze.returns  0 rows" in out  # the second run read no file again


@pytest.mark.slow
def test_explanation_write_audit_publish_runs(tmp_path: Path) -> None:
    result = run_page(DOCS / "explanation" / "write-audit-publish.md", tmp_path)
    out = result.stdout
    assert out.count("rat run was killed: exit code 137") == 2  # RATATOUILLE_FAULT killed both runs
    counts = [int(line) for line in out.splitlines() if line.isdigit()]
    assert counts[0] == counts[1] == counts[2] - 2  # nothing published by the killed run; the rerun did
    assert "\n3,3\n" in out  # the file published before the crash was not loaded twice
    assert "were published but not registered; registered" in out


@pytest.mark.slow
def test_how_to_write_tables_from_python_runs(tmp_path: Path) -> None:
    result = run_page(
        DOCS / "how-to" / "write-tables-from-python.md", tmp_path, setup="rat init lake --empty > /dev/null && cd lake"
    )
    # The printed results are the ones the page's comments announce.
    for expected in (
        "True 2\n3\n",
        "4 1\n",
        "2 1\n",
        "refused: 1 duplicate key(s)",
        "('new column `device` string',)",
        "refused: the data changes the schema of `bronze.events`: new column `region` string",
        "[{'price': Decimal('12.50')}]",
    ):
        assert expected in result.stdout, f"expected {expected!r} in the output:\n{result.stdout}"


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.postgres
def test_how_to_deploy_postgres_s3_runs(tmp_path: Path, s3_server: S3Server, s3_prefix: str, postgres_url: str) -> None:
    # The page's ratatouille.yaml, its secrets, and RAT_ overrides (as the page describes them)
    # that point its example hosts at the test's PostgreSQL database and S3 server.
    env = {
        "PGPASSWORD": "unused-with-trust-auth",
        "S3_ACCESS_KEY_ID": s3_server.access_key_id,
        "S3_SECRET_ACCESS_KEY": s3_server.secret_access_key,
        "RAT_STORAGE__WAREHOUSE": f"{s3_server.url(s3_prefix)}/warehouse",
        "RAT_STORAGE__LANDING": f"{s3_server.url(s3_prefix)}/landing",
        "RAT_STORAGE__S3__ENDPOINT": s3_server.endpoint,
        "RAT_STORAGE__S3__REGION": s3_server.region,
        "RAT_CATALOG__URI": postgres_url,
        "RAT_STATE__URI": postgres_url,
    }
    result = run_page(DOCS / "how-to" / "deploy-postgres-s3.md", tmp_path, env=env)
    assert (tmp_path / "ratatouille.yaml").read_text().startswith("name: shop")
    assert "No tables yet" in result.stdout
    assert f"{s3_server.url(s3_prefix)}/warehouse/default/bronze/smoke_test" in _table_location(tmp_path, env)


def _table_location(root: Path, env: dict[str, str]) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        workspace = Workspace.open(root)
        try:
            return str(workspace.describe("bronze.smoke_test")["location"])
        finally:
            workspace.close()


# The API guide's server: the demo project (smaller, so quicker) and `rat serve` started the way
# the page says, in the background, on the port of RAT_SERVER__PORT; stopped when the page ends.
API_SETUP = """\
rat demo shop{rows} > /dev/null && cd shop
rat serve --no-scheduler > ../serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER; wait $SERVER || true; tail -n 20 ../serve.log >&2' EXIT
curl -s --retry 60 --retry-connrefused --retry-delay 1 -o /dev/null "$RAT/api/v1/health"
"""


@pytest.mark.slow
def test_how_to_use_the_api_runs(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"RAT_SERVER__PORT": str(port), "RAT": f"http://127.0.0.1:{port}"}
    result = run_page(DOCS / "how-to" / "api.md", tmp_path, setup=API_SETUP.format(rows=" --rows 5000"), env=env)
    out = result.stdout
    assert '{"status":"ok","version":' in out
    assert '"type":"AuthenticationError"' in out  # no token
    assert '"row_count":3,"truncated":true}' in out  # JSON
    assert '"store_id","revenue"\n"S0' in out  # CSV
    assert "revenue: decimal128(38, 2)" in out  # Parquet keeps the type
    assert '"type":"QueryRefusedError"' in out and "root:" not in out  # the sandbox
    assert "default.gold.daily_sales_kpis\n" in out  # the table list
    assert '"filters":{"store_id":["S001"],"payment_method":["cash","mobile"]}' in out  # a filtered preview
    assert "gold.daily_sales_kpis (sql) <- silver.sales, silver.stores" in out  # the pipelines
    assert '{"status":"success","trigger":"api","nodes":[' in out  # the triggered run finished
    assert "an editor role is needed to run pipelines" in out  # a viewer cannot trigger
    assert "was revoked; ask an admin for a new one" in out  # the revoked token
    assert "did you mean `gold.daily_sales_kpis`?" in out
    assert "/api/v1/tables/{workspace}/{layer}/{name}\n" in out  # the OpenAPI document
    assert 'rat_runs_started_total{workspace="default"} 1.0' in out


@pytest.mark.slow
def test_readme_tour_runs(tmp_path: Path) -> None:
    # `make demo` runs `rat demo demo`; a smaller demo keeps the test quick.
    run_page(ROOT / "README.md", tmp_path, setup="rat demo demo --rows 5000 > /dev/null")
