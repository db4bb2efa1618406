"""The review queue and the decisions editors make on it; the web page, the JSON API and the
terminal walk all go through here.

The queue holds stories (a dedupe cluster, or a lone item), one card each, grouped by section and
ranked within it (see aggregator/storage/queue.py for the formula and the SQL behind it).

Decisions are events appended to the log, never edits: accept (section and type editable),
reject (optional reason), move (to another section; the story stays queued), note, and undo (a
new event that cancels the editor's latest decision). A decision on a story is recorded on every
member of its cluster, with the editor and the model version that predicted each member. The
derived state (item_state) is what the queue reads, and re-polling an item never touches it: a
decided story never comes back. A split takes one item out of its story for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from aggregator.classify.itemtype import ITEM_TYPES
from aggregator.config import Settings
from aggregator.errors import ReviewError
from aggregator.storage import Storage
from aggregator.storage.queue import UNCLASSIFIED, QueuedStory, QueueQuery
from aggregator.types import Decision, DecisionAction, Prediction, StoredItem

__all__ = ["UNCLASSIFIED", "Card", "Outcome", "QueuePage", "QueueQuery", "Review"]

DECIDING: Final = ("accept", "reject", "move", "note")
STATE_CHANGING: Final = ("accept", "reject", "move")
REASON_CHARS: Final = 1000
WHOLE_QUEUE: Final = QueueQuery()  # no filters


@dataclass(frozen=True, slots=True)
class Card:
    """One story as the queue shows it: its lead item and what the model and editors said."""

    stored: StoredItem
    story_id: int
    section: str  # the editor's section after a move, else the predicted one, else UNCLASSIFIED
    item_type: str | None
    status: str  # candidate | accepted | rejected
    prediction: Prediction | None
    note: str | None = None
    decided_by: str | None = None
    priority: float | None = None
    others: tuple[StoredItem, ...] = ()  # the story's other items (their sources and links)

    @property
    def id(self) -> int:
        return self.stored.id

    def json(self) -> dict[str, Any]:
        item, p = self.stored.item, self.prediction
        return {
            "id": self.id,
            "story_id": self.story_id,
            "title": item.title,
            "url": item.url,
            "source": item.source,
            "kind": item.kind,
            "published": item.published.isoformat() if item.published else None,
            "first_seen": self.stored.first_seen.isoformat(),
            "section": self.section,
            "predicted_section": p.section if p else None,
            "confidence": p.confidence if p else None,
            "relevance": p.relevance if p else None,
            "item_type": self.item_type,
            "top_terms": list(p.top_terms) if p else [],
            "model_version": p.model_version if p else None,
            "status": self.status,
            "note": self.note,
            "summary": item.summary_text,
            "others": [
                {"id": o.id, "title": o.item.title, "url": o.item.url, "source": o.item.source} for o in self.others
            ],
        }


@dataclass(frozen=True, slots=True)
class QueuePage:
    """Cards from `offset`, at most `limit` of them; `more` says whether others follow."""

    cards: tuple[Card, ...]
    offset: int
    limit: int
    more: bool
    section: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one decision, bulk decision, undo or split recorded."""

    action: str
    item_ids: tuple[int, ...]  # every item an event was appended to
    story_ids: tuple[int, ...]
    decision_ids: tuple[int, ...] = field(default=())

    def json(self) -> dict[str, Any]:
        return {"action": self.action, "item_ids": list(self.item_ids), "story_ids": list(self.story_ids)}


