"""Review-queue queries (the part of Storage the review page and CLI read)."""

from __future__ import annotations

from aggregator.storage.base import StorageBase


class QueueStore(StorageBase):
    """Queue queries; see aggregator/review.py for the queue's rules."""
