"""The review page and JSON API (aggregator/web) through FastAPI's test client: who may decide,
CSRF, decisions and undo recorded, stories, the status strip and retraining, inert hostile items."""

from __future__ import annotations

import re
import stat
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aggregator.config import Editor, Settings, load_settings
from aggregator.errors import ConfigError
from aggregator.storage import Storage, open_storage
from aggregator.types import Item, Prediction
from aggregator.web.app import create_app, safe_url
from aggregator.web.auth import Authenticator, SessionSigner, hash_password, load_secret, verify_password
from tests.factories import blog_item

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
TOKEN = "test-token-0123456789abcdef"
PASSWORD = "correct horse battery"
SECRET = "s" * 40
ALICE_HASH = hash_password(PASSWORD)


@dataclass
class Site:
    settings: Settings
    storage: Storage
    client: TestClient

    def add(self, n: int, section: str | None = "Trends", confidence: float = 0.5, **changes: Any) -> int:
        item = blog_item(n, NOW, **changes)
        item_id = self.storage.store_items([item], NOW).new_ids[0]
        prediction = Prediction(item.key, section, confidence, "Blog", "v1", ("alpha", "beta"))
        self.storage.save_predictions([(item_id, prediction)], NOW)
        return item_id

    def login(self, name: str = "alice", password: str = PASSWORD) -> str:
        """Sign in; return the page's CSRF token."""
        response = self.client.post("/login", data={"name": name, "password": password}, follow_redirects=False)
        assert response.status_code == 303, response.text
        return csrf_of(self.client.get("/").text)

    def status(self, item_id: int) -> str | None:
        state = self.storage.item_states([item_id]).get(item_id)
        return state["status"] if state else None


