"""Hostile input and faults (issue 8), each case against real loopback servers.

Every case runs the real command, `aggregator run --json`, over one hostile source beside a good
feed, then reads `aggregator sources --json`; every case expects the same:

- the run completes (exit 0);
- the bad source has a clear one-line error, the same in the report and in `sources`;
- the good source in the same run is stored in full.

Groups: XML and content, network, arXiv, state (database, model files, config).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aggregator import fetch
from aggregator.classify.registry import CURRENT_FILE, METADATA_FILE, MODEL_FILE, Registry
from aggregator.classify.train import train_section_model
from aggregator.cli import main
from aggregator.storage import ItemQuery, open_storage
from aggregator.storage.sql import process_owner
from aggregator.types import StoredItem
from tests.server import LoopbackServer
from tests.test_classify import CATEGORIES, invented_examples
from tests.test_pipeline import arxiv_page

GOOD_ENTRIES = 10
MiB = 1024 * 1024


# --- the world every case runs in ----------------------------------------------------------------------


def rss(items: str, *, declaration: str = '<?xml version="1.0" encoding="utf-8"?>', doctype: str = "") -> str:
    return f"{declaration}{doctype}<rss version='2.0'><channel><title>Feed</title>{items}</channel></rss>"


def entry(n: int, *, prefix: str = "post", extra: str = "") -> str:
    return (
        f"<item><title>{prefix.title()} {n}</title><link>https://{prefix}.example/{n}</link>"
        f"<guid isPermaLink='false'>{prefix}-{n}</guid><pubDate>Tue, 24 Nov 2026 08:00:00 GMT</pubDate>"
        f"<description>&lt;p&gt;About {prefix} {n}.&lt;/p&gt;</description>{extra}</item>"
    )


GOOD_FEED = rss("".join(entry(n, prefix="good") for n in range(GOOD_ENTRIES)))


@dataclass
class Outcome:
    """What one `run` did, as the user sees it."""

    exit_code: int
    output: str
    report: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: list[StoredItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def result(self, name: str) -> dict[str, Any]:
        return next(r for r in self.report["sources"] if r["name"] == name)

    def items_of(self, name: str) -> list[StoredItem]:
        return [s for s in self.items if s.item.source == name]


@dataclass
class World:
    """A loopback server with a good feed, and a folder for the config, database and models."""

    server: LoopbackServer
    folder: Path
    fetch_settings: dict[str, Any] = field(
        default_factory=lambda: {"timeout": 3, "read_timeout": 2, "max_bytes": 8_000_000}
    )

    @property
    def config(self) -> Path:
        return self.folder / "feeds.yaml"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.folder}/aggregator.db"

    def write_config(self, sources: dict[str, str], *, arxiv: dict[str, str] | None = None) -> Path:
        """feeds.yaml with the good feed and `sources` (name -> url; an arXiv source by query)."""
        lines = [f'  - {{name: good, kind: feed, url: "{self.server.url("/good.xml")}"}}']
        lines += [f'  - {{name: {name}, kind: feed, url: "{url}"}}' for name, url in sources.items()]
        for name, query in (arxiv or {}).items():
            lines.append(f'  - {{name: {name}, kind: arxiv, query: "{query}", max_results: 12}}')
        fetch_yaml = ", ".join(f"{key}: {json.dumps(value)}" for key, value in self.fetch_settings.items())
        self.config.write_text(
            f'database: "{self.database_url}"\n'
            f"models_dir: {self.folder}/models\n"
            f"fetch: {{{fetch_yaml}, allow_private_addresses: true}}\n"
            f'arxiv: {{api_url: "{self.server.url("/api/query")}", delay_seconds: 0.01, page_size: 5, retries: 1}}\n'
            "sources:\n" + "\n".join(lines) + "\n",
            encoding="utf-8",
        )
        return self.config

    def run(self, sources: dict[str, str] | None = None, *, arxiv: dict[str, str] | None = None) -> Outcome:
        if sources is not None or arxiv is not None:
            self.write_config(sources or {}, arxiv=arxiv)
        ran = cli(self.config, "run", "--json")
        if ran.exit_code != 0:
            return Outcome(ran.exit_code, ran.output)
        listed = cli(self.config, "sources", "--json")
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        with open_storage(self.database_url) as storage:
            items = storage.items()
        report = json.loads(ran.stdout)
        return Outcome(0, ran.output, report, {row["name"]: row for row in rows}, items, report["notes"])

    def add(self, name: str, body: bytes | str, **reply: Any) -> str:
        self.server.add(f"/{name}", body, **reply)
        return self.server.url(f"/{name}")


def cli(config: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated database file, copied for each case (migrating anew takes longer)."""
    path = tmp_path_factory.mktemp("template") / "aggregator.db"
    open_storage(f"sqlite:///{path}").close()
    return path


