"""worker leases: each source's host, an index for due sources, shared rate slots

sources.host (the lower-case host of the URL) lets a worker's claim count the live leases of one
host across every worker, so fetch.per_host holds across machines; ix_sources_next_check serves the
claim's "due first" order. rate_slots keeps one row per paced key ("arxiv"): the earliest start of
the next request by the database's clock (see aggregator/storage/leases.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aggregator.storage.leases import source_host

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_sources_next_check", ["next_check"], unique=False)
    op.create_table(
        "rate_slots",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_slots")),
    )
    _fill_hosts()


def _fill_hosts() -> None:
    """Sources stored before this revision get their host now (sync_sources keeps it afterwards)."""
    conn = op.get_bind()
    sources = sa.table("sources", sa.column("id", sa.Integer), sa.column("url", sa.Text), sa.column("host"))
    rows = conn.execute(sa.select(sources.c.id, sources.c.url)).all()
    for source_id, url in rows:
        conn.execute(sources.update().where(sources.c.id == source_id).values(host=source_host(url)))


def downgrade() -> None:
    op.drop_table("rate_slots")
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_index("ix_sources_next_check")
        batch_op.drop_column("host")
