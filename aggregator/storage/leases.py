"""Source leases and shared pacing for scale-out workers.

A worker claims due sources in one statement:

    UPDATE sources SET lease_owner = :me, lease_expires = :now + lease
    WHERE id IN (SELECT id FROM sources WHERE id IN (<due, free, ranked per host>) FOR UPDATE SKIP LOCKED)
    RETURNING <fetch state>

Due and free: enabled, not paused, next_check passed (or never checked), no live lease, and named
in the worker's feeds.yaml. Ranked per host: the claim takes at most `per_host` minus the live
leases of a host (whoever holds them), so fetch.per_host holds across every worker. On PostgreSQL,
claims are serialized by a transaction-scoped advisory lock so that count is exact (a claim takes
milliseconds); SKIP LOCKED passes over rows another transaction is writing. SQLite has one writer
at a time, so the same statement (FOR UPDATE is not SQL there) is already atomic. A lease ends in
the transaction that stores its source's result (Storage.record_fetch(lease_owner=...)); a crashed
worker's leases expire and are claimed again.

Pacing (arXiv's one request every few seconds, across machines): one rate_slots row per key holds
the earliest start of the next request, in epoch seconds by the database's clock. Reserving is one
upsert, next_at = greatest(next_at, db_now) + spacing, returning how long the caller waits.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from aggregator.errors import StorageError
from aggregator.storage import rows as convert
from aggregator.storage import schema as t
from aggregator.storage.base import StorageBase
from aggregator.types import SourceState

_STATE_COLUMNS = ("name", "etag", "last_modified", "last_success", "last_error", "error_count", "next_check", "paused")


def source_host(url: str) -> str:
    """The host a source's requests go to, lower case, without port ('' when the URL has none)."""
    try:
        return (urlsplit(url).hostname or "")[:255]
    except ValueError:
        return ""


