"""The review page and its JSON API (FastAPI, Jinja2 with autoescaping, htmx served from /static).

Pages: `/` (the queue: the top of every section, or one section with `?section=`; filters
`source`, `type`, `since`, `until` (YYYY-MM-DD, inclusive), `q`), `/login`, and small htmx
fragments. Without signing in the page and the GET API are read-only; every state-changing request
needs a session cookie plus its CSRF token (header X-CSRF-Token, or form field csrf_token), or on
the API `Authorization: Bearer <token>`. Every response carries a Content-Security-Policy that
allows scripts from this server only (no inline scripts anywhere).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from math import ceil
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import nh3
from fastapi import Body, FastAPI, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregator import status
from aggregator.classify.itemtype import ITEM_TYPES
from aggregator.config import Settings
from aggregator.errors import AggregatorError, ReviewError
from aggregator.review import Card, Outcome, QueueQuery, Review
from aggregator.storage import Storage
from aggregator.web.auth import Authenticator, LoginThrottle, Session, SessionSigner, load_secret

log = logging.getLogger("aggregator.web")

HERE = Path(__file__).parent
COOKIE = "aggregator_session"
CSRF_HEADER = "x-csrf-token"
SUMMARY_HTML_CHARS = 4000
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # links out carry no referrer; same-origin posts keep their Origin
}
# What a summary may keep: text formatting and http(s) links, nothing that runs or submits.
_SUMMARY_TAGS = {"a", "b", "blockquote", "br", "code", "em", "i", "li", "ol", "p", "pre", "strong", "sub", "sup", "ul"}
_FILTER_FIELDS = ("section", "source", "type", "since", "until", "q")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    storage: Storage,
    *,
    env: Mapping[str, str] | None = None,
    clock: Clock = _utcnow,
) -> FastAPI:
    """The review app over one database. `env` (default os.environ) supplies the editor token and
    the session key; `clock` is the time decisions are recorded at."""
    env = os.environ if env is None else env
    app = FastAPI(title="aggregator review", docs_url=None, redoc_url=None, openapi_url=None)
    ctx = _Context(settings, storage, env, clock)
    app.state.ctx = ctx
    app.add_middleware(_SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(ReviewError, _review_error)
    _page_routes(app, ctx)
    _api_routes(app, ctx)
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
    return app


def _warm_up() -> None:
    """The status strip's first call imports the model registry (scikit-learn and skops: about 2 s
    here); import it now, before the page asks."""
    importlib.import_module("aggregator.classify.registry")


class _Context:
    """What every request handler shares."""

    def __init__(self, settings: Settings, storage: Storage, env: Mapping[str, str], clock: Clock) -> None:
        self.settings = settings
        self.storage = storage
        self.review = Review.from_settings(settings, storage)
        self.auth = Authenticator.from_settings(settings, env)
        self.signer = SessionSigner(load_secret(settings, env))
        self.throttle = LoginThrottle()
        self.clock = clock
        self.retrainer = Retrainer(settings, storage, clock)
        self.templates = _templates()
        # hx-vals of each card's move buttons, made once (escaped: safe in a quoted attribute)
        self.move_vals = {c: escape(json.dumps({"action": "move", "new_section": c})) for c in self.review.categories}

    def session(self, request: Request) -> Session | None:
        """The signed-in editor's session, while its credential is still the one configured."""
        session = self.signer.read(request.cookies.get(COOKIE), self.clock())
        if session is None or session.credential != self.auth.credential(session.editor):
            return None
        return session

    def writer(self, request: Request, csrf: str | None = None) -> str:
        """The editor making a state-changing request, or 401/403."""
        editor = self.auth.bearer(request.headers.get("authorization"))
        if editor is not None:
            return editor
        session = self.session(request)
        if session is None:
            raise HTTPException(401, "sign in to decide (or send Authorization: Bearer <token>)")
        if not _same_origin(request):
            raise HTTPException(403, "cross-site request refused")
        if not session.csrf_ok(request.headers.get(CSRF_HEADER) or csrf):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")
        return session.editor

    def render(self, template: str, request: Request, status_code: int = 200, **values: Any) -> HTMLResponse:
        session = self.session(request)
        values |= {
            "session": session,
            "auth_enabled": self.auth.enabled,
            "categories": self.review.categories,
            "item_types": ITEM_TYPES,
            "move_vals": self.move_vals,
        }
        html = self.templates.get_template(template).render(**values)
        return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


