"""Bytes -> entries: fastfeedparser first, feedparser as the authoritative fallback.

    parse_feed(body, source=..., url=...)
      1. refuse XML entity declarations (billion laughs, quadratic blowup, XXE) before any parser
      2. JSON Feed 1.0/1.1: read here with `json` (simple, and strict about types)
      3. an HTML page -> ParseError
      4. fastfeedparser (~100x faster); its output is checked and thrown away when it is known to
         be wrong: it raised, found 0 entries, mis-decoded bytes (U+FFFD, C1 controls), lost an
         xhtml/base64 title or a media:description, or the document has xml:base where
         fastfeedparser ignores it, or a Content-Type charset that only feedparser reads
      5. feedparser on the same bytes, with the response headers (charset, Content-Location);
         its HTML sanitizer is off (normalize sanitizes with nh3), its URI resolution on

Neither parser is ever handed a URL or a path: feedparser opens a `bytes` argument as a file
name when it can, so it gets a BytesIO. feedparser dicts and fastfeedparser dicts never leave
this module; callers get RawEntry values.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urljoin

import fastfeedparser
import feedparser

from aggregator.errors import ParseError
from aggregator.types import RawEntry

ParserName = Literal["fastfeedparser", "feedparser", "jsonfeed"]


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    title: str
    link: str | None
    entries: tuple[RawEntry, ...]
    parser: ParserName
    warning: str | None  # e.g. feedparser's bozo reason when entries were still recovered


def parse_feed(
    body: bytes, *, source: str, url: str, headers: Mapping[str, str] | None = None
) -> ParsedFeed:
    """Read one fetched document as a feed. Raises ParseError naming `url` when it is not one."""
    lowered_headers = {key.lower(): value for key, value in (headers or {}).items()}
    base = _document_base(url, lowered_headers)
    if not body or body.isspace():  # body.strip() would copy a whole feed that ends in a newline
        raise ParseError(f"{url}: not a feed: empty document")
    _refuse_entity_declarations(body, url)
    if _looks_like_json(body):
        return _parse_json_feed(body, source=source, url=url, base=base)
    body = _drop_impossible_character_references(body)
    head = _sniff_text(body[:4096])
    if _HTML_START.match(head) and _FEED_ROOT.search(_as_ascii_compatible(body)) is None:
        raise ParseError(f"{url}: not a feed: got an HTML page")
    fast = None
    if not _header_charset_must_win(body, lowered_headers):
        fast = _parse_with_fastfeedparser(body, source=source, base=base)
    if fast is not None:
        return fast
    return _parse_with_feedparser(body, source=source, url=url, base=base, headers=lowered_headers)


# ---------------------------------------------------------------------------- security


# Case-sensitive like every parser here (expat, libxml2 and feedparser's own DOCTYPE rewrite). A
# CDATA section or a comment may mention "<!ENTITY" harmlessly (a post about XML security), so
# those are skipped, unless the document also has a DOCTYPE internal subset, the only place a
# declaration takes effect.
_INTERNAL_SUBSET = re.compile(rb"<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
_ENTITY_SCAN_TOKEN = re.compile(rb"<!\[CDATA\[|<!--|<!ENTITY")


def _refuse_entity_declarations(body: bytes, url: str) -> None:
    """Entity declarations are how billion laughs, the quadratic blowup and external-entity
    reads work; no real feed needs one. A DOCTYPE that only names an external DTD (old RSS 0.91
    feeds) is allowed: neither parser loads external DTDs (tests prove it with a local server)."""
    text = _as_ascii_compatible(body)
    if b"<!ENTITY" not in text:  # the common case: one memchr-speed scan
        return
    if _INTERNAL_SUBSET.search(text) is not None or _declares_outside_cdata(text):
        raise ParseError(f"{url}: document declares XML entities; refused")


def _declares_outside_cdata(text: bytes) -> bool:
    position = 0
    while (token := _ENTITY_SCAN_TOKEN.search(text, position)) is not None:
        found = token.group()
        if found == b"<!ENTITY":
            return True
        closer = b"]]>" if found == b"<![CDATA[" else b"-->"
        end = text.find(closer, token.end())
        if end < 0:
            return False
        position = end + len(closer)
    return False


# A numeric reference to a character XML does not have (a surrogate, NUL or another control, past
# U+10FFFF) makes feedparser raise (UnicodeEncodeError, OverflowError) and lxml give up, losing the
# whole feed for one entry's typo. Such references are dropped, as lxml drops those characters raw.
_CHARACTER_REFERENCE = re.compile(rb"&#(?:[xX][0-9a-fA-F]+|[0-9]+);")


def _drop_impossible_character_references(body: bytes) -> bytes:
    if b"&" not in body:  # one byte: a memchr scan, 30x faster than any longer needle
        return body
    # A feed may hold thousands of references, a few distinct ones, all possible: each distinct one
    # is checked once, and the body is rewritten only when one is impossible. No `b"&#" in body`
    # test first: for this needle the regex scan is 3x faster than `in`.
    impossible = {found for found in set(_CHARACTER_REFERENCE.findall(body)) if not _is_possible_reference(found)}
    if not impossible:
        return body
    return _CHARACTER_REFERENCE.sub(lambda found: b"" if found.group() in impossible else found.group(), body)


def _is_possible_reference(reference: bytes) -> bool:
    """`reference` is "&#...;" as _CHARACTER_REFERENCE matched it."""
    is_hex = reference[2:3] in (b"x", b"X")
    number = reference[3 if is_hex else 2 : -1].lstrip(b"0") or b"0"
    code = int(number, 16 if is_hex else 10) if len(number) <= 8 else -1  # never a giant int()
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)
_WIDE_STARTS: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<", "utf-16-be"),
    (b"<\x00", "utf-16-le"),
)
_EBCDIC_XML_DECL = b"\x4c\x6f\xa7\x94"  # "<?xm" in cp037


def _wide_encoding(body: bytes) -> str | None:
    """The encoding of a document whose markup is not ASCII bytes (UTF-16/32, EBCDIC)."""
    for mark, encoding in _BOMS:
        if body.startswith(mark):
            return encoding
    for start, encoding in _WIDE_STARTS:
        if body.startswith(start):
            return encoding
    return "cp037" if body.startswith(_EBCDIC_XML_DECL) else None


def _as_ascii_compatible(body: bytes) -> bytes:
    """The body with markup as ASCII bytes, so byte patterns find it in UTF-16/32 too."""
    encoding = _wide_encoding(body)
    if encoding is None:
        return body
    return body.decode(encoding, errors="replace").encode("utf-8")


def _sniff_text(head: bytes) -> str:
    encoding = _wide_encoding(head)
    text = head.decode(encoding or "latin-1", errors="replace")
    return text.lstrip("\ufeff\xef\xbb\xbf")


# ---------------------------------------------------------------------------- what is it?

_HTML_START = re.compile(
    r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE | re.DOTALL
)
# An XHTML page can wrap a whole feed (feedparser reads those); only a page without one is refused early.
_FEED_ROOT = re.compile(rb"<(?:[\w.-]+:)?(?:feed|rss|RDF)[\s>]")
_HTML_ANYWHERE = re.compile(r"<html[\s>]|<body[\s>]|<!doctype\s+html", re.IGNORECASE)


def _looks_like_json(body: bytes) -> bool:
    return body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")


def _not_a_feed(url: str, body: bytes) -> ParseError:
    if _HTML_ANYWHERE.search(_sniff_text(body[:8192])):
        return ParseError(f"{url}: not a feed: got an HTML page")
    return ParseError(f"{url}: not a feed: no RSS, Atom or JSON Feed found")


# ---------------------------------------------------------------------------- bases and charsets


def _document_base(url: str, headers: Mapping[str, str]) -> str:
    """Content-Location (itself relative to the URL) wins over the URL, as in HTTP."""
    location = headers.get("content-location", "").strip()
    return urljoin(url, location) if location else url


def absolute_url(link: str | None, base: str | None) -> str | None:
    """`link` resolved against `base`; None stays None, an absolute link is returned as is."""
    if not link:
        return None
    link = link.strip()
    if not base or _ABSOLUTE_URL.match(link):
        return link
    return urljoin(base, link)


_ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_CHARSET_PARAM = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_XML_DECL_ENCODING = re.compile(rb"<\?xml[^>]*encoding\s*=", re.IGNORECASE)
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _header_charset_must_win(body: bytes, headers: Mapping[str, str]) -> bool:
    """A non-UTF-8 charset in Content-Type for a document that declares none: only feedparser
    reads response headers, so it decodes that document."""
    found = _CHARSET_PARAM.search(headers.get("content-type", ""))
    if found is None or found.group(1).lower() in _UTF8_NAMES:
        return False
    if _wide_encoding(body) is not None or body.startswith(b"\xef\xbb\xbf"):
        return False
    return _XML_DECL_ENCODING.search(body, 0, 512) is None


# ---------------------------------------------------------------------------- dates


def utc_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 / RFC 822 string or a time tuple; naive means UTC;
    unparseable gives None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):  # the common case first: hasattr() on a str raises inside
        parsed: datetime | None = _datetime_from_text(value.strip())
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, tuple) or hasattr(value, "tm_year"):
        parsed = _datetime_from_struct(value)
    else:
        parsed = _datetime_from_text(str(value).strip())
    if parsed is None:
        return None
    # Whole seconds: feedparser's time tuples have no fraction, and the two parsers must agree.
    if parsed.microsecond:
        parsed = parsed.replace(microsecond=0)
    if parsed.tzinfo is UTC:  # most feeds: no copy to make
        return parsed
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _datetime_from_struct(value: Any) -> datetime | None:
    try:
        year, month, day, hour, minute, second = tuple(value)[:6]
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _datetime_from_text(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------- fastfeedparser

_ELEMENT_NAME = re.compile(rb"<([A-Za-z_][\w:.-]*)")
_XML_BASE_VALUE = re.compile(rb"xml:base\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_DOCUMENT_WIDE_ELEMENTS = frozenset({"rss", "feed", "rdf", "channel"})
_XHTML_TYPE = re.compile(rb"type\s*=\s*[\"']xhtml[\"']")
_BASE64_MODE = re.compile(rb"mode\s*=\s*[\"']base64[\"']")


def _parse_with_fastfeedparser(body: bytes, *, source: str, base: str) -> ParsedFeed | None:
    """fastfeedparser's reading, or None when it is known to be wrong or incomplete."""
    bases = _xml_bases_fastfeedparser_can_use(body, base)
    if bases is None:
        return None
    try:
        parsed = fastfeedparser.parse(_escape_bare_ampersands(body))
    except Exception:  # it raises ValueError, lxml and encoding errors alike; feedparser decides
        return None
    raw_entries = parsed.get("entries") or []
    if not raw_entries or _lost_text(raw_entries, body):
        return None
    guids_are_links = not _has_permalink_false(body) if b"isPermaLink" in body else True
    entries = tuple(
        _entry_from_fastfeedparser(entry, source=source, base=bases, guids_are_links=guids_are_links)
        for entry in raw_entries
    )
    feed = parsed.get("feed") or {}
    return ParsedFeed(
        title=_text(feed.get("title")),
        link=absolute_url(_text(feed.get("link")) or None, bases),
        entries=entries,
        parser="fastfeedparser",
        warning=None,
    )


