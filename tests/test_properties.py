"""Property tests (hypothesis) for what strangers' feeds feed into: URL canonicalisation, the item
key, normalize, parsing mangled feeds, reading issue files, and the export -> import-archive round
trip through the database. (Markdown rendering <-> archive.parse_issue on plain rows is in
test_export.py; parse_issue on arbitrary lines in test_archive.py.)"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aggregator.archive import parse_issues
from aggregator.config import Settings, load_settings
from aggregator.errors import ParseError
from aggregator.export.batches import ExportRequest, export
from aggregator.normalize import FUTURE_SKEW, SUMMARY_HTML_CAP, SUMMARY_TEXT_CAP, canonical_url, item_key, normalize
from aggregator.parse import parse_feed
from aggregator.storage import Storage, open_storage
from aggregator.storage.schema import metadata
from aggregator.training import import_archive
from aggregator.types import Decision, RawEntry

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CATEGORIES = ("Trends", "State of the Art", "Miscellaneous", "Releases")

# --- URLs ----------------------------------------------------------------------------------------------

SCHEMES = st.sampled_from(["http", "https", "HTTP", "Https"])
HOSTS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){1,2}", fullmatch=True)
PATH_SEGMENTS = st.lists(st.text(alphabet="abcXYZ019-._~%!$'()*+,;=:@é", max_size=8), max_size=4)
PARAM_NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(
    lambda name: not name.startswith(("utm", "pk", "mtm", "hsa")) and name not in ("ref", "spm", "cmpid")
)
PARAMS = st.lists(st.tuples(PARAM_NAMES, st.text(alphabet="abc019-_.%+", max_size=6)), max_size=3)
TRACKING = st.lists(
    st.tuples(st.sampled_from(["utm_source", "UTM_Medium", "utm_campaign", "fbclid", "gclid", "mc_eid", "ref"]),
              st.text(alphabet="abc019", max_size=5)),
    min_size=1,
    max_size=3,
)  # fmt: skip


def build_url(scheme: str, host: str, port: str, segments: list[str], params: list[tuple[str, str]]) -> str:
    query = "&".join(f"{name}={value}" for name, value in params)
    return f"{scheme}://{host}{port}/{'/'.join(segments)}" + (f"?{query}" if query else "")


URLS = st.builds(build_url, SCHEMES, HOSTS, st.sampled_from(["", ":8080"]), PATH_SEGMENTS, PARAMS)


@given(url=URLS)
def test_canonical_url_is_idempotent_and_plain(url: str) -> None:
    canonical = canonical_url(url)
    assert canonical_url(canonical) == canonical
    scheme, _, rest = canonical.partition("://")
    assert scheme in ("http", "https") and rest.split("/", 1)[0] == rest.split("/", 1)[0].lower()
    assert "#" not in canonical and "utm_" not in canonical


@given(
    scheme=SCHEMES,
    host=HOSTS,
    segments=PATH_SEGMENTS,
    params=PARAMS,
    tracking=TRACKING,
    where=st.randoms(use_true_random=False),
    fragment=st.text(alphabet="abc-#", max_size=6),
)
def test_tracking_parameters_fragments_case_and_default_ports_do_not_change_the_url(
    scheme: str,
    host: str,
    segments: list[str],
    params: list[tuple[str, str]],
    tracking: list[tuple[str, str]],
    where: random.Random,
    fragment: str,
) -> None:
    clean = build_url(scheme, host, "", segments, params)
    mixed = list(params)
    for pair in tracking:
        mixed.insert(where.randint(0, len(mixed)), pair)
    default_port = ":443" if scheme.lower() == "https" else ":80"
    dressed = build_url(scheme.upper(), host.upper(), default_port, segments, mixed) + f"#{fragment}"
    assert canonical_url(dressed) == canonical_url(clean)


@given(text=st.text(max_size=60))
def test_any_text_is_a_canonical_url_or_a_parse_error(text: str) -> None:
    try:
        canonical = canonical_url(text)
    except ParseError as error:
        assert "\n" not in str(error)
    else:
        assert canonical.startswith(("http://", "https://"))


# --- the item key -----------------------------------------------------------------------------------------

OPTIONAL_TEXT = st.one_of(st.none(), st.just(""), st.text(max_size=20))
NEW_ARXIV_IDS = st.builds("{:02d}{:02d}.{:05d}".format, st.integers(7, 99), st.integers(1, 12), st.integers(0, 99999))


@given(
    arxiv_id=st.one_of(st.none(), NEW_ARXIV_IDS),
    repo=st.one_of(st.none(), st.just("Owner/Repo")),
    tag=OPTIONAL_TEXT,
    guid=OPTIONAL_TEXT,
    url=st.one_of(st.none(), URLS),
    title=st.text(max_size=20),
    summary=st.text(max_size=20),
)
def test_the_item_key_is_never_empty_and_takes_the_most_specific_identity(
    arxiv_id: str | None, repo: str | None, tag: str | None, guid: str | None, url: str | None, title: str, summary: str
) -> None:
    key = item_key(source="s", arxiv_id=arxiv_id, repo=repo, tag=tag, guid=guid, url=url, title=title,
                   summary_text=summary)  # fmt: skip
    expected_kinds = (
        ("arxiv",) if arxiv_id
        else ("github",) if repo and tag
        else ("url", "guid") if guid and guid.strip()
        else ("url",) if url
        else ("hash",)
    )  # fmt: skip
    kind, _, identity = key.partition(":")
    assert kind in expected_kinds and identity


@given(base=NEW_ARXIV_IDS, versions=st.lists(st.integers(1, 30), min_size=1, max_size=4), data=st.data())
def test_every_spelling_of_one_arxiv_paper_has_one_key(base: str, versions: list[int], data: st.DataObject) -> None:
    spellings = [
        f"{scheme}://{host}/{kind}/{base}v{version}"
        for version in versions
        for scheme, host, kind in [("https", "arxiv.org", "abs"), ("http", "export.arxiv.org", "abs"),
                                   ("https", "arxiv.org", "pdf")]
    ]  # fmt: skip
    keys = {normalize(RawEntry("s", "Paper", link=link, guid=data.draw(OPTIONAL_TEXT)), kind="blog", now=NOW).key
            for link in spellings}  # fmt: skip
    assert keys == {f"arxiv:{base}"}


@given(url=URLS, tracking=TRACKING, title=st.text(max_size=30), summary=st.text(max_size=30))
def test_a_story_keeps_its_key_however_its_link_is_dressed_and_whenever_it_is_polled(
    url: str, tracking: list[tuple[str, str]], title: str, summary: str
) -> None:
    dressed = url + ("&" if "?" in url else "?") + "&".join(f"{n}={v}" for n, v in tracking) + "#comments"
    first = normalize(RawEntry("s", title, link=url, summary_html=summary), kind="blog", now=NOW)
    later = NOW + timedelta(days=3)
    again = normalize(RawEntry("s", title, link=dressed, summary_html=summary), kind="blog", now=later)
    assert (again.key, again.url, again.content_hash) == (first.key, first.url, first.content_hash)


# --- normalize -------------------------------------------------------------------------------------------

HOSTILE_LINKS = st.one_of(
    st.none(),
    URLS,
    st.sampled_from(
        ["javascript:alert(1)", " JaVaScRiPt:alert(1)", "file:///etc/passwd", "data:text/html,<b>x</b>",
         "/relative/post", "//cdn.example/x", "http://", "https://[::1", "http://x:99999/", "mailto:a@b.example", ""]
    ),
    st.text(max_size=20),
)  # fmt: skip
HTML_PIECES = st.one_of(
    st.text(max_size=15),
    st.sampled_from(
        ["<p>", "</p>", "<script>alert(1)</script>", "<a href='javascript:alert(1)'>x</a>",
         "<a href=\"JaVaScRiPt&#58;alert(2)\">y</a>", "<a href='file:///etc/passwd'>z</a>",
         "<img src=x onerror=alert(1)>",
         "<style>p{}</style>", "&amp;", "&lt;script&gt;", "&nbsp;", "<br>", "<b>", "</div>", "<!--", "-->", "<![CDATA[",
         "\x00", "\x01", "\u2028", "&#xD800;", "&#99999999999;", "<a href='/rel'>r</a>",
         "<iframe src='https://evil.example'></iframe>"]
    ),
)  # fmt: skip
HTML = st.lists(HTML_PIECES, max_size=12).map("".join)
DATES = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 31)),  # naive: read as UTC
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2999, 12, 31),
        timezones=st.just(timezone(timedelta(hours=-11))),
    ),
)
ENTRIES = st.builds(
    RawEntry,
    source=st.just("feed"),
    title=st.one_of(st.text(max_size=30), HTML),
    link=HOSTILE_LINKS,
    guid=st.one_of(OPTIONAL_TEXT, HOSTILE_LINKS),
    summary_html=HTML,
    content_html=st.one_of(st.just(""), HTML),
    authors=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    published=DATES,
    updated=DATES,
    base_url=st.one_of(st.none(), st.just("https://blog.example/posts/"), st.just("javascript:alert(1)")),
    arxiv_id=st.one_of(st.none(), NEW_ARXIV_IDS, st.text(max_size=10)),
)
_HREF = re.compile(r"""href\s*=\s*["']?([^"' >]*)""", re.IGNORECASE)


@settings(max_examples=300)
@given(entry=ENTRIES)
def test_normalize_takes_anything_and_gives_a_safe_item(entry: RawEntry) -> None:
    item = normalize(entry, kind="blog", now=NOW)
    assert normalize(entry, kind="blog", now=NOW) == item  # deterministic
    assert item.key and item.title
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f]", item.title + "".join(item.authors))
    assert item.url == "" or item.url.startswith(("http://", "https://"))
    assert all(href.lower().startswith(("http://", "https://", "mailto:")) for href in _HREF.findall(item.summary_html))
    assert not re.search(r"<\s*(script|iframe|img|style)", item.summary_html, re.IGNORECASE)
    assert len(item.summary_text) <= SUMMARY_TEXT_CAP and len(item.summary_html) <= SUMMARY_HTML_CAP + 1000
    assert item.published is not None and item.published.tzinfo is not None
    assert item.published <= NOW + FUTURE_SKEW


