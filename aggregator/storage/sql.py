"""The one Storage implementation: SQLAlchemy Core over SQLite (default) or PostgreSQL.

Rows never leave this module: callers get the value types of aggregator.types.
Writes are batched (bulk INSERT ... ON CONFLICT in chunks, one transaction per source).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from aggregator.errors import LockedError, ReviewError
from aggregator.storage import rows as convert
from aggregator.storage import schema as t
from aggregator.storage.base import CHUNK, StorageBase
from aggregator.storage.leases import LeaseStore, source_host
from aggregator.storage.queue import QueueStore
from aggregator.types import (
    Decision,
    Item,
    LabeledExample,
    Prediction,
    RunReport,
    Source,
    SourceState,
    StoredItem,
    StoryFields,
)

MIGRATIONS = Path(__file__).with_name("migrations")
_ITEM_FIELDS = (
    "title", "url", "source", "kind", "summary_text", "summary_html", "authors", "tags", "published",
    "arxiv_id", "arxiv_version", "repo", "version", "prerelease", "content_hash",
)  # fmt: skip
_NEW_ITEM_COLUMNS = ("key", *_ITEM_FIELDS, "first_seen", "updated_at")  # the order of _new_item_rows
_MIGRATION_LOCK = 0x6167_6772  # "aggr": the advisory lock key migrations take on PostgreSQL


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What one batch of items did to the database."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    new_ids: tuple[int, ...] = ()
    changed_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ItemQuery:
    """Filters for listing stored items (CLI `items`, exports, the queue)."""

    text: str | None = None
    source: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    newest_first: bool = True


def open_storage(url: str, *, migrate: bool = True) -> Storage:
    """Open (and by default migrate) the database at `url`. StorageError names the URL on failure."""
    storage = Storage(url)
    if migrate:
        storage.upgrade()
    return storage


class Storage(QueueStore, LeaseStore, StorageBase):
    """Everything the tool keeps, behind one interface."""

    _bind: tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], Any]] | None = None  # see _converters

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upgrade(self) -> None:
        """Apply pending Alembic migrations, all or none."""
        current, head = self._schema_version("migrate")
        if current == head:  # the usual open: nothing to write, so no write lock to wait for
            return
        with self._migration_transaction() as conn:
            config = AlembicConfig()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def _migration_transaction(self) -> Iterator[Connection]:
        """SQLite's Python driver commits each CREATE and DROP on its own, so a run killed while
        migrating left half a schema that no later open could migrate. There the driver is told to
        stay out and the migration runs in one explicit BEGIN IMMEDIATE ... COMMIT (which also
        makes two processes opening a new database migrate one after the other)."""
        if self.dialect != "sqlite":
            with self._tx("migrate") as conn:
                # Workers started together on an empty database: one migrates, the others wait
                # here and then find the schema current (DDL is transactional on PostgreSQL).
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                yield conn
            return
        with self._read("migrate") as plain:  # _read: a connection whose errors become StorageError
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def schema_version(self) -> tuple[str | None, str | None]:
        """(current revision in the database, newest revision shipped)."""
        return self._schema_version("read schema version")

    def _schema_version(self, what: str) -> tuple[str | None, str | None]:
        with self._read(what) as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        return current, ScriptDirectory.from_config(config).get_current_head()

    # -- sources -----------------------------------------------------------------------------

    def sync_sources(self, configured: Sequence[Source], now: datetime) -> None:
        """Mirror the configured sources; fetch state of known sources is kept."""
        if not configured:
            return
        mirrored = ("kind", "url", "enabled", "interval_seconds", "host")
        rows = [
            {"name": s.name, "kind": s.kind, "url": s.url, "enabled": s.enabled,
             "interval_seconds": s.interval.total_seconds(), "host": source_host(s.url),
             "created": now, "error_count": 0}
            for s in configured
        ]  # fmt: skip
        stmt = self._insert(t.sources)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={column: getattr(stmt.excluded, column) for column in mirrored}
        )
        with self._tx("sync sources") as conn:
            conn.execute(stmt, rows)  # one statement for every source: this runs at the start of every run

    def source_states(self) -> dict[str, SourceState]:
        counts = sa.select(t.items.c.source, sa.func.count().label("n")).group_by(t.items.c.source).subquery()
        query = sa.select(t.sources, counts.c.n).outerjoin(counts, counts.c.source == t.sources.c.name)
        with self._read("read sources") as conn:
            rows = conn.execute(query.order_by(t.sources.c.name)).mappings().all()
        return {row["name"]: convert.source_state(row) for row in rows}

    def source_rows(self) -> list[dict[str, Any]]:
        """Sources with their URL and health, for `aggregator sources`."""
        states = self.source_states()
        with self._read("read sources") as conn:
            rows = conn.execute(sa.select(t.sources.c.name, t.sources.c.url, t.sources.c.kind)).all()
        urls = {name: (url, kind) for name, url, kind in rows}
        return [
            {"name": name, "kind": urls[name][1], "url": urls[name][0], **_state_json(state)}
            for name, state in states.items()
        ]

    def record_fetch(
        self,
        name: str,
        *,
        at: datetime,
        next_check: datetime,
        error: str | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        pause_after: int | None = None,
        lease_owner: str | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Store one fetch outcome. Success resets the error count; errors keep the last validators.
        With `lease_owner`, the worker's lease on the source ends in the same statement."""
        src = t.sources.c
        if error is None:
            values: dict[str, Any] = {
                "last_success": at,
                "error_count": 0,
                "next_check": next_check,
                "etag": etag,
                "last_modified": last_modified,
            }
        else:
            values = {
                "last_error": error[:1000],
                "last_error_at": at,
                "error_count": src.error_count + 1,
                "next_check": next_check,
            }
            if pause_after is not None:
                values["paused"] = sa.or_(src.paused, src.error_count + 1 >= pause_after)
        if lease_owner is not None:
            mine = src.lease_owner == lease_owner
            values["lease_owner"] = sa.case((mine, None), else_=src.lease_owner)
            values["lease_expires"] = sa.case((mine, None), else_=src.lease_expires)
        stmt = t.sources.update().where(src.name == name).values(**values)
        if conn is not None:
            conn.execute(stmt)
            return
        with self._tx(f"record fetch of {name}") as tx:
            tx.execute(stmt)

    def set_paused(self, name: str, paused: bool) -> bool:
        src = t.sources.c
        values: dict[str, Any] = {"paused": paused}
        if not paused:
            values.update(error_count=0, next_check=None)
        with self._tx(f"update source {name}") as conn:
            return conn.execute(t.sources.update().where(src.name == name).values(**values)).rowcount > 0

    # -- items -------------------------------------------------------------------------------

    def store_items(self, batch: Sequence[Item], now: datetime, *, conn: Connection | None = None) -> StoreCounts:
        """Insert new items, update changed ones (first_seen kept), count unchanged ones."""
        unique = list({item.key: item for item in batch}.values())
        if conn is None:
            with self._tx("store items") as tx:
                return self._store(tx, unique, now)
        return self._store(conn, unique, now)

    @contextmanager
    def transaction(self, what: str = "write") -> Iterator[Connection]:
        """One transaction for a group of writes (the pipeline stores one source per transaction)."""
        with self._tx(what) as conn:
            yield conn

    def _store(self, conn: Connection, batch: list[Item], now: datetime) -> StoreCounts:
        new_ids: list[int] = []
        changed_ids: list[int] = []
        unchanged = 0
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            known = dict(
                conn.execute(
                    sa.select(t.items.c.key, t.items.c.content_hash).where(t.items.c.key.in_([i.key for i in chunk]))
                ).all()
            )
            fresh = [i for i in chunk if i.key not in known]
            changed = [i for i in chunk if i.key in known and known[i.key] != i.content_hash]
            unchanged += len(chunk) - len(fresh) - len(changed)
            if fresh:
                new_ids += self._insert_new(conn, fresh, now)
            if changed:
                changed_ids += self._update_items(conn, changed, now)
        return StoreCounts(len(new_ids), len(changed_ids), unchanged, tuple(new_ids), tuple(changed_ids))

    def _insert_new(self, conn: Connection, items: list[Item], now: datetime) -> list[int]:
        """Insert items not stored yet; return the ids of the rows this call inserted (ON CONFLICT
        DO NOTHING returns nothing for a key a concurrent worker stored first: not "new" here).

        The driver's own statement, prepared once: SQLAlchemy's multi-row VALUES is a new long
        statement per batch, which psycopg re-parses (~400 µs per row, most of a worker's CPU)."""
        rows = self._new_item_rows(items, now)
        markers = ", ".join(["?" if self.dialect == "sqlite" else "%s"] * len(_NEW_ITEM_COLUMNS))
        columns = ", ".join(_NEW_ITEM_COLUMNS)
        sql = f"INSERT INTO items ({columns}) VALUES ({markers}) ON CONFLICT (key) DO NOTHING RETURNING id"
        dbapi = self.engine.dialect.dbapi
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if self.dialect == "sqlite":
                # sqlite3's executemany drops RETURNING rows; its statement cache keeps one row at a time cheap
                return [row[0] for row in (cursor.execute(sql, values).fetchone() for values in rows) if row]
            cursor.executemany(sql, rows, returning=True)
            ids = []
            while True:
                ids += [row[0] for row in cursor.fetchall()]
                if not cursor.nextset():
                    return ids
        except dbapi.Error as exc:  # type: ignore[union-attr]
            # The same error SQLAlchemy would raise, so callers report it the same way.
            raise sa.exc.DBAPIError.instance(sql, None, exc, dbapi.Error) from exc  # type: ignore[union-attr]
        finally:
            cursor.close()

    def _new_item_rows(self, items: list[Item], now: datetime) -> list[tuple[Any, ...]]:
        """The driver's values of each item, in _NEW_ITEM_COLUMNS order. Dates, lists and flags go
        through the columns' own SQLAlchemy bind processors, so they are stored exactly as every
        SQLAlchemy write stores them (filters and sorting compare them as stored)."""
        date, dump, flag = self._converters()
        stamp = date(now)
        return [
            (i.key, i.title, i.url, i.source, i.kind, i.summary_text, i.summary_html, dump(list(i.authors)),
             dump(list(i.tags)), None if i.published is None else date(i.published), i.arxiv_id, i.arxiv_version,
             i.repo, i.version, flag(i.prerelease), i.content_hash, stamp, stamp)
            for i in items
        ]  # fmt: skip

    def _converters(self) -> tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], Any]]:
        """(datetime, JSON, boolean) bind conversions of this database's driver."""
        if self._bind is None:
            dialect = self.engine.dialect

            def processor(column: str, default: Callable[[Any], Any]) -> Callable[[Any], Any]:
                return t.items.c[column].type.dialect_impl(dialect).bind_processor(dialect) or default

            # psycopg: JSON goes as text and PostgreSQL casts it (SQLAlchemy's own JSON bind adds a cast).
            dump = processor("authors", json.dumps) if self.dialect == "sqlite" else json.dumps
            self._bind = (processor("published", _same), dump, processor("prerelease", _same))
        return self._bind

    def _update_items(self, conn: Connection, changed: list[Item], now: datetime) -> list[int]:
        rows = [_item_row(i, now) | {"first_seen": now} for i in changed]
        stmt = self._insert(t.items)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={name: getattr(stmt.excluded, name) for name in (*_ITEM_FIELDS, "updated_at")},
        )
        conn.execute(stmt, rows)
        return self._ids_for(conn, [i.key for i in changed])

    @staticmethod
    def _ids_for(conn: Connection, keys: list[str]) -> list[int]:
        return list(conn.execute(sa.select(t.items.c.id).where(t.items.c.key.in_(keys))).scalars())

    def item_count(self, source: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(t.items)
        if source:
            query = query.where(t.items.c.source == source)
        with self._read("count items") as conn:
            return int(conn.execute(query).scalar_one())

    def items(self, query: ItemQuery = ItemQuery()) -> list[StoredItem]:
        return list(self.iter_items(query))

    def iter_items(self, query: ItemQuery = ItemQuery()) -> Iterator[StoredItem]:
        stmt = _item_filter(sa.select(t.items), query)
        order = t.items.c.published.desc() if query.newest_first else t.items.c.published.asc()
        stmt = stmt.order_by(order, t.items.c.id.desc())
        if query.limit is not None:
            stmt = stmt.limit(query.limit)
        with self._read("read items") as conn:
            for row in conn.execute(stmt.execution_options(yield_per=1000)).mappings():
                yield convert.stored_item(row)

    def item_by_id(self, item_id: int) -> StoredItem | None:
        with self._read("read item") as conn:
            row = conn.execute(sa.select(t.items).where(t.items.c.id == item_id)).mappings().first()
        return convert.stored_item(row) if row else None

    def items_by_ids(self, ids: Iterable[int]) -> dict[int, StoredItem]:
        wanted = list(ids)
        found: dict[int, StoredItem] = {}
        with self._read("read items") as conn:
            for start in range(0, len(wanted), CHUNK):
                stmt = sa.select(t.items).where(t.items.c.id.in_(wanted[start : start + CHUNK]))
                for row in conn.execute(stmt).mappings():
                    found[row["id"]] = convert.stored_item(row)
        return found

    def items_to_classify(self, ids: Iterable[int]) -> dict[int, Item]:
        """The Items of `ids` holding only what classifying reads (key, title, url, source, kind,
        summary_text, arxiv_id, version); the other fields keep their defaults. A third of the cost
        of items_by_ids: no HTML to copy, no JSON or dates to convert."""
        c = t.items.c
        columns = (c.id, c.key, c.title, c.url, c.source, c.kind, c.summary_text, c.arxiv_id, c.version)
        wanted = list(ids)
        found: dict[int, Item] = {}
        with self._read("read items") as conn:
            for start in range(0, len(wanted), CHUNK):
                stmt = sa.select(*columns).where(c.id.in_(wanted[start : start + CHUNK]))
                for item_id, key, title, url, source, kind, summary, arxiv_id, version in conn.execute(stmt):
                    item = Item(key, title, url, source, kind, summary_text=summary, arxiv_id=arxiv_id, version=version)
                    found[item_id] = item
        return found

    def story_span(self, ids: Iterable[int]) -> tuple[datetime, datetime] | None:
        """The earliest and the latest date (published, else first seen) of the items `ids`; None
        when none of them is stored."""
        c = t.items.c
        at = sa.func.coalesce(c.published, c.first_seen)
        span = (sa.type_coerce(sa.func.min(at), t.UTCDateTime()), sa.type_coerce(sa.func.max(at), t.UTCDateTime()))
        found: list[datetime] = []
        with self._read("read item dates") as conn:
            for clause in _id_clauses(ids):
                row = conn.execute(sa.select(*span).where(clause)).one()
                found += [moment for moment in row if moment is not None]
        return (min(found), max(found)) if found else None

    def story_items(self, since: datetime | None, until: datetime | None) -> list[StoryFields]:
        """What story clustering reads of the items published in [since, until) (None: unbounded):
        a third of the cost of `items` (no JSON, one date, converted by hand)."""
        query = _story_select()
        if since is not None:
            query = query.where(t.items.c.published >= since)
        if until is not None:
            query = query.where(t.items.c.published < until)
        with self._read("read items") as conn:
            return _story_fields(conn.execute(query), self.engine.dialect)

    def story_items_by_ids(self, ids: Iterable[int]) -> list[StoryFields]:
        """What story clustering reads of the items `ids`."""
        found: list[StoryFields] = []
        with self._read("read items") as conn:
            for clause in _id_clauses(ids):
                found += _story_fields(conn.execute(_story_select().where(clause)), self.engine.dialect)
        return found

    def set_clusters(self, assignment: Mapping[int, int | None]) -> None:
        """Store story-cluster membership (item id -> cluster id)."""
        rows = [{"item": item_id, "cluster": cluster_id} for item_id, cluster_id in assignment.items()]
        stmt = t.items.update().where(t.items.c.id == sa.bindparam("item")).values(cluster_id=sa.bindparam("cluster"))
        with self._tx("store clusters") as conn:
            if rows:
                conn.execute(stmt, rows)

    def add_split(self, item_id: int, other_id: int, editor: str, at: datetime) -> None:
        """Remember that an editor split two items apart: dedupe never merges them again."""
        low, high = sorted((item_id, other_id))
        with self._tx("record split") as conn:
            stmt = self._insert(t.cluster_splits).values(item_id=low, other_id=high, editor=editor, at=at)
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["item_id", "other_id"]))

    def cluster_splits(self) -> set[frozenset[int]]:
        with self._read("read splits") as conn:
            rows = conn.execute(sa.select(t.cluster_splits.c.item_id, t.cluster_splits.c.other_id)).all()
        return {frozenset(row) for row in rows}

    def cluster_members(self, cluster_id: int) -> list[StoredItem]:
        query = sa.select(t.items).where(t.items.c.cluster_id == cluster_id).order_by(t.items.c.id)
        with self._read("read cluster") as conn:
            return [convert.stored_item(row) for row in conn.execute(query).mappings()]

    # -- predictions -------------------------------------------------------------------------

    def save_predictions(self, predictions: Sequence[tuple[int, Prediction]], now: datetime) -> None:
        if not predictions:
            return
        rows = [_prediction_row(item_id, p, now) for item_id, p in predictions]
        stmt = self._insert(t.predictions)
        stmt = stmt.on_conflict_do_update(
            index_elements=["item_id"], set_={c: getattr(stmt.excluded, c) for c in rows[0] if c != "item_id"}
        )
        with self._tx("store predictions") as conn:
            conn.execute(stmt, rows)

    def predictions_for(self, ids: Iterable[int]) -> dict[int, Prediction]:
        wanted = list(ids)
        found: dict[int, Prediction] = {}
        query = sa.select(t.predictions, t.items.c.key).join(t.items, t.items.c.id == t.predictions.c.item_id)
        with self._read("read predictions") as conn:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                for row in conn.execute(query.where(t.predictions.c.item_id.in_(chunk))).mappings():
                    found[row["item_id"]] = convert.prediction(row)
        return found

    def unclassified_ids(self, model_version: str | None = None, *, rescore: bool = False) -> list[int]:
        """Items to classify: those with no prediction; when a model is live, also those predicted
        while none was; with `rescore`, also those predicted by another model version."""
        pred = t.predictions.c
        query = sa.select(t.items.c.id).outerjoin(t.predictions, pred.item_id == t.items.c.id)
        condition: sa.ColumnElement[bool] = pred.item_id.is_(None)
        if model_version is not None:
            stale = pred.model_version.is_distinct_from(model_version) if rescore else pred.model_version.is_(None)
            condition = sa.or_(condition, stale)
        with self._read("find unclassified items") as conn:
            return list(conn.execute(query.where(condition).order_by(t.items.c.id)).scalars())

    def candidate_ids(self) -> list[int]:
        """Items no editor has decided yet (the queue, before filters)."""
        state = t.item_state.c
        query = (
            sa.select(t.items.c.id)
            .outerjoin(t.item_state, state.item_id == t.items.c.id)
            .where(sa.or_(state.status.is_(None), state.status == "candidate"))
        )
        with self._read("read queue") as conn:
            return list(conn.execute(query).scalars())

    def queue_counts(self) -> dict[str, int]:
        """Queued stories per section, as the review page counts them."""
        return self.queue_section_counts()

    # -- decisions ---------------------------------------------------------------------------

    def add_decision(self, item_id: int, decision: Decision, *, undoes: int | None = None) -> int:
        """Append one editor event and update the derived item state in the same transaction."""
        with self._tx("record decision") as conn:
            return self._append_decision(conn, item_id, decision, undoes)

    def add_decisions(self, batch: Sequence[tuple[int, Decision]]) -> list[int]:
        with self._tx("record decisions") as conn:
            return [self._append_decision(conn, item_id, d, None) for item_id, d in batch]

    def _append_decision(self, conn: Connection, item_id: int, d: Decision, undoes: int | None) -> int:
        exists = conn.execute(sa.select(t.items.c.id).where(t.items.c.id == item_id)).first()
        if exists is None:
            raise ReviewError(f"no item with id {item_id}")
        values = {
            "item_id": item_id,
            "editor": d.editor,
            "at": d.at,
            "action": d.action,
            "section": d.section,
            "item_type": d.item_type,
            "reason": d.reason,
            "model_version": d.model_version,
            "undoes": undoes,
        }
        decision_id = int(conn.execute(t.decisions.insert().values(**values).returning(t.decisions.c.id)).scalar_one())
        self._refresh_state(conn, item_id)
        return decision_id

    def _refresh_state(self, conn: Connection, item_id: int) -> None:
        """Replay an item's log: undo cancels the event it names; the latest remaining one wins."""
        rows = conn.execute(
            sa.select(t.decisions).where(t.decisions.c.item_id == item_id).order_by(t.decisions.c.id)
        ).mappings()
        state = derive_state([convert.decision(row, "") for row in rows])
        conn.execute(t.item_state.delete().where(t.item_state.c.item_id == item_id))
        conn.execute(t.item_state.insert().values(item_id=item_id, **state))

    def decisions(
        self, *, item_id: int | None = None, since: datetime | None = None, editor: str | None = None
    ) -> list[tuple[int, Decision]]:
        d = t.decisions.c
        query = sa.select(t.decisions, t.items.c.key).join(t.items, t.items.c.id == d.item_id)
        if item_id is not None:
            query = query.where(d.item_id == item_id)
        if since is not None:
            query = query.where(d.at >= since)
        if editor is not None:
            query = query.where(d.editor == editor)
        with self._read("read decisions") as conn:
            rows = conn.execute(query.order_by(d.id)).mappings().all()
        return [(row["item_id"], convert.decision(row)) for row in rows]

    def decision_count(self, since: datetime | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(t.decisions)
        if since is not None:
            query = query.where(t.decisions.c.at >= since)
        with self._read("count decisions") as conn:
            return int(conn.execute(query).scalar_one())

    def item_states(self, ids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
        query = sa.select(t.item_state)
        wanted = None if ids is None else list(ids)
        with self._read("read item states") as conn:
            if wanted is None:
                rows = conn.execute(query).mappings().all()
            else:
                rows = []
                for start in range(0, len(wanted), CHUNK):
                    chunk = wanted[start : start + CHUNK]
                    rows += conn.execute(query.where(t.item_state.c.item_id.in_(chunk))).mappings().all()
        return {row["item_id"]: dict(row) for row in rows}

    # -- labeled examples --------------------------------------------------------------------

    def add_examples(self, batch: Sequence[LabeledExample], now: datetime) -> int:
        """Store labeled examples once each (same title + url + label = same example). Returns new count."""
        added = 0
        with self._tx("store examples") as conn:
            for start in range(0, len(batch), CHUNK):
                rows = [_example_row(e, now) for e in batch[start : start + CHUNK]]
                rows = list({r["fingerprint"]: r for r in rows}.values())
                stmt = self._insert(t.examples).on_conflict_do_nothing(index_elements=["fingerprint"])
                added += len(conn.execute(stmt.returning(t.examples.c.id), rows).all())
        return added

    def examples(self) -> list[LabeledExample]:
        with self._read("read examples") as conn:
            rows = conn.execute(sa.select(t.examples).order_by(t.examples.c.id)).mappings().all()
        return [convert.example(row) for row in rows]

    # -- runs, exports, locks ----------------------------------------------------------------

    def record_run(self, report: RunReport, kind: str = "run") -> int:
        row = {
            "kind": kind,
            "started": report.started,
            "finished": report.finished,
            "new": report.new,
            "updated": report.updated,
            "sources": len(report.results),
            "failed": len(report.failed),
            "report": {
                "results": [
                    {
                        "source": r.source,
                        "status": r.status,
                        "new": r.new,
                        "updated": r.updated,
                        "unchanged": r.unchanged,
                        "error": r.error,
                        "http_status": r.http_status,
                        "ms": round(r.ms, 1),
                    }
                    for r in report.results
                ],
                "notes": list(report.notes),
            },
        }
        with self._tx("record run") as conn:
            return int(conn.execute(t.runs.insert().values(**row).returning(t.runs.c.id)).scalar_one())

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        query = sa.select(t.runs).order_by(t.runs.c.started.desc(), t.runs.c.id.desc()).limit(limit)
        with self._read("read runs") as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def record_export(
        self, *, at: datetime, fmt: str, filters: Mapping[str, Any], path: str | None, item_ids: Sequence[int]
    ) -> int:
        values = {
            "at": at,
            "format": fmt,
            "filters": json.loads(json.dumps(filters, default=str)),
            "path": path,
            "count": len(item_ids),
            "item_ids": list(item_ids),
        }
        with self._tx("record export") as conn:
            return int(conn.execute(t.exports.insert().values(**values).returning(t.exports.c.id)).scalar_one())

    def exports(self, limit: int = 50) -> list[dict[str, Any]]:
        query = sa.select(t.exports).order_by(t.exports.c.id.desc()).limit(limit)
        with self._read("read exports") as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def acquire_lock(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Take a named lease if it is free or expired. Atomic on SQLite and PostgreSQL."""
        expires = now + ttl
        with self._tx(f"take lock {name}") as conn:
            conn.execute(t.locks.delete().where(t.locks.c.name == name, t.locks.c.expires < now))
            stmt = self._insert(t.locks).values(name=name, owner=owner, acquired=now, expires=expires)
            stmt = stmt.on_conflict_do_nothing(index_elements=["name"]).returning(t.locks.c.name)
            return conn.execute(stmt).first() is not None

    def refresh_lock(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        lock = t.locks.c
        with self._tx(f"refresh lock {name}") as conn:
            stmt = t.locks.update().where(lock.name == name, lock.owner == owner).values(expires=now + ttl)
            return conn.execute(stmt).rowcount > 0

    def release_lock(self, name: str, owner: str) -> None:
        with self._tx(f"release lock {name}") as conn:
            conn.execute(t.locks.delete().where(t.locks.c.name == name, t.locks.c.owner == owner))

    def lock_holder(self, name: str) -> dict[str, Any] | None:
        with self._read(f"read lock {name}") as conn:
            row = conn.execute(sa.select(t.locks).where(t.locks.c.name == name)).mappings().first()
        return dict(row) if row else None

    @contextmanager
    def run_lock(self, owner: str, now: datetime, ttl: timedelta = timedelta(hours=2)) -> Iterator[None]:
        """Hold the run lock for a block, or raise LockedError naming who holds it. A lock left by a
        killed run on this host (its owner, named by process_owner(), no longer runs) is taken over
        at once; one left on another host waits for its expiry."""
        if not self.acquire_lock("run", owner, now, ttl) and not self._take_over_dead_lock("run", owner, now, ttl):
            holder = self.lock_holder("run") or {}
            since = holder.get("acquired")
            when = f" since {since:%Y-%m-%d %H:%M:%S} UTC" if since else ""
            raise LockedError(
                f"another run is in progress ({holder.get('owner', 'unknown')}{when}); "
                f"its lock expires at {holder.get('expires', '?')}"
            )
        try:
            yield
        finally:
            self.release_lock("run", owner)

    def _take_over_dead_lock(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        holder = self.lock_holder(name)
        if holder is None or not is_dead_local_process(holder["owner"]):
            return False
        self.release_lock(name, holder["owner"])  # only that owner's row: a racing run may have taken it since
        return self.acquire_lock(name, owner, now, ttl)


# -- helpers: rows <-> values ------------------------------------------------------------------


def derive_state(log: Sequence[Decision]) -> dict[str, Any]:
    """An item's current state from its decision log (oldest first). Undo removes the latest
    not-yet-undone state-changing event; notes annotate without changing the status."""
    effective: list[Decision] = []
    note: str | None = None
    for d in log:
        if d.action == "undo":
            if effective:
                effective.pop()
        elif d.action == "note":
            note = d.reason
        elif d.action in ("accept", "reject", "move"):
            effective.append(d)
    if not effective:
        return {"status": "candidate", "section": None, "item_type": None, "note": note,
                "decided_by": None, "decided_at": None}  # fmt: skip
    last = effective[-1]
    status = {"accept": "accepted", "reject": "rejected", "move": "candidate"}[last.action]
    section = next((d.section for d in reversed(effective) if d.section), None)
    item_type = next((d.item_type for d in reversed(effective) if d.item_type), None)
    if last.action == "move":
        # a move keeps an accepted item accepted, in its new section
        earlier = [d for d in effective[:-1] if d.action != "move"]
        status = "accepted" if earlier and earlier[-1].action == "accept" else "candidate"
    return {"status": status, "section": section, "item_type": item_type, "note": note,
            "decided_by": last.editor, "decided_at": last.at}  # fmt: skip


def _item_row(item: Item, now: datetime) -> dict[str, Any]:
    return {
        "key": item.key,
        "title": item.title,
        "url": item.url,
        "source": item.source,
        "kind": item.kind,
        "summary_text": item.summary_text,
        "summary_html": item.summary_html,
        "authors": list(item.authors),
        "tags": list(item.tags),
        "published": item.published,
        "arxiv_id": item.arxiv_id,
        "arxiv_version": item.arxiv_version,
        "repo": item.repo,
        "version": item.version,
        "prerelease": item.prerelease,
        "content_hash": item.content_hash,
        "updated_at": now,
    }


_STORY_DATE = t.UTCDateTime()


def _story_fields(rows: Iterable[Sequence[Any]], dialect: sa.Dialect) -> list[StoryFields]:
    return [
        StoryFields(id_, key, source, title, text, html, url, arxiv, repo, version, cluster, _story_date(at, dialect))
        for id_, key, source, title, text, html, url, arxiv, repo, version, cluster, at in rows
    ]


def _story_date(value: Any, dialect: sa.Dialect) -> datetime:
    """UTCDateTime's conversion, 5x faster for the text SQLite keeps: naive UTC, with microseconds."""
    if isinstance(value, str) and len(value) == 26 and value[19] == ".":  # 2026-09-28 10:00:00.000000
        return datetime.fromisoformat(value + "+00:00")
    moment = _STORY_DATE.process_result_value(value, dialect)
    assert moment is not None, "first_seen is never NULL"
    return moment


def _id_clauses(ids: Iterable[int]) -> Iterator[sa.ColumnElement[bool]]:
    """WHERE clauses that together select the items `ids`, a chunk at a time: long runs of consecutive
    ids (the items one `aggregator run` stores get consecutive ids) as ranges, the other ids in IN
    lists. 17,903 consecutive ids read in 22 ms rather than 39; but a range costs ~20 IN values."""
    singles: list[int] = []
    ranges: list[sa.ColumnElement[bool]] = []
    ordered = sorted(set(ids))
    start = 0
    for end in range(1, len(ordered) + 1):
        if end == len(ordered) or ordered[end] != ordered[end - 1] + 1:  # a run ends
            if end - start >= 32:
                ranges.append(t.items.c.id.between(ordered[start], ordered[end - 1]))
            else:
                singles += ordered[start:end]
            start = end
    for first in range(0, len(singles), CHUNK):
        yield t.items.c.id.in_(singles[first : first + CHUNK])
    for first in range(0, len(ranges), CHUNK):
        yield sa.or_(*ranges[first : first + CHUNK])


def _story_select() -> sa.Select[Any]:
    c = t.items.c
    # The date as the driver returns it (SQLite: text), converted by _story_date: SQLAlchemy's SQLite
    # conversion costs as much as the rest of the row.
    at = sa.type_coerce(sa.func.coalesce(c.published, c.first_seen), sa.String)
    return sa.select(c.id, c.key, c.source, c.title, c.summary_text, c.summary_html, c.url, c.arxiv_id, c.repo,
                     c.version, c.cluster_id, at)  # fmt: skip


def _item_filter(stmt: sa.Select[Any], query: ItemQuery) -> sa.Select[Any]:
    c = t.items.c
    if query.source:
        stmt = stmt.where(c.source == query.source)
    if query.kind:
        stmt = stmt.where(c.kind == query.kind)
    if query.since:
        stmt = stmt.where(c.published >= query.since)
    if query.until:
        stmt = stmt.where(c.published < query.until)
    if query.text:
        for word in query.text.split():
            pattern = f"%{word}%"
            stmt = stmt.where(sa.or_(c.title.ilike(pattern), c.summary_text.ilike(pattern)))
    return stmt


def _state_json(state: SourceState) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "last_success": iso(state.last_success),
        "last_error": state.last_error,
        "error_count": state.error_count,
        "next_check": iso(state.next_check),
        "paused": state.paused,
        "items": state.items,
    }


def _prediction_row(item_id: int, p: Prediction, now: datetime) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "section": p.section,
        "confidence": float(p.confidence),
        "item_type": p.item_type,
        "top_terms": list(p.top_terms),
        "model_version": p.model_version,
        "relevance": p.relevance,
        "predicted_at": now,
    }


def _example_row(e: LabeledExample, now: datetime) -> dict[str, Any]:
    fingerprint = hashlib.sha256(f"{e.title}\x00{e.url}\x00{e.label}".encode()).hexdigest()
    return {
        "fingerprint": fingerprint,
        "title": e.title,
        "summary": e.summary,
        "url": e.url,
        "label": e.label,
        "item_type": e.item_type,
        "date": e.date,
        "origin": e.origin,
        "imported_at": now,
    }


def utcnow() -> datetime:
    return datetime.now(UTC)


def process_owner() -> str:
    """How a process names itself as a lock owner: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_dead_local_process(owner: str) -> bool:
    """True when `owner` (see process_owner) is a process of this host that no longer exists."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        return False
    return False


def _same(value: Any) -> Any:
    return value
