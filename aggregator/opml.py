"""OPML in and out: feed subscriptions to and from other readers.

Import adds `kind: feed` sources to feeds.yaml with ruamel.yaml's round-trip mode, so the user's
comments and ordering survive. Only http(s) URLs are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from lxml import etree
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from aggregator.errors import ConfigError
from aggregator.types import Source


@dataclass(frozen=True, slots=True)
class Outline:
    title: str
    url: str


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: tuple[str, ...]  # source names written to feeds.yaml
    skipped: tuple[str, ...]  # "url: reason" for outlines not added


def read_opml(data: bytes, origin: str) -> list[Outline]:
    """Every outline with an xmlUrl, in document order. Entities and DTDs are never expanded."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ConfigError(f"{origin}: not valid OPML: {exc}") from None
    if root is None or etree.QName(root).localname.lower() != "opml":
        raise ConfigError(f"{origin}: not an OPML document (no <opml> root)")
    outlines = []
    for node in root.iter("outline"):
        url = (node.get("xmlUrl") or node.get("xmlurl") or "").strip()
        if url:
            title = (node.get("title") or node.get("text") or url).strip()
            outlines.append(Outline(title, url))
    return outlines


def write_opml(sources: Sequence[Source], title: str = "aggregator sources") -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        f"  <head><title>{_escape(title)}</title></head>",
        "  <body>",
    ]
    for source in sources:
        kind = "rss"
        lines.append(
            f"    <outline type={quoteattr(kind)} text={quoteattr(source.name)} "
            f"title={quoteattr(source.name)} xmlUrl={quoteattr(source.url)}/>"
        )
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines)


def import_into_config(config_file: Path, outlines: Sequence[Outline]) -> ImportResult:
    """Append new feed sources to feeds.yaml, keeping its comments. Known URLs and non-http(s) are skipped."""
    yaml = YAML()
    yaml.preserve_quotes = True
    try:
        document = yaml.load(config_file.read_text(encoding="utf-8")) or CommentedMap()
    except FileNotFoundError:
        document = CommentedMap()
    except Exception as exc:
        raise ConfigError(f"{config_file}: cannot read config for import: {exc}") from None
    sources = document.setdefault("sources", CommentedSeq())
    known_urls = {s.get("url") for s in sources if isinstance(s, dict)}
    names = {s.get("name") for s in sources if isinstance(s, dict)}
    added: list[str] = []
    skipped: list[str] = []
    for outline in outlines:
        reason = _refusal(outline.url, known_urls)
        if reason:
            skipped.append(f"{outline.url}: {reason}")
            continue
        name = _unique_name(outline.title, names)
        entry = CommentedMap()
        entry.fa.set_flow_style()
        entry.update({"name": name, "kind": "feed", "url": outline.url})
        sources.append(entry)
        names.add(name)
        known_urls.add(outline.url)
        added.append(name)
    if added:
        tmp = config_file.with_name(config_file.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            yaml.dump(document, out)
        tmp.replace(config_file)
    return ImportResult(tuple(added), tuple(skipped))


def _refusal(url: str, known: set[object]) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "only http(s) URLs are accepted"
    if url in known:
        return "already a source"
    return None


def _unique_name(title: str, taken: set[object]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "-", title.lower()).strip("-.") or "feed"
    base = base[:60]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
