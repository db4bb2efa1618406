"""Fixtures every test module may use. Keep this file small and general."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import LoopbackServer

FEEDS = Path(__file__).parent / "feeds"


# --- files -----------------------------------------------------------------------------------------


@pytest.fixture
def feed_dir() -> Path:
    """tests/feeds: small feed and API response files written for the tests."""
    return FEEDS


# --- network: one loopback HTTP server per session, reset for every test -----------------------------


@pytest.fixture(scope="session")
def _loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    yield server
    server.stop()


@pytest.fixture
def loopback(_loopback_server: LoopbackServer) -> Iterator[LoopbackServer]:
    """A 127.0.0.1 HTTP server with no routes; see tests/server.py for its API."""
    _loopback_server.reset()
    yield _loopback_server
    _loopback_server.reset()  # releases handlers a test left hanging


# --- storage ---------------------------------------------------------------------------------------
# In tests/storage_fixtures.py: `storage` (SQLite, and PostgreSQL when AGGREGATOR_TEST_PG_URL is
# set), `memory_storage`, `db_url`, `pg_url`.
pytest_plugins = ["tests.storage_fixtures"]
