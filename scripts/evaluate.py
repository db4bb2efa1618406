"""Measure the section classifier against a plain baseline, in the same run, on the same split.

    python scripts/evaluate.py --train A.jsonl --test B.jsonl
    python scripts/evaluate.py --data ../shared/data/labeled/dev.jsonl --split-date 2024-01-01

Prints, for the project's model and for the baseline (tf-idf word 1-2 grams of title + summary,
LinearSVC with balanced class weights): macro-F1, accuracy, per-class precision/recall/F1 and the
confusion matrix; then the difference, how well the project's confidences are calibrated,
predictions per second (with explanations), training time on 10,000 items and the model's size on
disk as the registry writes it. Examples whose label is not in --labels are dropped (and counted).
Nothing measured here is saved: the model written for its size goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from aggregator.classify.features import doc_from_example, kind_for_type
from aggregator.classify.itemtype import type_from_example
from aggregator.classify.predict import SectionModel, classify_items
from aggregator.classify.registry import Registry
from aggregator.classify.train import fit, measure, read_labeled_jsonl, train_section_model
from aggregator.errors import AggregatorError
from aggregator.types import Item, LabeledExample

DEFAULT_LABELS = ("Trends", "State of the Art", "Miscellaneous", "Releases")
TARGET_GAIN = 0.05
TIMING_SET = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    labels = tuple(args.labels)
    try:
        train, test, described = _load_split(args)
    except AggregatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    train, dropped_train = _keep_labels(train, labels)
    test, dropped_test = _keep_labels(test, labels)
    print(described)
    print(f"labels: {', '.join(labels)}  (dropped other labels: train {dropped_train}, test {dropped_test})")
    print(f"train {len(train)} {_counts(train, labels)}")
    print(f"test  {len(test)} {_counts(test, labels)}")
    if not train or not test:
        print("error: the train or the test part is empty", file=sys.stderr)
        return 1

    truth = [ex.label for ex in test]
    model = SectionModel(fit(train))
    predictions = model.predict([doc_from_example(ex) for ex in test])
    project = measure(truth, [section for section, _, _ in predictions], labels)
    baseline = measure(truth, _baseline_predictions(train, test), labels)

    _print_report("project model: tf-idf title / summary 1-2 grams + link + type tag, LogisticRegression", project)
    _print_report("baseline: tf-idf 1-2 grams of title + summary, LinearSVC(class_weight='balanced')", baseline)
    _print_comparison(project, baseline, labels)
    _print_calibration(truth, predictions)
    _print_examples(test, predictions, args.show_errors)
    _print_costs(model, train, test, labels, args.seed)
    return 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, help="labeled JSON-lines file to train on")
    parser.add_argument("--test", type=Path, help="labeled JSON-lines file to test on")
    parser.add_argument("--data", type=Path, help="one labeled file, split by --split-date")
    parser.add_argument("--split-date", help="with --data: train before this date or undated, test on or after it")
    parser.add_argument("--labels", nargs="+", default=list(DEFAULT_LABELS), help="sections to keep")
    parser.add_argument("--seed", type=int, default=0, help="for the 10,000-item timing sample")
    parser.add_argument("--show-errors", type=int, default=0, help="print this many misclassified test items")
    args = parser.parse_args(argv)
    if args.data is not None and args.split_date is not None and args.train is None and args.test is None:
        return args
    if args.train is not None and args.test is not None and args.data is None:
        return args
    parser.error("give --train and --test, or --data and --split-date")
    raise AssertionError  # parser.error exits


def _load_split(args: argparse.Namespace) -> tuple[list[LabeledExample], list[LabeledExample], str]:
    if args.data is not None:
        examples = read_labeled_jsonl(args.data)
        cut = datetime.fromisoformat(args.split_date)
        train = [ex for ex in examples if ex.date is None or _naive(ex.date) < cut]
        test = [ex for ex in examples if ex.date is not None and _naive(ex.date) >= cut]
        described = f"data: {args.data.name}, train before {args.split_date} or undated, test on/after it"
        return train, test, described
    described = f"data: train {args.train.name}, test {args.test.name}"
    return read_labeled_jsonl(args.train), read_labeled_jsonl(args.test), described


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _keep_labels(examples: list[LabeledExample], labels: Sequence[str]) -> tuple[list[LabeledExample], int]:
    kept = [ex for ex in examples if ex.label in labels]
    return kept, len(examples) - len(kept)


def _counts(examples: Sequence[LabeledExample], labels: Sequence[str]) -> str:
    counts = Counter(ex.label for ex in examples)
    return "(" + ", ".join(f"{label} {counts[label]}" for label in labels) + ")"


def _baseline_predictions(train: Sequence[LabeledExample], test: Sequence[LabeledExample]) -> list[str]:
    baseline = Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, 2))), ("svm", LinearSVC(class_weight="balanced"))])
    baseline.fit([_plain_text(ex) for ex in train], [ex.label for ex in train])
    return [str(label) for label in baseline.predict([_plain_text(ex) for ex in test])]


def _plain_text(example: LabeledExample) -> str:
    return f"{example.title} {example.summary}"


def _print_report(title: str, metrics: dict[str, Any]) -> None:
    print(f"\n== {title}")
    print(f"macro-F1 {metrics['macro_f1']:.3f}   accuracy {metrics['accuracy']:.3f}")
    width = max(len(label) for label in metrics["per_class"])
    print(f"  {'':{width}}  precision  recall     f1  support")
    for label, scores in metrics["per_class"].items():
        print(
            f"  {label:{width}}  {scores['precision']:9.3f}  {scores['recall']:6.3f}  "
            f"{scores['f1']:5.3f}  {scores['support']:7d}"
        )
    confusion = metrics["confusion"]
    short = [label[:12] for label in confusion["labels"]]
    print("  confusion (rows: true, columns: predicted)")
    print(f"  {'':{width}}  " + "  ".join(f"{name:>12}" for name in short))
    for label, row in zip(confusion["labels"], confusion["matrix"], strict=True):
        print(f"  {label:{width}}  " + "  ".join(f"{n:12d}" for n in row))


def _print_comparison(project: dict[str, Any], baseline: dict[str, Any], labels: Sequence[str]) -> None:
    gain = project["macro_f1"] - baseline["macro_f1"]
    verdict = "met" if gain >= TARGET_GAIN else "NOT met"
    print("\n== comparison")
    print(
        f"macro-F1 project {project['macro_f1']:.3f} - baseline {baseline['macro_f1']:.3f} = {gain:+.3f}"
        f"  (target >= +{TARGET_GAIN:.2f}: {verdict})"
    )
    print(f"accuracy project {project['accuracy']:.3f}, baseline {baseline['accuracy']:.3f}")
    worse = []
    parts = []
    for label in labels:
        ours, theirs = project["per_class"][label]["f1"], baseline["per_class"][label]["f1"]
        parts.append(f"{label} {ours:.3f} vs {theirs:.3f} ({ours - theirs:+.3f})")
        if ours < theirs:
            worse.append(label)
    print("F1 per section, project vs baseline: " + "; ".join(parts))
    print(f"sections worse than the baseline: {', '.join(worse) or 'none'}")


def _print_calibration(truth: Sequence[str], predictions: Sequence[tuple[str, float, tuple[str, ...]]]) -> None:
    """Expected calibration error: how far the stated confidence is from the hit rate, in 10 bins."""
    confidence = np.array([c for _, c, _ in predictions])
    correct = np.array([section == label for (section, _, _), label in zip(predictions, truth, strict=True)])
    bins = np.minimum((confidence * 10).astype(int), 9)
    error = 0.0
    for b in range(10):
        members = bins == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    print(
        f"calibration: mean confidence {confidence.mean():.3f}, accuracy {correct.mean():.3f}, "
        f"expected calibration error {error:.3f} (10 bins)"
    )


def _print_examples(
    test: Sequence[LabeledExample], predictions: Sequence[tuple[str, float, tuple[str, ...]]], how_many: int
) -> None:
    wrong = [(ex, p) for ex, p in zip(test, predictions, strict=True) if p[0] != ex.label]
    for ex, (section, confidence, terms) in random.Random(0).sample(wrong, min(how_many, len(wrong))):
        print(f"  {ex.label} -> {section} ({confidence:.2f}) {ex.title[:70]!r} [{', '.join(terms)}]")


def _print_costs(
    model: SectionModel,
    train: Sequence[LabeledExample],
    test: Sequence[LabeledExample],
    labels: Sequence[str],
    seed: int,
) -> None:
    print("\n== costs")
    items = [_as_item(n, ex) for n, ex in enumerate(test)]
    repeats = max(1, 10_000 // len(items))
    seconds = _best_of(3, lambda: [classify_items(items, model, None) for _ in range(repeats)])
    print(
        f"predictions per second (classify_items: type tag, features, section, explanations): "
        f"{repeats * len(items) / seconds:,.0f}  (target 5,000+)"
    )

    sample = random.Random(seed).choices(list(train) + list(test), k=TIMING_SET)
    started = time.perf_counter()
    result = train_section_model(sample, labels, live=None)
    measured = time.perf_counter() - started
    print(
        f"training on {TIMING_SET:,} items (sampled with replacement; fit on the oldest 80%, "
        f"scored on the rest): {measured:.1f} s  (target < 60 s)"
    )

    with tempfile.TemporaryDirectory() as folder:
        registry = Registry(Path(folder) / "models")
        version = registry.save(result, promote=True)
        size = (Path(folder) / "models" / version / "model.skops").stat().st_size
        started = time.perf_counter()
        registry.load()
        loading = time.perf_counter() - started
    print(f"model size on disk: {size / 1e6:.2f} MB (model.skops); loading it takes {loading:.2f} s")


def _as_item(number: int, example: LabeledExample) -> Item:
    """A test example as the pipeline would store it (kind read off the type tag, as in training)."""
    kind = kind_for_type(type_from_example(example.title, example.summary, example.url))
    return Item(
        key=str(number),
        title=example.title,
        url=example.url,
        source="evaluate",
        kind=kind,  # type: ignore[arg-type]
        summary_text=example.summary,
    )


def _best_of(times: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


if __name__ == "__main__":
    sys.exit(main())