@given(entry=ENTRIES, later=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=400)))
def test_polling_again_later_gives_the_same_key_and_content(entry: RawEntry, later: timedelta) -> None:
    first, again = normalize(entry, kind="blog", now=NOW), normalize(entry, kind="blog", now=NOW + later)
    assert (again.key, again.content_hash, again.summary_html) == (first.key, first.content_hash, first.summary_html)


# --- parsing mangled feeds ----------------------------------------------------------------------------------

FEED = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Blog</title>'
    b"<item><title>First &amp; best</title><link>https://blog.example/1</link><guid>g1</guid>"
    b"<pubDate>Tue, 24 Nov 2026 08:00:00 GMT</pubDate><description>&lt;p&gt;Hello&lt;/p&gt;</description></item>"
    b"<item><title><![CDATA[Second <b>post</b>]]></title><link>/2</link></item></channel></rss>"
)
ATOM = (
    b"<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom'><title>A</title>"
    b"<entry><id>tag:a,2026:1</id><title type='html'>&lt;b&gt;One&lt;/b&gt;</title>"
    b"<link rel='alternate' href='https://a.example/1'/><updated>2026-11-24T08:00:00Z</updated>"
    b"<content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'><p>Body</p></div></content></entry></feed>"
)
JUNK = st.one_of(
    st.binary(max_size=12),
    st.sampled_from(
        [b"<", b">", b"&", b"&#0;", b"&#xD800;", b"]]>", b"<!--", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"\x80",
         b"<item>", b"</item>", b"<entry>", b"<rss>", b"<!DOCTYPE x>", b"<?xml version='1.0' encoding='klingon'?>",
         b"<html>", b"{", b"<![CDATA[", b"xml:base='javascript:x'", b" isPermaLink='false'"]
    ),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    document=st.sampled_from([FEED, ATOM]),
    cuts=st.lists(st.tuples(st.floats(0, 1), JUNK, st.integers(0, 8)), max_size=4),
    truncate=st.floats(0.05, 1),
)
def test_a_mangled_feed_gives_entries_or_a_one_line_parse_error(
    document: bytes, cuts: list[tuple[float, bytes, int]], truncate: float
) -> None:
    for where, junk, removed in cuts:
        at = int(where * len(document))
        document = document[:at] + junk + document[at + removed :]
    document = document[: max(1, int(truncate * len(document)))]
    try:
        parsed = parse_feed(document, source="fuzz", url="https://blog.example/feed")
    except ParseError as error:
        assert str(error).startswith("https://blog.example/feed: ") and "\n" not in str(error)
        return
    for entry in parsed.entries:
        assert normalize(entry, kind="blog", now=NOW).key