# A bare "&" (one that starts no entity or character reference: "R&D", "replay & measure", a query
# string in a link) is not XML, and lxml's recovery drops it with the text after it. fastfeedparser
# is given those escaped, outside CDATA sections and comments (where "&" is literal); feedparser
# reads the original its own way.
_BARE_AMPERSAND = re.compile(rb"&(?!#[0-9]+;|#[xX][0-9a-fA-F]+;|[A-Za-z_][\w.-]*;)")
_LITERAL_START = re.compile(rb"<!\[CDATA\[|<!--")


def _escape_bare_ampersands(body: bytes) -> bytes:
    if b"&" not in body:  # a memchr scan, before the regex's slower one
        return body
    if _wide_encoding(body) is not None or _BARE_AMPERSAND.search(body) is None:
        return body  # UTF-16/32 and EBCDIC markup is not ASCII bytes: left to feedparser's own reading
    pieces: list[bytes] = []
    position = 0
    while (opener := _LITERAL_START.search(body, position)) is not None:
        closer = b"]]>" if opener.group() == b"<![CDATA[" else b"-->"
        end = body.find(closer, opener.end())
        end = len(body) if end < 0 else end + len(closer)  # one pass: an unclosed section ends the scan
        pieces += [_BARE_AMPERSAND.sub(b"&amp;", body[position : opener.start()]), body[opener.start() : end]]
        position = end
    pieces.append(_BARE_AMPERSAND.sub(b"&amp;", body[position:]))
    return b"".join(pieces)


