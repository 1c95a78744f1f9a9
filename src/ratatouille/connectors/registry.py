"""Find connectors by the ``type:`` of a source file, and load ``sources/*.yaml``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ratatouille.config import read_yaml, validate
from ratatouille.connectors.base import Connector, SourceConfig
from ratatouille.errors import ConfigError, Problem

# type -> (package, connector class, config class). Connectors are folders with the same file
# names: config.py (the source file's schema) and reader.py (the Connector).
CONNECTORS: dict[str, tuple[str, str, str]] = {
    "files": ("ratatouille.connectors.files", "FilesConnector", "FilesSourceConfig"),
    "postgres": ("ratatouille.connectors.database", "DatabaseConnector", "DatabaseSourceConfig"),
    "mysql": ("ratatouille.connectors.database", "DatabaseConnector", "DatabaseSourceConfig"),
    "rest": ("ratatouille.connectors.rest", "RestConnector", "RestSourceConfig"),
}


def _load(kind: str, module: str, name: str) -> Any:
    if kind not in CONNECTORS:
        raise ConfigError(f"unknown source type `{kind}`; installed connectors: {', '.join(sorted(CONNECTORS))}")
    try:
        return getattr(importlib.import_module(f"{CONNECTORS[kind][0]}.{module}"), name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the `{kind}` connector is not available: {exc}") from exc


def connector_class(kind: str) -> type[Connector]:
    """The connector class for a source ``type``.

    Raises:
        ConfigError: no such connector (the message lists the installed ones).
    """
    cls: type[Connector] = _load(kind, "reader", CONNECTORS.get(kind, ("", "", ""))[1])
    return cls


def config_class(kind: str) -> type[SourceConfig]:
    """The config class of a source ``type`` (without importing its reader).

    Raises:
        ConfigError: no such connector (the message lists the installed ones).
    """
    cls: type[SourceConfig] = _load(kind, "config", CONNECTORS.get(kind, ("", "", ""))[2])
    return cls


def load_sources(workspace_dir: Path) -> dict[str, tuple[SourceConfig, Path]]:
    """Every ``sources/*.yaml`` of a workspace, validated, by source name.

    Raises:
        ConfigError: listing every problem found (file:line each).
    """
    sources, problems, _declared = collect_sources(workspace_dir)
    if problems:
        raise ConfigError(problems)
    return sources


def collect_sources(workspace_dir: Path) -> tuple[dict[str, tuple[SourceConfig, Path]], list[Problem], set[str]]:
    """The valid sources, and the problems of the invalid ones (a broken source still counts as
    defined, so models reading it are not reported as reading nothing)."""
    folder = workspace_dir / "sources"
    problems: list[Problem] = []
    sources: dict[str, tuple[SourceConfig, Path]] = {}
    declared: set[str] = set()
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            data, lines = read_yaml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if not isinstance(data, dict):
            problems.append(Problem(str(path), 1, "", "must be a mapping of keys to values"))
            continue
        data.setdefault("name", path.stem)
        declared.add(str(data["name"]))
        import os

        from ratatouille.config import interpolate_env

        data = interpolate_env(data, str(path), lines, problems, os.environ)
        kind = data.get("type")
        if kind not in CONNECTORS:
            problems.append(
                Problem(
                    str(path),
                    lines.get(("type",), 1),
                    "type",
                    f"unknown source type `{kind}`; use one of {', '.join(sorted(CONNECTORS))}",
                )
            )
            continue
        try:
            schema = config_class(str(kind))
        except ConfigError as exc:
            problems.append(Problem(str(path), lines.get(("type",), 1), "type", str(exc)))
            continue
        config: Any = validate(schema, data, str(path), lines, problems)
        if config is None:
            continue
        if config.name in sources:
            problems.append(
                Problem(str(path), lines.get(("name",)), "name", f"source `{config.name}` is defined twice")
            )
            continue
        sources[config.name] = (config, path)
    return sources, problems, declared
