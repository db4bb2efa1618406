"""The only module that touches the network.

One `Fetcher` (one aiohttp session) serves a whole run. Every `get` is guarded:

    queue for a slot (global + per host)  ->  total deadline starts
      -> per hop: scheme check, literal-IP check, request (resolver refuses private addresses)
      -> redirect? follow by hand, at most max_redirects, no loops
      -> 304? empty Response;  4xx/5xx? FetchError with status and Retry-After
      -> body read raw and decoded here, refused as soon as it passes max_bytes decoded

Anything that goes wrong becomes a one-line FetchError; no aiohttp exception escapes.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import os
import re
import socket
import ssl
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from types import ModuleType, TracebackType
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

import aggregator
from aggregator.errors import ConfigError, FetchError

FEED_ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, application/feed+json;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, application/json;q=0.5, */*;q=0.1"
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
_MESSAGE_LIMIT = 300  # characters: error messages stay one readable line
_DELAY_SECONDS = re.compile(r"\d+(\.\d+)?")  # digits only: float() would also take "inf" and "nan"


@dataclass(frozen=True, slots=True)
class FetchLimits:
    timeout: float = 20.0  # total deadline per request, seconds (all hops, body included)
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # max gap between chunks
    max_bytes: int = 15_000_000  # cap on the body after decompression
    max_redirects: int = 5
    concurrency: int = 16  # requests in flight overall
    per_host: int = 2  # requests in flight per host
    allow_private_addresses: bool = False
    user_agent: str = aggregator.USER_AGENT

    def __post_init__(self) -> None:
        # a zero here would not fail loudly later: Semaphore(0) waits forever, timeout 0 fails everything
        positive = ("timeout", "connect_timeout", "read_timeout", "max_bytes", "concurrency", "per_host")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"fetch limit {name} must be greater than 0, got {getattr(self, name)!r}")
        if self.max_redirects < 0:
            raise ConfigError(f"fetch limit max_redirects must be 0 or more, got {self.max_redirects!r}")


@dataclass(frozen=True, slots=True)
class Response:
    url: str  # final URL after redirects
    status: int  # 2xx or 304
    body: bytes  # b"" on 304
    headers: Mapping[str, str]  # lower-case names
    etag: str | None  # on 304: the server's, else the one sent
    last_modified: str | None
    max_age: float | None  # from Cache-Control, seconds
    elapsed_ms: float


# --- header helpers (public: the scheduler uses them too) ---------------------------------------


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP date); None if unreadable."""
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    return _seconds_until_http_date(text, now) if text else None


