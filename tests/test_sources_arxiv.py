"""sources.arxiv: paged arXiv queries through the loopback server, with pacing and retries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from aggregator.errors import ConfigError, FetchError
from aggregator.fetch import Fetcher, FetchLimits
from aggregator.sources import arxiv as arxiv_source
from aggregator.sources.arxiv import ArxivPacer, fetch_arxiv
from aggregator.types import RawEntry, Source
from tests.server import LoopbackServer, Reply, RequestRecord

PAGE_FILES = {"0": "page-0.xml", "2": "page-2.xml", "4": "page-4.xml"}


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def source_for(loopback: LoopbackServer, max_results: int = 10) -> Source:
    return Source(
        name="arxiv-cl", kind="arxiv", url=loopback.url("/api/query"), query="cat:cs.CL", max_results=max_results
    )


def pages_from(feed_dir: Path, files: dict[str, str]) -> Callable[[RequestRecord], Reply]:
    """A handler answering each `start=` with the named file from tests/feeds/arxiv."""

    def reply(request: RequestRecord) -> Reply:
        start = parse_qs(request.query)["start"][0]
        return 200, {"Content-Type": "application/atom+xml"}, (feed_dir / "arxiv" / files[start]).read_bytes()

    return reply


def scripted(replies: list[Reply], then: Callable[[RequestRecord], Reply]) -> Callable[[RequestRecord], Reply]:
    """Serve `replies` in order to the first requests, then hand over to `then`."""
    queue: Iterator[Reply] = iter(replies)

    def reply(request: RequestRecord) -> Reply:
        return next(queue, None) or then(request)

    return reply


async def run(
    loopback: LoopbackServer,
    *,
    max_results: int = 10,
    page_size: int = 2,
    pacer: ArxivPacer | None = None,
    pages: list[list[RawEntry]] | None = None,
) -> list[RawEntry]:
    async def keep(batch: list[RawEntry]) -> None:
        if pages is not None:
            pages.append(batch)

    async with Fetcher(FetchLimits(allow_private_addresses=True, timeout=5)) as fetcher:
        return await fetch_arxiv(
            source_for(loopback, max_results),
            fetcher,
            pacer or ArxivPacer(0.05),
            page_size=page_size,
            on_page=keep,
        )


def starts(loopback: LoopbackServer) -> list[str]:
    return [parse_qs(request.query)["start"][0] for request in loopback.requests("/api/query")]


# --- a whole query -------------------------------------------------------------------------------------


@pytest.mark.parametrize("parser", ["arxiv package", "feedparser fallback"])
async def test_multi_page_query_reads_every_page_in_order(
    loopback: LoopbackServer, feed_dir: Path, monkeypatch: pytest.MonkeyPatch, parser: str
) -> None:
    if parser == "feedparser fallback":  # as if a future arxiv release dropped its private parser
        monkeypatch.setattr(arxiv_source, "_arxiv_page_parser", lambda: None)
    loopback.add_handler("/api/query", pages_from(feed_dir, PAGE_FILES))
    pages: list[list[RawEntry]] = []

    entries = await run(loopback, pages=pages)

    assert [entry.arxiv_id for entry in entries] == [
        "2401.00005v2", "2401.00004v1", "2401.00003v3", "hep-th/9901001v1", "2401.00001v1",
    ]  # fmt: skip
    assert [len(batch) for batch in pages] == [2, 2, 1]
    assert starts(loopback) == ["0", "2", "4"]
    first = entries[0]
    assert first == RawEntry(
        source="arxiv-cl",
        title="Tiny Experts, Big Claims: A Study of Invented Mixtures",
        link="http://arxiv.org/abs/2401.00005v2",
        guid="http://arxiv.org/abs/2401.00005v2",
        summary_html="We study an invented mixture of tiny experts\nand report made-up numbers on a made-up benchmark.",
        authors=("Ada Example", "Bo Sample"),
        published=datetime(2024, 1, 4, 18, 0, tzinfo=UTC),
        updated=datetime(2024, 1, 5, 9, 30, tzinfo=UTC),
        tags=("cs.CL", "cs.LG"),
        arxiv_id="2401.00005v2",
    )
    assert entries[3].link == "http://arxiv.org/abs/hep-th/9901001v1"


async def test_the_query_asks_for_newest_submissions_in_pages(loopback: LoopbackServer, feed_dir: Path) -> None:
    loopback.add_handler("/api/query", pages_from(feed_dir, PAGE_FILES))
    await run(loopback)
    query = parse_qs(loopback.requests("/api/query")[0].query)
    assert query == {
        "search_query": ["cat:cs.CL"],
        "sortBy": ["submittedDate"],
        "sortOrder": ["descending"],
        "start": ["0"],
        "max_results": ["2"],
    }
    assert "application/atom+xml" in loopback.requests("/api/query")[0].headers["accept"]


async def test_max_results_stops_the_query_early(loopback: LoopbackServer, feed_dir: Path) -> None:
    loopback.add_handler("/api/query", pages_from(feed_dir, PAGE_FILES))
    entries = await run(loopback, max_results=3)
    assert [entry.arxiv_id for entry in entries] == ["2401.00005v2", "2401.00004v1", "2401.00003v3"]
    assert [parse_qs(r.query)["max_results"][0] for r in loopback.requests("/api/query")] == ["2", "1"]


async def test_query_without_results_is_one_request(loopback: LoopbackServer, feed_dir: Path) -> None:
    loopback.add_handler("/api/query", pages_from(feed_dir, {"0": "no-results.xml"}))
    assert await run(loopback) == []
    assert loopback.hits("/api/query") == 1


async def test_source_without_query_is_a_config_error(loopback: LoopbackServer) -> None:
    source = Source(name="arxiv-empty", kind="arxiv", url=loopback.url("/api/query"))
    async with Fetcher(FetchLimits(allow_private_addresses=True)) as fetcher:
        with pytest.raises(ConfigError, match="arXiv source 'arxiv-empty' has no query"):
            await fetch_arxiv(source, fetcher, ArxivPacer(0.05))


# --- failures and retries --------------------------------------------------------------------------------


async def test_empty_page_mid_query_fails_after_earlier_pages_were_delivered(
    loopback: LoopbackServer, feed_dir: Path
) -> None:
    loopback.add_handler("/api/query", pages_from(feed_dir, {"0": "page-0.xml", "2": "empty-page.xml"}))
    pages: list[list[RawEntry]] = []
    with pytest.raises(FetchError) as caught:
        await run(loopback, pages=pages)
    assert str(caught.value) == (
        "arXiv source 'arxiv-cl': page at start=2 failed after 4 tries: empty page although the query has 5 results"
    )
    assert [[entry.arxiv_id for entry in batch] for batch in pages] == [["2401.00005v2", "2401.00004v1"]]
    assert starts(loopback) == ["0", "2", "2", "2", "2"]


async def test_empty_page_that_recovers_on_retry(loopback: LoopbackServer, feed_dir: Path) -> None:
    empty = (feed_dir / "arxiv" / "empty-page.xml").read_bytes()
    handler = pages_from(feed_dir, PAGE_FILES)
    served_empty: list[bool] = []

    def flaky(request: RequestRecord) -> Reply:
        if parse_qs(request.query)["start"][0] == "2" and not served_empty:
            served_empty.append(True)
            return 200, {}, empty
        return handler(request)

    loopback.add_handler("/api/query", flaky)
    assert len(await run(loopback)) == 5
    assert starts(loopback) == ["0", "2", "2", "4"]


async def test_429_waits_for_retry_after_then_succeeds(loopback: LoopbackServer, feed_dir: Path) -> None:
    busy: Reply = (429, {"Retry-After": "7"}, b"slow down")
    loopback.add_handler("/api/query", scripted([busy], pages_from(feed_dir, PAGE_FILES)))
    fake = FakeTime()

    entries = await run(loopback, pacer=ArxivPacer(3.0, clock=fake.clock, sleep=fake.sleep))

    assert len(entries) == 5
    assert starts(loopback) == ["0", "0", "2", "4"]
    assert fake.sleeps == [7.0, 3.0, 3.0]  # arXiv's wait first, then the usual spacing


async def test_retry_after_is_bounded(loopback: LoopbackServer, feed_dir: Path) -> None:
    busy: Reply = (503, {"Retry-After": "86400"}, b"")
    loopback.add_handler("/api/query", scripted([busy], pages_from(feed_dir, PAGE_FILES)))
    fake = FakeTime()
    await run(loopback, pacer=ArxivPacer(3.0, clock=fake.clock, sleep=fake.sleep))
    assert fake.sleeps[0] == 60.0


async def test_503_retries_exhausted(loopback: LoopbackServer) -> None:
    loopback.add("/api/query", b"down for maintenance", status=503, content_type="text/plain")
    with pytest.raises(FetchError) as caught:
        await run(loopback)
    message = str(caught.value)
    assert message.startswith("arXiv source 'arxiv-cl': page at start=0 failed after 4 tries: HTTP 503")
    assert caught.value.status == 503
    assert loopback.hits("/api/query") == 4


async def test_400_is_not_retried(loopback: LoopbackServer) -> None:
    loopback.add("/api/query", b"<feed/>", status=400)
    with pytest.raises(FetchError, match=r"failed after 1 try: HTTP 400 Bad Request"):
        await run(loopback)
    assert loopback.hits("/api/query") == 1


async def test_html_error_page_with_200_is_retried_then_fails(loopback: LoopbackServer, feed_dir: Path) -> None:
    loopback.add("/api/query", (feed_dir / "arxiv" / "error.html").read_bytes(), content_type="text/html")
    with pytest.raises(FetchError, match=r"start=0 failed after 4 tries: the answer is not an Atom feed"):
        await run(loopback)
    assert loopback.hits("/api/query") == 4


async def test_html_error_page_then_success(loopback: LoopbackServer, feed_dir: Path) -> None:
    html: Reply = (200, {"Content-Type": "text/html"}, (feed_dir / "arxiv" / "error.html").read_bytes())
    loopback.add_handler("/api/query", scripted([html], pages_from(feed_dir, PAGE_FILES)))
    assert len(await run(loopback)) == 5


# --- the pacer -------------------------------------------------------------------------------------------


async def test_pacer_spaces_turns_by_the_delay() -> None:
    fake = FakeTime()
    pacer = ArxivPacer(3.0, clock=fake.clock, sleep=fake.sleep)
    turns = []
    for _ in range(3):
        await pacer.wait_turn()
        turns.append(fake.now)
    assert turns == [1000.0, 1003.0, 1006.0]


async def test_pacer_spaces_concurrent_callers() -> None:
    fake = FakeTime()
    pacer = ArxivPacer(3.0, clock=fake.clock, sleep=fake.sleep)
    turns: list[float] = []

    async def take_turn() -> None:
        await pacer.wait_turn()
        turns.append(fake.now)

    await asyncio.gather(*(take_turn() for _ in range(4)))
    assert sorted(turns) == [1000.0, 1003.0, 1006.0, 1009.0]


async def test_pacer_does_not_wait_after_a_long_pause() -> None:
    fake = FakeTime()
    pacer = ArxivPacer(3.0, clock=fake.clock, sleep=fake.sleep)
    await pacer.wait_turn()
    fake.now += 10
    await pacer.wait_turn()
    assert fake.sleeps == []


async def test_pacer_back_off_delays_the_next_turn() -> None:
    fake = FakeTime()
    pacer = ArxivPacer(3.0, clock=fake.clock, sleep=fake.sleep)
    await pacer.wait_turn()
    pacer.back_off(30)
    await pacer.wait_turn()
    assert fake.sleeps == [30.0]


async def test_one_pacer_is_shared_by_two_sources(loopback: LoopbackServer, feed_dir: Path) -> None:
    loopback.add_handler("/api/query", pages_from(feed_dir, PAGE_FILES))
    fake = FakeTime()
    pacer = ArxivPacer(3.0, clock=fake.clock, sleep=fake.sleep)
    await asyncio.gather(run(loopback, pacer=pacer), run(loopback, pacer=pacer))
    assert loopback.hits("/api/query") == 6
    assert fake.now == 1000.0 + 5 * 3.0  # six requests, one every 3 s