def _xml_bases_fastfeedparser_can_use(body: bytes, base: str) -> str | None:
    """The document's base after feed-level xml:base, or None when xml:base sits on elements
    fastfeedparser ignores (entries, summaries, links): feedparser scopes those correctly.
    fastfeedparser reports xml:base on <content> itself, so that one is fine."""
    position = body.find(b"xml:base")
    while position >= 0:
        element = _element_holding(body, position)
        value = _XML_BASE_VALUE.match(body, position)
        if element in _DOCUMENT_WIDE_ELEMENTS and value is not None:
            written = (value.group(1) or value.group(2) or b"").decode("utf-8", "replace").strip()
            base = urljoin(base, written)
        elif element != "content":
            return None
        position = body.find(b"xml:base", position + 8)
    return base


def _element_holding(body: bytes, attribute_at: int) -> str:
    """Local name of the start tag an attribute at `attribute_at` sits in ("" if none)."""
    tag_start = body.rfind(b"<", 0, attribute_at)
    found = _ELEMENT_NAME.match(body, tag_start) if tag_start >= 0 else None
    if found is None or b">" in body[tag_start:attribute_at]:
        return ""
    return found.group(1).decode("ascii", "replace").rsplit(":", 1)[-1].lower()


def _lost_text(entries: Sequence[Mapping[str, Any]], body: bytes) -> bool:
    """Known fastfeedparser losses: bytes it could not decode (Latin-1 without a declaration
    becomes U+FFFD, windows-1252 quotes read as Latin-1 become C1 controls), titles given as xhtml
    or base64 (it returns them empty or still encoded), text only in media:description. A valid
    UTF-8 document is decoded right."""
    if not _is_utf8(body) and _has_misdecoded_text(entries):
        return True
    # Each whole-body scan costs about 0.5 ns a byte: the cheapest test goes first, and the
    # regex alone is faster than an `in` test before it.
    if _BASE64_MODE.search(body):
        return True
    if not any(_has_text(entry) for entry in entries) and b"media:description" in body:
        return True  # YouTube-style feeds keep their only text there; fastfeedparser skips it
    if all(entry.get("title") for entry in entries):
        return False
    return b"xhtml" in body and _XHTML_TYPE.search(body) is not None


