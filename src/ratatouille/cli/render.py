"""How the CLI shows things: rich tables on a terminal, JSON with ``--json``, streamed files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from ratatouille.errors import RatatouilleError

if TYPE_CHECKING:
    import duckdb
    from rich.console import Console

    from ratatouille.runs.graph import Graph
    from ratatouille.runs.runner import NodeResult, RunResult
    from ratatouille.sample.pos import SampleSummary
    from ratatouille.scaffold import Created, DemoResult
    from ratatouille.storage.catalog import TableRef
    from ratatouille.workspace import Workspace

BATCH_ROWS = 65_536
DEFAULT_TABLE_ROWS = 100


def console() -> Console:
    """A rich console on stdout."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def emit_json(data: Any) -> None:
    """Print JSON (dates and decimals as strings)."""
    click.echo(json.dumps(data, indent=2, default=str))


def _table(title: str | None, columns: list[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _cell(value: Any) -> str:
    from rich.markup import escape

    return "NULL" if value is None else escape(str(value))


# -- query --------------------------------------------------------------------------------


def query_result(relation: duckdb.DuckDBPyRelation | None, fmt: str, output: Path | None, limit: int | None) -> None:
    """Write a query's result in ``fmt`` to stdout or ``output``, streaming batches.

    Raises:
        QueryError: the query fails while running.
    """
    import duckdb

    from ratatouille.errors import QueryError

    if relation is None:  # a statement without a result (SET, ...)
        return
    if limit is not None:
        relation = relation.limit(limit)
    try:
        if fmt == "table" and output is None:
            _print_table(relation, limit or DEFAULT_TABLE_ROWS)
            return
        reader = relation.to_arrow_reader(BATCH_ROWS)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            with output.open("wb") as sink:
                _write(reader, fmt, sink)
            click.secho(f"Wrote {output}", fg="green", err=True)
        else:
            if fmt == "parquet" and sys.stdout.isatty():
                raise RatatouilleError("parquet is binary; pass --output FILE or pipe the output")
            _write(reader, fmt, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None


def _write(reader: Any, fmt: str, sink: BinaryIO) -> None:
    import pyarrow as pa

    if fmt in ("csv", "table"):
        import pyarrow.csv as pacsv

        with pacsv.CSVWriter(sink, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
    elif fmt == "json":
        sink.write(b"[")
        first = True
        for batch in reader:
            for row in pa.Table.from_batches([batch]).to_pylist():
                sink.write((b"\n  " if first else b",\n  ") + json.dumps(row, default=str).encode())
                first = False
        sink.write(b"\n]\n" if not first else b"]\n")
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(sink, reader.schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch)
    else:
        raise RatatouilleError(f"unknown format `{fmt}`; use table, csv, json or parquet")


def _print_table(relation: duckdb.DuckDBPyRelation, limit: int) -> None:
    rows = relation.limit(limit + 1).fetchall()
    table = _table(None, list(relation.columns))
    for row in rows[:limit]:
        table.add_row(*(_cell(v) for v in row))
    out = console()
    out.print(table)
    if len(rows) > limit:
        out.print(f"[dim]First {limit} rows shown; use --limit N, or --format csv for all of them.[/dim]")
    else:
        out.print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/dim]")


# -- catalog ------------------------------------------------------------------------------


def tables(workspace: Workspace, refs: list[TableRef], as_json: bool) -> None:
    """``rat tables``."""
    if as_json:
        emit_json([{"table": r.qualified, "workspace": r.workspace, "layer": r.layer, "name": r.name} for r in refs])
        return
    if not refs:
        click.echo("No tables yet. Run `rat run` (or `rat ingest`) to create some.")
        return
    table = _table(f"Tables in workspace `{workspace.name}`", ["table", "layer", "workspace"])
    for ref in refs:
        table.add_row(ref.short if ref.workspace == workspace.name else ref.qualified, ref.layer, ref.workspace)
    console().print(table)


def describe(info: dict[str, Any], as_json: bool) -> None:
    """``rat describe``."""
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(f"[bold]{info['table']}[/bold]  {info['location']}")
    size = _size(info["bytes"])
    out.print(
        f"{info['rows']:,} rows in {info['files']} file{'s' if info['files'] != 1 else ''} ({size}); "
        f"snapshot {info['snapshot_id']} "
        f"at {info['updated_at']}"
    )
    out.print("Partitioned by: " + (", ".join(info["partitioning"]) or "nothing"))
    if info["branches"]:
        out.print("Branches: " + ", ".join(info["branches"]))
    table = _table(None, ["#", "column", "type", "description"])
    for column in info["columns"]:
        table.add_row(str(column["id"]), column["name"], column["type"], column["doc"] or "")
    out.print(table)


def history(name: str, snapshots: list[dict[str, Any]], as_json: bool) -> None:
    """``rat history``."""
    if as_json:
        emit_json(snapshots)
        return
    table = _table(f"History of {name}", ["snapshot", "committed at (UTC)", "operation", "+rows", "-rows", "rows"])
    for snap in snapshots:
        marker = " (current)" if snap["current"] else "" if snap["on_main"] else " (branch)"
        table.add_row(
            f"{snap['snapshot_id']}{marker}",
            snap["committed_at"][:19].replace("T", " "),
            snap["operation"],
            f"{snap['added_rows']:,}",
            f"{snap['deleted_rows']:,}",
            f"{snap['total_rows']:,}",
        )
    console().print(table)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


# -- init / sample ------------------------------------------------------------------------


def init_summary(created: Created, as_json: bool) -> None:
    """``rat init``."""
    if as_json:
        emit_json({"project": str(created.root), "files": [str(p) for p in created.files]})
        return
    click.secho(f"Created project in {created.root} ({len(created.files)} files).", fg="green")
    click.echo(f"Next: cd {created.root} && rat tables")


def sample_summary(summary: SampleSummary, as_json: bool) -> None:
    """``rat sample pos``."""
    if as_json:
        emit_json({"files": [str(p) for p in summary.files], "rows": summary.rows, "days": summary.days})
        return
    click.secho(
        f"Wrote {summary.rows:,} sales rows over {summary.days} days in {len(summary.files)} files.", fg="green"
    )


def demo_summary(result: DemoResult, as_json: bool) -> None:
    """``rat demo``."""
    if as_json:
        emit_json({"project": str(result.root), "run_id": result.run_id, "ok": result.ok, "preview": result.preview})
        return
    out = console()
    out.print(f"[green]Created the POS example in {result.root}[/green] and ran its pipelines:")
    for key, status, rows in result.nodes:
        out.print(f"  {_MARK.get(status, '?')} {key}: {rows:,} rows")
    if not result.ok:
        out.print(f"[red]The run failed; see `rat logs {result.run_id}` in {result.root}[/red]")
        return
    out.print(f"\n[bold]{result.preview_sql}[/bold]")
    columns = list(result.preview[0]) if result.preview else []
    table = _table(None, columns)
    for row in result.preview:
        table.add_row(*(_cell(v) for v in row.values()))
    out.print(table)
    out.print(
        f"Next:\n  cd {result.root}\n  rat dag                          # sources and models\n"
        '  rat tables\n  rat query "select * from gold.product_performance order by revenue_rank limit 10"\n'
        "  rat runs && rat logs <run>       # what ran, rows, tests\n"
        "  drop new CSVs into data/landing/sales/ and `rat run` again: only the new files are processed"
    )


# -- runs ---------------------------------------------------------------------------------

_MARK = {"success": "[green]✓[/green]", "failed": "[red]✗[/red]", "skipped": "[yellow]-[/yellow]"}


class RunProgress:
    """Live progress of a run: a line as each node starts and finishes and, on a terminal, a bar
    per running node that follows DuckDB's progress through the node's current statement.

    Use it as a context manager around the run, so the bars are removed when it ends.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.out = console() if enabled else None
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RunProgress:
        if self.out is not None and self.out.is_terminal:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=self.out,
                transient=True,
            )
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def __call__(self, event: str, result: NodeResult) -> None:
        """Called by the runner for each node event (``started``, ``progress``, then its status)."""
        if self.out is None:
            return
        if event == "progress":
            task = self._tasks.get(result.key)
            if task is not None and self._bars is not None and result.progress is not None:
                self._bars.update(task, completed=result.progress)
            return
        if event == "started":
            if self._bars is not None:
                self._tasks[result.key] = self._bars.add_task(f"{result.key} ({result.kind})", total=100)
            else:
                self.out.print(f"[dim]… {result.key} ({result.kind})[/dim]")
            return
        task = self._tasks.pop(result.key, None)
        if task is not None and self._bars is not None:
            self._bars.remove_task(task)
        mark = _MARK.get(result.status, "?")
        details = []
        if result.up_to_date:
            details.append("[dim]up to date[/dim]")
        elif result.status == "success":
            details.append(f"{result.rows_written:,} rows")
            if result.rows_deleted:
                details.append(f"{result.rows_deleted:,} replaced")
            if result.rows_quarantined:
                details.append(f"[yellow]{result.rows_quarantined:,} quarantined[/yellow]")
            tests = list(result.tests)
            if tests:
                warned = sum(t.status == "warn" for t in tests)
                details.append(f"{len(tests)} tests" + (f", [yellow]{warned} warn[/yellow]" if warned else ""))
            details.append(f"{result.duration_s:.2f}s")
        self.out.print(f"{mark} {result.key}  " + "  ".join(details))
        if result.error:
            self.out.print(f"  [red]{_escape(result.error)}[/red]")


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def run_summary(result: RunResult, as_json: bool) -> None:
    """The end of ``rat run`` / ``rat ingest``."""
    if as_json:
        from dataclasses import asdict

        emit_json(asdict(result))
        return
    out = console()
    counts: dict[str, int] = {}
    for node in result.nodes:
        counts[node.status] = counts.get(node.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to run"
    colour = "green" if result.ok else "red"
    out.print(f"[{colour}]Run {result.run_id}: {result.status}[/{colour}] ({summary}) in {result.duration_s:.1f}s")
    if result.published:
        out.print("Published: " + ", ".join(sorted(result.published)))
    if result.error:
        out.print(f"[red]{_escape(result.error)}[/red]")
    if not result.ok:
        out.print(f"Details: rat logs {result.run_id}")


def dag(graph: Graph, as_json: bool) -> None:
    """``rat dag``."""
    nodes = graph.dag.nodes
    if as_json:
        emit_json({k: {"kind": n.kind, "upstream": sorted(n.upstream)} for k, n in nodes.items()})
        return
    if not nodes:
        click.echo("No sources or models yet: add sources/*.yaml or pipelines/<layer>/*.sql.")
        return
    out = console()
    for depth, key in graph.dag.tree():
        node = nodes[key]
        ups = sorted(u for u in node.upstream if u in nodes)
        arrow = f"  [dim]<- {', '.join(ups)}[/dim]" if ups else ""
        out.print(f"{'    ' * depth}{key} [dim]({node.kind})[/dim]{arrow}")


def runs(rows: list[dict[str, Any]], as_json: bool) -> None:
    """``rat runs``."""
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No runs yet. Try `rat run`.")
        return
    table = _table("Runs", ["run", "status", "trigger", "selection", "started (UTC)", "seconds"])
    for row in rows:
        seconds = ""
        if row.get("finished_at") and row.get("started_at"):
            seconds = f"{(row['finished_at'] - row['started_at']).total_seconds():.1f}"
        table.add_row(
            row["id"],
            row["status"],
            row["trigger"],
            row.get("selection") or "*",
            str(row["started_at"])[:19],
            seconds,
        )
    console().print(table)


def run_record(record: dict[str, Any], as_json: bool) -> None:
    """``rat logs``."""
    if as_json:
        emit_json(record)
        return
    out = console()
    out.print(
        f"[bold]Run {record['id']}[/bold]: {record['status']} ({record['trigger']}, started {str(record['started_at'])[:19]})"
    )
    if record.get("error"):
        out.print(f"[red]{_escape(str(record['error']))}[/red]")
    table = _table(None, ["node", "status", "rows", "quarantined", "seconds", "snapshot", "error"])
    for node in record["nodes"]:
        table.add_row(
            node["node"],
            node["status"],
            f"{node['rows_written'] or 0:,}",
            f"{node['rows_quarantined'] or 0:,}",
            f"{node['duration_s'] or 0:.2f}",
            str(node["snapshot_id"] or ""),
            node["error"] or "",
        )
    out.print(table)
    if record["tests"]:
        tests = _table("Tests", ["node", "test", "severity", "status", "failures", "message"])
        for test in record["tests"]:
            tests.add_row(
                test["node"],
                test["test"],
                test["severity"],
                test["status"],
                str(test["failures"] or 0),
                test["message"] or "",
            )
        out.print(tests)
    for line in record["logs"]:
        out.print(
            f"[dim]{str(line['at'])[:19]}[/dim] {line['level']:5} {line['node'] or ''} {_escape(line['message'])}"
        )


def test_results(results: list[Any], unit: bool, as_json: bool) -> bool:
    """``rat test``; returns whether anything failed."""
    from dataclasses import asdict

    if unit:
        failed = any(not r.passed for r in results)
    else:
        failed = any(r.status == "fail" for r in results)
    if as_json:
        emit_json([asdict(r) for r in results])
        return failed
    out = console()
    if not results:
        out.print("No tests selected." if not unit else "No unit tests in the selected models.")
        return failed
    for r in results:
        if unit:
            mark = _MARK["success"] if r.passed else _MARK["failed"]
            out.print(f"{mark} {r.model}: {r.name}")
            if r.error:
                out.print(f"  [red]{_escape(r.error)}[/red]")
            for row in r.missing:
                out.print(f"  [red]expected, not returned:[/red] {row}")
            for row in r.unexpected:
                out.print(f"  [red]returned, not expected:[/red] {row}")
        else:
            mark = {"pass": _MARK["success"], "warn": "[yellow]![/yellow]", "fail": _MARK["failed"]}[r.status]
            out.print(f"{mark} {r.node}: {r.name}  [dim]{_escape(r.message)}[/dim]")
            for row in r.sample:
                out.print(f"    {row}")
    passed = sum((r.passed if unit else r.status != "fail") for r in results)
    colour = "red" if failed else "green"
    out.print(f"[{colour}]{passed} of {len(results)} passed[/{colour}]")
    return failed


def freshness(results: list[Any], as_json: bool) -> bool:
    """``rat freshness``; returns whether an error-level SLA is breached."""
    from dataclasses import asdict

    breached = any(r.status in ("error", "never") for r in results)
    if as_json:
        emit_json([asdict(r) for r in results])
        return breached
    if not results:
        click.echo("No model declares `freshness:`.")
        return False
    table = _table("Freshness", ["model", "status", "age (h)", "warn after (h)", "error after (h)", "last published"])
    colours = {"pass": "green", "warn": "yellow", "error": "red", "never": "red"}
    for r in results:
        table.add_row(
            r.model,
            f"[{colours[r.status]}]{r.status}[/{colours[r.status]}]",
            str(r.age_hours or ""),
            str(r.warn_after_hours or ""),
            str(r.error_after_hours or ""),
            (r.last_published or "never")[:19],
        )
    console().print(table)
    return breached


# -- accounts -----------------------------------------------------------------------------


def user_added(name: str, has_password: bool, as_json: bool) -> None:
    """``rat users add``."""
    if as_json:
        emit_json({"user": name, "has_password": has_password})
        return
    how = "with a password" if has_password else "without a password (tokens only)"
    click.secho(f"Added user {name} {how}.", fg="green")
    click.echo(f"Give it a token: rat tokens create --user {name} --role viewer")


def users_list(users: list[Any], as_json: bool) -> None:
    """``rat users list``."""
    if as_json:
        emit_json(
            [
                {
                    "name": u.name,
                    "has_password": u.has_password,
                    "active_tokens": u.active_tokens,
                    "created_at": u.created_at.isoformat(timespec="seconds"),
                }
                for u in users
            ]
        )
        return
    if not users:
        click.echo("No users yet. Create an admin token: rat tokens create --user admin --role admin")
        return
    table = _table("Users", ["user", "password", "active tokens", "created (UTC)"])
    for u in users:
        table.add_row(u.name, "yes" if u.has_password else "no", str(u.active_tokens), str(u.created_at)[:19])
    console().print(table)


def user_removed(name: str, tokens: int, as_json: bool) -> None:
    """``rat users remove``."""
    if as_json:
        emit_json({"removed": name, "tokens_removed": tokens})
        return
    click.secho(f"Removed user {name} and its {tokens} token{'s' if tokens != 1 else ''}.", fg="green")


def _scope(workspace: str | None) -> str:
    return f"workspace {workspace}" if workspace else "every workspace"


def token_created(value: str, info: Any, as_json: bool) -> None:
    """``rat tokens create``: the token on stdout (once), what it is on stderr."""
    if as_json:
        click.echo(json.dumps({"token": value}))
        return
    expires = f"expires {info.expires_at.isoformat(timespec='seconds')}" if info.expires_at else "never expires"
    click.secho(
        f"Token {info.id} for {info.user}: {info.role.value} in {_scope(info.workspace)}, {expires}.",
        fg="green",
        err=True,
    )
    click.echo(value)
    click.echo(
        f"This is the only time it is shown: store it now. Use it as `Authorization: Bearer <token>`; "
        f"revoke it with `rat tokens revoke {info.id}`.",
        err=True,
    )


def tokens_list(tokens: list[Any], as_json: bool) -> None:
    """``rat tokens list`` (never the token values: they are not stored)."""
    if as_json:
        emit_json([t.as_dict() for t in tokens])
        return
    if not tokens:
        click.echo("No tokens yet. Create one: rat tokens create --user admin --role admin")
        return
    table = _table("API tokens", ["id", "user", "role", "workspace", "status", "created", "expires", "last used"])
    table.columns[0].no_wrap = True  # an id is copied to `rat tokens revoke`: never fold it
    colours = {"active": "green", "expired": "yellow", "revoked": "red"}
    for t in tokens:
        row = t.as_dict()
        table.add_row(
            t.id,
            t.user,
            t.role.value,
            t.workspace or "*",
            f"[{colours[t.status]}]{t.status}[/{colours[t.status]}]",
            (row["created_at"] or "")[:16],
            (row["expires_at"] or "never")[:16],
            (row["last_used_at"] or "never")[:16],
        )
    console().print(table)


def token_revoked(info: Any, as_json: bool) -> None:
    """``rat tokens revoke``."""
    if as_json:
        emit_json(info.as_dict())
        return
    click.secho(f"Revoked {info.id} ({info.user}, {info.role.value} in {_scope(info.workspace)}).", fg="green")


def alert_deliveries(deliveries: list[Any], as_json: bool) -> None:
    """``rat alerts test``: each webhook's answer."""
    from dataclasses import asdict

    if as_json:
        emit_json([{**asdict(d), "ok": d.ok} for d in deliveries])
        return
    table = _table("Webhooks", ["webhook", "kind", "status", "attempts", "error"])
    for d in deliveries:
        colour = "green" if d.ok else "red"
        status = str(d.status) if d.status is not None else "no answer"
        table.add_row(d.webhook, d.kind, f"[{colour}]{status}[/{colour}]", str(d.attempts), _escape(d.error or ""))
    console().print(table)