# --- reading issue files ------------------------------------------------------------------------------------

ISSUE_LINES = st.sampled_from(
    ["# Trends", "## Latest Releases", "**State Of The Art**", "[Blog] [Title](https://a.example/x)",
     "- [Paper] Title (https://b.example/y)", "Summary text.", "", "---", "Also: [x](y)"]
)  # fmt: skip
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.one_of(ISSUE_LINES, st.text(max_size=20)), max_size=20),
    encoding=ENCODINGS,
    noise=st.binary(max_size=16),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_any_issue_file_reads_without_error(
    tmp_path: Path, lines: list[str], encoding: str, noise: bytes, newline: str
) -> None:
    path = tmp_path / "issue-2024-05-06.md"
    path.write_bytes(newline.join(lines).encode(encoding, errors="replace") + noise)
    result = parse_issues([path], categories=CATEGORIES)
    assert sum(result.sections.values()) == len(result.examples)
    assert all(e.label in CATEGORIES and e.title and e.origin == path.name for e in result.examples)


# --- export, then import-archive: the same items ---------------------------------------------------------


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Storage, Path]]:
    folder = tmp_path_factory.mktemp("round-trip")
    config = folder / "feeds.yaml"
    config.write_text(f'database: "sqlite:///{folder}/db.sqlite"\nmodels_dir: {folder}/models\nsources: []\n')
    settings_ = load_settings(config, env={})
    with open_storage(settings_.database_url) as storage:
        yield settings_, storage, folder


