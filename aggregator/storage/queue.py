"""Review-queue queries (the part of Storage the review page and CLI read).

The queue holds stories, not items: a story is a dedupe cluster (items.cluster_id, which dedupe
sets to one of its members' ids: the story's lead) or a lone item (cluster_id NULL). A story is
queued while its lead is undecided (no item_state, or status candidate) and no member of it is
accepted or rejected, so an item that joins an already decided cluster does not bring it back.

Ranking. A story's section is the editor's (after a move), else the predicted one. Within a
section, stories are ordered by

    priority = signal + days(date) / 7

where signal is the prediction's relevance when the model has one, else its confidence (both 0..1),
and date is the lead's published date, or its first-seen date when published is missing or later
than first seen (a feed dating items in the future does not pin them to the top). A story a week
newer is worth one whole unit of signal; being linear in time, the order does not depend on "now",
so predictions.priority is stored (triggers of migration 0002 keep it current) and a page is a walk
down the index (section, priority): a few index entries, whatever the size of the queue.

Statements are built once per shape of filters and reused with bound values: building a
SQLAlchemy statement costs more than running it on an index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from aggregator.storage import rows as convert
from aggregator.storage import schema as t
from aggregator.storage.base import CHUNK, StorageBase
from aggregator.types import Decision, Prediction, StoredItem

DECIDED = ("accepted", "rejected")
UNCLASSIFIED = "(unclassified)"  # the section of stories with no section at all
FRESHNESS_DAYS = 7.0

_items, _state, _pred = t.items.c, t.item_state.c, t.predictions.c


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """Filters on the queue; each applies to a story's lead item. `text` must match every word
    (case-insensitive) in the title or the summary."""

    section: str | None = None
    source: str | None = None
    item_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedStory:
    """One row of the ranked queue: a story's lead item and where the queue puts it."""

    item_id: int
    story_id: int
    section: str  # the editor's section after a move, else the predicted one, else UNCLASSIFIED
    item_type: str | None
    priority: float


@dataclass(frozen=True, slots=True)
class StoryDetails:
    """What a card shows of a story: its lead, the lead's prediction and state, the other members."""

    lead: StoredItem
    prediction: Prediction | None
    state: Mapping[str, Any]  # item_state columns; empty when nobody has decided on the lead
    others: tuple[StoredItem, ...]


