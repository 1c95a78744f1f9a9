"""The DAG of sources and models, and selection (``name``, ``layer:x``, ``tag:x``, ``+name``, ``name+``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ratatouille.errors import ConfigError, Problem


@dataclass
class Node:
    """A DAG node: a source (``kind="source"``) or a model (``sql`` / ``python``)."""

    key: str  # layer.name
    kind: str
    tags: tuple[str, ...] = ()
    upstream: set[str] = field(default_factory=set)
    payload: Any = None
    reads: set[str] = field(default_factory=set)  # the tables it reads (a source may write several)

    @property
    def layer(self) -> str:
        """The node's layer."""
        return self.key.split(".")[0]

    @property
    def name(self) -> str:
        """The node's name inside its layer."""
        return self.key.split(".", 1)[1]


class Dag:
    """Nodes and their dependencies."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.downstream: dict[str, set[str]] = {k: set() for k in nodes}
        for node in nodes.values():
            for up in node.upstream:
                if up in self.downstream:
                    self.downstream[up].add(node.key)

    def check(self) -> None:
        """Raise on cycles, printing each cycle as ``a -> b -> a``.

        Raises:
            ConfigError: the graph has a cycle.
        """
        cycles = self._cycles()
        if cycles:
            raise ConfigError(
                [
                    Problem(
                        str(getattr(self.nodes[c[0]].payload, "path", c[0])),
                        None,
                        "",
                        "cycle (each reads the next): " + " -> ".join(c),
                    )
                    for c in cycles
                ]
            )

    def _cycles(self) -> list[list[str]]:
        white, grey, black = 0, 1, 2
        color = dict.fromkeys(self.nodes, white)
        stack: list[str] = []
        found: list[list[str]] = []

        def visit(key: str) -> None:
            color[key] = grey
            stack.append(key)
            for up in sorted(self.nodes[key].upstream):
                if up not in self.nodes:
                    continue
                if color[up] == grey:
                    found.append(stack[stack.index(up) :] + [up])
                elif color[up] == white:
                    visit(up)
            stack.pop()
            color[key] = black

        for key in sorted(self.nodes):
            if color[key] == white:
                visit(key)
        return found

    def ancestors(self, key: str) -> set[str]:
        """Every node ``key`` depends on, transitively."""
        seen: set[str] = set()
        todo = [key]
        while todo:
            for up in self.nodes[todo.pop()].upstream:
                if up in self.nodes and up not in seen:
                    seen.add(up)
                    todo.append(up)
        return seen

    def descendants(self, key: str) -> set[str]:
        """Every node that depends on ``key``, transitively."""
        seen: set[str] = set()
        todo = [key]
        while todo:
            for down in self.downstream[todo.pop()]:
                if down not in seen:
                    seen.add(down)
                    todo.append(down)
        return seen

    def order(self, keys: Iterable[str]) -> list[str]:
        """``keys`` in dependency order (ties broken by name, so runs are reproducible)."""
        wanted = set(keys)
        done: set[str] = set()
        result: list[str] = []
        while len(result) < len(wanted):
            ready = sorted(
                k for k in wanted - done if all(u in done or u not in wanted for u in self.nodes[k].upstream)
            )
            if not ready:  # a cycle; check() reports it properly
                raise ConfigError("the pipelines form a cycle; run `rat dag` to see it")
            result.extend(ready)
            done.update(ready)
        return result

    def select(self, selectors: Iterable[str] | None) -> set[str]:
        """Resolve selectors: ``name`` or ``layer.name``, ``layer:silver``, ``tag:x``, ``+name``
        (with ancestors), ``name+`` (with descendants); several selectors are a union.

        Raises:
            ConfigError: a selector matches nothing (with the closest names).
        """
        chosen: set[str] = set()
        items = [s for selector in (selectors or []) for s in selector.replace(",", " ").split()]
        if not items:
            return set(self.nodes)
        for item in items:
            with_up, with_down = item.startswith("+"), item.endswith("+")
            core = item.strip("+")
            if core.startswith("layer:"):
                base = {k for k, n in self.nodes.items() if n.layer == core[6:]}
            elif core.startswith("tag:"):
                base = {k for k, n in self.nodes.items() if core[4:] in n.tags}
            else:
                base = {k for k, n in self.nodes.items() if core in (k, n.name)}
            if not base:
                names = sorted(self.nodes) + [f"layer:{n.layer}" for n in self.nodes.values()]
                close = difflib.get_close_matches(core, names, n=1)
                hint = f"; did you mean `{close[0]}`?" if close else ""
                raise ConfigError(f"`{item}` selects nothing{hint} Nodes: {', '.join(sorted(self.nodes)) or 'none'}")
            for key in base:
                chosen.add(key)
                if with_up:
                    chosen |= self.ancestors(key)
                if with_down:
                    chosen |= self.descendants(key)
        return chosen

    def tree(self) -> list[tuple[int, str]]:
        """A readable tree: each node under the nodes that depend on nothing, indented by depth."""
        depth: dict[str, int] = {}
        for key in self.order(self.nodes):
            ups = [u for u in self.nodes[key].upstream if u in self.nodes]
            depth[key] = 1 + max((depth[u] for u in ups), default=-1)
        return [(depth[k], k) for k in self.order(self.nodes)]