class Review:
    """The queue and its decisions over one Storage, for one list of categories (sections)."""

    def __init__(self, storage: Storage, categories: Sequence[str], *, page_size: int = 50) -> None:
        self.storage = storage
        self.categories = tuple(categories)
        self.page_size = page_size

    @classmethod
    def from_settings(cls, settings: Settings, storage: Storage) -> Review:
        return cls(storage, settings.categories, page_size=settings.model.review.page_size)

    # -- reading -------------------------------------------------------------------------------

    def sections(self) -> list[str]:
        """The sections the queue may show, in display order (categories first)."""
        return self.storage.queue_sections(self.categories)

    def page(self, query: QueueQuery = WHOLE_QUEUE, *, offset: int = 0, limit: int | None = None) -> QueuePage:
        """One page of the queue in its order (grouped by section unless `query.section` is set)."""
        limit = self.page_size if limit is None else limit
        if limit < 1 or offset < 0:
            raise ReviewError(f"a queue page needs limit >= 1 and offset >= 0 (got limit {limit}, offset {offset})")
        checked = self._checked(query)
        stories = self.storage.queue_stories(checked, self.categories, limit=limit + 1, offset=offset)
        cards = self._cards(stories[:limit])
        return QueuePage(tuple(cards), offset, limit, len(stories) > limit, checked.section)

    def overview(
        self, query: QueueQuery = WHOLE_QUEUE, *, per_section: int | None = None, sections: Sequence[str] = ()
    ) -> list[QueuePage]:
        """The top of every section that has queued stories (the page's first view). `sections`:
        the queue's sections when the caller has them already."""
        per_section = per_section or max(5, self.page_size // max(1, len(self.categories)))
        checked = self._checked(replace(query, section=None))
        tops = self.storage.queue_tops(checked, sections or self.sections(), limit=per_section + 1)
        cards = {card.id: card for card in self._cards([row for rows in tops.values() for row in rows[:per_section]])}
        return [
            QueuePage(tuple(cards[r.item_id] for r in rows[:per_section] if r.item_id in cards), 0, per_section,
                      len(rows) > per_section, section)
            for section, rows in tops.items()
            if rows
        ]  # fmt: skip

    def counts(self, query: QueueQuery = WHOLE_QUEUE) -> dict[str, int]:
        """Queued stories per section (under every filter but the section one), in display order."""
        found = self.storage.queue_section_counts(self._checked(query))
        return {s: found[s] for s in self.sections() if found.get(s)}

    def total(self, query: QueueQuery = WHOLE_QUEUE) -> int:
        counts = self.counts(query)
        return counts.get(query.section, 0) if query.section else sum(counts.values())

    def card(self, item_id: int) -> Card:
        """The card of the story an item belongs to, decided or not (ReviewError if no such item)."""
        row = self.storage.story_row(item_id)
        cards = self._cards([row]) if row is not None else []
        if not cards:
            raise ReviewError(f"no item with id {item_id}")
        return cards[0]

    # -- deciding ------------------------------------------------------------------------------

    def decide(
        self,
        item_id: int,
        action: str,
        editor: str,
        now: datetime,
        *,
        section: str | None = None,
        item_type: str | None = None,
        reason: str | None = None,
    ) -> Outcome:
        """Record one decision on the story `item_id` belongs to (every member of its cluster)."""
        return self.bulk([item_id], action, editor, now, section=section, item_type=item_type, reason=reason)

    def bulk(
        self,
        item_ids: Iterable[int],
        action: str,
        editor: str,
        now: datetime,
        *,
        section: str | None = None,
        item_type: str | None = None,
        reason: str | None = None,
    ) -> Outcome:
        """The same decision on several stories, in one transaction."""
        verb = _action(action)
        editor = _editor(editor)
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            raise ReviewError("no items selected")
        section = self._section(section) if section else None
        item_type = _item_type(item_type) if item_type else None
        reason = _reason(verb, reason)
        if verb == "move" and section is None:
            raise ReviewError(f"move needs a section (one of: {', '.join(self.categories)})")
        events: list[tuple[int, Decision]] = []
        stories: list[int] = []
        for lead in ids:
            card = self.card(lead)
            if card.story_id in stories:
                continue
            stories.append(card.story_id)
            events += self._events(card, verb, editor, now, section, item_type, reason)
        decision_ids = self.storage.add_decisions(events)
        return Outcome(verb, tuple(i for i, _ in events), tuple(stories), tuple(decision_ids))

    def undo(self, editor: str, now: datetime) -> Outcome:
        """Cancel the editor's latest decision that still stands (on every item it was recorded on),
        by appending undo events. Items someone else decided on since are left alone."""
        editor = _editor(editor)
        target = self._latest_standing(editor)
        if target is None:
            raise ReviewError(f"nothing to undo: {editor} has no standing accept, reject or move")
        group = [
            (item_id, d)
            for item_id, d in self.storage.decisions(editor=editor, since=target.at)
            if d.at == target.at and d.action == target.action
        ]
        logs = self.storage.decision_logs(i for i, _ in group)
        undone: list[int] = []
        decision_ids: list[int] = []
        for item_id, d in group:
            standing = _standing(logs[item_id])
            if standing and standing[-1].id == d.id:
                undo = Decision(d.item_key, editor, now, "undo", model_version=d.model_version)
                decision_ids.append(self.storage.add_decision(item_id, undo, undoes=d.id))
                undone.append(item_id)
        if not undone:
            raise ReviewError(f"nothing to undo: your latest {target.action} was overridden by a later decision")
        stories = tuple(dict.fromkeys(self.storage.story_of(i) or i for i in undone))
        return Outcome("undo", tuple(undone), stories, tuple(decision_ids))

    def split(self, item_id: int, editor: str, now: datetime) -> Outcome:
        """Take an item out of the story it was wrongly merged into; dedupe never merges them again.
        Each item keeps the decisions already recorded on it."""
        from aggregator.dedupe import split_out  # numpy and datasketch: only when splitting

        editor = _editor(editor)
        stored = self.storage.item_by_id(item_id)
        if stored is None:
            raise ReviewError(f"no item with id {item_id}")
        members = self.storage.cluster_members(stored.cluster_id) if stored.cluster_id is not None else [stored]
        if len(members) < 2:
            raise ReviewError(f"item {item_id} is alone in its story: nothing to split")
        changed, pairs = split_out({m.id: m.cluster_id or m.id for m in members}, item_id)
        self.storage.set_clusters(changed)
        for pair in pairs:
            low, high = sorted(pair)
            self.storage.add_split(low, high, editor, now)
        story = stored.cluster_id or item_id
        event = Decision(stored.item.key, editor, now, "split", reason=f"split from story {story}")
        decision_id = self.storage.add_decision(item_id, event)
        return Outcome("split", (item_id,), (story, item_id), (decision_id,))

    # -- helpers -------------------------------------------------------------------------------

    def _cards(self, rows: Sequence[QueuedStory]) -> list[Card]:
        details = self.storage.story_details(rows)
        cards = []
        for row in rows:
            found = details.get(row.item_id)
            if found is None:  # gone between the two reads
                continue
            state = found.state
            cards.append(
                Card(
                    stored=found.lead,
                    story_id=row.story_id,
                    section=row.section,
                    item_type=row.item_type,
                    status=state.get("status") or "candidate",
                    prediction=found.prediction,
                    note=state.get("note"),
                    decided_by=state.get("decided_by"),
                    priority=row.priority,
                    others=found.others,
                )
            )
        return cards

    def _events(
        self,
        card: Card,
        verb: DecisionAction,
        editor: str,
        now: datetime,
        section: str | None,
        item_type: str | None,
        reason: str | None,
    ) -> list[tuple[int, Decision]]:
        """One event per member of the story, each with the model version that predicted it. An
        accept without a section or type keeps the story's section and each member's own type."""
        members = [card.stored, *card.others]
        predictions = self.storage.predictions_for(m.id for m in members)
        if verb == "accept":
            section = section or self._current_section(card)
        events = []
        for m in members:
            p = predictions.get(m.id)
            own_type = card.item_type if m.id == card.id else (p.item_type if p else None)
            kind = item_type or (own_type if verb == "accept" else None)
            decision = Decision(m.item.key, editor, now, verb, section, kind, reason, p.model_version if p else None)
            events.append((m.id, decision))
        return events

    def _current_section(self, card: Card) -> str:
        if card.section in self.categories:
            return card.section
        raise ReviewError(f"item {card.id} has no section to accept it into: give one of {', '.join(self.categories)}")

    def _section(self, name: str) -> str:
        for category in self.categories:
            if category.casefold() == name.strip().casefold():
                return category
        raise ReviewError(f"unknown section {name!r} (sections: {', '.join(self.categories)})")

    def _checked(self, query: QueueQuery) -> QueueQuery:
        """The query with names made canonical; ReviewError names a section or type that is not one."""
        if query.section and query.section != UNCLASSIFIED and query.section not in self.categories:
            known = {s.casefold(): s for s in self.sections()}
            if query.section.casefold() not in known:
                raise ReviewError(f"unknown section {query.section!r} (sections: {', '.join(known.values())})")
            query = replace(query, section=known[query.section.casefold()])
        if query.item_type:
            query = replace(query, item_type=_item_type(query.item_type))
        if query.since and query.until and query.since >= query.until:
            raise ReviewError(f"empty date range: {query.since:%Y-%m-%d} is not before {query.until:%Y-%m-%d}")
        return query

    def _latest_standing(self, editor: str) -> Decision | None:
        """The editor's newest accept, reject or move that no undo has cancelled."""
        recent = [(i, d) for i, d in self.storage.recent_decisions_by(editor) if d.action in STATE_CHANGING]
        logs = self.storage.decision_logs(i for i, _ in recent)
        for item_id, decision in recent:
            if any(s.id == decision.id for s in _standing(logs[item_id])):
                return decision
        return None


def _standing(log: Sequence[Decision]) -> list[Decision]:
    """The state-changing events an item's log still stands on, oldest first (the same rule as
    storage.derive_state: an undo cancels the latest one still standing)."""
    stack: list[Decision] = []
    for d in log:
        if d.action == "undo":
            if stack:
                stack.pop()
        elif d.action in STATE_CHANGING:
            stack.append(d)
    return stack


def _action(action: str) -> DecisionAction:
    verb = action.strip().lower()
    if verb == "accept":
        return "accept"
    if verb == "reject":
        return "reject"
    if verb == "move":
        return "move"
    if verb == "note":
        return "note"
    raise ReviewError(f"unknown action {action!r} (use accept, reject, move or note)")


def _editor(editor: str) -> str:
    name = editor.strip()
    if not name:
        raise ReviewError("a decision needs an editor name")
    return name[:200]


def _item_type(name: str) -> str:
    for known in ITEM_TYPES:
        if known.casefold() == name.strip().casefold():
            return known
    raise ReviewError(f"unknown type {name!r} (types: {', '.join(ITEM_TYPES)})")


def _reason(verb: str, reason: str | None) -> str | None:
    text = " ".join((reason or "").split())[:REASON_CHARS] or None
    if verb == "note" and text is None:
        raise ReviewError("a note needs some text")
    return text
