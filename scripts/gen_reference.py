"""Generate the reference pages from the code, so they cannot drift from it.

- ``docs/reference/cli.md`` from the click command tree (``ratatouille.cli.main.cli``).
- ``docs/reference/configuration.md`` from the pydantic models in ``ratatouille.config``.
- ``docs/reference/models.md`` from ``ratatouille.models.config.ModelConfig`` (and the Jinja
  functions the compiler passes to a model, and the built-in tests).
- ``docs/reference/sources.md`` from the config class of every connector in
  ``ratatouille.connectors.registry.CONNECTORS`` (a connector that does not import is left out,
  with a note on the page).

Usage::

    python scripts/gen_reference.py            # rewrite the pages
    python scripts/gen_reference.py --check    # exit 1 if a page on disk differs from the code

Key descriptions come from ``Field(description=...)`` when the model has one, else from the
hand-written key tables below, else (models and sources) from the ``Attributes:`` section of the
class docstring. Every table is checked: a key without a description, or a description of a key
that no longer exists, stops the generator.

This file is longer than the 800 lines CONVENTIONS.md asks for: it is one script that the docs
test imports by path, and most of its length is the hand-written key tables.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import textwrap
import types
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import click
import yaml
from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
CLI_PAGE = REFERENCE / "cli.md"
CONFIG_PAGE = REFERENCE / "configuration.md"
MODELS_PAGE = REFERENCE / "models.md"
SOURCES_PAGE = REFERENCE / "sources.md"
COMMAND = "python scripts/gen_reference.py"
NONE = "—"


class ReferenceError(Exception):
    """The code and the hand-written descriptions disagree; the message says how to fix it."""


# --- hand-written key descriptions (checked against the models) ----------------------------

PROJECT_KEYS: dict[str, str] = {
    "name": "The project's name, shown by the CLI. `rat init` sets it from the directory name.",
    "profile": (
        "Engine size: DuckDB memory limit, threads and parallel pipelines. `tiny` 1GB / 1 thread, "
        "`small` 2GB / 2, `medium` 6GB / 4, `large` 24GB / 16 (threads never exceed the CPU count). "
        "`auto` picks by the machine's RAM (or its cgroup limit): under 4.5 GiB `tiny`, under 10 `small`, "
        "under 40 `medium`, else `large`."
    ),
    "default_workspace": "The workspace used when `--workspace` is not given.",
    "storage.warehouse": (
        "Root of the Iceberg tables: a directory (relative to the project) or `s3://bucket/prefix`. "
        "A table lives at `<warehouse>/<workspace>/<layer>/<table>`."
    ),
    "storage.landing": (
        "The landing zone for incoming files: a directory (relative to the project) or `s3://bucket/prefix`. "
        "`rat sample pos` writes here and needs it to be local."
    ),
    "storage.s3.endpoint": (
        "S3 API endpoint, e.g. `http://127.0.0.1:8333` (MinIO, SeaweedFS, ...). `null` means AWS. "
        "An `http://` endpoint turns TLS off."
    ),
    "storage.s3.region": "S3 region.",
    "storage.s3.access_key_id": "Access key id; `null` leaves it to DuckDB and PyIceberg defaults.",
    "storage.s3.secret_access_key": "Secret access key. Keep it out of the file: `${env:S3_SECRET_ACCESS_KEY}`.",
    "storage.s3.path_style": "Path-style URLs (`http://host/bucket/key`), which most self-hosted S3 servers need.",
    "catalog.type": "`sql`: a SQLite or PostgreSQL database. `rest`: an Iceberg REST catalog (Nessie, Polaris, ...).",
    "catalog.uri": (
        "For `sql`, a database URL: `sqlite:///.rat/catalog.db` (relative to the project) or "
        "`postgresql://user:${env:PGPASSWORD}@host/db` (driven by psycopg 3). For `rest`, the catalog's URL."
    ),
    "catalog.name": "Catalog name; several projects can share one database under different names.",
    "catalog.properties": "Extra PyIceberg catalog properties (e.g. `token` or `credential` for a REST catalog).",
    "state.uri": (
        "URL of the state store, which records pipeline runs: `sqlite:///...` (relative to the "
        "project) or `postgresql://...`; it may share the catalog's database."
    ),
    "server.host": (
        "Interface `rat serve` listens on (`--host` wins). The API speaks plain HTTP: to serve beyond this "
        "machine, put a TLS-terminating proxy in front."
    ),
    "server.port": "TCP port of `rat serve` (`--port` wins).",
    "engine.memory_limit": "DuckDB memory limit, e.g. `3GB`; `null` keeps the profile's.",
    "engine.threads": "DuckDB threads; `null` keeps the profile's.",
    "engine.temp_directory": "Where DuckDB spills when a query needs more than the memory limit (project-relative).",
    "engine.max_parallel_pipelines": "Pipeline models run at once; `null` keeps the profile's.",
    "vars": "Project-wide variables for pipeline models, read with `var('name')`.",
}

WORKSPACE_KEYS: dict[str, str] = {
    "name": (
        "The workspace's name: lower-case letters, digits and underscores. It must equal the folder's "
        "name; leave it out and the folder's name is used."
    ),
    "description": "What the workspace is for.",
    "resources.max_parallel_pipelines": "Pipeline models of this workspace run at once; `null` uses `engine`'s.",
    "layers": (
        "The layers whose `pipelines/<layer>/` folders may hold models. Tables are named `<layer>.<table>`; "
        "writes from the SDK are not limited to these layers."
    ),
    "vars": "Variables for this workspace's pipeline models; a name here wins over the project's `vars`.",
    "products": "Data products this workspace publishes. Reserved.",
    "subscriptions": "Data products of other workspaces this one reads. Reserved.",
}

# Defaults the loader fills in where the model itself has none.
DEFAULT_OVERRIDES: dict[str, str] = {
    "workspace:name": "the folder's name",
}


# --- small helpers -------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _help(text: str | None) -> str:
    """Help text or a docstring without indentation, the part after ``\\f``, or reST double backticks."""
    return inspect.cleandoc(text or "").split("\f")[0].strip().replace("``", "`")


def _generated_note(source: str) -> str:
    return f"<!-- Generated by `{COMMAND}` from {source}. Do not edit by hand: change the code and rerun it. -->"


# --- CLI -----------------------------------------------------------------------------------


def _commands(group: click.Group, ctx: click.Context) -> Iterator[tuple[click.Command, click.Context]]:
    """Every visible command under ``group``, depth first, in name order."""
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub_ctx = click.Context(command, info_name=name, parent=ctx)
        yield command, sub_ctx
        if isinstance(command, click.Group):
            yield from _commands(command, sub_ctx)


def _anchor(path: str) -> str:
    return path.replace(" ", "-")


def _default(param: click.Parameter, ctx: click.Context) -> str:
    value = param.get_default(ctx, call=False)
    if isinstance(param, click.Option) and param.is_flag:
        return NONE
    if isinstance(value, bool | int | float | str) and value != "":
        return f"`{value}`"
    return NONE


def _global_names(root: click.Group) -> list[str]:
    """The options every command accepts (the root's, minus --version)."""
    return [p.name for p in root.params if isinstance(p, click.Option) and p.name and p.name != "version"]


def render_cli(root: click.Group | None = None) -> str:
    """The CLI reference page, generated from the click command tree."""
    if root is None:
        from ratatouille.cli.main import cli

        root = cli
    ctx = click.Context(root, info_name="rat")
    globals_ = _global_names(root)
    out = [
        "# CLI reference",
        "",
        _generated_note("the click commands in `src/ratatouille/cli/main.py`"),
        "",
        _help(root.help),
        "",
        "Every command takes `-h` / `--help`. Errors print one red `Error:` line that says what to do, "
        "and exit with code 1 (with `--json`, a JSON object on stderr instead).",
        "",
        "## Global options",
        "",
        "Accepted on `rat` itself and on every command, before or after the command name "
        "(`rat --json tables` and `rat tables --json` are the same). `rat --version` prints the version.",
        "",
        _options_table([p for p in root.params if isinstance(p, click.Option) and p.name in globals_], ctx),
        "",
        "## Commands",
        "",
    ]
    commands = list(_commands(root, ctx))
    out.append(
        _table(
            ["command", "does"],
            [
                [f"[`{c.command_path}`](#{_anchor(c.command_path)})", _help(cmd.help).split("\n\n")[0]]
                for cmd, c in commands
            ],
        )
    )
    for command, command_ctx in commands:
        out += ["", f'<a id="{_anchor(command_ctx.command_path)}"></a>', "", f"## `{command_ctx.command_path}`", ""]
        usage = " ".join([command_ctx.command_path, *command.collect_usage_pieces(command_ctx)])
        out += ["```", usage, "```", "", _help(command.help)]
        if isinstance(command, click.Group):
            subs = sorted(command.list_commands(command_ctx))
            links = [f"[`{n}`](#{_anchor(command_ctx.command_path + ' ' + n)})" for n in subs]
            out += ["", "Subcommands: " + ", ".join(links) + "."]
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        if arguments:
            rows = [
                [
                    f"`{p.human_readable_name}{'...' if p.nargs == -1 else ''}`",
                    "yes" if p.required else "no",
                    _default(p, command_ctx),
                ]
                for p in arguments
            ]
            out += ["", _table(["argument", "required", "default"], rows)]
        names = {p.name for p in command.params}
        own = [p for p in command.params if isinstance(p, click.Option) and p.name not in globals_]
        if own:
            out += ["", _options_table(own, command_ctx)]
        if all(name in names for name in globals_):
            out += ["", "Also takes the [global options](#global-options)."]
        else:
            out += [
                "",
                "Takes no global options itself: put them after the subcommand "
                f"(`{command_ctx.command_path} <subcommand> --json`).",
            ]
    return "\n".join(out).rstrip() + "\n"


def _options_table(options: list[click.Option], ctx: click.Context) -> str:
    rows = []
    for option in options:
        names = ", ".join(f"`{n}`" for n in [*option.opts, *option.secondary_opts])
        kind = "flag" if option.is_flag else f"`{option.make_metavar(ctx)}`"
        if option.multiple:
            kind += ", repeatable"
        rows.append([names, kind, _default(option, ctx), option.help or ""])
    return _table(["option", "value", "default", "description"], rows)


# --- configuration -------------------------------------------------------------------------


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


SCALARS = frozenset({str, int, float, bool})


def type_text(annotation: Any, links: Mapping[Any, str] | None = None) -> str:
    """A plain-words name for a field's type; ``links`` names nested models (else "section")."""
    links = links or {}
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Annotated:
        return type_text(args[0], links)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        text = type_text(members[0], links) if len(members) == 1 else _union_text(members, links)
        return f"{text} or null" if len(members) < len(args) else text
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_text(args[0], links)}" if args else "list"
    if origin is dict:
        return f"mapping of {type_text(args[0], links)} to {type_text(args[1], links)}" if args else "mapping"
    if annotation in links:
        return links[annotation]
    if _is_model(annotation):
        return "section"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    names: dict[Any, str] = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        SecretStr: "string (secret, hidden in output)",
        Any: "any",
    }
    if annotation in names:
        return names[annotation]
    raise ReferenceError(f"no plain name for the type {annotation!r}; teach type_text() in {COMMAND}")