_MISDECODED = re.compile("[\ufffd\x80-\x9f]")


def _has_misdecoded_text(entries: Sequence[Mapping[str, Any]]) -> bool:
    for entry in entries:
        if _MISDECODED.search(entry.get("title") or "") or _MISDECODED.search(entry.get("description") or ""):
            return True
        if any(_MISDECODED.search(str(part.get("value") or "")) for part in entry.get("content") or ()):
            return True
    return False


def _has_text(entry: Mapping[str, Any]) -> bool:
    return bool(entry.get("description") or entry.get("content"))


def _is_utf8(body: bytes) -> bool:
    """A valid UTF-8 document that yields U+FFFD (or a C1 control) really contains one."""
    if body.isascii():  # 50x faster than decoding, and ASCII is UTF-8
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_PERMALINK_FALSE = re.compile(rb"isPermaLink\s*=\s*[\"']false")
_PERMALINK_FALSE_LOWERED = re.compile(rb"ispermalink\s*=\s*[\"']false")


def _has_permalink_false(body: bytes) -> bool:
    """isPermaLink="false" in any letter case. The usual spelling first; then the lowered body,
    because a case-insensitive pattern has no literal to search for and scans 15x slower (1 ms
    for a 180 KB feed whose guids are all isPermaLink="true")."""
    return _PERMALINK_FALSE.search(body) is not None or _PERMALINK_FALSE_LOWERED.search(body.lower()) is not None


def _entry_from_fastfeedparser(
    entry: Mapping[str, Any], *, source: str, base: str, guids_are_links: bool
) -> RawEntry:
    """Mirrors feedparser where the two differ, so an entry keeps its item key whichever parser
    read it: an id without a scheme is resolved against the base (feedparser treats ids as URIs,
    and an RSS guid as the link unless isPermaLink="false"); an id that only repeats the link
    (fastfeedparser copies the link into a missing id) is dropped, as in _entry_from_feedparser."""
    raw_link = _preferred_link(entry)
    link = absolute_url(raw_link, base)
    guid = _text(entry.get("id")) or None
    if guid is not None and guid != raw_link and guids_are_links and not _ABSOLUTE_URL.match(guid):
        guid = urljoin(base, guid)
    if link is None and guid is not None and guids_are_links and guid.lower().startswith(("http://", "https://")):
        link = guid
    content = entry.get("content")
    content_html, content_base = _content_from_parts(content) if content else ("", None)
    # Absent fields skip their helper: this runs for every entry, and most have no authors or tags.
    authors, author, tags, updated = entry.get("authors"), entry.get("author"), entry.get("tags"), entry.get("updated")
    return RawEntry(
        source=source,
        title=_text(entry.get("title")),
        link=link,
        guid=_guid_unless_link(guid, raw_link, link),
        summary_html=_text(entry.get("description")),
        content_html=content_html,
        authors=_author_names(authors or (), author) if authors or author else (),
        published=utc_datetime(entry.get("published")),
        updated=utc_datetime(updated) if updated else None,
        tags=_tag_terms(tags) if tags else (),
        base_url=absolute_url(content_base, base) or base,
    )