@pytest.fixture
def world(loopback: LoopbackServer, tmp_path: Path, migrated_database: Path) -> World:
    loopback.add("/good.xml", GOOD_FEED, content_type="application/rss+xml")
    shutil.copy(migrated_database, tmp_path / "aggregator.db")
    return World(loopback, tmp_path)


def assert_fails_cleanly(outcome: Outcome, name: str, *fragments: str) -> str:
    """The run completed, `name` failed with one clear line naming the problem (the same line in
    `sources`), and the good feed is stored in full. Returns the error."""
    assert outcome.exit_code == 0, outcome.output
    result = outcome.result(name)
    error = result["error"] or ""
    assert result["status"] == "error"
    assert error and "\n" not in error and "Traceback" not in error and len(error) <= 300
    for fragment in fragments:
        assert fragment in error
    assert outcome.sources[name]["last_error"] == error
    assert outcome.sources[name]["error_count"] == 1
    assert_good_feed_stored(outcome)
    return error


def assert_good_feed_stored(outcome: Outcome) -> None:
    assert outcome.result("good")["status"] == "new"
    assert sorted(s.item.title for s in outcome.items_of("good")) == sorted(f"Good {n}" for n in range(GOOD_ENTRIES))
    assert outcome.sources["good"]["last_error"] is None


@contextmanager
def peak_memory_growth() -> Iterator[Callable[[], float | None]]:
    """Peak resident memory growth of this process over the block, in MiB (Linux; None elsewhere)."""
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current size
    except OSError:
        yield lambda: None
        return
    before = _status_kib(status, "VmRSS")
    grown: list[float] = []
    yield lambda: grown[0] if grown else None
    grown.append((_status_kib(status, "VmHWM") - before) / 1024)


