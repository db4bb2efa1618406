"""parse.parse_feed (and the thin sources/rss.py over it): bytes in, RawEntry values out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.errors import ParseError
from aggregator.parse import ParsedFeed, parse_feed, utc_datetime
from aggregator.sources.rss import entries_from_feed
from aggregator.types import Source
from tests.server import LoopbackServer

FEED_URL = "https://blog.example/feeds/main.xml"


def parse(feed_dir: Path, name: str, url: str = FEED_URL, headers: dict[str, str] | None = None) -> ParsedFeed:
    return parse_feed((feed_dir / name).read_bytes(), source="test", url=url, headers=headers)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- every format ----------------------------------------------------------------------------------


def test_rss_090_is_read_by_the_fallback(feed_dir: Path) -> None:
    feed = parse(feed_dir, "rss090.xml")
    assert feed.parser == "feedparser"  # fastfeedparser finds no entries in RSS 0.90
    assert feed.title == "Lantern Notes"
    assert [e.title for e in feed.entries] == ["Pruning a tiny tokenizer", "Why our eval set shrank"]
    assert feed.entries[0].link == "https://lantern.example/notes/tokenizer"


def test_rss_091_doctype_is_allowed_and_its_dtd_never_fetched(feed_dir: Path, loopback: LoopbackServer) -> None:
    loopback.add("/rss-0.91.dtd", b'<!ENTITY trap "fetched">')
    body = (feed_dir / "rss091_doctype.xml").read_bytes().replace(b"{DTD_URL}", loopback.url("/rss-0.91.dtd").encode())
    feed = parse_feed(body, source="test", url=FEED_URL)
    assert [e.title for e in feed.entries] == ["Sparse attention, explained with blocks"]
    assert "block-sparse" in feed.entries[0].summary_html
    assert loopback.hits("/rss-0.91.dtd") == 0


def test_rss_092(feed_dir: Path) -> None:
    entry = parse(feed_dir, "rss092.xml").entries[0]
    assert entry.title == "Distilling a speech model onto a phone"
    assert entry.tags == ("speech",)


def test_rss_10_rdf_with_dublin_core(feed_dir: Path) -> None:
    entry = parse(feed_dir, "rss10_rdf.xml").entries[0]
    assert entry.title == "Graph retrieval for long documents"
    assert entry.authors == ("Ines Marlow",)
    assert entry.published == utc(2024, 3, 5, 8, 30)  # +01:00 converted to UTC
    assert entry.tags == ("retrieval",)


def test_rss_20_content_encoded_dates_and_relative_link(feed_dir: Path) -> None:
    feed = parse(feed_dir, "rss20_content_relative.xml")
    first = feed.entries[0]
    assert feed.parser == "fastfeedparser"
    assert first.title == "Mixture of experts & the routing problem"
    assert first.link == "https://blog.example/blog/moe-routing"  # resolved against the document URL
    assert first.guid == "kettle-post-101"
    assert first.published == utc(2024, 3, 12, 14, 4, 5)
    assert first.authors == ("Tomas Reyes",)
    assert first.tags == ("moe", "routing")
    assert first.summary_html == "Short teaser about routing."
    assert 'href="figures/router.png"' in first.content_html  # left as received; normalize resolves
    assert first.base_url == FEED_URL


def test_content_location_header_is_the_base(feed_dir: Path) -> None:
    feed = parse(feed_dir, "rss20_content_relative.xml", headers={"Content-Location": "https://mirror.example/x/"})
    assert feed.entries[0].link == "https://mirror.example/blog/moe-routing"
    assert feed.entries[0].base_url == "https://mirror.example/x/"


def test_atom_03(feed_dir: Path) -> None:
    entry = parse(feed_dir, "atom03.xml").entries[0]
    assert entry.title == "Benchmarks we stopped trusting"
    assert entry.link == "https://birch.example/2024/02/benchmarks"
    assert entry.guid == "tag:birch.example,2024:/benchmarks"
    assert entry.published == utc(2024, 2, 1, 9)
    assert entry.authors == ("Ada Birch",)


def test_atom_10_feed_level_and_content_xml_base(feed_dir: Path) -> None:
    feed = parse(feed_dir, "atom10_xml_base.xml")
    first, second = feed.entries
    assert feed.parser == "fastfeedparser"
    assert feed.link == "https://fern.example/blog/"
    assert first.link == "https://fern.example/blog/posts/scaling-retrieval"
    assert first.base_url == "https://cdn.fern.example/assets/"  # the content's own xml:base
    assert first.tags == ("scaling",)
    assert second.link == "https://fern.example/blog/posts/naive-dates"
    assert second.updated == utc(2024, 4, 3, 7, 30)  # a naive date is taken as UTC


def test_entry_level_xml_base_goes_to_feedparser_which_scopes_it(feed_dir: Path) -> None:
    feed = parse(feed_dir, "atom10_entry_xml_base.xml")
    entry = feed.entries[0]
    assert feed.parser == "feedparser"
    assert entry.link == "https://moss.example/2024/05/entry-base"
    assert 'href="https://moss.example/2024/05/img/plot.html"' in entry.content_html


def test_json_feed_11(feed_dir: Path) -> None:
    feed = parse(feed_dir, "jsonfeed11.json", url="https://pebble.example/feed.json")
    assert feed.parser == "jsonfeed"
    assert feed.title == "Pebble Notes"
    assert feed.link == "https://pebble.example/"
    first, second = feed.entries  # the item that is not an object is skipped
    assert first.guid == "https://pebble.example/p/quantized-kv"
    assert first.published == utc(2024, 6, 1, 17)
    assert first.updated == utc(2024, 6, 2, 10)
    assert first.authors == ("Mara Quill",)
    assert first.tags == ("quantization", "inference")
    assert first.summary_html == "<p>Four bits &amp; a lot of care.</p>"  # summary is plain text
    assert second.guid == "42"
    assert second.link == "https://pebble.example/p/plain-text"
    assert second.authors == ("Pebble Team",)  # the feed's authors when the item has none
    assert second.content_html == "<p>Line one.</p><p>Line &lt;two&gt;.</p>"


def test_json_feed_10_singular_author_and_bad_date(feed_dir: Path) -> None:
    entry = parse(feed_dir, "jsonfeed10.json").entries[0]
    assert entry.authors == ("Jo Old",)
    assert entry.published is None


def test_github_releases_atom(feed_dir: Path) -> None:
    feed = parse(feed_dir, "github_releases.xml", url="https://github.com/acme-ml/widgetron/releases.atom")
    assert feed.parser == "fastfeedparser"
    assert feed.entries[1].link == "https://github.com/acme-ml/widgetron/releases/tag/v2.0.0"
    assert feed.entries[2].link is None  # its id is a tag: URI, not a page


# --- encodings -------------------------------------------------------------------------------------


def test_latin1_without_declaration_falls_back_and_decodes(feed_dir: Path) -> None:
    feed = parse(feed_dir, "latin1_no_declaration.xml")
    assert feed.parser == "feedparser"
    assert feed.title == "Café des Modèles"
    assert feed.entries[0].title == "Résumé of a naïve tokenizer"
    assert feed.entries[0].summary_html == "Très simple, ça marche."
    assert feed.warning is not None and "\n" not in feed.warning


def test_charset_from_content_type_is_honoured(feed_dir: Path) -> None:
    headers = {"Content-Type": "application/rss+xml; charset=ISO-8859-1"}
    feed = parse(feed_dir, "latin1_no_declaration.xml", headers=headers)
    assert feed.entries[0].title == "Résumé of a naïve tokenizer"


def test_utf16(feed_dir: Path) -> None:
    feed = parse(feed_dir, "utf16.xml")
    assert feed.entries[0].title == "Über 漢字 and emoji 🚀"


# --- refused documents -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["billion_laughs.xml", "external_entity.xml"])
def test_entity_declarations_are_refused(feed_dir: Path, name: str) -> None:
    with pytest.raises(ParseError, match="declares XML entities; refused") as caught:
        parse(feed_dir, name)
    assert str(caught.value).startswith(FEED_URL)


def test_quadratic_blowup_is_refused_before_parsing() -> None:
    big = "x" * 100_000
    body = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "{big}">]>'
        f"<rss><channel><item><title>{'&a;' * 10_000}</title></item></channel></rss>"
    ).encode()
    with pytest.raises(ParseError, match="declares XML entities"):
        parse_feed(body, source="test", url=FEED_URL)


def test_entity_declaration_in_utf16_is_refused() -> None:
    body = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "b">]><rss/>'.encode("utf-16")
    with pytest.raises(ParseError, match="declares XML entities"):
        parse_feed(body, source="test", url=FEED_URL)


def test_the_words_entity_declaration_inside_cdata_are_only_text(feed_dir: Path) -> None:
    entry = parse(feed_dir, "entity_word_in_cdata.xml").entries[0]
    assert entry.title == "How XML entity attacks work"


def test_html_page_is_not_a_feed(feed_dir: Path) -> None:
    with pytest.raises(ParseError) as caught:
        parse(feed_dir, "html_page.xml")
    assert str(caught.value) == f"{FEED_URL}: not a feed: got an HTML page"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty document"),
        (b"   \n", "empty document"),
        (b"hello, this is plain text", "no RSS, Atom or JSON Feed found"),
        (b"<note><to>you</to></note>", "no RSS, Atom or JSON Feed found"),
        (b'{"status": 200, "body": "<rss/>"}', "JSON without a JSON Feed version or items"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": [', "invalid JSON"),
    ],
)
def test_not_a_feed(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as caught:
        parse_feed(body, source="test", url=FEED_URL)
    assert str(caught.value).startswith(f"{FEED_URL}: not a feed: ")
    assert "\n" not in str(caught.value)


def test_a_body_that_looks_like_a_path_is_never_opened() -> None:
    with pytest.raises(ParseError, match="not a feed"):
        parse_feed(b"/etc/hostname", source="test", url=FEED_URL)


# --- odd but valid feeds ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty_rss.xml", "empty_atom.xml"])
def test_a_feed_without_entries_is_valid_and_empty(feed_dir: Path, name: str) -> None:
    feed = parse(feed_dir, name)
    assert feed.entries == ()
    assert feed.title.startswith("Quiet")


def test_entries_without_id_link_or_date(feed_dir: Path) -> None:
    first, second, third = parse(feed_dir, "bare_entries.xml").entries
    assert (first.guid, first.link, first.published, first.updated) == (None, None, None, None)
    assert second.title == ""
    assert third.published is None  # "sometime last week" is not a date


def test_duplicate_guids_are_kept_by_the_parser_and_dropped_by_the_rss_source(feed_dir: Path) -> None:
    body = (feed_dir / "duplicate_guids.xml").read_bytes()
    assert [e.guid for e in parse_feed(body, source="echo", url=FEED_URL).entries] == ["echo-1", "echo-1", "echo-2"]
    source = Source(name="echo", kind="feed", url=FEED_URL)
    entries = entries_from_feed(body, source, url=FEED_URL, headers={})
    assert [e.title for e in entries] == ["First copy", "Other"]
    assert all(e.source == "echo" for e in entries)


def test_future_dates_are_kept_as_said(feed_dir: Path) -> None:
    assert parse(feed_dir, "future_dates.xml").entries[0].published == utc(2099, 1, 1)  # normalize clamps


def test_text_only_in_media_description_is_found(feed_dir: Path) -> None:
    entry = parse(feed_dir, "media_description.xml").entries[0]
    assert entry.summary_html == "A one hour talk on agent benchmarks."


def test_html_embedding_a_feed_is_still_read() -> None:
    body = (
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>Inner</title>'
        b"<entry><id>tag:x,2024:1</id><title>Inside a page</title><updated>2024-01-01T00:00:00Z</updated></entry>"
        b"</feed></body></html>"
    )
    assert [e.title for e in parse_feed(body, source="test", url=FEED_URL).entries] == ["Inside a page"]


def test_both_parsers_give_the_same_entry_identity() -> None:
    """A feed that one day needs the fallback must not change its entries' guids and links."""
    item = (
        "<item><title>{title}</title><guid>/posts/one</guid></item>"
        "<item><title>Two</title><link>posts/two</link></item>"
    )
    utf8 = f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>{item}</channel></rss>'
    fast = parse_feed(utf8.format(title="Plain").encode(), source="s", url=FEED_URL)
    # Latin-1 bytes under a UTF-8 declaration: fastfeedparser yields U+FFFD, so feedparser reads it
    slow = parse_feed(utf8.format(title="Caf\xe9").encode("latin-1"), source="s", url=FEED_URL)
    assert (fast.parser, slow.parser) == ("fastfeedparser", "feedparser")
    assert [(e.guid, e.link) for e in fast.entries] == [(e.guid, e.link) for e in slow.entries]
    assert [(e.guid, e.link) for e in fast.entries] == [
        (None, "https://blog.example/posts/one"),  # a permalink guid is the entry's link
        (None, "https://blog.example/feeds/posts/two"),
    ]


