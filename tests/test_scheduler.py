"""The scheduler: triggers fire at the right times (fixed datetimes, no waiting), poll jobs back off,
reset, skip paused sources and wait for the run lock; `aggregator schedule` stops cleanly on SIGTERM
(subprocesses against the loopback server)."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import Settings, load_settings
from aggregator.errors import ConfigError
from aggregator.scheduler import (
    NIGHTLY_JOB,
    JobOutcome,
    Scheduler,
    cron_weekdays,
    job_defaults,
    next_run_after,
    nightly_trigger,
    source_job_id,
)
from aggregator.storage import Storage, open_storage
from tests.server import LoopbackServer

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)  # a Thursday
ROOT = Path(__file__).parents[1]


def rss(n: int, prefix: str = "post") -> str:
    items = "".join(
        f"<item><title>Post {i}</title><link>https://blog.example.org/{prefix}/{i}</link><guid>{prefix}-{i}</guid>"
        f"<pubDate>Tue, 24 Nov 2026 0{i}:00:00 GMT</pubDate></item>"
        for i in range(n)
    )
    return f"<?xml version='1.0'?><rss version='2.0'><channel><title>Blog</title>{items}</channel></rss>"


def write_config(
    tmp_path: Path, server: LoopbackServer, *, schedule: str = "", sources: str = "", database: str = ""
) -> Settings:
    sources = (
        sources
        or f"""
  - {{name: blog, kind: feed, url: "{server.url("/blog.xml")}", interval: 1h}}
  - {{name: flaky, kind: feed, url: "{server.url("/flaky.xml")}", interval: 1h}}"""
    )
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"""
database: "{database or f"sqlite:///{tmp_path}/agg.db"}"
models_dir: {tmp_path}/models
export_dir: {tmp_path}/exports
fetch: {{timeout: 5, allow_private_addresses: true}}
backoff: {{max_interval: 7d, pause_after: 4}}
schedule: {{{schedule or 'nightly: "0 5 * * *", timezone: UTC, jitter_seconds: 60'}}}
sources:{sources}
""",
        encoding="utf-8",
    )
    return load_settings(path, env={})


@pytest.fixture
def world(loopback: LoopbackServer) -> LoopbackServer:
    loopback.add("/blog.xml", rss(3), content_type="application/rss+xml")
    loopback.add("/flaky.xml", "down for maintenance", status=500, content_type="text/plain")
    return loopback


@pytest.fixture
def settings(tmp_path: Path, world: LoopbackServer, db_url: str) -> Settings:
    """SQLite, and PostgreSQL too when AGGREGATOR_TEST_PG_URL is set."""
    return write_config(tmp_path, world, database=db_url)


@pytest.fixture
def storage(settings: Settings) -> Iterator[Storage]:
    with open_storage(settings.database_url) as opened:
        yield opened


def make_scheduler(settings: Settings, storage: Storage, now: datetime = NOW) -> Scheduler:
    return Scheduler(settings, storage, owner="test:1", clock=lambda: now, rng=random.Random(7))


# -- triggers ---------------------------------------------------------------------------------------


def test_crontab_weekdays_count_from_sunday_like_cron() -> None:
    assert cron_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert cron_weekdays("0") == cron_weekdays("7") == "sun"
    assert cron_weekdays("*/2") == "sun,tue,thu,sat"
    assert cron_weekdays("6,0") == "sat,sun"
    assert cron_weekdays("mon-fri") == "mon-fri"
    assert cron_weekdays("*") == "*"


def test_nightly_fires_at_the_configured_local_time(tmp_path: Path, world: LoopbackServer) -> None:
    settings = write_config(
        tmp_path, world, schedule='nightly: "0 5 * * *", timezone: Europe/Berlin, jitter_seconds: 0'
    )
    trigger = nightly_trigger(settings)
    winter = trigger.get_next_fire_time(None, NOW)
    assert winter.astimezone(UTC) == datetime(2026, 11, 27, 4, 0, tzinfo=UTC)  # 05:00 CET
    summer = trigger.get_next_fire_time(None, datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    assert summer.astimezone(UTC) == datetime(2026, 7, 2, 3, 0, tzinfo=UTC)  # 05:00 CEST
    assert trigger.get_next_fire_time(winter, winter + timedelta(seconds=1)) == winter + timedelta(days=1)


def test_weekday_nightly_skips_the_weekend(tmp_path: Path, world: LoopbackServer) -> None:
    settings = write_config(tmp_path, world, schedule='nightly: "30 6 * * 1-5", timezone: UTC, jitter_seconds: 0')
    friday_after = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    fire = nightly_trigger(settings).get_next_fire_time(None, friday_after)
    assert fire == datetime(2026, 11, 30, 6, 30, tzinfo=UTC)  # Monday, as cron means "1-5"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ('nightly: "0 5 * *", timezone: UTC', "schedule.nightly: '0 5 * *' is not a cron line of 5 fields"),
        ('nightly: "0 25 * * *", timezone: UTC', "schedule.nightly"),
        ('nightly: "0 5 * * *", timezone: Mars/Olympus', "schedule.timezone: 'Mars/Olympus' is not a known time zone"),
    ],
)
def test_a_bad_schedule_is_one_clear_config_error_on_load(
    tmp_path: Path, world: LoopbackServer, schedule: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=r"feeds\.yaml:\d+: ") as caught:
        write_config(tmp_path, world, schedule=schedule)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_job_defaults_coalesce_run_one_at_a_time_and_allow_hours_of_misfire(settings: Settings) -> None:
    assert job_defaults(settings) == {"coalesce": True, "max_instances": 1, "misfire_grace_time": 6 * 3600}


def test_jobs_are_built_from_the_config_and_the_stored_fetch_state(tmp_path: Path, world: LoopbackServer) -> None:
    settings = write_config(
        tmp_path,
        world,
        sources=f"""
  - {{name: fresh, kind: feed, url: "{world.url("/blog.xml")}", interval: 30m}}
  - {{name: checked, kind: feed, url: "{world.url("/blog.xml")}", interval: 6h}}
  - {{name: disabled, kind: feed, url: "{world.url("/blog.xml")}", enabled: false}}""",
    )
    with open_storage(settings.database_url) as storage:
        storage.sync_sources(settings.sources, NOW)
        checked_at = NOW + timedelta(hours=2)
        storage.record_fetch("checked", at=NOW - timedelta(hours=4), next_check=checked_at)
        scheduler = make_scheduler(settings, storage)
        planned = {job.job: job for job in scheduler.build_jobs()}
        jobs = {job.id: job for job in scheduler._scheduler.get_jobs()}

    assert set(planned) == {"poll:fresh", "poll:checked", NIGHTLY_JOB}  # a disabled source has no job
    fresh = planned["poll:fresh"].next_run
    assert fresh is not None and NOW <= fresh <= NOW + timedelta(minutes=3)  # never polled: soon, jitter <= 10 %
    assert planned["poll:checked"].next_run == checked_at  # the stored next check (backoff, max-age) holds
    assert planned[NIGHTLY_JOB].next_run is not None
    assert NOW.replace(day=27, hour=5) <= planned[NIGHTLY_JOB].next_run <= NOW.replace(day=27, hour=5, minute=1)
    # after each run a poll job fires one interval later, plus at most a tenth of it as jitter
    after = jobs["poll:fresh"].trigger.get_next_fire_time(fresh, fresh + timedelta(seconds=1))
    assert timedelta(minutes=30) <= after - fresh <= timedelta(minutes=33)
    later = jobs["poll:checked"].trigger.get_next_fire_time(checked_at, checked_at + timedelta(seconds=1))
    assert timedelta(hours=6) <= later - checked_at <= timedelta(hours=6, seconds=60)


# -- poll jobs --------------------------------------------------------------------------------------


def test_a_poll_job_polls_the_source_and_moves_to_its_next_check(
    settings: Settings, storage: Storage, world: LoopbackServer
) -> None:
    scheduler = make_scheduler(settings, storage)
    outcome = scheduler.poll_source("blog", NOW)
    assert (outcome.outcome, outcome.new) == ("ok", 3)
    assert outcome.next_check is not None
    assert timedelta(hours=1) <= outcome.next_check - NOW <= timedelta(hours=1.1)
    assert next_run_after(outcome, NOW) == outcome.next_check
    assert storage.recent_runs(1)[0]["kind"] == "schedule"
    # fired early (a CLI run polled it meanwhile, say): skipped, and the job moves to the next check
    early = scheduler.poll_source("blog", NOW + timedelta(minutes=10))
    assert (early.outcome, early.reason, early.next_check) == ("skipped", "not due", outcome.next_check)
    assert world.hits("/blog.xml") == 1


def test_backoff_grows_with_each_error_and_resets_on_success(
    settings: Settings, storage: Storage, world: LoopbackServer
) -> None:
    scheduler = make_scheduler(settings, storage)
    now, waits = NOW, []
    for _ in range(3):
        outcome = scheduler.poll_source("flaky", now)
        assert outcome.outcome == "failed" and "HTTP 500" in outcome.reason
        assert outcome.next_check is not None
        waits.append((outcome.next_check - now) / timedelta(hours=1))
        now = outcome.next_check
    for errors, wait in enumerate(waits, start=1):  # interval x 2^errors, plus up to 10 % jitter
        assert 2**errors <= wait <= 2**errors * 1.1

    world.add("/flaky.xml", rss(2), content_type="application/rss+xml")
    recovered = scheduler.poll_source("flaky", now)
    assert recovered.outcome == "ok" and recovered.next_check is not None
    assert timedelta(hours=1) <= recovered.next_check - now <= timedelta(hours=1.1)
    assert storage.source_states()["flaky"].error_count == 0


def test_a_paused_source_is_skipped_until_resumed(settings: Settings, storage: Storage, world: LoopbackServer) -> None:
    scheduler = make_scheduler(settings, storage)
    now = NOW
    for _ in range(4):  # backoff.pause_after: 4
        outcome = scheduler.poll_source("flaky", now)
        assert outcome.next_check is not None
        now = outcome.next_check
    assert storage.source_states()["flaky"].paused
    skipped = scheduler.poll_source("flaky", now)
    assert skipped.outcome == "skipped" and "aggregator sources resume flaky" in skipped.reason
    assert next_run_after(skipped, now) is None  # keeps its interval, checking for a resume
    assert world.hits("/flaky.xml") == 4

    storage.set_paused("flaky", False)  # what `aggregator sources resume flaky` does
    assert scheduler.poll_source("flaky", now).outcome == "failed"
    assert world.hits("/flaky.xml") == 5


def test_a_poll_job_waits_while_another_run_holds_the_lock(
    settings: Settings, storage: Storage, world: LoopbackServer
) -> None:
    assert storage.acquire_lock("run", "cron-host:4242", NOW, timedelta(minutes=30))
    scheduler = make_scheduler(settings, storage)
    outcome = scheduler.poll_source("blog", NOW)
    assert outcome.outcome == "locked" and "another run is in progress (cron-host:4242" in outcome.reason
    assert next_run_after(outcome, NOW) == NOW + timedelta(minutes=2)
    assert world.hits("/blog.xml") == 0
    # the holder crashed: its lease expires and the next try goes ahead
    assert scheduler.poll_source("blog", NOW + timedelta(minutes=31)).outcome == "ok"


def test_next_run_after_keeps_the_trigger_time_when_nothing_says_otherwise() -> None:
    assert next_run_after(JobOutcome("poll:x", "failed", "database is locked"), NOW) is None
    assert next_run_after(JobOutcome("poll:x", "ok", next_check=NOW - timedelta(seconds=1)), NOW) is None
    assert source_job_id("hf-blog") == "poll:hf-blog"


# -- the process: SIGTERM ---------------------------------------------------------------------------


class SchedulerProcess:
    """`python -m aggregator schedule` with its stderr read line by line in the background."""

    def __init__(self, config: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("AGGREGATOR_DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--config", str(config), "schedule"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=config.parent,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            record = json.loads(line)
            if record["event"] == event:
                return dict(record)
        raise AssertionError(f"no {event!r} event; log so far:\n{''.join(self.seen)}")

    def stop(self, timeout: float = 10.0) -> tuple[int, list[dict[str, Any]]]:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.05)  # let the reader thread drain the pipe
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, [json.loads(line) for line in self.seen]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_sigterm_lets_the_job_in_flight_finish_and_exits_0_with_a_clean_log(
    tmp_path: Path, loopback: LoopbackServer
) -> None:
    # Both jobs are due at start; they run one at a time in id order: a-fast, then b-slow.
    loopback.add("/fast.xml", rss(2), content_type="application/rss+xml")
    loopback.add("/slow.xml", rss(3, prefix="slow"), content_type="application/rss+xml", delay=1.0)
    settings = write_config(
        tmp_path,
        loopback,
        schedule='nightly: "0 5 * * *", timezone: UTC, jitter_seconds: 0',
        sources=f"""
  - {{name: a-fast, kind: feed, url: "{loopback.url("/fast.xml")}", interval: 1h}}
  - {{name: b-slow, kind: feed, url: "{loopback.url("/slow.xml")}", interval: 1h}}""",
    )
    process = SchedulerProcess(settings.path)
    try:
        started = process.wait_for("scheduler started")
        assert started["jobs"] == 3
        first = process.wait_for("job")
        assert {"job", "outcome", "reason", "new", "updated", "failed", "next_run", "ms"} <= set(first)
        assert (first["job"], first["outcome"], first["new"]) == ("poll:a-fast", "ok", 2)
        deadline = time.monotonic() + 10
        while loopback.hits("/slow.xml") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loopback.hits("/slow.xml") == 1, "the second poll never started"
        code, records = process.stop()  # while b-slow waits for its answer
    finally:
        process.kill()

    assert code == 0
    assert [r for r in records if r["level"] not in ("info", "debug")] == []
    events = [r["event"] for r in records]
    slow = next(r for r in records if r["event"] == "job" and r["job"] == "poll:b-slow")
    assert (slow["outcome"], slow["new"]) == ("ok", 3)  # finished, not cut off
    assert events.index("scheduler stopping") < events.index("scheduler stopped")
    assert records[-1]["event"] == "scheduler stopped" and records[-1]["signal"] == "SIGTERM"
    fetched = next(r for r in records if r["event"] == "fetched" and r["source"] == "a-fast")
    assert {"source", "url", "status", "items", "ms"} <= set(fetched)
    assert (fetched["url"], fetched["status"], fetched["items"]) == (loopback.url("/fast.xml"), "new", 2)
    with open_storage(settings.database_url) as storage:
        assert storage.item_count() == 5
        assert storage.lock_holder("run") is None  # released on the way out


def test_status_shows_the_nightly_and_the_next_source_polls(settings: Settings, storage: Storage) -> None:
    from aggregator import status

    scheduler = make_scheduler(settings, storage)
    polled = scheduler.poll_source("blog", NOW)
    storage.set_paused("flaky", True)
    data = status.collect(settings, storage, NOW)
    assert data["next_jobs"] == [
        {"job": NIGHTLY_JOB, "at": "2026-11-27T05:00:00+00:00"},
        {"job": "poll:blog", "at": polled.next_check.isoformat() if polled.next_check else None},
    ]  # a paused source has no next poll
    lines = status.describe(data)
    assert "next nightly: 2026-11-27 05:00 UTC" in lines
    assert "sources: 2, failing 0, paused 1" in lines
