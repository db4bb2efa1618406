"""Training data in (files, past issues, decisions) and models out, through storage and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.classify.registry import Registry
from aggregator.cli import main
from aggregator.config import Settings, load_settings
from aggregator.errors import ModelError
from aggregator.storage import Storage, open_storage
from aggregator.training import retrain, training_examples
from aggregator.types import Decision, Item

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

# A few invented items per section, distinct enough for a small model to separate.
WORDS = {
    "Trends": ["market", "investment", "startups", "regulation", "adoption", "industry", "funding", "policy"],
    "State of the Art": ["benchmark", "transformer", "state-of-the-art", "accuracy", "architecture", "pretraining"],
    "Miscellaneous": ["tutorial", "explainer", "podcast", "opinion", "guide", "talk", "course", "essay"],
    "Releases": ["release", "version", "changelog", "bugfix", "deprecation", "api", "upgrade", "installer"],
}


def labeled_lines(n_per_label: int = 12) -> list[dict[str, str]]:
    lines = []
    for label, words in WORDS.items():
        for i in range(n_per_label):
            a, b = words[i % len(words)], words[(i + 3) % len(words)]
            lines.append({
                "title": f"{a.title()} and {b} news {i}",
                "summary": f"A story about {a} with {b} and more {a}.",
                "url": f"https://{label.split()[0].lower()}.example.org/{i}",
                "label": label,
                "date": f"2026-0{1 + i % 9}-1{i % 10}",
            })  # fmt: skip
    return lines


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "feeds.yaml"
    path.write_text(f"database: sqlite:///{tmp_path}/t.db\nmodels_dir: models\nsources: []\n", encoding="utf-8")
    return load_settings(path, env={})


@pytest.fixture
def store(settings: Settings) -> Storage:
    return open_storage(settings.database_url)


def write_jsonl(path: Path, lines: list[dict[str, str]]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def cli(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(main, ["--config", str(settings.path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_learn_import_reports_labels_outside_categories(settings: Settings, store: Storage, tmp_path: Path) -> None:
    lines = [*labeled_lines(2), {"title": "CVPR deadline", "label": "Events"}]
    out = cli(settings, "learn", "import", str(write_jsonl(tmp_path / "l.jsonl", lines)))
    assert "Trends: 2" in out and "not a category, skipped: 'Events' (1)" in out and "9 read, 8 new" in out
    again = cli(settings, "learn", "import", str(write_jsonl(tmp_path / "l.jsonl", lines)))
    assert "0 new examples stored" in again
    assert len(store.examples()) == 8


def test_learn_import_bad_line_is_one_line_error(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"title": "x", "label": "Trends"}\nnot json\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(settings.path), "learn", "import", str(path)])
    assert result.exit_code == 1 and f"{path}:2: not JSON" in result.output


def test_import_archive_json_output(settings: Settings, tmp_path: Path) -> None:
    issue = tmp_path / "2026-11-19.md"
    issue.write_text(
        "# 🔥 Trends\n\n[Blog] Agents everywhere\nA look at agent adoption.\n\n"
        "## Latest Releases\n\n• [Minor Release] [Lib 2.3](https://example.org/lib)\nFaster loading.\n\n"
        "### Gossip\n\n[Blog] Who said what\nNot a section we have.\n",
        encoding="utf-8",
    )
    data = json.loads(cli(settings, "learn", "import-archive", "--json", str(issue)))
    assert data["sections"]["Trends"] == 1 and data["sections"]["Releases"] == 1
    assert any("Gossip" in line for line in data["unplaced"])


def test_train_needs_enough_examples(settings: Settings, store: Storage) -> None:
    with pytest.raises(ModelError, match="not enough labeled examples to train: 0"):
        retrain(settings, store, NOW)


def test_train_promotes_then_gates_and_force_overrides(settings: Settings, store: Storage, tmp_path: Path) -> None:
    cli(settings, "learn", "import", str(write_jsonl(tmp_path / "l.jsonl", labeled_lines())))
    first = retrain(settings, store, NOW)
    assert first.promoted and first.live_version is None
    registry = Registry(settings.models_dir)
    assert registry.live_version() == first.version
    # same data again: not worse, so promoted; then a forced one is live whatever it scores
    second = retrain(settings, store, NOW + timedelta(minutes=1))
    assert second.live_version == first.version and second.live_macro_f1 is not None
    forced = retrain(settings, store, NOW + timedelta(minutes=2), force=True)
    assert forced.promoted and registry.live_version() == forced.version
    listing = cli(settings, "models")
    assert f"* {forced.version}" in listing and first.version in listing
    cli(settings, "models", "use", first.version)
    assert registry.live_version() == first.version


def test_decisions_override_imported_labels_and_feed_training(
    settings: Settings, store: Storage, tmp_path: Path
) -> None:
    lines = labeled_lines(3)
    cli(settings, "learn", "import", str(write_jsonl(tmp_path / "l.jsonl", lines)))
    first = lines[0]
    store.store_items([Item(key="url:" + first["url"], title=first["title"], url=first["url"] + "?utm_source=feed",
                            source="blog", kind="blog", published=NOW)], NOW)  # fmt: skip
    item_id = store.items()[0].id
    store.add_decision(item_id, Decision("k", "ana", NOW, "accept", section="Miscellaneous"))
    examples = training_examples(store, settings)
    same = [e for e in examples if e.title == first["title"]]
    assert [(e.label, e.origin) for e in same] == [("Miscellaneous", "decisions")]
    assert len(examples) == len(lines)


def test_classify_file_prints_json_lines(settings: Settings, store: Storage, tmp_path: Path) -> None:
    cli(settings, "learn", "import", str(write_jsonl(tmp_path / "l.jsonl", labeled_lines())))
    cli(settings, "train")
    items = write_jsonl(tmp_path / "in.jsonl", [{"title": "New changelog: version 2.0 release", "url": "https://github.com/a/b/releases/tag/v2.0.0"},
                                                 {"title": "Startups funding and regulation"}])  # fmt: skip
    out = [json.loads(line) for line in cli(settings, "classify", str(items)).splitlines()]
    assert [row["section"] for row in out] == ["Releases", "Trends"]
    assert {"section", "confidence", "item_type", "top_terms"} <= set(out[0])
    assert out[0]["item_type"] == "Major Release" and 0 < out[0]["confidence"] <= 1


def test_runs_classify_new_items_once_a_model_is_live(settings: Settings, store: Storage, tmp_path: Path) -> None:
    from aggregator.classify.stage import classify_pending

    store.store_items([Item(key="url:https://x.org/1", title="Version 3.1 release changelog", url="https://x.org/1",
                            source="lib", kind="release", published=NOW)], NOW)  # fmt: skip
    notes = classify_pending(store, settings, NOW)
    assert notes and "no model" in notes[0]
    item_id = store.items()[0].id
    assert store.predictions_for([item_id])[item_id].section is None
    cli(settings, "learn", "import", str(write_jsonl(tmp_path / "l.jsonl", labeled_lines())))
    version = retrain(settings, store, NOW).version
    assert classify_pending(store, settings, NOW) == []
    prediction = store.predictions_for([item_id])[item_id]
    assert prediction.section == "Releases" and prediction.model_version == version and prediction.top_terms