# -- the page -------------------------------------------------------------------------------------------


def _page_routes(app: FastAPI, ctx: _Context) -> None:
    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request) -> HTMLResponse:
        filters = _filters_from(request.query_params)
        query = _query(filters)
        offset = _offset(request.query_params.get("offset"))
        if request.headers.get("hx-request") and request.query_params.get("fragment") == "cards":
            page = ctx.review.page(query, offset=offset)
            return ctx.render("_cards.html", request, page=page, filters=filters, single=True)
        sections = ctx.review.sections()
        if query.section:
            pages = [ctx.review.page(query, offset=offset)]
        else:
            pages = ctx.review.overview(query, sections=sections)
        sources = sorted(s.name for s in ctx.settings.sources)
        return ctx.render("page.html", request, pages=pages, filters=filters, sources=sources,
                          sections=sections, single=bool(query.section))  # fmt: skip

    @app.get("/strip", response_class=HTMLResponse)
    def status_strip(request: Request) -> HTMLResponse:
        filters = _filters_from(request.query_params)
        counts = ctx.review.counts(_query(filters))
        try:
            health: dict[str, Any] = status.collect(ctx.settings, ctx.storage, ctx.clock())
        except AggregatorError as exc:
            health = {"error": str(exc)}
        return ctx.render("_strip.html", request, counts=counts, health=health, filters=filters,
                          retrain=ctx.retrainer.state())  # fmt: skip

    @app.post("/items/{item_id}/decide", response_class=HTMLResponse)
    def decide_on_page(
        request: Request,
        item_id: int,
        action: Annotated[str, Form()],
        new_section: Annotated[str, Form()] = "",
        new_type: Annotated[str, Form()] = "",
        reason: Annotated[str, Form()] = "",
        view_section: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        editor = ctx.writer(request, csrf_token)
        outcome = ctx.review.decide(item_id, action, editor, ctx.clock(), section=new_section or None,
                                    item_type=new_type or None, reason=reason or None)  # fmt: skip
        card = ctx.review.card(item_id)
        gone = card.status != "candidate" or bool(view_section and view_section != card.section)
        response = HTMLResponse("") if gone else ctx.render("_card.html", request, card=card, view_section=view_section)
        return _announce(response, _done(outcome))

    @app.post("/bulk", response_class=HTMLResponse)
    async def bulk_on_page(request: Request) -> HTMLResponse:
        form = await _form(request)

        def bulk() -> HTMLResponse:
            editor = ctx.writer(request, form.get("csrf_token"))
            ids = [_int(value, "item id") for value in form.getlist("ids")]
            reason = form.get("reason") or None
            outcome = ctx.review.bulk(ids, form.get("action") or "", editor, ctx.clock(), reason=reason)
            return _announce(_queue_fragment(ctx, request, form), _done(outcome))

        return await run_in_threadpool(bulk)

    @app.post("/undo", response_class=HTMLResponse)
    async def undo_on_page(request: Request) -> HTMLResponse:
        form = await _form(request)

        def undo() -> HTMLResponse:
            editor = ctx.writer(request, form.get("csrf_token"))
            outcome = ctx.review.undo(editor, ctx.clock())
            return _announce(_queue_fragment(ctx, request, form), _done(outcome))

        return await run_in_threadpool(undo)

    @app.post("/items/{item_id}/split", response_class=HTMLResponse)
    async def split_on_page(request: Request, item_id: int) -> HTMLResponse:
        form = await _form(request)

        def split() -> HTMLResponse:
            editor = ctx.writer(request, form.get("csrf_token"))
            outcome = ctx.review.split(item_id, editor, ctx.clock())
            return _announce(_queue_fragment(ctx, request, form), _done(outcome))

        return await run_in_threadpool(split)

    @app.post("/retrain", response_class=HTMLResponse)
    def retrain_on_page(request: Request, csrf_token: Annotated[str, Form()] = "") -> HTMLResponse:
        ctx.writer(request, csrf_token)
        started = ctx.retrainer.start()
        response = HTMLResponse("", status_code=204)
        return _announce(response, "retraining started" if started else "retraining is already running")

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return ctx.render("login.html", request, error=None)

    @app.post("/login", response_model=None)
    def login(request: Request, name: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "") -> Response:
        if not _same_origin(request):
            raise HTTPException(403, "cross-site request refused")
        # Per address and name: behind a proxy every editor shares one address, and one person's
        # typos must not lock the others out.
        attempt, now = f"{request.client.host if request.client else '?'} {name.strip().lower()}", ctx.clock()
        wait = ctx.throttle.wait(attempt, now)
        if wait:
            error = f"too many wrong passwords: try again in {ceil(wait / 60)} min"
            refused = ctx.render("login.html", request, 429, error=error, name=name)
            refused.headers["Retry-After"] = str(ceil(wait))
            return refused
        editor = ctx.auth.login(name, password) if ctx.auth.enabled else None
        if editor is None:
            ctx.throttle.failed(attempt, now)
            return ctx.render("login.html", request, 401, error="wrong name or password", name=name)
        ctx.throttle.succeeded(attempt)
        cookie, _ = ctx.signer.issue(editor, ctx.clock(), ctx.auth.credential(editor) or "")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, cookie, max_age=int(ctx.signer.lifetime.total_seconds()), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")  # fmt: skip
        return response

    @app.post("/logout")
    def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> RedirectResponse:
        ctx.writer(request, csrf_token)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response


class _FormData:
    """A posted form's fields as strings."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self.fields = fields

    def get(self, name: str) -> str:
        return next((value for key, value in self.fields if key == name), "").strip()

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]


async def _form(request: Request) -> _FormData:
    form = await request.form()
    return _FormData([(key, value) for key, value in form.multi_items() if isinstance(value, str)])


def _queue_fragment(ctx: _Context, request: Request, form: _FormData) -> HTMLResponse:
    """The queue list again, under the filters the page was showing (sent along with the form)."""
    filters = _filters_from({name: form.get(name) for name in _FILTER_FIELDS})
    query = _query(filters)
    pages = [ctx.review.page(query)] if query.section else ctx.review.overview(query)
    return ctx.render("_queue.html", request, pages=pages, filters=filters, single=bool(query.section))


def _done(outcome: Outcome) -> str:
    stories = len(outcome.story_ids)
    noun = "story" if stories == 1 else "stories"
    verbs = {"accept": "accepted", "reject": "rejected", "move": "moved", "note": "noted", "undo": "undid",
             "split": "split"}  # fmt: skip
    items = len(outcome.item_ids)
    extra = f" ({items} items)" if items != stories and outcome.action != "split" else ""
    if outcome.action == "undo":
        return f"undid the latest decision on {stories} {noun}{extra}"
    return f"{verbs.get(outcome.action, outcome.action)} {stories} {noun}{extra}"


def _announce(response: HTMLResponse, message: str) -> HTMLResponse:
    """Tell the page (htmx) that the queue changed, with a line to show."""
    response.headers["HX-Trigger"] = json.dumps({"queue-changed": True, "flash": message})
    return response


# -- the JSON API ---------------------------------------------------------------------------------------


def _api_routes(app: FastAPI, ctx: _Context) -> None:
    @app.get("/api/queue")
    def api_queue(request: Request) -> dict[str, Any]:
        query = _query(_filters_from(request.query_params))
        offset = _offset(request.query_params.get("offset"))
        limit = _limit(request.query_params.get("limit"), ctx.review.page_size)
        page = ctx.review.page(query, offset=offset, limit=limit)
        return {
            "items": [card.json() for card in page.cards],
            "total": ctx.review.total(query),
            "offset": offset,
            "limit": limit,
            "more": page.more,
        }

    @app.post("/api/items/{item_id}/decision")
    def api_decide(request: Request, item_id: int, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        editor = ctx.writer(request)
        fields = _decision_fields(body)
        outcome = ctx.review.decide(item_id, fields.pop("action"), editor, ctx.clock(), **fields)
        return outcome.json() | {"editor": editor, "card": ctx.review.card(item_id).json()}

    @app.post("/api/decisions")
    def api_bulk(request: Request, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        editor = ctx.writer(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ReviewError("ids must be a list of item ids")
        fields = _decision_fields(body)
        outcome = ctx.review.bulk(ids, fields.pop("action"), editor, ctx.clock(), **fields)
        return outcome.json() | {"editor": editor}

    @app.post("/api/undo")
    def api_undo(request: Request) -> dict[str, Any]:
        editor = ctx.writer(request)
        return ctx.review.undo(editor, ctx.clock()).json() | {"editor": editor}

    @app.post("/api/items/{item_id}/split")
    def api_split(request: Request, item_id: int) -> dict[str, Any]:
        editor = ctx.writer(request)
        return ctx.review.split(item_id, editor, ctx.clock()).json() | {"editor": editor}

    @app.get("/api/status")
    def api_status() -> JSONResponse:
        data = status.collect(ctx.settings, ctx.storage, ctx.clock())
        data |= {"queue_stories": ctx.review.counts(), "retrain": ctx.retrainer.state()}
        return JSONResponse(json.loads(json.dumps(data, default=str)))

    @app.post("/api/retrain", status_code=202)
    def api_retrain(request: Request) -> dict[str, Any]:
        ctx.writer(request)
        started = ctx.retrainer.start()
        return {"started": started, **ctx.retrainer.state()}


def _decision_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {"action", "section", "item_type", "reason"}
    unknown = sorted(set(body) - allowed - {"ids"})
    if unknown:
        raise ReviewError(f"unknown field {unknown[0]!r} (fields: action, section, item_type, reason)")
    fields = {key: body.get(key) for key in allowed}
    for key, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise ReviewError(f"{key} must be a string")
    if not fields["action"]:
        raise ReviewError("action is required (accept, reject, move or note)")
    return fields


# -- retraining -----------------------------------------------------------------------------------------


class Retrainer:
    """Runs `aggregator.training.retrain` in one background thread at a time and remembers how
    the last run went (the status strip shows it)."""

    def __init__(self, settings: Settings, storage: Storage, clock: Clock) -> None:
        self.settings = settings
        self.storage = storage
        self.clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *, force: bool = False) -> bool:
        """Start retraining unless it is already running; whether it started."""
        with self._lock:
            if self.running:
                return False
            self._thread = threading.Thread(target=self._run, args=(force,), name="retrain", daemon=True)
            self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def state(self) -> dict[str, Any]:
        return {"running": self.running, "last": self.last}

    def _run(self, force: bool) -> None:
        started = self.clock()
        try:
            from aggregator.training import retrain  # scikit-learn: imported when first needed

            result = retrain(self.settings, self.storage, started, force=force)
            self.last = f"{started:%Y-%m-%d %H:%M} UTC: {_describe(result)}"
        except AggregatorError as exc:
            self.last = f"{started:%Y-%m-%d %H:%M} UTC: failed: {exc}"
        except Exception as exc:  # a crash in a background thread must still show on the page
            log.exception("retraining failed")
            self.last = f"{started:%Y-%m-%d %H:%M} UTC: failed: {type(exc).__name__}: {exc}"


def _describe(result: object) -> str:
    describe = getattr(result, "describe", None)
    text = describe() if callable(describe) else str(result)
    return " ".join(str(text).split())[:300]


# -- request helpers ------------------------------------------------------------------------------------


def _filters_from(values: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(values.get(name) or "").strip() for name in _FILTER_FIELDS}


def _query(filters: Mapping[str, str]) -> QueueQuery:
    until = _day(filters.get("until"), "until")
    return QueueQuery(
        section=filters.get("section") or None,
        source=filters.get("source") or None,
        item_type=filters.get("type") or None,
        since=_day(filters.get("since"), "since"),
        until=until + timedelta(days=1) if until else None,  # the whole last day
        text=filters.get("q") or None,
    )


def _day(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ReviewError(f"{name}: {value[:40]!r} is not a date (YYYY-MM-DD)") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _int(value: object, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ReviewError(f"{name}: {str(value)[:40]!r} is not a number") from None


def _offset(value: str | None) -> int:
    return max(0, _int(value, "offset")) if value else 0


def _limit(value: str | None, default: int) -> int:
    return min(500, max(1, _int(value, "limit"))) if value else default


def _same_origin(request: Request) -> bool:
    """A browser names the page a request came from; refuse any other site (CSRF defence in depth)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _review_error(request: Request, exc: Exception) -> Response:
    status_code = 404 if str(exc).startswith("no item with id") else 400
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, status_code=status_code)
    return Response(str(exc), status_code=status_code, media_type="text/plain")


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every response that does not set them itself (plain ASGI: no
    per-request task, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- templates ------------------------------------------------------------------------------------------


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates ship with the package: no stat() of every include per card
    )
    env.filters |= {
        "safe_url": safe_url,
        "summary": summary_html,
        "day": _day_text,
        "pct": _pct,
        "query": _query_string,
    }
    env.globals["card_id"] = _card_dom_id
    env.globals["options"] = _options
    return env