def _guid_unless_link(guid: str | None, raw_link: str | None, link: str | None) -> str | None:
    """None when the id only repeats the entry's web address: the link then carries it (and the
    item key is the same), whichever parser filled one from the other."""
    if guid is not None and guid in (raw_link, link) and link and link.lower().startswith(("http://", "https://")):
        return None
    return guid


def _preferred_link(entry: Mapping[str, Any]) -> str | None:
    """The entry's web page: of several alternate links, the HTML one (as feedparser chooses);
    fastfeedparser takes the first, which may be a video."""
    links = entry.get("links") or ()
    if len(links) > 1:
        alternates = [link for link in links if link.get("rel") in (None, "", "alternate") and link.get("href")]
        for link in alternates:
            if str(link.get("type") or "").lower() in ("text/html", "application/xhtml+xml"):
                return _text(link.get("href")) or None
    return _text(entry.get("link")) or None


# ---------------------------------------------------------------------------- feedparser


def _parse_with_feedparser(
    body: bytes, *, source: str, url: str, base: str, headers: Mapping[str, str]
) -> ParsedFeed:
    response_headers = dict(headers)
    response_headers["content-location"] = base  # the only way to give it a base for bytes
    # With any headers at all, feedparser flags a missing Content-Type as bozo; application/xml
    # without a charset leaves the decision to the document, as when there are no headers.
    response_headers.setdefault("content-type", "application/xml")
    try:
        parsed = feedparser.parse(
            io.BytesIO(body),
            response_headers=response_headers,
            resolve_relative_uris=True,
            sanitize_html=False,  # normalize sanitizes with nh3; this is feedparser's slowest part
        )
    except Exception as error:  # its own bugs on hostile bytes, e.g. a garbled encoding name in <?xml ...?>
        reason = f"{type(error).__name__}: {_first_line(error)}"[:200]
        raise ParseError(f"{url}: not a feed: unreadable ({reason})") from None
    raw_entries = parsed.get("entries") or []
    if not raw_entries and not parsed.get("version"):
        raise _not_a_feed(url, body)
    feed = parsed.get("feed") or {}
    entries = tuple(_entry_from_feedparser(entry, source=source, base=base) for entry in raw_entries)
    return ParsedFeed(
        title=_text(feed.get("title")),
        link=_text(feed.get("link")) or None,
        entries=entries,
        parser="feedparser",
        warning=_bozo_reason(parsed),
    )


def _bozo_reason(parsed: Mapping[str, Any]) -> str | None:
    if not parsed.get("bozo"):
        return None
    reason = parsed.get("bozo_exception")
    text = f"{type(reason).__name__}: {reason}" if reason is not None else "malformed document"
    return " ".join(text.split())[:300]


def _entry_from_feedparser(entry: Mapping[str, Any], *, source: str, base: str) -> RawEntry:
    content_html, content_base = _content_from_parts(entry.get("content") or ())
    summary_detail = entry.get("summary_detail") or {}
    raw_link = _text(entry.get("link")) or None
    link = absolute_url(raw_link, base)
    guid = _guid_unless_link(_text(entry.get("id")) or None, raw_link, link)
    return RawEntry(
        source=source,
        title=_text(entry.get("title")),
        link=link,
        guid=guid,
        # Kept as HTML even when feedparser guesses "text/plain" (no tags seen): fastfeedparser
        # does the same, and double-escaped feeds then read "&nbsp;" as a space, not as text.
        summary_html=_text(entry.get("summary")),
        content_html=content_html,
        authors=_author_names(entry.get("authors") or (), entry.get("author")),
        published=utc_datetime(entry.get("published_parsed")) or utc_datetime(entry.get("published")),
        updated=utc_datetime(entry.get("updated_parsed")) or utc_datetime(entry.get("updated")),
        tags=_tag_terms(entry.get("tags") or ()),
        base_url=content_base or summary_detail.get("base") or base,
    )


