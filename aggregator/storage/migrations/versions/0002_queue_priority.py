"""queue priority: a ranked, indexed column so a queue page reads a few index entries

predictions.priority = coalesce(relevance, confidence, 0) + days(date) / 7, where date is the item's
published date, or its first-seen date when published is missing or later than first seen (see
aggregator/storage/queue.py). Triggers keep it current whoever writes a prediction or re-dates an
item, so the review queue walks ix_predictions_section_priority instead of scanning every item.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_DATE = "CASE WHEN {i}.published IS NULL OR {i}.published > {i}.first_seen THEN {i}.first_seen ELSE {i}.published END"

_SQLITE_DAYS = "julianday(" + _DATE + ")"
_SQLITE_TRIGGERS = (
    # AFTER INSERT: the upsert's insert path; the row is then given its priority.
    f"""CREATE TRIGGER trg_predictions_priority_insert AFTER INSERT ON predictions
    BEGIN
        UPDATE predictions SET priority = coalesce(NEW.relevance, NEW.confidence, 0)
            + (SELECT {_SQLITE_DAYS.format(i="items")} FROM items WHERE items.id = NEW.item_id) / 7.0
        WHERE item_id = NEW.item_id;
    END""",
    f"""CREATE TRIGGER trg_predictions_priority_update AFTER UPDATE OF confidence, relevance ON predictions
    BEGIN
        UPDATE predictions SET priority = coalesce(NEW.relevance, NEW.confidence, 0)
            + (SELECT {_SQLITE_DAYS.format(i="items")} FROM items WHERE items.id = NEW.item_id) / 7.0
        WHERE item_id = NEW.item_id;
    END""",
    f"""CREATE TRIGGER trg_items_priority_update AFTER UPDATE OF published, first_seen ON items
    BEGIN
        UPDATE predictions SET priority = coalesce(relevance, confidence, 0) + {_SQLITE_DAYS.format(i="NEW")} / 7.0
        WHERE item_id = NEW.id;
    END""",
)
_SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS trg_predictions_priority_insert",
    "DROP TRIGGER IF EXISTS trg_predictions_priority_update",
    "DROP TRIGGER IF EXISTS trg_items_priority_update",
)

_PG_DAYS = "(extract(epoch FROM " + _DATE + ") / 86400.0)"
_PG_TRIGGERS = (
    f"""CREATE FUNCTION predictions_priority() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.priority := coalesce(NEW.relevance, NEW.confidence, 0)
            + (SELECT {_PG_DAYS.format(i="items")} FROM items WHERE items.id = NEW.item_id) / 7.0;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER trg_predictions_priority BEFORE INSERT OR UPDATE OF confidence, relevance ON predictions
    FOR EACH ROW EXECUTE FUNCTION predictions_priority()""",
    f"""CREATE FUNCTION items_priority() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE predictions SET priority = coalesce(relevance, confidence, 0) + {_PG_DAYS.format(i="NEW")} / 7.0
        WHERE item_id = NEW.id;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER trg_items_priority AFTER UPDATE OF published, first_seen ON items
    FOR EACH ROW EXECUTE FUNCTION items_priority()""",
)
_PG_DROP = (
    "DROP TRIGGER IF EXISTS trg_items_priority ON items",
    "DROP FUNCTION IF EXISTS items_priority()",
    "DROP TRIGGER IF EXISTS trg_predictions_priority ON predictions",
    "DROP FUNCTION IF EXISTS predictions_priority()",
)


def _days(dialect: str) -> str:
    return (_SQLITE_DAYS if dialect == "sqlite" else _PG_DAYS).format(i="items")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Float(), nullable=True))
        batch_op.create_index("ix_predictions_section_priority", ["section", "priority"], unique=False)
    op.execute(
        "UPDATE predictions SET priority = coalesce(relevance, confidence, 0) + "
        f"(SELECT {_days(dialect)} FROM items WHERE items.id = predictions.item_id) / 7.0"
    )
    for statement in _SQLITE_TRIGGERS if dialect == "sqlite" else _PG_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in _SQLITE_DROP if dialect == "sqlite" else _PG_DROP:
        op.execute(statement)
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_section_priority")
        batch_op.drop_column("priority")
