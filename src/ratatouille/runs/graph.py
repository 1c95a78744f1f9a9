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
) -> Graph:
    """Load and validate a workspace's pipelines (``variables``: the project's and workspace's
    ``vars``; ``overrides``: the caller's, which win over a model's own).

    Raises:
        ConfigError: listing every problem found (file:line each).
    """
    import duckdb

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
    parser = duckdb.connect()
    for key, model in models.items():
        upstream: set[str] = set()
        if model.sql is not None:
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
                    if exc.problem not in problems:
                        problems.append(exc.problem)
                    break
                upstream.update(compiled.refs)
                syntax = parse_error(model, compiled.sql, parser)
                if syntax is not None and syntax not in problems:
                    problems.append(syntax)
        reads = set(upstream)
        upstream = {_node_of(up, models, set(sources)) for up in upstream}
        nodes[key] = Node(key, model.kind, tuple(model.config.tags), upstream, model, reads)
    parser.close()
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
