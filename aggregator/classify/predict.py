"""Serving: a fitted Pipeline wrapped so it answers in the project's terms.

`SectionModel` and `RelevanceModel` each wrap ONE scikit-learn Pipeline ("features" -> "classifier",
built in train.py); training and serving call the same object, so they cannot drift. Explanations
come from the same numbers the classifier uses: for the chosen class, each present feature's value
times its coefficient (minus the mean coefficient over classes, because a softmax ignores what all
classes share), largest first, named the way people read them ("title:diffusion", "host:github.com").
Terms made only of function words ("title:what") are left out of explanations, not out of the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.pipeline import Pipeline

from aggregator.classify.features import Doc, doc_from_item, readable_feature_names
from aggregator.errors import ModelError
from aggregator.types import Item, Prediction

TOP_TERMS = 5
UNSAVED = "unsaved"
ACCEPT = "accept"
REJECT = "reject"


class _LinearTextModel:
    """What both models share: the Pipeline, its feature names and per-class contributions."""

    def __init__(self, pipeline: Pipeline, version: str = UNSAVED) -> None:
        if not isinstance(pipeline, Pipeline) or set(pipeline.named_steps) != {"features", "classifier"}:
            raise ModelError("a model must be a Pipeline with the steps 'features' and 'classifier'")
        self.pipeline = pipeline
        self.version = version
        self.labels: tuple[str, ...] = tuple(str(label) for label in pipeline.classes_)
        names = readable_feature_names(pipeline.named_steps["features"])
        self._feature_names = np.array(names, dtype=object)
        self._weights = _relative_weights(pipeline.named_steps["classifier"].coef_)
        self._explainable = np.array([not _only_function_words(name) for name in names], dtype=bool)

    def _features(self, docs: Sequence[Doc]) -> sparse.csr_matrix:
        return sparse.csr_matrix(self.pipeline.named_steps["features"].transform(list(docs)))

    def _probabilities(self, features: sparse.csr_matrix) -> np.ndarray:
        probabilities: np.ndarray = self.pipeline.named_steps["classifier"].predict_proba(features)
        return probabilities

    def _top_terms(self, features: sparse.csr_matrix, class_of_row: np.ndarray) -> list[tuple[str, ...]]:
        """Per row, the TOP_TERMS explainable features that pushed it most toward its class, largest
        first, ties in column order: computed for all rows at once, not row by row."""
        rows = np.repeat(np.arange(features.shape[0]), np.diff(features.indptr))
        columns = features.indices
        contributions = features.data * self._weights[class_of_row[rows], columns]
        keep = (contributions > 0) & self._explainable[columns]
        chosen, ends = _largest_per_row(rows[keep], contributions[keep], features.shape[0], TOP_TERMS)
        names = self._feature_names[columns[keep][chosen]].tolist()
        return [tuple(names[start:end]) for start, end in zip([0, *ends][:-1], ends, strict=True)]


class SectionModel(_LinearTextModel):
    """The live section classifier: Docs in, (section, confidence, top terms) out."""

    def predict(self, docs: Sequence[Doc]) -> list[tuple[str, float, tuple[str, ...]]]:
        if not docs:
            return []
        features = self._features(docs)
        probabilities = self._probabilities(features)
        chosen = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(chosen)), chosen].tolist()
        labels = [self.labels[k] for k in chosen.tolist()]
        return list(zip(labels, confidences, self._top_terms(features, chosen), strict=True))

    def predict_labels(self, docs: Sequence[Doc]) -> list[str]:
        """Only the sections (for measuring; skips the explanations)."""
        if not docs:
            return []
        chosen = self._probabilities(self._features(docs)).argmax(axis=1)
        return [self.labels[k] for k in chosen]


class RelevanceModel(_LinearTextModel):
    """How likely an editor is to accept an item: trained on accept versus reject decisions."""

    def __init__(self, pipeline: Pipeline, version: str = UNSAVED) -> None:
        super().__init__(pipeline, version)
        if set(self.labels) != {ACCEPT, REJECT}:
            raise ModelError(f"a relevance model must have the classes accept and reject, not {self.labels}")
        self._accept = self.labels.index(ACCEPT)

    def score(self, docs: Sequence[Doc]) -> list[float]:
        if not docs:
            return []
        probabilities = self._probabilities(self._features(docs))
        return [float(p) for p in probabilities[:, self._accept]]

    def explain(self, docs: Sequence[Doc]) -> list[tuple[str, ...]]:
        """The terms that pushed each item toward "accept"."""
        features = self._features(docs)
        return self._top_terms(features, np.full(len(docs), self._accept))


def classify_items(
    items: Sequence[Item],
    section_model: SectionModel | None,
    relevance: RelevanceModel | None,
    *,
    default_section: str | None = None,
) -> list[Prediction]:
    """One Prediction per item, in order. With no section model, items get `default_section`
    (a source's default_category, or None: stored unclassified) and confidence 0."""
    docs = [doc_from_item(item) for item in items]
    sections: list[tuple[str | None, float, tuple[str, ...]]]
    if section_model is not None:
        sections = [*section_model.predict(docs)]
        version: str | None = section_model.version
    else:
        sections = [(default_section, 0.0, ()) for _ in docs]
        version = None
    relevances: list[float | None] = list(relevance.score(docs)) if relevance else [None] * len(docs)
    return [
        Prediction(
            item_key=item.key,
            section=section,
            confidence=confidence,
            item_type=doc.item_type,
            model_version=version,
            top_terms=terms,
            relevance=score,
        )
        for item, doc, (section, confidence, terms), score in zip(items, docs, sections, relevances, strict=True)
    ]


def _only_function_words(name: str) -> bool:
    """ "title:what", "summary:of the": words that do help the classifier (opinion pieces ask
    "what" and "why") but tell an editor nothing, so explanations skip them."""
    block, _, term = name.partition(":")
    return block in ("title", "summary") and ENGLISH_STOP_WORDS.issuperset(term.split())


def _largest_per_row(rows: np.ndarray, values: np.ndarray, n_rows: int, k: int) -> tuple[np.ndarray, list[int]]:
    """For each row, the positions (into `values`) of its k largest values, largest first, ties in
    position order; returned one row after another, with where each row's run ends. `rows` must be
    sorted. Each row's values are laid out on one line of a grid, padded with infinity, so one
    stable sort per line does it for all rows at once."""
    per_row = np.bincount(rows, minlength=n_rows)
    first = np.cumsum(per_row) - per_row
    lines = np.full((n_rows, max(int(per_row.max(initial=0)), k)), np.inf)
    lines[rows, np.arange(len(rows)) - first[rows]] = -values
    best = np.argsort(lines, axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(lines, best, axis=1) < np.inf
    return (first[:, None] + best)[found], np.cumsum(found.sum(axis=1)).tolist()


def _relative_weights(coef: np.ndarray) -> np.ndarray:
    """Per-class weights relative to the class mean; a binary model's single row becomes two."""
    weights = np.asarray(coef, dtype=np.float64)
    if weights.shape[0] == 1:
        return np.vstack([-weights[0] / 2, weights[0] / 2])
    relative: np.ndarray = weights - weights.mean(axis=0, keepdims=True)
    return relative
