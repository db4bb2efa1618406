"""The one place text features are built, for training and for serving alike.

A `Doc` is what the classifier sees of an item or a labeled example. `build_features()` returns the
scikit-learn transformer that turns a sequence of Docs into one sparse matrix; it is the first step of
every model's Pipeline (see train.py), so the saved file holds the exact features it was trained with.

Feature blocks (named so explanations read "title:diffusion", "host:github.com", "type:Paper"):
    title    tf-idf word 1-2 grams of the title
    summary  tf-idf word 1-2 grams of the first SUMMARY_CHARS characters of the summary
    link     the URL's host, its site name and its path words ("host:github.com", "path:releases")
    meta     the source kind and the type tag ("kind:release", "type:Minor_Release")

Each block is L2-normalised on its own, so a title's ten words share the same weight as a summary's
hundred: a title word counts several times a summary word. Raising the title block further was
measured (5-fold CV and a by-date split of the pre-2024 dev data) and only lowered macro-F1, as did
shrinking the summary block; the link and type blocks help most at half weight.

Serving speed: scikit-learn's vectorizer builds every 1-2 gram as a string and counts it in a Python
loop (~120 us for a 1,200-character summary). CompactTfidfVectorizer counts the n-grams of a fitted
vocabulary with array operations instead (ngrams.py), and strips accents without a Python loop over
every character; both give scikit-learn's matrix bit for bit, so a saved model predicts exactly
what it predicted before (tests/test_classify_ngrams.py checks it).
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from aggregator.classify.itemtype import (
    CONFERENCE,
    CONFERENCE_TALK,
    MAJOR_RELEASE,
    MINOR_RELEASE,
    PAPER,
    PATCH_RELEASE,
    TECHNICAL_REPORT,
    item_type,
    split_link,
    type_from_example,
)
from aggregator.classify.ngrams import WORD_PATTERN, NgramIndex
from aggregator.types import Item, LabeledExample

# Labeled summaries are cut near 1,200 characters; serving cuts the same way so both see alike text
# (and a blog post's full body does not slow prediction down).
SUMMARY_CHARS = 1200
COLUMNS = ("title", "summary", "link", "meta")
BLOCK_WEIGHTS = {"title": 1.0, "summary": 1.0, "link": 0.5, "meta": 0.5}

_SPACE_SEPARATED = r"\S+"
# Token patterns whose tokens never hold a space: a term "a b" is then exactly the bigram of a and b.
_SPACE_FREE_TOKEN_PATTERNS = frozenset({_SPACE_SEPARATED, WORD_PATTERN})
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
_PATH_WORD = re.compile(r"[a-z][a-z0-9]{1,24}")
_HEXISH = re.compile(r"^[0-9a-f]{8,}$")
_RELEASE_TYPES = frozenset({MAJOR_RELEASE, MINOR_RELEASE, PATCH_RELEASE})
_PAPER_TYPES = frozenset({PAPER, TECHNICAL_REPORT})
_EVENT_TYPES = frozenset({CONFERENCE, CONFERENCE_TALK})


@dataclass(frozen=True, slots=True)
class Doc:
    """What the classifier sees of one item or example."""

    title: str
    summary: str
    url: str
    kind: str  # "paper" | "blog" | "release" | "" (unknown)
    item_type: str


def doc_from_item(item: Item) -> Doc:
    return Doc(
        title=item.title,
        summary=item.summary_text[:SUMMARY_CHARS],
        url=item.url,
        kind=item.kind,
        item_type=item_type(item),
    )


def doc_from_example(example: LabeledExample) -> Doc:
    """A labeled example as a Doc. Examples carry no source kind, so it is read off the type tag
    the way sources assign it (papers from arXiv, releases from GitHub, the rest from feeds): the
    kind feature then means the same thing in training as in serving."""
    tag = example.item_type or type_from_example(example.title, example.summary, example.url)
    return Doc(
        title=example.title,
        summary=example.summary[:SUMMARY_CHARS],
        url=example.url,
        kind=kind_for_type(tag),
        item_type=tag,
    )


def kind_for_type(tag: str) -> str:
    if tag in _PAPER_TYPES:
        return "paper"
    if tag in _RELEASE_TYPES:
        return "release"
    return "blog"


def link_tokens(url: str) -> list[str]:
    """Host, site and path words of a link: "https://www.github.com/org/repo/releases" gives
    host:github.com, site:github, path:org, path:repo, path:releases."""
    host, path = split_link(url)
    if not host:
        return ["host:none"]  # never an empty block: a vectorizer refuses an empty vocabulary
    labels = host.split(".")
    site = labels[-2] if len(labels) >= 2 else labels[0]
    words = [w for w in _PATH_WORD.findall(path.lower()) if not _HEXISH.match(w)]
    return [f"host:{host}", f"site:{site}", *(f"path:{w}" for w in dict.fromkeys(words))]


def meta_tokens(doc: Doc) -> list[str]:
    kind = doc.kind or "unknown"
    return [f"kind:{kind}", "type:" + doc.item_type.replace(" ", "_")]


def docs_to_columns(docs: Sequence[Doc]) -> np.ndarray:
    """The Pipeline's first step: Docs -> an (n, 4) array of strings, one column per feature block."""
    rows = [(doc.title, doc.summary, " ".join(link_tokens(doc.url)), " ".join(meta_tokens(doc))) for doc in docs]
    return np.array(rows, dtype=object).reshape(len(rows), len(COLUMNS))


