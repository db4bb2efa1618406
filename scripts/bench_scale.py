#!/usr/bin/env python3
"""Scale-out benchmark: N loopback feeds updated by aggregator workers on PostgreSQL, one
`aggregator run` on SQLite, and the peer library `reader` (lemon24/reader), in one run.

    python scripts/bench_scale.py [--sizes 1000,10000] [--workers 1,2,4] [--modes ingest,full]
                                  [--pg-url URL] [--skip-reader] [--skip-sqlite]

1. Generates N feeds (RSS 2.0, 20-100 entries, a size target of 5-200 KB each, which real
   entries shorter than their share leave at about 10-150 KB; entry titles and HTML drawn from the
   real feeds in ../shared/data/feeds, read by path, never copied; a fixed seed) as files,
   served by aiohttp in a separate process on 250 loopback addresses (127.0.0.1-250: 250 hosts, so
   per-host limits behave as with real sites).
2. For each mode, `aggregator run` (one process, a fresh SQLite file), then W = 1, 2, 4
   `aggregator worker --until-idle` processes on a fresh PostgreSQL database each; then reader's
   update_feeds(workers=W) on a fresh reader database (reader is installed with pip into its own
   virtualenv under ~/.cache/aggregator-bench, never into the project's).
   Modes: `ingest` is reader's job (fetch, parse, sanitize, store: dedupe off, --no-classify);
   `full` is aggregator as configured by default (plus story dedupe and the shipped model).
3. Prints one table: the update time (aggregator: its runs table, first claim to last stored
   batch; reader: the update_feeds call), the processes' wall time (imports and source
   registration included), their CPU time, items stored and items/s; then the ratios asked for.

The machine has 2 cores; the feed server, PostgreSQL and every worker share them.
"""

from __future__ import annotations

import argparse
import html
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
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
HOSTS = 250
READER_VERSION = "3.26"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aggregator-bench"
_VOCABULARY = """model training data inference transformer attention benchmark release agent robot vision language
alignment safety scaling token dataset evaluation open source paper gpu kernel latency memory sparse mixture expert
reasoning retrieval diffusion video speech"""
WORDS = tuple(_VOCABULARY.split())

SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    folder, port, hosts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    async def feed(request):
        return web.FileResponse(f"{folder}/{request.match_info['name']}",
                                headers={"Content-Type": "application/rss+xml"})
    app = web.Application()
    app.router.add_get("/{name}", feed)
    async def main():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for n in range(1, hosts + 1):
            await web.TCPSite(runner, f"127.0.0.{n}", port, backlog=1024).start()
        print("ready", flush=True)
        import asyncio
        await asyncio.Event().wait()
    import asyncio
    asyncio.run(main())
    """
)

READER = textwrap.dedent(
    """
    import json, sys, time, resource
    from reader import make_reader
    db, urls, workers = sys.argv[1], open(sys.argv[2]).read().split(), int(sys.argv[3])
    reader = make_reader(db)
    for url in urls:
        reader.add_feed(url)
    start = time.perf_counter()
    reader.update_feeds(workers=workers)
    update = time.perf_counter() - start
    entries = reader.get_entry_counts().total
    errors = sum(1 for f in reader.get_feeds() if f.last_exception)
    reader.close()
    print(json.dumps({"update": update, "entries": entries, "errors": errors}))
    """
)


@dataclass(frozen=True)
class Result:
    label: str
    mode: str  # ingest | full | reader
    workers: int
    update: float  # seconds: the polling window
    wall: float  # seconds: the processes, start to exit
    cpu: float  # seconds: user + system of the processes
    items: int
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.update if self.update else 0.0


# -- feeds --------------------------------------------------------------------------------------


def make_feeds(folder: Path, count: int, rng: random.Random, pool: list[tuple[str, str]]) -> tuple[int, int, list[int]]:
    """Write `count` feeds of entries drawn from `pool`; return (entries, bytes, sizes)."""
    now = datetime.now(UTC)
    entries = total = 0
    sizes = []
    for n in range(count):
        body = make_feed(n, rng, pool, now)
        (folder / f"feed{n}.xml").write_bytes(body)
        entries += body.count(b"<item>")
        total += len(body)
        sizes.append(len(body))
    return entries, total, sizes


def make_feed(n: int, rng: random.Random, pool: list[tuple[str, str]], now: datetime) -> bytes:
    """20-100 entries, 5-200 KB (uniform, as bench_ingest.py); each entry's title and HTML drawn
    from the pool, the HTML cut to the feed's per-entry budget; links and guids unique to this feed."""
    count = rng.randint(20, 100)
    target = rng.randint(5_000, 200_000)
    budget = max(150, target // count - 330)  # what is left for content once the markup is counted
    items = []
    for i in range(count):
        title, content = rng.choice(pool)
        content = _cut_html(content, budget).replace("]]>", "]]&gt;")
        date = format_datetime(now - timedelta(minutes=rng.randint(0, 14 * 24 * 60)))
        items.append(
            f"<item><title>{html.escape(title[:200])} ({n}-{i})</title>"
            f"<link>https://blog{n}.example.org/posts/{i}</link><guid>https://blog{n}.example.org/posts/{i}</guid>"
            f"<pubDate>{date}</pubDate><content:encoded><![CDATA[{content}]]></content:encoded></item>"
        )
    return (
        "<?xml version='1.0' encoding='UTF-8'?><rss version='2.0' "
        "xmlns:content='http://purl.org/rss/1.0/modules/content/'><channel>"
        f"<title>Blog {n}</title><link>https://blog{n}.example.org/</link>{''.join(items)}</channel></rss>"
    ).encode()


def _cut_html(text: str, limit: int) -> str:
    """At most `limit` characters, never ending inside a tag."""
    if len(text) <= limit:
        return text
    cut = text.rfind("<", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def entry_pool(corpus: Path | None, rng: random.Random) -> tuple[list[tuple[str, str]], str]:
    """(title, HTML) of the real entries in the corpus folder, read by path (never copied into the
    project), or generated text when there is no corpus."""
    if corpus is not None and corpus.is_dir():
        from aggregator.errors import ParseError
        from aggregator.parse import parse_feed

        pool = []
        for path in sorted(p for p in corpus.rglob("*") if p.is_file() and "arxiv" not in str(p)):
            try:
                entries = parse_feed(path.read_bytes(), source="bench", url="https://example.org/feed").entries
            except ParseError:
                continue
            pool += [(e.title, e.content_html or e.summary_html) for e in entries if e.title and
                     len(e.content_html or e.summary_html) >= 300]  # fmt: skip
        if pool:
            return pool, f"entry HTML from {len(pool)} real entries in {corpus}"
    words = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 1500))) for _ in range(2000)]
    return [(text[:60].title(), f"<p>{text}</p>") for text in words], "generated text (no corpus)"


def feed_urls(count: int, port: int) -> list[str]:
    return [f"http://127.0.0.{1 + n % HOSTS}:{port}/feed{n}.xml" for n in range(count)]


