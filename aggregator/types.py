"""Frozen values passed between stages, named for where they go.

    Source     config   -> sources/*, fetch, storage (mirror + fetch state)
    RawEntry   sources  -> normalize        (what one source said, untouched)
    Item       normalize-> dedupe, storage, classify
    Prediction classify -> storage, review, export
    Decision   review   -> storage, train
    FetchResult, RunReport  pipeline -> cli, log

Nothing here imports a third-party library: feedparser dicts, arxiv.Result objects and
database rows never leave their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

SourceKind = Literal["feed", "github", "arxiv"]
ItemKind = Literal["paper", "blog", "release"]
FetchStatus = Literal["new", "unchanged", "not_modified", "error", "skipped"]
DecisionAction = Literal["accept", "reject", "move", "note", "undo", "split"]


@dataclass(frozen=True, slots=True)
class Source:
    """One configured source. `url` is always the document fetched (releases.atom for github,
    the API endpoint for arxiv)."""

    name: str
    kind: SourceKind
    url: str
    interval: timedelta = timedelta(hours=6)
    enabled: bool = True
    query: str | None = None  # arxiv search query, e.g. "cat:cs.CL"
    repo: str | None = None  # github "owner/name"
    max_results: int = 200  # arxiv: how many results one poll reads
    default_category: str | None = None  # section for items when no model is live


@dataclass(frozen=True, slots=True)
class SourceState:
    """Fetch state kept per source between runs."""

    name: str
    etag: str | None = None
    last_modified: str | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    error_count: int = 0
    next_check: datetime | None = None
    paused: bool = False
    items: int = 0


@dataclass(frozen=True, slots=True)
class RawEntry:
    """What one source said about one entry, before any cleaning. HTML fields are as received;
    links may be relative to `base_url`."""

    source: str
    title: str
    link: str | None = None
    guid: str | None = None
    summary_html: str = ""
    content_html: str = ""
    authors: tuple[str, ...] = ()
    published: datetime | None = None
    updated: datetime | None = None
    tags: tuple[str, ...] = ()
    base_url: str | None = None
    # arXiv: id as given, with its version when there is one ("2401.01234v2", "hep-th/9901001v1")
    arxiv_id: str | None = None
    # GitHub releases: repository "owner/name" and the release tag ("v4.36.0")
    repo: str | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """One stored story. `key` is its identity across polls and sources (see normalize.item_key)."""

    key: str
    title: str
    url: str
    source: str
    kind: ItemKind
    summary_text: str = ""
    summary_html: str = ""
    authors: tuple[str, ...] = ()
    published: datetime | None = None
    tags: tuple[str, ...] = ()
    arxiv_id: str | None = None  # base id, no version
    arxiv_version: int | None = None
    repo: str | None = None
    version: str | None = None  # release tag as published
    prerelease: bool = False
    content_hash: str = ""  # of title + summary: tells an update from an unchanged re-poll


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An Item as read back from storage, with what storage adds."""

    id: int
    item: Item
    first_seen: datetime
    updated_at: datetime
    cluster_id: int | None = None


class StoryFields(NamedTuple):
    """What story clustering (clusters.py) reads of a stored item. A named tuple, not a frozen
    dataclass: made for every item of a week, 5x faster."""

    id: int
    key: str
    source: str
    title: str
    summary_text: str
    summary_html: str
    url: str
    arxiv_id: str | None
    repo: str | None
    version: str | None
    cluster_id: int | None
    at: datetime  # published, else first seen


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the live model says about one item."""

    item_key: str
    section: str | None
    confidence: float
    item_type: str
    model_version: str | None
    top_terms: tuple[str, ...] = ()
    relevance: float | None = None  # probability an editor accepts it, when that model exists


@dataclass(frozen=True, slots=True)
class Decision:
    """One editor event. The log is append-only; an item's state is derived from it."""

    item_key: str
    editor: str
    at: datetime
    action: DecisionAction
    section: str | None = None
    item_type: str | None = None
    reason: str | None = None
    model_version: str | None = None
    id: int | None = None  # set when read back from storage


@dataclass(frozen=True, slots=True)
class LabeledExample:
    """A labeled item imported from a file or a past newsletter issue (training data)."""

    title: str
    label: str
    summary: str = ""
    url: str = ""
    item_type: str | None = None
    date: datetime | None = None
    origin: str = ""  # file or issue it came from


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What happened to one source in one run. A failure is a value here, never an exception."""

    source: str
    status: FetchStatus
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None
    http_status: int | None = None
    ms: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "error"


@dataclass(frozen=True, slots=True)
class RunReport:
    """One poll of many sources."""

    started: datetime
    finished: datetime
    results: tuple[FetchResult, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = ()  # run-wide remarks, e.g. "no model: items stored unclassified"

    @property
    def new(self) -> int:
        return sum(r.new for r in self.results)

    @property
    def updated(self) -> int:
        return sum(r.updated for r in self.results)

    @property
    def failed(self) -> tuple[FetchResult, ...]:
        return tuple(r for r in self.results if r.failed)

    @property
    def seconds(self) -> float:
        return (self.finished - self.started).total_seconds()