def _union_text(members: list[Any], links: Mapping[Any, str]) -> str:
    if SCALARS <= set(members):
        rest = [m for m in members if m not in SCALARS]
        return " or ".join(["scalar (string, number or boolean)", *(type_text(m, links) for m in rest)])
    if members and all(_is_model(m) and m in links for m in members):
        how = "by `type`" if all(_discriminator_value(m) for m in members) else "one of"
        return f"mapping; {how}: " + ", ".join(links[m] for m in members)
    return " or ".join(type_text(m, links) for m in members)


def _discriminator_value(model: Any) -> str | None:
    """``bearer`` for a model whose ``type`` field is ``Literal["bearer"]``."""
    if not _is_model(model) or "type" not in model.model_fields:
        return None
    annotation = model.model_fields["type"].annotation
    values = get_args(annotation) if get_origin(annotation) is Literal else ()
    return str(values[0]) if len(values) == 1 else None


def _constraints(field: FieldInfo) -> str:
    def bound(kind: type, name: str) -> Any:
        return next((getattr(m, name) for m in field.metadata if isinstance(m, kind)), None)

    low, high = bound(Ge, "ge"), bound(Le, "le")
    above, below, min_items = bound(Gt, "gt"), bound(Lt, "lt"), bound(MinLen, "min_length")
    parts = []
    if low is not None and high is not None:
        parts.append(f"{low} to {high}")
    elif low is not None:
        parts.append(f"at least {low}")
    elif high is not None:
        parts.append(f"at most {high}")
    if above is not None:
        parts.append(f"more than {above}")
    if below is not None:
        parts.append(f"less than {below}")
    if min_items is not None:
        parts.append(f"at least {min_items} item{'s' if min_items != 1 else ''}")
    return "".join(f", {p}" for p in parts)


