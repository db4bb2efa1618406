"""Storage: one interface (Storage) over SQLAlchemy Core; SQLite by default, PostgreSQL the same code."""

from aggregator.storage.sql import ItemQuery, Storage, StoreCounts, derive_state, open_storage

__all__ = ["ItemQuery", "Storage", "StoreCounts", "derive_state", "open_storage"]
