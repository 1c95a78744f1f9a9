"""Compile SQL models: Jinja with ``ref``, ``source``, ``this``, ``is_incremental()``,
``watermark()``, ``var``, ``env_var`` and the workspace's macros.

Line numbers survive compilation (Jinja block tags leave their line empty), so DuckDB's parse
errors are reported at the model file's own line.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ratatouille.errors import Problem
from ratatouille.models.loader import Model

if TYPE_CHECKING:
    from pathlib import Path

    import jinja2


class CompileProblem(Exception):
    """A located problem while compiling; the caller collects them."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class CompileContext:
    """What compilation needs to know about the world.

    Attributes:
        relation: turns a model key (``layer.name`` or ``ws.layer.name``) into the SQL that reads it.
        this: the SQL name of the model's own table.
        incremental: whether ``is_incremental()`` is true for this compile.
        watermark: returns the SQL literal of ``max(column)`` of the model's table.
        vars: values for ``var()``.
    """

    relation: Callable[[str], str]
    this: str
    incremental: bool = False
    watermark: Callable[[str], str] = lambda column: "NULL"
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Compiled:
    """A compiled model: its SQL and what it reads."""

    model: Model
    sql: str
    refs: tuple[str, ...]


class Compiler:
    """Renders SQL models of one workspace."""

    def __init__(self, workspace: str, models: dict[str, Model], macros: dict[str, str], sources: set[str]) -> None:
        self.workspace = workspace
        self.models = models
        self.sources = sources
        self.macros = macros
        self.disabled: dict[str, Path] = {}  # models with `enabled: false`, for a clear error on refs to them
        self._env: jinja2.Environment | None = None
        self._macro_globals: dict[str, Any] | None = None

    def environment(self) -> jinja2.Environment:
        """The Jinja environment with the macros loaded as globals.

        Raises:
            CompileProblem: a macro file does not compile.
        """
        import jinja2

        if self._env is None:
            env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
            env.loader = jinja2.DictLoader(self.macros)
            exported: dict[str, Any] = {}
            for name in self.macros:
                try:
                    module = env.get_template(name).make_module()
                except jinja2.TemplateSyntaxError as exc:
                    problem = Problem(f"macros/{name}", exc.lineno, "", f"macro syntax error: {exc.message}")
                    raise CompileProblem(problem) from None
                exported.update({k: getattr(module, k) for k in dir(module) if not k.startswith("_")})
            env.globals.update(exported)
            self._env = env
        return self._env

    def resolve(self, model: Model, name: str) -> str:
        """Turn a ref name into a model key, or raise a located problem with the closest names."""
        candidates = [name] if name.count(".") >= 1 else [f"{layer}.{name}" for layer in ("silver", "gold", "bronze")]
        for candidate in candidates:
            if candidate in self.models or candidate.count(".") == 2:
                return candidate
            if candidate.startswith("bronze.") and source_of(candidate, self.sources) is not None:
                return candidate
        disabled = next((self.disabled[c] for c in candidates if c in self.disabled), None)
        if disabled is not None:
            why = f"which is disabled (`enabled: false` in {disabled}); enable it or drop the ref"
        else:
            known = sorted(self.models) + [f"bronze.{s}" for s in sorted(self.sources)]
            close = difflib.get_close_matches(name, known, n=1)
            why = "which does not exist" + (
                f"; did you mean `{close[0]}`?" if close else f"; models: {', '.join(known) or 'none'}"
            )
        raise CompileProblem(Problem(str(model.path), _line_of(model.sql or "", name), "", f"refs `{name}`, {why}"))

    def compile(self, model: Model, ctx: CompileContext) -> Compiled:
        """Render a SQL model.

        Raises:
            CompileProblem: unknown ref or source, Jinja error, or a missing var/env var.
        """
        import jinja2

        assert model.sql is not None
        refs: list[str] = []

        def ref(name: str) -> str:
            key = self.resolve(model, name)
            refs.append(key)
            return ctx.relation(key)

        def source(name: str) -> str:
            if name not in self.sources:
                close = difflib.get_close_matches(name, sorted(self.sources), n=1)
                hint = (
                    f"; did you mean `{close[0]}`?"
                    if close
                    else f"; sources: {', '.join(sorted(self.sources)) or 'none'}"
                )
                raise CompileProblem(
                    Problem(
                        str(model.path), _line_of(model.sql or "", name), "", f"source `{name}` does not exist{hint}"
                    )
                )
            refs.append(f"bronze.{name}")
            return ctx.relation(f"bronze.{name}")

        def var(name: str, default: Any = _MISSING) -> Any:
            if name in ctx.vars:
                return ctx.vars[name]
            if default is _MISSING:
                raise CompileProblem(
                    Problem(
                        str(model.path),
                        _line_of(model.sql or "", name),
                        "",
                        f"var `{name}` is not set; set it in workspace.yaml `vars:` or pass a default: var('x', 1)",
                    )
                )
            return default

        def env_var(name: str, default: Any = _MISSING) -> Any:
            if name in os.environ:
                return os.environ[name]
            if default is _MISSING:
                raise CompileProblem(
                    Problem(
                        str(model.path), _line_of(model.sql or "", name), "", f"environment variable {name} is not set"
                    )
                )
            return default

        def watermark(column: str | None = None) -> str:
            column = column or model.config.incremental.watermark
            if not column:
                raise CompileProblem(
                    Problem(
                        str(model.path),
                        _line_of(model.sql or "", "watermark"),
                        "",
                        "watermark() needs a column, or `incremental: {watermark: col}` in the model config",
                    )
                )
            return ctx.watermark(column)

        try:
            template = self.environment().from_string(model.sql)
            sql = template.render(
                ref=ref,
                source=source,
                this=ctx.this,
                is_incremental=lambda: ctx.incremental,
                watermark=watermark,
                var=var,
                env_var=env_var,
            )
        except CompileProblem:
            raise
        except jinja2.TemplateSyntaxError as exc:
            raise CompileProblem(Problem(str(model.path), exc.lineno, "", f"template error: {exc.message}")) from None
        except jinja2.UndefinedError as exc:
            raise CompileProblem(
                Problem(str(model.path), _jinja_line(exc), "", f"template error: {exc.message}")
            ) from None
        except Exception as exc:
            raise CompileProblem(
                Problem(str(model.path), _jinja_line(exc), "", f"template error: {type(exc).__name__}: {exc}")
            ) from None
        sql = _strip_header(sql).rstrip().rstrip(";").rstrip()
        return Compiled(model, sql, tuple(dict.fromkeys(refs)))


