"""Blog feeds (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed) -> RawEntry, over parse.parse_feed."""

from __future__ import annotations

from collections.abc import Mapping

from aggregator.parse import parse_feed
from aggregator.types import RawEntry, Source


def entries_from_feed(
    body: bytes, source: Source, *, url: str, headers: Mapping[str, str] | None = None
) -> list[RawEntry]:
    """The feed's entries. An id listed twice in one feed is one story: the first is kept, so one
    poll never carries two rows with the same item key."""
    entries: list[RawEntry] = []
    seen: set[str] = set()
    for entry in parse_feed(body, source=source.name, url=url, headers=headers).entries:
        if entry.guid:
            if entry.guid in seen:
                continue
            seen.add(entry.guid)
        entries.append(entry)
    return entries
