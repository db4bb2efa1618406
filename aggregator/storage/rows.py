"""Database rows to value types: the one place each conversion is written (sql.py, queue.py and
leases.py all read the same tables)."""

from __future__ import annotations

from sqlalchemy.engine import RowMapping

from aggregator.types import Decision, Item, LabeledExample, Prediction, SourceState, StoredItem


def stored_item(row: RowMapping) -> StoredItem:
    item = Item(
        key=row["key"],
        title=row["title"],
        url=row["url"],
        source=row["source"],
        kind=row["kind"],
        summary_text=row["summary_text"],
        summary_html=row["summary_html"],
        authors=tuple(row["authors"] or ()),
        published=row["published"],
        tags=tuple(row["tags"] or ()),
        arxiv_id=row["arxiv_id"],
        arxiv_version=row["arxiv_version"],
        repo=row["repo"],
        version=row["version"],
        prerelease=bool(row["prerelease"]),
        content_hash=row["content_hash"],
    )
    return StoredItem(row["id"], item, row["first_seen"], row["updated_at"], row["cluster_id"])


def prediction(row: RowMapping, prefix: str = "") -> Prediction:
    """A predictions row; `prefix` names its columns when they were selected with labels (p_...)."""
    return Prediction(
        item_key=row["key"],
        section=row[f"{prefix}section"],
        confidence=row[f"{prefix}confidence"],
        item_type=row[f"{prefix}item_type"],
        model_version=row[f"{prefix}model_version"],
        top_terms=tuple(row[f"{prefix}top_terms"] or ()),
        relevance=row[f"{prefix}relevance"],
    )


def decision(row: RowMapping, key: str | None = None) -> Decision:
    """A decisions row; the item key comes from the row (joined) unless given."""
    return Decision(
        item_key=row["key"] if key is None else key,
        editor=row["editor"],
        at=row["at"],
        action=row["action"],
        section=row["section"],
        item_type=row["item_type"],
        reason=row["reason"],
        model_version=row["model_version"],
        id=row["id"],
    )


def source_state(row: RowMapping) -> SourceState:
    """A sources row (with the item count `n` when the query joined it)."""
    return SourceState(
        name=row["name"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        last_success=row["last_success"],
        last_error=row["last_error"],
        error_count=row["error_count"] or 0,
        next_check=row["next_check"],
        paused=bool(row["paused"]),
        items=row.get("n") or 0,
    )


def example(row: RowMapping) -> LabeledExample:
    return LabeledExample(
        title=row["title"],
        label=row["label"],
        summary=row["summary"],
        url=row["url"],
        item_type=row["item_type"],
        date=row["date"],
        origin=row["origin"],
    )
