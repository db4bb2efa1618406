"""Source leases for scale-out workers (PostgreSQL: FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

from aggregator.storage.base import StorageBase


class LeaseStore(StorageBase):
    """Claim due sources for one worker and release them with their next check time."""
