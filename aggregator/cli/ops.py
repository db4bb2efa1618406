"""Unattended operation: schedule (the long-running scheduler) and nightly (the nightly pipeline
once; `run --nightly` is the same)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from typing import Any

import click

from aggregator.cli import EXIT_ERROR, EXIT_SOURCES_FAILED, App, main, pass_app
from aggregator.cli.ingest import _planned, _progress, print_report, report_json
from aggregator.nightly import NightlyReport, run_nightly
from aggregator.pipeline import RunOptions
from aggregator.scheduler import Scheduler
from aggregator.storage.sql import process_owner


@main.command()
@click.option("--list", "list_jobs", is_flag=True, help="Print the jobs and when each runs next, then exit.")
@click.pass_context
def schedule(ctx: click.Context, list_jobs: bool) -> None:
    """Run the scheduler in the foreground: each source at its interval, the nightly pipeline at
    schedule.nightly. SIGTERM or Ctrl-C lets the job in flight finish, then exits.

    Logs one event per job and per fetch on stderr (JSON lines unless on a terminal); the level
    is info unless --log-level says otherwise."""
    app: App = ctx.obj
    scheduler = Scheduler(app.settings, app.storage)
    if list_jobs:
        for job in scheduler.build_jobs():
            when = f"{job.next_run:%Y-%m-%d %H:%M:%S %Z}" if job.next_run else "never"
            click.echo(f"{when}  {job.job}  {job.trigger}")
        return
    if ctx.parent is not None and ctx.parent.get_parameter_source("log_level") == click.core.ParameterSource.DEFAULT:
        # A daemon's log is its only output: show each job's outcome unless told otherwise.
        logging.getLogger("aggregator").setLevel(logging.INFO)
    scheduler.run()


@main.command()
@click.option("--strict", is_flag=True, help="Exit 2 when any source failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_app
def nightly(app: App, strict: bool, as_json: bool) -> None:
    """The nightly pipeline once: poll what is due, classify, export the dated candidate files,
    retrain when enough new decisions exist. Exits at once if another run holds the lock; exits 1
    when the export or retraining failed."""
    nightly_and_report(app, strict=strict, as_json=as_json)


def nightly_and_report(app: App, *, strict: bool, as_json: bool) -> None:
    """Run the nightly pipeline and print its report (shared by `nightly` and `run --nightly`)."""
    now = app.now()
    planned = _planned(app, RunOptions(due_only=True, kind="nightly"), now)
    with _progress(len(planned)) as advance:
        report = run_nightly(app.settings, app.storage, now, owner=process_owner(), progress=advance)
    if as_json:
        click.echo(json.dumps(nightly_json(report)))
    else:
        _print_poll(report)
        for line in report.describe():
            click.echo(line)
    if report.problems:
        click.echo(f"error: the nightly run had {len(report.problems)} problem(s): {report.problems[0]}", err=True)
        sys.exit(EXIT_ERROR)
    if strict and report.run.failed:
        sys.exit(EXIT_SOURCES_FAILED)


def _print_poll(report: NightlyReport) -> None:
    if report.run.results:
        print_report(report.run)
        return
    click.echo("no source was due")
    for note in report.run.notes:
        click.echo(f"note: {note}")


def nightly_json(report: NightlyReport) -> dict[str, Any]:
    return {
        "run": report_json(report.run),
        "files": [str(path) for path in report.files],
        "new_decisions": report.new_decisions,
        "retrain_threshold": report.retrain_threshold,
        "retrained": asdict(report.retrained) if report.retrained else None,
        "problems": list(report.problems),
        "seconds": round(report.seconds, 3),
    }
