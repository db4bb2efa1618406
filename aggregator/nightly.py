"""The nightly pipeline, once, under the database run lock:

    run lock ─► run_once(due_only, kind="nightly"): poll what is due, classify
       ─► export.batches.write_nightly: candidates-YYYY-MM-DD.md and .csv
       ─► training.retrain, only once schedule.retrain_min_decisions new decisions exist
          (its promotion gate decides whether the new model goes live)

`aggregator run --nightly`, `aggregator nightly`, the cron line, the systemd timer and the
scheduler's nightly job all call `run_nightly`. A second run while one holds the lock gets a
LockedError at once; a lock left by a crashed run is recovered (see `hold_run_lock`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aggregator.config import Settings
from aggregator.errors import AggregatorError, ModelError
from aggregator.export.batches import write_nightly
from aggregator.pipeline import ProgressCallback, RunOptions, run_once
from aggregator.storage import Storage
from aggregator.storage.sql import process_owner
from aggregator.types import RunReport

if TYPE_CHECKING:
    from aggregator.training import RetrainOutcome

log = logging.getLogger("aggregator.nightly")

RUN_LOCK = "run"
# Short enough that a lock left by a crash on another machine frees itself soon; the heartbeat
# keeps a long healthy run's lock alive.
RUN_LOCK_TTL = timedelta(minutes=30)
HEARTBEAT_SECONDS = RUN_LOCK_TTL.total_seconds() / 6
# Decisions that change an item's label; notes and splits teach the section model nothing.
LABELING_ACTIONS = frozenset({"accept", "reject", "move", "undo"})


@dataclass(frozen=True, slots=True)
class NightlyReport:
    """What one nightly did. `problems` are steps that failed (export, retrain); the poll's own
    failing sources are in `run`."""

    run: RunReport
    files: tuple[Path, ...] = ()
    new_decisions: int = 0
    retrain_threshold: int = 0
    retrained: RetrainOutcome | None = None
    problems: tuple[str, ...] = ()
    seconds: float = 0.0  # the whole nightly, lock to lock

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> list[str]:
        """The steps after the poll, as readable lines (the poll has its own report)."""
        lines = [f"wrote {path}" for path in self.files]
        if self.retrained is not None:
            lines.append(f"retrained: {self.retrained.describe()}")
        else:
            lines.append(
                f"not retrained: {self.new_decisions} new decisions since the last model "
                f"(retrains at {self.retrain_threshold})"
            )
        lines += [f"problem: {problem}" for problem in self.problems]
        return lines


def run_nightly(
    settings: Settings,
    storage: Storage,
    now: datetime,
    *,
    owner: str | None = None,
    progress: ProgressCallback | None = None,
) -> NightlyReport:
    """Poll what is due, classify, export the dated candidate files, retrain past the threshold.
    Raises LockedError at once when another run holds the run lock."""
    started = time.perf_counter()
    with hold_run_lock(storage, owner or process_owner(), now):
        report = run_once(settings, storage, now, RunOptions(due_only=True, kind="nightly"), progress)
        files, export_problems = _export(settings, storage, now)
        new_decisions, retrained, retrain_problems = _retrain_if_due(settings, storage, now)
    nightly = NightlyReport(
        run=report,
        files=files,
        new_decisions=new_decisions,
        retrain_threshold=settings.model.schedule.retrain_min_decisions,
        retrained=retrained,
        problems=export_problems + retrain_problems,
        seconds=time.perf_counter() - started,
    )
    _log(nightly)
    return nightly


def decisions_since_training(settings: Settings, storage: Storage) -> int:
    """Labeling decisions made since the newest model version was trained (all of them when there
    is none). The newest, not the live one: a version the gate kept out has seen these decisions
    too, and training again on the same data would only repeat its result."""
    since = newest_model_time(settings)
    return sum(1 for _, decision in storage.decisions(since=since) if decision.action in LABELING_ACTIONS)


def newest_model_time(settings: Settings) -> datetime | None:
    from aggregator.classify.registry import Registry  # scikit-learn loads only when needed

    versions = Registry(settings.models_dir).versions()
    return max((v.created for v in versions), default=None)


# -- the run lock ---------------------------------------------------------------------------------


@contextmanager
def hold_run_lock(storage: Storage, owner: str, now: datetime, ttl: timedelta = RUN_LOCK_TTL) -> Iterator[None]:
    """storage.run_lock for a block, kept alive by a heartbeat while the block runs. The short
    lease plus the heartbeat mean a lock left by a crash on another host frees itself within
    `ttl`; storage takes over one left by a dead process on this host at once."""
    with storage.run_lock(owner, now, ttl), _heartbeat(storage, owner, now, ttl):
        yield


@contextmanager
def _heartbeat(storage: Storage, owner: str, now: datetime, ttl: timedelta) -> Iterator[None]:
    """Extend the lease every HEARTBEAT_SECONDS while the block runs. Time is counted from `now`
    (monotonic), so a fake clock in tests and a wall-clock jump behave the same."""
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            current = now + timedelta(seconds=time.monotonic() - started)
            try:
                storage.refresh_lock(RUN_LOCK, owner, current, ttl)
            except AggregatorError as exc:  # the run goes on; the lease may lapse, which the log says
                log.warning("run lock not refreshed", extra={"reason": str(exc)})

    thread = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# -- steps ----------------------------------------------------------------------------------------


def _export(settings: Settings, storage: Storage, now: datetime) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    try:
        return tuple(write_nightly(settings, storage, now)), ()
    except AggregatorError as exc:  # a full disk must not also cost tonight's retraining
        return (), (f"export: {exc}",)


def _retrain_if_due(
    settings: Settings, storage: Storage, now: datetime
) -> tuple[int, RetrainOutcome | None, tuple[str, ...]]:
    try:
        new_decisions = decisions_since_training(settings, storage)
    except ModelError as exc:
        return 0, None, (f"retrain: cannot read the model folder: {exc}",)
    if new_decisions < settings.model.schedule.retrain_min_decisions:
        return new_decisions, None, ()
    try:
        from aggregator.classify.stage import classify_pending
        from aggregator.training import retrain

        outcome = retrain(settings, storage, now)
        if outcome.promoted:  # the queue follows the new live model tonight, not after a manual rescore
            classify_pending(storage, settings, now, rescore=True)
        return new_decisions, outcome, ()
    except AggregatorError as exc:
        return new_decisions, None, (f"retrain: {exc}",)


def _log(nightly: NightlyReport) -> None:
    retrained = nightly.retrained
    log.info(
        "nightly",
        extra={
            "new": nightly.run.new,
            "updated": nightly.run.updated,
            "sources": len(nightly.run.results),
            "failed": len(nightly.run.failed),
            "files": [str(path) for path in nightly.files],
            "new_decisions": nightly.new_decisions,
            "retrained": retrained.version if retrained else None,
            "promoted": retrained.promoted if retrained else None,
            "problems": list(nightly.problems),
            "ms": round(nightly.seconds * 1000),
        },
    )
