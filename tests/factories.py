"""Small value builders shared by test modules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aggregator.types import Item

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def blog_item(n: int, now: datetime = NOW, **changes: object) -> Item:
    """Blog post number n, published n hours before `now`; any field can be changed."""
    base = Item(
        key=f"url:https://example.org/{n}",
        title=f"Post {n}",
        url=f"https://example.org/{n}",
        source="blog",
        kind="blog",
        summary_text=f"Summary of post {n}",
        published=now - timedelta(hours=n),
        content_hash=f"h{n}",
    )
    return replace(base, **changes)  # type: ignore[arg-type]
