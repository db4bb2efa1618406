"""Ingestion commands: run, poll, sources, items, status, config check, db upgrade."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aggregator import opml, status
from aggregator.cli import EXIT_SOURCES_FAILED, App, is_tty, main, pass_app, print_table
from aggregator.pipeline import RunOptions, run_once, select_sources
from aggregator.storage import ItemQuery
from aggregator.storage.sql import process_owner
from aggregator.types import FetchResult, RunReport


@main.command()
@click.option("--due", is_flag=True, help="Poll only the sources whose next check has come.")
@click.option("--strict", is_flag=True, help="Exit 2 when any source failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--no-classify", is_flag=True, help="Store items without classifying them.")
@click.option("--nightly", is_flag=True, help="The nightly pipeline once (poll due, classify, export, retrain).")
@pass_app
def run(app: App, due: bool, strict: bool, as_json: bool, no_classify: bool, nightly: bool) -> None:
    """Poll every enabled source, store new items and print a per-source report."""
    if nightly:
        if no_classify:
            raise click.UsageError("--nightly always classifies; drop --no-classify")
        from aggregator.cli.ops import nightly_and_report  # ops imports this module, so not at the top

        nightly_and_report(app, strict=strict, as_json=as_json)
        return
    options = RunOptions(due_only=due, classify=not no_classify)
    _run_and_report(app, options, strict=strict, as_json=as_json)


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--strict", is_flag=True, help="Exit 2 when any source failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_app
def poll(app: App, names: tuple[str, ...], strict: bool, as_json: bool) -> None:
    """Poll the named sources now (even disabled or paused ones)."""
    for name in names:
        app.settings.source(name)  # unknown names fail before anything is fetched
    _run_and_report(app, RunOptions(names=names, kind="poll", take_leased=True), strict=strict, as_json=as_json)


def _run_and_report(app: App, options: RunOptions, *, strict: bool, as_json: bool) -> None:
    settings, storage = app.settings, app.storage
    now = app.now()
    with storage.run_lock(process_owner(), now), _progress(len(_planned(app, options, now))) as advance:
        report = run_once(settings, storage, now, options, progress=advance)
    if as_json:
        click.echo(json.dumps(report_json(report)))
    else:
        print_report(report)
    if strict and report.failed:
        sys.exit(EXIT_SOURCES_FAILED)


def _planned(app: App, options: RunOptions, now: datetime) -> list[Any]:
    """The sources a run will poll, for the progress bar (run_once itself mirrors the config)."""
    return select_sources(app.settings, app.storage.source_states(), now, options)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[FetchResult], None] | None]:
    """A progress bar on a terminal; nothing at all otherwise (no control codes in cron mail)."""
    if not (is_tty() and sys.stderr.isatty()) or total == 0:
        yield None
        return
    columns = (
        TextColumn("polling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=total)
        yield lambda result: bar.update(task, advance=1, description=result.source)


def print_report(report: RunReport) -> None:
    rows = [
        [r.source, "304" if r.status == "not_modified" else r.status, str(r.new), str(r.updated), str(r.unchanged),
         f"{r.ms:.0f}", r.error or ""]
        for r in report.results
    ]  # fmt: skip
    print_table(("source", "status", "new", "updated", "unchanged", "ms", "error"), rows,
                right=("new", "updated", "unchanged", "ms"), alert=[r.failed for r in report.results])  # fmt: skip
    click.echo(
        f"{len(report.results)} sources, {report.new} new, {report.updated} updated, "
        f"{len(report.failed)} failed, {report.seconds:.1f} s"
    )
    for note in report.notes:
        click.echo(f"note: {note}")


def report_json(report: RunReport) -> dict[str, Any]:
    return {
        "started": report.started.isoformat(),
        "finished": report.finished.isoformat(),
        "new": report.new,
        "updated": report.updated,
        "failed": len(report.failed),
        "notes": list(report.notes),
        "sources": [
            {
                "name": r.source,
                "status": r.status,
                "new": r.new,
                "updated": r.updated,
                "unchanged": r.unchanged,
                "http_status": r.http_status,
                "error": r.error,
                "ms": round(r.ms, 1),
            }
            for r in report.results
        ],
    }


# -- sources ---------------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def sources(ctx: click.Context, as_json: bool) -> None:
    """Source health: last success, last error, error count, items. Subcommands manage sources."""
    if ctx.invoked_subcommand is not None:
        return
    app: App = ctx.obj
    app.storage.sync_sources(app.settings.sources, app.now())
    rows = app.storage.source_rows()
    configured = {s.name for s in app.settings.sources}
    rows = [r for r in rows if r["name"] in configured]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    cells = [
        [row["name"], row["kind"], str(row["items"]), _short_time(row["last_success"]), str(row["error_count"]),
         "yes" if row["paused"] else "", (row["last_error"] or "") if row["error_count"] else ""]
        for row in rows
    ]  # fmt: skip
    print_table(("name", "kind", "items", "last success", "errors", "paused", "last error"), cells,
                right=("items", "errors"), alert=[bool(row["error_count"]) for row in rows])  # fmt: skip


@sources.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def sources_import(app: App, file: Path) -> None:
    """Add the feeds of an OPML file to feeds.yaml (comments kept; only http(s) URLs)."""
    outlines = opml.read_opml(file.read_bytes(), str(file))
    result = opml.import_into_config(app.config, outlines)
    for name in result.added:
        click.echo(f"added {name}")
    for line in result.skipped:
        click.echo(f"skipped {line}")
    click.echo(f"{len(result.added)} added, {len(result.skipped)} skipped")


@sources.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default stdout).")
@pass_app
def sources_export(app: App, output: Path | None) -> None:
    """Write the configured sources as OPML."""
    text = opml.write_opml(app.settings.sources)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@sources.command("resume")
@click.argument("names", nargs=-1, required=True)
@pass_app
def sources_resume(app: App, names: tuple[str, ...]) -> None:
    """Unpause sources paused after repeated errors; they are polled on the next run."""
    app.storage.sync_sources(app.settings.sources, app.now())
    for name in names:
        app.settings.source(name)
        app.storage.set_paused(name, False)
        click.echo(f"resumed {name}")


# -- items -----------------------------------------------------------------------------------------


@main.command()
@click.argument("text", required=False)
@click.option("--source", help="Only items from this source.")
@click.option("--kind", type=click.Choice(["paper", "blog", "release"]), help="Only items of this kind.")
@click.option("--since", type=click.DateTime(), help="Published on or after this date (UTC).")
@click.option("--limit", type=int, help="At most N items (default: all with --json, 50 otherwise).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def items(
    app: App,
    text: str | None,
    source: str | None,
    kind: str | None,
    since: datetime | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List and search stored items, newest first (TEXT matches title and summary)."""
    if limit is None and not as_json:
        limit = 50
    query = ItemQuery(text=text, source=source, kind=kind, since=_utc(since), limit=limit)
    stored = app.storage.iter_items(query)
    if as_json:
        for s in stored:
            click.echo(json.dumps(status.item_json(s), ensure_ascii=False))
        return
    rows = [
        [str(s.id), s.item.published.strftime("%Y-%m-%d") if s.item.published else "", s.item.source, s.item.kind,
         s.item.title]
        for s in stored
    ]  # fmt: skip
    print_table(("id", "published", "source", "kind", "title"), rows, right=("id",))


# -- status, config, db ---------------------------------------------------------------------------


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_app
def status_command(app: App, as_json: bool) -> None:
    """Last runs, source health, queue size, live model and next jobs."""
    data = status.collect(app.settings, app.storage, app.now())
    if as_json:
        click.echo(json.dumps(data, default=str))
        return
    for line in status.describe(data):
        click.echo(line)


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@pass_app
def config_check(app: App) -> None:
    """Validate feeds.yaml and print what it configures."""
    settings = app.settings
    kinds: dict[str, int] = {}
    for s in settings.sources:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no sources"
    click.echo(f"{settings.path}: ok ({len(settings.sources)} sources: {summary})")
    click.echo(f"database: {_display_db(settings.database_url)}")
    click.echo(f"categories: {', '.join(settings.categories)}")
    click.echo(f"models: {settings.models_dir}")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Apply pending migrations (runs also happen automatically on open)."""
    storage = app.storage
    storage.upgrade()
    current, head = storage.schema_version()
    click.echo(f"database at revision {current} (newest {head})")


def _display_db(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _short_time(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "never"


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value
