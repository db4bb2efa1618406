"""Database fixtures: in-memory SQLite always; PostgreSQL when AGGREGATOR_TEST_PG_URL is set.

The PostgreSQL tests create their own database for the session and drop it at the end, so they
never touch data the server already holds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from aggregator.storage import Storage, open_storage
from aggregator.storage.schema import metadata

PG_ENV = "AGGREGATOR_TEST_PG_URL"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards)."""
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(f"{PG_ENV} is not set")
    with fresh_pg_database(server, "aggregator_test") as url:
        yield url


@contextmanager
def fresh_pg_database(server: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on the server `server` names; dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _empty(storage: Storage) -> None:
    with storage.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """A database URL for each backend: a file SQLite database, and PostgreSQL when available."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    url: str = request.getfixturevalue("pg_url")
    storage = open_storage(url)
    _empty(storage)
    storage.close()
    return url


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    """Storage on each backend, migrated and empty."""
    with open_storage(db_url) as opened:
        yield opened


@pytest.fixture
def memory_storage() -> Iterator[Storage]:
    """The fastest storage, for tests that are not about the backend."""
    with open_storage("sqlite://") as opened:
        yield opened