def make_site(
    folder: Path,
    *,
    editors: bool = True,
    env: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: NOW,
) -> Site:
    config = folder / "feeds.yaml"
    editor_lines = f"review:\n  editors:\n    - {{name: alice, password_hash: '{ALICE_HASH}'}}\n" if editors else ""
    config.write_text(
        f"database: sqlite:///review.db\nsources:\n  - {{name: blog, kind: feed, url: 'https://example.org/feed'}}\n{editor_lines}"
    )
    settings = load_settings(config, env={})
    storage = open_storage(settings.database_url)
    environment = {"AGGREGATOR_EDITOR_TOKEN": TOKEN, "AGGREGATOR_SECRET_KEY": SECRET} if env is None else env
    app = create_app(settings, storage, env=environment, clock=clock)
    return Site(settings, storage, TestClient(app, base_url="http://testserver"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = make_site(tmp_path)
    yield made
    made.client.close()
    made.storage.close()


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, "no CSRF token on the page: not signed in?"
    return match.group(1)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def decide(site: Site, item_id: int, csrf: str, **fields: str) -> Any:
    return site.client.post(f"/items/{item_id}/decide", data=fields, headers={"X-CSRF-Token": csrf})


# -- the page, read-only --------------------------------------------------------------------------------


def test_the_page_lists_the_queue_by_section_with_what_each_card_needs(site: Site) -> None:
    site.add(1, "Trends", 0.87)
    site.add(2, "Releases")
    page = site.client.get("/")
    assert page.status_code == 200
    html = page.text[page.text.index('<main id="queue">') :]
    assert html.index("Trends") < html.index("Post 1") < html.index("Releases") < html.index("Post 2")
    assert 'href="https://example.org/1"' in html and "87%" in html and "alpha" in html and "[Blog]" in html
    assert "sign in to decide" in page.text and 'data-key="a"' not in html  # read-only: no decision buttons


def test_every_response_carries_a_strict_csp_and_the_page_has_no_inline_script(site: Site) -> None:
    site.add(1)
    for path in ("/", "/login", "/api/queue", "/static/review.js"):
        response = site.client.get(path)
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        assert response.headers["x-content-type-options"] == "nosniff"
    html = site.client.get("/").text
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"\son[a-z]+\s*=", html) == []


def test_htmx_is_served_from_the_package(site: Site) -> None:
    html = site.client.get("/").text
    assert '<script src="/static/htmx.min.js"' in html and "unpkg" not in html and "cdn" not in html
    served = site.client.get("/static/htmx.min.js")
    assert served.status_code == 200 and "Zero-Clause BSD" in served.text[:300] and "htmx" in served.text


def test_filters_narrow_the_page_and_bad_ones_are_named(site: Site) -> None:
    site.add(1, title="Diffusion at scale")
    site.add(2, "Releases", title="torch 2.5.0")
    html = site.client.get("/", params={"q": "diffusion"}).text
    assert "Diffusion at scale" in html and "torch 2.5.0" not in html
    html = site.client.get("/", params={"section": "Releases"}).text
    assert "torch 2.5.0" in html and "Diffusion at scale" not in html
    bad = site.client.get("/", params={"since": "2026-13-01"})
    assert bad.status_code == 400 and "since" in bad.text and "YYYY-MM-DD" in bad.text


# -- who may decide -------------------------------------------------------------------------------------


def test_deciding_needs_a_session(site: Site) -> None:
    item_id = site.add(1)
    assert site.client.post(f"/items/{item_id}/decide", data={"action": "accept"}).status_code == 401
    assert site.client.post(f"/api/items/{item_id}/decision", json={"action": "accept"}).status_code == 401
    assert site.client.post("/api/undo").status_code == 401
    assert site.status(item_id) is None


def test_login_sets_a_strict_httponly_cookie_and_a_wrong_password_is_refused(site: Site) -> None:
    wrong = site.client.post("/login", data={"name": "alice", "password": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401 and "wrong name or password" in wrong.text
    ok = site.client.post("/login", data={"name": "alice", "password": PASSWORD}, follow_redirects=False)
    cookie = ok.headers["set-cookie"]
    assert ok.status_code == 303 and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "signed in as <b>alice</b>" in site.client.get("/").text


def test_the_token_signs_in_under_the_name_given_but_never_as_a_configured_editor(site: Site) -> None:
    refused = site.client.post("/login", data={"name": "alice", "password": TOKEN}, follow_redirects=False)
    assert refused.status_code == 401
    site.login("carol", TOKEN)
    assert "signed in as <b>carol</b>" in site.client.get("/").text


def test_state_changes_need_the_csrf_token_and_a_same_site_origin(site: Site) -> None:
    item_id = site.add(1)
    csrf = site.login()
    assert site.client.post(f"/items/{item_id}/decide", data={"action": "accept"}).status_code == 403
    assert decide(site, item_id, "forged", action="accept").status_code == 403
    cross = site.client.post(
        f"/items/{item_id}/decide",
        data={"action": "accept"},
        headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
    )
    assert cross.status_code == 403 and site.status(item_id) is None
    assert decide(site, item_id, csrf, action="accept").status_code == 200
    [(_, decision)] = site.storage.decisions()
    assert decision.editor == "alice" and decision.action == "accept" and decision.model_version == "v1"


def test_a_bearer_token_works_on_the_api_and_a_wrong_one_does_not(site: Site) -> None:
    item_id = site.add(1)
    refused = site.client.post(f"/api/items/{item_id}/decision", json={"action": "accept"}, headers=bearer("x" * 30))
    assert refused.status_code == 401
    ok = site.client.post(f"/api/items/{item_id}/decision", json={"action": "accept"}, headers=bearer())
    assert ok.status_code == 200 and ok.json()["editor"] == "token" and ok.json()["item_ids"] == [item_id]


def test_without_editors_or_token_the_page_stays_read_only(tmp_path: Path) -> None:
    site = make_site(tmp_path, editors=False, env={"AGGREGATOR_SECRET_KEY": SECRET})
    item_id = site.add(1)
    assert "no editors configured" in site.client.get("/").text
    assert site.client.post("/login", data={"name": "x", "password": "y"}).status_code == 401
    assert site.client.post(f"/api/items/{item_id}/decision", json={"action": "accept"}).status_code == 401
    site.storage.close()


# -- decisions on the page --------------------------------------------------------------------------------


def test_accept_removes_the_card_and_tells_the_page(site: Site) -> None:
    item_id = site.add(1)
    csrf = site.login()
    response = decide(site, item_id, csrf, action="accept", new_section="Releases", new_type="Paper")
    assert response.status_code == 200 and response.text == ""
    assert '"flash": "accepted 1 story"' in response.headers["hx-trigger"]
    state = site.storage.item_states([item_id])[item_id]
    assert (state["status"], state["section"], state["item_type"], state["decided_by"]) == (
        "accepted",
        "Releases",
        "Paper",
        "alice",
    )


def test_move_and_note_re_render_the_card_in_place(site: Site) -> None:
    item_id = site.add(1)
    csrf = site.login()
    moved = decide(site, item_id, csrf, action="move", new_section="Miscellaneous")
    assert 'class="section">Miscellaneous<' in moved.text
    noted = decide(site, item_id, csrf, action="note", reason="check the benchmark")
    assert "note: check the benchmark" in noted.text
    in_trends_view = decide(site, item_id, csrf, action="move", new_section="Releases", view_section="Miscellaneous")
    assert in_trends_view.text == ""  # the card leaves a view of another section


def test_a_bad_decision_is_a_400_naming_the_problem(site: Site) -> None:
    item_id = site.add(1)
    csrf = site.login()
    response = decide(site, item_id, csrf, action="move", new_section="Gossip")
    assert response.status_code == 400 and "unknown section 'Gossip'" in response.text
    assert decide(site, 999, csrf, action="accept").status_code == 404


def test_bulk_reject_and_undo_from_the_page(site: Site) -> None:
    ids = [site.add(n) for n in range(1, 4)]
    csrf = site.login()
    bulk = site.client.post(
        "/bulk", data={"ids": [str(i) for i in ids[:2]], "action": "reject"}, headers={"X-CSRF-Token": csrf}
    )
    assert bulk.status_code == 200 and "Post 3" in bulk.text and "Post 1" not in bulk.text
    assert [site.status(i) for i in ids] == ["rejected", "rejected", None]
    undo = site.client.post("/undo", headers={"X-CSRF-Token": csrf})
    assert undo.status_code == 200 and "Post 1" in undo.text and "undid" in undo.headers["hx-trigger"]
    assert [site.status(i) for i in ids] == ["candidate", "candidate", None]


def test_sign_out_needs_the_csrf_token_and_ends_the_session(site: Site) -> None:
    csrf = site.login()
    assert site.client.post("/logout", data={}).status_code == 403
    site.client.post("/logout", data={"csrf_token": csrf})
    assert "sign in to decide" in site.client.get("/").text


# -- the JSON API ---------------------------------------------------------------------------------------


def test_api_queue_answers_items_and_total_with_filters(site: Site) -> None:
    site.add(1, "Trends", 0.9)
    site.add(2, "Releases", 0.6, source="github")
    body = site.client.get("/api/queue").json()
    assert body["total"] == 2 and [i["title"] for i in body["items"]] == ["Post 1", "Post 2"]
    first = body["items"][0]
    assert {"id", "title", "url", "source", "section", "confidence", "item_type"} <= set(first)
    assert (first["section"], first["confidence"], first["item_type"]) == ("Trends", 0.9, "Blog")
    only = site.client.get("/api/queue", params={"source": "github", "limit": 1}).json()
    assert only["total"] == 1 and only["items"][0]["title"] == "Post 2"
    assert site.client.get("/api/queue", params={"type": "Tweet"}).json() == {
        "error": "unknown type 'Tweet' (types: Paper, Technical report, Blog, Package, Major Release, "
        "Minor Release, Patch Release, Conference, Conference talk)"
    }


def test_api_decision_undo_and_their_records(site: Site) -> None:
    one, two = site.add(1), site.add(2)
    accept = site.client.post(
        f"/api/items/{one}/decision", json={"action": "accept", "section": "Releases", "item_type": "Paper"},
        headers=bearer(),
    )  # fmt: skip
    assert accept.status_code == 200 and accept.json()["card"]["status"] == "accepted"
    reject = site.client.post(
        f"/api/items/{two}/decision", json={"action": "reject", "reason": "spam"}, headers=bearer()
    )
    assert reject.status_code == 200
    assert site.client.post("/api/undo", headers=bearer()).json()["item_ids"] == [two]
    assert [i["id"] for i in site.client.get("/api/queue").json()["items"]] == [two]
    log = [(d.editor, d.action, d.section, d.reason) for _, d in site.storage.decisions()]
    assert log == [
        ("token", "accept", "Releases", None),
        ("token", "reject", None, "spam"),
        ("token", "undo", None, None),
    ]
    bad = site.client.post(f"/api/items/{one}/decision", json={"action": "accept", "colour": "red"}, headers=bearer())
    assert bad.status_code == 400 and "unknown field 'colour'" in bad.json()["error"]
    assert site.client.post("/api/items/999/decision", json={"action": "accept"}, headers=bearer()).status_code == 404


def test_api_undo_with_nothing_to_undo_says_so(site: Site) -> None:
    response = site.client.post("/api/undo", headers=bearer())
    assert response.status_code == 400 and "nothing to undo" in response.json()["error"]


def test_api_bulk_decisions(site: Site) -> None:
    ids = [site.add(n) for n in range(1, 4)]
    response = site.client.post("/api/decisions", json={"ids": ids[:2], "action": "accept"}, headers=bearer())
    assert response.status_code == 200 and sorted(response.json()["item_ids"]) == ids[:2]
    assert site.client.get("/api/queue").json()["total"] == 1


def test_republished_items_stay_decided(site: Site) -> None:
    item_id = site.add(1)
    site.client.post(f"/api/items/{item_id}/decision", json={"action": "reject"}, headers=bearer())
    updated = Item(key="url:https://example.org/1", title="Post 1, corrected", url="https://example.org/1",
                   source="blog", kind="blog", published=NOW, content_hash="changed")  # fmt: skip
    assert site.storage.store_items([updated], NOW + timedelta(days=1)).updated == 1
    assert site.client.get("/api/queue").json()["total"] == 0
    assert site.status(item_id) == "rejected"


def test_a_story_is_decided_as_one_and_an_editor_can_split_it(site: Site) -> None:
    paper, post, wrong = site.add(1), site.add(2), site.add(3)
    site.storage.set_clusters({paper: paper, post: paper, wrong: paper})
    body = site.client.get("/api/queue").json()
    assert body["total"] == 1 and [o["id"] for o in body["items"][0]["others"]] == [post, wrong]
    split = site.client.post(f"/api/items/{wrong}/split", headers=bearer())
    assert split.status_code == 200
    assert site.client.get("/api/queue").json()["total"] == 2
    decided = site.client.post(f"/api/items/{post}/decision", json={"action": "accept"}, headers=bearer()).json()
    assert sorted(decided["item_ids"]) == [paper, post]
    assert [site.status(i) for i in (paper, post, wrong)] == ["accepted", "accepted", "candidate"]
    site.storage.set_clusters({site.add(4): paper})  # a late item joins the decided story
    assert [i["id"] for i in site.client.get("/api/queue").json()["items"]] == [wrong]


def test_split_from_the_page(site: Site) -> None:
    paper, wrong = site.add(1), site.add(2)
    site.storage.set_clusters({paper: paper, wrong: paper})
    csrf = site.login()
    html = site.client.get("/").text
    assert f'hx-post="/items/{wrong}/split"' in html
    response = site.client.post(f"/items/{wrong}/split", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200 and response.text.count('class="card"') == 2
    assert frozenset((paper, wrong)) in site.storage.cluster_splits()


def test_api_status(site: Site) -> None:
    site.add(1)
    body = site.client.get("/api/status").json()
    assert body["queue_stories"] == {"Trends": 1}
    assert body["model"]["version"] is None and body["decisions_since_model"] == 0
    assert body["retrain"] == {"running": False, "last": None}


# -- the status strip and retraining ------------------------------------------------------------------------


def test_the_strip_shows_queue_per_section_and_decisions_since_the_model(site: Site) -> None:
    site.add(1, "Trends")
    site.add(2, "Releases")
    strip = site.client.get("/strip").text
    assert re.search(r"Trends <b>1</b>", strip) and re.search(r"Releases <b>1</b>", strip)
    assert "decisions since" in strip and "retrain" not in strip  # read-only: no retrain button
    site.login()
    assert 'id="retrain"' in site.client.get("/strip").text


def test_the_retrain_button_runs_training_in_the_background(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def retrain(settings: Settings, storage: Storage, now: datetime, force: bool = False) -> str:
        calls.append((settings, storage, now, force))
        return "model 2026-11-26 promoted"

    fake = types.ModuleType("aggregator.training")
    fake.retrain = retrain  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aggregator.training", fake)
    csrf = site.login()
    assert site.client.post("/retrain").status_code == 403  # no CSRF token
    response = site.client.post("/retrain", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204 and "retraining started" in response.headers["hx-trigger"]
    app_ctx = site.client.app.state.ctx  # type: ignore[attr-defined]
    app_ctx.retrainer.wait(10)
    assert calls == [(site.settings, site.storage, NOW, False)]
    assert "model 2026-11-26 promoted" in site.client.get("/strip").text


def test_a_failing_retrain_shows_its_error(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from aggregator.errors import ModelError

    def retrain(settings: Settings, storage: Storage, now: datetime, force: bool = False) -> None:
        raise ModelError("only 3 decisions since the live model (need 20)")

    fake = types.ModuleType("aggregator.training")
    fake.retrain = retrain  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aggregator.training", fake)
    response = site.client.post("/api/retrain", headers=bearer())
    assert response.status_code == 202 and response.json()["started"]
    site.client.app.state.ctx.retrainer.wait(10)  # type: ignore[attr-defined]
    assert "failed: only 3 decisions" in site.client.get("/api/status").json()["retrain"]["last"]


# -- hostile items --------------------------------------------------------------------------------------


HOSTILE = {
    "title": '<script>alert("title")</script><img src=x onerror=alert(1)>',
    "url": "javascript:alert(document.cookie)",
    "summary_html": (
        '<p>Hi<script>alert("summary")</script></p><a href="jav&#x09;ascript:alert(2)">tab</a>'
        '<a href="JaVaScRiPt:alert(3)">case</a><img src="x" onerror="alert(4)">'
        '<form action="https://evil.example/steal"><input name="password"></form>'
        '<a href="https://example.org/fine" onclick="alert(5)">fine</a><a href="/relative">relative</a>'
    ),
}


def test_hostile_titles_links_and_summaries_render_inert(site: Site) -> None:
    site.add(1, **HOSTILE)
    site.add(2, url="jav&#x09;ascript:alert(6)", title="entity link")
    site.add(3, url=" javascript:alert(7)", title="spaced link")
    html = site.client.get("/").text
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#34;title&#34;)" in html
    assert re.findall(r"href=\"(?!https?://|/)", html) == []  # every href is http(s) or this site
    assert "javascript" not in html.lower().replace("javascript:alert(document.cookie)", "")
    assert "onerror" not in html.replace("onerror=alert(1)&gt;", "") and "onclick" not in html
    assert "evil.example" not in html and 'name="password"' not in html
    assert 'href="https://example.org/fine"' in html and "/relative" not in html


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://example.org/a?b=c", True),
        ("http://example.org", True),
        ("HTTPS://EXAMPLE.ORG/", True),
        ("javascript:alert(1)", False),
        ("jav\tascript:alert(1)", False),
        ("jav&#x09;ascript:alert(1)", False),
        (" https://example.org", False),
        ("https://exa mple.org", False),
        ("data:text/html,hi", False),
        ("//example.org/x", False),
        ("https:///nohost", False),
        ("", False),
    ],
)
def test_only_plain_http_links_are_linked(url: str, safe: bool) -> None:
    assert (safe_url(url) is not None) == safe


# -- auth pieces ----------------------------------------------------------------------------------------


def test_password_hashes_verify_and_a_malformed_one_is_named(tmp_path: Path) -> None:
    encoded = hash_password("s3cret")
    assert encoded.startswith("scrypt$16384$8$1$") and verify_password("s3cret", encoded)
    assert not verify_password("S3cret", encoded)
    assert hash_password("s3cret") != encoded  # salted
    with pytest.raises(ConfigError, match=r"review\.editors 'bob': password_hash is not a hash made by"):
        Authenticator([Editor(name="bob", password_hash="plaintext")], None)
    with pytest.raises(ConfigError, match="AGGREGATOR_EDITOR_TOKEN is too short"):
        Authenticator([], "short")


def test_sessions_are_signed_and_expire() -> None:
    signer = SessionSigner(b"k" * 32, lifetime=timedelta(hours=1))
    cookie, session = signer.issue("alice", NOW)
    assert signer.read(cookie, NOW) == session
    payload, signature = cookie.split(".")
    assert signer.read(payload + "." + signature[::-1], NOW) is None
    assert signer.read(cookie, NOW + timedelta(hours=2)) is None
    assert SessionSigner(b"other-key" * 4).read(cookie, NOW) is None
    assert signer.read("garbage", NOW) is None and signer.read(None, NOW) is None


def test_changing_a_password_ends_the_sessions_made_with_the_old_one(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.login()
    other = Authenticator([Editor(name="alice", password_hash=hash_password("new password"))], TOKEN)
    site.client.app.state.ctx.auth = other  # type: ignore[attr-defined]  # as after a config reload
    assert "sign in to decide" in site.client.get("/").text
    site.storage.close()


def test_the_session_key_is_kept_beside_the_config_with_owner_only_access(tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    config.write_text("sources: []\n")
    settings = load_settings(config, env={})
    first = load_secret(settings, {})
    assert load_secret(settings, {}) == first and len(first) >= 32
    assert stat.S_IMODE((tmp_path / ".aggregator-secret").stat().st_mode) == 0o600
    assert load_secret(settings, {"AGGREGATOR_SECRET_KEY": SECRET}) == SECRET.encode()


def test_guessing_a_password_is_slowed_to_five_tries_per_quarter_hour(tmp_path: Path) -> None:
    clock = [NOW]
    made = make_site(tmp_path, clock=lambda: clock[0])

    def sign_in(password: str, name: str = "alice") -> Any:
        return made.client.post("/login", data={"name": name, "password": password}, follow_redirects=False)

    try:
        assert [sign_in(f"guess {n}").status_code for n in range(5)] == [401] * 5
        refused = sign_in(PASSWORD)  # even the right one: the guesser cannot tell
        assert refused.status_code == 429 and "too many wrong passwords" in refused.text
        assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
        assert sign_in(TOKEN, name="carol").status_code == 303  # another name is not locked out
        clock[0] = NOW + timedelta(minutes=16)
        assert sign_in(PASSWORD).status_code == 303
    finally:
        made.client.close()
        made.storage.close()
