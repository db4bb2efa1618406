"""Read past newsletter issues back as labeled examples.

An issue is Markdown-ish text in the newsletter's own shape: a section heading, then items as
`[Type] Title` lines, each followed by its summary paragraph. Issues written by hand over the years
vary (heading markers, emoji, bullets, bold, where the link goes), so the reader is a forgiving
line-by-line state machine that never raises on any text; what it cannot place is reported in
`unplaced` (as "origin:line: text"), never guessed.

    heading   `# Trends`, `### 🔥 Trends`, `**State Of The Art:**`, and, when the name is known
              (a category or an alias) and the line starts a paragraph, `• Latest Releases:`
    item      `[Type] Title`, `[Type] [Title](url)`, `[Type] Title (url)`, `- **[Type] Title**`
              with the url on the next line ...; `### [Type] Title` is an item, not a heading
    summary   the first paragraph after the item line (several lines join with spaces)
    notes     `Also:`, `Source:` and `Confidence:` lines are the export's own notes, not summary
    date      a date in a short line before the first item (`Date: 2024-05-06`, a title heading
              `# Issue 12, May 6, 2024`), else one in the file name

Headings map case-insensitively, ignoring emoji, punctuation, bullets and leading numbers, through
the alias table and then to `categories` by name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from aggregator.errors import ParseError
from aggregator.types import LabeledExample

DEFAULT_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "trends": "Trends",
        "state of the art": "State of the Art",
        "sota": "State of the Art",
        "miscellaneous": "Miscellaneous",
        "misc": "Miscellaneous",
        "releases": "Releases",
        "latest releases": "Releases",
        "new releases": "Releases",
        "events": "Events",
        "upcoming events": "Events",
    }
)

_MAX_HEADING_CHARS = 80  # a longer plain line is prose, whatever words it holds
_MAX_TYPE_CHARS = 60  # `[...]` longer than this opens prose, not an item
_MAX_DATE_LINE_CHARS = 120
_BULLETS_ALONE = "•·◦▪▸►‣"  # bullets that need no space after them
_BULLETS_SPACED = "-*+>–—"  # Markdown bullets (and quote marker): only when a space follows
_SYMBOL_CATEGORIES = ("So", "Sk", "Cf", "Mn", "Me", "Co", "Cs")  # emoji and their joiners/selectors

_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")
_RULE = re.compile(r"(?:[-*_=]\s*){3,}")
_ATX = re.compile(r"(#{1,6})(\s+|$)(.*)")
_ATX_UNSPACED = re.compile(r"#{1,6}(?=[^#\s])(.*)")
_ATX_CLOSING = re.compile(r"\s+#+$")
_NUMBERING = re.compile(r"\d{1,3}[.)]\s+")
_LEADING_EMPHASIS = re.compile(r"(?:\*\*|__|\*|_)+")
_TYPE_CLOSER = re.compile(r"(?:\*\*|__|\*|_)(?=\s|$)")
_TITLE_SEPARATOR = re.compile(r"(?:[:|–—·]|-(?=\s))\s*")
_TRAILING_SEPARATORS = " \t-–—:|·("
_URL = re.compile(r"https?://[^\s<>]+", re.IGNORECASE)
_URL_LABEL = re.compile(r"(?:link|url|source)\s*:\s*", re.IGNORECASE)
_NOTE = re.compile(r"[*_]*(?:also|source|confidence)[*_]*\s*:", re.IGNORECASE)
_FILE_DATE = re.compile(r"(?<!\d)(\d{4})[-_.]?(\d{2})[-_.]?(\d{2})(?!\d)")
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sept", "sep"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_MONTH_FIRST = re.compile(_MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?!\d)", re.IGNORECASE)
_DAY_FIRST = re.compile(r"(?<!\d)(\d{1,2})(?:st|nd|rd|th)?\s+" + _MONTH + r",?\s+(\d{4})(?!\d)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What one or more past issues taught: examples, counts per category, and what was left over."""

    examples: tuple[LabeledExample, ...] = ()
    sections: Mapping[str, int] = field(default_factory=dict)  # category -> examples, every category
    unplaced: tuple[str, ...] = ()  # "origin:line: text" ("line: text" without origin) per unplaced line


def normalize_heading(text: str) -> str:
    """The comparable form of a heading: lower case words, no emoji, punctuation or leading numbers."""
    spaced = "".join(ch.lower() if ch.isalnum() else " " for ch in text.replace("&", " and "))
    words = spaced.split()
    while words and words[0].isdigit():
        words.pop(0)
    return " ".join(words)


