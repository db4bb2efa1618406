"""One poll of every due source, as one straight line:

    feeds.yaml -> sources/* -> fetch (aiohttp, guarded) -> parse (fastfeedparser | feedparser | arxiv)
      -> normalize -> storage (one transaction per source) -> dedupe (story clusters)
      -> classify (section, type, confidence, relevance) -> RunReport

`run_once(settings, storage, now)` is that line. The CLI's `run`, the scheduler's jobs, the cron
line and every worker call it. Feeds and GitHub releases go through the feed lane (many in flight,
a per-host limit); arXiv queries go through the arXiv lane (one request every `delay_seconds`),
which runs beside the feed lane, never before it. A failing source becomes a FetchResult with
its one-line error; it never stops the batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy.engine import Connection

from aggregator.config import Settings, parse_interval
from aggregator.errors import AggregatorError, FetchError
from aggregator.fetch import Fetcher, FetchLimits, Response
from aggregator.normalize import normalize_all
from aggregator.sources import arxiv as arxiv_source
from aggregator.sources import github, rss
from aggregator.storage import Storage, StoreCounts
from aggregator.types import FetchResult, Item, ItemKind, RawEntry, RunReport, Source, SourceState

log = logging.getLogger("aggregator.pipeline")

ProgressCallback = Callable[[FetchResult], None]
T = TypeVar("T")
_KIND_OF_SOURCE: dict[str, ItemKind] = {"feed": "blog", "github": "release", "arxiv": "paper"}
_ARXIV_PACERS: dict[float, arxiv_source.ArxivPacer] = {}
_ARXIV_PACERS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Which sources one run polls, and how."""

    names: tuple[str, ...] = ()  # empty = every enabled source
    due_only: bool = False
    classify: bool = True
    kind: str = "run"  # recorded with the run: run | poll | nightly | schedule | worker
    lease_owner: str | None = None  # a worker's name: each source's lease is released with its result
    take_leased: bool = False  # `poll`: sources named on purpose are fetched even if a worker holds them


def run_once(
    settings: Settings,
    storage: Storage,
    now: datetime | None = None,
    options: RunOptions = RunOptions(),
    progress: ProgressCallback | None = None,
) -> RunReport:
    """Poll the chosen sources, store what they say, classify what is new; record and return the report."""
    started = now or datetime.now(UTC)
    storage.sync_sources(settings.sources, started)
    states = storage.source_states()
    chosen, leased = _leave_leased(storage, select_sources(settings, states, started, options), started, options)
    return poll_sources(settings, storage, chosen, states, started, options, progress, skipped=leased)


def poll_sources(
    settings: Settings,
    storage: Storage,
    chosen: Sequence[Source],
    states: dict[str, SourceState],
    started: datetime,
    options: RunOptions = RunOptions(),
    progress: ProgressCallback | None = None,
    *,
    skipped: Sequence[FetchResult] = (),
) -> RunReport:
    """run_once after choosing: poll `chosen` (fetch state from `states`), store, cluster, classify,
    record. A worker calls it on the sources it leased, with their state as its claim returned it."""
    results = asyncio.run(_poll_all(settings, storage, chosen, states, started, progress, options.lease_owner))
    notes: list[str] = []
    new_ids = [i for r in results for i in r[1]]
    if settings.model.dedupe.enabled and new_ids:
        from aggregator.clusters import cluster_new

        # Clustering reads neighbours, decides and writes: one process at a time (workers, runs).
        with storage.serialized("dedupe"):
            cluster_new(storage, settings, new_ids)
    if options.classify:
        # The model stack (scikit-learn, 1-3 s to import) loads only here, so commands and runs
        # that never classify start fast.
        from aggregator.classify.stage import classify_pending

        # A worker classifies only what it stored; a run also catches up on anything left unclassified.
        only = new_ids if options.lease_owner else None
        notes += classify_pending(storage, settings, started, ids=only)
    report = RunReport(started, datetime.now(UTC), (*(r[0] for r in results), *skipped), tuple(notes))
    storage.record_run(report, options.kind)
    return report


