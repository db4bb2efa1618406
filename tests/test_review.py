"""The review queue and its decisions (aggregator/review.py over storage/queue.py), on SQLite and,
when AGGREGATOR_TEST_PG_URL is set, PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aggregator.cli import main
from aggregator.config import load_settings
from aggregator.errors import ReviewError
from aggregator.review import UNCLASSIFIED, QueueQuery, Review
from aggregator.storage import Storage, open_storage
from aggregator.types import Decision, Prediction
from aggregator.web.auth import verify_password
from tests.factories import blog_item

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CATEGORIES = ("Trends", "State of the Art", "Miscellaneous", "Releases")


make_item = blog_item


def add(
    storage: Storage,
    n: int,
    section: str | None = "Trends",
    confidence: float = 0.5,
    *,
    relevance: float | None = None,
    item_type: str = "Blog",
    version: str | None = "v1",
    **changes: object,
) -> int:
    """Store item n with a prediction; return its id."""
    counts = storage.store_items([make_item(n, **changes)], NOW)
    item_id = counts.new_ids[0]
    prediction = Prediction(f"k{n}", section, confidence, item_type, version, ("alpha", "beta"), relevance)
    storage.save_predictions([(item_id, prediction)], NOW)
    return item_id


@pytest.fixture
def review(storage: Storage) -> Review:
    return Review(storage, CATEGORIES, page_size=10)


def titles(review: Review, query: QueueQuery | None = None, **kw: int) -> list[str]:
    return [c.stored.item.title for c in review.page(query or QueueQuery(), **kw).cards]


# -- the queue ----------------------------------------------------------------------------------


def test_queue_is_grouped_by_section_in_category_order_then_ranked(review: Review, storage: Storage) -> None:
    add(storage, 1, "Releases", 0.9)
    add(storage, 2, "Trends", 0.2)
    add(storage, 3, "Trends", 0.9)
    add(storage, 4, None, 0.0)  # the model had no section for it
    assert titles(review) == ["Post 3", "Post 2", "Post 1", "Post 4"]
    page = review.page()
    assert [c.section for c in page.cards] == ["Trends", "Trends", "Releases", UNCLASSIFIED]
    assert [p.section for p in review.overview()] == ["Trends", "Releases", UNCLASSIFIED]


def test_freshness_outweighs_a_small_confidence_edge_and_relevance_wins_when_present(
    review: Review, storage: Storage
) -> None:
    add(storage, 1, confidence=0.50)  # 1 hour old
    add(storage, 49, confidence=0.60)  # 2 days older: 0.1 more confidence is not worth 2 days
    assert titles(review) == ["Post 1", "Post 49"]
    add(storage, 2, confidence=0.10, relevance=0.95)  # an editor would likely accept it
    assert titles(review)[0] == "Post 2"


def test_a_future_date_does_not_pin_an_item_to_the_top(review: Review, storage: Storage) -> None:
    add(storage, 1, confidence=0.5)
    add(storage, 2, confidence=0.5, published=NOW + timedelta(days=300))  # ranked as first seen (NOW)
    assert titles(review) == ["Post 2", "Post 1"]  # NOW beats NOW - 1 h, but not by 300 days
    add(storage, 3, confidence=0.9)
    assert titles(review)[0] == "Post 3"


def test_filters_by_section_source_type_dates_and_words(review: Review, storage: Storage) -> None:
    add(storage, 1, "Trends", title="Diffusion models at scale")
    add(storage, 2, "Releases", source="github", item_type="Minor Release", title="torch 2.5.0")
    add(storage, 30, "Trends", title="100% faster_attention", summary_text="kernels")
    assert titles(review, QueueQuery(section="Releases")) == ["torch 2.5.0"]
    assert titles(review, QueueQuery(section="releases")) == ["torch 2.5.0"]  # names are forgiving
    assert titles(review, QueueQuery(source="github")) == ["torch 2.5.0"]
    assert titles(review, QueueQuery(item_type="minor release")) == ["torch 2.5.0"]
    assert titles(review, QueueQuery(since=NOW - timedelta(hours=3))) == ["Diffusion models at scale", "torch 2.5.0"]
    assert titles(review, QueueQuery(until=NOW - timedelta(hours=3))) == ["100% faster_attention"]
    assert titles(review, QueueQuery(text="DIFFUSION scale")) == ["Diffusion models at scale"]
    assert titles(review, QueueQuery(text="kernels")) == ["100% faster_attention"]
    assert titles(review, QueueQuery(text="100%")) == ["100% faster_attention"]  # % is a character here
    assert titles(review, QueueQuery(text="s_a")) == []  # and so is _ ("models at" does not match)


def test_bad_filters_name_the_problem(review: Review) -> None:
    with pytest.raises(ReviewError, match="unknown section 'Gossip'"):
        review.page(QueueQuery(section="Gossip"))
    with pytest.raises(ReviewError, match="unknown type 'Tweet'"):
        review.page(QueueQuery(item_type="Tweet"))
    with pytest.raises(ReviewError, match="empty date range"):
        review.page(QueueQuery(since=NOW, until=NOW - timedelta(days=1)))


def test_counts_per_section_and_paging(review: Review, storage: Storage) -> None:
    for n in range(1, 13):
        add(storage, n, "Trends")
    add(storage, 20, "Releases")
    assert review.counts() == {"Trends": 12, "Releases": 1}
    assert review.total() == 13 and review.total(QueueQuery(section="Releases")) == 1
    first = review.page(QueueQuery(section="Trends"))
    second = review.page(QueueQuery(section="Trends"), offset=10)
    assert len(first.cards) == 10 and first.more
    assert [c.stored.item.title for c in second.cards] == ["Post 11", "Post 12"] and not second.more
    assert titles(review, offset=12) == ["Post 20"]  # grouped paging crosses into the next section


def test_items_never_classified_are_queued_as_unclassified(review: Review, storage: Storage) -> None:
    storage.store_items([make_item(1), make_item(2)], NOW)
    assert titles(review) == ["Post 1", "Post 2"]  # freshest first
    assert review.counts() == {UNCLASSIFIED: 2}


def test_a_card_shows_why_the_item_is_there(review: Review, storage: Storage) -> None:
    add(storage, 1, "Trends", 0.87, item_type="Paper")
    card = review.page().cards[0]
    data = card.json()
    assert data["section"] == "Trends" and data["confidence"] == 0.87 and data["item_type"] == "Paper"
    assert data["top_terms"] == ["alpha", "beta"] and data["model_version"] == "v1"
    assert data["url"] == "https://example.org/1" and data["source"] == "blog"


# -- decisions ------------------------------------------------------------------------------------


def test_accept_records_editor_section_type_and_model_version(review: Review, storage: Storage) -> None:
    item_id = add(storage, 1, "Trends", item_type="Paper", version="2026-11-01")
    add(storage, 2, "Trends")
    review.decide(item_id, "accept", "alice", NOW)
    assert titles(review) == ["Post 2"]
    [(logged_id, decision)] = storage.decisions()
    assert logged_id == item_id
    assert (decision.editor, decision.action, decision.section, decision.item_type, decision.model_version) == (
        "alice",
        "accept",
        "Trends",
        "Paper",
        "2026-11-01",
    )
    assert storage.item_states([item_id])[item_id]["status"] == "accepted"


def test_accept_with_an_edited_section_and_type(review: Review, storage: Storage) -> None:
    item_id = add(storage, 1, "Trends", item_type="Blog")
    review.decide(item_id, "accept", "alice", NOW, section="state of the art", item_type="technical report")
    state = storage.item_states([item_id])[item_id]
    assert (state["status"], state["section"], state["item_type"]) == (
        "accepted",
        "State of the Art",
        "Technical report",
    )


def test_reject_with_a_reason_and_move_keeps_the_story_queued(review: Review, storage: Storage) -> None:
    one, two = add(storage, 1, "Trends"), add(storage, 2, "Trends")
    review.decide(one, "reject", "bob", NOW, reason="  off topic ")
    review.decide(two, "move", "bob", NOW, section="Miscellaneous")
    assert titles(review, QueueQuery(section="Trends")) == []
    assert titles(review, QueueQuery(section="Miscellaneous")) == ["Post 2"]
    assert review.counts() == {"Miscellaneous": 1}
    assert storage.decisions(item_id=one)[0][1].reason == "off topic"


def test_moving_an_accepted_item_keeps_it_accepted(review: Review, storage: Storage) -> None:
    item_id = add(storage, 1, "Trends")
    review.decide(item_id, "accept", "alice", NOW)
    review.decide(item_id, "move", "alice", NOW + timedelta(seconds=1), section="Releases")
    state = storage.item_states([item_id])[item_id]
    assert (state["status"], state["section"]) == ("accepted", "Releases")
    assert titles(review) == []


def test_notes_annotate_without_deciding(review: Review, storage: Storage) -> None:
    item_id = add(storage, 1)
    review.decide(item_id, "note", "alice", NOW, reason="ask Carol about this one")
    card = review.page().cards[0]
    assert card.note == "ask Carol about this one" and card.status == "candidate"
    with pytest.raises(ReviewError, match="a note needs some text"):
        review.decide(item_id, "note", "alice", NOW, reason="   ")


def test_bad_decisions_are_refused_with_a_reason(review: Review, storage: Storage) -> None:
    item_id = add(storage, 1)
    unsectioned = add(storage, 2, None)
    with pytest.raises(ReviewError, match="unknown action 'promote'"):
        review.decide(item_id, "promote", "alice", NOW)
    with pytest.raises(ReviewError, match="move needs a section"):
        review.decide(item_id, "move", "alice", NOW)
    with pytest.raises(ReviewError, match="unknown section 'Gossip'"):
        review.decide(item_id, "move", "alice", NOW, section="Gossip")
    with pytest.raises(ReviewError, match="no item with id 999"):
        review.decide(999, "accept", "alice", NOW)
    with pytest.raises(ReviewError, match=f"item {unsectioned} has no section"):
        review.decide(unsectioned, "accept", "alice", NOW)
    with pytest.raises(ReviewError, match="needs an editor"):
        review.decide(item_id, "accept", " ", NOW)
    assert storage.decisions() == []


def test_bulk_accept_and_reject(review: Review, storage: Storage) -> None:
    ids = [add(storage, n) for n in range(1, 5)]
    outcome = review.bulk(ids[:3], "reject", "alice", NOW, reason="duplicates")
    assert set(outcome.item_ids) == set(ids[:3])
    assert titles(review) == ["Post 4"]
    with pytest.raises(ReviewError, match="no items selected"):
        review.bulk([], "accept", "alice", NOW)


def test_undo_restores_the_editors_latest_decision_and_walks_back(review: Review, storage: Storage) -> None:
    one, two = add(storage, 1), add(storage, 2)
    review.decide(one, "accept", "alice", NOW)
    review.decide(two, "reject", "alice", NOW + timedelta(seconds=1))
    assert review.undo("alice", NOW + timedelta(seconds=2)).item_ids == (two,)
    assert titles(review) == ["Post 2"]
    assert review.undo("alice", NOW + timedelta(seconds=3)).item_ids == (one,)
    assert titles(review) == ["Post 1", "Post 2"]
    actions = [d.action for _, d in storage.decisions()]
    assert actions == ["accept", "reject", "undo", "undo"]  # append-only: nothing was deleted
    with pytest.raises(ReviewError, match="nothing to undo: alice"):
        review.undo("alice", NOW + timedelta(seconds=4))


def test_undo_never_cancels_another_editors_later_decision(review: Review, storage: Storage) -> None:
    item_id = add(storage, 1)
    review.decide(item_id, "accept", "alice", NOW)
    review.decide(item_id, "move", "bob", NOW + timedelta(seconds=1), section="Releases")
    with pytest.raises(ReviewError, match="overridden by a later decision"):
        review.undo("alice", NOW + timedelta(seconds=2))
    review.undo("bob", NOW + timedelta(seconds=3))
    assert storage.item_states([item_id])[item_id]["section"] == "Trends"


def test_undo_of_a_bulk_decision_restores_every_item(review: Review, storage: Storage) -> None:
    ids = [add(storage, n) for n in range(1, 4)]
    review.bulk(ids, "accept", "alice", NOW)
    assert set(review.undo("alice", NOW + timedelta(seconds=1)).item_ids) == set(ids)
    assert review.total() == 3


def test_decided_items_stay_decided_when_their_source_republishes_them(review: Review, storage: Storage) -> None:
    rejected, accepted = add(storage, 1), add(storage, 2)
    review.decide(rejected, "reject", "alice", NOW)
    review.decide(accepted, "accept", "alice", NOW)
    later = NOW + timedelta(days=1)
    counts = storage.store_items(
        [make_item(1, title="Post 1 (updated)", content_hash="new1"), make_item(2, content_hash="new2")], later
    )
    assert counts.updated == 2
    assert titles(review) == []
    assert storage.item_states([rejected])[rejected]["status"] == "rejected"


def test_priority_follows_a_new_prediction_and_a_new_date(review: Review, storage: Storage) -> None:
    one, two = add(storage, 1, confidence=0.5), add(storage, 2, confidence=0.5)
    assert titles(review) == ["Post 1", "Post 2"]  # same confidence: the newer first
    storage.save_predictions([(two, Prediction("k2", "Trends", 0.9, "Blog", "v2"))], NOW)
    assert titles(review) == ["Post 2", "Post 1"]
    storage.store_items([make_item(2, published=NOW - timedelta(days=30), content_hash="x")], NOW)
    assert titles(review) == ["Post 1", "Post 2"]  # re-dated a month older: 0.4 of confidence is not enough
    assert one != two


# -- stories (dedupe clusters) ----------------------------------------------------------------------


def _story(storage: Storage, *ids: int) -> None:
    storage.set_clusters({i: min(ids) for i in ids})


def test_a_story_is_one_card_listing_its_other_sources(review: Review, storage: Storage) -> None:
    paper = add(storage, 1, source="arxiv", item_type="Paper")
    post = add(storage, 2, source="lab-blog")
    third = add(storage, 3)
    _story(storage, paper, post)
    cards = review.page().cards
    assert [c.id for c in cards] == [paper, third]
    assert [o.item.source for o in cards[0].others] == ["lab-blog"]
    assert review.counts() == {"Trends": 2}


def test_a_decision_on_a_story_applies_to_every_member(review: Review, storage: Storage) -> None:
    paper, post = add(storage, 1, item_type="Paper", version="v7"), add(storage, 2, item_type="Blog", version="v7")
    _story(storage, paper, post)
    outcome = review.decide(post, "accept", "alice", NOW)  # any member names the story
    assert set(outcome.item_ids) == {paper, post}
    states = storage.item_states([paper, post])
    assert {s["status"] for s in states.values()} == {"accepted"}
    assert (states[paper]["item_type"], states[post]["item_type"]) == ("Paper", "Blog")  # each keeps its type
    assert {d.model_version for _, d in storage.decisions()} == {"v7"}
    review.undo("alice", NOW + timedelta(seconds=1))
    assert {s["status"] for s in storage.item_states([paper, post]).values()} == {"candidate"}


def test_an_item_joining_a_decided_story_does_not_bring_it_back(review: Review, storage: Storage) -> None:
    paper = add(storage, 1)
    review.decide(paper, "reject", "alice", NOW)
    late = add(storage, 2)
    _story(storage, paper, late)
    assert titles(review) == []
    assert review.counts() == {}


def test_split_takes_an_item_out_of_its_story_for_good(review: Review, storage: Storage) -> None:
    paper, post, wrong = add(storage, 1), add(storage, 2), add(storage, 3, title="Unrelated")
    _story(storage, paper, post, wrong)
    assert len(review.page().cards) == 1
    review.split(wrong, "alice", NOW)
    cards = review.page().cards
    assert sorted(c.id for c in cards) == [paper, wrong]
    assert (
        frozenset((paper, wrong)) in storage.cluster_splits() and frozenset((post, wrong)) in storage.cluster_splits()
    )
    assert [d.action for _, d in storage.decisions(item_id=wrong)] == ["split"]
    with pytest.raises(ReviewError, match="alone in its story"):
        review.split(wrong, "alice", NOW)


def test_splitting_the_lead_keeps_the_rest_together(review: Review, storage: Storage) -> None:
    lead, two, three = add(storage, 1), add(storage, 2), add(storage, 3)
    _story(storage, lead, two, three)
    review.split(lead, "alice", NOW)
    cards = review.page().cards
    assert sorted(c.id for c in cards) == [lead, two]
    assert [o.id for o in next(c for c in cards if c.id == two).others] == [three]


# -- the CLI: decide, review (the terminal walk), hash-password, serve ---------------------------------


@pytest.fixture
def cli_site(tmp_path: Path) -> Iterator[tuple[Path, Storage]]:
    config = tmp_path / "feeds.yaml"
    config.write_text("database: sqlite:///review.db\nsources: []\n")
    storage = open_storage(load_settings(config, env={}).database_url)
    yield config, storage
    storage.close()


def run_cli(config: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], input=input, env={"AGGREGATOR_EDITOR": "dora"})


def test_decide_accepts_rejects_and_moves_from_the_command_line(cli_site: tuple[Path, Storage]) -> None:
    config, storage = cli_site
    one, two, three = add(storage, 1), add(storage, 2), add(storage, 3)
    accepted = run_cli(config, "decide", str(one), "--accept", "--section", "Releases", "--type", "paper")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.output == f"accepted story {one}: Post 1 [Releases / Paper]\n"
    assert run_cli(config, "decide", str(two), "--reject", "--reason", "old news").exit_code == 0
    assert run_cli(config, "decide", str(three), "--move", "miscellaneous", "--editor", "eve").exit_code == 0
    log = [(d.editor, d.action, d.section, d.reason) for _, d in storage.decisions()]
    assert log == [
        ("dora", "accept", "Releases", None),
        ("dora", "reject", None, "old news"),
        ("eve", "move", "Miscellaneous", None),
    ]


def test_decide_refuses_unclear_or_bad_requests_in_one_line(cli_site: tuple[Path, Storage]) -> None:
    config, storage = cli_site
    item_id = add(storage, 1)
    both = run_cli(config, "decide", str(item_id), "--accept", "--reject")
    assert both.exit_code == 2 and "exactly one of --accept, --reject" in both.output
    missing = run_cli(config, "decide", "999", "--accept")
    assert missing.exit_code == 1 and missing.output == "error: no item with id 999\n"
    gossip = run_cli(config, "decide", str(item_id), "--move", "Gossip")
    assert gossip.exit_code == 1 and "unknown section 'Gossip'" in gossip.output
    assert storage.decisions() == []


def test_the_terminal_walk_decides_with_single_keys(cli_site: tuple[Path, Storage]) -> None:
    config, storage = cli_site
    one, two, three, four = (add(storage, n) for n in range(1, 5))
    # accept Post 1, reject Post 2 with a reason, skip Post 3, move Post 4 to Releases (key 4), quit
    result = run_cli(config, "review", input="aRspam\nj4q")
    assert result.exit_code == 0, result.output
    assert "[Blog] Post 1" in result.output and "because of: alpha, beta" in result.output
    states = storage.item_states()
    assert (states[one]["status"], states[two]["status"], states[four]["section"]) == (
        "accepted",
        "rejected",
        "Releases",
    )
    assert three not in states
    assert [d.reason for _, d in storage.decisions(item_id=two)] == ["spam"]
    assert {d.editor for _, d in storage.decisions()} == {"dora"}


def test_the_terminal_walk_undoes_and_says_when_the_queue_is_empty(cli_site: tuple[Path, Storage]) -> None:
    config, storage = cli_site
    item_id = add(storage, 1)
    result = run_cli(config, "review", input="au")
    assert "accepted into Trends" in result.output and "undone" in result.output
    assert storage.item_states()[item_id]["status"] == "candidate"
    storage.add_decision(item_id, Decision("k", "x", NOW, "reject"))
    assert "the queue is empty" in run_cli(config, "review").output


def test_hash_password_prints_a_hash_that_verifies(cli_site: tuple[Path, Storage]) -> None:
    config, _ = cli_site
    result = run_cli(config, "hash-password", input="hunter2-but-longer\nhunter2-but-longer\n")
    assert result.exit_code == 0
    encoded = result.output.strip().splitlines()[-1]
    assert verify_password("hunter2-but-longer", encoded)


def test_serve_runs_the_app_on_the_given_address(
    cli_site: tuple[Path, Storage], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = cli_site
    served: dict[str, object] = {}

    def fake_run(app: object, **options: object) -> None:
        served.update(options, app=app)

    monkeypatch.setattr("uvicorn.run", fake_run)
    result = CliRunner().invoke(main, ["--config", str(config), "serve", "--port", "8181"],
                                env={"AGGREGATOR_SECRET_KEY": "k" * 40})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 8181)
    assert type(served["app"]).__name__ == "FastAPI"