class QueueStore(StorageBase):
    """Queue queries; the queue's rules for decisions are in aggregator/review.py."""

    def queue_stories(
        self, query: QueueQuery, section_order: Sequence[str], *, limit: int, offset: int = 0
    ) -> list[QueuedStory]:
        """A page of the queue, grouped by section (`section_order` first, then any other section,
        then UNCLASSIFIED) and by priority within each section. Reads about offset + limit rows."""
        wanted = offset + limit
        found: list[QueuedStory] = []
        with self._read("read the queue") as conn:
            sections = [query.section] if query.section else self._sections(conn, section_order)
            moved = self._moved_sections(conn)
            for section in sections:
                found += self._section_page(conn, query, section, wanted - len(found), moved)
                if len(found) >= wanted:
                    break
        return found[offset:wanted]

    def queue_tops(self, query: QueueQuery, sections: Sequence[str], *, limit: int) -> dict[str, list[QueuedStory]]:
        """The first `limit` stories of each section (the page's first view), in one connection."""
        with self._read("read the queue") as conn:
            moved = self._moved_sections(conn)
            return {section: self._section_page(conn, query, section, limit, moved) for section in sections}

    def queue_sections(self, section_order: Sequence[str]) -> list[str]:
        """Every section the queue may show, in display order."""
        with self._read("read sections") as conn:
            return self._sections(conn, section_order)

    def queue_section_counts(self, query: QueueQuery = QueueQuery()) -> dict[str, int]:
        """Queued stories per section, under every filter but the section one. This one reads the
        whole queue (tens of milliseconds at 50,000 stories): pages load it separately."""
        unsectioned = replace(query, section=None)
        with self._read("count the queue") as conn:
            rows = conn.execute(_count_statement(_shape(unsectioned)), _params(unsectioned)).all()
        return {str(name): int(n) for name, n in rows}

    def story_details(self, stories: Sequence[QueuedStory]) -> dict[int, StoryDetails]:
        """Everything the cards of these stories show, keyed by lead item id (two queries)."""
        if not stories:
            return {}
        leads = [s.item_id for s in stories]
        clustered = [s.story_id for s in stories]
        with self._read("read stories") as conn:
            rows = conn.execute(_DETAILS, {"ids": leads}).mappings().all()
            members = conn.execute(_MEMBERS, {"stories": clustered, "ids": leads}).mappings().all()
        others: dict[int, list[StoredItem]] = {}
        for row in members:
            others.setdefault(int(row["cluster_id"]), []).append(convert.stored_item(row))
        story_of = {s.item_id: s.story_id for s in stories}
        found = {}
        for row in rows:
            lead = convert.stored_item(row)
            prediction = convert.prediction(row, "p_") if row["p_item_id"] is not None else None
            state = _unprefixed(row, "s_") if row["s_item_id"] is not None else {}
            found[lead.id] = StoryDetails(lead, prediction, state, tuple(others.get(story_of[lead.id], ())))
        return found

    def story_members(self, story_ids: Iterable[int]) -> dict[int, list[int]]:
        """Member item ids of each story, lead included (a lone item is a one-member story)."""
        wanted = list(dict.fromkeys(story_ids))
        members: dict[int, list[int]] = {story: [] for story in wanted}
        with self._read("read stories") as conn:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                for story_id, item_id in conn.execute(_STORY_MEMBERS, {"stories": chunk}).all():
                    members.setdefault(int(story_id), []).append(int(item_id))
        return members

    def story_row(self, item_id: int) -> QueuedStory | None:
        """The queue row of the story an item belongs to, decided or not (None: no such item)."""
        with self._read("read story") as conn:
            story = conn.execute(_STORY_OF, {"id": item_id}).scalar()
            if story is None:
                return None
            row = conn.execute(_STORY_ROW, {"id": story}).first() or conn.execute(_STORY_ROW, {"id": item_id}).first()
        return _stories([row])[0] if row is not None else None

    def story_of(self, item_id: int) -> int | None:
        """The story an item belongs to (None when there is no such item)."""
        with self._read("read story") as conn:
            found = conn.execute(_STORY_OF, {"id": item_id}).scalar()
        return None if found is None else int(found)

    def recent_decisions_by(self, editor: str, *, limit: int = 200) -> list[tuple[int, Decision]]:
        """An editor's latest events, newest first, as (item id, decision)."""
        with self._read("read decisions") as conn:
            rows = conn.execute(_RECENT_DECISIONS, {"editor": editor, "limit": limit}).mappings().all()
        return [(int(row["item_id"]), convert.decision(row)) for row in rows]

    def decision_logs(self, item_ids: Iterable[int]) -> dict[int, list[Decision]]:
        """Each item's decision log, oldest first."""
        wanted = list(dict.fromkeys(item_ids))
        logs: dict[int, list[Decision]] = {item_id: [] for item_id in wanted}
        with self._read("read decisions") as conn:
            for start in range(0, len(wanted), CHUNK):
                for row in conn.execute(_DECISION_LOGS, {"ids": wanted[start : start + CHUNK]}).mappings():
                    logs[int(row["item_id"])].append(convert.decision(row))
        return logs

    # -- the walk ------------------------------------------------------------------------------

    def _sections(self, conn: Connection, section_order: Sequence[str]) -> list[str]:
        present = {str(s) for s in conn.execute(_PREDICTED_SECTIONS).scalars()} | self._moved_sections(conn)
        others = sorted(present - set(section_order))
        return [*section_order, *others, UNCLASSIFIED]

    @staticmethod
    def _moved_sections(conn: Connection) -> set[str]:
        """Sections some queued story was moved into (usually none or a few)."""
        return {str(s) for s in conn.execute(_MOVED_SECTIONS).scalars()}

    def _section_page(
        self, conn: Connection, query: QueueQuery, section: str, limit: int, moved: set[str]
    ) -> list[QueuedStory]:
        if limit <= 0:
            return []
        shape, params = _shape(query), _params(query) | {"section": section, "limit": limit}
        if section == UNCLASSIFIED:
            rows = _stories(conn.execute(_unclassified_statement(shape), params).all())
            if conn.execute(_UNPREDICTED_EXIST).scalar():
                rows += _stories(conn.execute(_never_predicted_statement(shape), params).all())
        else:
            rows = _stories(conn.execute(_walk_statement(shape), params).all())
            if section in moved:
                rows += _stories(conn.execute(_moved_in_statement(shape), params).all())
        rows.sort(key=lambda row: (row.priority, row.item_id), reverse=True)
        return rows[:limit]


# -- statements, built once per shape of filters -----------------------------------------------------


class DaysSinceEpoch(FunctionElement[float]):
    """Days since a fixed epoch, as a float, in the dialect's own date arithmetic."""

    type = sa.Float()
    inherit_cache = True


@compiles(DaysSinceEpoch, "sqlite")
def _days_sqlite(element: DaysSinceEpoch, compiler: Any, **kw: Any) -> str:
    return f"julianday({compiler.process(element.clauses, **kw)})"


@compiles(DaysSinceEpoch)
def _days_epoch(element: DaysSinceEpoch, compiler: Any, **kw: Any) -> str:
    return f"(extract(epoch FROM {compiler.process(element.clauses, **kw)}) / 86400.0)"