def emptied(storage: Storage) -> Storage:
    with storage.transaction("empty") as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    return storage


STORIES = st.lists(
    st.tuples(st.one_of(st.text(max_size=40), HTML), URLS, HTML, st.sampled_from(CATEGORIES)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(stories=STORIES)
def test_an_exported_draft_imports_back_as_the_accepted_items(
    round_trip: tuple[Settings, Storage, Path], stories: list[tuple[str, str, str, str]]
) -> None:
    settings_, storage, folder = round_trip
    storage = emptied(storage)
    items = [normalize(RawEntry("feed", title, link=url, summary_html=summary), kind="blog", now=NOW)
             for title, url, summary, _ in stories]  # fmt: skip
    assume(len({item.key for item in items}) == len(items))
    storage.store_items(items, NOW)
    ids = {s.item.key: s.id for s in storage.items()}
    for item, (_, _, _, section) in zip(items, stories, strict=True):
        storage.add_decision(ids[item.key], Decision(item.key, "ana", NOW, "accept", section=section))
    draft = folder / "draft.md"
    export(settings_, storage, ExportRequest(fmt="markdown", status="accepted"), NOW, draft)

    result, _ = import_archive(emptied(storage), settings_, [draft], NOW)

    expected = sorted((section, item.title, item.url) for item, (*_, section) in zip(items, stories, strict=True))
    assert sorted((e.label, e.title, e.url) for e in result.examples) == expected
    assert result.unplaced == ()
