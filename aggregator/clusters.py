"""The dedupe stage of a run: put newly stored items into story clusters.

dedupe.py decides (pure); this module feeds it the new items plus their neighbours in time and
stores the membership that changed. The links in each post go along (a blog post linking an arXiv
paper or a GitHub release is that story), and editors' splits are passed in so they hold.
"""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from aggregator.config import Settings, parse_interval
from aggregator.dedupe import Candidate, DedupeConfig, cluster
from aggregator.storage import ItemQuery, Storage
from aggregator.types import StoredItem

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
    found = (html.unescape(url) for url in _HREF.findall(stored.item.summary_html))
    return tuple(dict.fromkeys(url for url in found if url != stored.item.url))


def cluster_new(storage: Storage, settings: Settings, new_ids: Sequence[int]) -> int:
    """Cluster new items with the stored items near them in time; return how many memberships changed."""
    config = dedupe_config(settings)
    new = storage.items_by_ids(new_ids)
    if not new:
        return 0
    times = [s.item.published or s.first_seen for s in new.values()]
    neighbours = storage.items(ItemQuery(since=_shifted(min(times), -config.window),
                                         until=_shifted(max(times), config.window)))  # fmt: skip
    pool = {s.id: s for s in neighbours} | new
    current = {i: s.cluster_id for i, s in pool.items()}
    existing = {i: c for i, c in current.items() if c is not None}
    links = {i: linked_urls(s) for i, s in pool.items()}
    hubs = _hubs(pool, links)
    candidates = [Candidate.from_stored(s, [u for u in links[i] if u not in hubs]) for i, s in pool.items()]
    assignment = cluster(candidates, config, existing=existing, never_merge=storage.cluster_splits())
    # An item alone in its story keeps cluster_id NULL: only clusters of two or more are written.
    sizes = Counter(assignment.values())
    wanted = {i: (c if sizes[c] > 1 or i in existing else None) for i, c in assignment.items()}
    changed = {i: c for i, c in wanted.items() if current.get(i) != c}
    if changed:
        storage.set_clusters(changed)
        log.info("clustered", extra={"items": len(new), "changed": len(changed)})
    return len(changed)


def _hubs(pool: dict[int, StoredItem], links: dict[int, tuple[str, ...]]) -> set[str]:
    sources: dict[str, set[str]] = {}
    for item_id, urls in links.items():
        for url in urls:
            sources.setdefault(url, set()).add(pool[item_id].item.source)
    return {url for url, names in sources.items() if len(names) >= HUB_SOURCES}


def _shifted(moment: datetime, by: timedelta) -> datetime | None:
    """moment + by, or no bound at all when a feed's date sits at the edge of the calendar."""
    try:
        return moment + by
    except OverflowError:
        return None
