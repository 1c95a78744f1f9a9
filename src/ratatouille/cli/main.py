"""``rat``: the command line. Each command parses, calls the workspace, renders.

Only click is imported at start-up; everything heavy is imported inside the commands, so
``rat --help`` stays instant. Errors are shown in one place (``RatGroup.invoke``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ratatouille.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Globals:
    """Options accepted before or after any subcommand."""

    project: Path | None = None
    workspace: str | None = None
    json: bool = False
    debug: bool = False

    def open(self) -> Workspace:
        """Open the workspace the options point at."""
        from ratatouille.workspace import Workspace

        return Workspace.open(self.project, self.workspace)


def _globals(ctx: click.Context) -> Globals:
    root = ctx.find_root()
    if not isinstance(root.obj, Globals):
        root.obj = Globals()
    return root.obj


def _set(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            setattr(_globals(ctx), field, value)

    return callback


def global_options(func: F) -> F:
    """Add --project, --workspace, --json and --debug to a command (they also work on the group)."""
    options = [
        click.option(
            "--project",
            type=click.Path(file_okay=False, path_type=Path),
            expose_value=False,
            is_eager=True,
            callback=_set("project"),
            help="Project directory (default: nearest ratatouille.yaml upwards).",
        ),
        click.option(
            "--workspace", expose_value=False, is_eager=True, callback=_set("workspace"), help="Workspace to use."
        ),
        click.option(
            "--json",
            "json_",
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_set("json"),
            help="Machine-readable JSON output.",
        ),
        click.option(
            "--debug",
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_set("debug"),
            help="Show tracebacks.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class RatGroup(click.Group):
    """The one place that decides how errors look on the command line."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a Ratatouille error becomes one red line and exit code 1."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.secho("Interrupted.", fg="yellow", err=True)
            sys.exit(130)
        except Exception as exc:
            from ratatouille.errors import RatatouilleError

            if _globals(ctx).debug:
                import traceback

                traceback.print_exc()
            if isinstance(exc, RatatouilleError):
                message = str(exc)
            else:
                message = (
                    f"unexpected {type(exc).__name__}: {exc}. This is a bug in Ratatouille; "
                    "rerun with --debug and report the traceback"
                )
            if _globals(ctx).json:
                import json

                click.echo(json.dumps({"error": {"type": type(exc).__name__, "message": message}}), err=True)
            else:
                click.secho(f"Error: {message}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=RatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@global_options
@click.version_option(package_name="ratatouille", prog_name="rat")
def cli() -> None:
    """Ratatouille: a self-hosted data platform in one install.

    Ingest, keep an Iceberg lakehouse, transform with SQL, query with DuckDB.
    """


@cli.command()
@global_options
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--empty", is_flag=True, help="Only the skeleton, without the POS example.")
@click.option(
    "--rows", default=20_000, show_default=True, help="Sample sales rows for the POS example (not with --empty)."
)
@click.option("--force", is_flag=True, help="Write into a non-empty directory.")
@click.pass_context
def init(ctx: click.Context, directory: Path, empty: bool, rows: int, force: bool) -> None:
    """Create a project in DIRECTORY (the POS example unless --empty)."""
    from ratatouille.scaffold import create_project

    created = create_project(directory, example=not empty, rows=rows, force=force)
    from ratatouille.cli import render

    render.init_summary(created, as_json=_globals(ctx).json)


@cli.command()
@global_options
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default="rat-demo")
@click.option("--rows", default=200_000, show_default=True, help="Sample sales rows.")
@click.option("--force", is_flag=True, help="Write into a non-empty directory.")
@click.pass_context
def demo(ctx: click.Context, directory: Path, rows: int, force: bool) -> None:
    """The whole tour in one go: a POS project, sample data, tables, a query."""
    from ratatouille.cli import render
    from ratatouille.scaffold import run_demo

    render.demo_summary(run_demo(directory, rows=rows, force=force), as_json=_globals(ctx).json)


@cli.group()
@global_options
def sample() -> None:
    """Write sample data into the landing zone."""


@sample.command("pos")
@global_options
@click.option("--rows", default=100_000, show_default=True, help="Sales rows to write.")
@click.option("--days", default=30, show_default=True, help="Days of sales.")
@click.option("--seed", default=42, show_default=True, help="Random seed (same seed, same files).")
@click.pass_context
def sample_pos(ctx: click.Context, rows: int, days: int, seed: int) -> None:
    """Realistic point-of-sale data: stores, products, one sales CSV per day and store group."""
    from ratatouille.cli import render
    from ratatouille.scaffold import write_sample

    g = _globals(ctx)
    summary = write_sample(g.project, rows=rows, days=days, seed=seed)
    render.sample_summary(summary, as_json=g.json)


@cli.command()
@global_options
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default=None,
    help="Output format (default: table on a terminal, csv when piped).",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the result to FILE.")
@click.option("--as-of", help="Read the tables as of a snapshot id or a timestamp (UTC).")
@click.option("--limit", type=int, default=None, help="Show at most N rows (table format: 100 by default).")
@click.pass_context
def query(
    ctx: click.Context, sql: str, fmt: str | None, output: Path | None, as_of: str | None, limit: int | None
) -> None:
    """Run SQL on the lakehouse: tables are layer.name (or workspace.layer.name)."""
    from ratatouille.cli import render
    from ratatouille.storage.reader import parse_as_of

    g = _globals(ctx)
    version = parse_as_of(as_of) if as_of else None
    workspace = g.open()
    relation = workspace.sql(sql, version)
    if fmt is None:
        fmt = "json" if g.json else ("table" if output is None and sys.stdout.isatty() else "csv")
        if output is not None:
            fmt = {".parquet": "parquet", ".json": "json"}.get(output.suffix.lower(), "csv")
    render.query_result(relation, fmt=fmt, output=output, limit=limit)


