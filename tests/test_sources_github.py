"""sources/github.py: releases.atom -> RawEntry with repo and tag; versions and pre-releases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.errors import ConfigError
from aggregator.normalize import normalize
from aggregator.sources.github import Version, entries_from_releases, is_prerelease, parse_version, releases_url
from aggregator.types import Source

FEED_URL = "https://github.com/acme-ml/widgetron/releases.atom"
NOW = datetime(2024, 9, 1, tzinfo=UTC)


def releases(feed_dir: Path, repo: str | None = "acme-ml/widgetron") -> list:
    source = Source(name="widgetron", kind="github", url=FEED_URL, repo=repo)
    return entries_from_releases((feed_dir / "github_releases.xml").read_bytes(), source, url=FEED_URL, headers={})


def test_releases_url() -> None:
    assert releases_url("huggingface/transformers") == "https://github.com/huggingface/transformers/releases.atom"
    assert releases_url(" ggerganov/llama.cpp ") == "https://github.com/ggerganov/llama.cpp/releases.atom"


@pytest.mark.parametrize("repo", ["transformers", "a/b/c", "owner/", "/name", "own er/name", "owner/..", ""])
def test_releases_url_refuses_what_is_not_owner_slash_name(repo: str) -> None:
    with pytest.raises(ConfigError, match="is not 'owner/name'"):
        releases_url(repo)


def test_entries_get_repo_and_tag_from_link_or_id(feed_dir: Path) -> None:
    entries = releases(feed_dir)
    assert [(e.repo, e.tag) for e in entries] == [
        ("acme-ml/widgetron", "v2.1.0-rc.1"),
        ("acme-ml/widgetron", "v2.0.0"),  # from a relative link, resolved against github.com
        ("acme-ml/widgetron", "b2345"),  # no link: from the id tag:github.com,2008:Repository/123456/b2345
    ]  # the fourth entry repeats v2.0.0 and is dropped
    assert entries[0].source == "widgetron"


def test_repo_comes_from_the_link_when_the_source_has_none(feed_dir: Path) -> None:
    assert [e.repo for e in releases(feed_dir, repo=None)][:2] == ["acme-ml/widgetron", "acme-ml/widgetron"]


def test_releases_normalize_to_github_keys_with_prerelease_flags(feed_dir: Path) -> None:
    items = [normalize(entry, kind="release", now=NOW) for entry in releases(feed_dir)]
    assert [item.key for item in items] == [
        "github:acme-ml/widgetron@v2.1.0-rc.1",
        "github:acme-ml/widgetron@v2.0.0",
        "github:acme-ml/widgetron@b2345",
    ]
    assert [item.prerelease for item in items] == [True, False, False]
    assert items[0].kind == "release"
    assert items[0].version == "v2.1.0-rc.1"
    assert items[0].summary_text == "Release candidate with fast_path."
    assert items[1].url == "https://github.com/acme-ml/widgetron/releases/tag/v2.0.0"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("v4.36.0", Version(4, 36, 0, None, False)),
        ("4.36", Version(4, 36, 0, None, False)),
        ("3.0", Version(3, 0, 0, None, False)),
        ("v2", Version(2, 0, 0, None, False)),
        ("v1.0.0-rc.1", Version(1, 0, 0, "rc.1", True)),
        ("1.2.3rc1", Version(1, 2, 3, "rc1", True)),
        ("v2.0.0b1", Version(2, 0, 0, "b1", True)),
        ("2.0.0.dev0", Version(2, 0, 0, "dev0", True)),
        ("v1.2.3-alpha", Version(1, 2, 3, "alpha", True)),
        ("v0.4.30.post1", Version(0, 4, 30, "post1", False)),
        ("v1.2.3+build.5", Version(1, 2, 3, None, False)),
        ("1.2.3.4", Version(1, 2, 3, None, False)),
        ("release-1.2", Version(1, 2, 0, None, False)),
        ("pkg@1.2.3", Version(1, 2, 3, None, False)),
        ("@scope/pkg@1.0.0-beta.2", Version(1, 0, 0, "beta.2", True)),
        ("jax-v0.4.30", Version(0, 4, 30, None, False)),
        ("b2345", None),  # llama.cpp build numbers are not versions
        ("llama-b2345", None),
        ("nightly", None),
        ("rel1.2", None),
        ("", None),
    ],
)
def test_parse_version(tag: str, expected: Version | None) -> None:
    assert parse_version(tag) == expected


@pytest.mark.parametrize(
    ("tag", "title", "expected"),
    [
        ("v4.36.0", "Transformers 4.36", False),
        ("v1.0.0-rc.1", "", True),
        ("v2.0.0", "v2.0 RC1", True),
        ("v2.0.0", "v2.0 Release Candidate", True),
        ("v2.0.0", "Preview of the new API", True),
        ("v2.0.0", "Public beta", True),
        ("nightly", "", True),
        ("v0.5.0-dev", "", True),
        ("b2345", "b2345", False),
        ("v3.0.0", "AlphaFold 3 support", False),  # words inside names do not count
        ("v3.0.0", "Developer tools", False),
        ("v3.0.0", "Orchestration", False),
    ],
)
def test_is_prerelease(tag: str, title: str, expected: bool) -> None:
    assert is_prerelease(tag, title) is expected
