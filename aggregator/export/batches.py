"""Exports as recorded batches: choose the rows, render them, write atomically, remember what went out.

`--since-last` means: items first seen, or decided, after the previous export was made.
One row per story: members of a cluster after the first are listed as its other sources.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aggregator.classify.itemtype import item_type as type_of
from aggregator.config import Settings
from aggregator.errors import ExportError
from aggregator.export import ExportRow
from aggregator.export.markdown import render_markdown
from aggregator.export.tabular import render_csv, render_json, render_jsonl
from aggregator.storage import ItemQuery, Storage
from aggregator.types import Prediction, StoredItem

Format = Literal["markdown", "csv", "json", "jsonl"]
StatusFilter = Literal["accepted", "candidates", "all"]
SUFFIX: dict[str, str] = {"markdown": ".md", "csv": ".csv", "json": ".json", "jsonl": ".jsonl"}
FRESHNESS_DAYS = 7.0


@dataclass(frozen=True, slots=True)
class ExportRequest:
    fmt: Format = "markdown"
    status: StatusFilter = "accepted"
    since: datetime | None = None
    since_last: bool = False
    sections: tuple[str, ...] = ()
    top: int | None = None  # per section

    def filters(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "since": self.since.isoformat() if self.since else None,
            "since_last": self.since_last,
            "sections": list(self.sections),
            "top": self.top,
        }


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    text: str
    rows: tuple[ExportRow, ...]
    path: Path | None = None
    batch_id: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def export(
    settings: Settings, storage: Storage, request: ExportRequest, now: datetime, output: Path | str | None = None
) -> ExportOutcome:
    """Select, render, write (when `output` names a file or folder) and record one export batch."""
    rows = select_rows(settings, storage, request, now)
    text = render(settings, rows, request, now)
    path = None
    if output is not None:
        path = _target(output, request.fmt, now)
        write_atomically(path, text, bom=request.fmt == "csv" and settings.model.export.bom)
    batch_id = storage.record_export(
        at=now,
        fmt=request.fmt,
        filters=request.filters(),
        path=str(path) if path else None,
        item_ids=[r.id for r in rows],
    )
    return ExportOutcome(text, tuple(rows), path, batch_id)


def render(settings: Settings, rows: Sequence[ExportRow], request: ExportRequest, now: datetime) -> str:
    if request.fmt == "markdown":
        title = f"Candidates {now:%Y-%m-%d}" if request.status != "accepted" else None
        return render_markdown(
            rows,
            categories=settings.categories,
            headings={c: settings.heading(c) for c in settings.categories},
            summary_chars=settings.model.export.summary_chars,
            candidates=request.status != "accepted",
            title=title,
        )
    if request.fmt == "csv":
        return render_csv(rows)  # the BOM is added when writing a file
    if request.fmt == "json":
        return render_json(rows)
    return render_jsonl(rows)


def select_rows(settings: Settings, storage: Storage, request: ExportRequest, now: datetime) -> list[ExportRow]:
    since = request.since
    if request.since_last:
        previous = storage.exports(limit=1)
        since = previous[0]["at"] if previous else None
    stored = list(storage.iter_items(ItemQuery()))
    ids = [s.id for s in stored]
    predictions = storage.predictions_for(ids)
    states = storage.item_states(ids)
    rows = []
    for story in _stories(stored):
        lead = story[0]
        state = states.get(lead.id, {})
        if not _wanted(lead, state, request.status, since):
            continue
        row = _row(lead, story[1:], predictions.get(lead.id), state, now)
        if request.sections and row.section not in request.sections:
            continue
        rows.append(row)
    rows.sort(key=lambda r: (-r.rank, r.id))
    return _top_per_section(rows, request.top)


def write_atomically(path: Path, text: str, *, bom: bool = False) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    except OSError as exc:
        raise ExportError(f"cannot write export {path}: {exc.strerror or exc}") from None


def write_nightly(settings: Settings, storage: Storage, now: datetime) -> list[Path]:
    """The nightly files: candidates-YYYY-MM-DD.md and .csv in the export folder."""
    folder = settings.export_dir
    written = []
    formats: tuple[Format, ...] = ("markdown", "csv")
    for fmt in formats:
        request = ExportRequest(fmt=fmt, status="candidates")
        path = folder / f"candidates-{now:%Y-%m-%d}{SUFFIX[fmt]}"
        outcome = export(settings, storage, request, now, path)
        if outcome.path:
            written.append(outcome.path)
    return written


def _target(output: Path | str, fmt: str, now: datetime) -> Path:
    """A file as named, or a dated file inside a folder (an existing one, or a name ending in /)."""
    if Path(output).is_dir() or str(output).endswith(("/", os.sep)):
        return Path(output) / f"export-{now:%Y-%m-%dT%H%M%S}{SUFFIX[fmt]}"
    return Path(output)


def _stories(stored: Iterable[StoredItem]) -> list[list[StoredItem]]:
    """Group cluster members (lowest id first); unclustered items are stories of their own."""
    groups: dict[int, list[StoredItem]] = {}
    for s in stored:
        groups.setdefault(s.cluster_id if s.cluster_id is not None else s.id, []).append(s)
    return [sorted(members, key=lambda s: s.id) for members in groups.values()]


def _wanted(lead: StoredItem, state: dict[str, Any], status: StatusFilter, since: datetime | None) -> bool:
    current = state.get("status", "candidate")
    if status == "accepted" and current != "accepted":
        return False
    if status == "candidates" and current != "candidate":
        return False
    if since is None:
        return True
    decided = state.get("decided_at")
    return lead.first_seen > since or (decided is not None and decided > since)


def _row(
    lead: StoredItem, others: Sequence[StoredItem], prediction: Prediction | None, state: dict[str, Any], now: datetime
) -> ExportRow:
    item = lead.item
    section = state.get("section") or (prediction.section if prediction else None)
    tag = state.get("item_type") or (prediction.item_type if prediction and prediction.item_type else type_of(item))
    return ExportRow(
        id=lead.id,
        section=section,
        confidence=prediction.confidence if prediction else None,
        item_type=tag,
        title=item.title,
        url=item.url,
        source=item.source,
        published=item.published,
        status=state.get("status", "candidate"),
        decided_by=state.get("decided_by"),
        decided_at=state.get("decided_at"),
        model_version=prediction.model_version if prediction else None,
        summary=item.summary_text,
        rank=rank(prediction, item.published or lead.first_seen, now),
        sources=tuple((o.item.source, o.item.url) for o in others),
    )


def rank(prediction: Prediction | None, published: datetime, now: datetime) -> float:
    """Worth including: the relevance model's probability when there is one, else the section
    confidence; either way scaled down gently with age (half weight after a week)."""
    if prediction is None:
        base = 0.5
    else:
        base = prediction.relevance if prediction.relevance is not None else prediction.confidence
    age_days = max((now - published.astimezone(UTC)).total_seconds() / 86400, 0.0)
    return round(base / (1 + age_days / FRESHNESS_DAYS), 6)


def _top_per_section(rows: list[ExportRow], top: int | None) -> list[ExportRow]:
    if top is None:
        return rows
    taken: dict[str | None, int] = {}
    kept = []
    for row in rows:
        if taken.get(row.section, 0) < top:
            kept.append(row)
            taken[row.section] = taken.get(row.section, 0) + 1
    return kept