def _leave_leased(
    storage: Storage, chosen: list[Source], now: datetime, options: RunOptions
) -> tuple[list[Source], list[FetchResult]]:
    """A run leaves the sources a live worker leases to that worker (they are reported as skipped);
    `poll` names its sources on purpose and polls them anyway."""
    if options.lease_owner is not None or options.take_leased or not chosen:
        return chosen, []
    leases = storage.leased_sources(now)
    skipped = [
        FetchResult(s.name, "skipped", error=f"leased by worker {owner} until {until:%H:%M:%S} UTC")
        for s in chosen
        if s.name in leases
        for owner, until in [leases[s.name]]
    ]
    return [s for s in chosen if s.name not in leases], skipped


def select_sources(
    settings: Settings, states: dict[str, SourceState], now: datetime, options: RunOptions
) -> list[Source]:
    """Sources to poll: named ones (even if disabled or paused: the user asked), else the enabled,
    unpaused ones, and with `due_only` only those whose next check has come."""
    if options.names:
        return [settings.source(name) for name in options.names]
    chosen = []
    for source in settings.sources:
        state = states.get(source.name)
        if not source.enabled or (state and state.paused):
            continue
        if options.due_only and state and state.next_check and state.next_check > now:
            continue
        chosen.append(source)
    return chosen


def next_check_after(
    source: Source,
    *,
    now: datetime,
    errors: int,
    settings: Settings,
    retry_after: float | None = None,
    max_age: float | None = None,
    rng: random.Random | None = None,
) -> datetime:
    """When to poll again: the interval, doubled per consecutive error (capped), a little jitter so
    sources spread out, and never sooner than the server asked (Retry-After, Cache-Control max-age)."""
    rng = rng or random.Random()
    cap = parse_interval(settings.model.backoff.max_interval).total_seconds()
    seconds = min(source.interval.total_seconds() * (2 ** min(errors, 20)), max(cap, source.interval.total_seconds()))
    seconds *= 1 + rng.uniform(0, 0.1)
    for floor in (retry_after, max_age):
        if floor is not None:
            seconds = max(seconds, min(floor, cap))
    return now + timedelta(seconds=seconds)


def shared_arxiv_pacer(settings: Settings, storage: Storage) -> arxiv_source.ArxivPacer:
    """The pacer of a run's arXiv lane: booked through the database, so every run and worker using
    it keeps arXiv's pace together (an in-memory database has no other users: the process's own)."""
    delay = settings.model.arxiv.delay_seconds
    if not storage.shared:
        return arxiv_pacer(delay)
    return arxiv_source.SharedArxivPacer(
        delay,
        reserve=lambda spacing: storage.reserve_slot("arxiv", spacing),
        push=lambda seconds: storage.push_slot("arxiv", seconds),
    )


def arxiv_pacer(delay_seconds: float) -> arxiv_source.ArxivPacer:
    """The process's one arXiv pacer: consecutive runs (the scheduler's jobs, say) share it, so
    arXiv's one request every delay_seconds holds across runs, not only inside one."""
    with _ARXIV_PACERS_LOCK:
        return _ARXIV_PACERS.setdefault(delay_seconds, arxiv_source.ArxivPacer(delay_seconds))


# -- the two lanes -----------------------------------------------------------------------------