def safe_url(url: str | None) -> str | None:
    """The URL when it is a plain absolute http(s) one, else None (never javascript:, data:, or a
    scheme hidden by whitespace, control characters or entities)."""
    if not url or len(url) > 4000 or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return None
    if not url.lower().startswith(("http://", "https://")):
        return None
    parts = urlsplit(url)
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def summary_html(card: Card) -> Markup:
    """The summary as HTML: the feed's HTML cleaned again here (formatting and http(s) links only),
    or the plain text, escaped."""
    item = card.stored.item
    if item.summary_html.strip():
        cleaned = nh3.clean(
            item.summary_html[:SUMMARY_HTML_CHARS],
            tags=_SUMMARY_TAGS,
            attributes={"a": {"href", "title"}},
            url_schemes={"http", "https"},
            url_relative="deny",
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
        )
        return Markup(cleaned)  # noqa: S704 (nh3 output: an allow-list of tags and http(s) links)
    return Markup("<p>{}</p>").format(item.summary_text[:1500])


def _day_text(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d}" if value else ""


def _pct(value: float | None) -> str:
    return f"{value * 100:.0f}%" if value is not None else ""


def _query_string(filters: Mapping[str, str], **changes: Any) -> str:
    merged = {k: v for k, v in {**filters, **changes}.items() if v not in (None, "")}
    return urlencode(merged)


@lru_cache(maxsize=256)
def _options(values: tuple[str, ...], selected: str | None) -> Markup:
    """<option>s of a select, made once per choice (every card repeats them)."""
    return Markup("").join(
        Markup("<option selected>{}</option>").format(v) if v == selected else Markup("<option>{}</option>").format(v)
        for v in values
    )


def _card_dom_id(card: Card) -> str:
    return f"card-{card.id}"