def build_features(
    *,
    max_features: int = 40_000,
    min_df: int = 2,
    weights: dict[str, float] | None = None,
) -> Pipeline:
    """Docs -> sparse feature matrix. `max_features` caps each text vocabulary so the saved model
    stays a few MB; `min_df` drops words seen once (names and typos that never come back)."""
    blocks = [
        ("title", _words(max_features, min_df), 0),
        ("summary", _words(max_features, min_df), 1),
        ("link", _tokens(min_df), 2),
        ("meta", _tokens(1), 3),
    ]
    columns = ColumnTransformer(
        blocks,
        transformer_weights=weights or BLOCK_WEIGHTS,
        sparse_threshold=1.0,
    )
    return Pipeline([("columns", FunctionTransformer(docs_to_columns)), ("blocks", columns)])


class CompactTfidfVectorizer(TfidfVectorizer):  # type: ignore[misc]
    """A TfidfVectorizer that saves its vocabulary as one byte array instead of a dict, and counts
    n-grams of a fitted vocabulary with array operations (see the module docstring).

    skops writes a dict entry by entry into its JSON schema (about 1 KB per term: 40 MB and seconds
    to load for this model); one array is stored as a .npy file. Terms never contain a newline
    (tokens are split on whitespace), so newline-joined UTF-8 is unambiguous.
    """

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(super().__getstate__())  # a copy: the model keeps its dict
        state.pop("_ngram_index", None)  # derived from the vocabulary: rebuilt on first use
        vocabulary = state.pop("vocabulary_", None)
        if vocabulary is not None:
            terms = sorted(vocabulary, key=vocabulary.__getitem__)  # in column order
            state["vocabulary_terms_"] = np.frombuffer("\n".join(terms).encode(), dtype=np.uint8).copy()
            state["vocabulary_size_"] = len(terms)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        packed = state.pop("vocabulary_terms_", None)
        size = state.pop("vocabulary_size_", 0)
        super().__setstate__(state)
        if packed is not None:
            terms = bytes(np.asarray(packed, dtype=np.uint8)).decode().split("\n") if size else []
            self.vocabulary_ = {term: index for index, term in enumerate(terms)}

    def build_preprocessor(self) -> Any:
        if self.preprocessor is None and self.strip_accents == "unicode":
            return partial(_lower_and_strip_accents, lower=self.lowercase)
        return super().build_preprocessor()

    def _count_vocab(self, raw_documents: Iterable[Any], fixed_vocab: bool) -> tuple[dict[str, int], Any]:
        """scikit-learn's counting step; a fitted vocabulary is counted by ngrams.NgramIndex instead
        (the same matrix). Should a scikit-learn release stop calling this, only speed is lost."""
        if not fixed_vocab or not self._counts_with_arrays():
            counted: tuple[dict[str, int], Any] = super()._count_vocab(raw_documents, fixed_vocab)
            return counted  # fitting, or settings only scikit-learn's own loop handles
        index = self._index()
        texts = self._preprocessed(raw_documents)
        if index.words is not None:
            return self.vocabulary_, index.count_words(texts, self.dtype)
        tokenize = self.build_tokenizer()
        return self.vocabulary_, index.count_tokens([tokenize(text) for text in texts], self.dtype)

    def _preprocessed(self, raw_documents: Iterable[Any]) -> list[str]:
        """Documents decoded and preprocessed; strings skip decode(), which only reads files and bytes."""
        preprocess, decode, content = self.build_preprocessor(), self.decode, self.input == "content"
        return [preprocess(doc if content and isinstance(doc, str) else decode(doc)) for doc in raw_documents]

    def _index(self) -> NgramIndex:
        """The vocabulary as arrays, built on first use and again after a refit replaced it."""
        index: NgramIndex | None = getattr(self, "_ngram_index", None)
        if index is None or index.vocabulary is not self.vocabulary_:
            words = self.token_pattern == WORD_PATTERN
            index = self._ngram_index = NgramIndex.build(self.vocabulary_, self.ngram_range, word_pattern=words)
        return index

    def _counts_with_arrays(self) -> bool:
        """The settings NgramIndex reproduces exactly; anything else takes scikit-learn's loop."""
        min_n, max_n = self.ngram_range
        return bool(
            self.analyzer == "word"
            and self.tokenizer is None
            and self.stop_words is None
            and 1 <= min_n <= max_n <= 2
            and (max_n == 1 or self.token_pattern in _SPACE_FREE_TOKEN_PATTERNS)
        )


