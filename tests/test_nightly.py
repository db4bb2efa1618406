"""The nightly pipeline: polls what is due, writes the dated candidate files, retrains only past the
threshold (with a real small model), holds the run lock against an overlapping run and recovers it
after a crash; `aggregator nightly` and `run --nightly` report and exit accordingly."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aggregator import nightly
from aggregator.classify.registry import Registry
from aggregator.cli import main
from aggregator.config import Settings, SettingsModel, load_settings
from aggregator.errors import LockedError
from aggregator.nightly import RUN_LOCK_TTL, hold_run_lock, run_nightly
from aggregator.storage import Storage, open_storage
from aggregator.types import Decision, LabeledExample
from tests.server import LoopbackServer

NOW = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
TOPICS = {
    "Trends": ("market", "funding", "adoption", "regulation", "industry", "startups"),
    "State of the Art": ("benchmark", "transformer", "accuracy", "pretraining", "architecture", "scaling"),
    "Miscellaneous": ("tutorial", "podcast", "essay", "guide", "course", "talk"),
    "Releases": ("release", "changelog", "version", "bugfix", "upgrade", "deprecation"),
}


def rss(n: int) -> str:
    items = "".join(
        f"<item><title>Post {i} about {TOPICS['Trends'][i % 6]}</title><link>https://blog.example.org/{i}</link>"
        f"<guid>post-{i}</guid><pubDate>Wed, 25 Nov 2026 0{i}:00:00 GMT</pubDate>"
        f"<description>Why {TOPICS['Trends'][i % 6]} matters.</description></item>"
        for i in range(n)
    )
    return f"<?xml version='1.0'?><rss version='2.0'><channel><title>Blog</title>{items}</channel></rss>"


def invented_examples() -> list[LabeledExample]:
    """Six invented items per section, distinct enough for a small model to tell apart."""
    return [
        LabeledExample(
            title=f"{word.title()} {other} story {i}",
            label=label,
            summary=f"All about {word} and {other}.",
            url=f"https://examples.example.org/{label.split()[0].lower()}/{i}",
            date=datetime(2026, 1 + i, 10, tzinfo=UTC),
            origin="invented",
        )
        for label, words in TOPICS.items()
        for i, (word, other) in enumerate(zip(words, words[1:] + words[:1], strict=True))
    ]


@pytest.fixture
def settings(tmp_path: Path, loopback: LoopbackServer, db_url: str) -> Settings:
    """SQLite, and PostgreSQL too when AGGREGATOR_TEST_PG_URL is set (the run lock must hold on both)."""
    loopback.add("/blog.xml", rss(6), content_type="application/rss+xml")
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"""
database: "{db_url}"
models_dir: models
export_dir: exports
fetch: {{timeout: 5, allow_private_addresses: true}}
schedule: {{nightly: "0 5 * * *", retrain_min_decisions: 3}}
sources:
  - {{name: blog, kind: feed, url: "{loopback.url("/blog.xml")}", interval: 6h}}
