"""Crash safety: `aggregator run` (and `train`, `export`) killed with SIGKILL at random, seeded
moments over slow loopback feeds, then one clean `python -m aggregator run`:

- the stored items equal those of a clean run on a fresh database (no loss, no duplicate);
- every editor decision recorded between kills is still there;
- no half-written model or export is ever visible under its final name;
- the run lock a killed run leaves behind does not block the next run.

The killed commands are started by a multiprocessing forkserver that has imported the CLI once
(tests/hostile/cli_child.py), so each starts in milliseconds and the kill lands inside the command.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.context import ForkServerContext
from pathlib import Path

import pytest

from aggregator.classify.registry import CURRENT_FILE, Registry
from aggregator.storage import Storage, open_storage
from aggregator.types import Decision, DecisionAction, Item
from tests.hostile.cli_child import run_cli
from tests.server import LoopbackServer
from tests.test_classify import invented_examples

FEEDS = 30
ENTRIES = 50
REQUEST_DELAY = 0.03  # seconds per feed request, so a run lasts long enough to be hit mid-way
KILLS = 20
MAX_ATTEMPTS = 60
SEED = 8
WORDS = [
    "sparse", "attention", "tokenizer", "benchmark", "agent", "retrieval", "diffusion", "quantized", "kernel",
    "alignment", "distillation", "vision", "speech", "robotics", "compiler", "dataset", "evaluation", "memory",
]  # fmt: skip
WHEN = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
# The CLI and what its commands import on first use (scikit-learn takes seconds): loaded once.
PRELOADED = ["tests.hostile.cli_child", "aggregator.classify.stage", "aggregator.clusters", "aggregator.training"]
_ACTIONS: tuple[DecisionAction, ...] = ("accept", "reject", "move", "note")


# --- the world: slow feeds, one config per database --------------------------------------------------


def feed_body(feed: int, rng: random.Random) -> str:
    items = []
    for entry in range(ENTRIES):
        words = " ".join(rng.sample(WORDS, 4))
        items.append(
            f"<item><title>{words.title()} {feed}-{entry}</title>"
            f"<link>https://feed{feed}.example/posts/{entry}</link>"
            f"<guid isPermaLink='false'>feed{feed}-{entry}</guid>"
            f"<pubDate>Tue, 24 Nov 2026 {entry % 24:02d}:{feed:02d}:00 GMT</pubDate>"
            f"<description>&lt;p&gt;We study {words} in setting {feed}.{entry}.&lt;/p&gt;</description></item>"
        )
    channel = f"<channel><title>Feed {feed}</title>{''.join(items)}</channel>"
    return f"<?xml version='1.0'?><rss version='2.0'>{channel}</rss>"


def serve_feeds(server: LoopbackServer) -> None:
    rng = random.Random(SEED)
    for feed in range(FEEDS):
        # no validators: every run fetches, parses and compares every entry again, so it lasts
        server.add(f"/feed{feed}.xml", feed_body(feed, rng), delay=REQUEST_DELAY)


def write_config(folder: Path, server: LoopbackServer) -> Path:
    (folder / "exports").mkdir(parents=True)  # `export -o exports/` writes a dated file into it
    sources = "".join(
        f'  - {{name: feed{n}, kind: feed, url: "{server.url(f"/feed{n}.xml")}", default_category: Trends}}\n'
        for n in range(FEEDS)
    )
    config = folder / "feeds.yaml"
    config.write_text(
        f'database: "sqlite:///{folder}/aggregator.db"\n'
        f"models_dir: {folder}/models\n"
        f"export_dir: {folder}/exports\n"
        "fetch: {timeout: 20, allow_private_addresses: true}\n"
        f"sources:\n{sources}",
        encoding="utf-8",
    )
    return config


# --- starting and killing commands -------------------------------------------------------------------


@pytest.fixture(scope="module")
def forkserver() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    warm_up = context.Process(target=run_cli, args=(["--version"], os.devnull))  # starts the forkserver
    warm_up.start()
    warm_up.join()
    return context


def start(context: ForkServerContext, config: Path, *args: str) -> multiprocessing.process.BaseProcess:
    process = context.Process(target=run_cli, args=(["--config", str(config), *args], str(config.parent / "log")))
    process.start()
    return process


def finish(process: multiprocessing.process.BaseProcess) -> int | None:
    process.join(timeout=120)
    return process.exitcode


COMMANDS = (("run",), ("run",), ("run",), ("export", "--format", "json", "--status", "all", "-o"), ("train", "--force"))


def command_for(attempt: int, folder: Path) -> tuple[str, ...]:
    """Mostly runs; every fourth attempt an export, every fifth a training, so those get killed too."""
    command = COMMANDS[attempt % len(COMMANDS)]
    return (*command, f"{folder}/exports/") if command[0] == "export" else command


# --- what must hold after every kill ------------------------------------------------------------------


def assert_only_complete_exports(folder: Path) -> None:
    exports = folder / "exports"
    for path in exports.iterdir() if exports.exists() else ():
        if not path.name.startswith("."):  # temporary files are hidden until renamed
            assert isinstance(json.loads(path.read_text(encoding="utf-8")), list), path


def assert_only_complete_models(folder: Path, checked: set[str]) -> None:
    """Only CURRENT and whole version folders are visible; each version loads (its files all there,
    hashes matching) the first time it is seen, and CURRENT names one of them."""
    models = folder / "models"
    registry = Registry(models)
    visible = [p.name for p in models.iterdir() if not p.name.startswith(".")] if models.exists() else []
    versions = [info.version for info in registry.versions()]
    assert sorted(visible) == sorted([*versions, *([CURRENT_FILE] if (models / CURRENT_FILE).exists() else [])])
    for version in set(versions) - checked:
        assert registry.load(version) is not None
        checked.add(version)
    if (models / CURRENT_FILE).exists():
        assert registry.live_version() in versions


def decide_something(storage: Storage, rng: random.Random, attempt: int) -> tuple[str, str, datetime] | None:
    """An editor decision between kills, as the review page would record it."""
    stored = storage.items()
    if not stored:
        return None
    chosen = rng.choice(stored)
    action = _ACTIONS[attempt % len(_ACTIONS)]
    at = WHEN + timedelta(minutes=attempt)
    section = "State of the Art" if action in ("accept", "move") else None
    decision = Decision(chosen.item.key, "ana", at, action, section=section, reason=f"kill {attempt}")
    storage.add_decision(chosen.id, decision)
    return chosen.item.key, action, at


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stored_items(storage: Storage) -> list[Item]:
    return sorted((s.item for s in storage.items()), key=lambda item: item.key)


@pytest.fixture
def slow_feeds(loopback: LoopbackServer) -> Iterator[LoopbackServer]:
    serve_feeds(loopback)
    yield loopback


@pytest.mark.slow
def test_killed_runs_lose_and_duplicate_nothing(
    tmp_path: Path, slow_feeds: LoopbackServer, forkserver: ForkServerContext
) -> None:
    # a clean run on a fresh database: the reference
    reference_config = write_config(tmp_path / "reference", slow_feeds)
    began = time.monotonic()
    assert finish(start(forkserver, reference_config, "run")) == 0
    run_seconds = time.monotonic() - began
    with open_storage(f"sqlite:///{tmp_path}/reference/aggregator.db") as reference:
        expected = stored_items(reference)
    assert len(expected) == FEEDS * ENTRIES

    # the same world, killed again and again
    folder = tmp_path / "crashing"
    config = write_config(folder, slow_feeds)
    rng = random.Random(SEED)
    decided: list[tuple[str, str, datetime]] = []
    checked_models: set[str] = set()
    window = run_seconds  # kills land at a random moment in this window after the start
    killed = attempts = 0
    while killed < KILLS and attempts < MAX_ATTEMPTS:
        command = command_for(attempts, folder)
        process = start(forkserver, config, *command)
        time.sleep(rng.uniform(0.0, window))
        if process.is_alive():  # asks the forkserver first: a finished command's pid may be reused
            process.kill()  # SIGKILL
        if finish(process) == -signal.SIGKILL:
            killed += 1
        else:
            window *= 0.8  # it finished first: later commands (no new items) are quicker than the first
        attempts += 1
        assert_only_complete_exports(folder)
        assert_only_complete_models(folder, checked_models)
        with open_storage(f"sqlite:///{folder}/aggregator.db") as storage:
            if attempts == 1:
                storage.add_examples(invented_examples(), WHEN)  # so `train` has something to learn
            made = decide_something(storage, rng, attempts)
            decided += [made] if made else []
    assert killed >= KILLS, f"only {killed} of {attempts} commands were still running when killed"

    # one clean run of the real command to completion
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), "run", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["failed"] == 0

    with open_storage(f"sqlite:///{folder}/aggregator.db") as storage:
        assert stored_items(storage) == expected  # no loss, no duplicate, same content
        assert storage.lock_holder("run") is None
        kept = {(d.item_key, d.action, as_utc(d.at)) for _, d in storage.decisions()}
        assert set(decided) <= kept
        assert len(storage.decisions()) == len(decided)
    assert_only_complete_exports(folder)
    assert_only_complete_models(folder, checked_models)
