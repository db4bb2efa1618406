"""run_once end to end over the loopback server: every format, stored once, conditional GET on the
second run, one failing source among good ones, arXiv beside the feeds. Runs on SQLite and, when
AGGREGATOR_TEST_PG_URL is set, on PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import Settings, load_settings
from aggregator.pipeline import RunOptions, next_check_after, run_once
from aggregator.storage import ItemQuery, Storage
from aggregator.types import Source
from tests.server import LoopbackServer

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def rss(n: int, *, prefix: str = "post", title: str = "Post") -> str:
    items = "".join(
        f"<item><title>{title} {i}</title><link>https://blog.example.org/{prefix}/{i}?utm_source=rss</link>"
        f"<guid isPermaLink='false'>{prefix}-{i}</guid><pubDate>Tue, 24 Nov 2026 0{i % 10}:00:00 GMT</pubDate>"
        f"<description>&lt;p&gt;About {title.lower()} {i}.&lt;/p&gt;</description></item>"
        for i in range(n)
    )
    return f"<?xml version='1.0'?><rss version='2.0'><channel><title>Blog</title>{items}</channel></rss>"


def releases(repo: str, tags: list[str]) -> str:
    entries = "".join(
        f"<entry><id>tag:github.com,2008:Repository/1/{tag}</id><updated>2026-11-2{i}T10:00:00Z</updated>"
        f"<link rel='alternate' type='text/html' href='https://github.com/{repo}/releases/tag/{tag}'/>"
        f"<title>{tag}</title><content type='html'>&lt;p&gt;Changes in {tag}&lt;/p&gt;</content>"
        f"<author><name>bot</name></author></entry>"
        for i, tag in enumerate(tags)
    )
    return (
        "<?xml version='1.0' encoding='UTF-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
        f"<id>tag:github.com,2008:https://github.com/{repo}/releases</id><title>Release notes</title>"
        f"<updated>2026-11-25T10:00:00Z</updated>{entries}</feed>"
    )


def arxiv_page(ids: list[str], total: int, start: int) -> str:
    entries = "".join(
        f"<entry><id>http://arxiv.org/abs/{i}</id><updated>2026-11-2{n % 6}T00:00:00Z</updated>"
        f"<published>2026-11-2{n % 6}T00:00:00Z</published><title>Paper {i}</title>"
        f"<summary>We study {i}.</summary><author><name>A. Author</name></author>"
        f"<link href='http://arxiv.org/abs/{i}' rel='alternate' type='text/html'/>"
        f"<arxiv:primary_category xmlns:arxiv='http://arxiv.org/schemas/atom' term='cs.CL'/>"
        f"<category term='cs.CL'/></entry>"
        for n, i in enumerate(ids)
    )
    return (
        "<?xml version='1.0' encoding='UTF-8'?><feed xmlns='http://www.w3.org/2005/Atom' "
        "xmlns:opensearch='http://a9.com/-/spec/opensearch/1.1/'><title>arXiv Query</title>"
        f"<id>http://arxiv.org/api/x</id><updated>2026-11-26T00:00:00Z</updated>"
        f"<opensearch:totalResults>{total}</opensearch:totalResults><opensearch:startIndex>{start}"
        f"</opensearch:startIndex><opensearch:itemsPerPage>{len(ids)}</opensearch:itemsPerPage>{entries}</feed>"
    )


def serve_arxiv(server: LoopbackServer, ids: list[str], page_size: int) -> None:
    def reply(request: object) -> tuple[int, dict[str, str], bytes]:
        query = dict(part.split("=", 1) for part in request.query.split("&"))  # type: ignore[attr-defined]
        start = int(query["start"])
        page = ids[start : start + page_size]
        return 200, {"Content-Type": "application/atom+xml"}, arxiv_page(page, len(ids), start).encode()

    server.add_handler("/api/query", reply)


def write_config(tmp_path: Path, server: LoopbackServer, db_url: str, extra_sources: str = "") -> Settings:
    text = f"""