@dataclass(frozen=True, slots=True)
class _Shape:
    """Which filters a query uses (the statement's shape; their values are bound at run time)."""

    source: bool = False
    item_type: bool = False
    since: bool = False
    until: bool = False
    words: int = 0


def _shape(query: QueueQuery) -> _Shape:
    words = len((query.text or "").split())
    return _Shape(bool(query.source), bool(query.item_type), bool(query.since), bool(query.until), words)


def _params(query: QueueQuery) -> dict[str, Any]:
    params: dict[str, Any] = {"source": query.source, "item_type": query.item_type, "since": query.since,
                              "until": query.until}  # fmt: skip
    for n, word in enumerate((query.text or "").split()):
        params[f"word{n}"] = f"%{_escape_like(word)}%"
    return params


def _joined() -> Any:
    return t.items.outerjoin(t.item_state, _state.item_id == _items.id).outerjoin(
        t.predictions, _pred.item_id == _items.id
    )


def _walked() -> Any:
    """Predictions first: the walk reads the (section, priority) index in order."""
    return t.predictions.join(t.items, _items.id == _pred.item_id).outerjoin(t.item_state, _state.item_id == _items.id)


def _story() -> Any:
    return sa.func.coalesce(_items.cluster_id, _items.id)


def _section() -> Any:
    # An inline constant, not a bound one: PostgreSQL must see the GROUP BY expression as the SELECT's.
    return sa.func.coalesce(_state.section, _pred.section, sa.literal_column(f"'{UNCLASSIFIED}'", sa.String()))


def _item_type() -> Any:
    return sa.func.coalesce(_state.item_type, _pred.item_type)


def _date() -> Any:
    return sa.case(
        (sa.or_(_items.published.is_(None), _items.published > _items.first_seen), _items.first_seen),
        else_=_items.published,
    )


def _priority_or_fresh() -> Any:
    """The stored priority, or freshness alone for an item never predicted (computed per row)."""
    return sa.func.coalesce(_pred.priority, DaysSinceEpoch(_date()) / FRESHNESS_DAYS)


def _select_story(priority: Any) -> sa.Select[Any]:
    return sa.select(_items.id, _story(), _section(), _item_type(), priority)


def _queued(*, scan: bool) -> list[sa.ColumnElement[bool]]:
    """The lead of a story nobody has decided. `scan` picks the decided-story test that suits
    reading every row (one list of decided stories) over reading a few (a lookup for each)."""
    lead = sa.or_(_items.cluster_id.is_(None), _items.cluster_id == _items.id)
    undecided = sa.or_(_state.status.is_(None), _state.status == "candidate")
    member, member_state = t.items.alias("member"), t.item_state.alias("member_state")
    decided_members = member.join(member_state, member_state.c.item_id == member.c.id)
    if scan:
        decided_stories = (
            sa.select(sa.func.coalesce(member.c.cluster_id, member.c.id))
            .select_from(decided_members)
            .where(member_state.c.status.in_(DECIDED))
        )
        story_open: sa.ColumnElement[bool] = _story().not_in(decided_stories.scalar_subquery())
    else:
        decided_member = (
            sa.select(member.c.id)
            .select_from(decided_members)
            .where(member.c.cluster_id == _items.cluster_id, member_state.c.status.in_(DECIDED))
        )
        story_open = sa.or_(_items.cluster_id.is_(None), ~decided_member.exists())
    return [lead, undecided, story_open]


def _filters(shape: _Shape) -> list[sa.ColumnElement[bool]]:
    found: list[sa.ColumnElement[bool]] = []
    if shape.source:
        found.append(_items.source == sa.bindparam("source"))
    if shape.item_type:
        found.append(_item_type() == sa.bindparam("item_type"))
    if shape.since:
        found.append(_date() >= sa.bindparam("since", type_=t.items.c.published.type))
    if shape.until:
        found.append(_date() < sa.bindparam("until", type_=t.items.c.published.type))
    for n in range(shape.words):
        word = sa.bindparam(f"word{n}", type_=sa.String())
        found.append(sa.or_(_items.title.ilike(word, escape="\\"), _items.summary_text.ilike(word, escape="\\")))
    return found


