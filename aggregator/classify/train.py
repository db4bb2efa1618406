"""Training: labeled examples -> a measured SectionModel (and, from decisions, a RelevanceModel).

The model is one Pipeline: the Doc features of features.py, then a multinomial LogisticRegression
with balanced class weights (sections are very unequal in size, and the small ones, like
Miscellaneous, matter as much to the newsletter as the large ones). Its predict_proba is the
confidence; scripts/evaluate.py reports how well those probabilities are calibrated.

Measuring and promotion:
- the holdout is the newest `holdout_fraction` of the examples by date (undated count as oldest), so
  the scores say how the model does on what comes next, not on a shuffled past;
- the model is fitted on the rest and scored on the holdout; the live model is scored on the same
  holdout; the new one is `promoted` when its macro-F1 is not lower than the live one's;
- by default the returned model is the one measured (so metadata describes exactly the shipped
  file, and the next gate compares like with like). `refit_on_all=True` refits on every example after
  measuring: more data and the newest items, at the price of holdout scores that describe a sibling
  model. The starter model uses it (there is no live model to be fair to). A live model refitted on
  all data has seen the next holdout's older items, so its scores there are optimistic: the gate is
  then conservative and `--force` is the way past it.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.pipeline import Pipeline

from aggregator.classify.features import Doc, build_features, doc_from_example
from aggregator.classify.predict import ACCEPT, REJECT, RelevanceModel, SectionModel
from aggregator.errors import ModelError
from aggregator.types import LabeledExample

# Chosen by 5-fold CV and a by-date split inside the pre-2024 part of the dev data (never its
# 2024+ test part): C between 0.5 and 2 scores alike; 1 is the middle.
REGULARIZATION_C = 1.0
MAX_ITER = 2000
MIN_RELEVANCE_PER_CLASS = 50
# Below this many training examples words seen once are kept (tests, a first few decisions).
SMALL_SET = 200

Metrics = dict[str, Any]

_MONTH_DAY_YEAR = re.compile(r"^([A-Za-z]+)\.?\s+(\d{1,2}),?\s+(\d{4})$")
_MONTHS = {
    name: n
    for n, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}


@dataclass(frozen=True)
class TrainResult:
    """A fitted model with its measurements; Registry.save writes it with these as metadata."""

    model: SectionModel
    metrics: Metrics  # macro_f1, accuracy, per_class {label: {precision, recall, f1, support}}, confusion
    live_metrics: Metrics | None  # the live model on the same holdout, when there was one
    counts: dict[str, int]  # examples per label (all of them, training and holdout)
    training_set_hash: str
    n_train: int
    n_holdout: int
    promoted: bool  # not worse than the live model on the holdout (or no live model)
    live_version: str | None = None
    refit_on_all: bool = False
    origins: dict[str, int] = field(default_factory=dict)  # examples per file or issue they came from
    params: dict[str, Any] = field(default_factory=dict)


def build_pipeline(*, n_examples: int, class_weight: str | None = "balanced") -> Pipeline:
    """Features + classifier, the one object trained, measured, saved and served."""
    min_df = 2 if n_examples >= SMALL_SET else 1
    classifier = LogisticRegression(C=REGULARIZATION_C, class_weight=class_weight, max_iter=MAX_ITER)
    return Pipeline([("features", build_features(min_df=min_df)), ("classifier", classifier)])


def train_section_model(
    examples: Sequence[LabeledExample],
    categories: Sequence[str],
    *,
    live: SectionModel | None,
    holdout_fraction: float = 0.2,
    refit_on_all: bool = False,
) -> TrainResult:
    """Fit on the oldest part, measure on the newest, compare with the live model (see module doc).
    Examples whose label is not one of `categories` are left out."""
    if not 0 < holdout_fraction < 1:
        raise ModelError(f"holdout_fraction must be between 0 and 1, not {holdout_fraction}")
    usable = [ex for ex in examples if ex.label in categories]
    _require_two_labels(usable, "the training examples")
    fit_part, holdout = split_by_date(usable, holdout_fraction)
    _require_two_labels(fit_part, f"the oldest {1 - holdout_fraction:.0%} of the examples")

    model = SectionModel(fit(fit_part))
    holdout_docs = [doc_from_example(ex) for ex in holdout]
    truth = [ex.label for ex in holdout]
    metrics = measure(truth, model.predict_labels(holdout_docs), categories)
    live_metrics = measure(truth, live.predict_labels(holdout_docs), categories) if live else None
    promoted = live_metrics is None or metrics["macro_f1"] >= live_metrics["macro_f1"]
    if refit_on_all:
        model = SectionModel(fit(usable))
    return TrainResult(
        model=model,
        metrics=metrics,
        live_metrics=live_metrics,
        counts={label: sum(ex.label == label for ex in usable) for label in categories},
        training_set_hash=training_set_hash(usable),
        n_train=len(usable) if refit_on_all else len(fit_part),
        n_holdout=len(holdout),
        promoted=promoted,
        live_version=live.version if live else None,
        refit_on_all=refit_on_all,
        origins=dict(Counter(ex.origin or "unknown" for ex in usable).most_common()),
        params={"C": REGULARIZATION_C, "class_weight": "balanced", "holdout_fraction": holdout_fraction},
    )


def train_relevance_model(
    examples: Sequence[tuple[LabeledExample, bool]], *, min_per_class: int = MIN_RELEVANCE_PER_CLASS
) -> RelevanceModel | None:
    """Accepted (True) versus rejected (False) items -> P(accept). None until there are at least
    `min_per_class` of each: until then the queue ranks by confidence and freshness."""
    accepted = sum(1 for _, ok in examples if ok)
    rejected = len(examples) - accepted
    if min(accepted, rejected) < max(min_per_class, 1):
        return None
    docs = [doc_from_example(ex) for ex, _ in examples]
    labels = [ACCEPT if ok else REJECT for _, ok in examples]
    pipeline = build_pipeline(n_examples=len(docs))
    _fit_quietly(pipeline, docs, labels)
    return RelevanceModel(_slim(pipeline))


def fit(examples: Sequence[LabeledExample]) -> Pipeline:
    """A fitted section Pipeline on these examples (no measuring)."""
    pipeline = build_pipeline(n_examples=len(examples))
    _fit_quietly(pipeline, [doc_from_example(ex) for ex in examples], [ex.label for ex in examples])
    return _slim(pipeline)


def split_by_date(
    examples: Sequence[LabeledExample], holdout_fraction: float
) -> tuple[list[LabeledExample], list[LabeledExample]]:
    """(older part, newest `holdout_fraction`). Undated examples count as oldest; ties keep input order."""
    ordered = sorted(examples, key=_date_key)
    n_holdout = max(1, round(len(ordered) * holdout_fraction))
    return ordered[:-n_holdout], ordered[-n_holdout:]


def measure(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Metrics:
    """macro-F1 (over the labels present in `truth`), accuracy, per-class scores, confusion matrix."""
    present = [label for label in labels if label in set(truth)]
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=list(labels), zero_division=0
    )
    matrix = confusion_matrix(truth, predicted, labels=list(labels)) if truth else []
    return {
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0))
        if present
        else 0.0,
        "accuracy": float(accuracy_score(truth, predicted)) if truth else 0.0,
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": {"labels": list(labels), "matrix": [[int(n) for n in row] for row in matrix]},
    }


def training_set_hash(examples: Sequence[LabeledExample]) -> str:
    """sha256 of the examples' text, link, label and date, independent of their order."""
    lines = sorted(
        json.dumps([ex.title, ex.summary, ex.url, ex.label, ex.date.isoformat() if ex.date else None])
        for ex in examples
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_labeled_jsonl(path: Path, *, require_label: bool = True) -> list[LabeledExample]:
    """Examples from a JSON-lines file: `title`, `label`, optional `summary`, `url`, `item_type`, `date`
    (ISO, or "March 5, 2021"). A line that is not such an object is an error naming file and line.
    Without `require_label` (items to classify), a missing label is read as ""."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read labeled file {path}: {exc}") from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            where = f"{path}:{number}"
            examples.append(_example_from_line(line, where, origin=path.name, require_label=require_label))
    return examples


def parse_example_date(text: str | None) -> datetime | None:
    """ISO dates and datetimes, or "Month D, YYYY" ("Sept 2, 2021", "March 5 2021"); None if empty."""
    if not text or not text.strip():
        return None
    text = text.strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    match = _MONTH_DAY_YEAR.match(text)
    month = _MONTHS.get(match.group(1)[:3].lower()) if match else None
    if match is None or month is None:
        raise ValueError(f"unreadable date {text!r}")
    return datetime(int(match.group(3)), month, int(match.group(2)))


def _example_from_line(line: str, where: str, *, origin: str, require_label: bool) -> LabeledExample:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise ModelError(f"{where}: expected a JSON object")
    title, label = record.get("title"), record.get("label")
    if not require_label and label is None:
        label = ""
    if not isinstance(title, str) or not title.strip():
        raise ModelError(f"{where}: needs a non-empty 'title'" + (" and 'label'" if require_label else ""))
    if not isinstance(label, str) or (require_label and not label.strip()):
        raise ModelError(f"{where}: needs a non-empty 'title' and 'label'")
    try:
        date = parse_example_date(record.get("date"))
    except ValueError as exc:
        raise ModelError(f"{where}: {exc}") from exc
    return LabeledExample(
        title=title.strip(),
        label=label.strip(),
        summary=str(record.get("summary") or ""),
        url=str(record.get("url") or ""),
        item_type=record.get("item_type") or None,
        date=date,
        origin=origin,
    )


def _fit_quietly(pipeline: Pipeline, docs: list[Doc], labels: list[str]) -> None:
    # lbfgs may stop a little short of its tolerance on tiny or separable sets; the model is
    # still usable and the holdout scores say how good it is.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(docs, labels)


def _slim(pipeline: Pipeline) -> Pipeline:
    """Drop what prediction never reads: the vectorizers' list of discarded words is most of the
    file's size otherwise."""
    columns = pipeline.named_steps["features"].named_steps["blocks"]
    for _, vectorizer, _ in columns.transformers_:
        if hasattr(vectorizer, "stop_words_"):
            vectorizer.stop_words_ = None
    return pipeline


def _date_key(example: LabeledExample) -> tuple[int, datetime]:
    moment = example.date
    if moment is None:
        return (0, datetime.min)
    if moment.tzinfo is not None:  # compare aware and naive dates on one (UTC) clock
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return (1, moment)


def _require_two_labels(examples: Sequence[LabeledExample], what: str) -> None:
    labels = sorted({ex.label for ex in examples})
    if len(labels) < 2:
        found = ", ".join(labels) or "no labeled examples"
        raise ModelError(f"{what} hold only {found}; training needs examples of at least two sections")