def _yaml_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, SecretStr):
        return "(secret)"
    return str(yaml.safe_dump(value, default_flow_style=True, sort_keys=False)).strip().removesuffix("...").strip()


def _field_default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _walk(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf key of ``model`` (nested models are walked into, not listed), as a dotted path."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if not _is_model(field.annotation):
            yield path, field
        else:
            yield from _walk(field.annotation, f"{path}.")  # type: ignore[arg-type]


def _describe(path: str, field: FieldInfo, hand: Mapping[str, str], file: str) -> str:
    if field.description and path in hand:
        raise ReferenceError(
            f"`{path}` in {file} has a Field description and a hand-written one; "
            f"delete the hand-written one from {COMMAND}"
        )
    text = field.description or hand.get(path)
    if not text:
        raise ReferenceError(
            f"`{path}` in {file} has no description; add Field(description=...) in config.py "
            f"or an entry in the key table of {COMMAND}"
        )
    return text


def _check_stale(model: type[BaseModel], hand: Mapping[str, str], file: str) -> None:
    known = {path for path, _ in _walk(model)}
    stale = sorted(set(hand) - known)
    if stale:
        raise ReferenceError(
            f"{COMMAND} describes keys of {file} that no longer exist: {', '.join(stale)}; remove them"
        )


def _model_section(
    model: type[BaseModel], hand: Mapping[str, str], file: str, prefix: str, env_prefix: str | None, level: int = 2
) -> list[str]:
    """One table of the model's keys, then one section per nested model (introduced by its docstring)."""
    rows: list[list[str]] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        env = ""
        if _is_model(annotation):
            nested.append((path, annotation))  # type: ignore[arg-type]
            summary = field.description or _help(annotation.__doc__).split("\n\n")[0]
            rows.append([f"[`{path}`](#{path.replace('.', '')})", "section", "see below", env, summary])
            continue
        if field.is_required():
            default = DEFAULT_OVERRIDES.get(f"{file_tag(file)}:{path}", "required")
        else:
            default = f"`{_yaml_value(_field_default(field))}`"
        if env_prefix is not None:
            env = f"`{env_prefix}{path.upper().replace('.', '__')}`"
            if get_origin(annotation) is dict:
                env = env.rstrip("`") + "__<KEY>`"  # a mapping is set one key at a time
        description = _describe(path, field, hand, file)
        rows.append([f"`{path}`", type_text(annotation) + _constraints(field), default, env, description])
    header = ["key", "type", "default", "environment override", "description"]
    if env_prefix is None:
        header.pop(3)
        rows = [r[:3] + r[4:] for r in rows]
    out = [_table(header, rows)]
    for path, sub_model in nested:
        out += ["", f"{'#' * min(level + 1, 4)} `{path}`", "", _help(sub_model.__doc__), ""]
        out += _model_section(sub_model, hand, file, f"{path}.", env_prefix, level + 1)
    return out


def file_tag(file: str) -> str:
    """``project`` or ``workspace``: the prefix of ``DEFAULT_OVERRIDES`` keys."""
    return "workspace" if "workspace" in file else "project"


def render_configuration() -> str:
    """The configuration reference page, generated from the pydantic models."""
    from ratatouille import config

    for key in DEFAULT_OVERRIDES:
        tag, _, path = key.partition(":")
        model = config.WorkspaceConfig if tag == "workspace" else config.ProjectConfig
        if path not in {p for p, _ in _walk(model)}:
            raise ReferenceError(f"DEFAULT_OVERRIDES in {COMMAND} names `{key}`, which no longer exists; remove it")
    _check_stale(config.ProjectConfig, PROJECT_KEYS, config.PROJECT_FILE)
    _check_stale(config.WorkspaceConfig, WORKSPACE_KEYS, config.WORKSPACE_FILE)
    defaults = config.ProjectConfig().model_dump(mode="json")
    env_prefix = config.ENV_PREFIX
    out = [
        "# Configuration reference",
        "",
        _generated_note("the pydantic models in `src/ratatouille/config.py`"),
        "",
        "A project has two kinds of files: `ratatouille.yaml` at its root (the platform) and one "
        "`workspaces/<name>/workspace.yaml` per workspace. Every key has a default, so an empty file is valid. "
        "Unknown keys are errors, and a file with several problems reports all of them, each with file and line.",
        "",
        "In any string value, `${env:NAME}` is replaced by the environment variable `NAME` (an error if it is "
        "not set) and `${env:NAME:-fallback}` uses `fallback` when it is not set. Use it for passwords and keys.",
        "",
        f"Keys of `ratatouille.yaml` can also be set by environment variables named `{env_prefix}<KEY>`, with "
        f"`__` between nested keys: `{env_prefix}STORAGE__S3__ENDPOINT=http://127.0.0.1:8333`. They win over the "
        "file. The value is read as a YAML scalar, so `8080` is a number and `null` is null. "
        f"`{env_prefix}PROJECT` (the project directory, like `--project`) is not an override.",
        "",
        f"## `{config.PROJECT_FILE}`",
        "",
        _help(config.ProjectConfig.__doc__),
        "",
        "With nothing set, the file is equivalent to:",
        "",
        "```yaml",
        yaml.safe_dump(defaults, sort_keys=False).strip(),
        "```",
        "",
    ]
    out += _model_section(config.ProjectConfig, PROJECT_KEYS, config.PROJECT_FILE, "", env_prefix)
    out += [
        "",
        f"## `{config.WORKSPACE_FILE}`",
        "",
        _help(config.WorkspaceConfig.__doc__)
        + " A missing file means every default. Environment overrides do not apply to it; `${env:...}` does.",
        "",
    ]
    out += _model_section(config.WorkspaceConfig, WORKSPACE_KEYS, config.WORKSPACE_FILE, "", None)
    return "\n".join(out).rstrip() + "\n"


# --- nested keys: models and sources -------------------------------------------------------

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data):`~?([^`]+)`")


def _doc_text(text: str) -> str:
    """Docstring prose as Markdown: reST roles and double backticks become single backticks."""
    return _ROLE.sub(r"`\1`", text).replace("``", "`")


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] if text else text


