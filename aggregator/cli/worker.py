"""The `worker` command: one scale-out worker over the shared database (see aggregator/worker.py)."""

from __future__ import annotations

import dataclasses
import json
import signal
from types import FrameType

import click

from aggregator.cli import App, main, pass_app
from aggregator.config import parse_interval
from aggregator.worker import Worker, WorkerOptions


@main.command()
@click.option("--name", help="Lease owner, unique across machines (default host:pid).")
@click.option("--batch", type=click.IntRange(min=1), default=100, show_default=True, help="Sources claimed at once.")
@click.option("--lease", default="10m", show_default=True,
              help="How long a claim holds its sources (renewed while the worker lives): 90s, 10m, 1h.")  # fmt: skip
@click.option("--until-idle", is_flag=True, help="Exit once nothing is due (default: wait for the next check).")
@click.option("--poll-interval", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Longest wait between claims when nothing is due, seconds.")  # fmt: skip
@click.option("--no-classify", is_flag=True, help="Store items without classifying them.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@pass_app
def worker(
    app: App,
    name: str | None,
    batch: int,
    lease: str,
    until_idle: bool,
    poll_interval: float,
    no_classify: bool,
    as_json: bool,
) -> None:
    """Claim due sources from the shared database, poll them, repeat. Run any number, on any number
    of machines (PostgreSQL; SQLite: one machine). SIGTERM or SIGINT finishes the batch in flight,
    releases the leases and exits 0."""
    try:
        lease_time = parse_interval(lease)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lease") from None
    options = WorkerOptions(batch=batch, lease=lease_time, until_idle=until_idle, poll_interval=poll_interval,
                            classify=not no_classify)  # fmt: skip
    if name is not None:
        options = dataclasses.replace(options, name=name)
    loop = Worker(app.settings, app.storage, options)

    def stop(signum: int, frame: FrameType | None) -> None:
        loop.stop()

    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, stop) for signum in handled}
    try:
        summary = loop.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(summary)))
    else:
        click.echo(summary.describe())