def aliases_for_headings(headings: Mapping[str, str], base: Mapping[str, str] = DEFAULT_ALIASES) -> dict[str, str]:
    """`base` plus each configured heading read back as its category (so exported drafts round-trip)."""
    merged = dict(base)
    merged.update({heading: category for category, heading in headings.items()})
    return merged


def heading_matcher(categories: Sequence[str], aliases: Mapping[str, str]) -> Callable[[str], bool]:
    """A test: would this plain line, starting a paragraph, be read as a section heading?"""
    names = _Names(categories, aliases)
    return lambda line: names.is_known(_strip_decorations(line))


def is_item_type(text: str) -> bool:
    """True when `[text]` at the start of a line is read as an item's type tag."""
    return _is_type(text)


def is_note_line(line: str) -> bool:
    """True for `Also:` / `Source:` / `Confidence:` lines, which are notes, never summary text."""
    return _NOTE.match(line.strip()) is not None


def parse_issue(
    text: str,
    *,
    categories: Sequence[str],
    aliases: Mapping[str, str] = DEFAULT_ALIASES,
    origin: str = "",
) -> ArchiveResult:
    """Read one issue's text. `origin` (usually the file name) is stamped on examples and may hold the date."""
    reader = _Reader(_Names(categories, aliases), origin)
    for number, line in enumerate(text.splitlines(), start=1):
        reader.feed(number, line)
    return reader.finish()


def parse_issues(
    paths: Sequence[Path],
    *,
    categories: Sequence[str],
    aliases: Mapping[str, str] = DEFAULT_ALIASES,
) -> ArchiveResult:
    """Read issue files (UTF-8, undecodable bytes replaced) and merge what they hold."""
    results = [
        parse_issue(_read_issue(Path(path)), categories=categories, aliases=aliases, origin=Path(path).name)
        for path in paths
    ]
    return merge_results(results, categories=categories)


def merge_results(results: Iterable[ArchiveResult], *, categories: Sequence[str]) -> ArchiveResult:
    """One result holding every example and unplaced line of `results`, counts summed."""
    examples: list[LabeledExample] = []
    unplaced: list[str] = []
    counts = dict.fromkeys(categories, 0)
    for result in results:
        examples.extend(result.examples)
        unplaced.extend(result.unplaced)
        for name, count in result.sections.items():
            counts[name] = counts.get(name, 0) + count
    return ArchiveResult(tuple(examples), counts, tuple(unplaced))


