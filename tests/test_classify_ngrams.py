"""Fast serving features give scikit-learn's numbers exactly: n-gram counts, accent stripping,
explanations. A saved model must predict bit for bit what it predicted before."""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer, strip_accents_unicode

from aggregator.classify import ngrams
from aggregator.classify.features import (
    CompactTfidfVectorizer,
    _tokens,
    _words,
    doc_from_example,
    docs_to_columns,
    strip_accents,
)
from aggregator.classify.predict import TOP_TERMS, SectionModel
from aggregator.classify.registry import Registry
from aggregator.classify.train import train_section_model
from aggregator.types import LabeledExample
from tests.test_classify import CATEGORIES, invented_examples

SHIPPED_MODELS = Path(__file__).parents[1] / "models"

# Words a feed may hold: accents, ligatures, other scripts, digits, underscores, the letters that
# case-fold oddly (long s, dotted and dotless i, Kelvin sign), combining marks and punctuation.
_WORDS = [
    "model", "models", "the", "of", "a", "to", "diffusion", "transformer", "café", "naïve", "résumé",
    "Ångström", "ﬁne-tuning", "Straße", "ſystem", "İstanbul", "ıi", "\u212aelvin", "e\u0301te\u0301",
    "数据", "模型", "данные", "модель", "2024", "v1_2", "__init__", "x", "y", "GPT-4o", "co-op", "don't",
    "“quoted”", "—", "…", "½", "²", "Ⅻ", "٣", "🤖",
]  # fmt: skip
_SEPARATORS = [" ", " ", " ", "  ", "\n", "\t", ", ", ". ", "-", "/", "'", "\u00a0", "\u3000"]


def _texts(seed: int, n: int, max_words: int = 40) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randrange(max_words))]
        texts.append("".join(word + rng.choice(_SEPARATORS) for word in words))
    return [*texts, "", "a", "model", "x" * 300, "model\nmodel model"]


def _reference(vectorizer: CompactTfidfVectorizer) -> TfidfVectorizer:
    """A plain scikit-learn vectorizer with the same settings and fitted state."""
    reference = TfidfVectorizer(**vectorizer.get_params())
    reference.vocabulary_ = vectorizer.vocabulary_
    reference._tfidf = vectorizer._tfidf
    return reference


def _sklearn_counts(vectorizer: CompactTfidfVectorizer, texts: list[str]) -> sparse.csr_array:
    _, counts = _reference(vectorizer)._count_vocab(texts, fixed_vocab=True)
    return sparse.csr_array(counts)


def _assert_same(expected: sparse.csr_array, got: sparse.csr_array) -> None:
    got = sparse.csr_array(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert np.array_equal(got.indptr, expected.indptr)
    assert np.array_equal(got.indices, expected.indices)
    assert np.array_equal(got.data, expected.data)


@pytest.mark.parametrize("make", [partial(_words, 40_000, 1), partial(_tokens, 1)], ids=["words", "tokens"])
def test_counts_are_scikit_learns(make: Callable[[], CompactTfidfVectorizer]) -> None:
    vectorizer = make().fit(_texts(seed=1, n=300))
    for seed in (2, 3):
        texts = _texts(seed=seed, n=200)
        _, counts = vectorizer._count_vocab(texts, fixed_vocab=True)
        _assert_same(_sklearn_counts(vectorizer, texts), counts)
    assert vectorizer._ngram_index is not None, "the fast path was taken"


def test_word_table_is_used_for_the_default_token_pattern() -> None:
    words, tokens = _words(40_000, 1).fit(_texts(1, 50)), _tokens(1).fit(_texts(1, 50))
    words.transform(["model"])
    tokens.transform(["model"])
    assert words._ngram_index.words is not None
    assert tokens._ngram_index.words is None  # "\S+" tokens come from the tokenizer's strings


def test_transform_is_scikit_learns_to_the_bit() -> None:
    vectorizer = _words(40_000, 1).fit(_texts(seed=4, n=300))
    texts = _texts(seed=5, n=200)
    _assert_same(sparse.csr_array(_reference(vectorizer).transform(texts)), vectorizer.transform(texts))


def test_other_settings_keep_scikit_learns_loop() -> None:
    vectorizer = CompactTfidfVectorizer(ngram_range=(1, 3), token_pattern=r"[^ ]+").fit(_texts(6, 50))
    texts = _texts(7, 50)
    _, counts = vectorizer._count_vocab(texts, fixed_vocab=True)
    _assert_same(_sklearn_counts(vectorizer, texts), counts)
    assert getattr(vectorizer, "_ngram_index", None) is None


def test_a_refit_rebuilds_the_index() -> None:
    vectorizer = _words(40_000, 1).fit(["alpha beta", "gamma delta"])
    vectorizer.transform(["alpha beta"])
    vectorizer.fit(["beta alpha", "epsilon"])
    texts = ["alpha beta gamma", "beta alpha epsilon"]
    _assert_same(_sklearn_counts(vectorizer, texts), vectorizer._count_vocab(texts, fixed_vocab=True)[1])


def test_the_index_is_not_saved() -> None:
    vectorizer = _words(40_000, 1).fit(_texts(8, 20))
    vectorizer.transform(["model"])
    assert "_ngram_index" not in vectorizer.__getstate__()


def test_hash_collisions_fall_back_to_token_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ngrams, "_hashes", lambda codes, starts, lengths: np.zeros(len(starts), dtype=np.uint64))
    vectorizer = _words(40_000, 1).fit(_texts(9, 100))
    texts = _texts(10, 100)
    _, counts = vectorizer._count_vocab(texts, fixed_vocab=True)
    assert vectorizer._ngram_index.words is None
    _assert_same(_sklearn_counts(vectorizer, texts), counts)