_MISSING = object()


def source_of(key: str, sources: set[str]) -> str | None:
    """The source that writes a bronze table: ``bronze.shop`` and ``bronze.shop_orders`` (a REST
    resource or a child table of source ``shop``) both come from ``shop``."""
    if not key.startswith("bronze."):
        return None
    name = key.removeprefix("bronze.")
    if name in sources:
        return name
    owners = [s for s in sources if name.startswith(s + "_")]
    return max(owners, key=len) if owners else None


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line and not line.lstrip().startswith("-- @"):
            return number
    return None


def _jinja_line(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _strip_header(sql: str) -> str:
    """Blank out ``-- @key:`` header lines, keeping line numbers."""
    return "\n".join("" if re.match(r"^\s*--\s*@[a-z_]+\s*:", line) else line for line in sql.split("\n"))


def parse_error(model: Model, compiled_sql: str, con: Any) -> Problem | None:
    """Check the compiled SQL with DuckDB's own parser; a syntax error points at the model's line.

    DuckDB's parser is used rather than sqlglot: it is the one that will run the SQL, so it never
    rejects valid DuckDB syntax.
    """
    import json

    from ratatouille.engine import literal

    row = con.execute(f"SELECT json_serialize_sql({literal(compiled_sql)})").fetchone()
    tree = json.loads(row[0]) if row else {}
    if not tree.get("error"):
        return None
    if tree.get("error_type") != "parser":
        # Not a plain SELECT (e.g. a statement json_serialize_sql cannot render): DuckDB will say.
        return None
    position = int(tree.get("position", "0") or 0)
    raw = compiled_sql
    line = raw.count("\n", 0, position) + 1
    column = position - (raw.rfind("\n", 0, position) + 1) + 1
    return Problem(str(model.path), line, "", f"SQL syntax error at column {column}: {tree.get('error_message')}")