def _read_issue(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as error:
        raise ParseError(f"issue file {path}: {error.strerror or error}") from None


class _Names:
    """Heading text -> category, through the alias table."""

    def __init__(self, categories: Sequence[str], aliases: Mapping[str, str]) -> None:
        self.categories: tuple[str, ...] = tuple(dict.fromkeys(categories))
        self._by_name: dict[str, str] = {}
        for category in self.categories:
            if normalize_heading(category):
                self._by_name.setdefault(normalize_heading(category), category)
        self._aliases = {
            normalize_heading(alias): normalize_heading(name)
            for alias, name in aliases.items()
            if normalize_heading(alias)
        }

    def category(self, heading: str) -> str | None:
        name = normalize_heading(heading)
        return self._by_name.get(self._aliases.get(name, name))

    def is_known(self, line: str) -> bool:
        """A plain line whose whole text is a category or alias name."""
        if len(line) > _MAX_HEADING_CHARS:
            return False
        name = normalize_heading(line)
        return bool(name) and (name in self._aliases or name in self._by_name)


@dataclass(slots=True)
class _ItemLine:
    item_type: str
    title: str
    url: str | None  # None: the line gave no link, so the next line may hold it


@dataclass(slots=True)
class _OpenItem:
    number: int
    line: str
    parsed: _ItemLine
    summary: list[str] = field(default_factory=list)
    summary_done: bool = False


class _Reader:
    """The state machine: where we are (section, open item, paragraph start) as lines arrive."""

    def __init__(self, names: _Names, origin: str) -> None:
        self.names = names
        self.origin = origin
        self.section: str | None = None
        self.item: _OpenItem | None = None
        self.paragraph_start = True
        self.awaiting_url = False
        self.seen_item = False
        self.date: datetime | None = None
        self.file_date = _date_from_file_name(origin)
        self.examples: list[LabeledExample] = []
        self.unplaced: list[str] = []

    def feed(self, number: int, raw: str) -> None:
        line = raw.strip()
        awaiting_url, self.awaiting_url = self.awaiting_url, False
        if not line or _RULE.fullmatch(line):
            self._end_paragraph()
            return
        paragraph_start, self.paragraph_start = self.paragraph_start, False
        if self._heading_or_item(number, line, paragraph_start):
            return
        if self.item is not None:
            self._item_text(line, awaiting_url)
        elif not self.seen_item and self.date is None and len(line) <= _MAX_DATE_LINE_CHARS:
            self.date = _date_in_text(line)

    def finish(self) -> ArchiveResult:
        self._flush()
        counts = dict.fromkeys(self.names.categories, 0)
        for example in self.examples:
            counts[example.label] += 1
        return ArchiveResult(tuple(self.examples), counts, tuple(self.unplaced))

    def _heading_or_item(self, number: int, line: str, paragraph_start: bool) -> bool:
        """Handle `line` when it opens an item or a section; False when it is plain text."""
        atx = _atx_text(line, self.names)
        if atx is not None:
            item = _split_item(atx)
            if item is not None:
                self._open_item(number, line, item)
            else:
                self._enter_section(number, line, atx)
            return True
        item = _split_item(line)
        if item is not None:
            self._open_item(number, line, item)
            return True
        heading = _emphasized_heading(line, self.names, paragraph_start)
        if heading is None and paragraph_start and self.names.is_known(_strip_decorations(line)):
            heading = line
        if heading is None:
            return False
        self._enter_section(number, line, heading)
        return True

    def _item_text(self, line: str, awaiting_url: bool) -> None:
        assert self.item is not None
        if awaiting_url and self.item.parsed.url is None:
            url = _url_line(line)
            if url is not None:
                self.item.parsed.url = url
                return
        if _NOTE.match(line):
            return
        if not self.item.summary_done:
            self.item.summary.append(_drop_hard_break(line))

    def _end_paragraph(self) -> None:
        self.paragraph_start = True
        if self.item is not None and self.item.summary:
            self.item.summary_done = True

    def _enter_section(self, number: int, line: str, heading: str) -> None:
        self._flush()
        self.paragraph_start = True
        self.section = self.names.category(heading)
        if self.section is not None:
            return
        if not self.seen_item and self.date is None and len(heading) <= _MAX_DATE_LINE_CHARS:
            # an issue's title heading carries its date; it is no section to report
            self.date = _date_in_text(heading)
            if self.date is not None:
                return
        self.unplaced.append(self._where(number, line))

    def _open_item(self, number: int, line: str, parsed: _ItemLine) -> None:
        self._flush()
        self.seen_item = True
        self.item = _OpenItem(number, line, parsed)
        self.awaiting_url = parsed.url is None

    def _flush(self) -> None:
        item, self.item = self.item, None
        if item is None:
            return
        if self.section is None:
            self.unplaced.append(self._where(item.number, item.line))
            return
        summary = _unescape(" ".join(" ".join(item.summary).split()))
        self.examples.append(
            LabeledExample(
                title=item.parsed.title,
                label=self.section,
                summary=summary,
                url=item.parsed.url or "",
                item_type=item.parsed.item_type,
                date=self.date or self.file_date,
                origin=self.origin,
            )
        )

    def _where(self, number: int, line: str) -> str:
        return f"{self.origin}:{number}: {line}" if self.origin else f"{number}: {line}"


def _atx_text(line: str, names: _Names) -> str | None:
    """The text of a `#` heading; `#Trends` (no space) only when the name is known."""
    match = _ATX.fullmatch(line)
    if match is not None:
        return _ATX_CLOSING.sub("", match.group(3)).strip().strip("#").strip()
    unspaced = _ATX_UNSPACED.fullmatch(line)
    if unspaced is not None and names.is_known(unspaced.group(1)):
        return unspaced.group(1).strip()
    return None


def _emphasized_heading(line: str, names: _Names, paragraph_start: bool) -> str | None:
    """`**Trends**`, `__Trends:__`, `🔥 **Trends**:`. Inside a paragraph, and for single `*...*`,
    only a known name counts: a bold line within a summary is emphasis, not a new section."""
    text = _strip_decorations(line).rstrip(": ")
    for marker in ("**", "__", "*", "_"):
        if len(text) > 2 * len(marker) and text.startswith(marker) and text.endswith(marker):
            inner = text[len(marker) : -len(marker)].strip()
            if not inner or marker in inner:
                return None
            if names.is_known(inner) or (len(marker) == 2 and paragraph_start):
                return inner
            return None
    return None


def _strip_decorations(text: str) -> str:
    """Drop leading bullets, emoji and list numbers ("• ", "- ", "🔥 ", "2. ")."""
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace() or char in _BULLETS_ALONE or unicodedata.category(char) in _SYMBOL_CATEGORIES:
            position += 1
        elif char in _BULLETS_SPACED and text[position + 1 : position + 2].isspace():
            position += 2
        elif (numbering := _NUMBERING.match(text, position)) is not None:
            position = numbering.end()
        else:
            break
    return text[position:]


def _split_item(line: str) -> _ItemLine | None:
    """`[Type] Title` in its many shapes, or None when the line is no item."""
    text = _strip_decorations(line)
    emphasis = _LEADING_EMPHASIS.match(text)
    if emphasis is not None:
        text = text[emphasis.end() :]
    if not text.startswith("["):
        return None
    close = _closing_bracket(text, 0, limit=2 * _MAX_TYPE_CHARS + 2, nested=False)
    if close < 0 or text[close + 1 : close + 2] == "(":
        return None  # `[Title](url)` is a link, not a type tag
    item_type = _clean_inline(text[1:close])
    if not _is_type(item_type):
        return None
    rest = text[close + 1 :].lstrip()
    closer = _TYPE_CLOSER.match(rest)  # the `**` of `**[Paper]** Title`
    if closer is not None:
        rest = rest[closer.end() :].lstrip()
    title, url = _title_and_url(rest)
    if not title:
        return None
    return _ItemLine(item_type, title, url)


def _is_type(text: str) -> bool:
    return 1 < len(text) <= _MAX_TYPE_CHARS and any(ch.isalpha() for ch in text) and "://" not in text


def _title_and_url(rest: str) -> tuple[str, str | None]:
    """Split what follows `[Type]` into a title and the url it names (None when it names none)."""
    if rest.startswith("["):
        link = _parse_link(rest, 0)
        if link is not None:
            return _clean_inline(link[0]), link[1]
    separator = _TITLE_SEPARATOR.match(rest)
    if separator is not None:
        rest = rest[separator.end() :]
    title, trailing_url = _trailing_url(_strip_trailing_emphasis(rest.rstrip()))
    title = _strip_trailing_emphasis(title.rstrip(_TRAILING_SEPARATORS)).rstrip(_TRAILING_SEPARATORS)
    return _clean_inline(title), trailing_url


def _trailing_url(text: str) -> tuple[str, str | None]:
    """`Title [link](url)`, `Title (url)`, `Title <url>`, `Title url`: the url at the end, if any."""
    link = _trailing_link(text)
    if link is not None:
        return link
    if text.endswith(")") or text.endswith(">"):
        opener = text.rfind("(" if text.endswith(")") else "<")
        inner = text[opener + 1 : -1].strip().strip("<>").strip()
        if opener >= 0 and _URL.fullmatch(inner):
            return text[:opener], inner
        return text, None
    parts = text.rsplit(None, 1)
    if len(parts) == 2 and _URL.fullmatch(parts[1]):
        return parts[0], parts[1]
    return text, None


def _trailing_link(text: str) -> tuple[str, str] | None:
    """`Title [paper](url)` or `Title ([paper](url))`: title before the link (or its text), url."""
    core = text.rstrip(" .")
    for candidate in (core, core[:-1].rstrip()):  # the second drops the `)` of `([paper](url))`
        if not candidate.endswith(")"):
            continue
        middle = candidate.rfind("](")
        opener = _opening_bracket(candidate, middle) if middle > 0 else -1
        link = _parse_link(candidate, opener) if opener >= 0 else None
        if link is None or link[2] != len(candidate):
            continue
        label, url, _end = link
        before = candidate[:opener].rstrip(_TRAILING_SEPARATORS)
        return (before if before.strip() else label), url
    return None


def _parse_link(text: str, start: int) -> tuple[str, str, int] | None:
    """`[label](destination)` at `start`: (label, url, index after the link), or None."""
    close = _closing_bracket(text, start, limit=len(text), nested=True)
    if close < 0 or text[close + 1 : close + 2] != "(":
        return None
    destination = _parse_destination(text, close + 2)
    if destination is None:
        return None
    url, end = destination
    return text[start + 1 : close], url, end


def _parse_destination(text: str, start: int) -> tuple[str, int] | None:
    """A link destination from just after `(`: `<url>` or a bare url with balanced parentheses,
    then an optional title, then `)`. Returns (url, index after `)`)."""
    position = start
    while position < len(text) and text[position] == " ":
        position += 1
    if text[position : position + 1] == "<":
        end = _unescaped(text, ">", position + 1)
        if end < 0:
            return None
        url, position = text[position + 1 : end], end + 1
    else:
        begin, depth = position, 0
        while position < len(text):
            char = text[position]
            if char == "\\" and position + 1 < len(text):
                position += 2
                continue
            if char.isspace() or (char == ")" and depth == 0):
                break
            depth += {"(": 1, ")": -1}.get(char, 0)
            position += 1
        url = text[begin:position]
    closing = text.find(")", position)  # skips an optional link title
    if closing < 0:
        return None
    return _unescape(url).strip(), closing + 1


def _closing_bracket(text: str, start: int, *, limit: int, nested: bool) -> int:
    """Index of the `]` closing the `[` at `start` (backslash escapes honoured), or -1."""
    depth = 0
    position = start
    end = min(len(text), start + limit)
    while position < end:
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "[":
            if depth and not nested:
                return -1
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return position
        position += 1
    return -1


def _opening_bracket(text: str, close: int) -> int:
    """Index of the `[` opening the `]` at `close`, walking back (escaped brackets skipped), or -1."""
    depth = 0
    for position in range(close, -1, -1):
        char = text[position]
        if char not in "[]" or _is_escaped(text, position):
            continue
        depth += 1 if char == "]" else -1
        if depth == 0:
            return position
    return -1


def _is_escaped(text: str, position: int) -> bool:
    backslashes = 0
    while position - backslashes - 1 >= 0 and text[position - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _unescaped(text: str, char: str, start: int) -> int:
    position = text.find(char, start)
    while position >= 0 and _is_escaped(text, position):
        position = text.find(char, position + 1)
    return position


def _url_line(line: str) -> str | None:
    """The url of a line that holds only a link: `https://...`, `<...>`, `(...)`, `[text](...)`, `Link: ...`."""
    text = _strip_decorations(line)
    label = _URL_LABEL.match(text)
    if label is not None:
        text = text[label.end() :]
    text = _strip_trailing_emphasis(text[_leading_emphasis_end(text) :]).strip()
    if text.startswith("["):
        link = _parse_link(text, 0)
        return link[1] if link is not None and link[2] == len(text) else None
    inner = text[1:-1].strip() if text[:1] + text[-1:] in ("<>", "()") else text
    return inner if _URL.fullmatch(inner) else None


def _leading_emphasis_end(text: str) -> int:
    match = _LEADING_EMPHASIS.match(text)
    return match.end() if match is not None else 0


def _strip_trailing_emphasis(text: str) -> str:
    """Drop a closing `**`/`__` left by bold around a whole line (an escaped `\\*` stays)."""
    while text.endswith(("**", "__")) and not _is_escaped(text, len(text) - 2):
        text = text[:-2].rstrip()
    return text


def _clean_inline(text: str) -> str:
    """Markdown inline text -> plain: whitespace folded, wrapping emphasis dropped, escapes undone."""
    text = " ".join(text.split())
    changed = True
    while changed:
        changed = False
        for marker in ("**", "__", "*", "_"):
            if len(text) > 2 * len(marker) and text.startswith(marker) and text.endswith(marker):
                if _is_escaped(text, len(text) - len(marker)):
                    continue
                text = text[len(marker) : -len(marker)].strip()
                changed = True
    return _unescape(text)


def _unescape(text: str) -> str:
    return _ESCAPED.sub(r"\1", text)


def _drop_hard_break(line: str) -> str:
    """A trailing unescaped backslash is a Markdown line break, not text."""
    return line[:-1].rstrip() if line.endswith("\\") and not _is_escaped(line, len(line) - 1) else line


def _date_in_text(text: str) -> datetime | None:
    """The first calendar date written in `text` (ISO, "May 6, 2024", "6 May 2024"), as UTC midnight."""
    for pattern, order in ((_ISO_DATE, "ymd"), (_MONTH_FIRST, "mdy"), (_DAY_FIRST, "dmy")):
        for match in pattern.finditer(text):
            parts = dict(zip(order, match.groups(), strict=True))
            date = _make_date(parts["y"], parts["m"], parts["d"])
            if date is not None:
                return date
    return None


def _date_from_file_name(name: str) -> datetime | None:
    for match in _FILE_DATE.finditer(name):
        date = _make_date(*match.groups())
        if date is not None:
            return date
    return _date_in_text(name.replace("_", " ").replace("-", " "))


def _make_date(year: str, month: str, day: str) -> datetime | None:
    month_number = _MONTHS.get(month.lower().rstrip("."), 0) if not month.isdigit() else int(month)
    try:
        date = datetime(int(year), month_number, int(day), tzinfo=UTC)
    except ValueError:
        return None
    return date if 1990 <= date.year <= 2100 else None