# ---------------------------------------------------------------------------- JSON Feed


def _parse_json_feed(body: bytes, *, source: str, url: str, base: str) -> ParsedFeed:
    """JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1)."""
    try:
        document = json.loads(body, strict=False)  # raw control characters do occur in feeds
    except (ValueError, UnicodeDecodeError) as error:
        raise ParseError(f"{url}: not a feed: invalid JSON ({_first_line(error)})") from None
    if not isinstance(document, dict) or not _is_json_feed(document):
        raise ParseError(f"{url}: not a feed: JSON without a JSON Feed version or items")
    items = document.get("items") or []
    if not isinstance(items, list):
        raise ParseError(f"{url}: not a feed: JSON Feed 'items' is not a list")
    feed_authors = _json_authors(document)
    entries = tuple(
        _entry_from_json_item(item, source=source, base=base, feed_authors=feed_authors)
        for item in items
        if isinstance(item, dict)
    )
    return ParsedFeed(
        title=_text(document.get("title")),
        link=absolute_url(_text(document.get("home_page_url")) or None, base),
        entries=entries,
        parser="jsonfeed",
        warning=None,
    )


def _is_json_feed(document: Mapping[str, Any]) -> bool:
    version = document.get("version")
    if isinstance(version, str) and "jsonfeed.org/version/" in version:
        return True
    return isinstance(document.get("items"), list) and "title" in document


def _entry_from_json_item(
    item: Mapping[str, Any], *, source: str, base: str, feed_authors: tuple[str, ...]
) -> RawEntry:
    content_html = _text(item.get("content_html"))
    if not content_html and _text(item.get("content_text")):
        content_html = _text_as_html(_text(item.get("content_text")))
    summary = _text(item.get("summary"))
    return RawEntry(
        source=source,
        title=_text(item.get("title")),
        link=absolute_url(_text(item.get("url")) or _text(item.get("external_url")) or None, base),
        guid=_json_id(item.get("id")),
        summary_html=_text_as_html(summary) if summary else "",
        content_html=content_html,
        authors=_json_authors(item) or feed_authors,
        published=utc_datetime(_text(item.get("date_published"))),
        updated=utc_datetime(_text(item.get("date_modified"))),
        tags=tuple(tag.strip() for tag in item.get("tags") or () if isinstance(tag, str) and tag.strip()),
        base_url=base,
    )


def _json_id(value: Any) -> str | None:
    """Ids are strings in the spec; some feeds write numbers."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip() or None


def _json_authors(holder: Mapping[str, Any]) -> tuple[str, ...]:
    """1.1 has `authors` (a list); 1.0 had `author` (one object)."""
    authors = holder.get("authors")
    if not isinstance(authors, list):
        single = holder.get("author")
        authors = [single] if isinstance(single, dict) else []
    names = (_text(author.get("name")) for author in authors if isinstance(author, dict))
    return tuple(name for name in names if name)


def _text_as_html(text: str) -> str:
    return "<p>" + html.escape(text, quote=False).replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p>"


# ---------------------------------------------------------------------------- shared pieces

_HTML_TYPES = ("html", "xhtml", "text/html", "application/xhtml+xml")


def _content_from_parts(parts: Iterable[Mapping[str, Any]]) -> tuple[str, str | None]:
    """The first HTML content (plain text escaped when that is all there is) and its xml:base."""
    first_text: Mapping[str, Any] | None = None
    for part in parts:
        value = _text(part.get("value"))
        if not value:
            continue
        if str(part.get("type") or "text/html").lower() in _HTML_TYPES:
            return value, part.get("base") or None
        if first_text is None:
            first_text = part
    if first_text is not None:
        return _text_as_html(_text(first_text.get("value"))), first_text.get("base") or None
    return "", None


def _author_names(authors: Iterable[Any], author: Any) -> tuple[str, ...]:
    names: list[str] = []
    for detail in authors:
        if isinstance(detail, Mapping):
            name = _text(detail.get("name")) or _text(detail.get("email"))
            if name and name not in names:
                names.append(name)
    if not names and _text(author):
        names.append(_text(author))
    return tuple(names)


def _tag_terms(tags: Iterable[Any]) -> tuple[str, ...]:
    terms: list[str] = []
    for tag in tags:
        term = _text(tag.get("term")) if isinstance(tag, Mapping) else ""
        if term and term not in terms:
            terms.append(term)
    return tuple(terms)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
