"""The models folder: versions, promotion, rollback, and refusing files that cannot be trusted."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import skops.io as skops_io
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import aggregator.classify.registry as registry_module
from aggregator.classify.features import doc_from_example
from aggregator.classify.registry import MODEL_FILE, ModelVersionWarning, Registry, library_versions
from aggregator.classify.train import TrainResult, train_relevance_model, train_section_model
from aggregator.errors import ModelError
from aggregator.types import LabeledExample
from tests.test_classify import CATEGORIES, invented_examples

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def good() -> TrainResult:
    return train_section_model(invented_examples(), CATEGORIES, live=None)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def _version_dirs(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.is_dir())


def _scrambled_result(live: Registry) -> TrainResult:
    examples = invented_examples()
    labels = list(CATEGORIES)
    wrong = [
        replace(ex, label=labels[(labels.index(ex.label) + 1 + i % 3) % 4]) if i < 38 else ex
        for i, ex in enumerate(examples)
    ]
    return train_section_model(wrong, CATEGORIES, live=live.load())


def test_an_empty_folder_has_no_model(models: Path) -> None:
    registry = Registry(models)
    assert registry.live_version() is None
    assert registry.load() is None
    assert registry.load_relevance() is None
    assert registry.versions() == []


def test_save_promote_and_load_back(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    version = registry.save(good, promote=True, now=NOW)
    assert version == "v0001-20261126T0930"
    assert registry.live_version() == version
    assert (models / "CURRENT").read_text().strip() == version
    loaded = registry.load()
    assert loaded is not None and loaded.version == version and good.model.version == version
    docs = [doc_from_example(ex) for ex in invented_examples()]
    assert loaded.predict(docs) == good.model.predict(docs)


def test_metadata_says_what_the_model_was_trained_on(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    version = registry.save(good, promote=True, now=NOW, note="starter")
    metadata = json.loads((models / version / "metadata.json").read_text())
    assert metadata["libraries"]["sklearn"] == library_versions()["sklearn"]
    assert metadata["trained_on"]["origins"] == {"invented.jsonl": 48}
    assert metadata["trained_on"]["training_set_hash"] == good.training_set_hash
    assert metadata["counts"] == dict.fromkeys(CATEGORIES, 12)
    assert metadata["metrics"]["macro_f1"] == good.metrics["macro_f1"]
    [info] = registry.versions()
    assert (info.version, info.live, info.created, info.note) == (version, True, NOW, "starter")
    assert info.metrics["per_class"]["Releases"]["support"] >= 1


def test_a_worse_model_is_saved_but_not_promoted_unless_forced(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    first = registry.save(good, promote=True, now=NOW)
    worse = _scrambled_result(registry)
    assert worse.promoted is False
    second = registry.save(worse, promote=worse.promoted, now=NOW)
    assert registry.live_version() == first
    assert [v.version for v in registry.versions()] == [first, second]
    assert registry.versions()[1].live_metrics is not None
    forced = registry.save(worse, promote=True, now=NOW)  # what `aggregator train --force` does
    assert registry.live_version() == forced


def test_use_rolls_back_and_forward(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    first = registry.save(good, promote=True, now=NOW)
    second = registry.save(good, promote=True, now=NOW)
    assert registry.live_version() == second
    registry.use(first)
    assert registry.live_version() == first
    assert [v.live for v in registry.versions()] == [True, False]
    loaded = registry.load()
    assert loaded is not None and loaded.version == first
    registry.use(second)
    assert registry.live_version() == second


def test_use_of_an_unknown_version_is_refused(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    registry.save(good, promote=True, now=NOW)
    with pytest.raises(ModelError, match="unknown model version 'v0099-20260101T0000'"):
        registry.use("v0099-20260101T0000")
    with pytest.raises(ModelError, match="not a model version name"):
        registry.load("../elsewhere")


def test_a_tampered_model_file_is_refused(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    version = registry.save(good, promote=True, now=NOW)
    model_file = models / version / "model.skops"
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    expected = f"model file models/{version}/model.skops does not match its recorded hash; refusing to load"
    with pytest.raises(ModelError, match=expected):
        registry.load()
    with pytest.raises(ModelError, match="does not match its recorded hash"):
        registry.use(version)


def _shout(texts: object) -> object:
    return texts


def test_a_file_with_an_untrusted_type_is_refused(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    version = registry.save(good, promote=True, now=NOW)
    # A Pipeline that would call a function nobody listed as trusted: write it with a valid hash.
    rogue = Pipeline([("features", FunctionTransformer(_shout)), ("classifier", FunctionTransformer())])
    data = skops_io.dumps(rogue)
    (models / version / "model.skops").write_bytes(data)
    metadata_path = models / version / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["files"]["model.skops"] = hashlib.sha256(data).hexdigest()
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match=r"contains untrusted types \[.*_shout'\]; refusing to load"):
        registry.load()


def test_a_failed_save_leaves_no_version_behind(
    models: Path, good: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(models)
    first = registry.save(good, promote=True, now=NOW)
    real_write = registry_module._write_synced

    def write_then_fail(path: Path, data: bytes) -> None:
        real_write(path, data)
        if path.name == "metadata.json":
            raise OSError("disk full")

    monkeypatch.setattr(registry_module, "_write_synced", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        registry.save(good, promote=True, now=NOW)
    assert _version_dirs(models) == [first]  # no partial folder, named like a version or not
    assert registry.live_version() == first


def test_current_naming_a_missing_version_is_an_error(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    registry.save(good, promote=True, now=NOW)
    (models / "CURRENT").write_text("v0042-20260101T0000\n")
    with pytest.raises(ModelError, match="names version 'v0042-20260101T0000', which is not in"):
        registry.load()


def _set_saved_version(models: Path, version: str, library: str, saved: str) -> None:
    path = models / version / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["libraries"][library] = saved
    path.write_text(json.dumps(metadata))


def test_another_minor_library_version_loads_with_a_warning(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    version = registry.save(good, promote=True, now=NOW)
    major, minor = (int(n) for n in library_versions()["sklearn"].split(".")[:2])
    _set_saved_version(models, version, "sklearn", f"{major}.{minor + 1}.0")
    with pytest.warns(ModelVersionWarning, match=f"saved with sklearn {major}.{minor + 1}.0, running"):
        assert registry.load() is not None


def test_another_major_library_version_is_refused(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    version = registry.save(good, promote=True, now=NOW)
    major = int(library_versions()["sklearn"].split(".")[0])
    _set_saved_version(models, version, "sklearn", f"{major + 1}.0.0")
    with pytest.raises(ModelError, match=f"saved with sklearn {major + 1}.0.0, running .*; retrain"):
        registry.load()


def test_relevance_model_is_saved_beside_its_version(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    decided = [(ex, ex.label == "Releases") for ex in invented_examples()]
    relevance = train_relevance_model(decided, min_per_class=5)
    assert relevance is not None
    without = registry.save(good, promote=True, now=NOW)
    assert registry.load_relevance() is None
    with_relevance = registry.save(good, promote=True, relevance=relevance, now=NOW)
    loaded = registry.load_relevance()
    assert loaded is not None and loaded.version == with_relevance == relevance.version
    doc = doc_from_example(LabeledExample(title="glacier 2.1.0", label="Releases"))
    assert loaded.score([doc]) == relevance.score([doc])
    assert [v.has_relevance for v in registry.versions()] == [False, True]
    assert registry.load_relevance(without) is None


def test_version_numbers_keep_counting_after_a_deleted_version(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    registry.save(good, promote=False, now=NOW)
    second = registry.save(good, promote=False, now=NOW)
    assert registry.live_version() is None  # saved, never promoted
    assert second.startswith("v0002-")
    later = registry.save(good, promote=False, now=datetime(2027, 1, 2, 3, 4, tzinfo=UTC))
    assert later == "v0003-20270102T0304"


def test_a_save_clears_what_a_killed_save_left_but_not_a_save_in_progress(models: Path, good: TrainResult) -> None:
    models.mkdir(parents=True, exist_ok=True)
    abandoned, in_progress = models / ".saving-killed", models / ".saving-now"
    for folder in (abandoned, in_progress):
        folder.mkdir()
        (folder / MODEL_FILE).write_bytes(b"half a model")
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))
    Registry(models).save(good, promote=True, now=NOW)
    assert not abandoned.exists() and in_progress.exists()


def test_a_model_is_loaded_once_per_process_until_its_file_changes(models: Path, good: TrainResult) -> None:
    registry = Registry(models)
    version = registry.save(good, promote=True, now=NOW)
    first = registry.load()
    assert first is not None and Registry(models).load() is first  # a worker's next batch: no reload
    model_file = models / version / "model.skops"
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="does not match its recorded hash"):
        registry.load()  # damaged after loading: checked again, refused