database: "{db_url}"
models_dir: {tmp_path}/no-models
fetch: {{timeout: 5, allow_private_addresses: true}}
arxiv: {{api_url: "{server.url('/api/query')}", delay_seconds: 0.01, page_size: 5}}
sources:
  - {{name: blog, kind: feed, url: "{server.url('/blog.xml')}"}}
  - {{name: lib, kind: github, repo: example/lib, url: "{server.url('/lib/releases.atom')}"}}
  - {{name: papers, kind: arxiv, query: "cat:cs.CL", max_results: 12}}
{extra_sources}"""
    path = tmp_path / "feeds.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, env={})


@pytest.fixture
def world(loopback: LoopbackServer) -> LoopbackServer:
    loopback.add("/blog.xml", rss(8), etag='"blog-v1"', content_type="application/rss+xml")
    loopback.add("/lib/releases.atom", releases("example/lib", ["v2.0.0", "v1.9.1", "v1.9.0"]),
                 last_modified="Wed, 25 Nov 2026 10:00:00 GMT", content_type="application/atom+xml")  # fmt: skip
    serve_arxiv(loopback, [f"2611.{n:05d}v{1 + n % 2}" for n in range(12)], page_size=5)
    return loopback


def test_first_run_stores_every_entry_once_with_a_report(
    tmp_path: Path, world: LoopbackServer, storage: Storage
) -> None:
    settings = write_config(tmp_path, world, storage.url)
    report = run_once(settings, storage, NOW)
    by_source = {r.source: r for r in report.results}
    assert {name: (r.status, r.new) for name, r in by_source.items()} == {
        "blog": ("new", 8),
        "lib": ("new", 3),
        "papers": ("new", 12),
    }
    assert storage.item_count() == 23
    keys = {s.item.key for s in storage.items()}
    assert "arxiv:2611.00001" in keys  # arXiv base id: no version in the key
    assert "github:example/lib@v1.9.1" in keys
    release = next(s.item for s in storage.items(ItemQuery(source="lib")) if s.item.version == "v2.0.0")
    assert release.repo == "example/lib" and release.kind == "release"
    post = storage.items(ItemQuery(source="blog", text="Post 3"))[0].item
    assert post.url == "https://blog.example.org/post/3"  # tracking parameters dropped
    assert post.summary_text == "About post 3."
    assert storage.recent_runs()[0]["new"] == 23
    assert world.hits("/api/query") == 3  # 12 results in pages of 5


def test_second_run_gets_304s_and_adds_nothing(tmp_path: Path, world: LoopbackServer, storage: Storage) -> None:
    settings = write_config(tmp_path, world, storage.url)
    run_once(settings, storage, NOW)
    report = run_once(settings, storage, NOW + timedelta(hours=7))
    statuses = {r.source: r.status for r in report.results}
    assert statuses == {"blog": "not_modified", "lib": "not_modified", "papers": "unchanged"}
    assert report.new == 0 and report.updated == 0 and storage.item_count() == 23
    conditional = world.requests("/blog.xml")[-1].headers
    assert conditional["if-none-match"] == '"blog-v1"'
    assert world.requests("/lib/releases.atom")[-1].headers["if-modified-since"] == "Wed, 25 Nov 2026 10:00:00 GMT"


def test_rerun_without_validators_is_idempotent_and_updates_changed_entries(
    tmp_path: Path, loopback: LoopbackServer, storage: Storage
) -> None:
    loopback.add("/blog.xml", rss(5))
    loopback.add("/lib/releases.atom", releases("example/lib", ["v1.0.0"]))
    serve_arxiv(loopback, ["2611.00001v1"], page_size=5)
    settings = write_config(tmp_path, loopback, storage.url)
    run_once(settings, storage, NOW)
    again = run_once(settings, storage, NOW + timedelta(hours=1))
    assert {r.source: r.status for r in again.results}["blog"] == "unchanged"
    assert again.new == 0
    # the same paper, new version; one blog post retitled: updated in place, never duplicated
    loopback.reset()
    loopback.add("/blog.xml", rss(5).replace("Post 2<", "Post 2 (revised)<"))
    loopback.add("/lib/releases.atom", releases("example/lib", ["v1.0.0"]))
    serve_arxiv(loopback, ["2611.00001v2"], page_size=5)
    third = run_once(settings, storage, NOW + timedelta(hours=2))
    counts = {r.source: (r.new, r.updated) for r in third.results}
    assert counts["blog"] == (0, 1) and counts["papers"] == (0, 1)
    assert storage.item_count() == 7
    paper = storage.items(ItemQuery(source="papers"))[0]
    assert paper.item.arxiv_version == 2 and paper.first_seen == NOW


def test_one_failing_source_among_good_ones(tmp_path: Path, world: LoopbackServer, storage: Storage) -> None:
    world.add("/gone.xml", "gone", status=404, content_type="text/plain")
    world.add("/broken.xml", "<html><body>Not a feed</body></html>", content_type="text/html")
    extra = (
        f'  - {{name: gone, kind: feed, url: "{world.url("/gone.xml")}"}}\n'
        f'  - {{name: broken, kind: feed, url: "{world.url("/broken.xml")}"}}\n'
    )
    settings = write_config(tmp_path, world, storage.url, extra)
    report = run_once(settings, storage, NOW)
    failed = {r.source: r.error for r in report.failed}
    assert set(failed) == {"gone", "broken"}
    assert "404" in (failed["gone"] or "") and "\n" not in (failed["gone"] or "")
    assert "HTML" in (failed["broken"] or "")
    assert storage.item_count() == 23  # the good sources are stored in full
    states = storage.source_states()
    assert states["gone"].error_count == 1 and states["gone"].last_error == failed["gone"]
    assert states["gone"].next_check is not None and states["gone"].next_check > NOW


def test_due_only_skips_sources_checked_recently(tmp_path: Path, world: LoopbackServer, storage: Storage) -> None:
    settings = write_config(tmp_path, world, storage.url)
    run_once(settings, storage, NOW)
    report = run_once(settings, storage, NOW + timedelta(minutes=5), RunOptions(due_only=True))
    assert report.results == ()
    later = run_once(settings, storage, NOW + timedelta(days=2), RunOptions(due_only=True))
    assert {r.source for r in later.results} == {"blog", "lib", "papers"}


def test_named_poll_and_empty_feed(tmp_path: Path, world: LoopbackServer, storage: Storage) -> None:
    world.add("/empty.xml", "<rss version='2.0'><channel><title>Quiet</title></channel></rss>")
    extra = f'  - {{name: quiet, kind: feed, url: "{world.url("/empty.xml")}", enabled: false}}\n'
    settings = write_config(tmp_path, world, storage.url, extra)
    report = run_once(settings, storage, NOW, RunOptions(names=("quiet",)))
    assert [(r.source, r.status, r.new) for r in report.results] == [("quiet", "unchanged", 0)]
    assert storage.source_states()["quiet"].last_success == NOW


def test_backoff_grows_with_errors_and_honours_retry_after(tmp_path: Path, world: LoopbackServer) -> None:
    settings = write_config(tmp_path, world, "sqlite://")
    source = Source("s", "feed", "https://example.org/feed", interval=timedelta(hours=1))
    rng = random.Random(1)
    delays = [(next_check_after(source, now=NOW, errors=e, settings=settings, rng=rng) - NOW) for e in range(4)]
    assert [round(d / timedelta(hours=1)) for d in delays] == [1, 2, 4, 8]
    capped = next_check_after(source, now=NOW, errors=30, settings=settings, rng=rng) - NOW
    assert timedelta(days=7) <= capped <= timedelta(days=7.8)
    told = next_check_after(source, now=NOW, errors=0, settings=settings, retry_after=86400, rng=rng) - NOW
    assert told >= timedelta(days=1)
