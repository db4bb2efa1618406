"""normalize: RawEntry -> Item (key rules, URLs, arXiv ids, text, sanitizing, dates, caps)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nh3
import pytest

from aggregator import normalize as normalize_module
from aggregator.errors import ParseError
from aggregator.normalize import (
    SUMMARY_HTML_CAP,
    SUMMARY_TEXT_CAP,
    arxiv_base_id,
    canonical_url,
    clean_title,
    html_to_text,
    item_key,
    normalize,
    sanitize_html,
    text_of_clean_html,
)
from aggregator.parse import parse_feed
from aggregator.types import RawEntry

NOW = datetime(2024, 9, 1, 12, 0, tzinfo=UTC)


def entry(**fields: Any) -> RawEntry:
    return RawEntry(**{"source": "blog-a", "title": "A title", **fields})


# --- the key rule, most specific first --------------------------------------------------------------


def test_arxiv_id_from_the_source_gives_the_base_id_key() -> None:
    item = normalize(entry(arxiv_id="2401.01234v3", link="https://arxiv.org/abs/2401.01234v3"), kind="paper", now=NOW)
    assert item.key == "arxiv:2401.01234"
    assert (item.arxiv_id, item.arxiv_version) == ("2401.01234", 3)
    assert item.url == "https://arxiv.org/abs/2401.01234"


def test_a_blog_entry_whose_link_is_an_arxiv_pdf_is_that_paper() -> None:
    item = normalize(entry(link="http://arxiv.org/pdf/2401.01234v2.pdf", guid="post-9"), kind="blog", now=NOW)
    assert item.key == "arxiv:2401.01234"
    assert item.kind == "paper"
    assert item.url == "https://arxiv.org/abs/2401.01234"


def test_a_blog_entry_that_only_mentions_a_paper_is_not_that_paper() -> None:
    raw = entry(
        link="https://blog.example/our-take",
        guid="post-10",
        summary_html='<p>We read <a href="https://arxiv.org/abs/2401.01234">2401.01234</a>.</p>',
    )
    item = normalize(raw, kind="blog", now=NOW)
    assert item.key == "guid:blog-a:post-10"
    assert item.kind == "blog"
    assert item.arxiv_id is None


def test_github_release_key() -> None:
    raw = entry(repo="HuggingFace/Transformers", tag="v4.36.0", guid="tag:github.com,2008:Repository/1/v4.36.0")
    item = normalize(raw, kind="release", now=NOW)
    assert item.key == "github:huggingface/transformers@v4.36.0"
    assert (item.repo, item.version, item.prerelease) == ("huggingface/transformers", "v4.36.0", False)


def test_guid_is_scoped_by_source() -> None:
    first = normalize(entry(source="blog-a", guid="42"), kind="blog", now=NOW)
    second = normalize(entry(source="blog-b", guid="42"), kind="blog", now=NOW)
    assert (first.key, second.key) == ("guid:blog-a:42", "guid:blog-b:42")


def test_an_http_guid_is_keyed_by_its_canonical_url() -> None:
    item = normalize(entry(guid="HTTPS://Blog.Example/post?utm_source=rss#top"), kind="blog", now=NOW)
    assert item.key == "url:https://blog.example/post"


def test_without_guid_the_canonical_link_is_the_key() -> None:
    item = normalize(entry(link="https://blog.example/post/?utm_campaign=x&page=2"), kind="blog", now=NOW)
    assert item.key == "url:https://blog.example/post/?page=2"
    assert item.url == "https://blog.example/post/?page=2"


def test_without_guid_or_link_the_key_is_a_hash_of_title_and_summary() -> None:
    one = normalize(entry(title="Same", summary_html="words"), kind="blog", now=NOW)
    again = normalize(entry(title="Same", summary_html="words"), kind="blog", now=NOW + timedelta(days=1))
    other = normalize(entry(title="Same", summary_html="other words"), kind="blog", now=NOW)
    assert one.key.startswith("hash:") and len(one.key) == len("hash:") + 40
    assert one.key == again.key != other.key
    assert one.url == ""


def key_of(arxiv_id: str | None, repo: str | None, tag: str | None, guid: str | None) -> str:
    fields: dict[str, Any] = {"arxiv_id": arxiv_id, "repo": repo, "tag": tag, "guid": guid}
    return item_key(source="s", url="https://x.example/", title="t", summary_text="", **fields)


def test_item_key_prefers_arxiv_then_github_then_guid_then_url() -> None:
    assert key_of("2401.01234", "o/r", "v1", "g") == "arxiv:2401.01234"
    assert key_of(None, "o/r", "v1", "g") == "github:o/r@v1"
    assert key_of(None, "o/r", None, "g") == "guid:s:g"
    assert key_of(None, None, None, None) == "url:https://x.example/"


# --- arXiv ids in every form ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2401.01234", ("2401.01234", None)),
        ("2401.01234v2", ("2401.01234", 2)),
        ("arXiv:2401.01234v3", ("2401.01234", 3)),
        ("0704.0001", ("0704.0001", None)),
        ("1412.1234", ("1412.1234", None)),
        ("hep-th/9901001", ("hep-th/9901001", None)),
        ("hep-th/9901001v1", ("hep-th/9901001", 1)),
        ("math.GT/0309136", ("math/0309136", None)),
        ("https://arxiv.org/abs/2401.01234", ("2401.01234", None)),
        ("https://arxiv.org/abs/2401.01234v2", ("2401.01234", 2)),
        ("http://arxiv.org/pdf/2401.01234v1.pdf", ("2401.01234", 1)),
        ("https://arxiv.org/pdf/2401.01234", ("2401.01234", None)),
        ("https://arxiv.org/html/2401.01234v2", ("2401.01234", 2)),
        ("https://export.arxiv.org/abs/2401.01234", ("2401.01234", None)),
        ("https://www.arxiv.org/abs/2401.12345v10/", ("2401.12345", 10)),
        ("https://arxiv.org/abs/2401.01234?context=cs.CL", ("2401.01234", None)),
        ("https://export.arxiv.org/abs/hep-th/9901001v3", ("hep-th/9901001", 3)),
        ("https://arxiv.org/abs/math.GT/0309136v2", ("math/0309136", 2)),
        ("HTTPS://ARXIV.ORG/abs/2401.01234v2", ("2401.01234", 2)),
        ("https://example.com/abs/2401.01234", None),
        ("https://arxiv.example.com/abs/2401.01234", None),
        ("https://arxiv.org/list/cs.CL/recent", None),
        ("2413.01234", None),  # there is no month 13
        ("not an id", None),
        ("", None),
    ],
)
def test_arxiv_base_id(text: str, expected: tuple[str, int | None] | None) -> None:
    assert arxiv_base_id(text) == expected


# --- canonical URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.COM/Path", "https://example.com/Path"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("http://example.com/a", "http://example.com/a"),  # http is not upgraded
        ("https://example.com/a#section", "https://example.com/a"),
        ("https://example.com/a?utm_source=rss&utm_medium=feed", "https://example.com/a"),
        ("https://example.com/a?b=2&fbclid=x&a=1&gclid=y", "https://example.com/a?b=2&a=1"),
        ("https://example.com/a?mc_cid=1&mc_eid=2&ref=hn&ref_src=tw", "https://example.com/a"),
        ("https://example.com/a?q=a%20b&UTM_Content=x", "https://example.com/a?q=a%20b"),
        ("https://example.com/a?", "https://example.com/a"),
        ("  https://example.com/a  ", "https://example.com/a"),
        ("https://user:secret@example.com/a", "https://example.com/a"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_canonical_url_resolves_against_a_base() -> None:
    assert canonical_url("../b?ref=x", "https://example.com/dir/sub/") == "https://example.com/dir/b"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://example.com/a", "mailto:a@example.com", "/relative"])
def test_canonical_url_refuses_what_is_not_http(url: str) -> None:
    with pytest.raises(ParseError, match="not an http"):
        canonical_url(url)


# --- titles, text, HTML ---------------------------------------------------------------------------


def test_title_entities_decoded_tags_stripped_whitespace_collapsed() -> None:
    raw = entry(title="  Scaling laws <em>for</em>\n retrieval &amp; more &#8212; part&nbsp;2 ")
    assert normalize(raw, kind="blog", now=NOW).title == "Scaling laws for retrieval & more — part 2"


def test_empty_title_falls_back_to_the_first_words_then_the_url() -> None:
    words = "one two three four five six seven eight nine ten eleven twelve thirteen"
    from_summary = normalize(entry(title="", summary_html=f"<p>{words}</p>"), kind="blog", now=NOW)
    assert from_summary.title == "one two three four five six seven eight nine ten eleven twelve …"
    from_url = normalize(entry(title=" ", link="https://blog.example/p"), kind="blog", now=NOW)
    assert from_url.title == "https://blog.example/p"


def test_html_to_text() -> None:
    html = "<p>First&nbsp;para</p><p>Second <b>bold</b>word</p><script>alert(1)</script><style>p{}</style>x<br>y"
    assert html_to_text(html) == "First para Second boldword x y"
    assert html_to_text("plain &amp; simple\n\n text") == "plain & simple text"
    assert html_to_text("<!-- only a comment -->") == ""
    assert html_to_text("nul\x00<b>byte</b>") == "nulbyte"


def test_summary_prefers_content_over_summary() -> None:
    item = normalize(entry(summary_html="short", content_html="<p>the full text</p>"), kind="blog", now=NOW)
    assert item.summary_text == "the full text"
    assert item.summary_html == "<p>the full text</p>"


def test_dangerous_links_are_dropped_and_relative_links_resolved(feed_dir: Path) -> None:
    body = (feed_dir / "dangerous_links.xml").read_bytes()
    raw = parse_feed(body, source="trap", url="https://trap.example/feed.xml").entries[0]
    html = normalize(raw, kind="blog", now=NOW).summary_html
    lowered = html.lower()
    dropped = ("javascript", "vbscript", "file:", "data:", "onclick", "onerror", "<script", "<style", "<iframe", "<img")
    for bad in dropped:
        assert bad not in lowered
    assert 'href="https://ok.example/page"' in html
    assert 'href="mailto:editor@trap.example"' in html
    assert 'href="https://trap.example/relative/path"' in html
    assert html.count("<a ") == 10  # the link text stays, only the href goes


def test_sanitize_html_without_a_base_drops_relative_links() -> None:
    assert sanitize_html('<a href="/x">x</a>', None) == '<a rel="noopener noreferrer nofollow">x</a>'
    assert sanitize_html('<a href="x">x</a>', "https://b.example/dir/") == (
        '<a href="https://b.example/dir/x" rel="noopener noreferrer nofollow">x</a>'
    )


def test_content_links_are_resolved_against_the_content_xml_base(feed_dir: Path) -> None:
    raw = parse_feed((feed_dir / "atom10_xml_base.xml").read_bytes(), source="fern", url="https://fern.example/feed").entries[0]
    item = normalize(raw, kind="blog", now=NOW)
    assert 'href="https://cdn.fern.example/assets/chart.html"' in item.summary_html
    assert item.title == "Scaling laws for retrieval"


def test_a_huge_entry_is_capped() -> None:
    paragraph = "<p>" + "word " * 200 + '<a href="/rel">link</a></p>'
    huge = paragraph * (5_000_000 // len(paragraph))
    item = normalize(entry(content_html=huge, base_url="https://blog.example/"), kind="blog", now=NOW)
    assert len(item.summary_text) <= SUMMARY_TEXT_CAP
    assert item.summary_text.endswith("…")
    assert len(item.summary_html) <= SUMMARY_HTML_CAP + 200
    assert item.summary_html.endswith("</p>")


def test_content_hash_follows_title_and_summary() -> None:
    one = normalize(entry(guid="g", summary_html="v1"), kind="blog", now=NOW)
    same = normalize(entry(guid="g", summary_html="v1", tags=("x",)), kind="blog", now=NOW)
    edited = normalize(entry(guid="g", summary_html="v2"), kind="blog", now=NOW)
    assert one.content_hash == same.content_hash != edited.content_hash
    assert one.key == edited.key


# --- dates ------------------------------------------------------------------------------------------


def test_published_in_utc_with_updated_as_fallback() -> None:
    east = datetime(2024, 8, 1, 21, 0, tzinfo=timezone(timedelta(hours=9)))
    assert normalize(entry(published=east), kind="blog", now=NOW).published == datetime(2024, 8, 1, 12, tzinfo=UTC)
    naive = datetime(2024, 8, 2, 8, 0)
    assert normalize(entry(updated=naive), kind="blog", now=NOW).published == datetime(2024, 8, 2, 8, tzinfo=UTC)


def test_missing_or_future_dates_become_now(feed_dir: Path) -> None:
    assert normalize(entry(), kind="blog", now=NOW).published == NOW
    raw = parse_feed((feed_dir / "future_dates.xml").read_bytes(), source="f", url="https://future.example/").entries[0]
    assert normalize(raw, kind="blog", now=NOW).published == NOW
    slightly_ahead = NOW + timedelta(minutes=2)  # clock skew, not a wrong date
    assert normalize(entry(published=slightly_ahead), kind="blog", now=NOW).published == slightly_ahead


def test_entries_without_id_link_or_date_still_become_items(feed_dir: Path) -> None:
    raws = parse_feed((feed_dir / "bare_entries.xml").read_bytes(), source="bare", url="https://bare.example/").entries
    items = [normalize(raw, kind="blog", now=NOW) for raw in raws]
    assert [item.key.split(":")[0] for item in items] == ["hash", "hash", "url"]
    assert len({item.key for item in items}) == 3
    assert items[1].title.startswith("No title at all, just a sentence")
    assert all(item.published == NOW for item in items)


def test_entries_published_as_anchors_of_one_page_keep_apart() -> None:
    from aggregator.normalize import normalize_all

    now = datetime(2026, 11, 26, tzinfo=UTC)
    anchors = [RawEntry(source="wiki", title=f"Day {n}", link=f"https://wiki.example/now.html#day-{n}",
                        guid=f"https://wiki.example/now.html#day-{n}") for n in range(3)]  # fmt: skip
    keys = [item.key for item in normalize_all(anchors, kind="blog", now=now)]
    assert keys == [f"url:https://wiki.example/now.html#day-{n}" for n in range(3)]
    # one entry repeated is still one item; a lone anchored link keeps the plain key
    repeated = normalize_all([anchors[0], anchors[0]], kind="blog", now=now)
    assert {item.key for item in repeated} == {"url:https://wiki.example/now.html"}


# --- the fast paths give what the plain code gave ---------------------------------------------------


def plain_collapse(text: str) -> str:
    return " ".join(re.sub("[\x00-\x1f\x7f]", " ", text).split())


@pytest.mark.parametrize(
    "text",
    [
        "", " ", "one", "  two  words ", "tab\tnew\nline\r\nfeed\x0bform\x0c", "nul\x00bell\x07del\x7fend",
        "file\x1cgroup\x1drecord\x1eunit\x1fsep", "\x01\x02  \x03", "a" * 300 + "  \n  " + "b",
    ],
)
def test_whitespace_and_control_characters_collapse_alike_in_ascii_and_other_text(text: str) -> None:
    # ASCII text takes a bytes path; anything else str.split(): both must equal the plain rule
    assert clean_title(text) == plain_collapse(text)
    other = text + " caf\xe9\xa0\u2028\u3000x\x85y\x00z"
    assert clean_title(other) == plain_collapse(other)


def test_text_of_clean_html_separates_words_at_block_elements_only() -> None:
    cleaned = "<P>one</P><p>two<b>three</b></p>four<br>five<img src=x>six<TD>seven</TD>&amp;&lt;p&gt;\n\teight"
    assert text_of_clean_html(cleaned) == "one twothree four fivesix seven &<p> eight"
    assert text_of_clean_html("no tags,\n just  text") == "no tags, just text"


@pytest.mark.parametrize("base", [None, "", "ftp://files.example/", "https://b.example/dir/", "http://c.example/x.xml"])
def test_the_cached_sanitizer_cleans_as_a_fresh_one_does(base: str | None) -> None:
    html = '<p onclick="x()">a <a href="rel/p">r</a> <a href="javascript:alert(1)">j</a><script>s()</script></p>'
    relative: Any = ("rewrite_with_base", base) if base and base.startswith("http") else "deny"
    fresh = nh3.clean(
        html,
        tags=normalize_module._ALLOWED_TAGS,
        attributes=normalize_module._ALLOWED_ATTRIBUTES,
        url_schemes=normalize_module._ALLOWED_SCHEMES,
        url_relative=relative,
        link_rel="noopener noreferrer nofollow",
    ).strip()
    assert sanitize_html(html, base) == fresh
    for n in range(300):  # more bases than the cache holds: evicted ones are rebuilt alike
        sanitize_html(html, f"https://host{n}.example/")
    assert sanitize_html(html, base) == fresh


def test_sanitize_html_is_safe_from_the_parse_threads() -> None:
    jobs = [(f'<p><a href="p{n}">{n}</a></p>' * 20, f"https://h{n % 7}.example/") for n in range(400)]
    expected = [sanitize_html(html, base) for html, base in jobs]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda job: sanitize_html(*job), jobs)) == expected


def test_a_base_that_is_no_url_drops_relative_links_instead_of_failing() -> None:
    html_text = "<p><a href='/post'>relative</a> <a href='https://example.org/x'>absolute</a></p>"
    cleaned = sanitize_html(html_text, "http://[bad")
    assert "relative" in cleaned and 'href="/post"' not in cleaned
    assert 'href="https://example.org/x"' in cleaned
