"""The classify stage of a run: give every stored item a prediction from the live model.

Items without a prediction (new ones), and items predicted while no model was live, are
classified; `rescore` also re-classifies items predicted by an older model (after a promotion).
With no model at all, items get their type tag and their source's default_category, and the run
says so once.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from aggregator.classify.predict import classify_items
from aggregator.classify.registry import Registry
from aggregator.config import Settings
from aggregator.errors import ModelError
from aggregator.storage import Storage

log = logging.getLogger("aggregator.classify")
BATCH = 2000


def classify_pending(
    storage: Storage,
    settings: Settings,
    now: datetime,
    *,
    rescore: bool = False,
    ids: Sequence[int] | None = None,
) -> list[str]:
    """Classify what needs it (or just `ids`); return run notes (e.g. that no model is live)."""
    notes: list[str] = []
    registry = Registry(settings.models_dir)
    try:
        model = registry.load()
        relevance = registry.load_relevance()
    except ModelError as exc:
        model, relevance = None, None
        notes.append(f"model not loaded ({exc}); items stored unclassified")
    version = model.version if model is not None else None
    if model is None and not notes:
        notes.append(f"no model in {settings.models_dir}: items stored unclassified (run `aggregator train`)")
    if ids is None:
        ids = storage.unclassified_ids(version, rescore=rescore)
    defaults = {s.name: s.default_category for s in settings.sources}
    with _existing_objects_frozen():
        for start in range(0, len(ids), BATCH):
            stored = storage.items_to_classify(ids[start : start + BATCH])
            batch = [(i, stored[i]) for i in ids[start : start + BATCH] if i in stored]
            predictions = classify_items([item for _, item in batch], model, relevance)
            rows = []
            for (item_id, item), prediction in zip(batch, predictions, strict=True):
                if prediction.section is None and defaults.get(item.source):
                    prediction = replace(prediction, section=defaults[item.source])
                rows.append((item_id, prediction))
            storage.save_predictions(rows, now)
    if ids:
        log.info("classified", extra={"items": len(ids), "model_version": version})
    return notes


@contextmanager
def _existing_objects_frozen() -> Iterator[None]:
    """Keep the garbage collector's full passes off the objects that exist already (libraries, the
    model): each batch leaves enough survivors to set one off every few batches, and re-walking
    those ~200,000 objects cost ~0.1 s a time (0.2 s of 1.7 s on 17,903 items)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
