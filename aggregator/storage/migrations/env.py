"""Alembic environment: migrations run on the connection the Storage hands over (config.attributes)."""

from __future__ import annotations

from alembic import context

from aggregator.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("aggregator migrations run through `aggregator db upgrade`, not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