def test_windows_1252_quotes_without_declaration_are_decoded() -> None:
    body = (
        "<rss version='2.0'><channel><title>q</title>"
        "<item><title>don\u2019t \u201cpanic\u201d</title></item></channel></rss>"
    )
    feed = parse_feed(body.encode("cp1252"), source="test", url=FEED_URL)
    assert feed.parser == "feedparser"
    assert feed.entries[0].title == "don\u2019t \u201cpanic\u201d"


# --- the fast paths give what the plain code gave ---------------------------------------------------


def test_impossible_character_references_are_dropped_and_possible_ones_kept() -> None:
    title = "A&#0;B&#65;&#xD800;C&#x1F600;&#99999999999;D&#x0009;E"
    items = "".join(f"<item><title>{title}</title><guid>g{n}</guid></item>" for n in range(3))
    body = f"<rss version='2.0'><channel><title>refs</title>{items}</channel></rss>".encode()
    feed = parse_feed(body, source="test", url=FEED_URL)
    assert feed.parser == "fastfeedparser"
    assert [e.title for e in feed.entries] == ["ABAC\U0001f600D\tE"] * 3


def test_is_permalink_false_counts_in_any_letter_case() -> None:
    def entry_of(second_guid_attribute: str) -> tuple[str | None, str | None]:
        body = (
            "<rss version='2.0'><channel><title>t</title>"
            "<item><title>One</title><guid isPermaLink='true'>https://blog.example/one</guid></item>"
            f"<item><title>Two</title><guid {second_guid_attribute}>posts/two</guid></item></channel></rss>"
        ).encode()
        two = parse_feed(body, source="test", url=FEED_URL).entries[1]
        return two.guid, two.link

    assert entry_of("isPermaLink='true'") == (None, "https://blog.example/feeds/posts/two")
    assert entry_of("ISPERMALINK = \"FALSE\"") == ("posts/two", None)
    assert entry_of("isPermaLink='false'") == ("posts/two", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.678+02:00", datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        (" 2024-01-02T03:04:05 ", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),  # naive means UTC
        ("Tue, 02 Jan 2024 03:04:05 -0500", datetime(2024, 1, 2, 8, 4, 5, tzinfo=UTC)),
        ((2024, 1, 2, 3, 4, 61, 0, 0, 0), datetime(2024, 1, 2, 3, 4, 59, tzinfo=UTC)),
        (datetime(2024, 1, 2, 3, 4, 5, 999), datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("not a date", None),
        ("", None),
        (None, None),
    ],
)
def test_utc_datetime_gives_whole_seconds_in_utc(value: object, expected: datetime | None) -> None:
    parsed = utc_datetime(value)
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is UTC
