"""Scale-out workers (`aggregator worker`): any number of processes, on any number of machines,
sharing one database, each looping

    sync feeds.yaml's sources once
    loop:  claim up to `batch` due sources (leases: owner + expiry; see storage/leases.py)
             -> pipeline.poll_sources on them: fetch, parse, store; each source's lease ends in
                the transaction that stores its result; cluster and classify what this worker stored
           nothing claimable?  something due but leased or held back by per-host limits: look
                again soon; nothing due: exit (--until-idle) or sleep until the next check is due
    stop (SIGTERM/SIGINT): finish the batch in flight, release what is still leased, exit 0

A heartbeat thread renews the worker's live leases every third of the lease, so a long batch keeps
its sources while a killed worker's leases run out and other workers take them over. The nightly
classify/export/retrain is not a worker's job: `aggregator schedule` or the nightly timer runs it,
once, under the run lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from aggregator.config import Settings
from aggregator.errors import ConfigError
from aggregator.pipeline import ProgressCallback, RunOptions, poll_sources
from aggregator.storage import Storage
from aggregator.storage.sql import process_owner
from aggregator.types import RunReport

log = logging.getLogger("aggregator.worker")

BUSY_RETRY_SECONDS = 0.25  # due sources exist but others hold them: look again this soon
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How one worker claims. `name` is its lease owner: unique per process across machines."""

    name: str = field(default_factory=process_owner)
    batch: int = 100  # sources claimed at once
    lease: timedelta = timedelta(minutes=10)
    until_idle: bool = False  # exit once nothing is due instead of waiting for the next check
    poll_interval: float = 30.0  # longest sleep between claims when nothing is due, seconds
    classify: bool = True

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("worker name must not be empty")
        if self.batch < 1:
            raise ConfigError(f"worker batch must be at least 1, got {self.batch}")
        if self.lease < timedelta(seconds=1):
            raise ConfigError(f"worker lease must be at least 1 second, got {self.lease}")
        if self.poll_interval <= 0:
            raise ConfigError(f"worker poll interval must be greater than 0, got {self.poll_interval}")


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """What one worker did between start and exit."""

    name: str
    batches: int = 0
    sources: int = 0
    new: int = 0
    updated: int = 0
    failed: int = 0
    seconds: float = 0.0
    stopped_by: str = ""  # idle | signal

    def describe(self) -> str:
        return (
            f"worker {self.name}: {self.batches} batches, {self.sources} sources, {self.new} new, "
            f"{self.updated} updated, {self.failed} failed, {self.seconds:.1f} s (stopped: {self.stopped_by})"
        )

    def add(self, report: RunReport) -> WorkerSummary:
        return replace(
            self,
            batches=self.batches + 1,
            sources=self.sources + len(report.results),
            new=self.new + report.new,
            updated=self.updated + report.updated,
            failed=self.failed + len(report.failed),
        )


class Worker:
    """One worker process's loop. `stop()` (from a signal handler or another thread) ends it after
    the batch in flight."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        options: WorkerOptions,
        *,
        clock: Clock = utc_now,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.options = options
        self.clock = clock
        self.progress = progress
        self._stopping = threading.Event()
        self._sources = {s.name: s for s in settings.sources if s.enabled}

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> WorkerSummary:
        """Claim and poll until stopped (or idle, with until_idle); leases are released on the way out."""
        started = time.perf_counter()
        owner = self.options.name
        self.storage.sync_sources(self.settings.sources, self.clock())
        # A restarted worker with a fixed name frees what its previous life still held.
        self.storage.release_leases(owner)
        log.info("worker started", extra={"worker": owner, "sources": len(self._sources)})
        summary = WorkerSummary(owner)
        heartbeat = _Heartbeat(self.storage, owner, self.options.lease, self.clock)
        heartbeat.start()
        try:
            summary = self._loop(summary)
        finally:
            heartbeat.stop()
            self.storage.release_leases(owner)
        done = replace(summary, seconds=time.perf_counter() - started)
        log.info("worker stopped", extra={"worker": owner, "stopped": done.stopped_by, "sources": done.sources})
        return done

    def _loop(self, summary: WorkerSummary) -> WorkerSummary:
        while not self._stopping.is_set():
            now = self.clock()
            report = self.run_batch(now)
            if report is not None:
                summary = summary.add(report)
                continue
            wait = self._idle_wait(now)
            if wait is None:
                return replace(summary, stopped_by="idle")
            self._stopping.wait(wait)
        return replace(summary, stopped_by="signal")

    def run_batch(self, now: datetime) -> RunReport | None:
        """Claim one batch and poll it; None when nothing was claimable."""
        owner = self.options.name
        claimed = self.storage.claim_sources(
            owner,
            now,
            lease=self.options.lease,
            limit=self.options.batch,
            names=self._sources.keys(),
            per_host=self.settings.model.fetch.per_host,
        )
        if not claimed:
            return None
        states = {state.name: state for state in claimed}
        chosen = [self._sources[state.name] for state in claimed]
        options = RunOptions(kind="worker", lease_owner=owner, classify=self.options.classify)
        try:
            return poll_sources(self.settings, self.storage, chosen, states, now, options, self.progress)
        finally:
            # Normally each lease ended with its source's result; whatever a failure left is freed now.
            self.storage.release_leases(owner, states.keys())

    def _idle_wait(self, now: datetime) -> float | None:
        """Seconds to wait before claiming again, or None when the worker is done (until_idle)."""
        earliest = self.storage.earliest_check(now, self._sources.keys())
        if earliest is not None and earliest <= now:
            return min(BUSY_RETRY_SECONDS, self.options.poll_interval)  # due, but leased by others
        if self.options.until_idle:
            return None
        if earliest is None:
            return self.options.poll_interval
        return min(self.options.poll_interval, max((earliest - now).total_seconds(), 0.0) + 0.01)


class _Heartbeat:
    """Renews the worker's live leases every third of the lease until stopped."""

    def __init__(self, storage: Storage, owner: str, lease: timedelta, clock: Clock) -> None:
        self._storage = storage
        self._owner = owner
        self._lease = lease
        self._clock = clock
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-heartbeat-{owner}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)

    def _beat(self) -> None:
        every = self._lease.total_seconds() / 3
        while not self._stopped.wait(every):
            try:
                self._storage.renew_leases(self._owner, self._clock(), self._lease)
            except Exception:  # a missed beat only shortens the leases; the next one may work
                log.exception("lease renewal failed", extra={"worker": self._owner})
