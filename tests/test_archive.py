"""Reading past issues: odd formattings (the invented issues under fixtures/issues), the alias
table, what gets reported as unplaced, dates, and that no text whatsoever makes the reader fail."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.archive import (
    DEFAULT_ALIASES,
    aliases_for_headings,
    merge_results,
    normalize_heading,
    parse_issue,
    parse_issues,
)
from aggregator.errors import ParseError

ISSUES = Path(__file__).parent / "fixtures" / "issues"
CATEGORIES = ("Trends", "State of the Art", "Miscellaneous", "Releases")


def items(result_examples: object) -> list[tuple[str, str | None, str, str]]:
    return [(e.label, e.item_type, e.title, e.url) for e in result_examples]  # type: ignore[attr-defined]


def test_markdown_headings_with_emoji_and_bulleted_links() -> None:
    result = parse_issues([ISSUES / "2019-03-11-weekly.md"], categories=CATEGORIES)
    assert items(result.examples) == [
        ("Trends", "Blog", "Gradient descent, explained with marbles", "https://marbles.example/gd"),
        ("Trends", "Paper", "Sparse experts at every scale (v2)", "https://papers.example/moe_(v2)"),
        ("State of the Art", "Paper", "A model that reads tables", "https://papers.example/tables"),
        ("Releases", "Minor Release", "marbles 0.4.0", "https://code.example/marbles/releases/v0.4.0"),
    ]
    first = result.examples[0]
    assert first.summary == "A toy physics demo that makes momentum and learning rates easy to see."
    assert first.origin == "2019-03-11-weekly.md"
    assert first.date == datetime(2019, 3, 11, tzinfo=UTC)  # from the file name


def test_stray_items_unknown_headings_and_sections_outside_categories_are_unplaced() -> None:
    result = parse_issues([ISSUES / "2019-03-11-weekly.md"], categories=CATEGORIES)
    assert result.unplaced == (
        "2019-03-11-weekly.md:1: [Blog] An item before any heading",
        "2019-03-11-weekly.md:18: ## Sponsors",
        "2019-03-11-weekly.md:20: - [Blog] [Our sponsor's new GPU cloud](https://sponsor.example/)",
        "2019-03-11-weekly.md:23: ### Events",
        "2019-03-11-weekly.md:25: - [Conference] [Workshop on tiny models](https://tiny.example/2019)",
    )
    assert dict(result.sections) == {"Trends": 2, "State of the Art": 1, "Miscellaneous": 0, "Releases": 1}


def test_events_are_placed_when_the_categories_have_them() -> None:
    result = parse_issues([ISSUES / "2019-03-11-weekly.md"], categories=(*CATEGORIES, "Events"))
    assert result.sections["Events"] == 1
    assert ("Events", "Conference", "Workshop on tiny models", "https://tiny.example/2019") in items(result.examples)


def test_bold_headings_bold_items_and_urls_on_the_next_line() -> None:
    result = parse_issues([ISSUES / "issue-42.md"], categories=CATEGORIES)
    assert items(result.examples) == [
        ("Trends", "Blog", "Why everyone is fine-tuning small models", "https://blog.example/small-models"),
        ("State of the Art", "Paper", "Depth estimation from a single photo", "https://papers.example/depth"),
        ("Miscellaneous", "Package", "tinyplot: plots in the terminal", "https://code.example/tinyplot"),
        ("Miscellaneous", "Conference talk", "How we label data", "https://talks.example/label"),
    ]
    assert result.examples[0].summary == (
        "Costs fell and the tooling got better. Teams now fine-tune instead of prompting."
    )
    assert {e.date for e in result.examples} == {datetime(2019, 3, 18, tzinfo=UTC)}  # the date line
    assert result.unplaced == ("issue-42.md:1: **The Friday Digest, issue 42**", "issue-42.md:26: **Goodbye**")


def test_plain_headings_numbered_items_trailing_urls_and_heading_items() -> None:
    result = parse_issues([ISSUES / "plain-text-2019-03-25.md"], categories=CATEGORIES)
    assert items(result.examples) == [
        ("Trends", "Blog", "Robots learn to fold laundry", "https://robots.example/laundry"),
        ("Trends", "Blog", "Chatbots in customer service", "https://news.example/chatbots"),
        ("Releases", "Major Release", "framework 2.0", "https://code.example/framework/v2.0.0"),
        ("Releases", "Patch Release", "framework 1.9.3", "https://code.example/framework/v1.9.3"),
        ("Miscellaneous", "Blog", "Reading list for the holidays", ""),
    ]
    assert result.examples[0].summary == "The folding success rate doubled in a year."  # after a blank line
    assert result.unplaced[-1].endswith(":28: [Conference] Spring school on probabilistic models")


def test_many_files_merge_with_summed_counts() -> None:
    result = parse_issues(sorted(ISSUES.glob("*.md")), categories=CATEGORIES)
    assert len(result.examples) == 13
    assert dict(result.sections) == {"Trends": 5, "State of the Art": 2, "Miscellaneous": 3, "Releases": 3}
    assert {e.origin for e in result.examples} == {p.name for p in ISSUES.glob("*.md")}


def test_merge_keeps_order_and_sums() -> None:
    one = parse_issue("# Trends\n[Blog] A", categories=CATEGORIES)
    two = parse_issue("# Trends\n[Blog] B\n# Misc\n[Blog] C", categories=CATEGORIES)
    merged = merge_results([one, two], categories=CATEGORIES)
    assert [e.title for e in merged.examples] == ["A", "B", "C"]
    assert merged.sections["Trends"] == 2 and merged.sections["Miscellaneous"] == 1


def test_a_missing_file_is_one_clear_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "issue-7.md"
    with pytest.raises(ParseError, match=r"issue-7\.md"):
        parse_issues([missing], categories=CATEGORIES)


def test_undecodable_bytes_and_bom_do_not_stop_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "latin1.md"
    path.write_bytes(b"\xef\xbb\xbf# Trends\n[Blog] Caf\xe9 culture\nSummary.\n")
    result = parse_issues([path], categories=CATEGORIES)
    assert result.examples[0].title == "Caf\ufffd culture"


@pytest.mark.parametrize(
    "heading",
    [
        "# State Of The Art",
        "## state-of-the-art",
        "### 🚀 STATE OF THE ART ###",
        "**State of the Art:**",
        "__State Of The Art__",
        "• State of the art:",
        "2. State of the Art",
        "#State of the Art",
        "*State of the Art*",
        "SOTA",
    ],
)
def test_heading_shapes_map_to_the_same_category(heading: str) -> None:
    result = parse_issue(f"{heading}\n[Paper] A result\nIt is good.", categories=CATEGORIES)
    assert items(result.examples) == [("State of the Art", "Paper", "A result", "")]
    assert result.unplaced == ()


@pytest.mark.parametrize(
    ("line", "title", "url"),
    [
        ("[Blog] [Title](https://a.example/x)", "Title", "https://a.example/x"),
        ("- **[Blog] Title**", "Title", ""),
        ("* [Blog] Title (https://a.example/x)", "Title", "https://a.example/x"),
        ("[Blog] Title <https://a.example/x>", "Title", "https://a.example/x"),
        ("[Blog] Title https://a.example/x", "Title", "https://a.example/x"),
        ("• [Blog] Title — [read](https://a.example/x)", "Title", "https://a.example/x"),
        ("[Blog] Title ([read](https://a.example/x))", "Title", "https://a.example/x"),
        ("**[Blog]** *Title*", "Title", ""),
        (
            "🔥 [Blog] [Nested [brackets] title](<https://a.example/a b>)",
            "Nested [brackets] title",
            "https://a.example/a b",
        ),
        (
            "[Blog] [Escaped \\*stars\\* and \\[brackets\\]](https://a.example/x)",
            "Escaped *stars* and [brackets]",
            "https://a.example/x",
        ),
    ],
)
def test_item_line_shapes(line: str, title: str, url: str) -> None:
    result = parse_issue(f"# Trends\n{line}\nSummary.", categories=CATEGORIES)
    assert items(result.examples) == [("Trends", "Blog", title, url)]
    assert result.examples[0].summary == "Summary."


def test_alias_table_is_applied_and_configurable() -> None:
    text = "# Papers of the week\n[Paper] A\n# Latest Releases\n[Minor Release] B"
    default = parse_issue(text, categories=CATEGORIES)
    assert items(default.examples) == [("Releases", "Minor Release", "B", "")]
    assert default.unplaced == ("1: # Papers of the week", "2: [Paper] A")
    custom = parse_issue(
        text, categories=CATEGORIES, aliases={**DEFAULT_ALIASES, "Papers of the week": "State of the Art"}
    )
    assert [e.label for e in custom.examples] == ["State of the Art", "Releases"]


def test_aliases_for_headings_reads_configured_headings_back() -> None:
    aliases = aliases_for_headings({"Trends": "What's moving"})
    result = parse_issue("## What's moving\n[Blog] A", categories=CATEGORIES, aliases=aliases)
    assert [e.label for e in result.examples] == ["Trends"]


def test_bracketed_lines_that_are_not_items() -> None:
    text = "# Trends\n[A link](https://a.example) alone\n[1] A reference\n- [x] a task\n[Blog] Real"
    result = parse_issue(text, categories=CATEGORIES)
    assert [e.title for e in result.examples] == ["Real"]


def test_a_bold_line_inside_a_summary_is_emphasis_not_a_heading() -> None:
    text = "# Trends\n[Blog] A\nFirst line.\n**Why it matters**\nMore.\n[Blog] B"
    result = parse_issue(text, categories=CATEGORIES)
    assert [(e.label, e.title) for e in result.examples] == [("Trends", "A"), ("Trends", "B")]
    assert result.examples[0].summary == "First line. **Why it matters** More."


def test_summary_ends_at_a_blank_line_and_notes_are_not_summary() -> None:
    text = "# Trends\n[Blog] A\nSource: feed · confidence 0.9\nThe summary.\n\nAnother paragraph.\nAlso: [x](https://x)"
    result = parse_issue(text, categories=CATEGORIES)
    assert result.examples[0].summary == "The summary."


def test_date_from_a_title_heading_is_not_an_unplaced_heading() -> None:
    result = parse_issue("# AI Weekly — May 6th, 2024\n## Trends\n[Blog] A", categories=CATEGORIES)
    assert result.examples[0].date == datetime(2024, 5, 6, tzinfo=UTC)
    assert result.unplaced == ()


def test_no_date_anywhere_gives_none() -> None:
    result = parse_issue("# Trends\n[Blog] A\nIn 2024-01-01 terms.", categories=CATEGORIES, origin="issue-7.md")
    assert result.examples[0].date is None


def test_heading_normalization() -> None:
    assert normalize_heading("🔥 1. State-Of-The-Art:") == "state of the art"
    assert normalize_heading("Tools & Libraries") == "tools and libraries"


def test_empty_text_gives_an_empty_result_with_every_category() -> None:
    result = parse_issue("", categories=CATEGORIES)
    assert result.examples == () and result.unplaced == ()
    assert dict(result.sections) == dict.fromkeys(CATEGORIES, 0)


ISSUE_LINES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "# Trends",
            "## Latest Releases",
            "**State Of The Art**",
            "• Misc:",
            "### Events",
            "# Sponsors",
            "- [Blog] [Title](https://a.example)",
            "[Paper] Title (https://b.example)",
            "**[Blog] x**",
            "",
            "---",
            "https://c.example",
            "Also: [x](y)",
            "[",
            "](",
            "[Blog] [",
            "\\",
            "**",
            "Date: 2024-02-30",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(ISSUE_LINES, max_size=25), origin=st.text(max_size=20))
def test_any_text_reads_without_error_and_counts_add_up(lines: list[str], origin: str) -> None:
    result = parse_issue("\n".join(lines), categories=CATEGORIES, origin=origin)
    assert sum(result.sections.values()) == len(result.examples)
    assert all(e.label in CATEGORIES and e.title and e.item_type for e in result.examples)
    assert all(line.strip() for line in result.unplaced)
