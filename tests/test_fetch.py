"""fetch.Fetcher against the loopback server: what a feed poller meets in the wild."""

from __future__ import annotations

import asyncio
import gzip
import socket
import tracemalloc
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest

from aggregator import USER_AGENT, fetch
from aggregator.errors import ConfigError, FetchError
from aggregator.fetch import Fetcher, FetchLimits, Response, is_public_address, parse_max_age, parse_retry_after
from tests.server import LoopbackServer

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'


async def get(url: str, *, etag: str | None = None, last_modified: str | None = None, **limits: Any) -> Response:
    limits.setdefault("allow_private_addresses", True)  # the loopback server is a private address
    async with Fetcher(FetchLimits(**limits)) as fetcher:
        return await fetcher.get(url, etag=etag, last_modified=last_modified)


async def failure(url: str, **limits: Any) -> FetchError:
    with pytest.raises(FetchError) as caught:
        await get(url, **limits)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return caught.value


# --- plain success ---------------------------------------------------------------------------------


async def test_200_gives_body_headers_and_validators(loopback: LoopbackServer) -> None:
    loopback.add(
        "/feed.xml",
        FEED,
        etag='"v1"',
        last_modified="Mon, 01 Jan 2024 00:00:00 GMT",
        headers={"Cache-Control": "public, max-age=600"},
    )
    response = await get(loopback.url("/feed.xml"))
    assert response.status == 200
    assert response.body == FEED
    assert response.url == loopback.url("/feed.xml")
    assert response.headers["content-type"] == "application/xml"
    assert response.etag == '"v1"'
    assert response.last_modified == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert response.max_age == 600
    assert response.elapsed_ms > 0