# -- aggregator ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """What aggregator does with each item: `ingest` is reader's job (fetch, parse, sanitize,
    store); `full` adds story dedupe and classification with the shipped model."""

    name: str
    models: Path
    per_host: int = 2

    @property
    def ingest_only(self) -> bool:
        return self.name == "ingest"

    def flags(self) -> list[str]:
        return ["--no-classify"] if self.ingest_only else []


def write_config(folder: Path, database: str, urls: list[str], mode: Mode) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sources = "\n".join(f'  - {{name: f{n}, kind: feed, url: "{url}"}}' for n, url in enumerate(urls))
    config = folder / "feeds.yaml"
    dedupe = "dedupe: {enabled: false}\n" if mode.ingest_only else ""
    config.write_text(
        f'database: "{database}"\nmodels_dir: {mode.models}\n{dedupe}'
        f"fetch: {{concurrency: 16, per_host: {mode.per_host}, allow_private_addresses: true}}\n"
        f"sources:\n{sources}\n"
    )
    return config


def aggregator(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "aggregator", "--config", str(config), *args]


def run_sqlite(folder: Path, urls: list[str], mode: Mode) -> Result:
    config = write_config(folder, "sqlite:///run.db", urls, mode)
    subprocess.run(aggregator(config, "db", "upgrade"), check=True, capture_output=True, env=_env())
    wall, cpu, outs = timed([aggregator(config, "run", "--json", *mode.flags())])
    report = json.loads(outs[0])
    started = datetime.fromisoformat(report["started"])
    finished = datetime.fromisoformat(report["finished"])
    note = f"{report['failed']} sources failed" if report["failed"] else ""
    label = f"aggregator run, SQLite ({mode.name})"
    return Result(label, mode.name, 1, (finished - started).total_seconds(), wall, cpu, report["new"], note)


def run_workers(folder: Path, urls: list[str], mode: Mode, pg_server: str, workers: int, batch: int) -> Result:
    with fresh_pg_database(pg_server) as url:
        config = write_config(folder, url, urls, mode)
        # Migrate once before the workers start (workers opening an empty database together would
        # race to create its tables).
        subprocess.run(aggregator(config, "db", "upgrade"), check=True, capture_output=True, env=_env())
        commands = [
            aggregator(config, "worker", "--until-idle", "--json", "--name", f"w{n}", "--batch", str(batch),
                       *mode.flags())
            for n in range(workers)
        ]  # fmt: skip
        wall, cpu, outs = timed(commands)
        summaries = [json.loads(out) for out in outs]
        update = polling_window(url)
    failed = sum(s["failed"] for s in summaries)
    shares = "/".join(str(s["sources"]) for s in summaries)
    note = f"sources per worker {shares}" + (f", {failed} failed" if failed else "")
    items = sum(s["new"] for s in summaries)
    label = f"aggregator worker x{workers}, PostgreSQL ({mode.name})"
    return Result(label, mode.name, workers, update, wall, cpu, items, note)


def polling_window(url: str) -> float:
    """First claim to last stored batch, from the workers' rows in the runs table."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        first, last = conn.execute(sa.text("SELECT min(started), max(finished) FROM runs WHERE kind = 'worker'")).one()
    engine.dispose()
    return float((last - first).total_seconds())


class fresh_pg_database:
    """A new PostgreSQL database for one measurement, dropped afterwards."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"aggregator_bench_{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> str:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return sa.engine.make_url(self.server).set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


# -- reader -------------------------------------------------------------------------------------------


def reader_python() -> Path:
    """A virtualenv with reader, created once under the cache folder (never the project's)."""
    venv = CACHE / f"reader-{READER_VERSION}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"installing reader {READER_VERSION} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # reader's vendored feedparser imports `sgmllib`, which newer feedparser releases no longer pull in
        packages = [f"reader=={READER_VERSION}", "sgmllib3k"]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def run_reader(python: Path, folder: Path, urls: list[str], workers: int) -> Result:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "urls.txt").write_text("\n".join(urls))
    command = [str(python), "-c", READER, str(folder / "reader.sqlite"), str(folder / "urls.txt"), str(workers)]
    wall, cpu, outs = timed([command])
    done = json.loads(outs[0].strip().splitlines()[-1])
    note = f"{done['errors']} feeds failed" if done["errors"] else ""
    label = f"reader update_feeds(workers={workers})"
    return Result(label, "reader", workers, done["update"], wall, cpu, done["entries"], note)


# -- running and timing -------------------------------------------------------------------------------


