"""Generate the reference pages from the code, so they cannot drift from it.

- ``docs/reference/cli.md`` from the click command tree (``ratatouille.cli.main.cli``).
- ``docs/reference/configuration.md`` from the pydantic models in ``ratatouille.config``.

Usage::

    python scripts/gen_reference.py            # rewrite the pages
    python scripts/gen_reference.py --check    # exit 1 if a page on disk differs from the code

Key descriptions come from ``Field(description=...)`` when the model has one, else from the
hand-written ``PROJECT_KEYS`` / ``WORKSPACE_KEYS`` tables below. Both tables are checked: a key
without a description, or a description of a key that no longer exists, stops the generator.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import click
import yaml
from annotated_types import Ge, Le
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
CLI_PAGE = REFERENCE / "cli.md"
CONFIG_PAGE = REFERENCE / "configuration.md"
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
        "For `sql`, a SQLAlchemy URL: `sqlite:///.rat/catalog.db` (relative to the project) or "
        "`postgresql://user:${env:PGPASSWORD}@host/db` (driven by psycopg 3). For `rest`, the catalog's URL."
    ),
    "catalog.name": "Catalog name; several projects can share one database under different names.",
    "catalog.properties": "Extra PyIceberg catalog properties (e.g. `token` or `credential` for a REST catalog).",
    "state.uri": (
        "SQLAlchemy URL of the state store, which records pipeline runs: `sqlite:///...` (relative to the "
        "project) or `postgresql://...`; it may share the catalog's database."
    ),
    "server.host": "Interface to bind. Reserved until `rat serve` ships.",
    "server.port": "TCP port. Reserved until `rat serve` ships.",
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


def type_text(annotation: Any) -> str:
    """A plain-words name for a field's type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}" if args else "mapping"
    if _is_model(annotation):
        return "section"
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


def _constraints(field: FieldInfo) -> str:
    low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
    if low is not None and high is not None:
        return f", {low} to {high}"
    if low is not None:
        return f", at least {low}"
    if high is not None:
        return f", at most {high}"
    return ""


def _yaml_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
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
            summary = field.description or _help(annotation.__doc__).split("\n\n")[0]  # type: ignore[union-attr]
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


# --- entry points --------------------------------------------------------------------------


def generate() -> dict[Path, str]:
    """Every generated page, by path.

    Raises:
        ReferenceError: a key has no description, or a description names a key that is gone.
    """
    return {CLI_PAGE: render_cli(), CONFIG_PAGE: render_configuration()}


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