def test_a_hash_match_is_checked_character_by_character(monkeypatch: pytest.MonkeyPatch) -> None:
    table = ngrams.WordTable.build(["model", "data"])
    assert table is not None
    real_hashes = ngrams._hashes
    model_hash = real_hashes(*ngrams._word_spans(["model"])[:3])[0]

    def colliding(codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        hashes = real_hashes(codes, starts, lengths)
        hashes[lengths == 5] = model_hash  # "mode1" now hashes like "model"
        return hashes

    monkeypatch.setattr(ngrams, "_hashes", colliding)
    ids, _ = table.ids(["model mode1 data datum"])
    assert ids.tolist() == [0, 2, 1, 2]  # 2: unknown


def test_python_word_characters_are_isalnum_or_underscore() -> None:
    word = re.compile(r"(?u)\w")
    every = [chr(c) for c in range(sys.maxunicode + 1)]
    assert [c for c in every if bool(word.match(c)) != (c.isalnum() or c == "_")] == []


def test_word_spans_are_the_default_token_pattern() -> None:
    pattern = re.compile(ngrams.WORD_PATTERN)
    texts = _texts(seed=11, n=200)
    _, starts, lengths, doc_of_token = ngrams._word_spans(texts)
    found: list[list[str]] = [[] for _ in texts]
    joined = "\n".join(texts)
    for start, length, doc in zip(starts.tolist(), lengths.tolist(), doc_of_token.tolist(), strict=True):
        found[doc].append(joined[start : start + length])
    assert found == [pattern.findall(text) for text in texts]


def test_strip_accents_is_scikit_learns() -> None:
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    for start in range(0, len(every), 4096):
        chunk = every[start : start + 4096]
        assert strip_accents(chunk) == strip_accents_unicode(chunk)
    for text in _texts(seed=12, n=200):
        assert strip_accents(text) == strip_accents_unicode(text)


def test_top_terms_for_all_rows_match_the_row_by_row_reading() -> None:
    model = train_section_model(invented_examples(), CATEGORIES, live=None).model
    docs = [doc_from_example(ex) for ex in invented_examples()]
    features = model._features(docs)
    chosen = model._probabilities(features).argmax(axis=1)
    expected = [_top_terms_of_row(model, features, row, k) for row, k in enumerate(chosen)]
    assert model._top_terms(features, chosen) == expected
    assert model._top_terms(features[:0], chosen[:0]) == []


def _top_terms_of_row(model: SectionModel, features: sparse.csr_matrix, row: int, k: int) -> tuple[str, ...]:
    """The explanation as it was computed before, one row at a time."""
    start, end = features.indptr[row], features.indptr[row + 1]
    columns = features.indices[start:end]
    contributions = features.data[start:end] * model._weights[k, columns]
    positive = np.flatnonzero((contributions > 0) & model._explainable[columns])
    best = positive[np.argsort(-contributions[positive], kind="stable")[:TOP_TERMS]]
    return tuple(str(name) for name in model._feature_names[columns[best]])


@pytest.mark.skipif(not (SHIPPED_MODELS / "CURRENT").exists(), reason="no shipped model")
def test_the_shipped_model_sees_the_same_features() -> None:
    model = Registry(SHIPPED_MODELS).load()
    assert model is not None
    examples = invented_examples()
    odd = [LabeledExample(title=text[:80], label="", summary=text) for text in _texts(seed=13, n=100)]
    columns = docs_to_columns([doc_from_example(ex) for ex in [*examples, *odd]])
    blocks = model.pipeline.named_steps["features"].named_steps["blocks"]
    for _, vectorizer, column in blocks.transformers_:
        texts = list(columns[:, column])
        _, counts = vectorizer._count_vocab(texts, fixed_vocab=True)
        _assert_same(_sklearn_counts(vectorizer, texts), counts)
