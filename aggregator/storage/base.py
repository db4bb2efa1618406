"""The base every storage part builds on: the engine, transactions and one-line errors.

Storage (sql.py) is one interface assembled from parts that each keep one concern's queries
(queue.py: the review queue; leases.py: scale-out leases); all of them extend StorageBase.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from aggregator.errors import StorageError

CHUNK = 500


class StorageBase:
    """Engine and connection helpers. Rows never leave the storage package."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.dialect = self.engine.dialect.name

    @contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"database {self._display_url()}: cannot {what}: {_reason(exc)}") from exc

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"database {self._display_url()}: cannot {what}: {_reason(exc)}") from exc

    def _display_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def _insert(self, table: sa.Table) -> Any:
        """INSERT with the dialect's ON CONFLICT support."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)


def _make_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise StorageError(f"database URL {url!r} is not a valid SQLAlchemy URL") from None
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        return sa.create_engine(parsed, pool_pre_ping=True, future=True)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StorageError(f"database {parsed.render_as_string(hide_password=True)}: driver missing: {exc}") from None


def _sqlite_engine(parsed: sa.engine.URL) -> Engine:
    database = parsed.database or ""
    memory = database in ("", ":memory:")
    if not memory:
        folder = Path(database).parent
        if not folder.exists():
            raise StorageError(f"database {database}: folder {folder} does not exist")
    engine = sa.create_engine(
        parsed,
        connect_args={"timeout": 30, "check_same_thread": False},
        poolclass=StaticPool if memory else None,
    )

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets readers (the review page) work while a run writes; busy_timeout waits on a lock
        # instead of failing at once.
        cursor = dbapi_conn.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return " ".join(text.split())[:300]
