"""Which stored items are the same story. Pure: candidates in, cluster ids out; no I/O.

Two items are the same story when they share an identity, or when their text is a near-duplicate:

    identity    an arXiv id in any form, a GitHub owner/repo@tag, a canonical URL or an item key,
                taken from the item itself and from the links of a post (a post linking more than
                `max_links` stories is a roundup, and its links identify nothing)
    near-dup    MinHash estimate of the Jaccard similarity of the word n-grams of title + summary
                >= `threshold`, for texts of at least `min_tokens` words, and titles that share a
                third of their content words (boilerplate summaries under unrelated titles do not)

and no veto applies. Vetoes beat both signals: never two items of one source, never two items
published further apart than `window`, never two different papers, never two different releases
(by version or repository, including versions named in titles), never titles naming different
years ("IROS 2023", "IROS 2024"), never a pair an editor split.

Clustering is greedy and constrained. Candidate pairs come from an identity index and from MinHash
LSH bands, are merged strongest first (identity, then by similarity), and two clusters join only
when every pair across them passes the vetoes, so one vague post cannot chain two stories together.
Clusters that already have an id (from storage, or from an earlier `Index.add`) keep it and never
merge with each other; a new cluster takes the smallest id among its members.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import ConfigError, ParseError
from aggregator.normalize import arxiv_base_id, canonical_url
from aggregator.types import StoredItem

__all__ = ["AddStats", "Candidate", "DedupeConfig", "Index", "cluster", "same_story", "split_out"]

_U64 = np.uint64
_Int = TypeVar("_Int", np.int64, np.intp)

_RELEASE_REF = re.compile(r"^(?:gh:|github:)?([\w.-]+/[\w.-]+)@(\S+)$", re.IGNORECASE)
_RELEASE_URL = re.compile(r"github\.com/([\w.-]+/[\w.-]+)/releases/tag/([^/?#\s]+)", re.IGNORECASE)
_MAYBE_ARXIV = re.compile(r"arxiv|^\d{4}\.\d{4,5}|^[a-z][a-z-]*(?:\.[a-z]{2})?/\d{7}", re.IGNORECASE)
# A URL canonical_url would return unchanged (given no query or fragment): lower-case host, no port.
_PLAIN_URL = re.compile(r"^https?://[a-z0-9.-]+(?=/|$)")
# A version as titles and tags write it: dotted numbers, maybe a pre-release suffix. Not "3.5x", "99.5%".
_VERSION = re.compile(
    r"(?<![\w.])v?(\d+(?:\.\d+)+)(?:[-.]?(rc|alpha|beta|dev|post|pre|a|b)\.?(\d*))?(?![\w%])", re.IGNORECASE
)
_DOTTED_DIGITS = re.compile(r"\d\.\d")
_TITLE_WORD = re.compile(r"\w{3,}")
# Words that say nothing about which story a title is about.
_STOP_WORDS = frozenset({
    "the", "and", "for", "with", "from", "that", "this", "its", "new", "how", "why", "what", "who", "you",
    "your", "are", "was", "has", "have", "will", "now", "out", "into", "over", "more", "than", "not", "can",
    "our", "all", "about", "after", "says", "said", "report",
})  # fmt: skip
_YEAR = re.compile(r"(?<![\d.])(?:19|20)\d\d(?![.\d])")
_YEAR_DIGITS = re.compile(r"(?:19|20)\d\d")  # what _YEAR needs
_ARXIV_LIKE = re.compile(r"\d{4}\.\d{4,5}")
_TEXT_CAP = 20_000  # characters of title + summary that are hashed

_GROWTH = 0x9E3779B97F4A7C15  # word hashing base; odd, so it has an inverse mod 2**64
_GROWTH_INVERSE = pow(_GROWTH, -1, 2**64)
# What a byte adds to its word's hash: its lower case + 1 (so that every word byte counts), 0 outside
# words. Bytes of words: ASCII letters, digits, "_" and any byte of a non-ASCII character (UTF-8 has
# no byte 0xFF, the one that would wrap).
_WORD_CODES = bytes(
    (ord(chr(b).lower()) + 1 if chr(b).lower() in "abcdefghijklmnopqrstuvwxyz0123456789_" else 0) if b < 0x80
    else (b + 1 if b < 0xFF else 0)
    for b in range(256)
)  # fmt: skip
# Non-ASCII punctuation that separates words (ASCII punctuation is no word byte anyway).
_SEPARATORS = "\u00a0\u00ab\u00b7\u00bb\u2010\u2011\u2012\u2013\u2014\u2018\u2019\u201c\u201d\u2022\u2026\u2212"
_PUNCTUATION = str.maketrans(dict.fromkeys(_SEPARATORS, " "))


@dataclass(frozen=True, slots=True)
class DedupeConfig:
    """How eager merging is. Defaults measured on tests/fixtures/pairs.jsonl (scripts/bench_dedup.py)."""

    threshold: float = 0.4  # MinHash Jaccard estimate for near-duplicates
    num_perm: int = 64
    window: timedelta = timedelta(days=7)  # only items published within this of each other can merge
    shingle: int = 3  # word n-gram size
    min_tokens: int = 16  # texts shorter than this ("Weekly digest", "v1.2.0") never near-duplicate
    max_links: int = 3  # a post linking more stories than this is a roundup, not one of them
    max_bucket: int = 64  # how many earlier items one identity or LSH bucket offers for comparison
    seed: int = 1  # of the hash functions; signatures made with different seeds do not compare

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"dedupe threshold must be in (0, 1], got {self.threshold}")
        if not 8 <= self.num_perm <= 1024:
            raise ConfigError(f"dedupe num_perm must be between 8 and 1024, got {self.num_perm}")
        if self.window <= timedelta(0):
            raise ConfigError(f"dedupe window must be positive, got {self.window}")
        if not 1 <= self.shingle <= 8:
            raise ConfigError(f"dedupe shingle must be between 1 and 8 words, got {self.shingle}")
        if self.seed < 0:
            raise ConfigError(f"dedupe seed must not be negative, got {self.seed}")
        for name in ("min_tokens", "max_links", "max_bucket"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dedupe {name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Candidate:
    """What dedupe needs of a stored item. `linked_ids`: arXiv ids, owner/repo@tag, URLs or item keys
    found in the links of the post. A naive `published` is taken as UTC."""

    id: int
    key: str
    source: str
    title: str
    summary: str = ""
    url: str = ""
    published: datetime | None = None
    arxiv_id: str | None = None
    repo: str | None = None
    version: str | None = None
    linked_ids: tuple[str, ...] = ()

    @classmethod
    def from_stored(cls, stored: StoredItem, linked_ids: Iterable[str] = ()) -> Candidate:
        """A candidate for a stored item; an undated item counts as published when first seen."""
        item = stored.item
        return cls(
            id=stored.id,
            key=item.key,
            source=item.source,
            title=item.title,
            summary=item.summary_text,
            url=item.url,
            published=item.published or stored.first_seen,
            arxiv_id=item.arxiv_id,
            repo=item.repo,
            version=item.version,
            linked_ids=tuple(linked_ids),
        )


# ---------------------------------------------------------------- what one item is, for comparing


@dataclass(slots=True, eq=False)
class _Entry:
    id: int
    source: str
    at: float | None  # published, seconds since the epoch
    # Small tuples rather than sets: a few entries each, and 100k items are held at once.
    ids: tuple[str, ...]  # identity tokens, own and linked
    papers: tuple[str, ...]  # arXiv ids this item is or is about
    releases: tuple[str, ...]  # owner/repo@tag this item is or announces
    # For the checks on titles and versions: what they name is found when the item is first compared
    # (most items never are).
    title: str
    version: str | None  # of the release it is
    repo: str | None
    sig: NDArray[np.uint32] | None = None  # None: too little text to be a near-duplicate
    found_versions: tuple[str, ...] | None = None
    found_years: tuple[str, ...] | None = None

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions it is or names in its title."""
        if self.found_versions is None:
            self.found_versions = _versions(self.version, self.title)
        return self.found_versions

    @property
    def years(self) -> tuple[str, ...]:
        """The years its title names ("NeurIPS 2024")."""
        if self.found_years is None:
            self.found_years = _years(self.title)
        return self.found_years


