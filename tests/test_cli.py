"""The command line: reports, JSON outputs, exit codes, one-line errors, OPML, and the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aggregator.cli import main
from tests.server import LoopbackServer
from tests.test_pipeline import releases, rss, serve_arxiv

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture
def config(tmp_path: Path, loopback: LoopbackServer) -> Path:
    loopback.add("/blog.xml", rss(4), etag='"v1"')
    loopback.add("/lib.atom", releases("example/lib", ["v1.0.0", "v1.1.0"]))
    loopback.add("/down.xml", "nope", status=503, headers={"Retry-After": "120"})
    serve_arxiv(loopback, ["2611.00001v1", "2611.00002v1"], page_size=5)
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"""# my newsletter sources
database: sqlite:///agg.db
models_dir: models
fetch: {{timeout: 5, allow_private_addresses: true}}
arxiv: {{api_url: "{loopback.url('/api/query')}", delay_seconds: 0.01}}
sources:
  - {{name: blog, kind: feed, url: "{loopback.url('/blog.xml')}"}}  # the team blog
  - {{name: lib, kind: github, repo: example/lib, url: "{loopback.url('/lib.atom')}"}}
  - {{name: down, kind: feed, url: "{loopback.url('/down.xml')}"}}
  - {{name: papers, kind: arxiv, query: "cat:cs.CL", max_results: 2}}
""",
        encoding="utf-8",
    )
    return path


def invoke(config: Path, *args: str) -> click.testing.Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


def test_run_prints_a_report_and_exits_0_despite_a_failed_source(config: Path) -> None:
    result = invoke(config, "run")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert re.search(r"blog\s+new\s+4\s+0\s+0", lines["blog"])
    assert "HTTP 503" in lines["down"] and "retry after 120 s" in lines["down"]
    assert "4 sources, 8 new, 0 updated, 1 failed" in result.output
    second = invoke(config, "run", "--json")
    report = json.loads(second.output)
    assert {s["name"]: s["status"] for s in report["sources"]}["blog"] == "not_modified"
    assert report["new"] == 0


def test_strict_exits_2_when_a_source_failed(config: Path) -> None:
    assert invoke(config, "run", "--strict").exit_code == 2
    assert invoke(config, "poll", "blog", "--strict").exit_code == 0


def test_sources_json_shows_health(config: Path) -> None:
    invoke(config, "run")
    rows = [json.loads(line) for line in invoke(config, "sources", "--json").output.splitlines()]
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"blog", "lib", "down", "papers"}
    assert by_name["blog"]["items"] == 4 and by_name["blog"]["last_success"] and by_name["blog"]["error_count"] == 0
    assert by_name["down"]["error_count"] == 1 and "HTTP 503" in by_name["down"]["last_error"]
    assert by_name["blog"]["url"].endswith("/blog.xml")
    table = invoke(config, "sources").output
    assert "down" in table and "HTTP 503" in table


def test_items_json_prints_every_item_unless_limited(config: Path) -> None:
    invoke(config, "run")
    rows = [json.loads(line) for line in invoke(config, "items", "--json").output.splitlines()]
    assert len(rows) == 8
    assert {"id", "title", "url", "source", "published", "kind"} <= set(rows[0])
    assert {row["kind"] for row in rows} == {"blog", "release", "paper"}
    assert len(invoke(config, "items", "--json", "--limit", "3").output.splitlines()) == 3
    found = [json.loads(line) for line in invoke(config, "items", "Post 2", "--json").output.splitlines()]
    assert [row["title"] for row in found] == ["Post 2"]
    assert "Post 1" in invoke(config, "items", "--source", "blog").output


def test_status_json(config: Path) -> None:
    invoke(config, "run")
    status = json.loads(invoke(config, "status", "--json").output)
    assert status["items"] == 8
    assert status["runs"][0]["new"] == 8 and status["runs"][0]["failed"] == 1
    assert [s["name"] for s in status["sources"]["failing"]] == ["down"]
    assert status["model"]["version"] is None
    assert status["next_jobs"][0]["job"] == "nightly"
    assert "items stored: 8" in invoke(config, "status").output


def test_config_errors_are_one_line_and_exit_1(config: Path) -> None:
    config.write_text(config.read_text().replace("kind: github", "knd: github"), encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "run"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert re.match(r"error: .*feeds.yaml:\d+: sources\[1\]\.knd: unknown key \(did you mean 'kind'\?\)", result.output)


def test_missing_config_and_unknown_source(tmp_path: Path, config: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "none.yaml"), "run"])
    assert result.exit_code == 1 and "config file not found" in result.output
    result = CliRunner().invoke(main, ["--config", str(config), "poll", "nosuch"])
    assert result.exit_code == 1 and "no source named 'nosuch'" in result.output


def test_config_check_and_db_upgrade(config: Path) -> None:
    out = invoke(config, "config", "check").output
    assert "ok (4 sources: 1 arxiv, 2 feed, 1 github)" in out
    assert "database at revision" in invoke(config, "db", "upgrade").output


def test_opml_import_keeps_comments_and_refuses_non_http(config: Path, tmp_path: Path) -> None:
    opml = tmp_path / "subs.opml"
    opml.write_text(
        """<?xml version="1.0"?><opml version="2.0"><head><title>x</title></head><body>
        <outline text="ML"><outline text="Distill Blog" xmlUrl="https://distill.pub/rss.xml"/>
        <outline text="Local" xmlUrl="file:///etc/passwd"/>
        <outline text="Again" xmlUrl="https://distill.pub/rss.xml"/></outline></body></opml>""",
        encoding="utf-8",
    )
    out = invoke(config, "sources", "import", str(opml)).output
    assert "added distill-blog" in out and "1 added, 2 skipped" in out
    assert "only http(s) URLs are accepted" in out and "already a source" in out
    text = config.read_text()
    assert "# my newsletter sources" in text and "# the team blog" in text
    assert "ok (5 sources" in invoke(config, "config", "check").output
    exported = invoke(config, "sources", "export").output
    assert 'xmlUrl="https://distill.pub/rss.xml"' in exported and exported.startswith("<?xml")


def test_opml_with_entities_is_refused_cleanly(config: Path, tmp_path: Path) -> None:
    opml = tmp_path / "evil.opml"
    opml.write_text('<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                    '<opml><body><outline text="&x;" xmlUrl="https://e.org/f"/></body></opml>')  # fmt: skip
    result = CliRunner().invoke(main, ["--config", str(config), "sources", "import", str(opml)])
    assert "root:" not in result.output  # the file was never read into the config
    assert "root:" not in config.read_text()


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        found.append((full, command))
        if isinstance(command, click.Group):
            found += _commands(command, full + " ")
    return found


@pytest.mark.parametrize(("name", "command"), _commands(main), ids=[n for n, _ in _commands(main)])
def test_every_command_has_help_and_is_in_the_readme(name: str, command: click.Command) -> None:
    assert command.help, f"`aggregator {name}` has no help text"
    assert f"aggregator {name}" in README.read_text(encoding="utf-8"), f"`aggregator {name}` is not in README.md"
