"""The review page in a real browser (Playwright driving Debian's chromium): sign in, decide with the
keyboard, undo, and check the database; hostile items render inert. Skipped without /usr/bin/chromium."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright
from test_web import HOSTILE, PASSWORD, SECRET, TOKEN, Site, make_site

from aggregator.storage import Storage
from aggregator.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]


class LiveServer:
    """The review app under uvicorn on 127.0.0.1, in a thread; the clock is the real one."""

    def __init__(self, site: Site) -> None:
        app = create_app(site.settings, site.storage, env={"AGGREGATOR_EDITOR_TOKEN": TOKEN,
                                                           "AGGREGATOR_SECRET_KEY": SECRET})  # fmt: skip
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = make_site(tmp_path)
    yield made
    made.client.close()
    made.storage.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def problems() -> list[str]:
    """Console errors and uncaught exceptions of the page (a CSP violation is a console error)."""
    return []


@pytest.fixture
def page(browser: Browser, problems: list[str]) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    yield opened
    context.close()


def sign_in(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/login")
    page.fill("input[name=name]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('sign in')")
    page.wait_for_selector("text=signed in as")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def state(storage: Storage, item_id: int) -> tuple[str | None, str | None]:
    found = storage.item_states([item_id]).get(item_id)
    return (found["status"], found["section"]) if found else (None, None)


def test_an_editor_works_through_the_queue_with_the_keyboard(site: Site, page: Page, problems: list[str]) -> None:
    first, second, third = site.add(1, confidence=0.9), site.add(2, confidence=0.8), site.add(3, confidence=0.7)
    with LiveServer(site) as server:
        sign_in(page, server)
        page.wait_for_selector(f"#card-{first}.current")

        page.keyboard.press("a")
        wait_for(lambda: state(site.storage, first) == ("accepted", "Trends"), "the accept to be recorded")
        page.wait_for_selector(f"#card-{first}", state="detached")
        page.wait_for_selector(f"#card-{second}.current")

        page.keyboard.press("j")
        page.wait_for_selector(f"#card-{third}.current")
        page.keyboard.press("2")
        wait_for(lambda: state(site.storage, third) == ("candidate", "State of the Art"), "the move")
        page.wait_for_selector(f"#card-{third} .section:has-text('State of the Art')")

        page.keyboard.press("u")
        wait_for(lambda: state(site.storage, third) == ("candidate", None), "the undo of the move")
        page.wait_for_selector(f"#card-{third} .section:has-text('Trends')")
        page.keyboard.press("u")
        wait_for(lambda: state(site.storage, first) == ("candidate", None), "the undo of the accept")
        page.wait_for_selector(f"#card-{first}")

        page.keyboard.press("?")
        assert page.is_visible("dialog#help")
        page.keyboard.press("Escape")
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "search"

    log = [(d.editor, d.action) for _, d in site.storage.decisions()]
    assert log == [("alice", "accept"), ("alice", "move"), ("alice", "undo"), ("alice", "undo")]
    assert problems == []  # no CSP violation, no script error


def test_bulk_reject_of_selected_cards(site: Site, page: Page, problems: list[str]) -> None:
    ids = [site.add(n) for n in range(1, 4)]
    with LiveServer(site) as server:
        sign_in(page, server)
        page.wait_for_selector(f"#card-{ids[0]}.current")
        page.keyboard.press("x")
        page.keyboard.press("j")
        page.keyboard.press("x")
        page.keyboard.press("R")
        wait_for(lambda: [state(site.storage, i)[0] for i in ids] == ["rejected", "rejected", None], "bulk reject")
        page.wait_for_selector(f"#card-{ids[0]}", state="detached")
        assert page.locator(".card").count() == 1


def test_a_reader_without_a_session_cannot_decide(site: Site, page: Page, problems: list[str]) -> None:
    item_id = site.add(1)
    with LiveServer(site) as server:
        page.goto(server.url)
        page.wait_for_selector(f"#card-{item_id}")
        page.keyboard.press("a")
        page.wait_for_selector("#flash:has-text('read-only')")
    assert state(site.storage, item_id) == (None, None)


def test_hostile_items_render_inert(site: Site, page: Page, problems: list[str]) -> None:
    site.add(1, **HOSTILE)
    site.add(2, title="<b onmouseover=alert(8)>entity</b>", url="jav&#x09;ascript:alert(6)")
    site.add(3, title="spaced", url="\tjavascript:alert(7)", summary_html='<svg onload="alert(9)"></svg><p>svg</p>')
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with LiveServer(site) as server:
        for signed_in in (False, True):
            if signed_in:
                sign_in(page, server)
            else:
                page.goto(server.url)
            page.wait_for_selector(".card")
            page.hover(".card .summary")
            for link in page.locator(".card a").all():
                link.hover()
            hrefs = page.eval_on_selector_all("[href]", "els => els.map(e => e.href)")
            assert all(h.startswith(("http://", "https://")) for h in hrefs), hrefs
            assert not any("javascript" in h.lower() for h in hrefs)
            actions = page.eval_on_selector_all("form", "els => els.map(e => e.action)")
            assert not any("evil" in a for a in actions), actions
            assert page.locator(".card img, .card svg, .card script, .card [onerror], .card [onload]").count() == 0
            assert page.locator(".card [onclick], .card [onmouseover], .card input[name=password]").count() == 0
            assert "<script>alert" in page.inner_text(".card .title")  # shown as text
    assert dialogs == []
    assert problems == []
