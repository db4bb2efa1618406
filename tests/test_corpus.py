"""Opt-in: every file of a real feed corpus served on 127.0.0.1 through `run_once`.

Runs when AGGREGATOR_FEED_CORPUS names a folder (`.ci/run` sets it to ../shared/data/feeds). No file
may crash the run; every entry feedparser finds in a well-formed feed is stored (once); a second run
stores nothing new.
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from aggregator.config import load_settings
from aggregator.pipeline import RunOptions, run_once
from aggregator.storage import open_storage
from tests.server import LoopbackServer

CORPUS = os.environ.get("AGGREGATOR_FEED_CORPUS")
pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not CORPUS or not Path(CORPUS).is_dir(), reason="AGGREGATOR_FEED_CORPUS is not set"),
]
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def distinct_entries(body: bytes) -> int | None:
    """How many different entries feedparser finds in a well-formed feed (None: not well-formed)."""
    parsed = feedparser.parse(io.BytesIO(body), sanitize_html=False)
    if parsed.get("bozo") or not parsed.get("version"):
        return None
    seen = {e.get("id") or _alternate(e) or (e.get("title"), e.get("summary")) for e in parsed.entries}
    return len(seen)


def _alternate(entry: feedparser.FeedParserDict) -> str | None:
    """The entry's page: its rel=alternate link (feedparser's own `link` can pick an enclosure)."""
    for link in entry.get("links", []):
        if link.get("rel") == "alternate" and link.get("href"):
            return str(link["href"])
    return entry.get("link")


def test_every_file_runs_and_every_wellformed_entry_is_stored(tmp_path: Path, loopback: LoopbackServer) -> None:
    assert CORPUS is not None
    files = sorted(p for p in Path(CORPUS).rglob("*") if p.is_file())
    lines = []
    for n, path in enumerate(files):
        loopback.add(f"/f{n}", path.read_bytes(), content_type="application/octet-stream")
        lines.append(f'  - {{name: f{n}, kind: feed, url: "{loopback.url(f"/f{n}")}"}}')
    config = tmp_path / "feeds.yaml"
    config.write_text(
        f"database: sqlite:///{tmp_path}/c.db\nmodels_dir: {tmp_path}/none\n"
        "fetch: {allow_private_addresses: true, concurrency: 32, per_host: 32, timeout: 30}\n"
        "sources:\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    settings = load_settings(config, env={})
    with open_storage(settings.database_url) as storage:
        report = run_once(settings, storage, NOW, RunOptions(classify=False))
        assert len(report.results) == len(files)
        crashes = [r for r in report.results if r.error and r.error.startswith("internal error")]
        assert crashes == []
        lost = []
        for n, path in enumerate(files):
            expected = distinct_entries(path.read_bytes())
            result = report.results[n]
            if expected is None or "declares XML entities" in (result.error or ""):
                continue  # not well-formed, or refused on purpose
            # new, updated or already there: files share entries (the same arXiv paper, say), and an
            # entry another file stored first is stored all the same
            stored = result.new + result.updated + result.unchanged
            if stored < expected:
                lost.append(f"{path.relative_to(CORPUS)}: {stored} of {expected} ({result.error})")
        assert lost == []
        again = run_once(settings, storage, NOW + timedelta(days=1), RunOptions(classify=False))
        assert again.new == 0