def _lower_and_strip_accents(doc: str, lower: bool) -> str:
    return strip_accents(doc.lower() if lower else doc)


def strip_accents(text: str) -> str:
    """scikit-learn's strip_accents_unicode (NFKD, then drop combining marks) with the same result,
    minus its Python loop over every character: only runs of non-ASCII characters are looked at,
    since no ASCII character is a combining mark."""
    if text.isascii():
        return text
    return _NON_ASCII_RUN.sub(_drop_combining_marks, unicodedata.normalize("NFKD", text))


def _drop_combining_marks(run: re.Match[str]) -> str:
    return "".join([c for c in run.group() if not unicodedata.combining(c)])


def _words(max_features: int, min_df: int) -> TfidfVectorizer:
    return CompactTfidfVectorizer(
        ngram_range=(1, 2),
        min_df=min_df,
        max_features=max_features,
        sublinear_tf=True,
        strip_accents="unicode",
        dtype=np.float32,
    )


def _tokens(min_df: int) -> TfidfVectorizer:
    # Tokens are built above; split on spaces only and keep their case ("type:Minor_Release").
    return CompactTfidfVectorizer(
        token_pattern=_SPACE_SEPARATED,
        lowercase=False,
        min_df=min_df,
        sublinear_tf=True,
        dtype=np.float32,
    )


def readable_feature_names(features: Pipeline) -> list[str]:
    """Column names of the fitted features as people read them: "title:diffusion", "host:arxiv.org"."""
    columns: ColumnTransformer = features.named_steps["blocks"]
    names: list[str] = []
    for block, vectorizer, _ in columns.transformers_:
        if block == "remainder":
            continue
        for term in _terms_in_column_order(vectorizer):
            names.append(f"{block}:{term}" if block in ("title", "summary") else term.replace("_", " "))
    return names


def _terms_in_column_order(vectorizer: TfidfVectorizer) -> list[str]:
    """get_feature_names_out(), without its sort when the vocabulary is already in column order (as
    a loaded CompactTfidfVectorizer's is): making and sorting 47,000 (term, column) pairs right after
    a model is loaded costs ~0.07 s."""
    vocabulary: dict[str, int] = vectorizer.vocabulary_
    if all(map(operator.eq, vocabulary.values(), range(len(vocabulary)))):
        return list(vocabulary)
    return [str(term) for term in vectorizer.get_feature_names_out()]
