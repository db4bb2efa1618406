"""Parse every file under a folder with parse.parse_feed and with plain feedparser; print speed
and any entries parse_feed loses.

    python scripts/bench_parse.py [FOLDER]      (default /work/shared/data/feeds)

"Entries lost": for every file feedparser reads without bozo (well-formed) and finds N entries in,
parse_feed must find N too. Files parse_feed refuses on purpose (XML entity declarations) are
listed apart. Files that are not feeds must give a ParseError; any other exception is a crash,
listed, and makes the exit status 1.

Seconds are CPU seconds of this process (time.process_time), so other work on a shared machine
does not count; parse_feed's are the best of REPEATS runs, feedparser (20-50x slower) runs once.
normalize_all over the entries parse_feed found is timed the same way (best of REPEATS): the two
together are the per-item cost of reading a feed before storage.
"""

from __future__ import annotations

import io
import sys
import time
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import feedparser

from aggregator.errors import ParseError
from aggregator.normalize import normalize_all
from aggregator.parse import parse_feed
from aggregator.types import RawEntry

DEFAULT_FOLDER = Path("/work/shared/data/feeds")
REPEATS = 3


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else DEFAULT_FOLDER
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    bodies = [(path, path.read_bytes()) for path in files]
    print(f"{len(bodies)} files, {sum(len(body) for _, body in bodies) / 1e6:.1f} MB under {folder}")

    runs = [run_parse_feed(bodies, folder) for _ in range(REPEATS)]
    ours, _, parsers, errors, refused, crashes = runs[0]
    our_seconds = min(run[1] for run in runs)
    feeds = entries_of(bodies, folder)
    normalize_seconds = min(run_normalize(feeds) for _ in range(REPEATS))
    theirs, their_seconds = run_feedparser(bodies)

    our_entries = sum(ours.values())
    their_entries = sum(count for count, _ in theirs.values())
    print_speed("parse_feed", our_entries, our_seconds)
    print_speed("normalize", our_entries, normalize_seconds)
    print(f"parse + normalize: {(our_seconds + normalize_seconds) * 1e6 / our_entries:.1f} CPU µs per item")
    print_speed("feedparser", their_entries, their_seconds)
    print(f"speed ratio: x{their_seconds / our_seconds:.1f} (items/s, same files)")
    print("parsed by  : " + ", ".join(f"{name} {count}" for name, count in parsers.most_common()))
    print(f"ParseError : {len(errors)} files (not feeds or refused)")
    for message, count in Counter(error.split(": ", 1)[1] for error in errors.values()).most_common(8):
        print(f"    {count:4d}  {message[:100]}")

    lost = entries_lost(ours, theirs, refused)
    well_formed = sum(1 for _, bozo in theirs.values() if not bozo)
    print(f"entries lost on {well_formed} well-formed files: {len(lost)} files")
    for path, (mine, expected) in sorted(lost.items()):
        print(f"    {path.relative_to(folder)}: parse_feed {mine}, feedparser {expected}")
    for path in refused:
        print(f"    refused on purpose (declares XML entities): {path.relative_to(folder)}, "
              f"feedparser {theirs[path][0]}")
    for path, crash in crashes.items():
        print(f"CRASH {path.relative_to(folder)}: {crash}")
    return 1 if crashes else 0


def print_speed(name: str, entries: int, seconds: float) -> None:
    print(f"{name:11s}: {entries:6d} entries in {seconds:6.2f} CPU s = {entries / seconds:8.0f} items/s")


def run_parse_feed(
    bodies: list[tuple[Path, bytes]], folder: Path
) -> tuple[dict[Path, int], float, Counter[str], dict[Path, str], list[Path], dict[Path, str]]:
    counts: dict[Path, int] = {}
    parsers: Counter[str] = Counter()
    errors: dict[Path, str] = {}
    refused: list[Path] = []
    crashes: dict[Path, str] = {}
    started = time.process_time()
    for path, body in bodies:
        url = f"https://bench.invalid/{path.relative_to(folder)}"
        try:
            parsed = parse_feed(body, source=path.name, url=url)
        except ParseError as error:
            errors[path] = str(error)
            if "declares XML entities" in str(error):
                refused.append(path)
            counts[path] = 0
            continue
        except Exception as error:  # a crash is what this script exists to find
            crashes[path] = f"{type(error).__name__}: {error}"
            counts[path] = 0
            continue
        counts[path] = len(parsed.entries)
        parsers[parsed.parser] += 1
    return counts, time.process_time() - started, parsers, errors, refused, crashes


def entries_of(bodies: list[tuple[Path, bytes]], folder: Path) -> list[tuple[RawEntry, ...]]:
    """Each feed's entries, as parse_feed gives them to normalize (files it refuses are left out)."""
    feeds = []
    for path, body in bodies:
        try:
            feeds.append(parse_feed(body, source=path.name, url=f"https://bench.invalid/{path.relative_to(folder)}").entries)
        except Exception:  # refusals and crashes are reported by run_parse_feed
            continue
    return feeds


def run_normalize(feeds: list[tuple[RawEntry, ...]]) -> float:
    now = datetime.now(UTC)
    started = time.process_time()
    for entries in feeds:
        normalize_all(entries, kind="blog", now=now)
    return time.process_time() - started


def run_feedparser(bodies: list[tuple[Path, bytes]]) -> tuple[dict[Path, tuple[int, bool]], float]:
    results: dict[Path, tuple[int, bool]] = {}
    started = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, body in bodies:
            parsed = feedparser.parse(io.BytesIO(body))
            results[path] = (len(parsed.entries), bool(parsed.bozo))
    return results, time.process_time() - started


def entries_lost(
    ours: dict[Path, int], theirs: dict[Path, tuple[int, bool]], refused: list[Path]
) -> dict[Path, tuple[int, int]]:
    return {
        path: (ours[path], expected)
        for path, (expected, bozo) in theirs.items()
        if not bozo and ours[path] < expected and path not in refused
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv))