async def _poll_all(
    settings: Settings,
    storage: Storage,
    chosen: Sequence[Source],
    states: dict[str, SourceState],
    now: datetime,
    progress: ProgressCallback | None,
    lease_owner: str | None = None,
) -> list[tuple[FetchResult, list[int]]]:
    limits = fetch_limits(settings)
    feeds = [s for s in chosen if s.kind != "arxiv"]
    papers = [s for s in chosen if s.kind == "arxiv"]
    # Parsing and the database run in threads so the event loop keeps fetching; one writer thread
    # keeps SQLite writes in order.
    with (
        ThreadPoolExecutor(2, thread_name_prefix="parse") as parsers,
        ThreadPoolExecutor(1, thread_name_prefix="store") as writer,
    ):
        lane = _Lane(settings, storage, states, now, parsers, writer, progress, lease_owner)
        # The arXiv lane has its own connections and slots: a paced request leaves when its turn
        # comes instead of queueing behind the feed lane for a slot (and landing next to the next one).
        async with Fetcher(limits) as fetcher, Fetcher(limits) as arxiv_fetcher:
            feed_lane = asyncio.gather(*(lane.poll_feed(fetcher, s) for s in feeds))
            arxiv_lane = lane.poll_arxiv_sources(arxiv_fetcher, papers)
            feed_results, arxiv_results = await asyncio.gather(feed_lane, arxiv_lane)
    by_name = {r[0].source: r for r in [*feed_results, *arxiv_results]}
    return [by_name[s.name] for s in chosen]


def fetch_limits(settings: Settings) -> FetchLimits:
    f = settings.model.fetch
    return FetchLimits(
        timeout=f.timeout,
        connect_timeout=f.connect_timeout,
        read_timeout=f.read_timeout,
        max_bytes=f.max_bytes,
        max_redirects=f.max_redirects,
        concurrency=f.concurrency,
        per_host=f.per_host,
        allow_private_addresses=f.allow_private_addresses,
    )


