"""Training data in and models out: the glue between storage and classify/.

Three ways in: editor decisions (the decisions log), labeled JSONL files (`learn import`) and past
newsletter issues (`learn import-archive`). `retrain` builds the set (a decision overrides an
imported label for the same item), fits, measures on the newest 20% and saves a new version,
promoted only when it is not worse than the live model on that holdout (unless forced).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aggregator.archive import DEFAULT_ALIASES, ArchiveResult, aliases_for_headings, parse_issues
from aggregator.classify.predict import SectionModel
from aggregator.classify.registry import Registry
from aggregator.classify.train import read_labeled_jsonl, train_relevance_model, train_section_model
from aggregator.config import Settings
from aggregator.errors import ModelError, ParseError
from aggregator.normalize import canonical_url
from aggregator.storage import Storage
from aggregator.types import LabeledExample, StoredItem

log = logging.getLogger("aggregator.training")
MIN_EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class ImportReport:
    read: int
    added: int
    per_label: dict[str, int]
    outside: dict[str, int] = field(default_factory=dict)  # labels not in `categories`: reported, not guessed


@dataclass(frozen=True, slots=True)
class RetrainOutcome:
    version: str
    promoted: bool
    forced: bool
    macro_f1: float
    live_version: str | None
    live_macro_f1: float | None
    examples: int
    relevance: bool

    def describe(self) -> str:
        live = (
            f"live {self.live_version} scores {self.live_macro_f1:.3f}"
            if self.live_version and self.live_macro_f1 is not None
            else "no live model"
        )
        verdict = "promoted" if self.promoted else "kept (not better than the live model; --force promotes)"
        forced = " (forced)" if self.forced else ""
        return (
            f"{self.version}: holdout macro-F1 {self.macro_f1:.3f} on {self.examples} examples; {live}; "
            f"{verdict}{forced}"
        )


def import_labeled_file(storage: Storage, settings: Settings, path: Path, now: datetime) -> ImportReport:
    """Store the examples of a JSONL file whose labels are categories; count the others."""
    examples = read_labeled_jsonl(path)
    return _store_examples(storage, settings, examples, now)


def import_archive(
    storage: Storage, settings: Settings, paths: Sequence[Path], now: datetime
) -> tuple[ArchiveResult, ImportReport]:
    """Read past newsletter issues into labeled examples (headings map through the alias table)."""
    aliases = aliases_for_headings(
        {c: settings.heading(c) for c in settings.categories}, {**DEFAULT_ALIASES, **settings.model.aliases}
    )
    result = parse_issues(list(paths), categories=settings.categories, aliases=aliases)
    return result, _store_examples(storage, settings, list(result.examples), now)


def _store_examples(
    storage: Storage, settings: Settings, examples: Sequence[LabeledExample], now: datetime
) -> ImportReport:
    categories = set(settings.categories)
    usable = [e for e in examples if e.label in categories]
    outside = Counter(e.label for e in examples if e.label not in categories)
    added = storage.add_examples(usable, now)
    return ImportReport(len(examples), added, dict(Counter(e.label for e in usable)), dict(outside))


def read_items_jsonl(path: Path) -> list[LabeledExample]:
    """Items to classify from JSONL (`title`, optional `summary`, `url`, `item_type`); no label needed."""
    return read_labeled_jsonl(path, require_label=False)


def training_examples(storage: Storage, settings: Settings) -> list[LabeledExample]:
    """Imported examples plus editors' section decisions; a decision wins over an import for the
    same item (same canonical URL, else same title)."""
    decided = _decided_examples(storage, settings)
    overridden = {_identity(e) for e in decided}
    imported = [e for e in storage.examples() if _identity(e) not in overridden]
    return imported + decided


def relevance_examples(storage: Storage) -> list[tuple[LabeledExample, bool]]:
    """Accepted (True) and rejected (False) items, for the "worth including" model."""
    states = storage.item_states()
    decided = {i: s for i, s in states.items() if s["status"] in ("accepted", "rejected")}
    items = storage.items_by_ids(decided)
    return [
        (_example(items[i], state.get("section") or "", state.get("item_type")), state["status"] == "accepted")
        for i, state in decided.items()
        if i in items
    ]


def retrain(settings: Settings, storage: Storage, now: datetime, *, force: bool = False) -> RetrainOutcome:
    """Fit a new version from everything labeled so far; promote it when not worse (or forced)."""
    examples = training_examples(storage, settings)
    usable = [e for e in examples if e.label in settings.categories]
    if len(usable) < MIN_EXAMPLES:
        raise ModelError(
            f"not enough labeled examples to train: {len(usable)} (need {MIN_EXAMPLES}); "
            "import some with `aggregator learn import FILE.jsonl` or `learn import-archive`"
        )
    registry = Registry(settings.models_dir)
    live = _live_model(registry)
    result = train_section_model(usable, settings.categories, live=live)
    relevance = train_relevance_model(
        relevance_examples(storage), min_per_class=settings.model.classifier.relevance_min_per_class
    )
    promote = force or result.promoted
    version = registry.save(result, promote=promote, relevance=relevance, now=now)
    outcome = RetrainOutcome(
        version=version,
        promoted=promote,
        forced=force and not result.promoted,
        macro_f1=float(result.metrics["macro_f1"]),
        live_version=result.live_version,
        live_macro_f1=float(result.live_metrics["macro_f1"]) if result.live_metrics else None,
        examples=len(usable),
        relevance=relevance is not None,
    )
    log.info("trained", extra={"version": version, "promoted": promote, "macro_f1": outcome.macro_f1})
    return outcome


def _live_model(registry: Registry) -> SectionModel | None:
    """The live model to compare against; a broken one is reported and treated as absent."""
    try:
        return registry.load()
    except ModelError as exc:
        log.warning("live model not loadable, training without a comparison: %s", exc)
        return None


def _decided_examples(storage: Storage, settings: Settings) -> list[LabeledExample]:
    states = storage.item_states()
    labeled = {i: s for i, s in states.items() if s.get("section") in settings.categories and s["status"] != "rejected"}
    items = storage.items_by_ids(labeled)
    return [_example(items[i], s["section"], s.get("item_type")) for i, s in labeled.items() if i in items]


def _example(stored: StoredItem, label: str, item_type: str | None) -> LabeledExample:
    item = stored.item
    return LabeledExample(
        title=item.title,
        label=label,
        summary=item.summary_text,
        url=item.url,
        item_type=item_type,
        date=item.published or stored.first_seen,
        origin="decisions",
    )


def _identity(example: LabeledExample) -> str:
    if example.url:
        try:
            return "url:" + canonical_url(example.url)
        except ParseError:
            pass
    return "title:" + " ".join(example.title.lower().split())