def _status_kib(status: Path, name: str) -> int:
    found = re.search(rf"^{name}:\s+(\d+) kB", status.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else 0


# --- XML and content -------------------------------------------------------------------------------------


def test_billion_laughs_is_refused_before_parsing(world: World) -> None:
    levels = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    doctype = f'<!DOCTYPE rss [<!ENTITY l0 "lol">{levels}]>'
    url = world.add("laughs.xml", rss("<item><title>&l9;</title></item>", doctype=doctype))
    outcome = world.run({"laughs": url})
    assert_fails_cleanly(outcome, "laughs", "declares XML entities; refused")


def test_quadratic_blowup_is_refused_with_bounded_memory(world: World) -> None:
    # one 100 KB entity referenced 20,000 times: 2 GB once expanded
    doctype = f'<!DOCTYPE rss [<!ENTITY big "{"x" * 100_000}">]>'
    url = world.add("blowup.xml", rss(f"<item><title>{'&big;' * 20_000}</title></item>", doctype=doctype))
    world.write_config({"blowup": url})
    with peak_memory_growth() as grown:
        outcome = world.run()
    assert_fails_cleanly(outcome, "blowup", "declares XML entities; refused")
    growth = grown()
    assert growth is None or growth < 100, f"memory grew by {growth:.0f} MiB"


def test_external_entities_read_no_file_and_make_no_request(world: World) -> None:
    world.server.add("/secret.txt", "the secret")
    doctype = (
        f'<!DOCTYPE rss [<!ENTITY remote SYSTEM "{world.server.url("/secret.txt")}">'
        '<!ENTITY local SYSTEM "file:///etc/hostname">]>'
    )
    url = world.add("xxe.xml", rss(entry(1, prefix="xxe", extra="<author>&remote;&local;</author>"), doctype=doctype))
    outcome = world.run({"xxe": url})
    assert_fails_cleanly(outcome, "xxe", "declares XML entities; refused")
    assert world.server.hits("/secret.txt") == 0


def test_an_external_dtd_is_never_fetched(world: World) -> None:
    # old RSS 0.91 feeds name a DTD; it is read as a plain feed and the DTD is never requested
    world.server.add("/rss.dtd", '<!ENTITY title "from the DTD">')
    doctype = f'<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "{world.server.url("/rss.dtd")}">'
    url = world.add("dtd.xml", rss(entry(1, prefix="dtd"), doctype=doctype))
    outcome = world.run({"dtd": url})
    assert [s.item.title for s in outcome.items_of("dtd")] == ["Dtd 1"]
    assert world.server.hits("/rss.dtd") == 0
    assert_good_feed_stored(outcome)


def test_a_document_that_is_not_xml_is_a_clear_error(world: World) -> None:
    url = world.add("noise.xml", b"\x00\x01 {{ not <xml> at all & never was")
    outcome = world.run({"noise": url})
    assert_fails_cleanly(outcome, "noise", "not a feed")


def test_broken_xml_keeps_what_can_be_read_with_its_text(world: World) -> None:
    # bare ampersands, an unknown entity and a truncated end: real feeds do all of these
    body = rss(
        "<item><title>Q&A: R&D at AT&T &amp; more</title><link>https://broken.example/1?a=1&b=2</link></item>"
        "<item><title>Second &nbsp;one</title><link>https://broken.example/2</link></item>"
    )[: -len("</channel></rss>")]
    outcome = world.run({"broken": world.add("broken.xml", body)})
    stored = {s.item.title: s.item.url for s in outcome.items_of("broken")}
    assert stored["Q&A: R&D at AT&T & more"] == "https://broken.example/1?a=1&b=2"
    assert len(stored) == 2
    assert_good_feed_stored(outcome)


def test_missing_charset_and_a_wrong_header_charset_still_read_the_text(world: World) -> None:
    latin1 = rss(entry(1, prefix="latin"), declaration="<?xml version='1.0'?>").replace("Latin 1", "Café crème")
    utf8 = rss(entry(1, prefix="utf"), declaration="").replace("Utf 1", "Café ☃")
    outcome = world.run(
        {
            "undeclared": world.add("undeclared.xml", latin1.encode("latin-1"), content_type="application/rss+xml"),
            "lying-header": world.add(
                "lying.xml", latin1.encode("latin-1"), content_type="application/rss+xml; charset=utf-8"
            ),
            "latin-header": world.add("latin.xml", utf8.encode(), content_type="text/xml; charset=iso-8859-1"),
        }
    )
    titles = {s.item.source: s.item.title for s in outcome.items if s.item.source != "good"}
    assert titles == {"undeclared": "Café crème", "lying-header": "Café crème", "latin-header": "Café ☃"}
    assert_good_feed_stored(outcome)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_feeds_are_read(world: World, encoding: str) -> None:
    declared = "utf-16" if encoding == "utf-16" else encoding  # utf-16 writes a BOM; the others rely on the declaration
    body = rss(entry(1, prefix="wide"), declaration=f'<?xml version="1.0" encoding="{declared}"?>')
    outcome = world.run({"wide": world.add("wide.xml", body.replace("Wide 1", "Ünïcode ☃ 1").encode(encoding))})
    assert [s.item.title for s in outcome.items_of("wide")] == ["Ünïcode ☃ 1"]
    assert_good_feed_stored(outcome)


def test_an_html_page_instead_of_a_feed(world: World) -> None:
    page = "<!DOCTYPE html><html><head><title>Blog</title></head><body><h1>Welcome</h1></body></html>"
    outcome = world.run({"page": world.add("page.xml", page, content_type="text/html")})
    assert_fails_cleanly(outcome, "page", "not a feed: got an HTML page")


def test_a_feed_with_no_entries_is_a_success_with_nothing_new(world: World) -> None:
    outcome = world.run({"quiet": world.add("quiet.xml", rss(""))})
    assert outcome.result("quiet")["status"] == "unchanged" and outcome.result("quiet")["error"] is None
    assert outcome.sources["quiet"]["last_success"] is not None
    assert_good_feed_stored(outcome)


def test_duplicate_guids_store_one_item(world: World) -> None:
    twice = entry(1, prefix="dup") + entry(1, prefix="dup").replace("Dup 1", "Dup 1 again") + entry(2, prefix="dup")
    outcome = world.run({"dup": world.add("dup.xml", rss(twice))})
    assert sorted(s.item.title for s in outcome.items_of("dup")) == ["Dup 1", "Dup 2"]
    assert outcome.result("dup")["new"] == 2


def test_entries_without_id_link_or_date_are_all_kept(world: World) -> None:
    bare = (
        "<item><title>Only a title</title></item>"
        "<item><description>Only a description, nothing else at all.</description></item>"
        "<item><title>No date</title><link>https://bare.example/no-date</link></item>"
        "<item><link>https://bare.example/only-a-link</link></item>"
    )
    started = datetime.now(UTC)
    outcome = world.run({"bare": world.add("bare.xml", rss(bare))})
    stored = outcome.items_of("bare")
    assert len(stored) == 4 and len({s.item.key for s in stored}) == 4
    assert {s.item.title for s in stored} >= {"Only a title", "No date", "Only a description, nothing else at all."}
    assert all(s.item.published is not None and s.item.published >= started - timedelta(seconds=1) for s in stored)
    assert_good_feed_stored(outcome)


def test_dates_far_in_the_future_become_the_first_seen_time(world: World) -> None:
    future = entry(1, prefix="future").replace("Tue, 24 Nov 2026", "Sat, 24 Nov 2096")
    outcome = world.run({"future": world.add("future.xml", rss(future))})
    (stored,) = outcome.items_of("future")
    assert stored.item.published is not None and stored.item.published <= datetime.now(UTC)
    assert stored.item.published == stored.first_seen


def test_a_5_mb_entry_is_stored_with_capped_text(world: World) -> None:
    huge = "&lt;p&gt;" + "word " * (5 * MiB // 5) + "&lt;/p&gt;"
    url = world.add(
        "huge.xml",
        rss(f"<item><title>Huge</title><link>https://huge.example/1</link><description>{huge}</description></item>"),
    )
    with peak_memory_growth() as grown:
        outcome = world.run({"huge": url})
    (stored,) = outcome.items_of("huge")
    assert stored.item.title == "Huge"
    assert 0 < len(stored.item.summary_text) <= 5_000 and len(stored.item.summary_html) <= 20_000
    growth = grown()
    assert growth is None or growth < 250, f"memory grew by {growth:.0f} MiB"
    assert_good_feed_stored(outcome)


def test_javascript_and_file_links_never_reach_an_item(world: World) -> None:
    links = (
        "<item><title>Script link</title><link>javascript:alert(1)</link>"
        "<description>&lt;a href='javascript:alert(2)'&gt;click&lt;/a&gt; "
        "&lt;a href='JaVaScRiPt&amp;#58;alert(3)'&gt;again&lt;/a&gt;</description></item>"
        "<item><title>File link</title><link>file:///etc/passwd</link><guid isPermaLink='false'>f1</guid>"
        "<description>&lt;a href='file:///etc/passwd'&gt;read&lt;/a&gt;</description></item>"
    )
    outcome = world.run({"links": world.add("links.xml", rss(links))})
    stored = outcome.items_of("links")
    assert sorted(s.item.title for s in stored) == ["File link", "Script link"]
    for s in stored:
        assert not re.search(r"javascript|file:", s.item.url + s.item.summary_html, re.IGNORECASE)
    assert_good_feed_stored(outcome)


# --- network ---------------------------------------------------------------------------------------------


def test_a_body_larger_than_the_cap(world: World) -> None:
    padding = "<!--" + "x" * 9_000_000 + "-->"
    outcome = world.run({"large": world.add("large.xml", rss(entry(1, prefix="large") + padding))})
    assert_fails_cleanly(outcome, "large", "is larger than 8000000 bytes")


def test_a_gzip_bomb_stops_at_the_cap_with_bounded_memory(world: World) -> None:
    world.server.add_gzip_bomb("/bomb.xml", 200 * MiB)  # about 200 KB on the wire
    world.write_config({"bomb": world.server.url("/bomb.xml")})
    with peak_memory_growth() as grown:
        outcome = world.run()
    assert_fails_cleanly(outcome, "bomb", "is larger than 8000000 bytes")
    growth = grown()
    assert growth is None or growth < 100, f"memory grew by {growth:.0f} MiB"


def test_a_server_that_drips_one_byte_a_second(world: World) -> None:
    world.fetch_settings |= {"timeout": 1.5}
    outcome = world.run({"drip": world.add("drip.xml", GOOD_FEED, drip=1.0)})
    assert_fails_cleanly(outcome, "drip", "timed out after 1.5 s")


def test_a_server_that_accepts_and_never_answers(world: World) -> None:
    world.fetch_settings |= {"read_timeout": 1}
    world.server.add_hang("/hang.xml")
    outcome = world.run({"hang": world.server.url("/hang.xml")})
    assert_fails_cleanly(outcome, "hang", "no data for 1 s")


def test_connection_refused(world: World) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = world.run({"refused": f"http://127.0.0.1:{port}/feed.xml"})
    assert_fails_cleanly(outcome, "refused", f"cannot connect to 127.0.0.1:{port}: Connection refused")


def test_a_redirect_loop(world: World) -> None:
    world.server.add_redirect("/a.xml", "/b.xml")
    world.server.add_redirect("/b.xml", "/a.xml")
    outcome = world.run({"loop": world.server.url("/a.xml")})
    assert_fails_cleanly(outcome, "loop", "redirect loop")


def test_a_redirect_to_a_private_address_when_those_are_refused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # the loopback server stands in for a public one; only the redirect's target is private
    public_policy = fetch.is_public_address
    monkeypatch.setattr(fetch, "is_public_address", lambda address: address == "127.0.0.1" or public_policy(address))
    world.server.add_redirect("/moved.xml", "http://169.254.169.254/latest/meta-data/")
    config = world.write_config({"moved": world.server.url("/moved.xml")})
    config.write_text(config.read_text().replace("allow_private_addresses: true", "allow_private_addresses: false"))
    outcome = world.run()
    assert_fails_cleanly(outcome, "moved", "169.254.169.254 is a private address", "redirected from")


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(404, "Not Found"), (410, "Gone"), (500, "Internal Server Error"), (503, "Service Unavailable")],
)
def test_http_error_statuses(world: World, status: int, phrase: str) -> None:
    url = world.add("status.xml", "<html>error</html>", status=status, content_type="text/html")
    outcome = world.run({"status": url})
    assert_fails_cleanly(outcome, "status", f"HTTP {status} {phrase}")
    assert outcome.result("status")["http_status"] == status