class _Lane:
    """Shared machinery of both lanes: parse off the loop, store in one transaction per source."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        states: dict[str, SourceState],
        now: datetime,
        parsers: ThreadPoolExecutor,
        writer: ThreadPoolExecutor,
        progress: ProgressCallback | None,
        lease_owner: str | None = None,
    ) -> None:
        self.lease_owner = lease_owner
        self.settings = settings
        self.storage = storage
        self.states = states
        self.now = now
        self.parsers = parsers
        self.writer = writer
        self.progress = progress
        self.urls = {s.name: s.url for s in settings.sources}

    async def poll_feed(self, fetcher: Fetcher, source: Source) -> tuple[FetchResult, list[int]]:
        started = time.perf_counter()
        state = self.states.get(source.name) or SourceState(source.name)
        try:
            response = await fetcher.get(source.url, etag=state.etag, last_modified=state.last_modified)
            if response.status == 304:
                result = FetchResult(source.name, "not_modified", http_status=304)
                return self._done(*await self._store(source, [], result, response, state), started)
            loop = asyncio.get_running_loop()
            items = await loop.run_in_executor(self.parsers, self._parse, source, response)
            result = FetchResult(source.name, "new", http_status=response.status)
            return self._done(*await self._store(source, items, result, response, state), started)
        except AggregatorError as exc:
            return self._done(await self._fail(source, exc, state), [], started)
        except Exception as exc:  # a bug in one source's handling must not stop the batch
            log.exception("unexpected error polling %s", source.name)
            error = AggregatorError(f"internal error: {type(exc).__name__}: {exc}")
            return self._done(await self._fail(source, error, state), [], started)

    async def poll_arxiv_sources(
        self, fetcher: Fetcher, sources: Sequence[Source]
    ) -> list[tuple[FetchResult, list[int]]]:
        # One pace for every process using this database: arXiv's one request every delay_seconds
        # holds across queries, runs and workers.
        pacer = shared_arxiv_pacer(self.settings, self.storage)
        return [await self._poll_arxiv(fetcher, pacer, source) for source in sources]

    async def _poll_arxiv(
        self, fetcher: Fetcher, pacer: arxiv_source.ArxivPacer, source: Source
    ) -> tuple[FetchResult, list[int]]:
        started = time.perf_counter()
        state = self.states.get(source.name) or SourceState(source.name)
        totals = FetchResult(source.name, "new", http_status=200)
        ids: list[int] = []

        async def store_page(entries: list[RawEntry]) -> None:
            # Each page is stored as it arrives: a later failing page loses nothing already read.
            nonlocal totals
            loop = asyncio.get_running_loop()
            items = await loop.run_in_executor(self.parsers, self._normalize, source, entries)
            counts = await self._write(lambda conn: self.storage.store_items(items, self.now, conn=conn))
            ids.extend(counts.new_ids + counts.changed_ids)
            totals = _add_counts(totals, counts)

        try:
            arxiv = self.settings.model.arxiv
            await arxiv_source.fetch_arxiv(
                source, fetcher, pacer, page_size=arxiv.page_size, num_retries=arxiv.retries, on_page=store_page
            )
        except AggregatorError as exc:
            failed = await self._fail(source, exc, state)
            return self._done(replace(totals, status="error", error=failed.error), ids, started)
        result, _ = await self._store(source, [], totals, None, state)
        return self._done(result, ids, started)

    # -- stages inside a lane -------------------------------------------------------------------

    def _parse(self, source: Source, response: Response) -> list[Item]:
        body, url, headers = response.body, response.url, response.headers
        if source.kind == "github":
            entries = github.entries_from_releases(body, source, url=url, headers=headers)
        else:
            entries = rss.entries_from_feed(body, source, url=url, headers=headers)
        return self._normalize(source, entries)

    def _normalize(self, source: Source, entries: Sequence[RawEntry]) -> list[Item]:
        kind = _KIND_OF_SOURCE[source.kind]
        return normalize_all(entries, kind=kind, now=self.now)

    async def _store(
        self,
        source: Source,
        items: list[Item],
        result: FetchResult,
        response: Response | None,
        state: SourceState,
    ) -> tuple[FetchResult, list[int]]:
        """Items and the source's fetch state in one transaction."""
        max_age = response.max_age if response else None
        next_check = next_check_after(source, now=self.now, errors=0, settings=self.settings, max_age=max_age)
        etag = response.etag if response else None
        last_modified = response.last_modified if response else None
        if response is not None and response.status == 304:
            etag, last_modified = etag or state.etag, last_modified or state.last_modified

        def write(conn: Connection) -> tuple[FetchResult, list[int]]:
            counts = self.storage.store_items(items, self.now, conn=conn)
            self.storage.record_fetch(
                source.name,
                at=self.now,
                next_check=next_check,
                etag=etag,
                last_modified=last_modified,
                lease_owner=self.lease_owner,
                conn=conn,
            )
            done = _add_counts(result, counts)
            if done.status == "new" and done.new == 0 and done.updated == 0:
                done = replace(done, status="unchanged")
            return done, list(counts.new_ids + counts.changed_ids)

        return await self._write(write)

    async def _fail(self, source: Source, exc: AggregatorError, state: SourceState) -> FetchResult:
        message = " ".join(str(exc).split()) or type(exc).__name__
        status = exc.status if isinstance(exc, FetchError) else None
        retry_after = exc.retry_after if isinstance(exc, FetchError) else None
        errors = state.error_count + 1
        next_check = next_check_after(
            source, now=self.now, errors=errors, settings=self.settings, retry_after=retry_after
        )
        pause_after = self.settings.model.backoff.pause_after
        await self._write(
            lambda conn: self.storage.record_fetch(
                source.name,
                at=self.now,
                next_check=next_check,
                error=message,
                pause_after=pause_after,
                lease_owner=self.lease_owner,
                conn=conn,
            )
        )
        return FetchResult(source.name, "error", error=message, http_status=status)

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run fn in one transaction on the single writer thread."""

        def in_transaction() -> T:
            with self.storage.transaction("store a source") as conn:
                return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(self.writer, in_transaction)

    def _done(self, result: FetchResult, ids: list[int], started: float) -> tuple[FetchResult, list[int]]:
        done = replace(result, ms=(time.perf_counter() - started) * 1000)
        log.info(
            "fetched",
            extra={
                "source": done.source,
                "url": self.urls.get(done.source),
                "status": done.status,
                "items": done.new + done.updated,
                "ms": round(done.ms),
            },
        )
        if self.progress:
            self.progress(done)
        return done, ids


def _add_counts(result: FetchResult, counts: StoreCounts) -> FetchResult:
    return replace(
        result,
        new=result.new + counts.new,
        updated=result.updated + counts.updated,
        unchanged=result.unchanged + counts.unchanged,
    )
