"""The newsletter draft in its own shape, readable back by `archive.parse_issue`.

    # Weekly AI, 2024-05-06                     the optional title
    ## State Of The Art                         sections in `categories` order, empty ones left out

    [Paper] [Title](https://...)                one block per item, highest rank first

    Source: arxiv-cs.LG · confidence 0.91       candidate lists only

    Summary cut at a sentence boundary near summary_chars.

    Also: [hn](https://...), [lobsters](https://...)

Items whose section is not among `categories` (or unset) come last under "Unsorted". Titles and
summaries are escaped and folded onto one line, so no text can open a heading, an item, a link or
a list: parse_issue(render_markdown(rows)) gives back the same sections, types, titles and urls.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from urllib.parse import quote

from aggregator.archive import aliases_for_headings, heading_matcher, is_item_type, is_note_line
from aggregator.errors import ExportError
from aggregator.export import ExportRow

DEFAULT_HEADINGS: Mapping[str, str] = MappingProxyType(
    {"State of the Art": "State Of The Art", "Releases": "Latest Releases"}
)
UNSORTED_HEADING = "Unsorted"
FALLBACK_TYPE = "Item"  # when a row's type could not be read back as a `[Type]` tag

_INLINE_SPECIAL = frozenset("\\`*_[]<>~")
_LINE_START_SPECIAL = frozenset("#-+=>|")
_ORDERED_LIST_START = re.compile(r"(\d{1,9})([.)])(?=\s|$)")
_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"'”’)\]]*(?=\s+(\S)|$)")
_CUT_TRIM = " ,;:-–—"
# Words whose period does not end a sentence ("e.g. WikiTQ", "Fig. 3", "J. Smith" via single letters).
_ABBREVIATIONS = frozenset(
    {"e.g", "i.e", "cf", "vs", "fig", "figs", "eq", "al", "mr", "mrs", "ms", "dr", "prof", "approx"}
)


def render_markdown(
    rows: Iterable[ExportRow],
    *,
    categories: Sequence[str],
    headings: Mapping[str, str] = DEFAULT_HEADINGS,
    summary_chars: int = 400,
    candidates: bool = False,
    title: str | None = None,
) -> str:
    """The draft (or, with `candidates`, the candidate list with confidence and source per item)."""
    if summary_chars < 1:
        raise ExportError(f"summary_chars must be at least 1, got {summary_chars}")
    reads_as_heading = heading_matcher(categories, aliases_for_headings(headings))
    blocks: list[str] = []
    if title and title.strip():
        blocks.append("# " + _escape_inline(title))
    for section, section_rows in _group_by_section(rows, categories):
        heading = headings.get(section, section) if section is not None else UNSORTED_HEADING
        blocks.append("## " + _escape_inline(heading))
        for row in sorted(section_rows, key=_rank_order):
            blocks.append(_item_block(row, summary_chars, candidates, reads_as_heading))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def shorten_summary(text: str, limit: int) -> str:
    """`text` on one line, cut near `limit` characters: at the last sentence end before the limit
    (when it keeps at least half), else the first one a little after it, else at a word boundary
    with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    reach = limit + limit // 4
    ends: list[int] = []
    for match in _SENTENCE_END.finditer(text):
        if match.end() > reach:
            break
        if _ends_sentence(text, match):
            ends.append(match.end())
    before = [end for end in ends if end <= limit]
    if before and before[-1] >= limit // 2:
        return text[: before[-1]]
    after = [end for end in ends if end > limit]
    if after:
        return text[: after[0]]
    return _cut_at_word(text, limit)


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    following = match.group(1)
    if following is not None and following.islower():  # "and more. then" is no sentence end
        return False
    words = text[max(0, match.start() - 12) : match.start()].split()
    word = words[-1].lower() if words and not text[match.start() - 1 : match.start()].isspace() else ""
    return not (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()))


def _cut_at_word(text: str, limit: int) -> str:
    cut = text.rfind(" ", 0, limit + 1)
    if cut <= 0:
        cut = limit  # one unbroken token longer than the limit: no word to keep whole
    return text[:cut].rstrip(_CUT_TRIM) + "…"


