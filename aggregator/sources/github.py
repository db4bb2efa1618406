"""GitHub releases: the releases.atom feed of a repository -> RawEntry with repo and tag filled.

Tags are free text. Most are semver-like ("v4.36.0", "jax-v0.4.30", "pkg@1.2.3"), some are build
numbers ("b2345" in llama.cpp), so parse_version answers None rather than guess.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from aggregator.errors import ConfigError
from aggregator.parse import parse_feed
from aggregator.types import RawEntry, Source

_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")


def releases_url(repo: str) -> str:
    """The Atom feed of a repository's releases. `repo` is "owner/name"."""
    repo = repo.strip().strip("/")
    if not _REPO.fullmatch(repo) or repo.rsplit("/", 1)[1] in (".", ".."):
        raise ConfigError(f"github repo {repo!r} is not 'owner/name'")
    return f"https://github.com/{repo}/releases.atom"


def entries_from_releases(
    body: bytes, source: Source, *, url: str, headers: Mapping[str, str] | None = None
) -> list[RawEntry]:
    """The release feed's entries with repo and tag filled; a tag listed twice is kept once."""
    entries: list[RawEntry] = []
    seen: set[str] = set()
    for entry in parse_feed(body, source=source.name, url=url, headers=headers).entries:
        tag = tag_of(entry)
        if tag is not None and tag in seen:
            continue
        if tag is not None:
            seen.add(tag)
        entries.append(dataclasses.replace(entry, repo=source.repo or repo_of(entry.link), tag=tag))
    return entries


_GUID_TAG = re.compile(r"tag:github\.com,2008:Repository/\d+/(?P<tag>.+)")
_RELEASE_PATH = re.compile(r"/(?P<owner>[^/]+)/(?P<name>[^/]+)/releases/tag/(?P<tag>.+)")


def tag_of(entry: RawEntry) -> str | None:
    """The tag from the entry link (.../releases/tag/<tag>) or its id
    (tag:github.com,2008:Repository/123/<tag>)."""
    if entry.link:
        found = _RELEASE_PATH.search(urlsplit(entry.link).path)
        if found:
            return unquote(found.group("tag")).strip() or None
    if entry.guid:
        found = _GUID_TAG.fullmatch(entry.guid.strip())
        if found:
            return found.group("tag").strip() or None
    return None


def repo_of(link: str | None) -> str | None:
    """"owner/name" from a github.com release link."""
    if not link:
        return None
    parts = urlsplit(link)
    if (parts.hostname or "").lower() not in ("github.com", "www.github.com"):
        return None
    found = _RELEASE_PATH.match(parts.path)
    return f"{found.group('owner')}/{found.group('name')}" if found else None


# ---------------------------------------------------------------------------- versions


@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: str | None
    is_prerelease: bool


# A lazy prefix ("jax-", "pkg@", "release-"), an optional "v", then at least major.minor.
_VERSION = re.compile(r"(?P<prefix>.*?)[vV]?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?(?P<rest>.*)")
_MAJOR_ONLY = re.compile(r"[vV](?P<major>\d+)")
_PREFIX_ENDS = "-_/@ "
_NUMERIC_SUFFIX = re.compile(r"[\d.]*")  # "1.2.3.4": a fourth number, not a pre-release
_NOT_PRERELEASE = re.compile(r"(?:post|final|ga|stable|release|lts|hotfix|p)[\d.]*", re.IGNORECASE)


def parse_version(tag: str) -> Version | None:
    """Version of a release tag, or None when the tag is not a version (a build number, a name)."""
    tag = tag.strip()
    major_only = _MAJOR_ONLY.fullmatch(tag)
    if major_only:
        return Version(int(major_only.group("major")), 0, 0, None, False)
    found = _VERSION.fullmatch(tag)
    if found is None:
        return None
    prefix = found.group("prefix")
    if prefix and prefix[-1] not in _PREFIX_ENDS:
        return None
    prerelease = _prerelease_part(found.group("rest"))
    return Version(
        major=int(found.group("major")),
        minor=int(found.group("minor")),
        patch=int(found.group("patch") or 0),
        prerelease=prerelease,
        is_prerelease=prerelease is not None and not _NOT_PRERELEASE.fullmatch(prerelease),
    )


def _prerelease_part(rest: str) -> str | None:
    """"-rc.1" -> "rc.1", "rc1" -> "rc1"; build metadata ("+build.5") and a 4th number ignored."""
    part = rest.split("+", 1)[0].lstrip("-._")
    if not part or _NUMERIC_SUFFIX.fullmatch(part):
        return None
    return part


# Whole words only: "AlphaFold", "Betamax" and "ARC" are not pre-releases; "RC1" and ".dev0" are.
_PRERELEASE_WORDS = re.compile(
    r"(?<![A-Za-z])(?:rc|alpha|beta|preview|pre-?release|release candidate|nightly|canary)(?![A-Za-z])"
    r"|[.\-_]dev\d*(?![A-Za-z])",
    re.IGNORECASE,
)


def is_prerelease(tag: str, title: str = "") -> bool:
    """A semver pre-release tag, or rc/alpha/beta/dev/preview words in the tag or the title."""
    version = parse_version(tag)
    if version is not None and version.is_prerelease:
        return True
    return bool(_PRERELEASE_WORDS.search(tag) or _PRERELEASE_WORDS.search(title))
