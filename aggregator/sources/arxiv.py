"""The arXiv lane: one search query, read page by page through fetch.Fetcher, politely paced.

The `arxiv` package describes the search (arxiv.Search: query, newest submissions first) and parses
each page into arxiv.Result objects; its own HTTP client (requests, no timeouts) is never used.
arxiv.Result objects do not leave this module: each becomes a RawEntry.

    for each page (start = 0, page_size, ...):
        pacer.wait_turn()  ->  fetcher.get(page URL)  ->  parse  ->  on_page(entries)
        failed, HTML instead of Atom, or empty while results remain?  retry, paced (and
        after Retry-After on 429/503), then FetchError naming the source and the page
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import arxiv
import feedparser

from aggregator.errors import ConfigError, FetchError
from aggregator.fetch import Fetcher
from aggregator.types import RawEntry, Source

ATOM = "application/atom+xml"
RETRY_STATUSES_4XX = frozenset({408, 429})  # other 4xx answers will not change on a retry
_ATOM_ROOT = re.compile(rb"<(?:[\w.-]+:)?feed[\s>]")

PageHandler = Callable[[list[RawEntry]], Awaitable[None]]


class ArxivPacer:
    """Keeps arXiv requests at least `delay_seconds` apart across every arXiv source in the process.

    Each caller reserves the next free slot, then sleeps until it; the reservation is guarded by
    a thread lock (not an asyncio one) so the pacer survives being shared across event loops.
    """

    def __init__(
        self,
        delay_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._delay = delay_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = float("-inf")

    async def wait_turn(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._delay
        if slot > now:
            await self._sleep(slot - now)

    def back_off(self, seconds: float) -> None:
        """arXiv asked everyone to wait (Retry-After): no request from this process before then."""
        with self._lock:
            self._next_slot = max(self._next_slot, self._clock() + seconds)


# Added to the spacing of a shared pacer (at most doubling a tiny test delay): a reserved start is
# kept only to within the jitter of each process's event loop waking up (a few ms, more under load),
# so two requests never come closer than delay_seconds because the earlier one left a little late.
SHARED_PACING_MARGIN = 0.1


class SharedArxivPacer(ArxivPacer):
    """Keeps arXiv requests `delay_seconds` apart across every process sharing `reserve`.

    `reserve(spacing)` books the next start (spacing after the previous booking, by one clock all
    processes share, e.g. the database's) and returns the seconds to wait for it; `push(seconds)`
    makes everyone wait that long (Retry-After). Both block briefly, so reserving runs in a thread.
    """

    def __init__(
        self,
        delay_seconds: float,
        reserve: Callable[[float], float],
        push: Callable[[float], None],
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        super().__init__(delay_seconds, sleep=sleep)
        self._spacing = delay_seconds + min(SHARED_PACING_MARGIN, delay_seconds)
        self._reserve = reserve
        self._push = push

    async def wait_turn(self) -> None:
        wait = await asyncio.to_thread(self._reserve, self._spacing)
        if wait > 0:
            await self._sleep(wait)

    def back_off(self, seconds: float) -> None:
        self._push(seconds)


async def fetch_arxiv(
    source: Source,
    fetcher: Fetcher,
    pacer: ArxivPacer,
    *,
    page_size: int = 100,
    on_page: PageHandler | None = None,
    num_retries: int = 3,
    max_retry_wait: float = 60.0,
) -> list[RawEntry]:
    """Read up to source.max_results entries of source.query, newest first.

    Each page goes to `on_page` as soon as it is read, so pages already read are kept even when a
    later page fails with FetchError.
    """
    search = _search_for(source, page_size)
    retry = _RetryPolicy(num_retries, max_retry_wait)
    entries: list[RawEntry] = []
    start = 0
    while start < source.max_results:
        size = min(page_size, source.max_results - start)
        url = _page_url(source.url, search, start, size)
        page = await _read_page(source, fetcher, pacer, url, start, retry)
        batch = page.entries[:size]
        if not batch:
            break
        if on_page is not None:
            await on_page(batch)
        entries.extend(batch)
        start += len(batch)
        if start >= page.total_results:
            break
    return entries


@dataclass(frozen=True, slots=True)
class _RetryPolicy:
    num_retries: int
    max_wait: float  # cap on a server's Retry-After, seconds


@dataclass(frozen=True, slots=True)
class _Page:
    total_results: int
    entries: list[RawEntry]


class _BadPage(Exception):
    """A 200 answer that is not a usable page of results."""


def _search_for(source: Source, page_size: int) -> arxiv.Search:
    if not source.query:
        raise ConfigError(f"arXiv source {source.name!r} has no query")
    if page_size < 1 or source.max_results < 1:
        raise ConfigError(f"arXiv source {source.name!r}: page size and max_results must be at least 1")
    return arxiv.Search(
        query=source.query,
        max_results=source.max_results,
        sort_by=arxiv.SortCriterion.SubmittedDate,
        sort_order=arxiv.SortOrder.Descending,
    )


def _page_url(api_url: str, search: arxiv.Search, start: int, size: int) -> str:
    """The API URL for one page, from the Search's public fields (same parameters arxiv.Client sends)."""
    parameters = {
        "search_query": search.query,
        "sortBy": search.sort_by.value,
        "sortOrder": search.sort_order.value,
        "start": str(start),
        "max_results": str(size),
    }
    return f"{api_url}{'&' if '?' in api_url else '?'}{urlencode(parameters)}"


async def _read_page(
    source: Source, fetcher: Fetcher, pacer: ArxivPacer, url: str, start: int, retry: _RetryPolicy
) -> _Page:
    reason, last_error, tries = "", None, 0
    while tries <= retry.num_retries:
        tries += 1
        await pacer.wait_turn()
        try:
            return _usable_page((await fetcher.get(url, accept=ATOM)).body, source.name, start)
        except FetchError as error:
            reason, last_error = str(error), error
            if not _worth_retrying(error):
                break
            if error.retry_after is not None and error.status in (429, 503):
                pacer.back_off(min(error.retry_after, retry.max_wait))
        except _BadPage as problem:
            reason, last_error = str(problem), None
    attempts = f"{tries} tries" if tries > 1 else "1 try"
    raise FetchError(
        f"arXiv source {source.name!r}: page at start={start} failed after {attempts}: {reason}",
        status=last_error.status if last_error else None,
        retry_after=last_error.retry_after if last_error else None,
    )


def _worth_retrying(error: FetchError) -> bool:
    return error.status is None or error.status >= 500 or error.status in RETRY_STATUSES_4XX


def _usable_page(body: bytes, source_name: str, start: int) -> _Page:
    if not _ATOM_ROOT.search(body[:4096]):
        raise _BadPage("the answer is not an Atom feed (an HTML error page?)")
    page = _parse_page(body, source_name)
    if not page.entries and start < page.total_results:
        raise _BadPage(f"empty page although the query has {page.total_results} results")
    return page


def _parse_page(body: bytes, source_name: str) -> _Page:
    parse = _arxiv_page_parser()
    if parse is not None:
        try:
            feed = parse(body)
            total, results = int(feed.header.total_results), list(feed.results)
        except (AttributeError, TypeError, ValueError):
            pass  # the helper changed shape in a new arxiv release: use the fallback
        else:
            return _Page(total, [_entry_from_result(result, source_name) for result in results])
    return _parse_with_feedparser(body, source_name)


def _arxiv_page_parser() -> Callable[[bytes], Any] | None:
    """arxiv's own page parser: bytes -> ParsedFeed(header.total_results, results: list[arxiv.Result]).

    It is private (arxiv._feed.parse in 4.x; arxiv has no public bytes-in API), so look it up
    defensively: when a release moves it, the feedparser fallback below takes over.
    """
    parse = getattr(getattr(arxiv, "_feed", None), "parse", None)
    return parse if callable(parse) else None


def _entry_from_result(result: arxiv.Result, source_name: str) -> RawEntry:
    alternate = [link.href for link in result.links if link.rel == "alternate"]
    return RawEntry(
        source=source_name,
        title=_collapse(result.title),
        link=alternate[0] if alternate else result.entry_id,
        guid=result.entry_id,
        summary_html=result.summary.strip(),
        authors=tuple(author.name for author in result.authors),
        published=result.published,
        updated=result.updated,
        tags=_categories(result.primary_category, result.categories),
        arxiv_id=_short_id(result.entry_id),
    )


def _parse_with_feedparser(body: bytes, source_name: str) -> _Page:
    parsed = feedparser.parse(body)
    total = str(parsed.feed.get("opensearch_totalresults", "0")).strip()
    entries = [_entry_from_feedparser(entry, source_name) for entry in parsed.entries if entry.get("id")]
    return _Page(int(total) if total.isdigit() else 0, entries)


def _entry_from_feedparser(entry: Any, source_name: str) -> RawEntry:
    alternate = [link["href"] for link in entry.get("links", ()) if link.get("rel") == "alternate"]
    primary = entry.get("arxiv_primary_category", {}).get("term", "")
    return RawEntry(
        source=source_name,
        title=_collapse(entry.get("title", "")),
        link=alternate[0] if alternate else entry["id"],
        guid=entry["id"],
        summary_html=entry.get("summary", "").strip(),
        authors=tuple(author["name"] for author in entry.get("authors", ()) if author.get("name")),
        published=_utc(entry.get("published_parsed")),
        updated=_utc(entry.get("updated_parsed")),
        tags=_categories(primary, [tag["term"] for tag in entry.get("tags", ()) if tag.get("term")]),
        arxiv_id=_short_id(entry["id"]),
    )


def _categories(primary: str, categories: list[str]) -> tuple[str, ...]:
    """Primary category first, each once."""
    ordered = [primary, *categories] if primary else list(categories)
    return tuple(dict.fromkeys(ordered))


def _short_id(entry_id: str) -> str:
    """The id after /abs/, version included: 2401.01234v2, or old style hep-th/9901001v1 kept whole."""
    return entry_id.split("/abs/", 1)[-1]


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _utc(struct: time.struct_time | None) -> datetime | None:
    return datetime(*struct[:6], tzinfo=UTC) if struct else None