def test_429_with_retry_after_is_not_polled_again_before_then(world: World) -> None:
    url = world.add("busy.xml", "slow down", status=429, headers={"Retry-After": "7200"}, content_type="text/plain")
    started = datetime.now(UTC)
    outcome = world.run({"busy": url})
    assert_fails_cleanly(outcome, "busy", "HTTP 429 Too Many Requests", "retry after 7200 s")
    next_check = datetime.fromisoformat(outcome.sources["busy"]["next_check"])
    assert next_check >= started + timedelta(hours=2)


def test_a_tls_failure(world: World) -> None:
    # the loopback port speaks plain HTTP, so a TLS handshake with it fails
    outcome = world.run({"tls": f"https://127.0.0.1:{world.server.port}/good.xml"})
    assert_fails_cleanly(outcome, "tls", "TLS failure connecting to")


# --- arXiv -----------------------------------------------------------------------------------------------

PAPERS = [f"2611.{n:05d}v1" for n in range(12)]


def serve_arxiv_pages(server: LoopbackServer, page: Callable[[int], tuple[int, dict[str, str], bytes]]) -> None:
    def reply(request: Any) -> tuple[int, dict[str, str], bytes]:
        start = int(re.search(r"(?:^|&)start=(\d+)", request.query).group(1))  # type: ignore[union-attr]
        return page(start)

    server.add_handler("/api/query", reply)


