"""Project files: defaults, interpolation, overrides, and errors that list every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_project
from ratatouille.config import load_project_config, load_workspace_config
from ratatouille.errors import ConfigError, ProjectNotFoundError
from ratatouille.project import Project, find_root


def test_every_key_has_a_default(tmp_path: Path) -> None:
    (tmp_path / "ratatouille.yaml").write_text("")
    config = load_project_config(tmp_path, env={})
    assert config.catalog.uri == "sqlite:///.rat/catalog.db"
    assert config.storage.warehouse == ".rat/warehouse"
    assert config.profile == "auto"
    assert config.server.port == 8080


def test_env_interpolation_and_defaults(tmp_path: Path) -> None:
    write_project(
        tmp_path, "storage:\n  s3:\n    secret_access_key: ${env:S3_SECRET}\n    region: ${env:REGION:-eu-west-1}\n"
    )
    config = load_project_config(tmp_path, env={"S3_SECRET": "hunter2"})
    assert config.storage.s3.secret_access_key is not None
    assert config.storage.s3.secret_access_key.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(config)  # secrets never print
    assert config.storage.s3.region == "eu-west-1"


def test_missing_env_var_is_located(tmp_path: Path) -> None:
    write_project(tmp_path, "catalog:\n  uri: postgresql://u:${env:PGPASS}@h/db\n")
    with pytest.raises(ConfigError) as err:
        load_project_config(tmp_path, env={})
    assert "ratatouille.yaml:4: catalog.uri: environment variable PGPASS is not set" in str(err.value)


def test_environment_overrides(tmp_path: Path) -> None:
    write_project(tmp_path, "server:\n  port: 9000\n")
    config = load_project_config(
        tmp_path,
        env={"RAT_SERVER__PORT": "9100", "RAT_STORAGE__S3__ENDPOINT": "http://127.0.0.1:1", "RAT_PROFILE": "small"},
    )
    assert config.server.port == 9100
    assert config.storage.s3.endpoint == "http://127.0.0.1:1"
    assert config.profile == "small"


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "ratatouille.yaml").write_text(
        "name: x\nprofile: huge\nstorage:\n  warehose: /data\nserver:\n  port: not-a-port\ncatalog:\n  type: hive\n"
    )
    with pytest.raises(ConfigError) as err:
        load_project_config(tmp_path, env={})
    text = str(err.value)
    assert "4 problems" in text
    assert "ratatouille.yaml:2: profile:" in text
    assert "ratatouille.yaml:4: storage.warehose: unknown key; allowed keys: landing, s3, warehouse" in text
    assert "ratatouille.yaml:6: server.port:" in text
    assert "ratatouille.yaml:8: catalog.type:" in text


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    (tmp_path / "ratatouille.yaml").write_text("name: x\nstorage: [unclosed\n")
    with pytest.raises(ConfigError, match=r"ratatouille.yaml:\d+: invalid YAML"):
        load_project_config(tmp_path, env={})


def test_workspace_file_rejects_unknown_keys_and_name_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "workspaces" / "sales"
    folder.mkdir(parents=True)
    (folder / "workspace.yaml").write_text("name: marketing\nowner: me\n")
    with pytest.raises(ConfigError) as err:
        load_workspace_config(folder, env={})
    text = str(err.value)
    assert "workspace.yaml:2: owner: unknown key" in text
    assert "workspace.yaml:1: name: is `marketing` but the folder is `sales`" in text


def test_project_is_found_upwards_and_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_project(tmp_path / "proj")
    deep = root / "workspaces" / "default" / "notebooks"
    deep.mkdir(parents=True)
    assert find_root(deep) == root.resolve()
    monkeypatch.chdir(deep)
    assert Project.load().root == root.resolve()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProjectNotFoundError, match="rat init"):
        Project.load()
    monkeypatch.setenv("RAT_PROJECT", str(root))
    assert Project.load().root == root.resolve()


def test_unknown_workspace_lists_the_existing_ones(tmp_path: Path) -> None:
    project = Project.load(write_project(tmp_path))
    with pytest.raises(ConfigError, match="workspace `nope` does not exist; workspaces: default"):
        project.workspace_config("nope")


def test_unrelated_rat_variables_are_ignored_and_bad_overrides_are_named(tmp_path: Path) -> None:
    write_project(tmp_path)
    config = load_project_config(tmp_path, env={"RAT_FOO": "1", "RAT_MODE": "x"})
    assert config.name == "test"
    with pytest.raises(ConfigError, match=r"environment variable RAT_SERVER__PORT: server.port:"):
        load_project_config(tmp_path, env={"RAT_SERVER__PORT": "abc"})


def test_server_limits_have_defaults_and_come_from_the_file_or_environment(tmp_path: Path) -> None:
    (tmp_path / "ratatouille.yaml").write_text("")
    server = load_project_config(tmp_path, env={}).server
    assert (server.query_row_limit, server.statement_timeout_seconds) == (100_000, 30.0)
    assert (server.query_batch_rows, server.preview_rows) == (65_536, 100)
    assert (server.run_start_timeout_seconds, server.shutdown_grace_seconds) == (120.0, 10.0)
    write_project(tmp_path, "server:\n  query_row_limit: 500\n  statement_timeout_seconds: 2.5\n  preview_rows: 20\n")
    server = load_project_config(tmp_path, env={"RAT_SERVER__SHUTDOWN_GRACE_SECONDS": "0"}).server
    assert (server.query_row_limit, server.statement_timeout_seconds, server.preview_rows) == (500, 2.5, 20)
    assert server.shutdown_grace_seconds == 0


def test_server_limits_must_be_positive(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        "server:\n  query_row_limit: 0\n  statement_timeout_seconds: 0\n  query_batch_rows: -5\n"
        "  preview_rows: 20000\n  run_start_timeout_seconds: -1\n  shutdown_grace_seconds: -1\n",
    )
    with pytest.raises(ConfigError) as err:
        load_project_config(tmp_path, env={})
    text = str(err.value)
    assert "6 problems" in text
    assert "ratatouille.yaml:4: server.query_row_limit: Input should be greater than or equal to 1" in text
    assert "ratatouille.yaml:5: server.statement_timeout_seconds: Input should be greater than 0" in text
    assert "ratatouille.yaml:6: server.query_batch_rows: Input should be greater than or equal to 1" in text
    assert "ratatouille.yaml:7: server.preview_rows: Input should be less than or equal to 10000" in text
    assert "ratatouille.yaml:8: server.run_start_timeout_seconds: Input should be greater than 0" in text
    assert "ratatouille.yaml:9: server.shutdown_grace_seconds: Input should be greater than or equal to 0" in text
