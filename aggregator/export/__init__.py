"""What editors take away: a Markdown draft (markdown.py) and candidate lists (tabular.py).

Both render `ExportRow`s, the value the storage query produces: one item with its current section,
review status and rank. Renderers are pure functions returning text; writing files is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ExportStatus = Literal["accepted", "candidate", "rejected"]

# The documented, stable columns of CSV / JSON / JSONL (JSON adds "summary").
COLUMNS: tuple[str, ...] = (
    "id",
    "section",
    "confidence",
    "item_type",
    "title",
    "url",
    "source",
    "published",
    "status",
    "decided_by",
    "decided_at",
    "model_version",
)


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One item as exported: its current section (the latest decision, else the prediction)."""

    id: int
    section: str | None
    confidence: float | None
    item_type: str
    title: str
    url: str
    source: str
    published: datetime | None
    status: ExportStatus
    decided_by: str | None
    decided_at: datetime | None
    model_version: str | None
    summary: str
    rank: float
    sources: tuple[tuple[str, str], ...] = ()  # (source, url) of other members of the same story