def good_page(start: int) -> tuple[int, dict[str, str], bytes]:
    body = arxiv_page(PAPERS[start : start + 5], len(PAPERS), start)
    return 200, {"Content-Type": "application/atom+xml"}, body.encode()


def test_arxiv_empty_page_mid_query_keeps_the_pages_already_read(world: World) -> None:
    def page(start: int) -> tuple[int, dict[str, str], bytes]:
        if start >= 5:
            return 200, {"Content-Type": "application/atom+xml"}, arxiv_page([], len(PAPERS), start).encode()
        return good_page(start)

    serve_arxiv_pages(world.server, page)
    outcome = world.run({}, arxiv={"papers": "cat:cs.CL"})
    assert_fails_cleanly(outcome, "papers", "page at start=5 failed after 2 tries", "empty page")
    assert outcome.result("papers")["new"] == 5
    assert len(outcome.items_of("papers")) == 5


@pytest.mark.parametrize("status", [429, 503])
def test_arxiv_busy_answers_are_retried_then_reported(world: World, status: int) -> None:
    answers = iter([(status, {"Retry-After": "0"}, b"busy")] * 2)
    serve_arxiv_pages(world.server, lambda start: next(answers, None) or good_page(start))
    outcome = world.run({}, arxiv={"papers": "cat:cs.CL"})
    assert_fails_cleanly(outcome, "papers", "failed after 2 tries", f"HTTP {status}")
    assert world.server.hits("/api/query") == 2
    # the next run, with arXiv answering again, reads everything
    again = world.run()
    assert again.result("papers")["status"] == "new" and len(again.items_of("papers")) == len(PAPERS)


