"""The classify stage reads only what classifying needs and predicts what classify_items predicts
from the full stored items; on SQLite and (when available) PostgreSQL."""

from __future__ import annotations

import gc
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.classify.predict import classify_items
from aggregator.classify.registry import Registry
from aggregator.classify.stage import classify_pending
from aggregator.classify.train import train_section_model
from aggregator.config import Settings, load_settings
from aggregator.storage import Storage
from aggregator.types import Item
from tests.test_classify import CATEGORIES, invented_examples

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def _items() -> list[Item]:
    items = [
        Item(
            key=f"url:{ex.url}",
            title=ex.title,
            url=ex.url,
            source="feed",
            kind="blog",
            summary_text=ex.summary,
            summary_html=f"<p>{ex.summary}</p>",
            authors=("A. Writer",),
            tags=("ml",),
            published=NOW,
        )
        for ex in invented_examples()
    ]
    items[0] = replace(items[0], kind="paper", arxiv_id="2401.00001", summary_text="Our technical report.")
    items[1] = replace(items[1], kind="release", version="v2.1.0", repo="org/lib")
    return items


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "feeds.yaml"
    path.write_text(f"database: sqlite:///{tmp_path}/unused.db\nmodels_dir: models\nsources: []\n", encoding="utf-8")
    return load_settings(path, env={})


def test_items_to_classify_holds_what_classifying_reads(storage: Storage) -> None:
    storage.store_items(_items(), NOW)
    full = storage.items_by_ids(s.id for s in storage.items())
    light = storage.items_to_classify(full)
    assert light.keys() == full.keys()
    for item_id, stored in full.items():
        expected = Item(
            key=stored.item.key,
            title=stored.item.title,
            url=stored.item.url,
            source=stored.item.source,
            kind=stored.item.kind,
            summary_text=stored.item.summary_text,
            arxiv_id=stored.item.arxiv_id,
            version=stored.item.version,
        )
        assert light[item_id] == expected


def test_the_stage_predicts_what_classify_items_predicts(storage: Storage, settings: Settings) -> None:
    result = train_section_model(invented_examples(), CATEGORIES, live=None)
    Registry(settings.models_dir).save(result, promote=True, now=NOW)
    storage.store_items(_items(), NOW)
    assert classify_pending(storage, settings, NOW) == []
    stored = storage.items_by_ids(s.id for s in storage.items())
    ids = sorted(stored)
    expected = classify_items([stored[i].item for i in ids], Registry(settings.models_dir).load(), None)
    assert [storage.predictions_for([i])[i] for i in ids] == expected
    assert gc.get_freeze_count() == 0, "the stage leaves the garbage collector as it found it"


def test_the_garbage_collector_is_unfrozen_when_a_batch_fails(
    storage: Storage, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.store_items(_items(), NOW)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Storage, "save_predictions", broken)
    with pytest.raises(RuntimeError):
        classify_pending(storage, settings, NOW)
    assert gc.get_freeze_count() == 0
