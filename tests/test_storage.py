"""Storage on SQLite and (when AGGREGATOR_TEST_PG_URL is set) PostgreSQL: the same tests, the same code."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from aggregator.errors import LockedError, ReviewError, StorageError
from aggregator.storage import ItemQuery, Storage, derive_state, open_storage
from aggregator.types import Decision, LabeledExample, Prediction, Source
from tests.factories import blog_item
from tests.storage_fixtures import fresh_pg_database

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


item = blog_item


def test_new_items_are_stored_once_and_repolls_update_not_duplicate(storage: Storage) -> None:
    first = storage.store_items([item(1), item(2), item(2)], NOW)
    assert (first.new, first.updated, first.unchanged) == (2, 0, 0)
    later = NOW + timedelta(hours=1)
    again = storage.store_items([item(1), item(2, title="Post 2, revised", content_hash="h2b"), item(3)], later)
    assert (again.new, again.updated, again.unchanged) == (1, 1, 1)
    stored = {s.item.key: s for s in storage.items()}
    assert len(stored) == 3
    revised = stored["url:https://example.org/2"]
    assert revised.item.title == "Post 2, revised"
    assert revised.first_seen == NOW and revised.updated_at == later  # first-seen is kept


def test_large_batches_are_chunked(storage: Storage) -> None:
    counts = storage.store_items([item(n) for n in range(1, 1300)], NOW)
    assert counts.new == 1299 and storage.item_count() == 1299


def test_new_and_updated_rows_are_written_alike(storage: Storage) -> None:
    # New rows go through the driver's own statement, updates through SQLAlchemy: dates, lists and
    # flags must land in the same form, or filters and sorting would treat them differently.
    query = sa.text("SELECT published, authors, prerelease, updated_at FROM items")

    def raw_row() -> tuple[str, ...]:
        with storage.engine.connect() as conn:
            return tuple(map(str, conn.execute(query).one()))

    storage.store_items([item(2, authors=("Ada",))], NOW)
    inserted = raw_row()
    storage.store_items([item(2, authors=("Ada",), content_hash="changed")], NOW)
    assert raw_row() == inserted


def test_a_failing_insert_is_a_storage_error_and_stores_nothing(storage: Storage) -> None:
    broken = replace(item(2), title=None)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="cannot store items"):
        storage.store_items([item(1), broken], NOW)
    assert storage.item_count() == 0


def test_items_query_filters_and_orders_newest_first(storage: Storage) -> None:
    storage.store_items([item(1), item(2, source="other", title="Diffusion models"), item(3)], NOW)
    assert [s.item.title for s in storage.items()] == ["Post 1", "Diffusion models", "Post 3"]
    assert [s.item.title for s in storage.items(ItemQuery(text="diffusion"))] == ["Diffusion models"]
    assert [s.item.title for s in storage.items(ItemQuery(source="blog", limit=1))] == ["Post 1"]
    assert [s.item.title for s in storage.items(ItemQuery(since=NOW - timedelta(hours=2)))] == [
        "Post 1",
        "Diffusion models",
    ]


def test_datetimes_come_back_aware_utc(storage: Storage) -> None:
    storage.store_items([item(1)], NOW)
    stored = storage.items()[0]
    assert stored.item.published == NOW - timedelta(hours=1)
    assert stored.first_seen.tzinfo is not None


def test_source_fetch_state_success_error_and_pause(storage: Storage) -> None:
    source = Source("blog", "feed", "https://example.org/feed")
    storage.sync_sources([source], NOW)
    storage.record_fetch("blog", at=NOW, next_check=NOW + timedelta(hours=6), etag='"v1"', last_modified="Wed")
    for n in range(3):
        storage.record_fetch("blog", at=NOW, next_check=NOW, error=f"HTTP 503 #{n}", pause_after=3)
    state = storage.source_states()["blog"]
    assert state.etag == '"v1"' and state.last_success == NOW  # errors keep the validators
    assert state.error_count == 3 and state.last_error == "HTTP 503 #2" and state.paused
    storage.set_paused("blog", False)
    state = storage.source_states()["blog"]
    assert not state.paused and state.error_count == 0


def test_sync_sources_keeps_state_and_updates_url(storage: Storage) -> None:
    storage.sync_sources([Source("blog", "feed", "https://example.org/feed")], NOW)
    storage.record_fetch("blog", at=NOW, next_check=NOW, etag="x")
    storage.sync_sources([Source("blog", "feed", "https://example.org/new-feed")], NOW)
    rows = storage.source_rows()
    assert rows[0]["url"] == "https://example.org/new-feed"
    assert storage.source_states()["blog"].etag == "x"


def test_decisions_are_append_only_and_undo_is_an_event(storage: Storage) -> None:
    storage.store_items([item(1)], NOW)
    item_id = storage.items()[0].id
    accept = Decision("k", "ana", NOW, "accept", section="Trends", item_type="Blog", model_version="v1")
    storage.add_decision(item_id, accept)
    storage.add_decision(item_id, Decision("k", "ana", NOW, "move", section="Miscellaneous"))
    assert storage.item_states()[item_id]["status"] == "accepted"
    assert storage.item_states()[item_id]["section"] == "Miscellaneous"
    storage.add_decision(item_id, Decision("k", "ana", NOW, "undo"))
    state = storage.item_states()[item_id]
    assert (state["status"], state["section"]) == ("accepted", "Trends")
    log = storage.decisions(item_id=item_id)
    assert [d.action for _, d in log] == ["accept", "move", "undo"]
    assert log[0][1].model_version == "v1" and log[0][1].item_key == item(1).key
    with pytest.raises(ReviewError, match="no item with id 999"):
        storage.add_decision(999, accept)


def test_derive_state_rules() -> None:
    d = lambda action, **kw: Decision("k", "ed", NOW, action, **kw)  # noqa: E731
    assert derive_state([])["status"] == "candidate"
    assert derive_state([d("reject", reason="off-topic")])["status"] == "rejected"
    assert derive_state([d("reject"), d("undo")])["status"] == "candidate"
    assert derive_state([d("move", section="Trends")]) | {} == derive_state([d("move", section="Trends")])
    moved = derive_state([d("move", section="Trends")])
    assert (moved["status"], moved["section"]) == ("candidate", "Trends")
    noted = derive_state([d("accept", section="Trends"), d("note", reason="lead item")])
    assert noted["status"] == "accepted" and noted["note"] == "lead item"


def test_predictions_and_queue_counts(storage: Storage) -> None:
    storage.store_items([item(1), item(2), item(3)], NOW)
    ids = sorted(s.id for s in storage.items())
    assert storage.unclassified_ids() == ids
    preds = [(ids[0], Prediction("a", "Trends", 0.9, "Blog", "v1", ("title:agents",))),
             (ids[1], Prediction("b", "Releases", 0.8, "Minor Release", "v1")),
             (ids[2], Prediction("c", None, 0.0, "Blog", None))]  # fmt: skip
    storage.save_predictions(preds, NOW)
    assert storage.predictions_for([ids[0]])[ids[0]].top_terms == ("title:agents",)
    assert storage.unclassified_ids("v1") == [ids[2]]  # predicted while no model was live
    assert storage.unclassified_ids("v2", rescore=True) == ids
    storage.add_decision(ids[1], Decision("b", "ana", NOW, "reject"))
    assert storage.queue_counts() == {"Trends": 1, "(unclassified)": 1}


def test_examples_are_imported_once(storage: Storage) -> None:
    examples = [LabeledExample("A paper", "State of the Art", url="https://arxiv.org/abs/1"),
                LabeledExample("A post", "Trends", date=NOW)]  # fmt: skip
    assert storage.add_examples(examples, NOW) == 2
    assert storage.add_examples(examples, NOW) == 0
    assert [e.title for e in storage.examples()] == ["A paper", "A post"]
    assert storage.examples()[1].date == NOW


def test_run_lock_refuses_a_second_run_and_recovers_after_expiry(storage: Storage) -> None:
    with (
        storage.run_lock("host:1", NOW, ttl=timedelta(minutes=10)),
        pytest.raises(LockedError, match=r"another run is in progress \(host:1"),
        storage.run_lock("host:2", NOW),
    ):
        pass
    # released: a new run may start
    assert storage.acquire_lock("run", "host:3", NOW, timedelta(minutes=10))
    # a crashed holder never releases; once its lease expires another run takes over
    assert not storage.acquire_lock("run", "host:4", NOW + timedelta(minutes=5), timedelta(minutes=10))
    assert storage.acquire_lock("run", "host:4", NOW + timedelta(minutes=11), timedelta(minutes=10))


def test_runs_and_exports_are_recorded(storage: Storage) -> None:
    from aggregator.types import FetchResult, RunReport

    report = RunReport(
        NOW, NOW + timedelta(seconds=3), (FetchResult("a", "new", new=2), FetchResult("b", "error", error="x"))
    )
    storage.record_run(report)
    run = storage.recent_runs()[0]
    assert (run["new"], run["failed"], run["sources"]) == (2, 1, 2)
    assert run["report"]["results"][1]["error"] == "x"
    storage.record_export(at=NOW, fmt="csv", filters={"status": "accepted"}, path="/tmp/x.csv", item_ids=[1, 2])
    assert storage.exports()[0]["item_ids"] == [1, 2]


def test_migrations_are_recorded_and_idempotent(storage: Storage) -> None:
    storage.upgrade()
    current, head = storage.schema_version()
    assert current == head is not None


def test_sqlite_file_uses_wal(tmp_path: object) -> None:
    with open_storage(f"sqlite:///{tmp_path}/wal.db") as s, s.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"


def test_bad_database_urls_are_one_line_errors(tmp_path: object) -> None:
    with pytest.raises(StorageError, match="is not a valid SQLAlchemy URL"):
        open_storage("not a url")
    with pytest.raises(StorageError, match=r"folder .* does not exist"):
        open_storage(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")
    with pytest.raises(StorageError, match="cannot migrate"):
        open_storage("postgresql+psycopg://nobody@127.0.0.1:1/none")


@pytest.mark.postgres
def test_workers_opening_an_empty_postgres_database_together_all_start(pg_url: str) -> None:
    # Workers started at once on a new database: one migrates, the others wait for it.
    with fresh_pg_database(pg_url, "aggregator_migrate") as url, ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: open_storage(url), range(4)))
        versions = {s.schema_version() for s in opened}
        for s in opened:
            s.close()
        assert len(versions) == 1 and next(iter(versions))[0] is not None
