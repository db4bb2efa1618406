"""The dedupe stage of a run: put newly stored items into story clusters.

dedupe.py decides (pure); this module feeds it the new items plus their neighbours in time and
stores the membership that changed. The links in each post go along (a blog post linking an arXiv
paper or a GitHub release is that story), and editors' splits are passed in so they hold.

Each run clusters its new items together with every item published within the window of them, all
read and hashed again (~30 us an item here): its cost follows the size of that window, not the
number of new items. Only what clustering needs is read (Storage.story_items).
"""

from __future__ import annotations

import gc
import html
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

from aggregator.config import Settings, parse_interval
from aggregator.dedupe import Candidate, DedupeConfig, cluster
from aggregator.storage import Storage
from aggregator.types import StoredItem, StoryFields

log = logging.getLogger("aggregator.dedupe")
_HREF = re.compile(r'href="([^"]+)"')
# A page linked from this many sources is a hub (a licence page, a feed proxy's relative links), not
# a story: in the real feed corpus no linked page is shared by more than 2 sources.
HUB_SOURCES = 16


def dedupe_config(settings: Settings) -> DedupeConfig:
    d = settings.model.dedupe
    config = replace(DedupeConfig(), window=parse_interval(d.window))
    return config if d.threshold is None else replace(config, threshold=d.threshold)


def linked_urls(stored: StoredItem) -> tuple[str, ...]:
    """The links of a post, from its sanitized HTML (only http(s) links survive sanitizing)."""
    return _links(stored.item.summary_html, stored.item.url)


def cluster_new(storage: Storage, settings: Settings, new_ids: Sequence[int]) -> int:
    """Cluster new items with the stored items near them in time; return how many memberships changed."""
    with _collector_paused():
        return _cluster_new(storage, settings, new_ids)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while clustering: it makes a handful of objects per item of the
    week, all alive until it ends, and every full collection walks them all again (a quarter of the
    time for 18k items). What it makes is freed by reference counting; the collector resumes after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _cluster_new(storage: Storage, settings: Settings, new_ids: Sequence[int]) -> int:
    config = dedupe_config(settings)
    span = storage.story_span(new_ids)
    if span is None:
        return 0
    pool = {s.id: s for s in storage.story_items(_shifted(span[0], -config.window), _shifted(span[1], config.window))}
    # New items the window misses: undated ones (the window reads publication dates).
    pool |= {s.id: s for s in storage.story_items_by_ids(i for i in new_ids if i not in pool)}
    current = {i: s.cluster_id for i, s in pool.items()}
    existing = {i: c for i, c in current.items() if c is not None}
    links = {i: _links(s.summary_html, s.url) for i, s in pool.items()}
    hubs = _hubs(pool, links)
    candidates = [_candidate(s, [u for u in links[i] if u not in hubs]) for i, s in pool.items()]
    assignment = cluster(candidates, config, existing=existing, never_merge=storage.cluster_splits())
    # An item alone in its story keeps cluster_id NULL: only clusters of two or more are written.
    sizes = Counter(assignment.values())
    wanted = {i: (c if sizes[c] > 1 or i in existing else None) for i, c in assignment.items()}
    changed = {i: c for i, c in wanted.items() if current.get(i) != c}
    if changed:
        storage.set_clusters(changed)
        log.info("clustered", extra={"items": len(new_ids), "changed": len(changed)})
    return len(changed)


def _candidate(stored: StoryFields, links: Sequence[str]) -> Candidate:
    # By position: a third faster than by keyword, and made for every item of the window.
    return Candidate(stored.id, stored.key, stored.source, stored.title, stored.summary_text, stored.url, stored.at,
                     stored.arxiv_id, stored.repo, stored.version, tuple(links))  # fmt: skip


def _links(summary_html: str, url: str) -> tuple[str, ...]:
    unique = dict.fromkeys([html.unescape(link) for link in _HREF.findall(summary_html)])  # in order
    unique.pop(url, None)
    return tuple(unique)


def _hubs(pool: Mapping[int, StoryFields], links: Mapping[int, tuple[str, ...]]) -> set[str]:
    sources: dict[str, set[str]] = {}
    for item_id, urls in links.items():
        for url in urls:
            sources.setdefault(url, set()).add(pool[item_id].source)
    return {url for url, names in sources.items() if len(names) >= HUB_SOURCES}


def _shifted(moment: datetime, by: timedelta) -> datetime | None:
    """moment + by, or no bound at all when a feed's date sits at the edge of the calendar."""
    try:
        return moment + by
    except OverflowError:
        return None
