"""The tables. Alembic migrations (storage/migrations) own the live schema; this module is what
the code queries against and what the first migration creates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend keeps (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("url", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("interval_seconds", Float, nullable=False, default=21600.0),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("last_success", UTCDateTime),
    Column("last_error", Text),
    Column("last_error_at", UTCDateTime),
    Column("error_count", Integer, nullable=False, default=0),
    Column("next_check", UTCDateTime),
    Column("paused", Boolean, nullable=False, default=False),
    Column("lease_owner", String(200)),
    Column("lease_expires", UTCDateTime),
    Column("created", UTCDateTime, nullable=False),
    # Host of `url` (lower case): workers' claims count live leases per host (migration 0003).
    Column("host", String(255)),
    Index("ix_sources_next_check", "next_check"),
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(500), nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("source", String(200), nullable=False, index=True),
    Column("kind", String(20), nullable=False),
    Column("summary_text", Text, nullable=False, default=""),
    Column("summary_html", Text, nullable=False, default=""),
    Column("authors", JSON, nullable=False, default=list),
    Column("tags", JSON, nullable=False, default=list),
    Column("published", UTCDateTime, index=True),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("arxiv_id", String(64), index=True),
    Column("arxiv_version", Integer),
    Column("repo", String(200)),
    Column("version", String(200)),
    Column("prerelease", Boolean, nullable=False, default=False),
    Column("content_hash", String(64), nullable=False, default=""),
    Column("cluster_id", Integer, index=True),
)

# The latest prediction per item (history lives in the model versions, not here).
predictions = Table(
    "predictions",
    metadata,
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("section", String(200), index=True),
    Column("confidence", Float, nullable=False, default=0.0),
    Column("item_type", String(100), nullable=False, default=""),
    Column("top_terms", JSON, nullable=False, default=list),
    Column("model_version", String(100)),
    Column("relevance", Float),
    Column("predicted_at", UTCDateTime, nullable=False),
    # Queue rank, kept by triggers (migration 0002; formula in storage/queue.py).
    Column("priority", Float),
    Index("ix_predictions_section_priority", "section", "priority"),
)

# Append-only editor events; never updated, never deleted.
decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("editor", String(200), nullable=False),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("action", String(20), nullable=False),
    Column("section", String(200)),
    Column("item_type", String(100)),
    Column("reason", Text),
    Column("model_version", String(100)),
    Column("undoes", Integer),
)

# Derived from `decisions` in the same transaction that appends one: the queue reads this.
item_state = Table(
    "item_state",
    metadata,
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("status", String(20), nullable=False),  # candidate | accepted | rejected
    Column("section", String(200)),
    Column("item_type", String(100)),
    Column("note", Text),
    Column("decided_by", String(200)),
    Column("decided_at", UTCDateTime),
    Index("ix_item_state_status_section", "status", "section"),
)

# Editors' "these two are not the same story" (dedupe must never merge them again).
cluster_splits = Table(
    "cluster_splits",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("other_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("editor", String(200), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("item_id", "other_id", name="uq_cluster_splits_pair"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("started", UTCDateTime, nullable=False, index=True),
    Column("finished", UTCDateTime, nullable=False),
    Column("new", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("sources", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("report", JSON, nullable=False, default=dict),
)

exports = Table(
    "exports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("format", String(20), nullable=False),
    Column("filters", JSON, nullable=False, default=dict),
    Column("path", Text),
    Column("count", Integer, nullable=False, default=0),
    Column("item_ids", JSON, nullable=False, default=list),
)

# Labeled items imported from files and past newsletter issues.
examples = Table(
    "examples",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("summary", Text, nullable=False, default=""),
    Column("url", Text, nullable=False, default=""),
    Column("label", String(200), nullable=False),
    Column("item_type", String(100)),
    Column("date", UTCDateTime),
    Column("origin", Text, nullable=False, default=""),
    Column("imported_at", UTCDateTime, nullable=False),
)

# Named leases: the run lock, scheduler singletons. Works the same on SQLite and PostgreSQL.
locks = Table(
    "locks",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("acquired", UTCDateTime, nullable=False),
    Column("expires", UTCDateTime, nullable=False),
)

# Shared pacing (migration 0003): one row per key ("arxiv"), the earliest time the next request may
# start, in seconds since the epoch by the database's clock, so every worker on every machine agrees.
rate_slots = Table(
    "rate_slots",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("next_at", Float, nullable=False),
)
