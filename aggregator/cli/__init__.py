"""The `aggregator` command: a thin layer that parses arguments, calls the library and prints.

Every library error (an AggregatorError) becomes one line on stderr and exit status 1; a run
whose sources failed still exits 0 (they are in its report) unless --strict is given (exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from aggregator import __version__
from aggregator.config import Settings, config_path, load_settings
from aggregator.errors import AggregatorError
from aggregator.logs import setup_logging
from aggregator.storage import Storage, open_storage

EXIT_ERROR = 1
EXIT_SOURCES_FAILED = 2


class App:
    """What every command needs, loaded on first use (so `--help` never touches the config)."""

    def __init__(self, config: str | None) -> None:
        self.config = config_path(config)
        self._settings: Settings | None = None
        self._storage: Storage | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = open_storage(self.settings.database_url)
        return self._storage

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)


pass_app = click.make_pass_decorator(App)


class _Group(click.Group):
    """Turns library errors into one clear line and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AggregatorError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "-c",
    metavar="PATH",
    envvar="AGGREGATOR_CONFIG",
    help="Config file (default ./feeds.yaml; env AGGREGATOR_CONFIG).",
)
@click.option("--log-level", default="warning", show_default=True, help="debug, info, warning or error.")
@click.version_option(__version__, prog_name="aggregator")
@click.pass_context
def main(ctx: click.Context, config: str | None, log_level: str) -> None:
    """Find, classify and queue candidate items for a weekly AI newsletter."""
    setup_logging(log_level)
    app = App(config)
    ctx.obj = app
    ctx.call_on_close(app.close)


def is_tty() -> bool:
    return sys.stdout.isatty()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[str] = (),
                alert: Sequence[bool] = ()) -> None:  # fmt: skip
    """Aligned columns. On a terminal, rich fits them to the width and colours alerts red;
    otherwise (pipes, cron mail) plain text lines that are never wrapped or cut."""
    if is_tty():
        table = Table(box=None, pad_edge=False, show_edge=False)
        for header in headers:
            table.add_column(header, justify="right" if header in right else "left")
        for n, row in enumerate(rows):
            table.add_row(*row, style="red" if n < len(alert) and alert[n] else None)
        Console(highlight=False).print(table)
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(line, widths, headers, strict=True)]
        click.echo("  ".join(cells).rstrip())


def path_arg(value: str | None) -> Path | None:
    return Path(value) if value else None


# Command modules register themselves on `main`.
from aggregator.cli import export, ingest, learn, review  # noqa: E402
from aggregator.cli import ops as ops  # noqa: E402
from aggregator.cli import worker as worker  # noqa: E402

__all__ = ["App", "export", "fail", "ingest", "learn", "main", "pass_app", "review"]
