"""Export formats: the Markdown draft and candidate list (golden files), CSV / JSON / JSONL, and the
round trip draft -> archive.parse_issue. Set UPDATE_GOLDEN=1 to rewrite the golden files."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.archive import DEFAULT_ALIASES, aliases_for_headings, is_item_type, parse_issue
from aggregator.errors import ExportError
from aggregator.export import COLUMNS, ExportRow
from aggregator.export.markdown import DEFAULT_HEADINGS, render_markdown, shorten_summary
from aggregator.export.tabular import iso_utc, render_csv, render_json, render_jsonl

GOLDEN = Path(__file__).parent / "golden"
CATEGORIES = ("Trends", "State of the Art", "Miscellaneous", "Releases")
HEADINGS = {"State of the Art": "State Of The Art", "Releases": "Latest Releases"}


def make_row(row_id: int, **fields: object) -> ExportRow:
    base = ExportRow(
        id=row_id,
        section="Trends",
        confidence=0.5,
        item_type="Blog",
        title=f"Item {row_id}",
        url=f"https://news.example/{row_id}",
        source="news",
        published=datetime(2024, 5, 6, 9, 30, tzinfo=UTC),
        status="accepted",
        decided_by="ana",
        decided_at=datetime(2024, 5, 7, 8, 0, tzinfo=UTC),
        model_version="2024-05-01.1",
        summary="",
        rank=0.0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def golden_rows() -> list[ExportRow]:
    return [
        make_row(
            1,
            section="State of the Art",
            item_type="Paper",
            title="Reading [tables] with *one* model #1",
            url="https://papers.example/abs/2405.00001",
            source="arxiv-cs.CL",
            confidence=0.912,
            summary="A single model answers questions over tables. It beats the previous best "
            "on three benchmarks, e.g. WikiTQ, by four points. The authors release code and "
            "weights under an open licence so others can build on the work.",
            rank=0.9,
            sources=(("hn", "https://hn.example/item?id=1"), ("lobsters", "https://lobste.rs/s/x")),
        ),
        make_row(
            2,
            section="Trends",
            title="Small models are 🔥 again",
            url="https://blog.example/small_(models)",
            summary="Teams fine-tune small models instead of prompting large ones.",
            rank=0.4,
        ),
        make_row(
            3,
            section="Trends",
            title="- Why leading dashes\nand new lines are fine",
            summary="# Not a heading\n- not a list",
            rank=0.7,
            confidence=None,
        ),
        make_row(
            4,
            section="Releases",
            item_type="Major Release",
            title="framework 3.0.0",
            url="https://code.example/framework/releases/v3.0.0",
            source="github-framework",
            summary="Trends",  # a summary that reads like a heading stays a summary
            rank=0.2,
        ),
        make_row(5, section=None, title="Not yet classified", source="misc-feed", confidence=None),
    ]


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def read_back(markdown: str, headings: dict[str, str] = HEADINGS) -> list[tuple[str, str | None, str, str]]:
    result = parse_issue(markdown, categories=CATEGORIES, aliases=aliases_for_headings(headings))
    return [(e.label, e.item_type, e.title, e.url) for e in result.examples]


# --- Markdown ---------------------------------------------------------------------------------


def test_draft_matches_golden_file() -> None:
    draft = render_markdown(
        golden_rows(), categories=CATEGORIES, headings=HEADINGS, summary_chars=120, title="AI Weekly, 2024-05-06"
    )
    assert_golden("draft.md", draft)


def test_candidate_list_matches_golden_file() -> None:
    listing = render_markdown(
        golden_rows(), categories=CATEGORIES, headings=HEADINGS, summary_chars=120, candidates=True
    )
    assert_golden("candidates.md", listing)


def test_sections_follow_categories_order_and_items_follow_rank() -> None:
    draft = render_markdown(golden_rows(), categories=CATEGORIES, headings=HEADINGS)
    headings = [line for line in draft.splitlines() if line.startswith("## ")]
    assert headings == ["## Trends", "## State Of The Art", "## Latest Releases", "## Unsorted"]
    trends = [title for label, _, title, _ in read_back(draft) if label == "Trends"]
    assert trends == ["- Why leading dashes and new lines are fine", "Small models are 🔥 again"]


def test_empty_export_is_empty_text() -> None:
    assert render_markdown([], categories=CATEGORIES) == ""


def test_candidate_list_shows_confidence_and_source_and_other_sources() -> None:
    listing = render_markdown(golden_rows()[:1], categories=CATEGORIES, candidates=True)
    assert "Source: arxiv-cs.CL · confidence 0.91" in listing
    assert "Also: [hn](https://hn.example/item?id=1), [lobsters](https://lobste.rs/s/x)" in listing


def test_draft_round_trips_through_archive() -> None:
    rows = golden_rows()
    draft = render_markdown(rows, categories=CATEGORIES, headings=HEADINGS, title="AI Weekly, 2024-05-06")
    result = parse_issue(draft, categories=CATEGORIES, aliases=aliases_for_headings(HEADINGS))
    assert read_back(draft) == [
        ("Trends", "Blog", "- Why leading dashes and new lines are fine", "https://news.example/3"),
        ("Trends", "Blog", "Small models are 🔥 again", "https://blog.example/small_(models)"),
        ("State of the Art", "Paper", "Reading [tables] with *one* model #1", "https://papers.example/abs/2405.00001"),
        ("Releases", "Major Release", "framework 3.0.0", "https://code.example/framework/releases/v3.0.0"),
    ]
    summaries = {e.title: e.summary for e in result.examples}
    assert summaries["framework 3.0.0"] == "Trends"
    assert summaries["- Why leading dashes and new lines are fine"] == "# Not a heading - not a list"
    # the unclassified row is reported, not guessed
    assert [line.split(": ", 1)[1] for line in result.unplaced] == [
        "## Unsorted",
        "[Blog] [Not yet classified](https://news.example/5)",
    ]


def test_custom_headings_round_trip_with_their_aliases() -> None:
    headings = {"Trends": "What's moving", "Releases": "Shipped this week"}
    draft = render_markdown(golden_rows(), categories=CATEGORIES, headings=headings)
    assert "## What's moving" in draft
    labels = {label for label, *_ in read_back(draft, headings)}
    assert labels == {"Trends", "State of the Art", "Releases"}


def test_summary_is_cut_at_a_sentence_boundary() -> None:
    text = "First sentence is here. Second one follows it. Third goes on and on and on."
    assert shorten_summary(text, 50) == "First sentence is here. Second one follows it."
    assert shorten_summary(text, 500) == text


def test_abbreviations_do_not_end_a_sentence() -> None:
    text = "Works on tables, e.g. the WikiTQ set, and more. Then another sentence runs long here."
    assert shorten_summary(text, 40) == "Works on tables, e.g. the WikiTQ set, and more."


def test_summary_without_a_sentence_end_is_cut_between_words_with_an_ellipsis() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    short = shorten_summary(text, 20)
    assert short == "one two three four…"
    assert all(word in text.split() for word in short.rstrip("…").split())


def test_summary_line_breaks_are_folded() -> None:
    assert shorten_summary("a\nb\r\n  c", 100) == "a b c"


def test_non_positive_summary_length_is_refused() -> None:
    with pytest.raises(ExportError, match="summary_chars"):
        render_markdown(golden_rows(), categories=CATEGORIES, summary_chars=0)


def test_unreadable_type_tag_falls_back_so_the_item_is_not_lost() -> None:
    draft = render_markdown([make_row(1, item_type="x")], categories=CATEGORIES)
    assert read_back(draft) == [("Trends", "Item", "Item 1", "https://news.example/1")]


def test_urls_with_spaces_and_angle_brackets_survive() -> None:
    row = make_row(1, url="https://odd.example/a b<c>\\d")
    draft = render_markdown([row], categories=CATEGORIES)
    assert read_back(draft)[0][3] == "https://odd.example/a b<c>\\d"


# --- round trip, property-based ----------------------------------------------------------------

TRICKY = st.sampled_from(
    [
        "[",
        "]",
        "*",
        "**",
        "_",
        "__",
        "#",
        "## ",
        "- ",
        "+",
        "`",
        "\\",
        "(",
        ")",
        "<",
        ">",
        "~~",
        "🔥",
        "é",
        "—",
        "\n",
        "\u2028",
        "Trends",
        "[Paper] ",
        "https://x.example/",
        "](",
        "1. ",
        "Also:",
        "Source:",
        ":",
        "!",
        "|",
        "&amp;",
        "---",
        "> ",
        "•",
        " ",
    ]
)
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=6)), min_size=1, max_size=8).map("".join)
TYPES = st.one_of(
    st.sampled_from(["Paper", "Blog", "Technical report", "Major Release", "Conference talk", "Package"]),
    TEXT.filter(lambda text: is_item_type(" ".join(text.split()))),
)
URLS = st.one_of(
    st.just(""),
    st.builds(
        "https://{}.example/{}".format,
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        st.text(alphabet="abc_-()[]/?=&%.~<>\\ ", max_size=16).map(str.strip),
    ),
)
ROWS = st.lists(
    st.builds(
        ExportRow,
        id=st.integers(1, 10_000),
        section=st.one_of(st.none(), st.sampled_from((*CATEGORIES, "Events"))),
        confidence=st.one_of(st.none(), st.floats(0, 1)),
        item_type=TYPES,
        title=TEXT.filter(lambda text: text.strip() != ""),
        url=URLS,
        source=TEXT,
        published=st.none(),
        status=st.just("candidate"),
        decided_by=st.none(),
        decided_at=st.none(),
        model_version=st.none(),
        summary=TEXT,
        rank=st.floats(-10, 10),
        sources=st.lists(st.tuples(TEXT, URLS), max_size=2).map(tuple),
    ),
    max_size=6,
)


def expected_examples(rows: list[ExportRow]) -> list[tuple[str, str, str, str, str]]:
    placed = sorted(
        (row for row in rows if row.section in CATEGORIES),
        key=lambda row: (CATEGORIES.index(row.section or ""), -row.rank, row.id),
    )
    return [
        (
            row.section or "",
            " ".join(row.item_type.split()),
            " ".join(row.title.split()),
            row.url.strip(),
            " ".join(row.summary.split()),
        )
        for row in placed
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(rows=ROWS, candidates=st.booleans())
def test_any_draft_reads_back_as_the_same_items(rows: list[ExportRow], candidates: bool) -> None:
    draft = render_markdown(rows, categories=CATEGORIES, summary_chars=10_000, candidates=candidates)
    result = parse_issue(draft, categories=CATEGORIES, aliases=aliases_for_headings(DEFAULT_HEADINGS))
    got = [(e.label, e.item_type, e.title, e.url, e.summary) for e in result.examples]
    assert got == expected_examples(rows)
    unsorted = sum(row.section not in CATEGORIES for row in rows)
    assert len(result.unplaced) == (unsorted + 1 if unsorted else 0)


# --- CSV / JSON / JSONL ------------------------------------------------------------------------


def tabular_rows() -> list[ExportRow]:
    return [
        make_row(
            7,
            title='Commas, "quotes"\nand a new line',
            source='=HYPERLINK("http://evil.example")',
            decided_by="@ana",
            model_version="-1+2",
            summary="Line one.\nLine two.",
            published=datetime(2024, 5, 6, 11, 30, tzinfo=timezone(timedelta(hours=2))),
            decided_at=datetime(2024, 5, 7, 8, 0),  # naive: taken as UTC
        ),
        make_row(
            8,
            section=None,
            confidence=None,
            title="\tTabbed",
            url="+1",
            decided_by=None,
            decided_at=None,
            published=None,
            model_version=None,
            status="candidate",
        ),
    ]


def test_csv_quotes_and_escapes_exactly() -> None:
    assert render_csv(tabular_rows()) == (
        "id,section,confidence,item_type,title,url,source,published,status,decided_by,decided_at,"
        "model_version\r\n"
        '7,Trends,0.5,Blog,"Commas, ""quotes""\nand a new line",https://news.example/7,'
        '"\'=HYPERLINK(""http://evil.example"")",2024-05-06T09:30:00Z,accepted,\'@ana,'
        "2024-05-07T08:00:00Z,'-1+2\r\n"
        "8,,,Blog,'\tTabbed,'+1,news,,candidate,,,\r\n"
    )


def test_csv_reads_back_in_a_csv_reader_with_formulas_neutralised() -> None:
    parsed = list(csv.reader(io.StringIO(render_csv(tabular_rows()), newline="")))
    assert parsed[0] == list(COLUMNS)
    assert parsed[1][COLUMNS.index("title")] == 'Commas, "quotes"\nand a new line'
    assert parsed[1][COLUMNS.index("source")].startswith("'=")
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in parsed for cell in row)


def test_csv_bom_is_optional() -> None:
    assert render_csv([], bom=True) == "\ufeff" + ",".join(COLUMNS) + "\r\n"
    assert not render_csv([]).startswith("\ufeff")


def test_json_is_an_array_of_objects_with_the_documented_columns() -> None:
    objects = json.loads(render_json(tabular_rows()))
    assert [list(obj) for obj in objects] == [[*COLUMNS, "summary"]] * 2
    first, second = objects
    assert first["id"] == 7 and first["confidence"] == 0.5
    assert first["published"] == "2024-05-06T09:30:00Z"
    assert first["source"].startswith("=")  # JSON is data, not a spreadsheet: values stay as they are
    assert first["summary"] == "Line one.\nLine two."
    assert second["section"] is None and second["confidence"] is None and second["decided_at"] is None


def test_jsonl_has_one_object_per_line_even_with_unicode_line_separators() -> None:
    rows = [*tabular_rows(), make_row(9, title="a\u2028b\u2029c\x85d")]
    text = render_jsonl(rows)
    lines = text.splitlines()
    assert len(lines) == 3
    assert json.loads(lines[2])["title"] == "a\u2028b\u2029c\x85d"
    assert [json.loads(line)["id"] for line in lines] == [7, 8, 9]


def test_datetimes_are_iso_8601_utc() -> None:
    assert iso_utc(datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=-5)))) == "2024-01-02T08:04:05Z"
    assert iso_utc(None) is None


def test_default_aliases_read_the_default_headings() -> None:
    for category, heading in DEFAULT_HEADINGS.items():
        assert DEFAULT_ALIASES[heading.lower()] == category