def attribute_docs(cls: type) -> dict[str, str]:
    """Key descriptions from the ``Attributes:`` sections of a class's docstring and its bases'.

    ``a / b: text`` describes both ``a`` and ``b``; continuation lines are indented deeper.
    """
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = klass.__dict__.get("__doc__")
        if not isinstance(doc, str) or "Attributes:" not in doc:
            continue
        lines = inspect.cleandoc(doc).splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
        entries: dict[str, list[str]] = {}
        current: list[str] | None = None
        indent: int | None = None
        for line in lines[start + 1 :]:
            if not line.strip():
                continue
            depth = len(line) - len(line.lstrip())
            if depth == 0:
                break
            indent = depth if indent is None else indent
            match = re.match(r"^([\w /]+?):\s+(.*)$", line.strip()) if depth == indent else None
            if match:
                current = [match.group(2)]
                for name in match.group(1).split("/"):
                    entries[name.strip()] = current
            elif current is not None:
                current.append(line.strip())
        found.update({name: _sentence(_doc_text(" ".join(parts))) for name, parts in entries.items()})
    return found


def _intro(cls: type) -> str:
    """A class docstring without its ``Attributes:`` and ``Example::`` parts."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str):
        return ""
    text = inspect.cleandoc(doc)
    for marker in ("Attributes:", "Example::", "Example:"):
        text = text.split(marker)[0]
    return _doc_text(text).strip()


def _unwrap(annotation: Any) -> Any:
    """Drop ``Annotated`` and ``| None``."""
    while True:
        origin, args = get_origin(annotation), get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
        elif origin in (Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007 - built at run time
        else:
            return annotation


def _nested(annotation: Any) -> tuple[str, list[type[BaseModel]]]:
    """How a field nests models: ``("", [M])``, ``("[]", [M])`` for a list, ``("|", [A, B])`` for a
    union; ``("", [])`` when it holds no model."""
    annotation = _unwrap(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args:
        inner = _unwrap(args[0])
        return ("[]", [inner]) if _is_model(inner) else ("", [])
    if origin in (Union, types.UnionType) and all(_is_model(_unwrap(a)) for a in args):
        return "|", [_unwrap(a) for a in args]
    return ("", [annotation]) if _is_model(annotation) else ("", [])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class KeyPage:
    """Renders nested pydantic models as key tables: one table per mapping, each nested mapping
    (a model, a list of models, or each member of a union of models) in a section of its own.

    A key's description comes from ``Field(description=...)``, else ``hand`` (keyed by the path
    as written in YAML, with ``[]`` for list items and ``[kind]`` for a union member:
    ``columns[].name``, ``auth[bearer].token``), else the class docstring's ``Attributes:``.
    ``leaves`` names models shown as a type rather than a section. ``defaults`` overrides the
    default shown for a hand key.
    """

    def __init__(
        self,
        hand: Mapping[str, str],
        where: str,
        *,
        anchor_prefix: str = "",
        leaves: Mapping[type[BaseModel], str] | None = None,
        defaults: Mapping[str, str] | None = None,
        level: int = 2,
    ) -> None:
        self.hand = hand
        self.where = where
        self.anchor_prefix = anchor_prefix
        self.leaves = dict(leaves or {})
        self.defaults = defaults or {}
        self.level = level
        self.used: set[str] = set()
        self.paths: list[str] = []
        self.sections: list[list[str]] = []
        self.links: dict[Any, str] = {}

    def table(self, model: type[BaseModel], path: str = "", key: str = "", skip: tuple[str, ...] = ()) -> str:
        """The key table of ``model`` (``path``/``key`` prefix its keys); nested sections are queued."""
        rows = [
            self._row(model, name, field, f"{path}{name}", f"{key}{name}")
            for name, field in model.model_fields.items()
            if name not in skip
        ]
        return _table(["key", "type", "default", "description"], rows)

    def render_sections(self) -> list[str]:
        """The queued sections, in the order they were found."""
        return [line for section in self.sections for line in section]

    def check_stale(self, prefix: str = "") -> None:
        """Raise when a hand-written key (starting with ``prefix``) describes no key.

        Raises:
            ReferenceError: naming the stale keys.
        """
        stale = sorted(k for k in self.hand if k.startswith(prefix) and k not in self.used)
        if stale:
            raise ReferenceError(
                f"{COMMAND} describes keys of {self.where} that no longer exist: {', '.join(stale)}; remove them"
            )

    def _row(self, model: type[BaseModel], name: str, field: FieldInfo, path: str, key: str) -> list[str]:
        shape, members = _nested(field.annotation)
        for member in members:
            if member not in self.leaves and member not in self.links:
                self._section(member, shape, path, key, members)
        if field.is_required():
            default = self.defaults.get(key, "required")
        else:
            default = self.defaults.get(key) or f"`{_yaml_value(_field_default(field))}`"
        if key in self.defaults:
            self.used.add(key)
        description = self._describe(model, name, field, key)
        self.paths.append(path)
        kind = type_text(field.annotation, {**self.links, **self.leaves}) + _constraints(field)
        return [f"`{path}`", kind, default, description]

    def _section(self, model: type[BaseModel], shape: str, path: str, key: str, members: list[type[BaseModel]]) -> None:
        tag = _discriminator_value(model) if shape == "|" else None
        member_key = f"{key}[{tag or model.__name__}]" if shape == "|" else f"{key}{shape}"
        anchor = self.anchor_prefix + _slug(f"{path} {tag or model.__name__}" if shape == "|" else path)
        if shape == "|" and tag:
            label, title = f"`{tag}`", f"`{path}` with `type: {tag}`"
        elif shape == "|":
            spans = re.findall(r"`([^`]+)`", _intro(model))
            label = f"`{spans[0]}`" if spans else model.__name__
            title = f"`{path}` for {label}"
        else:
            label, title = "mapping", f"`{path}`" + (" (each item)" if shape == "[]" else "")
        self.links[model] = f"[{label}](#{anchor})"
        block: list[str] = []
        self.sections.append(block)  # before the sections nested in it
        heading = "#" * min(self.level + 1, 4)
        block += ["", f'<a id="{anchor}"></a>', "", f"{heading} {title}", ""]
        intro = _intro(model)
        if intro:
            block += [intro, ""]
        skip = ("type",) if tag else ()
        if all(name in skip for name in model.model_fields):
            block.append("No other keys." if skip else "No keys.")
            return
        item = f"{path}[]." if shape == "[]" else f"{path}."
        block.append(self.table(model, item, f"{member_key}.", skip))

    def _describe(self, model: type[BaseModel], name: str, field: FieldInfo, key: str) -> str:
        if field.description and key in self.hand:
            raise ReferenceError(
                f"`{key}` in {self.where} has a Field description and a hand-written one; "
                f"delete the hand-written one from {COMMAND}"
            )
        if key in self.hand:
            self.used.add(key)
        text = field.description or self.hand.get(key) or attribute_docs(model).get(name)
        if not text:
            raise ReferenceError(
                f"`{key}` of {self.where} ({model.__name__}.{name}) has no description; add "
                f"Field(description=...) or an `Attributes:` entry in the class docstring, "
                f"or an entry in the key table of {COMMAND}"
            )
        return text


# --- models --------------------------------------------------------------------------------

MODEL_KEYS: dict[str, str] = {
    "name": (
        "The model's name: it writes the table `<layer>.<name>`, the layer being its folder. "
        "Lower-case letters, digits and `_`."
    ),
    "description": "What the model holds, for people reading the file. Not shown by the CLI yet.",
    "owner": "Who to ask about the model: a team or an e-mail address. Not shown by the CLI yet.",
    "materialized": (
        "`table`: the query's result replaces the table on every run that rebuilds it. `view`: nothing is "
        "stored; `rat query` and downstream models read the compiled SQL as a DuckDB view (views are not "
        "listed by `rat tables`). `incremental`: the first run (and `--full-refresh`) builds the table; later "
        "runs write only the query's new rows, by `incremental.strategy`."
    ),
    "unique_key": (
        "The column, or columns, identifying a row: one name, `a, b`, or a list. Needed by incremental models "
        "with strategy `merge` or `delete+insert`. In an incremental model, rows with a NULL in the key go to "
        "the table `quarantine.<layer>_<name>` (with `_reason`, `_run_id`, `_quarantined_at`) instead."
    ),
    "incremental": "How an incremental model writes its new rows.",
    "incremental.strategy": (
        "`merge`: a new row replaces the row with the same `unique_key`, or is inserted (the new rows' keys must "
        "be unique). `append`: new rows are added as they are; no key needed. `delete+insert`: every row whose "
        "key is among the new rows' keys is deleted, then the new rows are inserted, so several rows may share "
        "a key (a day, a store)."
    ),
    "incremental.watermark": (
        "The column `watermark()` reads when called without one. Write the filter yourself: "
        "`WHERE col > {{ watermark() }}` inside `{% if is_incremental() %}`. Each run records the value."
    ),
    "partition_by": (
        "Iceberg partition transforms: `col` (identity), `year(col)`, `month(col)`, `day(col)`, `hour(col)`, "
        "`bucket(n, col)`, `truncate(n, col)`; a string (`day(ts), bucket(4, id)`) or a list. Not for views. "
        "Changing it needs `rat run --full-refresh` for an incremental model."
    ),
    "schedule": (
        "A cron expression (`0 * * * *`, UTC): `rat serve` runs the model then, with the sources it reads. "
        "Models due on the same cron run, and publish, together."
    ),
    "tags": "Labels to select the model by: `rat run --select tag:pos`.",
    "columns": "Per-column documentation and tests.",
    "columns[].name": "The column's name in the model's output.",
    "columns[].type": "The expected type. Documentation only for now: not checked against the output, nor cast to.",
    "columns[].description": "What the column means. Documentation only for now: not written to the table.",
    "columns[].tests": "Built-in tests of this column, run on the audit branch before publishing.",
    "tests": "SQL tests of the whole model, run on the audit branch before publishing.",
    "tests[].name": "The test's name in run results and `rat test`.",
    "tests[].sql": (
        "A query returning one number (Jinja allowed: `{{ this }}` is the model's table, `ref()` works); "
        "the test passes when the number equals `expect`."
    ),
    "tests[].expect": "The number the query must return.",
    "tests[].severity": "`error`: a failure keeps the model (and its descendants) unpublished. `warn`: reported only.",
    "unit_tests": "Mock rows in, expected rows out: run by `rat test --unit`, without touching any table.",
    "unit_tests[].name": "The unit test's name.",
    "unit_tests[].given": (
        "Rows for each table the model reads, keyed by the name given to `ref()` or `bronze.<source>`. Every "
        "table the model reads needs an entry. An entry for the model itself is `{{ this }}`, for incremental tests."
    ),
    "unit_tests[].expect": (
        "The rows the model must return, in any order. Only the columns named here are compared; timestamps "
        'may be strings (`"2026-01-03 09:30:00"`); numbers compare to 6 decimals.'
    ),
    "unit_tests[].vars": "Values of `var()` for this test; they win over every other `vars`.",
    "unit_tests[].incremental": (
        "Compile as an incremental run: `is_incremental()` is true, and `watermark()` reads the rows given for "
        "the model itself."
    ),
    "freshness": "How old the model's last publish may be; `rat freshness` checks it.",
    "freshness.warn_after": "Older than this: `warn`.",
    "freshness.error_after": "Older than this: `error`, and `rat freshness` exits with 1 (a model never published too).",
    "schema_drift": (
        "When the output has a new column, or a column type Iceberg can widen (`int` to `long`, a larger "
        "decimal): `evolve` changes the table's schema in the same commit, `fail` fails the model. Any other "
        "type change fails an incremental run, suggesting `--full-refresh`; a full rebuild (`--full-refresh`, "
        "a `table` model) replaces the column at its place, with its new type (with `evolve` only; not a partition "
        "column)."
    ),
    "vars": (
        "Variables for this model only. They win over the project's and the workspace's `vars`; "
        "`rat run --var` wins over them."
    ),
    "enabled": (
        "`false` takes the model out of the DAG: it does not run and is not tested; a model that refs it "
        "fails to load with a message naming it."
    ),
}

MODEL_DEFAULTS: dict[str, str] = {
    "name": "the file's name without `.sql` (for `@pipeline`, the function's name)",
}

JINJA: dict[str, str] = {
    "ref": (
        "`ref('silver.sales')`: the table of a model or source, and an edge of the DAG. `ref('sales')` looks in "
        "silver, gold, then bronze; `ref('other_ws.gold.kpis')` reads another workspace's table."
    ),
    "source": "`source('sales')`: the bronze table of the source `sales`, the same as `ref('bronze.sales')`.",
    "this": "The model's own table as the run sees it: in incremental SQL and in tests.",
    "is_incremental": (
        "`is_incremental()`: true when the model is incremental, its table has rows, and the run is not "
        "`--full-refresh`."
    ),
    "watermark": (
        "`watermark('col')`, or `watermark()` for `incremental.watermark`: the largest value of `col` in the "
        "model's table, as a typed SQL literal (`NULL` for an empty table)."
    ),
    "var": (
        "`var('name')` or `var('name', default)`: a variable from `vars:` (project, workspace, model), or "
        "`--var name=value`. A missing variable without a default is an error."
    ),
    "env_var": (
        "`env_var('NAME')` or `env_var('NAME', default)`: an environment variable. Changing it does not make "
        "an up-to-date model run again."
    ),
}

BUILTIN_TEST_DOCS: dict[str, tuple[str, str]] = {
    "not_null": ("not_null", "the value is NULL"),
    "unique": ("unique", "the value occurs more than once (NULLs are not counted)"),
    "positive": ("positive", "the value is 0 or less"),
    "non_negative": ("non_negative", "the value is less than 0"),
    "accepted_values": (
        "{accepted_values: {values: [card, cash]}}",
        "the value is not in `values` (NULL passes: add `not_null`)",
    ),
    "relationships": (
        "{relationships: {to: silver.stores, field: store_id}}",
        "the value is not NULL and not found in column `field` (default: the same name) of the table `to`",
    ),
    "range": ("{range: {min: 0, max: 100}}", "the value is below `min` or above `max`; either may be left out"),
    "expression": (
        "{expression: {expression: 'total_amount >= 0'}}",
        "the SQL expression over the row is not true (false or NULL)",
    ),
}


def _jinja_names() -> list[str]:
    """The names ``Compiler.compile`` passes to a model's template (read from its source)."""
    from ratatouille.models import compiler

    tree = ast.parse(textwrap.dedent(inspect.getsource(compiler.Compiler.compile)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "render":
            names = [k.arg for k in node.keywords if k.arg]
            if "ref" in names:
                return names
    raise ReferenceError(f"cannot find the template.render(...) call in ratatouille.models.compiler; update {COMMAND}")


def _checked(table: Mapping[str, Any], names: list[str] | tuple[str, ...], what: str) -> None:
    missing, stale = sorted(set(names) - set(table)), sorted(set(table) - set(names))
    if missing:
        raise ReferenceError(f"{what} {', '.join(missing)} has no description in {COMMAND}; add one")
    if stale:
        raise ReferenceError(f"{COMMAND} describes {what} that no longer exist: {', '.join(stale)}; remove them")


def render_models() -> str:
    """The model reference page, generated from ``ModelConfig``."""
    from ratatouille.models import config

    _checked(BUILTIN_TEST_DOCS, config.BUILTIN_TESTS, "built-in test(s)")
    jinja = _jinja_names()
    _checked(JINJA, jinja, "Jinja name(s)")
    duration = ", ".join(f"`{n}`" for n in config.Duration.model_fields)
    page = KeyPage(
        MODEL_KEYS,
        "a model",
        leaves={
            config.ColumnTest: "[built-in tests](#built-in-tests)",
            config.Duration: f"duration: a mapping of {duration} (numbers), e.g. `{{hours: 6}}`",
        },
        defaults=MODEL_DEFAULTS,
    )
    keys = page.table(config.ModelConfig)
    page.check_stale()
    out = [
        "# Model reference",
        "",
        _generated_note("`ModelConfig` in `src/ratatouille/models/config.py`"),
        "",
        "A SQL model is a file `workspaces/<workspace>/pipelines/<layer>/<name>.sql` holding one `SELECT`. "
        "It is configured by header comments at the top of the file, one `-- @key: value` per line (the value "
        "is read as YAML), and/or by a sidecar file `<name>.yaml` beside it. Both take the keys below; a key "
        "set in both places must have the same value there. Unknown keys are errors, and every problem of a "
        "project is reported at once, with file and line. A Python pipeline takes the same keys as keyword "
        "arguments of `@pipeline(...)`. [How to write a model](../how-to/write-a-model.md) shows them at work.",
        "",
        "```sql",
        "-- @materialized: incremental",
        "-- @unique_key: txn_id",
        "-- @incremental: {strategy: merge, watermark: _ingested_at}",
        "SELECT ... FROM {{ source('sales') }}",
        "```",
        "",
        "## Keys",
        "",
        keys,
        *page.render_sections(),
        "",
        '<a id="built-in-tests"></a>',
        "",
        "## Built-in tests",
        "",
        "A column's `tests:` lists built-in tests, by name or as a one-key mapping with arguments. Each one "
        "selects the rows that fail it; a failure reports how many, with a sample. Every test also takes "
        "`severity: warn` among its arguments (`{not_null: {severity: warn}}`); the default is `error`.",
        "",
        _table(
            ["test", "written as", "fails the rows where"],
            [
                [f"`{name}`", f"`{BUILTIN_TEST_DOCS[name][0]}`", BUILTIN_TEST_DOCS[name][1]]
                for name in config.BUILTIN_TESTS
            ],
        ),
        "",
        "## In the SQL: Jinja",
        "",
        "A model's SQL is a Jinja template. Besides the functions below, every macro of the workspace's "
        "`macros/*.sql` files can be called by name.",
        "",
        _table(["name", "what it gives"], [[f"`{name}`", JINJA[name]] for name in jinja]),
    ]
    return "\n".join(out).rstrip() + "\n"


# --- sources -------------------------------------------------------------------------------

# Keys are ``<config class>.<path>``; ``SourceConfig`` holds the keys every source has.
SOURCE_KEYS: dict[str, str] = {
    "SourceConfig.name": (
        "The source's name: it lands in `bronze.<name>`, and models read it with `source('<name>')`."
    ),
    "SourceConfig.type": "The connector that reads it; see the sections below.",
    "SourceConfig.description": "What the source holds, for people reading the file. Not shown by the CLI yet.",
    "SourceConfig.owner": "Who to ask about the source. Not shown by the CLI yet.",
    "SourceConfig.tags": "Labels to select the source by: `rat run --select tag:pos`.",
    "SourceConfig.schedule": (
        "A cron expression (UTC): `rat serve` runs the source then. A `files` source needs none: `rat serve` "
        "ingests new files as they land (every 30 s; `rat serve --sensor-interval`)."
    ),
    "SourceConfig.on_error": (
        "For `files`: `quarantine` sets rows that cannot be read aside in `quarantine.bronze_<name>`, with the "
        "file, line, raw text and reason, and loads the rest; `fail` fails the source at the first bad row, and "
        "nothing of it is published. Database and REST values arrive typed, so they have no bad rows."
    ),
    "SourceConfig.schema_drift": (
        "When the data has a new column or a wider type than the bronze table: `evolve` adds or widens it in "
        "the same commit, `fail` fails the source. A change Iceberg cannot make (a string into a number column) "
        "fails either way."
    ),
    "FilesSourceConfig.type": "`files`.",
    "FilesSourceConfig.options": (
        "Options of the format, in the sections below; `tsv` takes those of `csv`, with a tab as the delimiter."
    ),
    "DatabaseSourceConfig.type": "`postgres` (PostgreSQL) or `mysql` (MySQL and MariaDB).",
    "DatabaseSourceConfig.connection": (
        "The database URL: `postgresql://user:password@host:5432/db` or `mysql://user:password@host:3306/db` "
        "(`postgres://`, `mariadb://` and `+driver` forms work; percent-encode special characters of the "
        "password). Keep the password out of the file: `connection: ${env:SHOP_DB_URL}`."
    ),
    "DatabaseSourceConfig.table": "The table to read, `table` or `schema.table`. Give `table` or `query`, not both.",
    "DatabaseSourceConfig.query": "A single `SELECT` to read instead of a table.",
    "DatabaseSourceConfig.incremental": (
        "Read only new and changed rows, by a cursor column. Without it, every read replaces the bronze table "
        "with the whole table or query."
    ),
    "DatabaseSourceConfig.incremental.cursor": (
        "A column that grows when a row is added or changed (`updated_at`, an id). The first read takes every "
        "row; later reads only rows past the largest value read so far, which is saved once the run has published."
    ),
    "DatabaseSourceConfig.incremental.primary_key": (
        "The key column(s). With a key, rows are merged by it and read with `cursor >= last`, so rows "
        "committed late with the last value are not missed. Without one, rows are appended, read with "
        "`cursor > last`."
    ),
    "DatabaseSourceConfig.batch_rows": "Rows fetched per batch (default 100,000); lower it for very wide rows.",
    "RestSourceConfig.type": "`rest`.",
    "RestSourceConfig.base_url": "The API's base URL; each resource's `path` is appended to it.",
    "RestSourceConfig.auth": "How requests authenticate; none when left out.",
    "RestSourceConfig.auth[bearer].token": "The token. Keep it out of the file: `token: ${env:SHOP_TOKEN}`.",
    "RestSourceConfig.auth[api_key].name": "The header or query parameter that carries the key.",
    "RestSourceConfig.auth[api_key].location": "Send the key in a `header` or in the `query` string.",
    "RestSourceConfig.auth[api_key].key": "The key, e.g. `${env:SHOP_API_KEY}`.",
    "RestSourceConfig.auth[basic].username": "The user name.",
    "RestSourceConfig.auth[basic].password": "The password, e.g. `${env:SHOP_PASSWORD}`.",
    "RestSourceConfig.auth[oauth2].token_url": "Where to get the access token.",
    "RestSourceConfig.auth[oauth2].client_id": "The client id.",
    "RestSourceConfig.auth[oauth2].client_secret": "The client secret, e.g. `${env:SHOP_CLIENT_SECRET}`.",
    "RestSourceConfig.auth[oauth2].scopes": "Scopes to ask for: a list, or one space-separated string.",
    "RestSourceConfig.headers": "Headers sent with every request.",
    "RestSourceConfig.paginator": (
        "How to get the next page, for every resource that sets none; `auto` when left out. A name alone works "
        "when the defaults suit: `paginator: link_header`."
    ),
    "RestSourceConfig.paginator[page_number].page_param": "The query parameter holding the page number.",
    "RestSourceConfig.paginator[page_number].base_page": "The number of the first page.",
    "RestSourceConfig.paginator[page_number].total_path": "Where the body holds the number of pages (`meta.total_pages`).",
    "RestSourceConfig.paginator[page_number].maximum_page": "Stop after this page.",
    "RestSourceConfig.paginator[page_number].has_more_path": "Where the body holds a flag that is false on the last page.",
    "RestSourceConfig.paginator[offset].limit": "Items per page, sent as `limit_param`.",
    "RestSourceConfig.paginator[offset].offset_param": "The query parameter holding the offset.",
    "RestSourceConfig.paginator[offset].limit_param": "The query parameter holding the limit.",
    "RestSourceConfig.paginator[offset].total_path": "Where the body holds the total number of items.",
    "RestSourceConfig.paginator[offset].maximum_offset": "Stop at this offset.",
    "RestSourceConfig.paginator[offset].has_more_path": "Where the body holds a flag that is false on the last page.",
    "RestSourceConfig.paginator[cursor].cursor_path": "Where the body holds the next page's cursor.",
    "RestSourceConfig.paginator[cursor].cursor_param": "The query parameter the cursor is sent as.",
    "RestSourceConfig.paginator[cursor].has_more_path": "Where the body holds a flag that is false on the last page.",
    "RestSourceConfig.paginator[link_header].rel": "The `rel` of the link to follow.",
    "RestSourceConfig.paginator[json_link].next_url_path": "Where the body holds the next page's URL.",
    "RestSourceConfig.retries": "Retries of a request that failed with 429, a 5xx status, a timeout or a dropped connection.",
    "RestSourceConfig.retries.max_attempts": "Attempts in all, the first included.",
    "RestSourceConfig.retries.backoff_seconds": "The first wait; it doubles after each failure.",
    "RestSourceConfig.retries.max_backoff_seconds": "The longest wait, also the cap on a `Retry-After` header.",
    "RestSourceConfig.timeout_seconds": "How long to wait for a response.",
    "RestSourceConfig.resources": "The endpoints to read; each lands in `bronze.<source>_<resource>`.",
    "RestSourceConfig.resources[].name": "The resource's name, part of its table's name: lower case, digits, single `_`.",
    "RestSourceConfig.resources[].path": "The path after `base_url`, e.g. `/orders`.",
    "RestSourceConfig.resources[].method": "`GET`, or `POST` to send `body`.",
    "RestSourceConfig.resources[].params": "Query parameters sent with every request of the resource.",
    "RestSourceConfig.resources[].body": "A JSON body, with `method: POST`.",
    "RestSourceConfig.resources[].headers": "Headers for this resource, added to the source's.",
    "RestSourceConfig.resources[].data_path": "Where the records are in the body (`data`, `results.items`); the body itself when left out.",
    "RestSourceConfig.resources[].primary_key": (
        "The records' key column(s): rows are merged by it, so a record read again replaces its row. Without "
        "one, rows are appended."
    ),
    "RestSourceConfig.resources[].incremental": "Read only what changed since the last read.",
    "RestSourceConfig.resources[].incremental.cursor": (
        "The record field that grows when a record changes (`updated_at`, or a dotted path `meta.updated`). "
        "The largest value read is saved once the run has published."
    ),
    "RestSourceConfig.resources[].incremental.param": "The query parameter the saved value is sent as (`updated_since`).",
    "RestSourceConfig.resources[].incremental.initial": "The value sent on the first read; nothing when left out.",
    "RestSourceConfig.resources[].paginator": "This resource's paginator, instead of the source's.",
    "RestSourceConfig.resources[].nested": (
        "Lists of objects in a record: `unnest` writes them to child tables `bronze.<source>_<resource>__<field>` "
        "(with the parent's key and `_index`); `keep` keeps them as JSON text."
    ),
}

SOURCE_DEFAULTS: dict[str, str] = {
    "SourceConfig.name": "the file's name without `.yaml`",
    "FilesSourceConfig.format": "from the extension of `path`",
    "FilesSourceConfig.options": "the format's defaults",
}


def _connector_groups() -> tuple[list[tuple[list[str], type[BaseModel]]], list[tuple[str, str]]]:
    """Each connector config class with its ``type`` names, and the connectors that do not import."""
    from ratatouille.connectors.registry import CONNECTORS, connector_class

    groups: dict[type[BaseModel], list[str]] = {}
    broken: list[tuple[str, str]] = []
    for kind in CONNECTORS:
        try:
            config_class = connector_class(kind).config_class
        except Exception as exc:  # a connector being built may not import: leave it out, say so
            broken.append((kind, " ".join(str(exc).split())))
            continue
        groups.setdefault(config_class, []).append(kind)
    return [(kinds, cls) for cls, kinds in groups.items()], broken


def render_sources() -> str:
    """The source reference page, generated from each connector's config class."""
    from ratatouille.connectors.base import SourceConfig

    groups, broken = _connector_groups()
    common_page = KeyPage(SOURCE_KEYS, "sources/*.yaml", defaults=SOURCE_DEFAULTS)
    common = common_page.table(SourceConfig, key="SourceConfig.")
    common_page.check_stale("SourceConfig.")
    out = [
        "# Source reference",
        "",
        _generated_note(
            "the config classes of the connectors in `src/ratatouille/connectors/` (`registry.CONNECTORS`)"
        ),
        "",
        "A source is a file `workspaces/<workspace>/sources/<name>.yaml`. It lands in the table `bronze.<name>` "
        "(a REST source in `bronze.<name>_<resource>`), with `_ingested_at` added, and `_source_file` (files) or "
        "`_source` (databases, REST). `rat ingest` runs sources alone; `rat run` runs them as the first nodes of "
        "the DAG, before the models that read them. [How to add a source](../how-to/add-a-source.md) shows "
        "each kind at work.",
        "",
        "In any value, `${env:NAME}` is replaced by an environment variable (`${env:NAME:-default}` has a "
        'fallback). Inside a `{...}` flow mapping, quote it: `auth: {type: bearer, token: "${env:TOKEN}"}`. '
        "Quote type names with commas too, or use block style: in `{price: decimal(10,2)}` the comma splits the "
        "value in two.",
        "",
        _table(
            ["type", "what it is"],
            [
                [", ".join(f"[`{k}`](#{_slug(kinds[0])})" for k in kinds), _intro(cls).splitlines()[0]]
                for kinds, cls in groups
            ],
        ),
        "",
        "## Keys every source has",
        "",
        common,
    ]
    for kinds, cls in groups:
        name = cls.__name__
        page = KeyPage(
            SOURCE_KEYS, f"`type: {kinds[0]}` sources", anchor_prefix=f"{_slug(kinds[0])}-", defaults=SOURCE_DEFAULTS
        )
        own = tuple(n for n in SourceConfig.model_fields if n != "type")
        table = page.table(cls, key=f"{name}.", skip=own)
        page.check_stale(f"{name}.")
        heading = ", ".join(f"`type: {k}`" for k in kinds)
        out += ["", f'<a id="{_slug(kinds[0])}"></a>', "", f"## {heading}", "", _intro(cls), "", table]
        out += page.render_sections()
    if broken:
        out += ["", "## Not documented here", ""]
        out += [f"- `{kind}`: the connector does not import ({reason})." for kind, reason in broken]
    return "\n".join(out).rstrip() + "\n"


# --- entry points --------------------------------------------------------------------------


def generate() -> dict[Path, str]:
    """Every generated page, by path.

    Raises:
        ReferenceError: a key has no description, or a description names a key that is gone.
    """
    return {
        CLI_PAGE: render_cli(),
        CONFIG_PAGE: render_configuration(),
        MODELS_PAGE: render_models(),
        SOURCES_PAGE: render_sources(),
    }


def stale_pages(pages: Mapping[Path, str] | None = None) -> list[Path]:
    """The pages whose file on disk differs from what the code generates."""
    pages = generate() if pages is None else pages
    return [path for path, text in pages.items() if not path.is_file() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    """Write the pages, or with ``--check`` report stale ones; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a page on disk is stale; write nothing")
    args = parser.parse_args(argv)
    try:
        pages = generate()
    except ReferenceError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    stale = stale_pages(pages)
    if args.check:
        for path in stale:
            sys.stderr.write(f"{path.relative_to(ROOT)} is stale; run `{COMMAND}`\n")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pages[path], encoding="utf-8")
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