def _group_by_section(rows: Iterable[ExportRow], categories: Sequence[str]) -> list[tuple[str | None, list[ExportRow]]]:
    """(section, rows) in `categories` order, then the unsorted rest; empty sections left out."""
    by_section: dict[str, list[ExportRow]] = {category: [] for category in categories}
    unsorted: list[ExportRow] = []
    for row in rows:
        if row.section is not None and row.section in by_section:
            by_section[row.section].append(row)
        else:
            unsorted.append(row)
    groups: list[tuple[str | None, list[ExportRow]]] = [
        (section, section_rows) for section, section_rows in by_section.items() if section_rows
    ]
    if unsorted:
        groups.append((None, unsorted))
    return groups


def _rank_order(row: ExportRow) -> tuple[float, int]:
    rank = row.rank if not math.isnan(row.rank) else -math.inf
    return (-rank, row.id)


def _item_block(
    row: ExportRow,
    summary_chars: int,
    candidates: bool,
    reads_as_heading: Callable[[str], bool],
) -> str:
    paragraphs = [_item_line(row)]
    if candidates:
        paragraphs.append(_candidate_line(row))
    summary = _escape_summary(shorten_summary(row.summary, summary_chars))
    if summary and reads_as_heading(summary):
        paragraphs[-1] += "\n" + summary  # kept inside the paragraph, where it cannot open a section
    elif summary:
        paragraphs.append(summary)
    also = _also_line(row)
    if also:
        paragraphs.append(also)
    return "\n\n".join(paragraphs)


def _item_line(row: ExportRow) -> str:
    item_type = " ".join(row.item_type.split())
    if not is_item_type(item_type):
        item_type = FALLBACK_TYPE
    title = " ".join(row.title.split()) or row.url.strip() or "Untitled"
    return f"[{_escape_inline(item_type)}] {_link(title, row.url)}"


def _candidate_line(row: ExportRow) -> str:
    line = "Source: " + (_escape_inline(row.source) or "unknown")
    if row.confidence is not None and math.isfinite(row.confidence):
        line += f" · confidence {row.confidence:.2f}"
    return line


def _also_line(row: ExportRow) -> str:
    seen = {row.url.strip()}
    links: list[str] = []
    for source, url in row.sources:
        if url.strip() in seen:
            continue
        seen.add(url.strip())
        links.append(_link(" ".join(source.split()) or url.strip(), url))
    return "Also: " + ", ".join(links) if links else ""


def _link(text: str, url: str) -> str:
    return f"[{_escape_inline(text)}]({_destination(url)})"


def _destination(url: str) -> str:
    """A link destination: bare when plain, else in <...>; line breaks and controls percent-encoded."""
    url = "".join(
        quote(char) if (char.isspace() and char != " ") or unicodedata.category(char) == "Cc" else char
        for char in url.strip()
    )
    if not any(char in url for char in " ()<>\\"):
        return url
    return "<" + url.replace("\\", "\\\\").replace("<", "\\<").replace(">", "\\>") + ">"


def _escape_inline(text: str) -> str:
    """One line of text with every character that could start Markdown markup backslash-escaped."""
    folded = " ".join(text.split())
    return "".join("\\" + char if char in _INLINE_SPECIAL else char for char in folded)


def _escape_summary(text: str) -> str:
    """Inline escaping plus what only matters at the start of a line: headings, lists, quotes,
    setext underlines, and the export's own `Also:` / `Source:` note lines."""
    escaped = _escape_inline(text)
    if escaped[:1] in _LINE_START_SPECIAL:
        return "\\" + escaped
    ordered = _ORDERED_LIST_START.match(escaped)
    if ordered is not None:
        return escaped[: ordered.end(1)] + "\\" + escaped[ordered.end(1) :]
    if is_note_line(escaped):
        colon = escaped.index(":")
        return escaped[:colon] + "\\" + escaped[colon:]
    return escaped