def timed(commands: list[list[str]]) -> tuple[float, float, list[str]]:
    """Run commands side by side: wall seconds until the last exits, CPU seconds of all, their stdouts."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for command in commands
    ]
    outs = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(process.args[:6])}... exited {process.returncode}:\n{err[-3000:]}")  # type: ignore[index]
        outs.append(out)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, outs


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(folder), str(port), str(HOSTS)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        raise SystemExit("the feed server did not start")
    return server, port


def print_table(size: int, results: list[Result]) -> None:
    print(f"\n{size} feeds")
    print(f"{'':48} {'update s':>9} {'items/s':>9} {'wall s':>8} {'cpu s':>8} {'items':>8}  note")
    for r in results:
        print(f"{r.label:48} {r.update:9.1f} {r.rate:9,.0f} {r.wall:8.1f} {r.cpu:8.1f} {r.items:8}  {r.note}")
    readers = {r.workers: r for r in results if r.mode == "reader"}
    for mode in ("ingest", "full"):
        workers = {r.workers: r for r in results if r.mode == mode and r.label.startswith("aggregator worker")}
        for n, ours in sorted(workers.items()):
            if n in readers:
                theirs = readers[n]
                print(f"{mode:6} workers={n}: aggregator {theirs.update / ours.update:5.1f}x reader's speed "
                      f"(update time), {theirs.wall / ours.wall:5.1f}x (process wall)  (target 10x)")  # fmt: skip
        if 1 in workers and 4 in workers:
            one, four = workers[1], workers[4]
            print(f"{mode:6} 4 workers vs 1 worker: {one.update / four.update:4.2f}x (update time), "
                  f"{one.wall / four.wall:4.2f}x (process wall)  (target 1.8x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000", help="comma-separated feed counts, e.g. 1000,10000")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--modes", default="ingest,full", help="ingest (reader's work), full (+ dedupe, classify)")
    parser.add_argument("--batch", type=int, default=100, help="sources each worker claims at once")
    parser.add_argument("--per-host", type=int, default=2, help="fetch.per_host, held across workers (default 2)")
    parser.add_argument("--pg-url", default=os.environ.get("AGGREGATOR_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server (fresh databases are created and dropped there)")  # fmt: skip
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="models_dir for the full mode")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "feeds",
                        help="real feeds whose entries' HTML fills the generated feeds")  # fmt: skip
    parser.add_argument("--skip-reader", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(w) for w in args.workers.split(",")]
    modes = [Mode(name, args.models, args.per_host) for name in args.modes.split(",")]
    python = None if args.skip_reader else reader_python()
    rng = random.Random(20261126)
    pool, origin = entry_pool(args.corpus, rng)
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start; {origin}")
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            results = measure_size(Path(tmp), size, pool, rng, modes, counts, args, python)
        print_table(size, results)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def measure_size(
    work: Path, size: int, pool: list[tuple[str, str]], rng: random.Random, modes: list[Mode], counts: list[int],
    args: argparse.Namespace, python: Path | None,
) -> list[Result]:  # fmt: skip
    feeds = work / "feeds"
    feeds.mkdir()
    entries, total, sizes = make_feeds(feeds, size, rng, pool)
    print(f"\n{size} feeds, {entries} entries, {total / 1e6:.0f} MB "
          f"(feeds {min(sizes) / 1e3:.0f}-{max(sizes) / 1e3:.0f} KB), {HOSTS} hosts", flush=True)  # fmt: skip
    server, port = start_server(feeds)
    urls = feed_urls(size, port)
    results: list[Result] = []

    def keep(result: Result) -> None:
        results.append(result)
        print(f"  {result.label}: update {result.update:.1f} s, {result.items} items, wall {result.wall:.1f} s",
              flush=True)  # fmt: skip
        if result.items != entries:
            print(f"  MISMATCH: {result.label} stored {result.items} of {entries} entries")

    try:
        for mode in modes:
            if not args.skip_sqlite:
                keep(run_sqlite(work / f"sqlite-{mode.name}", urls, mode))
            for n in counts:
                keep(run_workers(work / f"pg{n}-{mode.name}", urls, mode, args.pg_url, n, args.batch))
        if python is not None:
            for n in counts:
                keep(run_reader(python, work / f"reader{n}", urls, n))
    finally:
        server.terminate()
        server.wait()
    return results


if __name__ == "__main__":
    main()
