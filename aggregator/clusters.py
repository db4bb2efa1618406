"""The dedupe stage of a run: put newly stored items into story clusters.

dedupe.py decides (pure); this module feeds it the new items plus their neighbours in time and
stores the membership that changed. Editors' splits are passed in so they are never undone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from aggregator.config import Settings, parse_interval
from aggregator.dedupe import Candidate, DedupeConfig, cluster
from aggregator.storage import ItemQuery, Storage
from aggregator.types import StoredItem

log = logging.getLogger("aggregator.dedupe")


def dedupe_config(settings: Settings) -> DedupeConfig:
    d = settings.model.dedupe
    config = DedupeConfig(window=parse_interval(d.window))
    if d.threshold is not None:
        config = DedupeConfig(
            threshold=d.threshold, num_perm=config.num_perm, window=config.window, shingle=config.shingle
        )
    return config


def candidate(stored: StoredItem) -> Candidate:
    item = stored.item
    return Candidate(
        id=stored.id,
        key=item.key,
        source=item.source,
        title=item.title,
        summary=item.summary_text,
        url=item.url,
        published=item.published or stored.first_seen,
        arxiv_id=item.arxiv_id,
        repo=item.repo,
        version=item.version,
    )


def cluster_new(storage: Storage, settings: Settings, new_ids: Sequence[int]) -> int:
    """Cluster new items with the stored items near them in time; return how many memberships changed."""
    config = dedupe_config(settings)
    new = storage.items_by_ids(new_ids)
    if not new:
        return 0
    times = [s.item.published or s.first_seen for s in new.values()]
    window: timedelta = config.window
    neighbours = storage.items(ItemQuery(since=min(times) - window, until=max(times) + window))
    pool = {s.id: s for s in neighbours} | new
    current = {i: s.cluster_id for i, s in pool.items()}
    existing = {i: c for i, c in current.items() if c is not None}
    assignment = cluster([candidate(s) for s in pool.values()], config, existing=existing,
                         never_merge=storage.cluster_splits())  # fmt: skip
    changed = {i: c for i, c in assignment.items() if current.get(i) != c}
    if changed:
        storage.set_clusters(changed)
        log.info("clustered", extra={"items": len(new), "changed": len(changed)})
    return len(changed)
