#!/usr/bin/env python3
"""Ingestion benchmark: `aggregator run` over N loopback feeds beside a bare floor.

    python scripts/bench_ingest.py [--feeds 1000] [--corpus ../shared/data/feeds]

1. Generates N feeds of realistic size (20-100 entries each, HTML content, a fixed seed) and serves
   them from an aiohttp server in a separate process on 127.0.0.1.
2. Floor: a bare client in a fresh process (aiohttp, same concurrency, fastfeedparser on each body,
   no storage, nothing else): the least any tool could spend.
3. `aggregator run` in a fresh process on a fresh SQLite file over the same feeds, twice: ingest
   only (fetch, parse, sanitize, normalize, store: --no-classify, dedupe off), then everything
   (+ story dedupe and classification with the shipped model).
4. Prints wall and CPU seconds of each and the ratios (target: run at most 1.5x the floor), then the
   parse throughput on a folder of real feeds (scripts/bench_parse.py does the full comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime.now(UTC)  # entries a day or so apart before now, as a blog's feed holds them


def _vocabulary(size: int = 6000, seed: int = 7) -> list[str]:
    """Pseudo-words, sampled with Zipf-like weights below: text that varies like real prose (a tiny
    vocabulary would make every post a near-duplicate of every other, which no real feed is)."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    return ["".join(rng.choice(letters[: 8 + n % 18]) for _ in range(rng.randint(2, 10))) for n in range(size)]


WORDS = _vocabulary()
WEIGHTS = [1 / (rank + 1) for rank in range(len(WORDS))]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, WEIGHTS, k=n))


SERVER = textwrap.dedent(
    """
    import sys, json
    from aiohttp import web
    feeds = json.load(open(sys.argv[1]))
    async def handle(request):
        body = feeds.get(request.match_info["name"])
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body.encode(), content_type="application/rss+xml")
    app = web.Application()
    app.router.add_get("/{name}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
    """
)

FLOOR = textwrap.dedent(
    """
    import asyncio, sys, time, resource
    import aiohttp, fastfeedparser
    urls = open(sys.argv[1]).read().split()
    async def main():
        entries = 0
        connector = aiohttp.TCPConnector(limit=16, limit_per_host=16)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(url):
                nonlocal entries
                async with session.get(url) as resp:
                    body = await resp.read()
                entries += len(fastfeedparser.parse(body).get("entries", []))
            await asyncio.gather(*(one(u) for u in urls))
        return entries
    start = time.perf_counter()
    n = asyncio.run(main())
    print(n, time.perf_counter() - start)
    """
)


def make_feed(rng: random.Random, n: int) -> str:
    entries = []
    for i in range(rng.randint(20, 100)):
        words = _words(rng, rng.randint(60, 250))
        title = _words(rng, rng.randint(4, 10)).title()
        entries.append(
            f"<item><title>{title} {n}-{i}</title><link>https://blog{n}.example.org/posts/{i}</link>"
            f"<guid>https://blog{n}.example.org/posts/{i}</guid>"
            f"<pubDate>{format_datetime(NOW - timedelta(days=i * 0.6, hours=n % 24), usegmt=True)}</pubDate>"
            f"<description><![CDATA[<p>{words[:200]}</p>]]></description>"
            f"<content:encoded><![CDATA[<p>{words}</p><p><a href='/more/{i}'>more</a> <b>{title}</b></p>]]>"
            f"</content:encoded></item>"
        )
    return (
        "<?xml version='1.0' encoding='UTF-8'?><rss version='2.0' "
        "xmlns:content='http://purl.org/rss/1.0/modules/content/'><channel>"
        f"<title>Blog {n}</title><link>https://blog{n}.example.org/</link>{''.join(entries)}</channel></rss>"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("benchmark server did not start")


def timed(cmd: list[str], **kwargs: object) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the child) and stdout of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, **kwargs)  # type: ignore[call-overload]
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, str(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "feeds")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side; the best is reported")
    args = parser.parse_args()

    rng = random.Random(20261126)
    feeds = {f"feed{n}.xml": make_feed(rng, n) for n in range(args.feeds)}
    total_entries = sum(body.count("<item>") for body in feeds.values())
    size = sum(len(body) for body in feeds.values())
    print(f"{args.feeds} feeds, {total_entries} entries, {size / 1e6:.1f} MB")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "feeds.json").write_text(json.dumps(feeds))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(work / "feeds.json"), str(port)])
        try:
            wait_for(port)
            urls = [f"http://127.0.0.1:{port}/{name}" for name in feeds]
            (work / "urls.txt").write_text("\n".join(urls))
            floor = min((timed([sys.executable, "-c", FLOOR, str(work / "urls.txt")]) for _ in range(args.repeat)),
                        key=lambda r: r[0])  # fmt: skip
            print(f"floor  (aiohttp + fastfeedparser, no storage): wall {floor[0]:6.2f} s  cpu {floor[1]:6.2f} s  "
                  f"entries {floor[2].split()[0]}")  # fmt: skip
            for label, full in (("ingest only: fetch, parse, sanitize, store (--no-classify, dedupe off)", False),
                                ("everything: + story dedupe + classify with the shipped model", True)):  # fmt: skip
                runs = [run_aggregator(work / f"run{i}-{full}", urls, full=full) for i in range(args.repeat)]
                best = min(runs, key=lambda r: r[0])
                print(f"aggregator run, {label}:")
                print(f"    wall {best[0]:6.2f} s  cpu {best[1]:6.2f} s  items stored {best[2]}"
                      f"  ratio to floor: wall {best[0] / floor[0]:.2f}x  cpu {best[1] / floor[1]:.2f}x"
                      f"  (target wall <= 1.5x)")  # fmt: skip
                if best[2] != total_entries:
                    print(f"MISMATCH: {best[2]} stored, {total_entries} served")
        finally:
            server.terminate()
            server.wait()
    if args.corpus.is_dir():
        parse_throughput(args.corpus)


def run_aggregator(folder: Path, urls: list[str], *, full: bool) -> tuple[float, float, int]:
    folder.mkdir()
    sources = "\n".join(f'  - {{name: f{n}, kind: feed, url: "{url}"}}' for n, url in enumerate(urls))
    config = folder / "feeds.yaml"
    config.write_text(
        f"database: sqlite:///run.db\nmodels_dir: {ROOT / 'models'}\n"
        f"dedupe: {{enabled: {'true' if full else 'false'}}}\n"
        f"fetch: {{concurrency: 16, per_host: 16, allow_private_addresses: true}}\nsources:\n{sources}\n"
    )
    cmd = [sys.executable, "-m", "aggregator", "--config", str(config), "run", "--json"]
    cmd += [] if full else ["--no-classify"]
    wall, cpu, out = timed(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    report = json.loads(out)
    if report["failed"]:
        print(f"warning: {report['failed']} sources failed")
    return wall, cpu, int(report["new"])


def parse_throughput(corpus: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from aggregator.errors import ParseError
    from aggregator.parse import parse_feed

    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    bodies = [(p, p.read_bytes()) for p in files]
    entries = 0
    start = time.perf_counter()
    for path, body in bodies:
        with contextlib.suppress(ParseError):  # files that are not feeds count as nothing
            entries += len(parse_feed(body, source="bench", url=f"https://example.org/{path.name}").entries)
    seconds = time.perf_counter() - start
    print(f"parse_feed on {corpus}: {len(files)} files, {entries} entries, {seconds:.2f} s, "
          f"{entries / seconds:,.0f} items/s (the entry-by-entry comparison with feedparser: bench_parse.py)")


if __name__ == "__main__":
    main()