@cli.command()
@global_options
@click.option("--all", "all_workspaces", is_flag=True, help="Tables of every workspace.")
@click.pass_context
def tables(ctx: click.Context, all_workspaces: bool) -> None:
    """List the tables of the workspace."""
    from ratatouille.cli import render

    g = _globals(ctx)
    workspace = g.open()
    render.tables(workspace, workspace.tables(all_workspaces=all_workspaces), as_json=g.json)


@cli.command()
@global_options
@click.argument("table")
@click.pass_context
def describe(ctx: click.Context, table: str) -> None:
    """Schema, partitioning and statistics of TABLE."""
    from ratatouille.cli import render

    g = _globals(ctx)
    render.describe(g.open().describe(table), as_json=g.json)


@cli.command()
@global_options
@click.argument("table")
@click.pass_context
def history(ctx: click.Context, table: str) -> None:
    """Snapshots of TABLE, newest first (use an id with --as-of)."""
    from ratatouille.cli import render

    g = _globals(ctx)
    render.history(table, g.open().history(table), as_json=g.json)


def _vars(pairs: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"`{pair}` is not NAME=VALUE", param_hint="--var")
        values[name] = yaml.safe_load(raw)
    return values


@cli.command()
@global_options
@click.option("--select", "-s", "select", multiple=True, help="name, layer:silver, tag:x, +name, name+ (repeatable).")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
@click.option("--var", "variables", multiple=True, help="NAME=VALUE for var() (repeatable).")
@click.pass_context
def run(ctx: click.Context, select: tuple[str, ...], full_refresh: bool, variables: tuple[str, ...]) -> None:
    """Run pipelines with write-audit-publish (and the sources they read)."""
    from ratatouille.cli import render

    g = _globals(ctx)
    workspace = g.open()
    progress = render.RunProgress(enabled=not g.json)
    result = workspace.run(
        list(select), full_refresh=full_refresh, variables=_vars(variables), progress=progress, trigger="cli"
    )
    render.run_summary(result, as_json=g.json)
    if not result.ok:
        sys.exit(1)


@cli.command()
@global_options
@click.argument("sources", nargs=-1)
@click.pass_context
def ingest(ctx: click.Context, sources: tuple[str, ...]) -> None:
    """Run declarative sources (all, or the ones named) into bronze."""
    from ratatouille.cli import render

    g = _globals(ctx)
    progress = render.RunProgress(enabled=not g.json)
    result = g.open().run(list(sources), sources_only=True, progress=progress, trigger="cli")
    render.run_summary(result, as_json=g.json)
    if not result.ok:
        sys.exit(1)


@cli.command("test")
@global_options
@click.option("--select", "-s", "select", multiple=True, help="name, layer:silver, tag:x, +name, name+ (repeatable).")
@click.option("--unit", is_flag=True, help="Run unit tests (mock rows in, expected rows out) instead of data tests.")
@click.option("--var", "variables", multiple=True, help="NAME=VALUE for var() (repeatable).")
@click.pass_context
def test_(ctx: click.Context, select: tuple[str, ...], unit: bool, variables: tuple[str, ...]) -> None:
    """Run data tests on the published tables (or --unit tests); exit 1 on a failure."""
    from ratatouille.cli import render

    g = _globals(ctx)
    results = g.open().test(list(select), unit=unit, variables=_vars(variables))
    failed = render.test_results(results, unit=unit, as_json=g.json)
    if failed:
        sys.exit(1)


@cli.command()
@global_options
@click.pass_context
def freshness(ctx: click.Context) -> None:
    """Check freshness SLAs from the last publish time; exit 1 on an error-level breach."""
    from ratatouille.cli import render

    g = _globals(ctx)
    results = g.open().freshness()
    if render.freshness(results, as_json=g.json):
        sys.exit(1)


@cli.command("compile")
@global_options
@click.argument("model")
@click.option("--incremental", is_flag=True, help="Compile as an incremental run would (is_incremental() true).")
@click.option("--var", "variables", multiple=True, help="NAME=VALUE for var() (repeatable).")
@click.pass_context
def compile_(ctx: click.Context, model: str, incremental: bool, variables: tuple[str, ...]) -> None:
    """Print the SQL a model runs."""
    sql = _globals(ctx).open().compile(model, incremental=incremental, variables=_vars(variables))
    click.echo(sql)


@cli.command()
@global_options
@click.pass_context
def dag(ctx: click.Context) -> None:
    """Show sources and models as a tree, in run order."""
    from ratatouille.cli import render

    g = _globals(ctx)
    render.dag(g.open().graph(), as_json=g.json)


@cli.command()
@global_options
@click.option("--limit", default=20, show_default=True, help="How many runs.")
@click.pass_context
def runs(ctx: click.Context, limit: int) -> None:
    """Recent runs, newest first."""
    from ratatouille.cli import render

    g = _globals(ctx)
    render.runs(g.open().runs(limit), as_json=g.json)


@cli.command()
@global_options
@click.argument("run_id")
@click.pass_context
def logs(ctx: click.Context, run_id: str) -> None:
    """A run's nodes, tests and log lines (a unique prefix of the id works)."""
    from ratatouille.cli import render

    g = _globals(ctx)
    render.run_record(g.open().run_record(run_id), as_json=g.json)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="rat")


if __name__ == "__main__":
    main()
