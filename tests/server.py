"""A loopback HTTP server for tests: real sockets on 127.0.0.1, no internet.

    server.add("/feed.xml", body, etag='"v1"')          # static reply, honours conditional GET
    server.add_handler("/api", lambda request: (200, {}, b"..."))   # computed reply
    server.add_redirect("/old", "/new")                  # and add_hang, add_gzip_bomb, add_raw
    server.url("/feed.xml"), server.hits("/feed.xml"), server.requests("/feed.xml")

Handler threads are daemonic and every wait is bounded: `reset()` (between tests) and `stop()`
release anything still hanging or dripping.
"""

from __future__ import annotations

import email.utils
import gzip as gzip_module
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HANG_LIMIT = 60.0  # seconds: the longest any handler waits, even if a test forgets to reset


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() when it arrived


Reply = tuple[int, Mapping[str, str], bytes]
ReplyFunction = Callable[[RequestRecord], Reply]
# a raw hook writes whatever it likes on the handler's socket; the event is set when the test ends
RawHook = Callable[[BaseHTTPRequestHandler, threading.Event], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    loopback: LoopbackServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-reply is normal in these tests: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.loopback.dispatch(self)

    do_POST = do_GET
    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log line."""


class LoopbackServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, RawHook] = {}
        self._records: dict[str, list[RequestRecord]] = {}
        self._in_flight: dict[str, int] = {}
        self._max_in_flight: dict[str, int] = {}
        self._unanswered: dict[int, str] = {}  # id(handler) -> path of the request it has not answered yet
        self._release = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.loopback = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # --- lifecycle ---

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget routes and records; release handlers still hanging from the last test."""
        with self._lock:
            self._release.set()
            self._release = threading.Event()
            self._routes.clear()
            self._records.clear()
            self._in_flight.clear()
            self._max_in_flight.clear()
            self._unanswered.clear()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # --- routes ---

    def add(
        self,
        path: str,
        body: bytes | str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        content_type: str = "application/xml",
        gzip: bool = False,
        delay: float = 0.0,
        drip: float | None = None,
    ) -> None:
        """A fixed reply. `delay` waits before answering; `drip` sends the body one byte per
        `drip` seconds. With etag/last_modified set, a matching conditional GET gets 304."""
        payload = body.encode() if isinstance(body, str) else body
        reply_headers = {"Content-Type": content_type, **(headers or {})}
        if etag:
            reply_headers["ETag"] = etag
        if last_modified:
            reply_headers["Last-Modified"] = last_modified
        if gzip:
            payload = gzip_module.compress(payload)
            reply_headers["Content-Encoding"] = "gzip"

        def reply(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
            if delay and release.wait(min(delay, HANG_LIMIT)):
                return
            if _not_modified(handler, etag, last_modified):
                self.write_head(handler, 304, reply_headers, 0)
                return
            if drip is None:
                self.write_head(handler, status, reply_headers, len(payload))
                handler.wfile.write(payload)
            else:
                self.write_head(handler, status, reply_headers, len(payload))
                _drip(handler, payload, drip, release)

        self.add_raw(path, reply)

    def add_handler(self, path: str, function: ReplyFunction) -> None:
        """A computed reply: function(request) -> (status, headers, body)."""

        def reply(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
            status, headers, body = function(_record(handler))
            self.write_head(handler, status, headers, len(body))
            handler.wfile.write(body)

        self.add_raw(path, reply)

    def add_raw(self, path: str, hook: RawHook) -> None:
        """Socket-level control for hostile cases: the hook writes on handler.wfile (start answers with
        write_head) and must return once the event is set."""
        with self._lock:
            self._routes[path] = hook

    def add_redirect(self, path: str, location: str, status: int = 302) -> None:
        self.add_handler(path, lambda request: (status, {"Location": location}, b""))

    def add_hang(self, path: str) -> None:
        """Read the request, then never answer (until the test ends)."""

        def reply(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
            handler.close_connection = True
            release.wait(HANG_LIMIT)

        self.add_raw(path, reply)

    def add_gzip_bomb(self, path: str, size: int) -> None:
        """Stream a gzip of `size` zero bytes, compressed on the fly (about size/1000 on the wire)."""

        def reply(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
            handler.close_connection = True
            self.write_head(handler, 200, {"Content-Type": "application/xml", "Content-Encoding": "gzip"}, None)
            compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            block = bytes(1 << 20)
            for _ in range(size // len(block)):
                if release.is_set():
                    return
                handler.wfile.write(compressor.compress(block))
            handler.wfile.write(compressor.compress(bytes(size % len(block))) + compressor.flush())

        self.add_raw(path, reply)

    # --- what happened ---

    def hits(self, path: str) -> int:
        return len(self.requests(path))

    def requests(self, path: str) -> list[RequestRecord]:
        with self._lock:
            return list(self._records.get(path, ()))

    def max_in_flight(self, path: str) -> int:
        """The most requests to `path` the server was handling at one moment."""
        with self._lock:
            return self._max_in_flight.get(path, 0)

    # --- called by handler threads ---

    def dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        record = _record(handler)
        with self._lock:
            hook = self._routes.get(record.path)
            release = self._release
            self._records.setdefault(record.path, []).append(record)
            self._in_flight[record.path] = self._in_flight.get(record.path, 0) + 1
            self._max_in_flight[record.path] = max(
                self._max_in_flight.get(record.path, 0), self._in_flight[record.path]
            )
            self._unanswered[id(handler)] = record.path
        try:
            if hook is None:
                self.write_head(handler, 404, {"Content-Type": "text/plain"}, 9)
                handler.wfile.write(b"not found")
            else:
                hook(handler, release)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        finally:
            self.mark_answered(handler)

    def write_head(
        self, handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], length: int | None
    ) -> None:
        """Status line and headers (Content-Length, or Connection: close when length is None)."""
        self.mark_answered(handler)
        _send_head(handler, status, headers, length)

    def mark_answered(self, handler: BaseHTTPRequestHandler) -> None:
        """The request stops counting as in flight once its answer starts: a client may send the
        next request as soon as it has the answer, before this handler thread returns."""
        with self._lock:
            path = self._unanswered.pop(id(handler), None)
            if path is not None:
                self._in_flight[path] = self._in_flight.get(path, 1) - 1


def _record(handler: BaseHTTPRequestHandler) -> RequestRecord:
    parts = urlsplit(handler.path)
    headers = {name.lower(): value for name, value in handler.headers.items()}
    return RequestRecord(handler.command, parts.path, parts.query, headers, time.monotonic())


def _send_head(handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], length: int | None) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    if length is None:
        handler.send_header("Connection", "close")  # the body ends when the connection does
    else:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def _drip(handler: BaseHTTPRequestHandler, payload: bytes, interval: float, release: threading.Event) -> None:
    handler.wfile.flush()
    for index in range(len(payload)):
        handler.wfile.write(payload[index : index + 1])
        handler.wfile.flush()
        if release.wait(interval):
            handler.close_connection = True
            return


def _not_modified(handler: BaseHTTPRequestHandler, etag: str | None, last_modified: str | None) -> bool:
    if_none_match = handler.headers.get("If-None-Match")
    if etag and if_none_match:
        return etag in {tag.strip() for tag in if_none_match.split(",")} or if_none_match.strip() == "*"
    if_modified_since = handler.headers.get("If-Modified-Since")
    if last_modified and if_modified_since:
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
            modified = email.utils.parsedate_to_datetime(last_modified)
        except (TypeError, ValueError):
            return False
        return modified <= since
    return False
