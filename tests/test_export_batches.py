"""`aggregator export` over a small fixture database: the exact draft, candidate lists, stable
columns, recorded batches with --since-last, files written into a folder, the round trip."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import main
from aggregator.config import Settings, load_settings
from aggregator.export import COLUMNS
from aggregator.export.batches import ExportRequest, export
from aggregator.storage import Storage, open_storage
from aggregator.types import Decision, Item, Prediction

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
DRAFT = """\
## Trends

[Blog] [Agents at work: what changed in 2026](https://blog.example.org/agents)

Companies moved agents from demos to production. The post surveys twelve deployments.

## State Of The Art

[Paper] [Sparse Experts at Scale](https://arxiv.org/abs/2611.01234)

A sparse mixture of experts matches dense models ten times its size.

## Latest Releases

[Minor Release] [lib v2.3.0](https://github.com/org/lib/releases/tag/v2.3.0)

Faster loading, "quoted" notes, and a fix, with commas.
"""


def item(key: str, title: str, url: str, source: str, kind: str, summary: str, hours: int) -> Item:
    return Item(key=key, title=title, url=url, source=source, kind=kind, summary_text=summary,  # type: ignore[arg-type]
                published=NOW - timedelta(hours=hours), content_hash=key)  # fmt: skip


FIXTURE = [
    (item("url:https://blog.example.org/agents", "Agents at work: what changed in 2026", "https://blog.example.org/agents",
          "blog", "blog", "Companies moved agents from demos to production. The post surveys twelve deployments.", 5),
     "Trends", "Blog"),
    (item("arxiv:2611.01234", "Sparse Experts at Scale", "https://arxiv.org/abs/2611.01234", "arxiv-cl", "paper",
          "A sparse mixture of experts matches dense models ten times its size.", 8), "State of the Art", "Paper"),
    (item("github:org/lib@v2.3.0", "lib v2.3.0", "https://github.com/org/lib/releases/tag/v2.3.0", "lib", "release",
          'Faster loading, "quoted" notes, and a fix, with commas.', 2), "Releases", "Minor Release"),
    (item("url:https://evil.example.org/x", "=HYPERLINK(\"http://evil\")", "https://evil.example.org/x", "blog", "blog",
          "Line one\nline two, with a comma", 1), "Miscellaneous", "Blog"),
]  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "feeds.yaml"
    path.write_text(f"database: sqlite:///{tmp_path}/x.db\nmodels_dir: models\nexport_dir: out\n", encoding="utf-8")
    return load_settings(path, env={})


@pytest.fixture
def store(settings: Settings) -> Storage:
    storage = open_storage(settings.database_url)
    storage.store_items([i for i, _, _ in FIXTURE], NOW - timedelta(days=1))
    by_key = {s.item.key: s.id for s in storage.items()}
    storage.save_predictions(
        [(by_key[i.key], Prediction(i.key, section, 0.9, tag, "v0001")) for i, section, tag in FIXTURE], NOW
    )
    for i, section, tag in FIXTURE[:3]:  # the first three are accepted; the formula-looking one stays queued
        storage.add_decision(by_key[i.key], Decision(i.key, "ana", NOW, "accept", section=section, item_type=tag))
    return storage


def cli(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(main, ["--config", str(settings.path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_markdown_draft_is_exactly_the_newsletters_shape(settings: Settings, store: Storage) -> None:
    assert cli(settings, "export") == DRAFT


def test_candidate_list_shows_confidence_and_source(settings: Settings, store: Storage) -> None:
    out = cli(settings, "export", "--status", "candidates")
    assert out.startswith("# Candidates 20")
    assert "## Miscellaneous" in out and "confidence 0.90" in out and "Source: blog" in out
    assert "Sparse Experts" not in out  # accepted items are not candidates any more


def test_csv_has_stable_columns_quotes_and_defused_formulas(settings: Settings, store: Storage) -> None:
    rows = list(csv.reader(io.StringIO(cli(settings, "export", "--format", "csv", "--status", "all"))))
    assert tuple(rows[0]) == COLUMNS
    by_title = {row[4]: dict(zip(COLUMNS, row, strict=True)) for row in rows[1:]}
    assert "'=HYPERLINK(\"http://evil\")" in by_title  # a spreadsheet shows it, never runs it
    release = by_title["lib v2.3.0"]
    assert (release["status"], release["decided_by"], release["section"]) == ("accepted", "ana", "Releases")


def test_json_and_jsonl_carry_the_columns_and_summary(settings: Settings, store: Storage) -> None:
    records = json.loads(cli(settings, "export", "--format", "json", "--status", "all"))
    assert len(records) == 4 and set(records[0]) == {*COLUMNS, "summary"}
    lines = cli(settings, "export", "--format", "jsonl", "--section", "Releases").splitlines()
    assert [json.loads(line)["title"] for line in lines] == ["lib v2.3.0"]


def test_since_last_gives_only_what_is_new(settings: Settings, store: Storage) -> None:
    export(settings, store, ExportRequest(), NOW)
    assert cli(settings, "export", "--since-last").strip() == ""
    later = datetime.now(UTC) + timedelta(minutes=1)  # the CLI records its exports at the real time
    store.store_items([item("url:https://blog.example.org/new", "A new post", "https://blog.example.org/new",
                            "blog", "blog", "Fresh.", 0)], later)  # fmt: skip
    new_id = next(s.id for s in store.items() if s.item.title == "A new post")
    store.add_decision(new_id, Decision("k", "ana", later, "accept", section="Trends", item_type="Blog"))
    out = cli(settings, "export", "--since-last")
    assert "A new post" in out and "Sparse Experts" not in out
    history = cli(settings, "exports")
    assert "since_last=True" in history and "markdown" in history


def test_output_folder_gets_a_dated_file_written_whole(settings: Settings, store: Storage, tmp_path: Path) -> None:
    folder = tmp_path / "drafts"
    err = CliRunner().invoke(main, ["--config", str(settings.path), "export", "-o", f"{folder}/"]).output
    files = list(folder.iterdir())
    assert len(files) == 1 and files[0].name.startswith("export-") and files[0].suffix == ".md"
    assert files[0].read_text(encoding="utf-8") == DRAFT and "wrote 3 items" in err


def test_a_draft_reads_back_as_the_same_sections_types_and_titles(
    settings: Settings, store: Storage, tmp_path: Path
) -> None:
    draft = tmp_path / "2026-11-26.md"
    draft.write_text(cli(settings, "export"), encoding="utf-8")
    data = json.loads(cli(settings, "learn", "import-archive", "--json", str(draft)))
    assert data["sections"] == {"Trends": 1, "State of the Art": 1, "Miscellaneous": 0, "Releases": 1}
    assert data["unplaced"] == []
    titles = {(e.label, e.item_type, e.title) for e in store.examples()}
    assert titles == {(section, tag, i.title) for i, section, tag in FIXTURE[:3]}


def test_unknown_section_is_a_clear_error(settings: Settings, store: Storage) -> None:
    result = CliRunner().invoke(main, ["--config", str(settings.path), "export", "--section", "Gossip"])
    assert result.exit_code == 1 and "unknown section 'Gossip'" in result.output