""",
        encoding="utf-8",
    )
    return load_settings(path, env={})


@pytest.fixture
def storage(settings: Settings) -> Iterator[Storage]:
    with open_storage(settings.database_url) as opened:
        yield opened


def decide(storage: Storage, n: int, at: datetime, action: str = "accept") -> None:
    """An editor files the first n undecided items under Trends."""
    undecided = [s for s in storage.items() if storage.item_states([s.id]) == {}][:n]
    for stored in undecided:
        decision = Decision(stored.item.key, "ed", at, action, section="Trends")  # type: ignore[arg-type]
        storage.add_decision(stored.id, decision)


def cli(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(settings.path), *args], catch_exceptions=False)


# -- the pipeline -----------------------------------------------------------------------------------


def test_nightly_polls_what_is_due_and_writes_the_dated_candidate_files(
    settings: Settings, storage: Storage, loopback: LoopbackServer
) -> None:
    report = run_nightly(settings, storage, NOW)
    assert report.ok and report.run.new == 6
    assert [p.name for p in report.files] == ["candidates-2026-11-26.md", "candidates-2026-11-26.csv"]
    assert all(p.parent == settings.export_dir for p in report.files)
    markdown, table = (p.read_text(encoding="utf-8") for p in report.files)
    assert "Post 3 about regulation" in markdown
    assert len(table.strip().splitlines()) == 1 + 6  # header and one row per candidate
    assert storage.recent_runs(1)[0]["kind"] == "nightly"
    assert report.retrained is None and "not retrained: 0 new decisions" in report.describe()[-1]

    # half an hour later nothing is due yet (6 h interval): no request, files rewritten for the day
    again = run_nightly(settings, storage, NOW + timedelta(minutes=30))
    assert again.run.results == () and loopback.hits("/blog.xml") == 1
    assert storage.lock_holder("run") is None


def test_retrains_only_once_enough_new_decisions_exist(settings: Settings, storage: Storage) -> None:
    storage.add_examples(invented_examples(), NOW - timedelta(days=30))
    run_nightly(settings, storage, NOW)
    decide(storage, 2, NOW + timedelta(hours=3))
    decide(storage, 1, NOW + timedelta(hours=3), action="note")  # a note teaches the model nothing

    below = run_nightly(settings, storage, NOW + timedelta(days=1))
    assert (below.new_decisions, below.retrained) == (2, None)
    assert Registry(settings.models_dir).versions() == []

    decide(storage, 1, NOW + timedelta(days=1, hours=3))
    reached = run_nightly(settings, storage, NOW + timedelta(days=2))
    assert reached.new_decisions == 3 and reached.retrained is not None
    assert reached.retrained.promoted  # no live model yet: the gate lets the first one through
    assert Registry(settings.models_dir).live_version() == reached.retrained.version
    assert any(line.startswith("retrained: v0001-") for line in reached.describe())
    # the queue is re-scored by the new live model the same night
    predictions = storage.predictions_for(s.id for s in storage.items())
    assert predictions and {p.model_version for p in predictions.values()} == {reached.retrained.version}

    # the next night: those decisions are in the model already
    after = run_nightly(settings, storage, NOW + timedelta(days=3))
    assert (after.new_decisions, after.retrained) == (0, None)
    assert len(Registry(settings.models_dir).versions()) == 1


def test_a_failed_retraining_is_a_problem_not_a_crash(settings: Settings, storage: Storage) -> None:
    run_nightly(settings, storage, NOW)
    decide(storage, 3, NOW + timedelta(hours=3))  # enough decisions, far too few examples to train on
    report = run_nightly(settings, storage, NOW + timedelta(days=1))
    assert not report.ok and report.retrained is None and len(report.files) == 2
    assert report.problems[0].startswith("retrain: not enough labeled examples to train")


# -- the run lock -----------------------------------------------------------------------------------


def test_an_overlapping_run_exits_at_once_and_a_crashed_runs_lock_is_recovered(
    settings: Settings, storage: Storage, loopback: LoopbackServer
) -> None:
    assert storage.acquire_lock("run", "other-host:99", NOW, RUN_LOCK_TTL)
    with pytest.raises(LockedError, match=r"another run is in progress \(other-host:99 since 2026-11-26 05:00"):
        run_nightly(settings, storage, NOW + timedelta(minutes=5))
    assert loopback.hits("/blog.xml") == 0 and not settings.export_dir.exists()

    # the holder crashed on its machine: once its lease runs out, the next run goes ahead
    assert run_nightly(settings, storage, NOW + RUN_LOCK_TTL + timedelta(seconds=1)).ok

    # a holder on this host whose process is gone: taken over at once
    gone = subprocess.Popen(["true"])
    gone.wait()
    later = NOW + timedelta(days=1)
    assert storage.acquire_lock("run", f"{socket.gethostname()}:{gone.pid}", later, RUN_LOCK_TTL)
    assert run_nightly(settings, storage, later + timedelta(minutes=1)).ok


def test_the_heartbeat_keeps_a_long_runs_lease_alive(monkeypatch: pytest.MonkeyPatch, storage: Storage) -> None:
    monkeypatch.setattr(nightly, "HEARTBEAT_SECONDS", 0.02)
    with hold_run_lock(storage, "me:1", NOW):
        holder = storage.lock_holder("run")
        assert holder is not None
        first = holder["expires"]
        deadline = time.monotonic() + 5
        while storage.lock_holder("run")["expires"] == first and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.01)
        assert storage.lock_holder("run")["expires"] > first  # type: ignore[index]
    assert storage.lock_holder("run") is None


# -- the commands -----------------------------------------------------------------------------------


def test_run_nightly_json_and_the_nightly_command(settings: Settings) -> None:
    result = cli(settings, "run", "--nightly", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["run"]["new"] == 6 and report["problems"] == [] and report["retrained"] is None
    names = [Path(p).name for p in report["files"]]
    assert [n[:11] for n in names] == ["candidates-"] * 2 and [Path(n).suffix for n in names] == [".md", ".csv"]
    text = cli(settings, "nightly")
    assert text.exit_code == 0 and "no source was due" in text.output and "not retrained" in text.output
    assert cli(settings, "run", "--nightly", "--no-classify").exit_code == 2  # a usage error


def test_nightly_command_exits_1_on_a_held_lock_and_on_a_failed_step(settings: Settings, storage: Storage) -> None:
    assert storage.acquire_lock("run", "other-host:7", datetime.now(UTC), RUN_LOCK_TTL)
    locked = cli(settings, "nightly")
    assert locked.exit_code == 1 and "error: another run is in progress (other-host:7" in locked.output
    storage.release_lock("run", "other-host:7")

    settings.export_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.export_dir.write_text("a file where the export folder should be", encoding="utf-8")
    failed = cli(settings, "nightly")
    assert failed.exit_code == 1
    assert "error: the nightly run had 1 problem(s): export: cannot write export" in failed.output


def test_the_cron_line_and_the_systemd_units_run_commands_that_exist() -> None:
    scripts = Path(__file__).parents[1] / "scripts"
    cron = [
        line
        for line in (scripts / "cron" / "aggregator.cron").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(cron) == 1
    fields = cron[0].split(None, 6)
    assert " ".join(fields[:5]) == SettingsModel().schedule.nightly  # the same time as the scheduler's default
    cron_command = shlex.split(fields[6].split("&&", 1)[1].split(">>", 1)[0])
    units = [scripts / "systemd" / name for name in ("aggregator-nightly.service", "aggregator-scheduler.service")]
    exec_starts = [
        shlex.split(line.removeprefix("ExecStart="))
        for unit in units
        for line in unit.read_text(encoding="utf-8").splitlines()
        if line.startswith("ExecStart=")
    ]
    commands = [cron_command, *exec_starts]
    assert [c[c.index("--nightly") - 1 :] if "--nightly" in c else c[-1:] for c in commands] == [
        ["run", "--nightly", "--json"],
        ["run", "--nightly"],
        ["schedule"],
    ]
    for command in commands:
        assert Path(command[0]).name == "aggregator"
        checked = CliRunner().invoke(main, [*command[1:], "--help"])  # unknown commands or options fail here
        assert checked.exit_code == 0, f"{' '.join(command)}: {checked.output}"
