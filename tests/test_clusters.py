"""Story clusters through storage: one candidate per story, editors' splits respected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.clusters import cluster_new, linked_urls
from aggregator.config import Settings, load_settings
from aggregator.storage import Storage
from aggregator.types import Item

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
ABSTRACT = ("We introduce a sparse mixture of experts language model that matches dense models ten times "
            "its size on reasoning benchmarks while using a fraction of the compute at inference time.")  # fmt: skip


def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "feeds.yaml"
    path.write_text("sources: []\n", encoding="utf-8")
    return load_settings(path, env={})


def paper() -> Item:
    return Item(key="arxiv:2611.01234", title="Sparse Experts at Scale", url="https://arxiv.org/abs/2611.01234",
                source="arxiv-cl", kind="paper", summary_text=ABSTRACT, published=NOW, arxiv_id="2611.01234",
                content_hash="p")  # fmt: skip


def blog_post(n: int, link: str) -> Item:
    return Item(key=f"url:https://lab{n}.example.org/post", title=f"Our new model, part {n}",
                url=f"https://lab{n}.example.org/post", source=f"lab{n}", kind="blog",
                summary_text="Read the paper.", summary_html=f'<p>Read <a href="{link}">the paper</a>.</p>',
                published=NOW + timedelta(hours=n), content_hash=f"b{n}")  # fmt: skip


def release(tag: str, hours: int) -> Item:
    return Item(key=f"github:org/lib@{tag}", title=tag, url=f"https://github.com/org/lib/releases/tag/{tag}",
                source="lib", kind="release", summary_text="Bug fixes and performance improvements. " * 5,
                published=NOW + timedelta(hours=hours), repo="org/lib", version=tag, content_hash=tag)  # fmt: skip


def test_a_post_linking_a_paper_joins_its_story(tmp_path: Path, memory_storage: Storage) -> None:
    counts = memory_storage.store_items([paper(), blog_post(1, "https://arxiv.org/pdf/2611.01234v2")], NOW)
    cluster_new(memory_storage, settings(tmp_path), counts.new_ids)
    stored = {s.item.key: s for s in memory_storage.items()}
    assert stored["arxiv:2611.01234"].cluster_id == stored["url:https://lab1.example.org/post"].cluster_id
    assert stored["arxiv:2611.01234"].cluster_id == stored["arxiv:2611.01234"].id
    # a later post about the same paper joins the existing cluster, whose id does not change
    later = memory_storage.store_items([blog_post(2, "https://arxiv.org/abs/2611.01234")], NOW)
    cluster_new(memory_storage, settings(tmp_path), later.new_ids)
    members = memory_storage.cluster_members(stored["arxiv:2611.01234"].id)
    assert [m.item.source for m in members] == ["arxiv-cl", "lab1", "lab2"]


def test_releases_with_the_same_notes_stay_apart_and_singletons_stay_unclustered(
    tmp_path: Path, memory_storage: Storage
) -> None:
    counts = memory_storage.store_items([release("v1.2.0", 0), release("v1.2.1", 5)], NOW)
    cluster_new(memory_storage, settings(tmp_path), counts.new_ids)
    assert [s.cluster_id for s in memory_storage.items()] == [None, None]


def test_an_editors_split_holds_on_the_next_run(tmp_path: Path, memory_storage: Storage) -> None:
    counts = memory_storage.store_items([paper(), blog_post(1, "https://arxiv.org/abs/2611.01234")], NOW)
    cluster_new(memory_storage, settings(tmp_path), counts.new_ids)
    paper_id, post_id = sorted(counts.new_ids)
    memory_storage.add_split(post_id, paper_id, "ana", NOW)
    memory_storage.set_clusters({post_id: None, paper_id: None})
    cluster_new(memory_storage, settings(tmp_path), [post_id, paper_id])
    assert [s.cluster_id for s in memory_storage.items()] == [None, None]


def test_linked_urls_come_from_the_sanitized_html() -> None:
    stored_post = blog_post(1, "https://arxiv.org/abs/2611.01234?a=1&amp;b=2")
    from aggregator.types import StoredItem

    assert linked_urls(StoredItem(1, stored_post, NOW, NOW)) == ("https://arxiv.org/abs/2611.01234?a=1&b=2",)


def test_a_page_linked_from_many_sources_is_a_hub_not_a_story(tmp_path: Path, memory_storage: Storage) -> None:
    posts = [blog_post(n, "https://example.org/license") for n in range(1, 21)]
    counts = memory_storage.store_items(posts, NOW)
    cluster_new(memory_storage, settings(tmp_path), counts.new_ids)
    assert {s.cluster_id for s in memory_storage.items()} == {None}


def test_dates_at_the_edge_of_the_calendar_do_not_break_clustering(tmp_path: Path, memory_storage: Storage) -> None:
    from dataclasses import replace

    old = replace(blog_post(1, "https://example.org/a"), published=datetime(1, 1, 1, tzinfo=UTC))
    counts = memory_storage.store_items([old], NOW)
    assert cluster_new(memory_storage, settings(tmp_path), counts.new_ids) == 0


def test_clustering_reads_each_backend_alike(tmp_path: Path, storage: Storage) -> None:
    from dataclasses import replace

    first = replace(blog_post(1, "https://arxiv.org/pdf/2611.01234v2"), published=NOW + timedelta(microseconds=123456))
    undated = replace(blog_post(2, "https://arxiv.org/abs/2611.01234"), published=None)  # dated when first seen
    month_later = replace(blog_post(3, "https://arxiv.org/abs/2611.01234"), published=NOW + timedelta(days=30))
    counts = storage.store_items([paper(), first, undated, month_later], NOW)
    new_ids = sorted(counts.new_ids)
    stored = {s.id: s for s in storage.items()}
    read = {f.id: f for f in storage.story_items(None, None)}
    assert read == {f.id: f for f in storage.story_items_by_ids([new_ids[3], new_ids[0], new_ids[2], new_ids[1]])}
    for item_id, s in stored.items():
        f, item = read[item_id], s.item
        assert (f.key, f.source, f.title, f.summary_text, f.summary_html, f.url) == (
            item.key, item.source, item.title, item.summary_text, item.summary_html, item.url)  # fmt: skip
        assert (f.arxiv_id, f.repo, f.version, f.cluster_id) == (item.arxiv_id, item.repo, item.version, s.cluster_id)
        assert f.at == (item.published or s.first_seen) and f.at.utcoffset() == timedelta(0)
    assert storage.story_span(new_ids) == (NOW, NOW + timedelta(days=30))
    assert storage.story_span([max(new_ids) + 1]) is None
    assert [f.id for f in storage.story_items(NOW + timedelta(days=1), None)] == [new_ids[3]]

    cluster_new(storage, settings(tmp_path), new_ids)
    clusters = {s.item.source: s.cluster_id for s in storage.items()}
    assert clusters["arxiv-cl"] == clusters["lab1"] == clusters["lab2"] == new_ids[0]
    assert clusters["lab3"] is None  # a month later: outside the window
