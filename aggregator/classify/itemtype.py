"""Deterministic type tags: the `[Type]` in front of every newsletter line.

A stored item's source kind decides first: arXiv items are Papers (or Technical reports), release-feed
items are releases graded by their version. Everything else, and every labeled example, follows these
rules, first match wins (editors can override any tag in review):

1. Technical report  the title or summary says "technical report", "tech report" or "system card"
2. Conference        a title that is only a name and a year ("ICML 2024", "AutoML-Conf 2023")
3. Paper             an arXiv item, or a link to a paper host (arXiv, OpenReview, ACL Anthology, ...)
4. Major / Minor / Patch Release
                     an item from a release feed, or a link to a GitHub release tag
5. Package           a repository or package page (GitHub repo, PyPI, npm, crates.io, Hugging Face)
6. Major / Minor / Patch Release
                     a title that is a name and a version ("openai-python 1.3.1", "JAX v0.4 released")
7. Conference talk   a talk, keynote or lecture at a conference, or a conference video host
8. Conference        a conference, symposium, workshop, summit or call for papers in the title
9. Blog              everything else

Versions: "3", "3.0", "v3.0.0" are Major; "4.36.0" Minor; "4.36.1" Patch. A pre-release suffix
("-rc1", "b2", ".dev0", "-alpha") keeps the type and is reported by `is_prerelease`, so the newsletter
line stays in its own shape ("[Minor Release] ...") while the flag travels on Item.prerelease.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from aggregator.types import Item

PAPER = "Paper"
TECHNICAL_REPORT = "Technical report"
BLOG = "Blog"
PACKAGE = "Package"
MAJOR_RELEASE = "Major Release"
MINOR_RELEASE = "Minor Release"
PATCH_RELEASE = "Patch Release"
CONFERENCE = "Conference"
CONFERENCE_TALK = "Conference talk"

ITEM_TYPES: tuple[str, ...] = (
    PAPER,
    TECHNICAL_REPORT,
    BLOG,
    PACKAGE,
    MAJOR_RELEASE,
    MINOR_RELEASE,
    PATCH_RELEASE,
    CONFERENCE,
    CONFERENCE_TALK,
)

# Hosts whose pages are papers (host suffix match, so "www." and subdomains count).
_PAPER_HOSTS = frozenset(
    {
        "arxiv.org",
        "openreview.net",
        "aclanthology.org",
        "aclweb.org",
        "proceedings.neurips.cc",
        "papers.nips.cc",
        "proceedings.mlr.press",
        "jmlr.org",
        "biorxiv.org",
        "medrxiv.org",
        "ssrn.com",
        "openaccess.thecvf.com",
        "ojs.aaai.org",
        "ijcai.org",
        "dl.acm.org",
        "semanticscholar.org",
    }
)
# Hosts where only some paths are papers: host -> path prefixes.
_PAPER_PATHS = {
    "huggingface.co": ("/papers/",),
    "paperswithcode.com": ("/paper/",),
    "ieeexplore.ieee.org": ("/document/", "/abstract/"),
    "nature.com": ("/articles/s",),  # "/articles/d41586-..." are news pieces
    "science.org": ("/doi/",),
}
_TECH_REPORT = re.compile(r"\b(technical report|tech\.? report|system card)\b", re.IGNORECASE)

# Repository and package pages: host -> how many path segments name one package.
_PACKAGE_HOSTS = {
    "github.com": 2,
    "gitlab.com": 2,
    "codeberg.org": 2,
    "bitbucket.org": 2,
    "pypi.org": 2,  # /project/<name>
    "npmjs.com": 2,  # /package/<name>
    "crates.io": 2,  # /crates/<name>
    "huggingface.co": 2,  # /<owner>/<model>
}
_PACKAGE_PREFIX = {"pypi.org": "project", "npmjs.com": "package", "crates.io": "crates"}
# Pages on those hosts that are not a package even with the right number of segments.
_NOT_PACKAGE_FIRST_SEGMENT = frozenset(
    {"papers", "blog", "docs", "spaces", "datasets", "learn", "topics", "orgs", "sponsors", "features"}
)
# Sub-pages of a repository that still describe the package itself.
_REPO_SUBPAGES = frozenset({"tree", "wiki", "blob"})

_CONFERENCE_WORDS = re.compile(
    r"\b(conference|symposium|workshop|summit|call for papers|cfp|proceedings|deadlines?)\b",
    re.IGNORECASE,
)
_TALK_WORDS = re.compile(
    r"\b(talk|keynote|lecture|presentation|panel|fireside chat|invited speaker|oral)\b", re.IGNORECASE
)
_KNOWN_CONFERENCES = re.compile(
    r"\b(neurips|nips|icml|iclr|cvpr|iccv|eccv|acl|emnlp|naacl|eacl|coling|aaai|ijcai|kdd|"
    r"interspeech|icassp|iros|icra|corl|aistats|uai|colt|wacv|bmvc|siggraph|gtc|re:invent)\b",
    re.IGNORECASE,
)
_TALK_HOSTS = frozenset({"slideslive.com", "videolectures.net"})
# "ICML 2024", "RSS 2021", "AutoML-Conf 2023": a title that is only a name and a year.
_EVENT_TITLE = re.compile(r"^\s*[A-Z][\w&+\-]{1,20}(\s+[\w&+\-]{1,20})?\s+'?(19|20)\d{2}\s*$")

# A version: numbers with dots, then an optional pre-release suffix, optionally after a "v".
_VERSION = re.compile(
    r"(?<![\w.])v?(?P<nums>\d+(?:\.\d+){0,3})"
    r"(?P<pre>(?:[-.]?(?:rc|alpha|beta|dev|pre|preview|nightly)[-.]?\d*|(?:a|b)\d+)*)"
    r"(?P<rest>[+][\w.]+)?(?![\w.])",
    re.IGNORECASE,
)
# A title that is a name followed by a version, e.g. "openai-python 1.3.1", "JAX v0.4.1 released".
_RELEASE_TITLE = re.compile(
    r"^\s*(?:(?:release\s+)?[\w.\-/ ]{0,40}?[\s:@])?v?(?P<version>\d+\.\d+(?:\.\d+){0,2}"
    r"(?:[-.]?(?:rc|alpha|beta|dev|pre|post)[-.]?\d*|(?:a|b)\d+)?)"
    r"(?:\s+(?:is\s+)?(?:out|released|release))?\s*$",
    re.IGNORECASE,
)
_GITHUB_RELEASE_PATH = re.compile(r"^/[^/]+/[^/]+/releases/tag/(?P<tag>[^/?#]+)")


@dataclass(frozen=True, slots=True)
class Version:
    """A release tag read as numbers: major.minor.patch (missing parts are 0)."""

    major: int
    minor: int
    patch: int
    prerelease: bool
    parts: int  # how many numbers the tag had: "3.0" has 2


def parse_version(version: str | None) -> Version | None:
    """Read a release tag ("v4.36.0", "jax-v0.4.30", "2.0.0rc1"); None when it holds no version."""
    if not version:
        return None
    match = _VERSION.search(version.strip())
    if match is None:
        return None
    numbers = [int(n) for n in match.group("nums").split(".")]
    padded = [*numbers, 0, 0][:3]
    prerelease = bool(match.group("pre")) or bool(re.search(r"(?i)(nightly|preview|alpha|beta)", version))
    return Version(padded[0], padded[1], padded[2], prerelease, len(numbers))


def release_type(version: str | None) -> str | None:
    """Major, Minor or Patch Release from a version string; None when there is no version in it."""
    parsed = parse_version(version)
    if parsed is None:
        return None
    if parsed.patch:
        return PATCH_RELEASE
    if parsed.minor:
        return MINOR_RELEASE
    return MAJOR_RELEASE


def is_prerelease(version: str | None) -> bool:
    """True for "2.0.0rc1", "v1.0.0-beta.2", "0.5.0.dev0" and the like."""
    parsed = parse_version(version)
    return parsed is not None and parsed.prerelease


def item_type(item: Item) -> str:
    """The type tag of a stored item: its source kind decides first (arXiv -> Paper, release feed ->
    a release by its version), then the same rules as for labeled examples."""
    if item.kind == "paper" or item.arxiv_id:
        return TECHNICAL_REPORT if _says_technical_report(item.title, item.summary_text) else PAPER
    if item.kind == "release" or item.version:
        # A release whose tag has no readable version ("nightly") is still a release; Minor is the usual case.
        return release_type(item.version) or _Link.parse(item.url).release() or MINOR_RELEASE
    return type_from_example(item.title, item.summary_text, item.url)


def type_from_example(title: str, summary: str, url: str) -> str:
    """The same rules for a labeled example, which has only a title, a summary and a link."""
    if _says_technical_report(title, summary):
        return TECHNICAL_REPORT
    if _EVENT_TITLE.match(title):
        return CONFERENCE
    link = _Link.parse(url)
    if link.is_paper():
        return PAPER
    release = link.release()
    if release:
        return release
    if link.is_package():
        return PACKAGE
    release = _release_from_title(title)
    if release:
        return release
    if link.is_talk_host() or _is_talk(title, summary):
        return CONFERENCE_TALK
    if _CONFERENCE_WORDS.search(title):
        return CONFERENCE
    return BLOG


@dataclass(frozen=True, slots=True)
class _Link:
    """A link read once: host without "www.", every dotted suffix of it, and the path."""

    host: str
    suffixes: frozenset[str]
    path: str

    @classmethod
    def parse(cls, url: str) -> _Link:
        host, path = split_link(url)  # a malformed link (bad IPv6 brackets) still gets a tag from its text
        return cls(host, _host_suffixes(host), path or "/")

    def is_paper(self) -> bool:
        if not self.suffixes.isdisjoint(_PAPER_HOSTS):
            return True
        return any(self.path.startswith(prefix) for prefix in _PAPER_PATHS.get(self.host, ()))

    def is_package(self) -> bool:
        segments_needed = _PACKAGE_HOSTS.get(self.host)
        if segments_needed is None:
            return False
        segments = [s for s in self.path.split("/") if s]
        if len(segments) < segments_needed or segments[0].lower() in _NOT_PACKAGE_FIRST_SEGMENT:
            return False
        prefix = _PACKAGE_PREFIX.get(self.host)
        if prefix is not None:
            return segments[0] == prefix
        if len(segments) == segments_needed:
            return True
        return segments[2] in _REPO_SUBPAGES and "CHANGELOG" not in self.path

    def is_talk_host(self) -> bool:
        return not self.suffixes.isdisjoint(_TALK_HOSTS)

    def release(self) -> str | None:
        """The release type of a GitHub release-tag link."""
        if self.host != "github.com":
            return None
        match = _GITHUB_RELEASE_PATH.match(self.path)
        return release_type(match.group("tag")) if match else None


@lru_cache(maxsize=1024)
def _host_suffixes(host: str) -> frozenset[str]:
    """Every dotted suffix of a host: blog.example.org, example.org, org. Cached: a feed's items
    share a host."""
    labels = host.split(".") if host else []
    return frozenset(".".join(labels[i:]) for i in range(len(labels)))


def _says_technical_report(title: str, summary: str) -> bool:
    """_TECH_REPORT on title and summary. Its case-insensitive scan costs ~25 us on a 1,200-character
    summary; every match holds "report" or "card", whose letters match no character but their own
    ASCII capitals, so a text without either in lower case is skipped in ~1 us."""
    text = f"{title}\n{summary}"
    lowered = text.lower()
    if "report" not in lowered and "card" not in lowered:
        return False
    return _TECH_REPORT.search(text) is not None


@lru_cache(maxsize=4096)
def split_link(url: str) -> tuple[str, str]:
    """(host in lower case without "www.", path) of a link; ("", "") when it is malformed. Cached:
    classifying reads each link of a batch (2,000 items) twice, for its type tag and its features."""
    try:
        parts = urlsplit(url.strip())
        return (parts.hostname or "").lower().removeprefix("www."), parts.path
    except ValueError:
        return "", ""


def _is_talk(title: str, summary: str) -> bool:
    if not _TALK_WORDS.search(title):
        return False
    context = f"{title}\n{summary}"
    return bool(_CONFERENCE_WORDS.search(context) or _KNOWN_CONFERENCES.search(context))


def _release_from_title(title: str) -> str | None:
    match = _RELEASE_TITLE.match(title)
    return release_type(match.group("version")) if match else None
