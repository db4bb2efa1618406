"""Export commands: export (Markdown draft, CSV, JSON, JSONL) and exports (the batches so far)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from aggregator.cli import App, fail, main, pass_app
from aggregator.export.batches import ExportRequest, export


@main.command("export")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json", "jsonl"]), default="markdown",
              show_default=True)  # fmt: skip
@click.option("--status", type=click.Choice(["accepted", "candidates", "all"]), default="accepted", show_default=True)
@click.option("--since", type=click.DateTime(), help="Only items first seen or decided after this date (UTC).")
@click.option("--since-last", is_flag=True, help="Only what is new since the previous export.")
@click.option("--section", "sections", multiple=True, help="Only this section (repeatable).")
@click.option("--top", type=click.IntRange(min=1), help="At most N items per section, best ranked first.")
@click.option(  # kept as typed: a trailing "/" names a folder that may not exist yet
    "-o", "--output", type=click.Path(), help="File, or folder for a dated file (default stdout)."
)
@pass_app
def export_command(
    app: App,
    fmt: str,
    status: str,
    since: datetime | None,
    since_last: bool,
    sections: tuple[str, ...],
    top: int | None,
    output: str | None,
) -> None:
    """Write the accepted items (or candidates) as a newsletter draft or a table."""
    if since and since_last:
        fail("--since and --since-last cannot be combined")
    unknown = [s for s in sections if s not in app.settings.categories]
    if unknown:
        fail(f"unknown section {unknown[0]!r} (categories: {', '.join(app.settings.categories)})")
    request = ExportRequest(
        fmt=fmt,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        since=since.replace(tzinfo=UTC) if since else None,
        since_last=since_last,
        sections=sections,
        top=top,
    )
    outcome = export(app.settings, app.storage, request, app.now(), output)
    if outcome.path is None:
        click.echo(outcome.text, nl=False)
    else:
        click.echo(f"wrote {len(outcome.rows)} items to {outcome.path}", err=True)


@main.command("exports")
@click.option("--limit", type=int, default=20, show_default=True)
@pass_app
def exports_command(app: App, limit: int) -> None:
    """List past exports: when, format, filters, how many items, where."""
    rows = app.storage.exports(limit)
    if not rows:
        click.echo("no exports yet")
    for row in rows:
        filters = ", ".join(f"{k}={v}" for k, v in row["filters"].items() if v not in (None, False, []))
        where = row["path"] or "stdout"
        when = f"{row['at']:%Y-%m-%d %H:%M}"
        click.echo(f"#{row['id']}  {when}  {row['format']:8} {row['count']:5} items  {filters}  {where}")
