"""Review-queue speed at 50,000 queued items (issue 4): server time to render the first page of the
queue and to record a decision, median and p95 over 100 requests each, on a temporary SQLite file.

    python scripts/bench_review.py [--items 50000] [--requests 100] [--screenshot docs/review.png]

The items are synthetic (titles and summaries made from word lists below, about as long as real
ones), all with predictions, 10% of them in two- or three-item stories, and 2% already decided.
Requests go through FastAPI's TestClient in this process: the times are the app's own work plus the
in-process client's (no network). With --screenshot, the page is also served by uvicorn on
127.0.0.1 and photographed by chromium (Playwright), signed in, with the second card selected.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from aggregator.config import load_settings
from aggregator.review import QueueQuery, Review
from aggregator.storage import Storage, open_storage
from aggregator.types import Decision, Item, Prediction
from aggregator.web.app import create_app

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CATEGORIES = ("Trends", "State of the Art", "Miscellaneous", "Releases")
TOKEN = secrets.token_urlsafe(24)
ENV = {"AGGREGATOR_EDITOR_TOKEN": TOKEN, "AGGREGATOR_SECRET_KEY": secrets.token_urlsafe(32)}

ADJECTIVES = [
    "Sparse",
    "Efficient",
    "Scalable",
    "Robust",
    "Multimodal",
    "Self-supervised",
    "Long-context",
    "Open",
    "Small",
    "Instruction-tuned",
    "Retrieval-augmented",
    "Quantized",
    "Causal",
    "Federated",
]
THINGS = [
    "mixture-of-experts routing",
    "speculative decoding",
    "diffusion transformers",
    "reward models",
    "state-space models",
    "vision-language agents",
    "preference optimization",
    "tokenizer-free models",
    "graph neural networks",
    "neural scaling laws",
    "test-time compute",
    "synthetic data pipelines",
    "KV-cache compression",
    "protein language models",
    "world models",
    "code assistants",
]
PURPOSES = [
    "for low-resource translation",
    "at trillion-token scale",
    "on a single GPU",
    "without labels",
    "for robot manipulation",
    "in clinical notes",
    "under distribution shift",
    "with formal guarantees",
    "for weather forecasting",
    "in production search",
    "for math reasoning",
    "on edge devices",
]
SOURCES = {
    "paper": ["arxiv-cl", "arxiv-lg", "arxiv-cv", "arxiv-ai"],
    "blog": ["lab-blog", "research-notes", "ml-weekly", "eng-blog", "ai-newsroom", "data-digest"],
    "release": ["gh-inference-engine", "gh-training-lib", "gh-tokenizers", "gh-vector-db", "gh-agent-kit"],
}
TYPES = {"paper": "Paper", "blog": "Blog", "release": "Minor Release"}
SECTION_OF_KIND = {"paper": ["State of the Art", "Trends"], "blog": ["Trends", "Miscellaneous"],
                   "release": ["Releases"]}  # fmt: skip


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    with tempfile.TemporaryDirectory(prefix="bench-review-") as folder:
        settings, storage = _open(Path(folder))
        built = time.perf_counter()
        counts = build_queue(storage, args.items, random.Random(4))
        print(f"built {args.items:,} items in {time.perf_counter() - built:.0f} s: {counts}")
        review = Review.from_settings(settings, storage)
        print(f"queued stories: {review.total():,} {review.counts()}")
        app = create_app(settings, storage, env=ENV)
        clock = ServerClock(app)
        with TestClient(clock, base_url="http://127.0.0.1") as client:
            measure_all(client, clock, review, args.requests)
        if args.screenshot:
            screenshot(app, args.screenshot)
        size = sum(p.stat().st_size for p in Path(folder).glob("review.db*"))
        print(f"database: {size / 1e6:.0f} MB; load average during the run: {os.getloadavg()[0]:.1f}")
        storage.close()
    return 0


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the page here")
    return parser.parse_args(argv[1:])


def _open(folder: Path) -> tuple[Any, Storage]:
    config = folder / "feeds.yaml"
    config.write_text("database: sqlite:///review.db\nsources: []\n")
    settings = load_settings(config, env={})
    return settings, open_storage(settings.database_url)


# -- the data ---------------------------------------------------------------------------------------------


def build_queue(storage: Storage, total: int, rnd: random.Random) -> str:
    kinds = rnd.choices(["paper", "blog", "release"], weights=[5, 4, 1], k=total)
    items = [_item(n, kind, rnd) for n, kind in enumerate(kinds)]
    ids = list(storage.store_items(items, NOW).new_ids)
    key_of = {item_id: item.key for item_id, item in zip(ids, items, strict=True)}
    predictions = []
    for item_id, item in zip(ids, items, strict=True):
        section = rnd.choice(SECTION_OF_KIND[item.kind])
        relevance = rnd.random() if rnd.random() < 0.5 else None
        words = list(re.findall(r"[a-z-]{4,}", item.title.lower()))
        terms = tuple(rnd.sample(words, k=min(3, len(words))))
        prediction = Prediction(item.key, section, rnd.uniform(0.3, 0.99), TYPES[item.kind], "2026-11-20", terms,
                                relevance)  # fmt: skip
        predictions.append((item_id, prediction))
    storage.save_predictions(predictions, NOW)
    clusters = _clusters(ids, total // 10, rnd)
    storage.set_clusters(clusters)
    decided = rnd.sample(ids, total // 50)
    past = NOW - timedelta(days=1)
    storage.add_decisions(
        [(i, Decision(key_of[i], "past-editor", past, rnd.choice(["accept", "reject"]), "Trends")) for i in decided]
    )
    return f"{len(predictions):,} predictions, {len(clusters):,} items in stories, {len(decided):,} decided"


def _item(n: int, kind: str, rnd: random.Random) -> Item:
    if kind == "release":
        source = rnd.choice(SOURCES["release"])
        title = f"{source.removeprefix('gh-')} v{rnd.randint(0, 4)}.{rnd.randint(0, 40)}.{rnd.randint(0, 9)}"
    else:
        source = rnd.choice(SOURCES[kind])
        title = f"{rnd.choice(ADJECTIVES)} {rnd.choice(THINGS)} {rnd.choice(PURPOSES)}"
    summary = " ".join(
        f"We study {rnd.choice(THINGS)} {rnd.choice(PURPOSES)} and compare it with {rnd.choice(THINGS)}."
        for _ in range(3)
    )
    return Item(
        key=f"bench:{n}",
        title=title,
        url=f"https://example.org/{kind}/{n}",
        source=source,
        kind=kind,  # type: ignore[arg-type]
        summary_text=summary,
        published=NOW - timedelta(minutes=3 * n + rnd.randint(0, 120)),
        content_hash=str(n),
    )


def _clusters(ids: list[int], size: int, rnd: random.Random) -> dict[int, int]:
    assignment: dict[int, int] = {}
    members = rnd.sample(ids, size)
    while members:
        story = sorted(members[: rnd.choice((2, 3))])
        members = members[len(story) :]
        assignment |= dict.fromkeys(story, story[0])
    return assignment


# -- the measurements ---------------------------------------------------------------------------------------


def measure_all(client: TestClient, clock: ServerClock, review: Review, requests: int) -> None:
    csrf = _sign_in(client)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    page_ids = iter(c.id for c in review.page(QueueQuery(section="Trends"), limit=requests).cards)
    api_ids = iter(c.id for c in review.page(QueueQuery(section="State of the Art"), limit=requests).cards)
    print(f"\n{'':56} {'server ms':>13}   {'round trip ms':>13}")
    print(f"{'request':56} {'median':>6} {'p95':>6}   {'median':>6} {'p95':>6} {'n':>5}")
    measures: list[tuple[str, int, Callable[[], Any]]] = [
        ("GET /  (first page: the top of every section)", requests, lambda: client.get("/")),
        ("GET /?section=Trends  (first page of one section)", requests, lambda: client.get("/?section=Trends")),
        (
            "POST /items/{id}/decide  (accept, from the page)",
            requests,
            lambda: client.post(f"/items/{next(page_ids)}/decide", data={"action": "accept"},
                                headers={"X-CSRF-Token": csrf}),
        ),
        (
            "POST /api/items/{id}/decision  (reject, via the API)",
            requests,
            lambda: client.post(f"/api/items/{next(api_ids)}/decision", json={"action": "reject"}, headers=bearer),
        ),
        ("POST /api/undo", min(requests, 20), lambda: client.post("/api/undo", headers=bearer)),
        ("GET /strip  (counts of every section: reads it all)", 20, lambda: client.get("/strip")),
        ("GET /api/queue  (first page + total: reads it all)", 20, lambda: client.get("/api/queue")),
        ("GET /?q=diffusion  (free-text filter)", 20, lambda: client.get("/?q=diffusion")),
    ]  # fmt: skip
    for label, n, request in measures:
        report(label, n, request, clock)


class ServerClock:
    """ASGI wrapper that times the app itself: from the request's arrival to the response's last
    byte, without the test client's threads and queues around it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        await self.app(scope, receive, send)
        self.last_ms = (time.perf_counter() - started) * 1000


def report(label: str, n: int, request: Callable[[], Any], clock: ServerClock) -> None:
    server, total = [], []
    for _ in range(n):
        started = time.perf_counter()
        response = request()
        total.append((time.perf_counter() - started) * 1000)
        server.append(clock.last_ms)
        if response.status_code >= 400:
            raise SystemExit(f"{label}: HTTP {response.status_code}: {response.text[:200]}")
    print(f"{label:56} {_stats(server)}   {_stats(total)} {n:5d}")


def _stats(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"{statistics.median(ordered):6.1f} {p95:6.1f}"


def _sign_in(client: TestClient) -> str:
    client.post("/login", data={"name": "bench", "password": TOKEN})
    match = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text)
    if not match:
        raise SystemExit("could not sign in")
    return match.group(1)


# -- the screenshot -----------------------------------------------------------------------------------------


def screenshot(app: Any, path: Path) -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/login")
            page.fill("input[name=name]", "alice")
            page.fill("input[name=password]", TOKEN)
            page.click("button:has-text('sign in')")
            page.wait_for_selector(".strip .counts")
            page.keyboard.press("j")
            page.wait_for_timeout(300)
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path))
            browser.close()
        print(f"screenshot: {path}")
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
