"""Type tags: the `[Type]` an editor sees in front of every candidate."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aggregator.classify.itemtype import (
    _TECH_REPORT,
    ITEM_TYPES,
    _says_technical_report,
    is_prerelease,
    item_type,
    parse_version,
    release_type,
    split_link,
    type_from_example,
)
from aggregator.types import Item


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3.0", "Major Release"),
        ("v3.0.0", "Major Release"),
        ("3", "Major Release"),
        ("1.0.0", "Major Release"),
        ("4.36.0", "Minor Release"),
        ("v0.4.0", "Minor Release"),
        ("4.36.1", "Patch Release"),
        ("v1.2.3.4", "Patch Release"),
        ("jax-v0.4.30", "Patch Release"),
        ("release-2.1.0", "Minor Release"),
        ("2.0.0rc1", "Major Release"),
        ("v1.1.0-beta.2", "Minor Release"),
        ("0.5.1.dev0", "Patch Release"),
        ("1.6B", None),  # a parameter count, not a version
        ("nightly", None),
        ("", None),
        (None, None),
    ],
)
def test_release_type_grades_versions(version: str | None, expected: str | None) -> None:
    assert release_type(version) == expected


@pytest.mark.parametrize(
    ("version", "prerelease"),
    [
        ("2.0.0rc1", True),
        ("v1.1.0-beta.2", True),
        ("0.5.1.dev0", True),
        ("1.0.0a3", True),
        ("v3.0.0-alpha", True),
        ("4.36.1", False),
        ("v3.0.0", False),
    ],
)
def test_prereleases_are_flagged_but_keep_their_type(version: str, prerelease: bool) -> None:
    assert is_prerelease(version) is prerelease
    assert release_type(version) is not None


def test_parse_version_reports_the_numbers() -> None:
    parsed = parse_version("v4.36.1-rc2")
    assert parsed is not None
    assert (parsed.major, parsed.minor, parsed.patch, parsed.prerelease) == (4, 36, 1, True)


@pytest.mark.parametrize(
    ("title", "summary", "url", "expected"),
    [
        ("Attention is all you need", "", "https://arxiv.org/abs/1706.03762", "Paper"),
        ("A model of everything", "", "https://openreview.net/forum?id=abc123", "Paper"),
        ("Parsing with grammars", "", "https://aclanthology.org/2023.acl-long.1/", "Paper"),
        ("Daily papers pick", "", "https://huggingface.co/papers/2401.00001", "Paper"),
        ("Deep nets for proteins", "", "https://www.nature.com/articles/s41586-021-03819-2", "Paper"),
        ("Scientists weigh in on AI", "", "https://www.nature.com/articles/d41586-023-00001-1", "Blog"),
        ("Bigmodel 2: Technical Report", "", "https://arxiv.org/abs/2402.00002", "Technical report"),
        ("A new model family", "We describe it in a technical report.", "https://lab.example/blog", "Technical report"),
        ("The Bigmodel 4 system card", "", "https://lab.example/card", "Technical report"),
        ("A tiny autograd engine", "", "https://github.com/someone/tinygrad-clone", "Package"),
        ("A tiny autograd engine", "", "https://github.com/someone/tinygrad-clone/tree/main/docs", "Package"),
        ("fastthing", "", "https://pypi.org/project/fastthing/", "Package"),
        ("some-model", "", "https://huggingface.co/someorg/some-model", "Package"),
        ("Weekly notes", "", "https://github.com/blog/2024-weekly-notes", "Blog"),
        ("Toolkit 2.3.0", "", "https://github.com/org/toolkit/releases/tag/v2.3.0", "Minor Release"),
        ("Toolkit", "", "https://github.com/org/toolkit/releases/tag/v3.0.0", "Major Release"),
        ("openai-python 1.54.4", "Bug fixes", "https://github.com/org/x/blob/abc/CHANGELOG.md", "Patch Release"),
        ("JAX v0.5.0 released", "", "https://jax.example/news", "Minor Release"),
        ("Release 2.0", "", "", "Major Release"),
        ("Introducing Stable Thing 2 1.6B", "", "https://lab.example/news", "Blog"),
        ("ICML 2024", "July 21-27, Vienna", "https://icml.cc/Conferences/2024", "Conference"),
        ("AutoML-Conf 2023", "", "https://2023.automl.cc", "Conference"),
        ("Call for papers: the robot learning workshop", "", "https://rl-workshop.example", "Conference"),
        ("Keynote: scaling laws revisited", "Recorded at NeurIPS 2023.", "https://video.example/1", "Conference talk"),
        ("Invited talk on world models", "", "https://slideslive.com/38922222/world-models", "Conference talk"),
        ("A talk I enjoyed", "about my garden", "https://blog.example/garden", "Blog"),
        ("Why evaluation is hard", "An essay.", "https://someone.substack.com/p/evals", "Blog"),
        ("No link at all", "", "", "Blog"),
        ("Broken link", "", "http://[::1", "Blog"),
    ],
)
def test_type_from_example(title: str, summary: str, url: str, expected: str) -> None:
    assert type_from_example(title, summary, url) == expected


BASE_ITEM = Item(key="k", title="T", url="https://x.example/a", source="s", kind="blog")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"kind": "paper", "arxiv_id": "2401.00001", "url": "https://arxiv.org/abs/2401.00001"}, "Paper"),
        ({"kind": "paper", "title": "Foo-7B Technical Report"}, "Technical report"),
        ({"kind": "blog", "url": "https://arxiv.org/abs/2401.00001"}, "Paper"),
        ({"kind": "release", "version": "v4.36.0", "repo": "org/lib"}, "Minor Release"),
        ({"kind": "release", "version": "v4.36.1"}, "Patch Release"),
        ({"kind": "release", "version": "v5.0.0", "prerelease": True}, "Major Release"),
        ({"kind": "release", "version": "nightly"}, "Minor Release"),
        ({"kind": "blog", "url": "https://github.com/org/lib"}, "Package"),
        ({"kind": "blog", "title": "Highlights of the AI Summit"}, "Conference"),
        ({"kind": "blog", "title": "How we cut our inference bill"}, "Blog"),
    ],
)
def test_item_type_uses_the_source_kind_first(fields: dict[str, object], expected: str) -> None:
    assert item_type(replace(BASE_ITEM, **fields)) == expected


def test_every_tag_is_one_of_the_documented_types() -> None:
    tags = {
        type_from_example(title, "", url)
        for title, url in [
            ("x", "https://arxiv.org/abs/1"),
            ("ICML 2024", ""),
            ("lib 1.0.1", ""),
            ("x", "https://github.com/a/b"),
            ("keynote at the summit", ""),
            ("plain", ""),
        ]
    }
    assert tags <= set(ITEM_TYPES)


@pytest.mark.parametrize(
    "text",
    [
        "Foo-7B Technical Report",
        "the TECH. REPORT is out",
        "our tech report",
        "A System Card for Bar",
        "\u017fystem card",  # long s matches "s" case-insensitively: the check must still find "card"
        "techn\u0130cal report",  # dotted capital I
        "reported by a cardiologist",  # "report" and "card" inside words: the regex decides
        "nothing to see here",
        "",
    ],
)
def test_the_quick_technical_report_check_agrees_with_the_pattern(text: str) -> None:
    for title, summary in [(text, ""), ("", text), (text[:6], text[6:])]:
        expected = _TECH_REPORT.search(f"{title}\n{summary}") is not None
        assert _says_technical_report(title, summary) == expected


def test_a_malformed_link_still_gets_a_tag_from_its_text() -> None:
    assert split_link("http://[::1/x") == ("", "")
    assert type_from_example("Keynote at the NeurIPS summit", "", "http://[::1/x") == "Conference talk"
    assert split_link("https://WWW.Example.org/A/b?q=1") == ("example.org", "/A/b")