def _text(candidate: Candidate) -> str:
    """What near-duplicate matching reads; the opening of a long text is plenty to recognise a copy."""
    return f"{candidate.title}\n{candidate.summary}"[:_TEXT_CAP]


def _timestamp(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _identity_token(text: str) -> str | None:
    """One spelling per identity (an item key or a link), or None when it names no single story.
    Keys look like "arxiv:2401.01234", "github:owner/repo@tag", "url:https://...", "guid:..."."""
    if _plain_web_address(text):  # most are: 4x faster than trying each pattern below
        return _url_token(text)
    if _MAYBE_ARXIV.search(text):
        arxiv = arxiv_base_id(text)
        if arxiv is not None:
            return "arxiv:" + arxiv[0]
    release = _RELEASE_REF.match(text) or _RELEASE_URL.search(text)
    if release is not None:
        return f"release:{release.group(1).lower()}@{release.group(2).lower()}"
    if text[:4].lower() == "http":
        return _url_token(text)
    return "key:" + text


def _plain_web_address(text: str) -> bool:
    """An ASCII http(s) address naming neither arXiv nor GitHub: no pattern but the URL's can match
    (the paper and release patterns need "arxiv" or "github.com/", or a start no URL has)."""
    if not text.isascii() or not text[:8].lower().startswith(("http://", "https://")):
        return False
    lowered = text.lower()
    return "arxiv" not in lowered and "github.com/" not in lowered


def _url_token(url: str) -> str | None:
    plain = None if "?" in url or "#" in url else _PLAIN_URL.match(url)
    if plain is not None:  # canonical already, as most are: the site, then a path
        page = url.rstrip("/")  # a page with and without its trailing slash is one page
        return "url:" + page if len(page) > plain.end() else None  # a site's front page is not a story
    try:  # canonical_url is slow
        parts = urlsplit(canonical_url(url))
    except (ParseError, ValueError):  # a malformed URL identifies nothing
        return None
    site, path, query = f"{parts.scheme}://{parts.netloc}", parts.path, parts.query
    path = path.rstrip("/")
    if not path:  # a site's front page is not a story
        return None
    return f"url:{site}{path}?{query}" if query else f"url:{site}{path}"


def _tokens(texts: Iterable[str]) -> set[str]:
    spellings = set()
    for text in texts:
        if text := text.strip():
            spellings.add(text[4:] if text[:4].lower() == "url:" else text)
    tokens = set()
    for spelling in spellings:  # plain loops: a third faster than nested comprehensions
        if token := _identity_token(spelling):
            tokens.add(token)
    return tokens


def _version_tokens(text: str) -> tuple[str, ...]:
    if not _DOTTED_DIGITS.search(text):  # which every version has; far cheaper than _VERSION
        return ()
    found = set()
    for match in _VERSION.finditer(text):
        number = match.group(1)
        if _ARXIV_LIKE.fullmatch(number):
            continue
        while number.endswith(".0"):  # 2.0.0 and 2.0 and 2 are one version
            number = number[:-2]
        suffix = (match.group(2) or "").lower() + (match.group(3) or "")
        found.add(f"{number}-{suffix}" if suffix else number)
    return tuple(sorted(found))


def _versions(version: str | None, title: str) -> tuple[str, ...]:
    if version:
        return _version_tokens(version) or (version.lower().lstrip("v"),)
    return _version_tokens(title)


def _years(title: str) -> tuple[str, ...]:
    if not _YEAR_DIGITS.search(title):  # 3x faster than _YEAR, whose look-behind runs everywhere
        return ()
    return tuple(_YEAR.findall(title))


def _entry(candidate: Candidate, cfg: DedupeConfig, sig: NDArray[np.uint32] | None) -> _Entry:
    own = [candidate.key, candidate.url]
    if candidate.arxiv_id:
        own.append("arxiv:" + candidate.arxiv_id)
    if candidate.repo and candidate.version:
        own.append(f"{candidate.repo}@{candidate.version}")
    ids = _tokens(own)
    if candidate.linked_ids:
        linked = _tokens(candidate.linked_ids) - ids
        if len(linked) <= cfg.max_links:
            ids |= linked
    ordered = tuple(sorted(ids))
    return _Entry(  # by position: 40% faster than by keyword, and made for every item
        candidate.id,
        candidate.source,
        _timestamp(candidate.published),
        ordered,
        tuple([t for t in ordered if t.startswith("arxiv:")]),
        tuple([t for t in ordered if t.startswith("release:")]),
        candidate.title,
        candidate.version,
        candidate.repo.lower() if candidate.repo else None,
        sig,
    )


def _shared(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return any(x in b for x in a)


def _disjoint(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Both name something and nothing in common: they are about different things."""
    return bool(a) and bool(b) and not _shared(a, b)


def _vetoed(a: _Entry, b: _Entry, cfg: DedupeConfig) -> bool:
    if a.source == b.source:
        return True
    if a.at is not None and b.at is not None and abs(a.at - b.at) > cfg.window.total_seconds():
        return True
    if a.repo is not None and b.repo is not None and a.repo != b.repo:
        return True
    return any(
        _disjoint(x, y)
        for x, y in ((a.papers, b.papers), (a.releases, b.releases), (a.versions, b.versions), (a.years, b.years))
    )


def _similarity(a: _Entry, b: _Entry) -> float:
    if a.sig is None or b.sig is None:
        return 0.0
    return float(np.count_nonzero(a.sig == b.sig)) / len(a.sig)


def _titles_agree(a: _Entry, b: _Entry) -> bool:
    """A third of the shorter title's content words appear in the other title (or a title has none
    to compare). Texts that only share boilerplate ("Join our newsletter...") have unrelated titles."""
    return _words_agree(_content_words(a.title), _content_words(b.title))


def _words_agree(words_a: set[str], words_b: set[str]) -> bool:
    if not words_a or not words_b:
        return True
    return 3 * len(words_a & words_b) >= min(len(words_a), len(words_b))


def _content_words(title: str) -> set[str]:
    return {word for word in _TITLE_WORD.findall(title.lower()) if word not in _STOP_WORDS}


def _strength(a: _Entry, b: _Entry, cfg: DedupeConfig) -> float:
    """2.0 for a shared identity, the similarity for a near-duplicate, 0.0 when not the same story."""
    if _vetoed(a, b, cfg):
        return 0.0
    if _shared(a.ids, b.ids):
        return 2.0
    similarity = _similarity(a, b)
    return similarity if similarity >= cfg.threshold and _titles_agree(a, b) else 0.0


# ---------------------------------------------------------------- MinHash signatures


class _MinHasher:
    """One-permutation MinHash with densification, vectorised over many texts: every word n-gram is
    hashed once and lands in one of num_perm bins, whose minimum is the signature value; an empty
    bin borrows the value of a bin picked by a fixed sequence, so equal values still mean a shared
    minimum. Classic MinHash costs num_perm hashes per n-gram (datasketch: ~220 us per item here,
    22 s for 100k items before any comparison)."""

    _CHUNK_CHARS = 1 << 18  # text hashed per numpy step: bounds the temporaries
    _EMPTY = _U64(1 << 32)  # larger than any 32-bit bin value

    def __init__(self, cfg: DedupeConfig) -> None:
        rng = np.random.default_rng(cfg.seed)
        self._up = self._down = np.empty(0, dtype=np.uint64)
        self._probes = rng.integers(0, cfg.num_perm, size=(cfg.num_perm, cfg.num_perm))
        self._bins = cfg.num_perm
        self._shingle = cfg.shingle
        self._min_words = max(cfg.min_tokens, cfg.shingle)

    def signatures(self, texts: Sequence[str]) -> list[NDArray[np.uint32] | None]:
        """One signature per text; None for a text with fewer words than min_tokens."""
        tables: list[NDArray[np.uint64]] = []
        signed: list[NDArray[np.bool_]] = []
        ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
        start = 0
        while start < len(texts):
            # As many texts as fit in _CHUNK_CHARS, and at least one.
            before = int(ends[start - 1]) if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, before + self._CHUNK_CHARS, side="right")))
            table, long_enough = self._minimums(texts[start:stop])
            tables.append(table[long_enough])
            signed.append(long_enough)
            start = stop
        result: list[NDArray[np.uint32] | None] = [None] * len(texts)
        if tables:  # densified all at once: its steps cost per call more than per row
            rows = self._densify(np.concatenate(tables))
            for row, text in enumerate(np.flatnonzero(np.concatenate(signed)).tolist()):
                result[text] = rows[row]
        return result

    def _minimums(self, texts: Sequence[str]) -> tuple[NDArray[np.uint64], NDArray[np.bool_]]:
        """(texts, bins): the least 32-bit n-gram hash in each bin (_EMPTY when none); and which
        texts have enough words to be signed."""
        words, counts = self._words(texts)
        text_of_word = np.repeat(np.arange(len(texts)), counts)
        grams, text_of_gram = self._grams(words, text_of_word)
        bins = ((grams >> _U64(32)) * _U64(self._bins)) >> _U64(32)
        table = np.full(len(texts) * self._bins, self._EMPTY, dtype=np.uint64)
        np.minimum.at(table, text_of_gram * self._bins + bins.astype(np.intp), grams & _U64(0xFFFFFFFF))
        return table.reshape(len(texts), self._bins), counts >= self._min_words

    def _densify(self, table: NDArray[np.uint64]) -> NDArray[np.uint32]:
        """Fill each empty bin from the first non-empty bin in its fixed probe sequence (random
        bins first, then the bins to its right, which ends the search for any non-empty row).
        Only the empty bins are looked at: a few in a hundred."""
        filled = table.astype(np.uint32)
        rows, bins = np.nonzero(table == self._EMPTY)
        attempt = 0
        while len(rows):
            if attempt < self._bins:
                source = self._probes[attempt][bins]
            else:
                source = (bins + attempt - self._bins + 1) % self._bins
            borrowed = table[rows, source]
            take = borrowed != self._EMPTY
            filled[rows[take], bins[take]] = borrowed[take]
            rows, bins = rows[~take], bins[~take]
            attempt += 1
        return filled

    def _words(self, texts: Sequence[str]) -> tuple[NDArray[np.uint64], NDArray[np.intp]]:
        """A 64-bit hash per word (lower-cased), in text order, and how many words each text has.

        A word's hash is sum(byte_i * g**position_i) * g**-start: polynomial in the bytes, with the
        word's start divided out (g is odd, so invertible mod 2**64) to make it position-free. The
        sums are differences of one running sum (np.add.reduceat is 3x slower)."""
        blob, separators = _joined_bytes(texts)
        coded = np.frombuffer(blob.translate(_WORD_CODES), dtype=np.uint8)
        is_word = coded != 0
        begins = is_word.copy()
        begins[1:] &= ~is_word[:-1]
        firsts = np.flatnonzero(begins)
        up, down = self._powers(len(coded))
        running = np.empty(len(coded) + 1, dtype=np.uint64)  # in place: these are the largest arrays here
        running[0] = 0
        np.multiply(coded, up, out=running[1:], dtype=np.uint64)
        np.cumsum(running[1:], out=running[1:])
        # A word's sum runs on over the non-word bytes after it, which add zeros.
        hashes = np.diff(running[np.append(firsts, len(coded))]) * down[firsts]
        counts = np.diff(np.searchsorted(firsts, separators), prepend=0, append=len(firsts))
        return hashes, counts

    def _powers(self, length: int) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
        """g**i and g**-i for i < length (wrapping uint64 products), grown on demand."""
        if len(self._up) < length:
            size = 1 << max(length - 1, 1).bit_length()
            self._up = np.cumprod(np.full(size, _GROWTH, dtype=np.uint64), dtype=np.uint64) * _U64(_GROWTH_INVERSE)
            self._down = np.cumprod(np.full(size, _GROWTH_INVERSE, dtype=np.uint64), dtype=np.uint64) * _U64(_GROWTH)
        return self._up[:length], self._down[:length]

    def _grams(
        self, words: NDArray[np.uint64], text_of_word: NDArray[np.intp]
    ) -> tuple[NDArray[np.uint64], NDArray[np.intp]]:
        """Well-mixed 64-bit hashes of the word n-grams that lie within one text, and their texts."""
        count = len(words) - self._shingle + 1
        if count <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.intp)
        grams = words[:count].copy()
        for k in range(1, self._shingle):
            grams *= _U64(0x9E3779B97F4A7C15)
            grams += words[k : k + count]
        within = text_of_word[:count] == text_of_word[self._shingle - 1 :]
        grams = grams[within]
        for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):  # spread every bit
            grams ^= grams >> _U64(33)
            grams *= _U64(multiplier)
        grams ^= grams >> _U64(33)
        return grams, text_of_word[:count][within]


def _joined_bytes(texts: Sequence[str]) -> tuple[bytes, NDArray[np.intp]]:
    """The texts with separators made spaces, joined by NUL as UTF-8, lower-cased unless ASCII (which
    _WORD_CODES lower-cases); and the offsets of those NULs (a NUL inside a text is no word byte, so
    it cannot be mistaken for one)."""
    joined = "\0".join(texts)
    if joined.isascii():  # nothing to translate: 5x faster than piece by piece
        blob, lengths = joined.encode("ascii"), [len(text) for text in texts]
    else:
        pieces = [text.lower().translate(_PUNCTUATION).encode() for text in texts]
        blob, lengths = b"\0".join(pieces), [len(piece) for piece in pieces]
    separators: NDArray[np.intp] = np.cumsum(np.array(lengths, dtype=np.intp) + 1)[:-1] - 1
    return blob, separators


# ---------------------------------------------------------------- LSH bands


@lru_cache(maxsize=64)
def _band_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) whose S-curve best separates similarities below and above the threshold,
    weighting a missed pair twice as much as a needless comparison (comparisons are cheap here)."""
    below = np.linspace(0.0, threshold, 64)
    above = np.linspace(threshold, 1.0, 64)
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        false_pos = np.trapezoid(1 - (1 - below**rows) ** bands, below)
        false_neg = np.trapezoid((1 - above**rows) ** bands, above)
        cost = float(false_pos + 2 * false_neg)
        if best is None or cost < best[0]:
            best = (cost, bands, rows)
    assert best is not None
    return best[1], best[2]


class _Bands:
    """LSH: items whose signatures agree on every row of some band are compared. Per band, the keys
    are kept sorted in numpy arrays, so adding and looking up a batch is a few vectorised steps."""

    def __init__(self, cfg: DedupeConfig) -> None:
        self.bands, self.rows = _band_shape(cfg.threshold, cfg.num_perm)
        rng = np.random.default_rng([cfg.seed, 1])
        self._mul = rng.integers(0, 2**64, size=(self.bands, self.rows), dtype=np.uint64) | _U64(1)
        self._keys = [np.empty(0, dtype=np.uint64) for _ in range(self.bands)]
        self._ids = [np.empty(0, dtype=np.int64) for _ in range(self.bands)]

    def keys(self, sigs: NDArray[np.uint32]) -> NDArray[np.uint64]:
        """(bands, items): one key per band of each signature, sum(value * multiplier) over its rows
        (summed a row at a time: numpy sums along a short last axis 5x slower)."""
        banded = sigs[:, : self.bands * self.rows].reshape(len(sigs), self.bands, self.rows)
        keys = np.zeros((self.bands, len(sigs)), dtype=np.uint64)
        for row in range(self.rows):
            keys += banded[:, :, row].T * self._mul[:, row : row + 1]
        return keys

    def add(self, ids: NDArray[np.int64], sigs: NDArray[np.uint32], limit: int) -> _PairArrays:
        """File the items (oldest first); return (new id, earlier id) for each pair sharing a bucket,
        each new item meeting at most `limit` of the latest earlier items of a bucket."""
        if not len(ids):
            return _no_pairs()
        found = _PairSet(np.concatenate((self._ids[0], ids)))  # every indexed item is in every band
        for band, keys in enumerate(self.keys(sigs)):
            old_keys, old_ids = self._keys[band], self._ids[band]
            order = np.argsort(keys, kind="stable")  # ties stay in arrival order
            new_keys, new_ids = keys[order], ids[order]
            found.add(_pairs_with_old(new_keys, new_ids, old_keys, old_ids, limit))
            found.add(_pairs_within(new_keys, new_ids, limit))
            self._keys[band], self._ids[band] = _merged(old_keys, old_ids, new_keys, new_ids)
        return found.pairs()

    def remove(self, ids: Collection[int]) -> None:
        gone = np.fromiter(ids, dtype=np.int64, count=len(ids))
        for band in range(self.bands):
            keep = ~np.isin(self._ids[band], gone)
            self._keys[band], self._ids[band] = self._keys[band][keep], self._ids[band][keep]


# Candidate pairs as two aligned id arrays (a new item, an earlier one): millions of pairs as Python
# tuples cost seconds before a single one is compared.
_PairArrays = tuple[NDArray[np.int64], NDArray[np.int64]]


def _no_pairs() -> _PairArrays:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)


class _PairSet:
    """Distinct pairs of ids drawn from `ids`, each kept as one int64 (the two ids' ranks), so that
    dropping repeats is one sort. Near-identical items meet in every band: the repeats are dropped
    as they pile up, which bounds the memory."""

    _PILE = 1 << 20  # pairs gathered, beyond twice the distinct ones kept, before repeats are dropped

    def __init__(self, ids: NDArray[np.int64]) -> None:
        self._ids = np.sort(ids)
        self._keys: list[NDArray[np.int64]] = []
        self._piled = self._kept = 0

    def add(self, pairs: _PairArrays) -> None:
        first, second = (np.searchsorted(self._ids, side).astype(np.int64) for side in pairs)
        self._keys.append(first * len(self._ids) + second)
        self._piled += len(first)
        if self._piled > self._PILE + 2 * self._kept:  # grows with what is kept: each sort pays for itself
            self._keys = [_distinct(np.concatenate(self._keys))]
            self._piled = self._kept = len(self._keys[0])

    def pairs(self) -> _PairArrays:
        keys = _distinct(np.concatenate(self._keys)) if self._keys else np.empty(0, dtype=np.int64)
        first, second = np.divmod(keys, len(self._ids))
        return self._ids[first], self._ids[second]


def _joined(parts: Sequence[_PairArrays]) -> _PairArrays:
    if not parts:
        return _no_pairs()
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _pairs_with_old(
    keys: NDArray[np.uint64],
    ids: NDArray[np.int64],
    old_keys: NDArray[np.uint64],
    old_ids: NDArray[np.int64],
    limit: int,
) -> _PairArrays:
    high = np.searchsorted(old_keys, keys, side="right")
    low = np.maximum(np.searchsorted(old_keys, keys, side="left"), high - limit)
    counts = high - low
    if not counts.any():
        return _no_pairs()
    new = np.repeat(ids, counts)
    starts = np.repeat(low - np.cumsum(counts) + counts, counts)
    return new, old_ids[starts + np.arange(counts.sum())]


def _merged(
    old_keys: NDArray[np.uint64], old_ids: NDArray[np.int64], new_keys: NDArray[np.uint64], new_ids: NDArray[np.int64]
) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """Two key-sorted runs as one, each new key after the old keys equal to it (as a stable sort of
    old + new would order them, without sorting the old again)."""
    slots = np.searchsorted(old_keys, new_keys, side="right") + np.arange(len(new_keys))
    is_old = np.ones(len(old_keys) + len(new_keys), dtype=bool)
    is_old[slots] = False
    keys, ids = np.empty(len(is_old), dtype=np.uint64), np.empty(len(is_old), dtype=np.int64)
    keys[slots], ids[slots] = new_keys, new_ids
    keys[is_old], ids[is_old] = old_keys, old_ids
    return keys, ids


def _pairs_within(sorted_keys: NDArray[np.uint64], sorted_ids: NDArray[np.int64], limit: int) -> _PairArrays:
    """Pairs among the new items themselves (given sorted by key, ties in arrival order): each meets
    up to `limit` earlier ones of its bucket."""
    same_as_previous = np.concatenate(([False], sorted_keys[1:] == sorted_keys[:-1]))
    if not same_as_previous.any():
        return _no_pairs()
    return _runs_back(sorted_ids, same_as_previous, np.ones(len(sorted_ids), dtype=bool), limit)


def _runs_back(
    ids: NDArray[np.int64], same_as_previous: NDArray[np.bool_], is_new: NDArray[np.bool_], limit: int
) -> _PairArrays:
    """In runs of ids (a run continues where `same_as_previous`), pair each new id with the up to
    `limit` ids just before it in its run."""
    positions = np.arange(len(ids))
    run_start = np.maximum.accumulate(np.where(same_as_previous, 0, positions))
    rank = positions - run_start
    new: list[NDArray[np.int64]] = []
    old: list[NDArray[np.int64]] = []
    for back in range(1, min(limit, int(rank.max(initial=0))) + 1):
        later = np.flatnonzero((rank >= back) & is_new)
        new.append(ids[later])
        old.append(ids[later - back])
    return _joined(list(zip(new, old, strict=True)))


# ---------------------------------------------------------------- clusters


@dataclass(frozen=True, slots=True)
class AddStats:
    """How much comparing one `Index.add` did: what the speed of clustering depends on."""

    items: int = 0  # items newly indexed
    candidates: int = 0  # distinct pairs offered by the identity index and the LSH buckets
    compared: int = 0  # candidate pairs left by the vetoes that run on whole arrays of pairs
    edges: int = 0  # pairs found to be one story: each is one attempt to merge two clusters


@dataclass(slots=True, eq=False)
class _Profile:
    """What the vetoes read of a whole cluster, so two clusters are checked against each other in a
    few set operations rather than one veto per pair of members (two 200-item clusters: 40,000)."""

    sources: set[str] = field(default_factory=set)
    earliest: float | None = None
    latest: float | None = None
    repos: set[str] = field(default_factory=set)
    # The distinct non-empty tuples among the members: a member naming nothing is vetoed by nothing.
    papers: set[tuple[str, ...]] = field(default_factory=set)
    releases: set[tuple[str, ...]] = field(default_factory=set)
    versions: set[tuple[str, ...]] = field(default_factory=set)
    years: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def of(cls, members: Iterable[_Entry]) -> _Profile:
        profile = cls()
        for member in members:
            profile.add(member)
        return profile

    def add(self, entry: _Entry) -> None:
        self.sources.add(entry.source)
        self._span(entry.at, entry.at)
        if entry.repo is not None:
            self.repos.add(entry.repo)
        for kept, named in zip(self._names(), (entry.papers, entry.releases, entry.versions, entry.years), strict=True):
            if named:
                kept.add(named)

    def absorb(self, other: _Profile) -> None:
        self.sources |= other.sources
        self._span(other.earliest, other.latest)
        self.repos |= other.repos
        for kept, named in zip(self._names(), other._names(), strict=True):
            kept |= named

    def vetoes(self, other: _Profile, window: float) -> bool:
        """Whether `_vetoed` holds for some pair of members across the two clusters."""
        if not self.sources.isdisjoint(other.sources):
            return True
        if self._too_far_apart(other, window):
            return True
        if self.repos and other.repos and len(self.repos | other.repos) > 1:
            return True
        return any(
            not _shared(x, y)
            for mine, theirs in zip(self._names(), other._names(), strict=True)
            for x in mine
            for y in theirs
        )

    def _too_far_apart(self, other: _Profile, window: float) -> bool:
        # The widest pair across two clusters is one's latest with the other's earliest.
        if self.earliest is None or self.latest is None or other.earliest is None or other.latest is None:
            return False
        return max(self.latest - other.earliest, other.latest - self.earliest) > window

    def _span(self, earliest: float | None, latest: float | None) -> None:
        if earliest is not None:
            self.earliest = earliest if self.earliest is None else min(self.earliest, earliest)
        if latest is not None:
            self.latest = latest if self.latest is None else max(self.latest, latest)

    def _names(self) -> tuple[set[tuple[str, ...]], ...]:
        return self.papers, self.releases, self.versions, self.years


@dataclass(slots=True, eq=False)
class _Cluster:
    id: int | None  # None until the add() that created it settles
    members: list[_Entry]
    known: _Profile | None = None  # computed when first compared, then kept up to date

    def profile(self) -> _Profile:
        if self.known is None:
            self.known = _Profile.of(self.members)
        return self.known

    def add(self, entry: _Entry) -> None:
        self.members.append(entry)
        if self.known is not None:
            self.known.add(entry)

    def absorb(self, other: _Cluster) -> None:
        self.members.extend(other.members)
        if self.known is not None:
            self.known.absorb(other.profile())

    def remove(self, entry: _Entry) -> None:
        self.members.remove(entry)
        self.known = None


class Index:
    """Story clusters kept up to date as items arrive.

    Each `add` hashes only the items it is given and compares them only with the indexed items that
    share an identity or an LSH bucket: each new item meets at most `max_bucket` earlier items per
    identity and per band, so the work grows linearly with the items even when hundreds of them share
    a link or repeat one text. Memory grows with the items indexed: `forget` drops items too old to
    merge with anything new (older than the window before the oldest new item).
    """

    def __init__(self, cfg: DedupeConfig | None = None, *, never_merge: Collection[frozenset[int]] = ()) -> None:
        self.cfg = cfg or DedupeConfig()
        self.last_add = AddStats()
        self._hasher = _MinHasher(self.cfg)
        self._bands = _Bands(self.cfg)
        self._window = self.cfg.window.total_seconds()
        self._never: set[frozenset[int]] = set()
        self._split_from: dict[int, set[int]] = {}  # the pairs in _never, by either item
        self._entries: dict[int, _Entry] = {}
        self._by_token: dict[str, list[int]] = {}
        self._cluster_of: dict[int, _Cluster] = {}
        self._clusters: dict[int, _Cluster] = {}  # settled clusters by id
        self._keep_apart(never_merge)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._entries

    def add(self, items: Sequence[Candidate], *, existing: Mapping[int, int] | None = None) -> dict[int, int]:
        """Index `items`; return item id -> cluster id for each of them. `existing` gives the stored
        cluster of items clustered before; items already in this index keep theirs."""
        fresh = self._fresh(items)
        self._seed(fresh, existing or {})
        cluster_of = self._cluster_of
        for a, b in zip(*self._edges(fresh), strict=True):  # lazily: a list of tuples costs seconds of GC
            if cluster_of[a] is not cluster_of[b]:
                self._merge(cluster_of[a], cluster_of[b])
        self._settle(fresh)
        return {c.id: self.cluster_of(c.id) for c in items}

    def cluster_of(self, item_id: int) -> int:
        cluster_id = self._cluster_of[item_id].id
        assert cluster_id is not None, "clusters are settled before add() returns"
        return cluster_id

    def members(self, cluster_id: int) -> list[int]:
        return sorted(e.id for e in self._clusters[cluster_id].members)

    def assignment(self) -> dict[int, int]:
        """Every indexed item id -> its cluster id."""
        return {item_id: self.cluster_of(item_id) for item_id in self._entries}

    def split(self, item_id: int) -> dict[int, int]:
        """An editor's split: the item leaves its cluster for good. Returns the changed assignments."""
        cluster = self._cluster_of[item_id]
        before = {e.id: self.cluster_of(e.id) for e in cluster.members}
        changed, pairs = split_out(before, item_id)
        self._keep_apart(pairs)
        if changed:
            entry = self._entries[item_id]
            del self._clusters[before[item_id]]
            others = [m for m in cluster.members if m is not entry]
            self._place(_Cluster(None, others), changed.get(others[0].id, before[others[0].id]))
            self._place(_Cluster(None, [entry]), item_id)
        return changed

    def forget(self, before: datetime) -> int:
        """Drop items published before `before` (undated items stay); returns how many went."""
        cutoff = _timestamp(before)
        old = [e for e in self._entries.values() if e.at is not None and cutoff is not None and e.at < cutoff]
        for entry in old:
            self._drop(entry)
        self._bands.remove([e.id for e in old if e.sig is not None])
        return len(old)

    # -- adding

    def _fresh(self, items: Sequence[Candidate]) -> list[_Entry]:
        """Entries for the items not indexed yet, oldest first, with their signatures."""
        seen: set[int] = set()
        todo: list[Candidate] = []
        for item in items:
            if item.id in seen:
                raise ValueError(f"dedupe: item id {item.id} appears twice in one batch")
            seen.add(item.id)
            if item.id not in self._entries:
                todo.append(item)
        entries: list[_Entry] = []
        for start in range(0, len(todo), 2048):  # texts built a slice at a time: they are large
            batch = todo[start : start + 2048]
            signatures = self._hasher.signatures([_text(c) for c in batch])
            entries.extend(_entry(c, self.cfg, sig) for c, sig in zip(batch, signatures, strict=True))
        entries.sort(key=lambda e: (e.at is None, e.at or 0.0, e.id))
        return entries

    def _seed(self, fresh: list[_Entry], existing: Mapping[int, int]) -> None:
        """Put each fresh item in its stored cluster (unless an editor split it from a member since),
        or alone in a new one. The item whose id names a stored cluster goes first: it owns the id."""
        for entry in sorted(fresh, key=lambda e: (existing.get(e.id) != e.id, e.id)):
            self._entries[entry.id] = entry
            stored = existing.get(entry.id)
            home = self._clusters.get(stored) if stored is not None else None
            if home is not None and not self._split_from_any(entry.id, home):
                home.add(entry)
                self._cluster_of[entry.id] = home
            elif stored is not None and home is None:
                self._place(_Cluster(None, [entry]), stored)
            else:
                self._cluster_of[entry.id] = _Cluster(None, [entry])

    def _edges(self, fresh: list[_Entry]) -> tuple[list[int], list[int]]:
        """Every same-story pair between a fresh item and an earlier (indexed or fresh) one, as
        lower ids and higher ids, strongest first (ties by ids). The vetoes most pairs fail (one source,
        too far apart in time) run on whole arrays of pairs; only the pairs left are looked at one
        by one."""
        by_identity, crowded = self._identity_pairs(fresh)
        by_text = _no_pairs()
        hashed = [e for e in fresh if e.sig is not None]
        if hashed:
            ids = np.fromiter((e.id for e in hashed), dtype=np.int64, count=len(hashed))
            sigs = np.stack([e.sig for e in hashed if e.sig is not None])
            by_text = self._bands.add(ids, sigs, self.cfg.max_bucket)
        pairs = _Pairs.of(self._entries, by_identity, by_text)
        strength = pairs.strengths(self.cfg, crowded)
        found = np.flatnonzero(strength > 0.0)
        if self._never:
            found = found[
                [not self._split_apart(pairs.entries[pairs.lo[k]], pairs.entries[pairs.hi[k]]) for k in found.tolist()]
            ].astype(np.intp)
        lo, hi = pairs.ids[pairs.lo[found]], pairs.ids[pairs.hi[found]]
        order = np.lexsort((hi, lo, -strength[found]))
        self.last_add = AddStats(len(fresh), len(pairs.lo), pairs.compared, len(found))
        return lo[order].tolist(), hi[order].tolist()

    def _identity_pairs(self, fresh: list[_Entry]) -> tuple[_PairArrays, set[str]]:
        """(new id, earlier id) for the items sharing an identity token, each new holder meeting the
        latest `max_bucket` earlier holders; and the tokens held by more items than that (a pair
        sharing one of those may not be among the pairs)."""
        limit = self.cfg.max_bucket
        joining: dict[str, list[int]] = {}
        for entry in fresh:
            for token in entry.ids:
                joining.setdefault(token, []).append(entry.id)
        run_ids: list[int] = []
        run_continues: list[bool] = []
        run_new: list[bool] = []
        crowded: set[str] = set()
        for token, new in joining.items():
            holders = self._by_token.setdefault(token, [])
            if holders or len(new) > 1:
                earlier = holders[-limit:]
                run_ids += earlier + new
                run_continues += [False] + [True] * (len(earlier) + len(new) - 1)
                run_new += [False] * len(earlier) + [True] * len(new)
            holders += new
            if len(holders) > limit:
                crowded.add(token)
        if not run_ids:
            return _no_pairs(), crowded
        pairs = _runs_back(np.array(run_ids, dtype=np.int64), np.array(run_continues), np.array(run_new), limit)
        return pairs, crowded

    def _merge(self, a: _Cluster, b: _Cluster) -> None:
        if a is b or (a.id is not None and b.id is not None) or not self._compatible(a, b):
            return
        bigger_new = a.id is None and len(b.members) > len(a.members)
        keep, gone = (b, a) if b.id is not None or bigger_new else (a, b)
        keep.absorb(gone)
        for member in gone.members:
            self._cluster_of[member.id] = keep

    def _compatible(self, a: _Cluster, b: _Cluster) -> bool:
        """Whether every pair across the two clusters could be one story (so no cluster holds two
        items of one source, or spans more than the window)."""
        if a.profile().vetoes(b.profile(), self._window):
            return False
        smaller, other = (a, b) if len(a.members) <= len(b.members) else (b, a)
        return not (self._never and any(self._split_from_any(m.id, other) for m in smaller.members))

    def _keep_apart(self, pairs: Iterable[frozenset[int]]) -> None:
        for pair in pairs:
            self._never.add(pair)
            if len(pair) == 2:
                a, b = pair
                self._split_from.setdefault(a, set()).add(b)
                self._split_from.setdefault(b, set()).add(a)

    def _split_apart(self, a: _Entry, b: _Entry) -> bool:
        return bool(self._never) and frozenset((a.id, b.id)) in self._never

    def _split_from_any(self, item_id: int, cluster: _Cluster) -> bool:
        """Whether an editor split the item from a member of the cluster."""
        return any(self._cluster_of.get(other) is cluster for other in self._split_from.get(item_id, ()))

    def _settle(self, fresh: Iterable[_Entry]) -> None:
        """Give each new cluster an id: the smallest member id not naming another cluster."""
        for entry in fresh:
            cluster = self._cluster_of[entry.id]
            if cluster.id is not None:
                continue
            free = [e.id for e in cluster.members if e.id not in self._clusters]
            if not free:
                raise ValueError(f"dedupe: existing cluster ids {sorted(e.id for e in cluster.members)} collide")
            self._place(cluster, min(free))

    def _place(self, cluster: _Cluster, cluster_id: int) -> None:
        cluster.id = cluster_id
        self._clusters[cluster_id] = cluster
        for member in cluster.members:
            self._cluster_of[member.id] = cluster

    # -- forgetting

    def _drop(self, entry: _Entry) -> None:
        del self._entries[entry.id]
        for token in entry.ids:
            holders = self._by_token[token]
            holders.remove(entry.id)
            if not holders:
                del self._by_token[token]
        cluster = self._cluster_of.pop(entry.id)
        cluster.remove(entry)
        if not cluster.members and cluster.id is not None:
            del self._clusters[cluster.id]


@dataclass(slots=True, eq=False)
class _Pairs:
    """The distinct candidate pairs of one add, as positions (lo < hi, in id order) into `entries`,
    the items they involve; the first `shared` pairs came from the identity index."""

    ids: NDArray[np.int64]
    entries: list[_Entry]
    lo: NDArray[np.intp]
    hi: NDArray[np.intp]
    shared: int
    compared: int = 0

    @classmethod
    def of(cls, entries: Mapping[int, _Entry], by_identity: _PairArrays, by_text: _PairArrays) -> _Pairs:
        ends = np.concatenate((*by_identity, *by_text))
        ids, positions = np.unique(ends, return_inverse=True)
        positions = positions.reshape(-1)
        split = np.cumsum([len(by_identity[0])] * 2 + [len(by_text[0])])
        new_id, old_id, new_text, old_text = np.split(positions, split)
        size = max(len(ids), 1)
        identity_keys = _distinct(np.minimum(new_id, old_id) * size + np.maximum(new_id, old_id))
        text_keys = _distinct(np.minimum(new_text, old_text) * size + np.maximum(new_text, old_text))
        text_only = text_keys[~np.isin(text_keys, identity_keys, assume_unique=True, kind="sort")]
        keys = np.concatenate((identity_keys, text_only))
        lo, hi = np.divmod(keys, size)
        return cls(ids, [entries[i] for i in ids.tolist()], lo.astype(np.intp), hi.astype(np.intp), len(identity_keys))

    def strengths(self, cfg: DedupeConfig, crowded: Collection[str]) -> NDArray[np.float64]:
        """`_strength` of every pair: 2.0 for a shared identity, the similarity for a near-duplicate,
        0.0 when not the same story."""
        strength = np.zeros(len(self.lo))
        left = np.flatnonzero(~self._vetoed(cfg))
        self.compared = len(left)
        identity = left < self.shared
        strength[left[identity]] = 2.0
        text = left[~identity]
        if crowded:  # a text pair may share an identity whose holders were too many to pair them
            text = text[[not self._shared_identity(k, strength) for k in text.tolist()]].astype(np.intp)
        return self._near_duplicates(text, strength, cfg)

    def _vetoed(self, cfg: DedupeConfig) -> NDArray[np.bool_]:
        """`_vetoed` of every pair: the common vetoes on arrays, the rest one by one (rarely needed)."""
        sources, lo, hi = _codes(e.source for e in self.entries), self.lo, self.hi
        vetoed: NDArray[np.bool_] = sources[lo] == sources[hi]
        at = np.array([np.nan if e.at is None else e.at for e in self.entries])
        with np.errstate(invalid="ignore"):  # undated items (NaN) are never too far apart
            vetoed |= np.abs(at[lo] - at[hi]) > cfg.window.total_seconds()
        repos = _codes(e.repo for e in self.entries)
        vetoed |= (repos[lo] >= 0) & (repos[hi] >= 0) & (repos[lo] != repos[hi])
        unsure = np.zeros(len(lo), dtype=bool)
        for named in (
            [e.papers for e in self.entries],
            [e.releases for e in self.entries],
            [e.versions for e in self.entries],
            [e.years for e in self.entries],
        ):
            codes = _codes(named)
            single = np.fromiter((len(n) == 1 for n in named), dtype=bool, count=len(named))
            differ = (codes[lo] >= 0) & (codes[hi] >= 0) & (codes[lo] != codes[hi])
            vetoed |= differ & single[lo] & single[hi]  # two different single names: nothing shared
            unsure |= differ & ~(single[lo] & single[hi])
        for k in np.flatnonzero(unsure & ~vetoed).tolist():
            vetoed[k] = _vetoed(self.entries[lo[k]], self.entries[hi[k]], cfg)
        return vetoed

    def _shared_identity(self, k: int, strength: NDArray[np.float64]) -> bool:
        if _shared(self.entries[self.lo[k]].ids, self.entries[self.hi[k]].ids):
            strength[k] = 2.0
            return True
        return False

    def _near_duplicates(
        self, text: NDArray[np.intp], strength: NDArray[np.float64], cfg: DedupeConfig
    ) -> NDArray[np.float64]:
        if not len(text):
            return strength
        signed = _distinct(np.concatenate((self.lo[text], self.hi[text])))
        sigs = np.stack([_signature(self.entries[i]) for i in signed.tolist()])
        rows_lo, rows_hi = np.searchsorted(signed, self.lo[text]), np.searchsorted(signed, self.hi[text])
        similarity = _agreement(sigs, rows_lo, rows_hi) / sigs.shape[1]
        similar = np.flatnonzero(similarity >= cfg.threshold)
        if not len(similar):
            return strength
        titles = _codes(e.title for e in self.entries)
        same_title = titles[self.lo[text[similar]]] == titles[self.hi[text[similar]]]  # so they agree
        strength[text[similar[same_title]]] = similarity[similar[same_title]]
        words: dict[int, set[str]] = {}  # each title read once, however many pairs it is in
        for k in similar[~same_title].tolist():
            pair = text[k]
            if _words_agree(self._title_words(self.lo[pair], words), self._title_words(self.hi[pair], words)):
                strength[pair] = similarity[k]
        return strength

    def _title_words(self, position: int, known: dict[int, set[str]]) -> set[str]:
        if position not in known:
            known[position] = _content_words(self.entries[position].title)
        return known[position]


def _distinct(values: NDArray[_Int]) -> NDArray[_Int]:
    """The distinct values, sorted. (np.unique without return_inverse hashes instead, 15x slower here.)"""
    ordered = np.sort(values)
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def _signature(entry: _Entry) -> NDArray[np.uint32]:
    assert entry.sig is not None, "only hashed items share an LSH bucket"
    return entry.sig


def _codes(values: Iterable[Hashable]) -> NDArray[np.int64]:
    """One integer per value, equal for equal values; -1 for a value naming nothing (None, "", ())."""
    seen: dict[Hashable, int] = {}
    return np.array([seen.setdefault(v, len(seen)) if v else -1 for v in values], dtype=np.int64)


def _agreement(sigs: NDArray[np.uint32], a: NDArray[np.intp], b: NDArray[np.intp]) -> NDArray[np.int64]:
    """How many signature values rows a[i] and b[i] share, a slice of pairs at a time (bounded memory)."""
    shared = np.empty(len(a), dtype=np.int64)
    step = 1 << 14
    for start in range(0, len(a), step):
        part = slice(start, start + step)
        shared[part] = np.count_nonzero(sigs[a[part]] == sigs[b[part]], axis=1)
    return shared


# ---------------------------------------------------------------- the functions other code calls


def same_story(a: Candidate, b: Candidate, cfg: DedupeConfig | None = None) -> bool:
    """The pairwise rule, without LSH: a shared identity or near-duplicate text, and no veto."""
    cfg = cfg or DedupeConfig()
    if a.id == b.id:
        return True
    sig_a, sig_b = _MinHasher(cfg).signatures([_text(a), _text(b)])
    return _strength(_entry(a, cfg, sig_a), _entry(b, cfg, sig_b), cfg) > 0.0


def cluster(
    items: Sequence[Candidate],
    cfg: DedupeConfig | None = None,
    *,
    existing: Mapping[int, int] | None = None,
    never_merge: Collection[frozenset[int]] = (),
) -> dict[int, int]:
    """Item id -> cluster id for every item: the stored cluster when an item joins one (`existing`),
    else the smallest member id. Two stored clusters never merge; pairs in `never_merge` never meet."""
    return Index(cfg, never_merge=never_merge).add(items, existing=existing)


def split_out(assignment: Mapping[int, int], item_id: int) -> tuple[dict[int, int], set[frozenset[int]]]:
    """An editor takes `item_id` out of its cluster. Given the cluster's members (item id -> cluster
    id), returns the assignments that change (the item alone under its own id; the rest renumbered
    to their smallest id if the cluster was named after the item) and the pairs to never merge."""
    if item_id not in assignment:
        raise ValueError(f"dedupe: item {item_id} is not in the cluster given")
    cluster_id = assignment[item_id]
    rest = sorted(i for i, c in assignment.items() if c == cluster_id and i != item_id)
    if not rest:
        return {}, set()
    changed = {item_id: item_id}
    if cluster_id == item_id:
        changed |= dict.fromkeys(rest, rest[0])
    return changed, {frozenset((item_id, other)) for other in rest}
