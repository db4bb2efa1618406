"""Counting the 1-2 grams of a fitted vocabulary with numpy: CountVectorizer's matrix, faster.

scikit-learn builds every n-gram of a document as a string and counts it in a Python loop (~120 us
for a 1,200-character summary). Here a vocabulary becomes arrays once (NgramIndex): each token an
id, each bigram a pair of ids. A batch of documents becomes one array of token ids, and counting is
a few array operations for the whole batch. Token ids come either from the tokenizer's strings (any
token pattern), or, for scikit-learn's default pattern (runs of two or more word characters),
straight from the text's code points (WordTable): found by hash, then checked character by
character, so no string is made per token and a hash collision can never count a wrong term.

The matrix is the same, bit for bit (tests/test_classify_ngrams.py compares them), for tokens
without spaces (a term "a b" is then only the bigram of a and b) and n <= 2: what
features.CompactTfidfVectorizer checks before it counts here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import numpy as np
from scipy import sparse

WORD_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default token pattern
MIN_WORD_LENGTH = 2
# Python's \w is exactly str.isalnum() or "_" (checked over every code point in the tests).
_LATIN1_WORD = np.array([chr(c).isalnum() or chr(c) == "_" for c in range(256)], dtype=bool)
_HASH_BASE = np.uint64(0x100000001B3)
_MIX = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3's finaliser: spreads short words over the top bits
_MIX_SHIFT = np.uint64(33)
_SLOTS_PER_TOKEN = 8  # hash table size: most searches end at the first probe


@dataclass(frozen=True, slots=True)
class NgramIndex:
    """A fitted vocabulary (term -> column) as arrays."""

    vocabulary: dict[str, int]  # the dict it was built from, to notice a refit
    token_ids: dict[str, int]  # every token some term is made of
    unigram_columns: np.ndarray  # token id -> its column, or -1; the extra last slot is "unknown"
    bigram_keys: np.ndarray  # first id * n_tokens + second id, sorted
    bigram_columns: np.ndarray  # the column of each key
    with_unigrams: bool
    words: WordTable | None  # for the default token pattern

    @classmethod
    def build(cls, vocabulary: dict[str, int], ngram_range: tuple[int, int], *, word_pattern: bool) -> NgramIndex:
        min_n, max_n = ngram_range
        parts = [term.split(" ") for term in vocabulary] if max_n == 2 else [[term] for term in vocabulary]
        token_ids = {token: i for i, token in enumerate(dict.fromkeys(chain.from_iterable(parts)))}
        n_parts = np.fromiter(map(len, parts), dtype=np.intp, count=len(parts))
        part_ids = np.fromiter(map(token_ids.__getitem__, chain.from_iterable(parts)), dtype=np.intp)
        first = np.cumsum(n_parts) - n_parts  # where each term's parts start in part_ids
        columns = np.fromiter(vocabulary.values(), dtype=np.intp, count=len(vocabulary))
        unigram_columns = np.full(len(token_ids) + 1, -1, dtype=np.intp)
        unigram = n_parts == 1
        unigram_columns[part_ids[first[unigram]]] = columns[unigram]
        bigram = n_parts == 2  # terms of more parts than n are never counted
        keys = part_ids[first[bigram]] * len(token_ids) + part_ids[first[bigram] + 1]
        order = np.argsort(keys)
        words = WordTable.build(list(token_ids)) if word_pattern else None
        return cls(vocabulary, token_ids, unigram_columns, keys[order], columns[bigram][order], min_n == 1, words)

    def count_tokens(self, token_lists: Sequence[Sequence[str]], dtype: Any) -> sparse.csr_array:
        """Counts of documents given as token lists (any tokenizer)."""
        unknown = len(self.token_ids)
        lengths = np.fromiter(map(len, token_lists), dtype=np.intp, count=len(token_lists))
        tokens = list(chain.from_iterable(token_lists))
        ids = np.fromiter(map(self.token_ids.get, tokens, repeat(unknown)), dtype=np.intp, count=len(tokens))
        return self._count(ids, np.repeat(np.arange(len(token_lists)), lengths), len(token_lists), dtype)

    def count_words(self, texts: Sequence[str], dtype: Any) -> sparse.csr_array:
        """Counts of preprocessed texts under the default token pattern (needs `words`)."""
        if self.words is None:
            raise ValueError("this index was built without a word table")
        ids, doc_of_token = self.words.ids(texts)
        return self._count(ids, doc_of_token, len(texts), dtype)

    def _count(self, ids: np.ndarray, doc_of_token: np.ndarray, n_docs: int, dtype: Any) -> sparse.csr_array:
        """Token ids in document order -> the (documents x terms) count matrix, canonical CSR."""
        unknown = len(self.token_ids)
        rows, columns = [], []
        if self.with_unigrams:
            unigram = self.unigram_columns[ids]
            rows.append(doc_of_token[unigram >= 0])
            columns.append(unigram[unigram >= 0])
        if len(self.bigram_keys) and len(ids) > 1:
            first, second = ids[:-1], ids[1:]
            known = (doc_of_token[:-1] == doc_of_token[1:]) & (first != unknown) & (second != unknown)
            keys = first[known] * unknown + second[known]
            at = np.minimum(np.searchsorted(self.bigram_keys, keys), len(self.bigram_keys) - 1)
            hit = self.bigram_keys[at] == keys
            rows.append(doc_of_token[:-1][known][hit])
            columns.append(self.bigram_columns[at[hit]])
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.intp)
        column = np.concatenate(columns) if columns else np.zeros(0, dtype=np.intp)
        shape = (n_docs, len(self.vocabulary))
        # COO -> CSR sums the repeated (document, term) pairs into counts and sorts each row's columns.
        return sparse.coo_array((np.ones(len(row), dtype=dtype), (row, column)), shape=shape).tocsr()


@dataclass(frozen=True, slots=True)
class WordTable:
    """Word tokens found in text -> token ids, through an open-addressing hash table of the
    vocabulary tokens' code points; every hit is then compared character by character."""

    codes: np.ndarray  # the vocabulary tokens' code points, one token after another
    starts: np.ndarray  # token id -> where it starts in `codes`
    lengths: np.ndarray  # token id -> its length
    slot_ids: np.ndarray  # hash table: the token id in each slot, -1 for an empty slot
    slot_hashes: np.ndarray  # the hash of that token
    shift: np.uint64  # a hash's slot is its top bits
    max_probes: int  # the longest probe chain of any token: a search stops after it
    max_length: int  # longer words are no token

    @classmethod
    def build(cls, tokens: list[str]) -> WordTable | None:
        """None when there are no tokens or two share a hash (callers then use the tokenizer)."""
        if not tokens:
            return None
        lengths = np.array([len(t) for t in tokens], dtype=np.intp)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.intp)
        codes = _code_points("".join(tokens))
        hashes = _hashes(codes, starts, lengths)
        if len(np.unique(hashes)) != len(hashes):
            return None
        bits = max(4, (_SLOTS_PER_TOKEN * len(tokens)).bit_length())
        mask = (1 << bits) - 1
        slot_ids = [-1] * (mask + 1)
        max_probes = 1
        for token_id, value in enumerate(hashes.tolist()):
            slot, probes = value >> (64 - bits), 1
            while slot_ids[slot] != -1:
                slot, probes = (slot + 1) & mask, probes + 1
            slot_ids[slot] = token_id
            max_probes = max(max_probes, probes)
        slot_array = np.array(slot_ids, dtype=np.intp)
        slot_hashes = np.where(slot_array >= 0, hashes[slot_array], 0).astype(np.uint64)
        shift = np.uint64(64 - bits)
        return cls(codes, starts, lengths, slot_array, slot_hashes, shift, max_probes, int(lengths.max()))

    def ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(token id per word token, its document): the unknown id is len(self.lengths)."""
        codes, starts, lengths, doc_of_token = _word_spans(texts)
        unknown = len(self.lengths)
        ids = np.full(len(starts), unknown, dtype=np.intp)
        fits = np.flatnonzero(lengths <= self.max_length)
        candidates = self._find(_hashes(codes, starts[fits], lengths[fits]))
        maybe = (candidates != unknown) & (self.lengths[np.minimum(candidates, unknown - 1)] == lengths[fits])
        fits, candidates = fits[maybe], candidates[maybe]
        same = _spans_equal(codes, starts[fits], self.codes, self.starts[candidates], lengths[fits])
        ids[fits[same]] = candidates[same]
        return ids, doc_of_token

    def _find(self, hashes: np.ndarray) -> np.ndarray:
        """The token id whose hash each value is, or the unknown id (linear probing)."""
        unknown = len(self.lengths)
        mask = len(self.slot_ids) - 1
        home = (hashes >> self.shift).astype(np.intp)
        token_id = self.slot_ids[home]  # the first probe, for all at once
        hit = (token_id >= 0) & (self.slot_hashes[home] == hashes)
        found = np.where(hit, token_id, unknown)
        pending = np.flatnonzero((token_id >= 0) & ~hit)  # an empty slot ends the search
        for probe in range(1, self.max_probes):
            if not len(pending):
                break
            slot = (home[pending] + probe) & mask
            token_id = self.slot_ids[slot]
            hit = (token_id >= 0) & (self.slot_hashes[slot] == hashes[pending])
            found[pending[hit]] = token_id[hit]
            pending = pending[(token_id >= 0) & ~hit]
        return found


def _word_spans(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """WORD_PATTERN's tokens as spans: (code points of all texts, start, length, text index).
    `\\b\\w\\w+\\b` finds exactly the runs of two or more word characters."""
    codes = _code_points("\n".join(texts))  # "\n" is no word character: no token spans two texts
    edges = np.flatnonzero(np.diff(_is_word(codes), prepend=False, append=False))
    starts, ends = edges[0::2], edges[1::2]
    long_enough = ends - starts >= MIN_WORD_LENGTH
    starts, lengths = starts[long_enough], (ends - starts)[long_enough]
    text_starts = np.cumsum([0, *(len(text) + 1 for text in texts[:-1])])
    return codes, starts, lengths, np.searchsorted(text_starts, starts, side="right") - 1


def _code_points(text: str) -> np.ndarray:
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _is_word(codes: np.ndarray) -> np.ndarray:
    if codes.dtype == np.uint8:
        latin1: np.ndarray = _LATIN1_WORD[codes]
        return latin1
    beyond = codes >= len(_LATIN1_WORD)
    is_word = _LATIN1_WORD[np.where(beyond, 0, codes)]
    if beyond.any():  # the few distinct characters beyond Latin-1 are asked one by one
        distinct, where = np.unique(codes[beyond], return_inverse=True)
        is_word[beyond] = np.array([chr(c).isalnum() for c in distinct.tolist()], dtype=bool)[where]
    return is_word


def _hashes(codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A polynomial hash (uint64, wrapping) of the code points of each span, mixed so that its top
    bits (the hash table slot) differ for short words too."""
    order, going = _longest_first(lengths)
    starts = starts[order]
    hashes = np.zeros(len(order), dtype=np.uint64)
    for k, n in enumerate(going):
        head = hashes[:n]
        head *= _HASH_BASE
        head += codes[starts[:n] + k]
    hashes ^= hashes >> _MIX_SHIFT
    hashes *= _MIX
    hashes ^= hashes >> _MIX_SHIFT
    unsorted = np.empty_like(hashes)
    unsorted[order] = hashes
    return unsorted


def _spans_equal(
    codes: np.ndarray, starts: np.ndarray, other_codes: np.ndarray, other_starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Whether each span of `codes` holds the same code points as its span of `other_codes`."""
    order, going = _longest_first(lengths)
    starts, other_starts = starts[order], other_starts[order]
    equal = np.ones(len(order), dtype=bool)
    for k, n in enumerate(going):
        equal[:n] &= codes[starts[:n] + k] == other_codes[other_starts[:n] + k]
    unsorted = np.empty_like(equal)
    unsorted[order] = equal
    return unsorted


def _longest_first(lengths: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """An order putting longer spans first, and for each position k how many spans are longer than
    k: the spans still going at k are then a prefix, so a loop over k touches each character once."""
    if not len(lengths):
        return np.zeros(0, dtype=np.intp), []
    longest = int(lengths.max())
    shortness = (longest - lengths).astype(np.uint16 if longest < 1 << 16 else np.intp)
    order = np.argsort(shortness, kind="stable")  # a radix sort for 16-bit keys: ~4x faster
    at_most = np.cumsum(np.bincount(lengths))
    return order, (len(lengths) - at_most[:-1]).tolist()
