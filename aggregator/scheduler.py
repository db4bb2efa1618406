"""The long-running scheduler (`aggregator schedule`): APScheduler 3.x jobs around run_once and the
nightly pipeline.

    poll:NAME   one per enabled source, every `interval` (plus jitter). After each poll the job
                moves to the source's stored next check, so backoff, Retry-After and max-age hold
                here exactly as in cron runs. A paused source is skipped until `sources resume`.
    nightly     at schedule.nightly (a crontab line) in schedule.timezone: nightly.run_nightly

Jobs are built from feeds.yaml at start and kept in memory (no pickled job store). They run one at
a time in one worker thread (SQLite has one writer, arXiv's pace holds), and each takes the database
run lock, so a cron run and the scheduler never poll at once. Job defaults: missed runs coalesce
into one, one instance per job, a misfire grace of schedule.misfire_grace (hours, not APScheduler's
1 s). SIGTERM and SIGINT let the job in flight finish, skip queued ones and exit cleanly. Every
job's outcome is one log event with stable keys: job, outcome, reason, new, updated, failed,
next_run, ms.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from types import FrameType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aggregator.config import Settings, parse_interval
from aggregator.errors import AggregatorError, ConfigError, LockedError
from aggregator.nightly import hold_run_lock, run_nightly
from aggregator.pipeline import RunOptions, run_once
from aggregator.storage import Storage
from aggregator.storage.sql import process_owner
from aggregator.types import Source, SourceState

log = logging.getLogger("aggregator.scheduler")

NIGHTLY_JOB = "nightly"
STOP_CHECK_SECONDS = 0.25  # how soon a stop signal is noticed by the main loop
LOCKED_RETRY = timedelta(minutes=2)  # another process holds the run lock: try again this soon
DUE_TOLERANCE = timedelta(seconds=5)  # a job firing this close to the next check counts as due
SOURCE_JITTER_SHARE = 0.1  # a source's jitter is at most this share of its interval
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

Clock = Callable[[], datetime]
Outcome = Literal["ok", "failed", "skipped", "locked"]


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What one job run did; logged as one event."""

    job: str
    outcome: Outcome
    reason: str = ""
    new: int = 0
    updated: int = 0
    failed: int = 0  # sources that failed
    next_check: datetime | None = None  # poll jobs: when the source is due again


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """One scheduled job as `aggregator schedule --list` shows it."""

    job: str
    next_run: datetime | None
    trigger: str


def source_job_id(name: str) -> str:
    return f"poll:{name}"


# -- configuration -> triggers --------------------------------------------------------------------


def schedule_timezone(settings: Settings) -> ZoneInfo:
    name = settings.model.schedule.timezone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{settings.path}: schedule.timezone: unknown time zone {name!r}") from None


def nightly_trigger(settings: Settings, *, jitter: bool = True) -> CronTrigger:
    """The nightly crontab line as a trigger, weekdays counted as cron counts them (0 = Sunday).
    Without `jitter` it gives the exact crontab times (for showing them)."""
    schedule = settings.model.schedule
    seconds = schedule.jitter_seconds if jitter else 0
    try:
        fields = crontab_fields(schedule.nightly)
        return CronTrigger(**fields, timezone=schedule_timezone(settings), jitter=seconds or None)
    except ValueError as exc:
        raise ConfigError(
            f"{settings.path}: schedule.nightly: {schedule.nightly!r} is not a crontab line: {exc}"
        ) from None


