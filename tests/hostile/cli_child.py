"""The process the crash harness kills: `aggregator ARGS`, started by a multiprocessing forkserver.

The forkserver imports the CLI (and the modules its commands load on first use) once, so each
command starts in milliseconds and a SIGKILL lands inside the command, not inside `import`.
"""

from __future__ import annotations

import os

from aggregator.cli import main


def run_cli(args: list[str], log_path: str) -> None:
    """`aggregator ARGS` with stdout and stderr appended to `log_path`; exits with the CLI's status."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    main(args, prog_name="aggregator")