def _seconds_until_http_date(text: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def parse_max_age(cache_control: str) -> float | None:
    """How long a response stays fresh by Cache-Control, in seconds; None when it does not say.

    no-store / no-cache mean "fresh for 0 s"; s-maxage is for shared caches and is ignored.
    """
    max_age: float | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            seconds = value.strip().strip('"')
            max_age = float(seconds) if seconds.isascii() and seconds.isdigit() else None
    return max_age


# --- address policy ----------------------------------------------------------------------------


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast IP address; False for private, loopback, link-local,
    reserved, multicast, unspecified (IPv4 or IPv6, IPv4 embedded in IPv6 included) or non-IP text."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(str(embedded))
        if ip.is_site_local:
            return False
    special = (ip.is_private, ip.is_loopback, ip.is_link_local, ip.is_multicast, ip.is_reserved)
    return ip.is_global and not ip.is_unspecified and not any(special)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64_PREFIX:  # a NAT64 gateway would forward to this IPv4 address
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class PrivateAddressRefused(OSError):
    """A host name resolved only to addresses the policy refuses."""


class PublicOnlyResolver(AbstractResolver):
    """Wraps aiohttp's default resolver and drops private addresses at connection time, so a
    name that resolves (or re-resolves: DNS rebinding) to a private address is never connected to."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [entry for entry in found if is_public_address(entry["host"])]
        if not public:
            refused = ", ".join(sorted({entry["host"] for entry in found}))
            raise PrivateAddressRefused(f"{host} resolves to private address {refused}")
        return public

    async def close(self) -> None:
        await self._inner.close()


# --- bounded decoding ----------------------------------------------------------------------------


class _CorruptBody(Exception):
    """A compressed body that does not decompress."""


class _Decoder(Protocol):
    def decode(self, data: bytes, room: int) -> Iterator[bytes]:
        """Decoded pieces of `data`, stopping once more than `room` bytes came out."""
        ...

    def flush(self) -> bytes: ...


class _Identity:
    def decode(self, data: bytes, room: int) -> Iterator[bytes]:
        yield data

    def flush(self) -> bytes:
        return b""


class _Inflater:
    """gzip (wbits 31, several members allowed) or deflate (zlib-wrapped, or raw as some servers send)."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._inflate = zlib.decompressobj(wbits)
        self._started = False

    def decode(self, data: bytes, room: int) -> Iterator[bytes]:
        while data and room >= 0:
            piece = self._decompress(data, room + 1)  # max_length: never more than one byte past the cap
            room -= len(piece)
            yield piece
            data = self._inflate.unconsumed_tail or self._next_gzip_member()

    def _decompress(self, data: bytes, max_length: int) -> bytes:
        try:
            piece = self._inflate.decompress(data, max_length)
        except zlib.error:
            if self._started or self._wbits != zlib.MAX_WBITS:
                raise _CorruptBody from None
            self._wbits = -zlib.MAX_WBITS  # "deflate" sent without its zlib header
            self._inflate = zlib.decompressobj(self._wbits)
            return self._decompress(data, max_length)
        self._started = True
        return piece

    def _next_gzip_member(self) -> bytes:
        rest = self._inflate.unused_data
        if not (self._inflate.eof and rest.startswith(b"\x1f\x8b")):
            return b""  # trailing padding after the last member is ignored, as browsers do
        self._inflate = zlib.decompressobj(self._wbits)
        return rest

    def flush(self) -> bytes:
        try:
            return self._inflate.flush()
        except zlib.error:
            raise _CorruptBody from None


class _Unbrotli:
    """Brotli, with the output-limited API (brotli >= 1.2) so a brotli bomb stays bounded too."""

    def __init__(self, brotli: ModuleType) -> None:
        self._decompressor = brotli.Decompressor()
        self._error: type[Exception] = brotli.error

    def decode(self, data: bytes, room: int) -> Iterator[bytes]:
        piece = self._process(data, room + 1)
        room -= len(piece)
        yield piece
        # output held back by the limit is drained with empty input, as brotli requires
        while room >= 0 and not self._decompressor.can_accept_more_data():
            piece = self._process(b"", room + 1)
            room -= len(piece)
            yield piece

    def _process(self, data: bytes, limit: int) -> bytes:
        try:
            piece: bytes = self._decompressor.process(data, output_buffer_limit=limit)
        except self._error:
            raise _CorruptBody from None
        return piece

    def flush(self) -> bytes:
        return b""


def _bounded_brotli() -> ModuleType | None:
    try:
        brotli = importlib.import_module("brotli")
    except ImportError:
        return None
    return brotli if hasattr(brotli.Decompressor, "can_accept_more_data") else None


BROTLI = _bounded_brotli()
ACCEPT_ENCODING = "gzip, deflate, br" if BROTLI else "gzip, deflate"


def _decoder_for(content_encoding: str, url: str) -> _Decoder:
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return _Identity()
    if encoding in ("gzip", "x-gzip"):
        return _Inflater(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Inflater(zlib.MAX_WBITS)
    if encoding == "br" and BROTLI is not None:
        return _Unbrotli(BROTLI)
    raise FetchError(f"unsupported Content-Encoding {encoding!r} from {url}")


class _BoundedBody:
    """Collects a decoded body and refuses it the moment it passes max_bytes."""

    def __init__(self, decoder: _Decoder, max_bytes: int, url: str) -> None:
        self._decoder = decoder
        self._max_bytes = max_bytes
        self._url = url
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, raw: bytes) -> None:
        for piece in self._decoder.decode(raw, self._max_bytes - self._size):
            self._keep(piece)

    def finish(self) -> bytes:
        self._keep(self._decoder.flush())
        return b"".join(self._parts)

    def _keep(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self._max_bytes:
            raise FetchError(f"body of {self._url} is larger than {self._max_bytes} bytes")
        if piece:
            self._parts.append(piece)


# --- the fetcher -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


class _HostSlots:
    """Per-host semaphores, created on demand and dropped when idle (1,000s of hosts per run)."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def acquire(self, host: str) -> None:
        semaphore, users = self._slots.get(host, (asyncio.Semaphore(self._per_host), 0))
        self._slots[host] = (semaphore, users + 1)
        try:
            await semaphore.acquire()
        except BaseException:
            self._forget(host)
            raise

    def release(self, host: str) -> None:
        self._slots[host][0].release()
        self._forget(host)

    def _forget(self, host: str) -> None:
        semaphore, users = self._slots[host]
        if users <= 1:
            del self._slots[host]
        else:
            self._slots[host] = (semaphore, users - 1)


class Fetcher:
    """Async context manager owning one aiohttp session for a whole run.

    Slots (global and per host) are taken before the deadline starts, so a request waiting its
    turn behind 1,000 others is not timed out; the connector enforces the same limits per hop.
    """

    def __init__(self, limits: FetchLimits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._global_slots: asyncio.Semaphore | None = None
        self._host_slots = _HostSlots(limits.per_host)

    async def __aenter__(self) -> Fetcher:
        limits = self._limits
        resolver = None if limits.allow_private_addresses else PublicOnlyResolver()
        connector = aiohttp.TCPConnector(limit=limits.concurrency, limit_per_host=limits.per_host, resolver=resolver)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # decoded here, under the size cap
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
            ),
            headers={"User-Agent": limits.user_agent},
            max_field_size=32_768,  # real sites send long CSP and cookie headers
        )
        self._global_slots = asyncio.Semaphore(limits.concurrency)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str = FEED_ACCEPT,
    ) -> Response:
        """GET url under every guard; a Response for 2xx/304, else FetchError (one line)."""
        session, global_slots = self._require_open()
        host = _checked_url(url, url, self._limits.allow_private_addresses).host or ""
        headers = _request_headers(accept, etag, last_modified)
        async with global_slots:
            await self._host_slots.acquire(host)
            try:
                return await self._get_within_deadline(session, url, headers, etag, last_modified)
            finally:
                self._host_slots.release(host)

    def _require_open(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        if self._session is None or self._global_slots is None:
            raise RuntimeError("Fetcher used outside 'async with'")
        return self._session, self._global_slots

    async def _get_within_deadline(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        etag: str | None,
        last_modified: str | None,
    ) -> Response:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._limits.timeout):
                response = await self._follow(session, url, headers)
        except TimeoutError:
            # only the deadline's own expiry arrives here: _hop turns aiohttp's timeouts into FetchError
            raise FetchError(f"timed out after {self._limits.timeout:g} s fetching {_shown(url)}") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        return _finished(response, etag, last_modified, elapsed_ms)

    async def _follow(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Response:
        seen = {url}
        current = url
        for _ in range(self._limits.max_redirects + 1):
            outcome = await self._hop(session, current, headers)
            if isinstance(outcome, Response):
                return outcome
            target = _checked_url(outcome.location, url, self._limits.allow_private_addresses)
            current = str(target)
            if current in seen:
                raise FetchError(f"redirect loop at {_shown(current)} (started at {_shown(url)})")
            seen.add(current)
        raise FetchError(f"more than {self._limits.max_redirects} redirects from {_shown(url)}")

    async def _hop(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Response | _Redirect:
        try:
            async with session.get(url, headers=headers, allow_redirects=False) as resp:
                return await self._outcome(resp, url)
        except FetchError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, _CorruptBody) as exc:
            raise FetchError(_reason(exc, url, self._limits)) from None

    async def _outcome(self, resp: aiohttp.ClientResponse, url: str) -> Response | _Redirect:
        if resp.status in REDIRECT_STATUSES:
            return _redirect_target(resp, url)
        if not (200 <= resp.status < 300 or resp.status == 304):
            raise _http_error(resp, url)
        body = b"" if resp.status == 304 else await self._read_body(resp, url)
        headers = _lower_case_headers(resp)
        return Response(
            url=url,
            status=resp.status,
            body=body,
            headers=headers,
            etag=headers.get("etag"),
            last_modified=headers.get("last-modified"),
            max_age=parse_max_age(headers.get("cache-control", "")),
            elapsed_ms=0.0,
        )

    async def _read_body(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
        encoding = resp.headers.get("Content-Encoding", "")
        max_bytes = self._limits.max_bytes
        if encoding in ("", "identity") and (resp.content_length or 0) > max_bytes:
            raise FetchError(f"body of {_shown(url)} is larger than {max_bytes} bytes")
        body = _BoundedBody(_decoder_for(encoding, _shown(url)), max_bytes, _shown(url))
        async for raw in resp.content.iter_any():
            body.add(raw)
        return body.finish()


def _request_headers(accept: str, etag: str | None, last_modified: str | None) -> dict[str, str]:
    headers = {"Accept": accept, "Accept-Encoding": ACCEPT_ENCODING}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def _checked_url(url: str, origin: str, allow_private: bool) -> URL:
    """The parsed URL if policy allows it: http(s) with a host, and no literal private IP."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise FetchError(f"invalid URL {url!r}") from None
    redirected = " (redirected from " + _shown(origin) + ")" if url != origin else ""
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchError(f"not an http(s) URL: {_shown(url)}{redirected}")
    if not allow_private and _is_ip_literal(parsed.host) and not is_public_address(parsed.host):
        raise FetchError(f"refused {_shown(url)}: {parsed.host} is a private address{redirected}")
    return parsed


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _redirect_target(resp: aiohttp.ClientResponse, url: str) -> _Redirect:
    location = resp.headers.get("Location", "").strip()
    if not location:
        raise FetchError(f"HTTP {resp.status} redirect without a Location from {_shown(url)}")
    try:
        return _Redirect(str(resp.url.join(URL(location))))
    except ValueError:
        raise FetchError(f"HTTP {resp.status} redirect to an invalid URL {location!r}") from None


def _http_error(resp: aiohttp.ClientResponse, url: str) -> FetchError:
    retry_after = None
    if "Retry-After" in resp.headers:
        retry_after = parse_retry_after(resp.headers["Retry-After"], datetime.now(UTC))
    message = f"HTTP {resp.status} {_phrase(resp)} from {_shown(url)}"
    if retry_after is not None:
        message += f" (retry after {round(retry_after, 1):g} s)"
    return FetchError(_one_line(message), status=resp.status, retry_after=retry_after)


def _phrase(resp: aiohttp.ClientResponse) -> str:
    if resp.reason:
        return resp.reason
    try:
        return HTTPStatus(resp.status).phrase
    except ValueError:
        return "error"


def _lower_case_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in resp.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _finished(response: Response, etag: str | None, last_modified: str | None, elapsed_ms: float) -> Response:
    """Stamp the time; on 304 keep the validators we sent when the server does not repeat them."""
    keep_sent = response.status == 304
    return Response(
        url=response.url,
        status=response.status,
        body=response.body,
        headers=response.headers,
        etag=response.etag or (etag if keep_sent else None),
        last_modified=response.last_modified or (last_modified if keep_sent else None),
        max_age=response.max_age,
        elapsed_ms=elapsed_ms,
    )


def _reason(exc: BaseException, url: str, limits: FetchLimits) -> str:
    """One line saying what went wrong, for a user, without a traceback."""
    shown = _shown(url)
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, PrivateAddressRefused):
        return _one_line(f"refused {shown}: {exc.os_error}")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _one_line(f"TLS certificate error from {shown}: {exc.certificate_error}")
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError | ssl.SSLError):
        return _one_line(f"TLS failure connecting to {shown}: {_ssl_reason(exc)}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return _one_line(f"DNS lookup failed for {exc.host}: {_os_reason(exc.os_error)}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _one_line(f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connect timed out after {limits.connect_timeout:g} s: {shown}"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return f"no data for {limits.read_timeout:g} s from {shown}"
    if isinstance(exc, TimeoutError):
        return f"timed out fetching {shown}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"server closed the connection: {shown}"
    if isinstance(exc, _CorruptBody):
        return f"corrupt compressed body from {shown}"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return _one_line(f"bad HTTP response from {shown}: {_ssl_reason(exc)}")
    return _one_line(f"{type(exc).__name__} fetching {shown}: {exc}")


def _os_reason(error: OSError) -> str:
    """The OS reason ("Connection refused"), not asyncio's "Connect call failed (address)"."""
    if isinstance(error.errno, int) and error.errno > 0 and not isinstance(error, socket.gaierror):
        return os.strerror(error.errno)
    return str(error.strerror or error)


def _ssl_reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    inner = getattr(exc, "os_error", None) or cause or exc
    return str(getattr(inner, "reason", None) or getattr(inner, "message", None) or inner)


def _shown(url: str) -> str:
    """The URL as it may appear in messages and logs: no password, bounded length."""
    try:
        parsed = URL(url)
        text = str(parsed.with_password(None)) if parsed.password else url
    except (ValueError, TypeError):
        text = url
    return text if len(text) <= 200 else text[:197] + "..."


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 3] + "..."