def crontab_fields(line: str) -> dict[str, str]:
    """'minute hour day month weekday' -> CronTrigger keyword arguments."""
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    return {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": cron_weekdays(weekday)}


def cron_weekdays(field: str) -> str:
    """A crontab weekday field in APScheduler 3's terms. crontab counts from Sunday (0 or 7),
    APScheduler 3 from Monday, so numbers, ranges and steps become explicit day names."""
    days: list[str] = []
    for part in field.split(","):
        for day in _weekday_part(part):
            if day not in days:
                days.append(day)
    return ",".join(days)


def _weekday_part(part: str) -> list[str]:
    body, has_step, step_text = part.partition("/")
    if not has_step and not any(ch.isdigit() for ch in body):
        return [body.lower()]  # "*", "mon", "mon-fri": the same in both
    if has_step and not step_text.isdigit():
        raise ValueError(f"weekday step {step_text!r} is not a number")
    step = int(step_text) if has_step else 1
    if body == "*":
        first, last = 0, 6
    elif "-" in body:
        start, _, end = body.partition("-")
        first, last = _weekday_number(start), _weekday_number(end)
    else:
        first = _weekday_number(body)
        last = 6 if has_step else first
    if last < first or step < 1:
        raise ValueError(f"weekday range {part!r} is empty")
    return [_CRON_DAYS[n % 7] for n in range(first, last + 1, step)]


def _weekday_number(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text.lower() in _CRON_DAYS:
        return _CRON_DAYS.index(text.lower())
    raise ValueError(f"{text!r} is not a weekday (0-7 or sun-sat)")


def source_jitter(source: Source, settings: Settings) -> float:
    """Seconds of jitter for a source's polls: the configured jitter, never more than a tenth of
    its interval (a 2-minute feed must not wander by a minute)."""
    return min(float(settings.model.schedule.jitter_seconds), source.interval.total_seconds() * SOURCE_JITTER_SHARE)


def source_trigger(source: Source, settings: Settings, start: datetime) -> IntervalTrigger:
    jitter = source_jitter(source, settings)
    return IntervalTrigger(
        seconds=source.interval.total_seconds(), start_date=start, timezone=UTC, jitter=jitter or None
    )


def first_poll_time(state: SourceState | None, now: datetime, jitter: float, rng: random.Random) -> datetime:
    """The stored next check when it is still ahead; otherwise soon, spread over the jitter so
    sources overdue at start do not all fire in the same second."""
    if state is not None and state.next_check is not None and state.next_check > now:
        return state.next_check
    return now + timedelta(seconds=rng.uniform(0, jitter))


def job_defaults(settings: Settings) -> dict[str, Any]:
    grace = settings.model.schedule.misfire_grace
    try:
        seconds = parse_interval(grace).total_seconds()
    except ValueError as exc:
        raise ConfigError(f"{settings.path}: schedule.misfire_grace: {exc}") from None
    return {"coalesce": True, "max_instances": 1, "misfire_grace_time": int(seconds)}


def next_run_after(outcome: JobOutcome, now: datetime) -> datetime | None:
    """Where a poll job moves after running (None: keep the trigger's own next time). The stored
    next check carries backoff, Retry-After and max-age; a held lock means try again soon."""
    if outcome.outcome == "locked":
        return now + LOCKED_RETRY
    if outcome.next_check is not None and outcome.next_check > now:
        return outcome.next_check
    return None


# -- the scheduler --------------------------------------------------------------------------------


class _StoppableScheduler(BlockingScheduler):  # type: ignore[misc]
    """A BlockingScheduler whose main loop ends when `stop_signal` is set. A signal handler can
    safely do no more than set an attribute: calling shutdown() from it could deadlock on the
    scheduler's locks, so the loop checks the attribute between short waits instead."""

    stop_signal: int | None = None

    def _main_loop(self) -> None:
        due = 0.0  # monotonic time of the next look at the jobs
        while self.state != STATE_STOPPED and self.stop_signal is None:
            woken = self._event.wait(max(0.0, min(due - time.monotonic(), STOP_CHECK_SECONDS)))
            if self.stop_signal is not None:
                return
            if woken or time.monotonic() >= due:
                self._event.clear()
                wait_seconds = self._process_jobs()
                due = time.monotonic() + (wait_seconds if wait_seconds is not None else float("inf"))


class Scheduler:
    """The jobs of one `aggregator schedule` process. `clock` and `rng` are injectable for tests."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        owner: str | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.owner = owner or process_owner()
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.rng = rng or random.Random()  # jitter, not security
        self._scheduler = _StoppableScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults=job_defaults(settings),
            timezone=UTC,
        )
        self._nightly = nightly_trigger(settings)
        self._stopping = threading.Event()
        # Held while a job moves itself; shutdown waits for it, so a move never races the
        # scheduler's own locks during shutdown.
        self._move_guard = threading.Lock()

    # -- building ---------------------------------------------------------------------------------

    def build_jobs(self) -> list[PlannedJob]:
        """One job per enabled source and the nightly job, from feeds.yaml and the stored fetch state."""
        now = self.clock()
        self.storage.sync_sources(self.settings.sources, now)
        states = self.storage.source_states()
        for source in self.settings.sources:
            if not source.enabled:
                continue
            job_id = source_job_id(source.name)
            first = first_poll_time(states.get(source.name), now, source_jitter(source, self.settings), self.rng)
            self._scheduler.add_job(
                self._run_job,
                trigger=source_trigger(source, self.settings, first),
                args=(job_id, partial(self.poll_source, source.name)),
                id=job_id,
                name=job_id,
                next_run_time=first,
                replace_existing=True,
            )
        self._scheduler.add_job(
            self._run_job,
            trigger=self._nightly,
            args=(NIGHTLY_JOB, self.nightly),
            id=NIGHTLY_JOB,
            name=NIGHTLY_JOB,
            next_run_time=self._nightly.get_next_fire_time(None, now),
            replace_existing=True,
        )
        return self.planned()

    def planned(self) -> list[PlannedJob]:
        jobs = [
            PlannedJob(job.id, getattr(job, "next_run_time", None), str(job.trigger))
            for job in self._scheduler.get_jobs()
        ]
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(jobs, key=lambda j: (j.next_run or far, j.job))

    # -- the jobs ---------------------------------------------------------------------------------

    def poll_source(self, name: str, now: datetime) -> JobOutcome:
        """Poll one source when it is due and not paused, under the run lock."""
        job = source_job_id(name)
        try:
            with hold_run_lock(self.storage, self.owner, now):
                state = self.storage.source_states().get(name)
                if state is not None and state.paused:
                    return JobOutcome(
                        job, "skipped", f"paused after repeated errors (aggregator sources resume {name})"
                    )
                if state is not None and state.next_check is not None and state.next_check > now + DUE_TOLERANCE:
                    return JobOutcome(job, "skipped", "not due", next_check=state.next_check)
                report = run_once(self.settings, self.storage, now, RunOptions(names=(name,), kind="schedule"))
                after = self.storage.source_states().get(name)
        except LockedError as exc:
            return JobOutcome(job, "locked", str(exc))
        result = report.results[0]
        outcome: Outcome = "failed" if result.failed else "skipped" if result.status == "skipped" else "ok"
        return JobOutcome(
            job,
            outcome,
            result.error or result.status,
            new=report.new,
            updated=report.updated,
            failed=len(report.failed),
            next_check=after.next_check if after else None,
        )

    def nightly(self, now: datetime) -> JobOutcome:
        try:
            report = run_nightly(self.settings, self.storage, now, owner=self.owner)
        except LockedError as exc:
            return JobOutcome(NIGHTLY_JOB, "locked", str(exc))
        lines = report.describe()
        return JobOutcome(
            NIGHTLY_JOB,
            "ok" if report.ok else "failed",
            "; ".join(report.problems) or lines[-1],
            new=report.run.new,
            updated=report.run.updated,
            failed=len(report.run.failed),
        )

    def _run_job(self, job_id: str, work: Callable[[datetime], JobOutcome]) -> None:
        """Every job runs through here: skip when stopping, never raise, move, log the outcome."""
        if self._stopping.is_set():
            log.info("job", extra={"job": job_id, "outcome": "skipped", "reason": "scheduler stopping"})
            return
        started = time.perf_counter()
        now = self.clock()
        try:
            outcome = work(now)
        except AggregatorError as exc:
            outcome = JobOutcome(job_id, "failed", str(exc))
        except Exception as exc:  # a bug in one job must not end the scheduler
            log.exception("job crashed", extra={"job": job_id})
            outcome = JobOutcome(job_id, "failed", f"internal error: {type(exc).__name__}: {exc}")
        # The nightly keeps its crontab time even when locked out: the run holding the lock does its work.
        move_to = next_run_after(outcome, now) if job_id != NIGHTLY_JOB else None
        next_run = self._move(job_id, move_to)
        _log_outcome(outcome, next_run, (time.perf_counter() - started) * 1000)

    def _move(self, job_id: str, when: datetime | None) -> datetime | None:
        """Move a job's next run; returns when it runs next (as far as this job knows)."""
        with self._move_guard:
            if self._stopping.is_set():
                return None
            try:
                job = self._scheduler.get_job(job_id)
                if when is not None and job is not None:
                    job = self._scheduler.modify_job(job_id, next_run_time=when)
            except JobLookupError:
                return None
            return getattr(job, "next_run_time", None) if job is not None else None

    # -- running ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Build the jobs and run them until SIGTERM or SIGINT; then let the job in flight finish."""
        jobs = self.build_jobs()
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        nightly = next((j.next_run for j in jobs if j.job == NIGHTLY_JOB), None)
        log.info(
            "scheduler started",
            extra={"jobs": len(jobs), "nightly": nightly.isoformat() if nightly else None, "owner": self.owner},
        )
        try:
            self._scheduler.start()  # returns once a stop signal was noticed
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        stop = self._scheduler.stop_signal
        log.info("scheduler stopped", extra={"signal": signal.Signals(stop).name if stop else None})

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the main loop to end (safe from a signal handler or another thread)."""
        self._scheduler.stop_signal = signum

    def stop(self) -> None:
        """Skip queued jobs, wait for the one in flight, shut the scheduler down."""
        with self._move_guard:
            self._stopping.set()
        if self._scheduler.state == STATE_RUNNING:
            log.info("scheduler stopping", extra={"reason": "finishing the job in flight"})
            self._scheduler.shutdown(wait=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop(signum)


def _log_outcome(outcome: JobOutcome, next_run: datetime | None, ms: float) -> None:
    level = logging.WARNING if outcome.outcome in ("failed", "locked") else logging.INFO
    log.log(
        level,
        "job",
        extra={
            "job": outcome.job,
            "outcome": outcome.outcome,
            "reason": outcome.reason,
            "new": outcome.new,
            "updated": outcome.updated,
            "failed": outcome.failed,
            "next_run": next_run.isoformat() if next_run else None,
            "ms": round(ms),
        },
    )