async def test_gzip_body_is_decoded(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", FEED, gzip=True)
    assert (await get(loopback.url("/feed.xml"))).body == FEED


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
async def test_deflate_body_is_decoded_with_or_without_zlib_header(loopback: LoopbackServer, wbits: int) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    body = compressor.compress(FEED) + compressor.flush()
    loopback.add("/feed.xml", body, headers={"Content-Encoding": "deflate"})
    assert (await get(loopback.url("/feed.xml"))).body == FEED


async def test_concatenated_gzip_members_are_all_decoded(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", gzip.compress(FEED[:20]) + gzip.compress(FEED[20:]), headers={"Content-Encoding": "gzip"})
    assert (await get(loopback.url("/feed.xml"))).body == FEED


async def test_corrupt_gzip_is_a_fetch_error(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", b"\x1f\x8b\x08\x00garbage-garbage", headers={"Content-Encoding": "gzip"})
    error = await failure(loopback.url("/feed.xml"))
    assert "corrupt compressed body" in str(error)


async def test_unknown_content_encoding_is_named(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", FEED, headers={"Content-Encoding": "zstd"})
    assert "unsupported Content-Encoding 'zstd'" in str(await failure(loopback.url("/feed.xml")))


async def test_brotli_is_decoded_when_a_bounded_brotli_is_installed(loopback: LoopbackServer) -> None:
    brotli = pytest.importorskip("brotli")
    if fetch.BROTLI is None:
        pytest.skip("installed brotli cannot bound its output (needs >= 1.2)")
    loopback.add("/feed.xml", brotli.compress(FEED), headers={"Content-Encoding": "br"})
    assert (await get(loopback.url("/feed.xml"))).body == FEED
    loopback.add("/bomb", brotli.compress(bytes(50_000_000)), headers={"Content-Encoding": "br"})
    assert "larger than 1000000 bytes" in str(await failure(loopback.url("/bomb"), max_bytes=1_000_000))


async def test_user_agent_and_accept_headers_are_sent(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", FEED)
    await get(loopback.url("/feed.xml"))
    headers = loopback.requests("/feed.xml")[0].headers
    assert headers["user-agent"] == USER_AGENT
    assert "application/atom+xml" in headers["accept"]
    assert headers["accept-encoding"] == fetch.ACCEPT_ENCODING
    assert ("br" in headers["accept-encoding"]) == (fetch.BROTLI is not None)


# --- conditional GET -------------------------------------------------------------------------------


async def test_matching_etag_gives_304_with_empty_body(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", FEED, etag='"v1"')
    response = await get(loopback.url("/feed.xml"), etag='"v1"')
    assert (response.status, response.body, response.etag) == (304, b"", '"v1"')
    assert loopback.requests("/feed.xml")[0].headers["if-none-match"] == '"v1"'


async def test_changed_etag_gives_the_new_body(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", FEED, etag='"v2"')
    response = await get(loopback.url("/feed.xml"), etag='"v1"')
    assert (response.status, response.body, response.etag) == (200, FEED, '"v2"')


async def test_last_modified_is_sent_as_if_modified_since(loopback: LoopbackServer) -> None:
    stamp = "Mon, 01 Jan 2024 00:00:00 GMT"
    loopback.add("/feed.xml", FEED, last_modified=stamp)
    response = await get(loopback.url("/feed.xml"), last_modified=stamp)
    assert (response.status, response.body, response.last_modified) == (304, b"", stamp)
    assert loopback.requests("/feed.xml")[0].headers["if-modified-since"] == stamp


# --- size cap ---------------------------------------------------------------------------------------


async def test_plain_body_over_the_cap_is_refused(loopback: LoopbackServer) -> None:
    loopback.add("/big.xml", b"x" * 5000)
    error = await failure(loopback.url("/big.xml"), max_bytes=1000)
    assert f"body of {loopback.url('/big.xml')} is larger than 1000 bytes" in str(error)


async def test_body_exactly_at_the_cap_is_kept(loopback: LoopbackServer) -> None:
    loopback.add("/big.xml", b"x" * 1000, gzip=True)
    assert len((await get(loopback.url("/big.xml"), max_bytes=1000)).body) == 1000


async def test_gzip_bomb_fails_on_decoded_size_with_little_memory(loopback: LoopbackServer) -> None:
    loopback.add_gzip_bomb("/bomb.xml", 200 * 1024 * 1024)  # 200 MiB of zeros, ~200 KB on the wire
    tracemalloc.start()
    try:
        error = await failure(loopback.url("/bomb.xml"), max_bytes=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "larger than 1000000 bytes" in str(error)
    assert peak < 10_000_000


# --- time limits -------------------------------------------------------------------------------------


async def test_deadline_stops_a_server_that_drips_bytes(loopback: LoopbackServer) -> None:
    loopback.add("/slow.xml", FEED, drip=0.1)  # each byte arrives in time; the whole never does
    error = await failure(loopback.url("/slow.xml"), timeout=0.5, read_timeout=5)
    assert str(error) == f"timed out after 0.5 s fetching {loopback.url('/slow.xml')}"


async def test_deadline_stops_a_server_that_never_answers(loopback: LoopbackServer) -> None:
    loopback.add_hang("/silent.xml")
    error = await failure(loopback.url("/silent.xml"), timeout=0.5)
    assert "timed out after 0.5 s" in str(error)


async def test_read_timeout_stops_a_silent_server_before_the_deadline(loopback: LoopbackServer) -> None:
    loopback.add_hang("/silent.xml")
    error = await failure(loopback.url("/silent.xml"), timeout=10, read_timeout=0.3)
    assert "no data for 0.3 s" in str(error)


async def test_deadline_covers_every_redirect_hop(loopback: LoopbackServer) -> None:
    loopback.add("/a", b"", status=302, headers={"Location": "/b"}, delay=0.2)
    loopback.add("/b", b"", status=302, headers={"Location": "/c"}, delay=0.2)
    loopback.add("/c", FEED, delay=0.2)
    assert "timed out after 0.5 s" in str(await failure(loopback.url("/a"), timeout=0.5))


# --- connection failures ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_connection_refused_is_one_line(loopback: LoopbackServer) -> None:
    port = _closed_port()
    error = await failure(f"http://127.0.0.1:{port}/feed.xml")
    assert str(error) == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert error.status is None


async def test_tls_failure_is_a_fetch_error(loopback: LoopbackServer) -> None:
    # the loopback port speaks plain HTTP, so a TLS handshake with it fails
    error = await failure(f"https://127.0.0.1:{loopback.port}/feed.xml")
    assert str(error).startswith("TLS failure connecting to https://127.0.0.1")


async def test_dns_failure_is_one_line() -> None:
    error = await failure("http://no-such-host.invalid/feed.xml")
    assert str(error).startswith("DNS lookup failed for no-such-host.invalid")


# --- redirects ----------------------------------------------------------------------------------------


async def test_redirect_chain_is_followed_to_the_final_url(loopback: LoopbackServer) -> None:
    loopback.add_redirect("/old", "/older", status=301)
    loopback.add_redirect("/older", loopback.url("/new"), status=308)
    loopback.add("/new", FEED, etag='"v3"')
    response = await get(loopback.url("/old"), etag='"v1"')
    assert (response.status, response.url, response.body) == (200, loopback.url("/new"), FEED)
    assert [loopback.hits(path) for path in ("/old", "/older", "/new")] == [1, 1, 1]


async def test_redirect_loop_is_refused(loopback: LoopbackServer) -> None:
    loopback.add_redirect("/x", "/y")
    loopback.add_redirect("/y", "/x")
    error = await failure(loopback.url("/x"))
    assert str(error).startswith(f"redirect loop at {loopback.url('/x')}")


async def test_too_many_redirects_are_refused(loopback: LoopbackServer) -> None:
    for hop in range(6):
        loopback.add_redirect(f"/r{hop}", f"/r{hop + 1}")
    loopback.add("/r6", FEED)
    error = await failure(loopback.url("/r0"), max_redirects=3)
    assert str(error) == f"more than 3 redirects from {loopback.url('/r0')}"
    assert loopback.hits("/r4") == 0
    assert (await get(loopback.url("/r0"), max_redirects=6)).body == FEED


async def test_redirect_to_a_non_http_scheme_is_refused(loopback: LoopbackServer) -> None:
    loopback.add_redirect("/old", "file:///etc/passwd")
    error = await failure(loopback.url("/old"))
    assert str(error) == f"not an http(s) URL: file:///etc/passwd (redirected from {loopback.url('/old')})"


async def test_redirect_without_location_is_an_error(loopback: LoopbackServer) -> None:
    loopback.add("/old", b"", status=302)
    assert "redirect without a Location" in str(await failure(loopback.url("/old")))


# --- address policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://example.org/feed.xml", "file:///etc/passwd", "javascript:alert(1)", "/relative"]
)
async def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    assert str(await failure(url)) == f"not an http(s) URL: {url}"


async def test_literal_private_address_is_refused_without_connecting(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", FEED)
    error = await failure(loopback.url("/feed.xml"), allow_private_addresses=False)
    assert str(error) == f"refused {loopback.url('/feed.xml')}: 127.0.0.1 is a private address"
    assert loopback.hits("/feed.xml") == 0


async def test_name_resolving_to_a_private_address_is_refused_at_connect_time(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", FEED)
    url = f"http://localhost:{loopback.port}/feed.xml"
    error = await failure(url, allow_private_addresses=False)
    assert str(error).startswith(f"refused {url}: localhost resolves to private address")
    assert loopback.hits("/feed.xml") == 0


@pytest.mark.parametrize("target", ["http://10.1.2.3/feed.xml", "http://[::1]:9/feed.xml", "http://[::ffff:c0a8:1]/"])
async def test_redirect_to_a_private_address_is_refused(
    loopback: LoopbackServer, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    # treat the loopback server as if it were public, so only the redirect hop meets the policy
    real_policy = fetch.is_public_address
    monkeypatch.setattr(fetch, "is_public_address", lambda address: address == "127.0.0.1" or real_policy(address))
    loopback.add_redirect("/old", target)
    error = await failure(loopback.url("/old"), allow_private_addresses=False)
    assert str(error).startswith(f"refused {target}:")
    assert str(error).endswith(f"is a private address (redirected from {loopback.url('/old')})")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("not-an-ip", False),
    ],
)
def test_address_policy(address: str, public: bool) -> None:
    assert is_public_address(address) is public


# --- HTTP errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(404, "Not Found"), (410, "Gone"), (500, "Internal Server Error"), (503, "Service Unavailable")],
)
async def test_http_error_status_is_a_fetch_error(loopback: LoopbackServer, status: int, phrase: str) -> None:
    loopback.add("/feed.xml", b"oops", status=status)
    error = await failure(loopback.url("/feed.xml"))
    assert str(error) == f"HTTP {status} {phrase} from {loopback.url('/feed.xml')}"
    assert (error.status, error.retry_after) == (status, None)


async def test_429_with_retry_after_seconds(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", b"slow down", status=429, headers={"Retry-After": "120"})
    error = await failure(loopback.url("/feed.xml"))
    assert str(error) == f"HTTP 429 Too Many Requests from {loopback.url('/feed.xml')} (retry after 120 s)"
    assert (error.status, error.retry_after) == (429, 120)


async def test_503_with_retry_after_date(loopback: LoopbackServer) -> None:
    loopback.add("/feed.xml", b"", status=503, headers={"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"})
    error = await failure(loopback.url("/feed.xml"))
    assert error.status == 503
    assert error.retry_after is not None and error.retry_after > 365 * 24 * 3600


def test_parse_retry_after_reads_both_forms() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 0 ", now) == 0
    assert parse_retry_after("Mon, 01 Jan 2024 12:02:30 GMT", now) == 150
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now) == 0  # already past
    for unreadable in ("", "soon", "-5", "inf", "nan", "1e9"):
        assert parse_retry_after(unreadable, now) is None


def test_parse_max_age() -> None:
    assert parse_max_age("public, max-age=3600") == 3600
    assert parse_max_age('MAX-AGE="60", s-maxage=10') == 60
    assert parse_max_age("no-cache") == 0
    assert parse_max_age("max-age=3600, no-store") == 0
    assert parse_max_age("public") is None
    assert parse_max_age("max-age=soon") is None
    assert parse_max_age("") is None


# --- concurrency --------------------------------------------------------------------------------------


async def test_requests_per_host_are_limited(loopback: LoopbackServer) -> None:
    loopback.add("/slow.xml", FEED, delay=0.1)
    limits = FetchLimits(per_host=2, concurrency=16, allow_private_addresses=True)
    async with Fetcher(limits) as fetcher:
        responses = await asyncio.gather(*(fetcher.get(loopback.url("/slow.xml")) for _ in range(6)))
    assert [response.body for response in responses] == [FEED] * 6
    assert loopback.max_in_flight("/slow.xml") == 2


async def test_requests_overall_are_limited(loopback: LoopbackServer) -> None:
    loopback.add("/slow.xml", FEED, delay=0.1)
    hosts = ["127.0.0.1", "localhost"]  # two host names, one server
    limits = FetchLimits(per_host=5, concurrency=3, allow_private_addresses=True)
    async with Fetcher(limits) as fetcher:
        urls = [f"http://{hosts[i % 2]}:{loopback.port}/slow.xml" for i in range(8)]
        await asyncio.gather(*(fetcher.get(url) for url in urls))
    assert loopback.max_in_flight("/slow.xml") == 3


async def test_waiting_for_a_slot_does_not_count_against_the_deadline(loopback: LoopbackServer) -> None:
    loopback.add("/slow.xml", FEED, delay=0.2)  # three in a row take longer than one deadline
    limits = FetchLimits(per_host=1, timeout=0.5, allow_private_addresses=True)
    async with Fetcher(limits) as fetcher:
        responses = await asyncio.gather(*(fetcher.get(loopback.url("/slow.xml")) for _ in range(3)))
    assert [response.body for response in responses] == [FEED] * 3


@pytest.mark.parametrize("limit", [{"per_host": 0}, {"timeout": 0}, {"max_bytes": -1}, {"max_redirects": -1}])
def test_nonsense_limits_are_a_config_error(limit: dict[str, int]) -> None:
    name = next(iter(limit))
    with pytest.raises(ConfigError, match=f"fetch limit {name} must be"):
        FetchLimits(**limit)  # type: ignore[arg-type]


async def test_fetcher_must_be_opened_first() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await Fetcher(FetchLimits()).get("http://example.org/")
