#!/usr/bin/env python3
"""Hostile-input benchmark: one `aggregator run` over every hostile server of issue 8 beside good feeds.

    python scripts/bench_hostile.py [--good 50] [--entries 30]

1. Serves, from a loopback server in this process (tests/server.py), 50 good feeds and one source
   per hostile case: entity expansion (billion laughs, a 100 KB entity x 20,000), external
   entities and DTDs, invalid XML, lying or missing charsets, UTF-16, an HTML page, 0 entries,
   duplicate guids, bare entries, future dates, a 5 MB entry, javascript:/file: links, a body over
   the cap, a 200 MiB gzip bomb, a one-byte-a-second drip, a server that never answers, connection
   refused, a redirect loop, a redirect to file:, 404/410/429/500/503, a TLS failure, and arXiv
   queries meeting an empty page, 429, 503 and an HTML page with status 200. The live model is a
   corrupt file.
2. Runs `python -m aggregator run --json` in a subprocess on a fresh SQLite file, with the default
   fetch limits (20 s deadline, 15 MB cap).
3. Prints each hostile source's outcome, then wall seconds (target < 60), the run process's peak
   memory (ru_maxrss of the only child, target < 300 MB) and good items stored (target: all).

A redirect to a private address is not here: every source is on 127.0.0.1, which the run must be
allowed to reach (tests/test_hostile.py covers that case).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server import LoopbackServer, RequestRecord  # noqa: E402

MiB = 1024 * 1024
ARXIV_QUERIES = {"arxiv-empty-page": "cat:empty", "arxiv-429": "cat:busy", "arxiv-503": "cat:down",
                 "arxiv-html-200": "cat:html"}  # fmt: skip
WORDS = ["model", "data", "agent", "token", "vision", "speech", "kernel", "sparse", "graph", "memory", "robot", "scale"]


def rss(items: str, *, declaration: str = '<?xml version="1.0" encoding="utf-8"?>', doctype: str = "") -> str:
    return f"{declaration}{doctype}<rss version='2.0'><channel><title>Feed</title>{items}</channel></rss>"


def entry(name: str, n: int, rng: random.Random | None = None, extra: str = "") -> str:
    words = " ".join((rng or random.Random(n)).choices(WORDS, k=12))
    return (
        f"<item><title>{name} {n}: {words[:40]}</title><link>https://{name}.example/{n}</link>"
        f"<guid isPermaLink='false'>{name}-{n}</guid><pubDate>Tue, 24 Nov 2026 08:{n % 60:02d}:00 GMT</pubDate>"
        f"<description>&lt;p&gt;{words}.&lt;/p&gt;</description>{extra}</item>"
    )


def serve_good_feeds(server: LoopbackServer, feeds: int, entries: int) -> dict[str, str]:
    rng = random.Random(8)
    urls = {}
    for f in range(feeds):
        name = f"good{f:02d}"
        server.add(f"/{name}.xml", rss("".join(entry(name, n, rng) for n in range(entries))))
        urls[name] = server.url(f"/{name}.xml")
    return urls


def serve_hostile_feeds(server: LoopbackServer) -> dict[str, str]:
    """name -> URL of one source per hostile case."""
    bodies: dict[str, bytes | str] = {}
    levels = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    laughs = f'<!DOCTYPE r [<!ENTITY l0 "x">{levels}]>'
    bodies["billion-laughs"] = rss("<item><title>&l9;</title></item>", doctype=laughs)
    bodies["quadratic-blowup"] = rss(
        f"<item><title>{'&big;' * 20_000}</title></item>", doctype=f'<!DOCTYPE r [<!ENTITY big "{"x" * 100_000}">]>'
    )
    bodies["external-entity"] = rss(
        entry("xxe", 1, extra="<author>&x;</author>"), doctype='<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    )
    bodies["external-dtd"] = rss(entry("dtd", 1), doctype=f'<!DOCTYPE rss SYSTEM "{server.url("/never.dtd")}">')
    bodies["not-xml"] = b"\x00\x01 {{ not <xml> & never was"
    broken = "<item><title>Q&A: R&D at AT&T</title><link>https://b.example/1?a=1&b=2</link></item>"
    bodies["broken-xml"] = rss(broken)[: -len("</channel></rss>")]
    bodies["utf-16"] = rss(entry("wide", 1), declaration='<?xml version="1.0" encoding="utf-16"?>').encode("utf-16")
    bodies["html-page"] = "<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>"
    bodies["no-entries"] = rss("")
    bodies["duplicate-guids"] = rss(entry("dup", 1) * 3 + entry("dup", 2))
    bodies["bare-entries"] = rss("<item><title>t</title></item><item><description>d</description></item><item/>")
    bodies["future-dates"] = rss(entry("future", 1).replace("2026", "2096"))
    huge = "&lt;p&gt;" + "word " * MiB
    bodies["5-mb-entry"] = rss(f"<item><title>Huge</title><description>{huge}</description></item>")
    bodies["javascript-links"] = rss(
        "<item><title>js</title><link>javascript:alert(1)</link></item>"
        "<item><title>file</title><link>file:///etc/passwd</link>"
        "<description>&lt;a href='javascript:x'&gt;</description></item>"
    )
    bodies["over-the-cap"] = rss(entry("big", 1) + "<!--" + "x" * (16 * MiB) + "-->")
    for name, body in bodies.items():
        server.add(f"/{name}.xml", body)
    latin1 = rss(entry("cafe", 1).replace("cafe 1", "Café 1"), declaration="<?xml version='1.0'?>").encode("latin-1")
    server.add("/lying-charset.xml", latin1, content_type="application/rss+xml; charset=utf-8")
    server.add("/missing-charset.xml", latin1.replace(b"cafe-1", b"cafe-2"), content_type="application/rss+xml")
    server.add_gzip_bomb("/gzip-bomb.xml", 200 * MiB)
    server.add("/drip.xml", rss(entry("drip", 1)), drip=1.0)
    server.add_hang("/never-answers.xml")
    server.add_redirect("/loop-a.xml", "/loop-b.xml")
    server.add_redirect("/loop-b.xml", "/loop-a.xml")
    server.add_redirect("/to-file.xml", "file:///etc/passwd")
    for status in (404, 410, 500, 503):
        server.add(f"/http-{status}.xml", "error", status=status, content_type="text/plain")
    server.add("/http-429.xml", "slow down", status=429, headers={"Retry-After": "3600"}, content_type="text/plain")
    urls = {name: server.url(f"/{name}.xml") for name in bodies}
    names = ("lying-charset", "missing-charset", "gzip-bomb", "drip", "never-answers", "http-404", "http-410",
             "http-429", "http-500", "http-503")  # fmt: skip
    urls |= {name: server.url(f"/{name}.xml") for name in names}
    urls |= {"redirect-loop": server.url("/loop-a.xml"), "redirect-to-file": server.url("/to-file.xml")}
    urls["connection-refused"] = f"http://127.0.0.1:{_closed_port()}/feed.xml"
    urls["tls-failure"] = f"https://127.0.0.1:{server.port}/good00.xml"
    return urls


def serve_arxiv(server: LoopbackServer) -> None:
    """One API endpoint; each hostile arXiv source is told apart by its query."""

    def reply(request: RequestRecord) -> tuple[int, dict[str, str], bytes]:
        query = parse_qs(request.query)
        search, start = query["search_query"][0], int(query["start"][0])
        if search == "cat:busy":
            return 429, {"Retry-After": "1"}, b"busy"
        if search == "cat:down":
            return 503, {}, b"down"
        if search == "cat:html":
            return 200, {"Content-Type": "text/html"}, b"<!DOCTYPE html><html><body>Rate exceeded.</body></html>"
        ids = [f"2611.{n:05d}v1" for n in range(start, min(start + 5, 12))] if start < 5 else []
        return 200, {"Content-Type": "application/atom+xml"}, _arxiv_page(ids, 12, start).encode()

    server.add_handler("/api/query", reply)


def _arxiv_page(ids: list[str], total: int, start: int) -> str:
    entries = "".join(
        f"<entry><id>http://arxiv.org/abs/{i}</id><updated>2026-11-20T00:00:00Z</updated>"
        f"<published>2026-11-20T00:00:00Z</published><title>Paper {i}</title><summary>We study {i}.</summary>"
        f"<author><name>A. Author</name></author><link href='http://arxiv.org/abs/{i}' rel='alternate'/></entry>"
        for i in ids
    )
    return (
        "<?xml version='1.0' encoding='UTF-8'?><feed xmlns='http://www.w3.org/2005/Atom' "
        "xmlns:opensearch='http://a9.com/-/spec/opensearch/1.1/'><title>arXiv Query</title>"
        f"<opensearch:totalResults>{total}</opensearch:totalResults>"
        f"<opensearch:startIndex>{start}</opensearch:startIndex>{entries}</feed>"
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def corrupt_live_model(models: Path) -> None:
    """A live model whose file is not a model, with a matching hash (so only loading can tell)."""
    version = models / "v0001-20261126T0900"
    version.mkdir(parents=True)
    (version / "model.skops").write_bytes(b"PK\x03\x04 not a model")
    files = {"model.skops": hashlib.sha256(b"PK\x03\x04 not a model").hexdigest()}
    (version / "metadata.json").write_text(json.dumps({"version": version.name, "created": "2026-11-26T09:00:00+00:00",
                                                       "files": files}))  # fmt: skip
    (models / "CURRENT").write_text(version.name + "\n")


def write_config(folder: Path, server: LoopbackServer, feeds: dict[str, str]) -> Path:
    lines = [f'  - {{name: {name}, kind: feed, url: "{url}"}}' for name, url in feeds.items()]
    lines += [f'  - {{name: {name}, kind: arxiv, query: "{query}", max_results: 12}}'
              for name, query in ARXIV_QUERIES.items()]  # fmt: skip
    config = folder / "feeds.yaml"
    config.write_text(
        f'database: "sqlite:///{folder}/aggregator.db"\n'
        f"models_dir: {folder}/models\n"
        "fetch: {allow_private_addresses: true}\n"  # every source is on 127.0.0.1; the limits are the defaults
        f'arxiv: {{api_url: "{server.url("/api/query")}", delay_seconds: 0.2, page_size: 5, retries: 2}}\n'
        "sources:\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    return config


def good_items_stored(database: Path, good: dict[str, str]) -> int:
    with sqlite3.connect(database) as connection:
        counts = dict(connection.execute("SELECT source, count(*) FROM items GROUP BY source").fetchall())
    return sum(counts.get(name, 0) for name in good)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=50, help="good feeds beside the hostile ones")
    parser.add_argument("--entries", type=int, default=30, help="entries per good feed")
    args = parser.parse_args()
    server = LoopbackServer().start()
    try:
        good = serve_good_feeds(server, args.good, args.entries)
        hostile = serve_hostile_feeds(server)
        serve_arxiv(server)
        with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
            folder = Path(tmp)
            corrupt_live_model(folder / "models")
            config = write_config(folder, server, good | hostile)
            report, seconds, exit_code = run(config)
            print_outcome(report, hostile, exit_code)
            stored = good_items_stored(folder / "aggregator.db", good)
            print(f"\n{len(good)} good + {len(hostile) + len(ARXIV_QUERIES)} hostile sources")
            print(f"wall time        {seconds:.1f} s (target < 60)")
            child = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run is the only child
            print(f"cpu time         {child.ru_utime + child.ru_stime:.1f} s")
            print(f"peak memory      {child.ru_maxrss / 1024:.0f} MB (target < 300)")
            print(f"good items       {stored} / {args.good * args.entries} stored (target: all)")
            print(f"external DTD     {server.hits('/never.dtd')} requests (target: 0)")
    finally:
        server.stop()


def run(config: Path) -> tuple[dict[str, Any], float, int]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), "run", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return {"sources": [], "notes": []}, seconds, done.returncode
    return json.loads(done.stdout), seconds, done.returncode


def print_outcome(report: dict[str, Any], hostile: dict[str, str], exit_code: int) -> None:
    print(f"exit status {exit_code}")
    # a source's seconds include waiting for a slot: every source is on 127.0.0.1 (2 requests at a time)
    print(f"  {'source':20} {'status':10} {'seconds':>7}  error or items")
    for result in report["sources"]:
        if result["name"] in hostile or result["name"] in ARXIV_QUERIES:
            outcome = result["error"] or f"{result['new']} new"
            print(f"  {result['name']:20} {result['status']:10} {result['ms'] / 1000:7.1f}  {outcome[:110]}")
    for note in report["notes"]:
        print(f"  note: {note[:140]}")


if __name__ == "__main__":
    main()
