"""Scale-out workers: leases (claim, per-host limits, expiry, release) on SQLite and PostgreSQL,
the worker loop in-process, and, on PostgreSQL (AGGREGATOR_TEST_PG_URL), worker processes over
loopback feeds: each feed fetched once per cycle, nothing stored twice, a SIGKILLed worker's sources
taken over after its leases expire, arXiv's pace kept across workers."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from aggregator.config import Settings, load_settings
from aggregator.errors import ConfigError, StorageError
from aggregator.pipeline import RunOptions, run_once
from aggregator.sources.arxiv import SharedArxivPacer
from aggregator.storage import Storage, open_storage
from aggregator.storage import schema as t
from aggregator.storage.sql import MIGRATIONS
from aggregator.types import Source
from aggregator.worker import Worker, WorkerOptions
from tests.server import HANG_LIMIT, LoopbackServer
from tests.test_pipeline import arxiv_page, rss

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PG_ONLY = pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


def feed_sources(n: int, hosts: int = 1) -> list[Source]:
    return [Source(f"s{i:03d}", "feed", f"http://host{i % hosts}.example.org/{i}.xml") for i in range(n)]


def names(sources: list[Source]) -> list[str]:
    return [s.name for s in sources]


# -- leases, on each backend ----------------------------------------------------------------------


def test_claims_never_lease_one_source_to_two_workers(storage: Storage) -> None:
    sources = feed_sources(10, hosts=10)
    storage.sync_sources(sources, NOW)
    first = storage.claim_sources("w1", NOW, lease=MINUTE, limit=6, names=names(sources))
    second = storage.claim_sources("w2", NOW, lease=MINUTE, limit=6, names=names(sources))
    assert len(first) == 6 and len(second) == 4
    assert not {s.name for s in first} & {s.name for s in second}
    assert storage.claim_sources("w3", NOW, lease=MINUTE, limit=6, names=names(sources)) == []
    leases = storage.leased_sources(NOW)
    assert {name for name, (owner, _) in leases.items() if owner == "w2"} == {s.name for s in second}


def test_claim_takes_the_most_overdue_first_and_only_due_enabled_configured_sources(storage: Storage) -> None:
    sources = feed_sources(6, hosts=6)
    storage.sync_sources([*sources, Source("off", "feed", "http://off.example.org/x", enabled=False)], NOW)
    storage.record_fetch("s000", at=NOW, next_check=NOW + MINUTE)  # not due yet
    storage.record_fetch("s001", at=NOW, next_check=NOW - 2 * MINUTE)
    storage.record_fetch("s002", at=NOW, next_check=NOW - MINUTE)
    storage.set_paused("s003", True)
    claimed = storage.claim_sources("w1", NOW, lease=MINUTE, limit=10, names=[*names(sources)[:5], "off"])
    # never checked first, then the longest overdue; s005 is not in this worker's feeds.yaml
    assert [s.name for s in claimed] == ["s004", "s001", "s002"]


def test_claim_returns_the_fetch_state_the_worker_needs(storage: Storage) -> None:
    storage.sync_sources(feed_sources(1), NOW)
    storage.record_fetch("s000", at=NOW - MINUTE, next_check=NOW, etag='"v7"', last_modified="Tue, 24 Nov 2026")
    (state,) = storage.claim_sources("w1", NOW, lease=MINUTE, limit=1, names=["s000"])
    assert (state.etag, state.last_modified, state.last_success) == ('"v7"', "Tue, 24 Nov 2026", NOW - MINUTE)


def test_per_host_limit_counts_every_workers_live_leases(storage: Storage) -> None:
    sources = feed_sources(9, hosts=3)  # three sources on each of three hosts
    storage.sync_sources(sources, NOW)
    first = storage.claim_sources("w1", NOW, lease=MINUTE, limit=4, names=names(sources), per_host=2)
    second = storage.claim_sources("w2", NOW, lease=MINUTE, limit=10, names=names(sources), per_host=2)
    hosts: dict[str, int] = {}
    for state in [*first, *second]:
        host = f"host{int(state.name[1:]) % 3}"
        hosts[host] = hosts.get(host, 0) + 1
    assert len(first) == 4 and len(second) == 2
    assert hosts == {"host0": 2, "host1": 2, "host2": 2}
    # a source stored releases its lease: its host has room again
    storage.record_fetch(first[0].name, at=NOW, next_check=NOW + MINUTE, lease_owner="w1")
    third = storage.claim_sources("w3", NOW, lease=MINUTE, limit=10, names=names(sources), per_host=2)
    assert len(third) == 1


def test_expired_leases_are_taken_over_and_released_ones_are_free(storage: Storage) -> None:
    sources = feed_sources(4, hosts=4)
    storage.sync_sources(sources, NOW)
    crashed = storage.claim_sources("crashed", NOW, lease=MINUTE, limit=4, names=names(sources))
    assert storage.claim_sources("w2", NOW + MINUTE / 2, lease=MINUTE, limit=4, names=names(sources)) == []
    later = NOW + 2 * MINUTE
    taken = storage.claim_sources("w2", later, lease=MINUTE, limit=4, names=names(sources))
    assert {s.name for s in taken} == {s.name for s in crashed}
    # the crashed worker's late result no longer ends w2's lease
    storage.record_fetch(taken[0].name, at=later, next_check=later + MINUTE, lease_owner="crashed")
    assert storage.leased_sources(later)[taken[0].name][0] == "w2"
    assert storage.release_leases("w2", [taken[1].name]) == 1
    assert [s.name for s in storage.claim_sources("w3", later, lease=MINUTE, limit=4, names=names(sources))] == [
        taken[1].name
    ]


def test_renewal_extends_only_the_owners_leases(storage: Storage) -> None:
    sources = feed_sources(2, hosts=2)
    storage.sync_sources(sources, NOW)
    storage.claim_sources("w1", NOW, lease=MINUTE, limit=1, names=names(sources))
    storage.claim_sources("w2", NOW, lease=MINUTE, limit=1, names=names(sources))
    assert storage.renew_leases("w1", NOW + MINUTE / 2, MINUTE) == 1
    late = NOW + MINUTE + timedelta(seconds=10)
    assert [owner for owner, _ in storage.leased_sources(late).values()] == ["w1"]


def test_a_claim_needs_a_positive_lease(storage: Storage) -> None:
    storage.sync_sources(feed_sources(1), NOW)
    with pytest.raises(StorageError, match="lease for 'w1' must be longer than 0 seconds"):
        storage.claim_sources("w1", NOW, lease=timedelta(0), limit=1, names=["s000"])


def test_reserved_slots_are_spaced_whoever_reserves(storage: Storage) -> None:
    waits = [storage.reserve_slot("arxiv", 0.5) for _ in range(3)]
    assert waits[0] == 0.0
    assert 0.4 < waits[1] <= 0.5 and 0.9 < waits[2] <= 1.0
    storage.push_slot("arxiv", 5.0)  # a Retry-After: everyone waits
    assert 4.5 < storage.reserve_slot("arxiv", 0.5) <= 5.0
    assert storage.reserve_slot("other", 0.5) == 0.0  # keys are paced separately


async def test_two_processes_arxiv_pacers_share_one_pace_through_the_database(storage: Storage) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def pacer() -> SharedArxivPacer:
        return SharedArxivPacer(
            0.5,
            reserve=lambda spacing: storage.reserve_slot("arxiv", spacing),
            push=lambda seconds: storage.push_slot("arxiv", seconds),
            sleep=sleep,
        )

    # two pacers stand for two worker processes: neither knows the other's turns, the database does
    first, second = pacer(), pacer()
    for turn in (first, second, first):
        await turn.wait_turn()
    assert len(slept) == 2  # the very first request waits for nobody
    assert 0.5 < slept[0] <= 0.6 and 1.1 < slept[1] <= 1.2  # delay plus the jitter margin, cumulative
    second.back_off(5.0)  # a Retry-After seen by one holds for the other
    await first.wait_turn()
    assert 4.5 < slept[-1] <= 5.0


def test_sync_records_each_sources_host(storage: Storage) -> None:
    storage.sync_sources([Source("a", "feed", "https://Blog.Example.org:8443/feed")], NOW)
    with storage.engine.connect() as conn:
        assert conn.execute(sa.select(t.sources.c.host)).scalar_one() == "blog.example.org"


def test_upgrading_gives_sources_stored_before_their_host(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")  # the schema before workers
        conn.execute(
            sa.text(
                "INSERT INTO sources (name, kind, url, enabled, interval_seconds, error_count, paused, created) "
                "VALUES ('old', 'feed', 'https://Old.Example.org/feed', 1, 60, 0, 0, '2026-11-01 00:00:00')"
            )
        )
    engine.dispose()
    with open_storage(url) as storage, storage.engine.connect() as conn:
        assert conn.execute(sa.select(t.sources.c.host)).scalar_one() == "old.example.org"


def test_serialized_blocks_run_one_at_a_time_across_connections(storage: Storage) -> None:
    inside: list[str] = []
    overlaps: list[bool] = []

    def hold(name: str) -> None:
        with storage.serialized("dedupe"):
            inside.append(name)
            overlaps.append(len(inside) > 1)
            time.sleep(0.2)
            inside.remove(name)

    threads = [threading.Thread(target=hold, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert overlaps == [False, False, False]


# -- the worker loop, in-process (SQLite) -----------------------------------------------------------


def write_config(
    tmp_path: Path, server: LoopbackServer, db_url: str, feeds: int, *, arxiv: int = 0, delay: float = 0.01
) -> Settings:
    """Loopback feeds f0000.. (and arXiv queries a0..); no model and no story dedupe, which are not
    what these tests are about and would only slow them down."""
    lines = [f'  - {{name: f{i:04d}, kind: feed, url: "{server.url(f"/f/{i}.xml")}"}}' for i in range(feeds)]
    lines += [f'  - {{name: a{i}, kind: arxiv, query: "cat:cs.{i}", max_results: 3}}' for i in range(arxiv)]
    text = (
        f'database: "{db_url}"\nmodels_dir: {tmp_path}/no-models\ndedupe: {{enabled: false}}\n'
        "fetch: {timeout: 20, allow_private_addresses: true, per_host: 64, concurrency: 4}\n"
        f'arxiv: {{api_url: "{server.url("/api/query")}", delay_seconds: {delay}, page_size: 3}}\n'
        "sources:\n" + "\n".join(lines) + "\n"
    )
    path = tmp_path / "feeds.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, env={})


def serve_feeds(server: LoopbackServer, feeds: int, entries: int = 3) -> None:
    for i in range(feeds):
        server.add(f"/f/{i}.xml", rss(entries, prefix=f"f{i}", title=f"Feed {i} post"), etag=f'"f{i}"')


def test_worker_until_idle_polls_each_due_source_once_and_releases(
    tmp_path: Path, loopback: LoopbackServer, memory_storage: Storage
) -> None:
    serve_feeds(loopback, 30)
    settings = write_config(tmp_path, loopback, "sqlite://", 30)
    summary = Worker(settings, memory_storage, WorkerOptions(name="w1", batch=7, until_idle=True)).run()
    assert (summary.sources, summary.batches, summary.new, summary.stopped_by) == (30, 5, 90, "idle")
    assert all(loopback.hits(f"/f/{i}.xml") == 1 for i in range(30))
    assert memory_storage.item_count() == 90
    assert memory_storage.leased_sources(datetime.now(UTC)) == {}
    # a second idle worker finds nothing due
    again = Worker(settings, memory_storage, WorkerOptions(name="w2", until_idle=True)).run()
    assert (again.sources, again.stopped_by) == (0, "idle")


def test_worker_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="worker batch must be at least 1"):
        WorkerOptions(name="w", batch=0)
    with pytest.raises(ConfigError, match="worker name must not be empty"):
        WorkerOptions(name=" ")


def test_a_run_leaves_sources_leased_by_a_live_worker(
    tmp_path: Path, loopback: LoopbackServer, memory_storage: Storage
) -> None:
    serve_feeds(loopback, 3)
    settings = write_config(tmp_path, loopback, "sqlite://", 3)
    memory_storage.sync_sources(settings.sources, NOW)
    memory_storage.claim_sources("busy-worker", NOW, lease=MINUTE, limit=1, names=["f0001"])
    report = run_once(settings, memory_storage, NOW + timedelta(seconds=5))
    by_source = {r.source: r for r in report.results}
    assert by_source["f0001"].status == "skipped"
    assert "leased by worker busy-worker" in (by_source["f0001"].error or "")
    assert loopback.hits("/f/1.xml") == 0 and loopback.hits("/f/0.xml") == 1
    # `poll` names a source on purpose: polled even while leased
    poll = RunOptions(names=("f0001",), kind="poll", take_leased=True)
    run_once(settings, memory_storage, NOW + timedelta(seconds=6), poll)
    assert loopback.hits("/f/1.xml") == 1


# -- worker processes ---------------------------------------------------------------------------------


def start_worker(config: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "aggregator", "--config", str(config), "worker", "--json", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(worker: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err[-2000:]
    return out


@pytest.fixture
def killed_workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes a test starts; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_finishes_the_batch_in_flight_releases_and_exits_0(
    tmp_path: Path, loopback: LoopbackServer, killed_workers: list[subprocess.Popen[str]]
) -> None:
    serve_feeds(loopback, 4)
    loopback.add("/f/3.xml", rss(3, prefix="slow"), delay=1.5)
    db = f"sqlite:///{tmp_path}/w.db"
    settings = write_config(tmp_path, loopback, db, 4)
    worker = start_worker(settings.path, "--name", "w1", "--poll-interval", "60")
    killed_workers.append(worker)
    wait_until(lambda: loopback.hits("/f/3.xml") == 1, "the worker to request the slow feed")
    worker.send_signal(signal.SIGTERM)
    out = finish(worker)
    assert '"stopped_by": "signal"' in out and '"sources": 4' in out
    with open_storage(db) as storage:
        assert storage.item_count() == 12  # the slow feed's items too: the batch was finished
        assert storage.leased_sources(datetime.now(UTC)) == {}


@PG_ONLY
def test_four_worker_processes_fetch_each_of_1000_feeds_once_per_cycle(
    tmp_path: Path, loopback: LoopbackServer, storage: Storage
) -> None:
    serve_feeds(loopback, 1000, entries=2)
    config = write_config(tmp_path, loopback, storage.url, 1000).path
    workers = [start_worker(config, "--until-idle", "--name", f"w{n}", "--batch", "50") for n in range(4)]
    summaries = [json.loads(finish(w)) for w in workers]
    assert all(loopback.hits(f"/f/{i}.xml") == 1 for i in range(1000))
    assert storage.item_count() == 2000
    assert sum(s["new"] for s in summaries) == 2000  # each item counted new by one worker only
    assert all(s["sources"] > 0 for s in summaries)  # the work was shared
    assert all(s.last_success is not None for s in storage.source_states().values())

    # the next cycle: every source due again; fetched once more each (conditional GET), nothing new
    with storage.engine.begin() as conn:
        conn.execute(t.sources.update().values(next_check=None))
    workers = [start_worker(config, "--until-idle", "--name", f"w{n}", "--batch", "50") for n in range(4)]
    for worker in workers:
        finish(worker)
    assert all(loopback.hits(f"/f/{i}.xml") == 2 for i in range(1000))
    assert storage.item_count() == 2000


@PG_ONLY
def test_a_killed_workers_sources_are_polled_by_the_others_after_its_leases_expire(
    tmp_path: Path, loopback: LoopbackServer, storage: Storage, killed_workers: list[subprocess.Popen[str]]
) -> None:
    doomed_alive = threading.Event()
    doomed_alive.set()
    for i in range(40):
        add_hanging_while(doomed_alive, loopback, f"/f/{i}.xml", rss(3, prefix=f"f{i}"))
    config = write_config(tmp_path, loopback, storage.url, 40).path
    doomed = start_worker(config, "--name", "doomed", "--batch", "10", "--lease", "2s", "--no-classify")
    killed_workers.append(doomed)

    def doomed_leases() -> set[str]:
        return {name for name, (owner, _) in storage.leased_sources(datetime.now(UTC)).items() if owner == "doomed"}

    paths = {f"f{i:04d}": f"/f/{i}.xml" for i in range(40)}
    wait_until(lambda: len(doomed_leases()) == 10 and any(loopback.hits(p) for p in paths.values()),
               "the first batch to be in flight")  # fmt: skip
    held = doomed_leases()
    doomed.kill()
    doomed.wait()
    doomed_alive.clear()
    hits_before = {name: loopback.hits(path) for name, path in paths.items()}
    assert storage.item_count() == 0  # nothing of the batch in flight was stored
    others = [start_worker(config, "--until-idle", "--name", f"w{n}", "--lease", "2s", "--no-classify")
              for n in range(2)]  # fmt: skip
    for worker in others:
        finish(worker)
    assert storage.item_count() == 120
    # each of the killed worker's sources was fetched once more, by a survivor, after its lease expired
    assert all(loopback.hits(paths[name]) == hits_before[name] + 1 for name in held)
    assert all(s.last_success is not None for s in storage.source_states().values())


@PG_ONLY
def test_arxiv_requests_across_workers_keep_the_delay(
    tmp_path: Path, loopback: LoopbackServer, storage: Storage
) -> None:
    def reply(request: object) -> tuple[int, dict[str, str], bytes]:
        query = dict(part.split("=", 1) for part in request.query.split("&"))  # type: ignore[attr-defined]
        ids = [f"2611.{int(query['search_query'][-1]):03d}{n:02d}v1" for n in range(3)]
        return 200, {"Content-Type": "application/atom+xml"}, arxiv_page(ids, 3, 0).encode()

    loopback.add_handler("/api/query", reply)
    delay = 0.3
    config = write_config(tmp_path, loopback, storage.url, 0, arxiv=8, delay=delay).path
    workers = [start_worker(config, "--until-idle", "--name", f"w{n}", "--batch", "2", "--no-classify")
               for n in range(3)]  # fmt: skip
    for worker in workers:
        finish(worker)
    times = sorted(r.at for r in loopback.requests("/api/query"))
    assert len(times) == 8
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= delay, gaps
    assert storage.item_count(source="a5") == 3


# -- helpers ------------------------------------------------------------------------------------------


def add_hanging_while(hang: threading.Event, server: LoopbackServer, path: str, body: str) -> None:
    """Requests to `path` get no answer while `hang` is set (their worker is killed meanwhile)."""
    payload = body.encode()

    def reply(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        if hang.is_set():
            handler.close_connection = True
            release.wait(HANG_LIMIT)
            return
        server.write_head(handler, 200, {"Content-Type": "application/rss+xml"}, len(payload))
        handler.wfile.write(payload)

    server.add_raw(path, reply)


def wait_until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
