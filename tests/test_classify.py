"""Training and serving the section classifier on a few dozen invented examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aggregator.classify.features import Doc, doc_from_example, doc_from_item, link_tokens
from aggregator.classify.predict import SectionModel, classify_items
from aggregator.classify.train import (
    TrainResult,
    parse_example_date,
    read_labeled_jsonl,
    split_by_date,
    train_relevance_model,
    train_section_model,
)
from aggregator.errors import ModelError
from aggregator.types import Item, LabeledExample

CATEGORIES = ("Trends", "State of the Art", "Miscellaneous", "Releases")

# (title pattern, summary pattern, url pattern) per section; {x} is filled with a subject.
_TEMPLATES = {
    "Trends": [
        (
            "{x} startup raises funding as investors chase chatbots",
            "The company said revenue grew.",
            "https://news.example/business/{x}-funding",
        ),
        (
            "Regulators probe {x} deal in the chip market",
            "Lawmakers and investors weigh the market.",
            "https://news.example/policy/{x}-deal",
        ),
    ],
    "State of the Art": [
        (
            "{x}: a new model beats the benchmark",
            "We propose a method that achieves state-of-the-art accuracy.",
            "https://arxiv.org/abs/2401.{n:05d}",
        ),
        (
            "Scaling {x} transformers for reasoning",
            "Experiments show our approach outperforms baselines.",
            "https://arxiv.org/abs/2402.{n:05d}",
        ),
    ],
    "Miscellaneous": [
        (
            "Why I think {x} is overrated: an opinion",
            "An essay on hype, jokes and what we learned.",
            "https://someone.example/essays/{x}",
        ),
        (
            "A gentle tutorial on {x} for beginners",
            "Step by step guide with a fun video.",
            "https://github.com/someone/{x}-tutorial",
        ),
    ],
    "Releases": [
        (
            "{x} 2.{n}.0",
            "Features: new API. Bug fixes: crash on start.",
            "https://github.com/org/{x}/releases/tag/v2.{n}.0",
        ),
        ("{x} 1.{n}.1", "Bug fixes and documentation changes.", "https://github.com/org/{x}/releases/tag/v1.{n}.1"),
    ],
}
_SUBJECTS = ["atlas", "borealis", "cobalt", "dynamo", "ember", "fjord"]


def invented_examples(start: datetime = datetime(2024, 1, 1, tzinfo=UTC)) -> list[LabeledExample]:
    """48 labeled examples, 12 per section, one day apart, every section spread over the dates."""
    examples = []
    for n, subject in enumerate(_SUBJECTS):
        for label, templates in _TEMPLATES.items():
            for title, summary, url in templates:
                fill = {"x": subject, "n": n + 1}
                examples.append(
                    LabeledExample(
                        title=title.format(**fill),
                        label=label,
                        summary=summary.format(**fill),
                        url=url.format(**fill),
                        date=start + timedelta(days=len(examples)),
                        origin="invented.jsonl",
                    )
                )
    return examples


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train_section_model(invented_examples(), CATEGORIES, live=None)


def test_probabilities_are_calibrated_to_sum_to_one(trained: TrainResult) -> None:
    docs = [doc_from_example(ex) for ex in invented_examples()]
    probabilities = trained.model.pipeline.predict_proba(docs)
    assert probabilities.shape == (len(docs), len(CATEGORIES))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    for (_, confidence, _), row in zip(trained.model.predict(docs), probabilities, strict=True):
        assert confidence == pytest.approx(row.max())


def test_unseen_items_get_the_obvious_section(trained: TrainResult) -> None:
    docs = [
        Doc(
            "glacier 2.7.0",
            "Bug fixes and new API features.",
            "https://github.com/org/glacier/releases/tag/v2.7.0",
            "release",
            "Minor Release",
        ),
        Doc(
            "Glacier: a new model beats the benchmark",
            "Our method outperforms baselines.",
            "https://arxiv.org/abs/2403.00042",
            "paper",
            "Paper",
        ),
        Doc(
            "Glacier startup raises funding from investors",
            "Revenue grew, the company said.",
            "https://news.example/business/glacier",
            "blog",
            "Blog",
        ),
    ]
    sections = [section for section, _, _ in trained.model.predict(docs)]
    assert sections == ["Releases", "State of the Art", "Trends"]


def test_top_terms_come_from_the_item(trained: TrainResult) -> None:
    doc = Doc(
        "Glacier startup raises funding from investors",
        "The company said revenue grew.",
        "https://news.example/business/glacier",
        "blog",
        "Blog",
    )
    _, _, terms = trained.model.predict([doc])[0]
    assert terms, "a confident prediction explains itself"
    present = set(link_tokens(doc.url)) | {"type:Blog", "kind:blog"}
    text = f"{doc.title} {doc.summary}".lower()
    for term in terms:
        block, _, words = term.partition(":")
        if block in ("title", "summary"):
            assert words in text
        else:
            assert term in present
    assert "title:from" not in terms  # function words are not offered as explanations


def test_holdout_is_the_newest_fifth_with_undated_counted_oldest() -> None:
    dated = invented_examples()
    undated = [LabeledExample(title="old undated", label="Trends")]
    older, newest = split_by_date([*dated, *undated], 0.2)
    assert len(newest) == round(len(dated + undated) * 0.2)
    assert min(ex.date for ex in newest if ex.date) > max(ex.date for ex in older if ex.date)
    assert undated[0] in older


def test_training_reports_metrics_counts_and_hash(trained: TrainResult) -> None:
    assert trained.n_train + trained.n_holdout == 48
    assert trained.counts == dict.fromkeys(CATEGORIES, 12)
    assert set(trained.metrics) >= {"macro_f1", "accuracy", "per_class", "confusion"}
    assert set(trained.metrics["per_class"]) == set(CATEGORIES)
    assert set(trained.metrics["per_class"]["Trends"]) == {"precision", "recall", "f1", "support"}
    assert trained.metrics["confusion"]["labels"] == list(CATEGORIES)
    assert sum(map(sum, trained.metrics["confusion"]["matrix"])) == trained.n_holdout
    assert trained.origins == {"invented.jsonl": 48}
    reordered = train_section_model(list(reversed(invented_examples())), CATEGORIES, live=None)
    assert reordered.training_set_hash == trained.training_set_hash


def test_a_worse_model_is_not_promoted_and_an_equal_one_is(trained: TrainResult) -> None:
    examples = invented_examples()
    labels = list(CATEGORIES)
    scrambled = [
        LabeledExample(
            title=ex.title,
            label=labels[(labels.index(ex.label) + 1 + i % 3) % 4],
            summary=ex.summary,
            url=ex.url,
            date=ex.date,
        )
        for i, ex in enumerate(examples)
    ]
    worse = train_section_model(scrambled[:38] + examples[38:], CATEGORIES, live=trained.model)
    assert worse.live_metrics is not None
    assert worse.metrics["macro_f1"] < worse.live_metrics["macro_f1"]
    assert worse.promoted is False
    same = train_section_model(examples, CATEGORIES, live=trained.model)
    assert same.promoted is True
    assert trained.promoted is True  # no live model: nothing to be worse than


def test_labels_outside_the_categories_are_left_out() -> None:
    extra = [
        LabeledExample(title=f"NeurIPS {2000 + i}", label="Events", date=datetime(2030, 1, 1, tzinfo=UTC))
        for i in range(5)
    ]
    result = train_section_model(invented_examples() + extra, CATEGORIES, live=None)
    assert "Events" not in result.model.labels
    assert result.n_train + result.n_holdout == 48


def test_one_section_is_not_enough_to_train() -> None:
    only_trends = [ex for ex in invented_examples() if ex.label == "Trends"]
    with pytest.raises(ModelError, match="at least two sections"):
        train_section_model(only_trends, CATEGORIES, live=None)


def test_relevance_model_waits_for_enough_decisions() -> None:
    examples = invented_examples()
    decided = [(ex, ex.label in ("State of the Art", "Releases")) for ex in examples]
    assert train_relevance_model(decided, min_per_class=50) is None
    assert train_relevance_model(decided, min_per_class=25) is None  # 24 accepted, 24 rejected
    assert train_relevance_model(decided, min_per_class=24) is not None
    only_accepts = [(ex, True) for ex in examples]
    assert train_relevance_model(only_accepts, min_per_class=1) is None
    model = train_relevance_model(decided, min_per_class=20)
    assert model is not None
    scores = model.score([doc_from_example(ex) for ex in examples])
    accepted = [s for s, (_, ok) in zip(scores, decided, strict=True) if ok]
    rejected = [s for s, (_, ok) in zip(scores, decided, strict=True) if not ok]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert min(accepted) > max(rejected)


def _item(key: str, title: str, url: str, kind: str = "blog", version: str | None = None) -> Item:
    return Item(key=key, title=title, url=url, source="test", kind=kind, version=version)  # type: ignore[arg-type]


def test_classify_items_without_a_model_uses_the_default_section() -> None:
    items = [_item("a", "lib 1.2.0", "https://github.com/o/lib/releases/tag/v1.2.0", "release", "v1.2.0")]
    [prediction] = classify_items(items, None, None, default_section="Releases")
    assert (prediction.section, prediction.confidence, prediction.model_version) == ("Releases", 0.0, None)
    assert prediction.item_type == "Minor Release"
    [unclassified] = classify_items(items, None, None)
    assert unclassified.section is None


def test_classify_items_carries_version_type_and_relevance(trained: TrainResult) -> None:
    model = SectionModel(trained.model.pipeline, version="v0007-20260101T0000")
    decided = [(ex, ex.label == "Releases") for ex in invented_examples()]
    relevance = train_relevance_model(decided, min_per_class=5)
    items = [
        _item("x/lib@v3.0.0", "glacier 3.0.0", "https://github.com/x/glacier/releases/tag/v3.0.0", "release", "v3.0.0"),
        _item("2403.00042", "Glacier: a new model beats the benchmark", "https://arxiv.org/abs/2403.00042", "paper"),
    ]
    predictions = classify_items(items, model, relevance)
    assert [p.item_key for p in predictions] == ["x/lib@v3.0.0", "2403.00042"]
    assert [p.item_type for p in predictions] == ["Major Release", "Paper"]
    assert {p.model_version for p in predictions} == {"v0007-20260101T0000"}
    assert predictions[0].section == "Releases"
    assert predictions[0].relevance is not None and predictions[1].relevance is not None
    assert predictions[0].relevance > predictions[1].relevance
    assert classify_items([], model, relevance) == []


def test_item_and_example_docs_see_the_same_fields() -> None:
    item = _item("k", "lib 1.2.0", "https://github.com/o/lib/releases/tag/v1.2.0", "release", "v1.2.0")
    example = LabeledExample(title="lib 1.2.0", label="Releases", url="https://github.com/o/lib/releases/tag/v1.2.0")
    assert doc_from_item(item) == doc_from_example(example)


def test_read_labeled_jsonl_reads_fields_and_dates(tmp_path: Path) -> None:
    path = tmp_path / "labeled.jsonl"
    rows = [
        {"title": "A", "label": "Trends", "summary": "s", "url": "https://a.example", "date": "2024-03-01"},
        {"title": "B", "label": "Releases", "date": "Sept 2, 2021", "item_type": "Minor Release"},
        {"title": "C", "label": "Miscellaneous", "date": None, "url": None},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    a, b, c = read_labeled_jsonl(path)
    assert (a.date, b.date, c.date) == (datetime(2024, 3, 1), datetime(2021, 9, 2), None)
    assert (b.item_type, c.url, a.origin) == ("Minor Release", "", "labeled.jsonl")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "labeled.jsonl:2: not JSON"),
        ('["a list"]', "labeled.jsonl:2: expected a JSON object"),
        ('{"title": "no label"}', "labeled.jsonl:2: needs a non-empty 'title' and 'label'"),
        ('{"title": "t", "label": "Trends", "date": "someday"}', "labeled.jsonl:2: unreadable date 'someday'"),
    ],
)
def test_a_bad_labeled_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "labeled.jsonl"
    path.write_text('{"title": "fine", "label": "Trends"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ModelError, match=message.replace("(", r"\(")):
        read_labeled_jsonl(path)


def test_example_dates_in_several_spellings() -> None:
    assert parse_example_date("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_example_date("March 5 2021") == datetime(2021, 3, 5)
    assert parse_example_date("  ") is None