class LeaseStore(StorageBase):
    """Claim due sources for one worker, renew and release leases, reserve shared rate slots."""

    @property
    def shared(self) -> bool:
        """Whether other processes can open this database (anything but in-memory SQLite)."""
        url = sa.engine.make_url(self.url)
        return not (self.dialect == "sqlite" and url.database in (None, "", ":memory:"))

    def claim_sources(
        self,
        owner: str,
        now: datetime,
        *,
        lease: timedelta,
        limit: int,
        names: Collection[str],
        per_host: int | None = None,
    ) -> list[SourceState]:
        """Lease up to `limit` due, unleased sources among `names` to `owner` until now + lease,
        never more than `per_host` live leases on one host; returns their fetch state, most overdue first."""
        if limit < 1 or not names:
            return []
        if lease <= timedelta(0):
            raise StorageError(f"lease for {owner!r} must be longer than 0 seconds, got {lease}")
        statement = self._claim_statement(owner, now, now + lease, limit, names, per_host)
        with self._tx(f"claim sources for {owner}") as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key("claim"))))
            rows = conn.execute(statement).mappings().all()
        claimed = [convert.source_state(row) for row in rows]
        claimed.sort(key=lambda s: (s.next_check is not None, s.next_check or now, s.name))
        return claimed

    def renew_leases(self, owner: str, now: datetime, lease: timedelta) -> int:
        """Extend every lease `owner` still holds to now + lease (a live worker's heartbeat)."""
        src = t.sources.c
        with self._tx(f"renew leases of {owner}") as conn:
            stmt = t.sources.update().where(src.lease_owner == owner).values(lease_expires=now + lease)
            return int(conn.execute(stmt).rowcount)

    def release_leases(self, owner: str, names: Collection[str] | None = None) -> int:
        """End `owner`'s leases (all, or those of `names`); their sources stay due for anyone."""
        src = t.sources.c
        condition = src.lease_owner == owner
        if names is not None:
            condition = sa.and_(condition, self._named(src.name, names))
        with self._tx(f"release leases of {owner}") as conn:
            stmt = t.sources.update().where(condition).values(lease_owner=None, lease_expires=None)
            return int(conn.execute(stmt).rowcount)

    def leased_sources(self, now: datetime) -> dict[str, tuple[str, datetime]]:
        """Sources under a live lease: name -> (owner, expiry)."""
        src = t.sources.c
        query = sa.select(src.name, src.lease_owner, src.lease_expires).where(
            src.lease_owner.is_not(None), src.lease_expires >= now
        )
        with self._read("read leases") as conn:
            return {name: (owner, expires) for name, owner, expires in conn.execute(query).all()}

    def earliest_check(self, now: datetime, names: Collection[str]) -> datetime | None:
        """The soonest next check among the enabled, unpaused sources of `names`, leased or not
        (`now` for a source never checked); None when there are none."""
        src = t.sources.c
        soonest = sa.func.min(sa.func.coalesce(src.next_check, sa.bindparam("now", now, type_=t.UTCDateTime)))
        query = sa.select(soonest.label("soonest")).where(
            src.enabled.is_(True), src.paused.is_(False), self._named(src.name, names)
        )
        with self._read("find the next due source") as conn:
            row = conn.execute(query).first()
        return row[0] if row is not None else None

    @contextmanager
    def serialized(self, name: str) -> Iterator[None]:
        """Run a block in one process at a time among all that use this database (e.g. story
        clustering, whose read-decide-write must not interleave across workers). PostgreSQL: a
        session advisory lock; a SQLite file: a file lock beside it. Both die with their holder."""
        if self.dialect == "postgresql":
            with self._advisory_lock(name):
                yield
        elif self.shared and self.dialect == "sqlite":
            with _file_lock(Path(f"{sa.engine.make_url(self.url).database}.{name}.lock")):
                yield
        else:
            yield

    @contextmanager
    def _advisory_lock(self, name: str) -> Iterator[None]:
        with self._read(f"take the {name} lock") as conn:
            conn.execute(sa.select(sa.func.pg_advisory_lock(_lock_key(name))))
            conn.commit()  # the lock belongs to the session: no transaction stays open meanwhile
            try:
                yield
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(_lock_key(name))))
                conn.commit()

    # -- shared pacing ---------------------------------------------------------------------------

    def reserve_slot(self, key: str, spacing: float) -> float:
        """Reserve the next start for `key`, `spacing` seconds after the previous reservation (or
        now, if that is later); return the seconds the caller waits before starting."""
        slot = t.rate_slots.c
        db_now = EpochNow()
        stmt = self._insert(t.rate_slots).values(key=key, next_at=db_now + spacing)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"next_at": self._greatest(slot.next_at, db_now) + spacing}
        ).returning((slot.next_at - spacing - db_now).label("wait"))
        with self._tx(f"reserve a {key} slot") as conn:
            wait = conn.execute(stmt).scalar_one()
        return max(0.0, float(wait))

    def push_slot(self, key: str, seconds: float) -> None:
        """No `key` request starts for `seconds` from now (a server's Retry-After), whoever asks."""
        slot = t.rate_slots.c
        db_now = EpochNow()
        stmt = self._insert(t.rate_slots).values(key=key, next_at=db_now + seconds)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"next_at": self._greatest(slot.next_at, db_now + seconds)}
        )
        with self._tx(f"back off {key}") as conn:
            conn.execute(stmt)

    # -- statements --------------------------------------------------------------------------------

    def _claim_statement(
        self, owner: str, now: datetime, until: datetime, limit: int, names: Collection[str], per_host: int | None
    ) -> Any:
        # Aliases: the subqueries must not correlate with the UPDATE's own `sources`.
        due, free = t.sources.alias("due"), t.sources.alias("free")
        order = (due.c.next_check.asc().nulls_first(), due.c.id)
        rank = sa.func.row_number().over(partition_by=due.c.host, order_by=order).label("rank")
        ranked = (
            sa.select(due.c.id, due.c.host, due.c.next_check, rank)
            .where(_due(due.c, now), _unleased(due.c, now), self._named(due.c.name, names))
            .subquery("ranked")
        )
        pick = sa.select(ranked.c.id).order_by(ranked.c.next_check.asc().nulls_first(), ranked.c.id).limit(limit)
        if per_host is not None:
            busy = _live_leases_per_host(now)
            pick = pick.outerjoin(busy, busy.c.host == ranked.c.host).where(
                ranked.c.rank + sa.func.coalesce(busy.c.leases, 0) <= per_host
            )
        locked = sa.select(free.c.id).where(free.c.id.in_(pick)).with_for_update(skip_locked=True)
        src = t.sources.c
        return (
            t.sources.update()
            .where(src.id.in_(locked), _unleased(src, now))
            .values(lease_owner=owner, lease_expires=until)
            .returning(*(src[name] for name in _STATE_COLUMNS))
        )

    def _named(self, column: sa.ColumnElement[str], names: Collection[str]) -> sa.ColumnElement[bool]:
        """column IN names, as one bound value whatever the number of names (10,000 sources would
        otherwise be 10,000 parameters per statement)."""
        wanted = sorted(set(names))
        if self.dialect == "postgresql":
            return column == sa.any_(sa.bindparam("names", wanted, type_=postgresql.ARRAY(sa.String)))
        if self.dialect == "sqlite":
            listed = sa.func.json_each(sa.bindparam("names", json.dumps(wanted)))
            return column.in_(sa.select(sa.column("value")).select_from(listed))
        return column.in_(wanted)

    def _greatest(self, *values: Any) -> Any:
        return sa.func.max(*values) if self.dialect == "sqlite" else sa.func.greatest(*values)


def _lock_key(name: str) -> sa.ColumnElement[int]:
    """A PostgreSQL advisory lock key of our own (a 64-bit hash of a prefixed name)."""
    return sa.func.hashtextextended(f"aggregator:{name}", 0)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        handle = path.open("a")
    except OSError as exc:
        raise StorageError(f"lock file {path}: {exc.strerror or exc}") from exc
    with handle:  # closing the file (or the process dying) releases the lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _due(src: Any, now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        src.enabled.is_(True),
        src.paused.is_(False),
        sa.or_(src.next_check.is_(None), src.next_check <= now),
    )


def _unleased(src: Any, now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(src.lease_expires.is_(None), src.lease_expires < now)


def _live_leases_per_host(now: datetime) -> sa.Subquery:
    held = t.sources.alias("held")
    return (
        sa.select(held.c.host, sa.func.count().label("leases"))
        .where(held.c.lease_expires >= now)
        .group_by(held.c.host)
        .subquery("busy")
    )


class EpochNow(FunctionElement[float]):
    """The database's clock in seconds since the epoch (one clock for every machine)."""

    type = sa.Float()
    inherit_cache = True


@compiles(EpochNow, "sqlite")
def _epoch_now_sqlite(element: EpochNow, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(EpochNow)
def _epoch_now(element: EpochNow, compiler: Any, **kw: Any) -> str:
    return "extract(epoch FROM statement_timestamp())"
