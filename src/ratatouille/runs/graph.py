"""A workspace's pipelines as one validated graph: sources, SQL and Python models, macros.

Loading checks everything a run would trip on, and reports every problem at once: unknown
refs (with the closest names), cycles, unknown YAML keys, header/YAML conflicts and SQL syntax
errors at the model file's own line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ratatouille.connectors.base import SourceConfig
from ratatouille.connectors.registry import collect_sources
from ratatouille.errors import ConfigError, Problem
from ratatouille.models.compiler import CompileContext, CompileProblem, Compiler, parse_error, source_of
from ratatouille.models.loader import Model, collect_models, load_macros
from ratatouille.runs.dag import Dag, Node


@dataclass
class Graph:
    """Everything a run needs to know about a workspace's pipelines."""

    workspace: str
    models: dict[str, Model]
    sources: dict[str, tuple[SourceConfig, Path]]
    compiler: Compiler
    dag: Dag
    vars: dict[str, Any]  # project's, then workspace's
    overrides: dict[str, Any] = field(default_factory=dict)  # the caller's (``--var``): they win

    def node_model(self, key: str) -> Model | None:
        """The model of a node, if it is one."""
        return self.models.get(key)

    def model_vars(self, model: Model) -> dict[str, Any]:
        """``var()`` values for a model: project < workspace < the model's ``vars:`` < ``--var``."""
        return {**self.vars, **model.config.vars, **self.overrides}


def placeholder(key: str) -> str:
    """The relation a ref compiles to when only dependencies are wanted."""
    return ".".join(f'"{part}"' for part in key.split("."))


def _node_of(key: str, models: dict[str, Model], sources: set[str]) -> str:
    """The DAG node that writes a table (a source writes ``bronze.<source>_<resource>`` too)."""
    if key in models:
        return key
    source = source_of(key, sources)
    return f"bronze.{source}" if source else key


def load_graph(
    workspace_dir: Path,
    workspace: str,
    layers: tuple[str, ...],
    variables: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    cache: Path | None = None,
) -> Graph:
    """Load and validate a workspace's pipelines (``variables``: the project's and workspace's
    ``vars``; ``overrides``: the caller's, which win over a model's own).

    ``cache``: a JSON file remembering, for each SQL model that compiled and parsed cleanly,
    the refs it found, keyed by everything the result depends on (the model's SQL and config,
    the macros, the vars, the names of the models and sources). A model whose key is there is
    not compiled or parsed again: a run with nothing to do skips Jinja and the SQL parser.

    Raises:
        ConfigError: listing every problem found (file:line each).
    """
    disabled: dict[str, Path] = {}
    models, problems = collect_models(workspace_dir, layers, disabled)
    sources, source_problems, declared = collect_sources(workspace_dir)
    problems.extend(source_problems)
    compiler = Compiler(workspace, models, load_macros(workspace_dir), set(sources) | declared)
    compiler.disabled = disabled
    nodes: dict[str, Node] = {}
    for name, (config, path) in sources.items():
        key = f"bronze.{name}"
        if key in models:
            problems.append(
                Problem(str(path), None, "", f"source `{name}` and the model in {models[key].path} both write `{key}`")
            )
        nodes[key] = Node(key, "source", tuple(config.tags), set(), (config, path))
    known = _load_cache(cache)
    fresh: dict[str, list[str]] = {}
    names = sorted(models) + sorted(set(sources) | declared) + sorted(disabled)
    macros = compiler.macros
    parser: Any = None
    for key, model in models.items():
        upstream: set[str] = set()
        digest = _cache_key(model, macros, {**variables, **model.config.vars, **(overrides or {})}, names)
        if model.sql is not None and digest in known and "env_var" not in model.sql:
            upstream.update(known[digest])
            fresh[digest] = known[digest]
        elif model.sql is not None:
            clean = True
            for incremental in (False, True):
                ctx = CompileContext(
                    relation=placeholder,
                    this=placeholder(key),
                    incremental=incremental,
                    watermark=lambda column: "NULL",
                    vars={**variables, **model.config.vars, **(overrides or {})},
                )
                try:
                    compiled = compiler.compile(model, ctx)
                except CompileProblem as exc:
                    clean = False
                    if exc.problem not in problems:
                        problems.append(exc.problem)
                    break
                upstream.update(compiled.refs)
                if parser is None:
                    import duckdb

                    parser = duckdb.connect()
                syntax = parse_error(model, compiled.sql, parser)
                if syntax is not None:
                    clean = False
                    if syntax not in problems:
                        problems.append(syntax)
            if clean and not any("env_var" in text for text in (model.sql, *macros.values())):
                fresh[digest] = sorted(upstream)
        reads = set(upstream)
        upstream = {_node_of(up, models, set(sources)) for up in upstream}
        nodes[key] = Node(key, model.kind, tuple(model.config.tags), upstream, model, reads)
    if parser is not None:
        parser.close()
    if fresh != known:
        _save_cache(cache, fresh)
    for node in nodes.values():
        for up in node.upstream:
            if up not in nodes and up.count(".") == 1:
                owner = models.get(node.key)
                where = str(owner.path) if owner else node.key
                problems.append(Problem(where, None, "", f"refs `{up}`, which does not exist"))
    if problems:
        raise ConfigError(problems)
    dag = Dag(nodes)
    dag.check()
    return Graph(workspace, models, sources, compiler, dag, variables, dict(overrides or {}))


_CACHE_VERSION = 1


def _cache_key(model: Model, macros: dict[str, str], variables: dict[str, Any], names: list[str]) -> str:
    import hashlib
    import json

    from ratatouille.models import compiler

    parts = [
        str(_CACHE_VERSION),
        str(Path(str(compiler.__file__)).stat().st_mtime_ns),  # another Ratatouille may compile differently
        model.key,
        model.sql or "",
        model.config.model_dump_json(),
        json.dumps(macros, sort_keys=True),
        json.dumps(variables, sort_keys=True, default=str),
        json.dumps(names),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _load_cache(path: Path | None) -> dict[str, list[str]]:
    import json

    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: compile everything
    return {str(k): [str(r) for r in v] for k, v in data.items()} if isinstance(data, dict) else {}


def _save_cache(path: Path | None, entries: dict[str, list[str]]) -> None:
    """Write the cache atomically (a rename), best effort: it only saves time."""
    import json
    import os
    import tempfile

    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(entries, handle)
        os.replace(tmp, path)
    except OSError:
        pass