def test_arxiv_html_error_page_with_status_200(world: World) -> None:
    page = b"<!DOCTYPE html><html><body><h1>Rate exceeded.</h1></body></html>"
    serve_arxiv_pages(world.server, lambda start: (200, {"Content-Type": "text/html"}, page))
    outcome = world.run({}, arxiv={"papers": "cat:cs.CL"})
    assert_fails_cleanly(outcome, "papers", "not an Atom feed")


# --- state: database, model files, config ---------------------------------------------------------------


def hold_write_lock(database: Path, seconds: float, held: threading.Event) -> None:
    """Another writer: a write transaction open on the SQLite file for `seconds`."""
    connection = sqlite3.connect(database, timeout=5, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE sources SET error_count = error_count")
        held.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
    finally:
        connection.close()


def test_a_database_locked_by_another_writer_is_waited_for(world: World) -> None:
    first = world.run({})  # the good feed is stored ...
    world.server.add("/later.xml", rss(entry(1, prefix="later")))
    world.write_config({"later": world.server.url("/later.xml")})
    held = threading.Event()
    writer = threading.Thread(target=hold_write_lock, args=(world.folder / "aggregator.db", 1.0, held))
    writer.start()
    assert held.wait(5)
    second = world.run()  # ... and this run starts while another process holds the write lock
    writer.join()
    assert second.exit_code == 0, second.output
    assert second.result("later")["new"] == 1
    assert {s.item.key for s in first.items} <= {s.item.key for s in second.items}


def test_a_run_lock_held_by_a_live_run_is_one_line_and_keeps_everything(world: World) -> None:
    world.run({})
    with open_storage(world.database_url) as storage:
        assert storage.acquire_lock("run", process_owner(), datetime.now(UTC), timedelta(hours=2))
    blocked = cli(world.config, "run")
    assert blocked.exit_code == 1
    assert blocked.output.startswith("error: another run is in progress") and blocked.output.count("\n") == 1
    with open_storage(world.database_url) as storage:
        assert storage.item_count("good") == GOOD_ENTRIES


def test_a_run_lock_left_by_a_killed_run_is_taken_over(world: World) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs, as a SIGKILLed run leaves behind
    world.write_config({})
    with open_storage(world.database_url) as storage:
        owner = f"{socket.gethostname()}:{gone.pid}"
        assert storage.acquire_lock("run", owner, datetime.now(UTC), timedelta(hours=2))
    outcome = world.run()
    assert outcome.exit_code == 0, outcome.output
    assert_good_feed_stored(outcome)
    with open_storage(world.database_url) as storage:
        assert storage.lock_holder("run") is None


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("trained") / "models"
    Registry(models).save(train_section_model(invented_examples(), CATEGORIES, live=None), promote=True)
    return models


def live_model_file(models: Path) -> Path:
    return models / (models / CURRENT_FILE).read_text().strip() / MODEL_FILE


def tamper(models: Path) -> None:
    """One byte changed: the recorded hash no longer matches."""
    path = live_model_file(models)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt(models: Path) -> None:
    """Not a model at all, with metadata rewritten to match (as a careful attacker would)."""
    path = live_model_file(models)
    path.write_bytes(b"PK\x03\x04 this is no skops file")
    metadata_path = path.parent / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["files"][MODEL_FILE] = hashlib.sha256(path.read_bytes()).hexdigest()
    metadata_path.write_text(json.dumps(metadata))


@pytest.mark.parametrize(("damage", "reason"), [(tamper, "does not match its recorded hash"), (corrupt, "cannot load")])
def test_a_corrupt_or_tampered_model_is_refused_and_items_are_stored_unclassified(
    world: World, trained_models: Path, damage: Callable[[Path], None], reason: str
) -> None:
    shutil.copytree(trained_models, world.folder / "models")
    damage(world.folder / "models")
    outcome = world.run({})
    assert_good_feed_stored(outcome)
    (note,) = [note for note in outcome.notes if "model not loaded" in note]
    assert reason in note and "items stored unclassified" in note and "\n" not in note
    with open_storage(world.database_url) as storage:
        stored = storage.items(ItemQuery(source="good"))
        predictions = storage.predictions_for([s.id for s in stored])
    assert all(p.model_version is None for p in predictions.values())


def test_a_config_with_a_typo_names_file_line_and_key(world: World) -> None:
    world.write_config({})
    text = world.config.read_text().replace("kind: feed", "kind: feed, intervl: 6h", 1)
    world.config.write_text(text)
    line = 1 + text.splitlines().index(next(t for t in text.splitlines() if "intervl" in t))
    outcome = cli(world.config, "run")
    assert outcome.exit_code == 1
    expected = f"error: {world.config}:{line}: sources[0].intervl: unknown key (did you mean 'interval'?)\n"
    assert outcome.output == expected