@lru_cache(maxsize=64)
def _walk_statement(shape: _Shape) -> sa.Select[Any]:
    """Stories predicted in :section and not moved elsewhere, read down the priority index."""
    section = sa.bindparam("section", type_=sa.String())
    return (
        _select_story(_pred.priority)
        .select_from(_walked())
        .where(_pred.section == section, sa.or_(_state.section.is_(None), _state.section == section))
        .where(*_queued(scan=False), *_filters(shape))
        .order_by(_pred.priority.desc(), _pred.item_id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )


@lru_cache(maxsize=64)
def _moved_in_statement(shape: _Shape) -> sa.Select[Any]:
    """Stories an editor moved into :section from another (few: read through item_state)."""
    section = sa.bindparam("section", type_=sa.String())
    return (
        _select_story(_priority_or_fresh())
        .select_from(_joined())
        .where(_state.status == "candidate", _state.section == section)
        .where(sa.or_(_pred.section.is_(None), _pred.section != section))
        .where(*_queued(scan=False), *_filters(shape))
        .order_by(_priority_or_fresh().desc(), _items.id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )


@lru_cache(maxsize=64)
def _unclassified_statement(shape: _Shape) -> sa.Select[Any]:
    """Stories predicted without a section (an index walk too)."""
    return (
        _select_story(_pred.priority)
        .select_from(_walked())
        .where(_pred.section.is_(None), _state.section.is_(None))
        .where(*_queued(scan=False), *_filters(shape))
        .order_by(_pred.priority.desc(), _pred.item_id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )


@lru_cache(maxsize=64)
def _never_predicted_statement(shape: _Shape) -> sa.Select[Any]:
    """Stories never predicted at all (a scan, run only while such items exist, e.g. after
    `run --no-classify`)."""
    return (
        _select_story(_priority_or_fresh())
        .select_from(_joined())
        .where(_pred.item_id.is_(None), _state.section.is_(None))
        .where(*_queued(scan=True), *_filters(shape))
        .order_by(_priority_or_fresh().desc(), _items.id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )


@lru_cache(maxsize=64)
def _count_statement(shape: _Shape) -> sa.Select[Any]:
    return (
        sa.select(_section(), sa.func.count())
        .select_from(_joined())
        .where(*_queued(scan=True), *_filters(shape))
        .group_by(_section())
    )


def _details_statement() -> sa.Select[Any]:
    prediction = [c.label(f"p_{c.name}") for c in t.predictions.c]
    state = [c.label(f"s_{c.name}") for c in t.item_state.c]
    return (
        sa.select(t.items, *prediction, *state)
        .select_from(_joined())
        .where(_items.id.in_(sa.bindparam("ids", expanding=True)))
    )


_DETAILS = _details_statement()
_MEMBERS = sa.select(t.items).where(
    _items.cluster_id.in_(sa.bindparam("stories", expanding=True)),
    _items.id.not_in(sa.bindparam("ids", expanding=True)),
)
_STORY_MEMBERS = (
    sa.select(_story(), _items.id)
    .where(
        sa.or_(
            _items.cluster_id.in_(sa.bindparam("stories", expanding=True)),
            sa.and_(_items.cluster_id.is_(None), _items.id.in_(sa.bindparam("stories", expanding=True))),
        )
    )
    .order_by(_items.id)
)
_STORY_OF = sa.select(_story()).where(_items.id == sa.bindparam("id"))
_STORY_ROW = _select_story(_priority_or_fresh()).select_from(_joined()).where(_items.id == sa.bindparam("id"))
_RECENT_DECISIONS = (
    sa.select(t.decisions, _items.key)
    .join(t.items, _items.id == t.decisions.c.item_id)
    .where(t.decisions.c.editor == sa.bindparam("editor"))
    .order_by(t.decisions.c.id.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer()))
)
_DECISION_LOGS = (
    sa.select(t.decisions, _items.key)
    .join(t.items, _items.id == t.decisions.c.item_id)
    .where(t.decisions.c.item_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(t.decisions.c.id)
)
# The distinct predicted sections, one index probe each (a "loose index scan"), not a scan of them all.
_PREDICTED_SECTIONS = sa.text(
    """WITH RECURSIVE found(section) AS (
        SELECT min(section) FROM predictions
        UNION ALL
        SELECT (SELECT min(section) FROM predictions WHERE section > found.section)
        FROM found WHERE found.section IS NOT NULL
    ) SELECT section FROM found WHERE section IS NOT NULL"""
)
_MOVED_SECTIONS = sa.select(_state.section).where(_state.status == "candidate", _state.section.is_not(None)).distinct()
# Whether some item was never predicted (two counts, each read from the smallest index).
_UNPREDICTED_EXIST = sa.select(
    sa.select(sa.func.count()).select_from(t.items).scalar_subquery()
    > sa.select(sa.func.count()).select_from(t.predictions).scalar_subquery()
)


def _stories(rows: Sequence[Any]) -> list[QueuedStory]:
    return [QueuedStory(int(r[0]), int(r[1]), str(r[2]), r[3], float(r[4] or 0.0)) for r in rows]



def _unprefixed(row: RowMapping, prefix: str) -> dict[str, Any]:
    return {str(key)[len(prefix) :]: value for key, value in row.items() if str(key).startswith(prefix)}


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


