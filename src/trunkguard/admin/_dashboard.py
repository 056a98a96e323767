"""The live dashboard, served by the admin API: login, the page, its stream and its data.

- ``GET /login`` a form for the admin token; ``POST /login`` checks it (or a
  one-time link's code) and opens a session: a random id in an HttpOnly,
  SameSite=Strict cookie (Secure over https). The token never goes into the
  page, a cookie, a URL or a log. Failed logins are counted, logged once per
  burst and throttled per client address (see ``_sessions``).
- ``GET /`` the page (to ``/login`` without a session), ``/static/...`` its
  script and style: no build step, no asset from anywhere else.
- ``GET /api/stream`` Server-Sent Events: a snapshot on connect, then the
  state changes as they happen, the failovers, and the cards once a second
  (what came meanwhile goes out together, at most twice a second); with an
  ``ha:`` section also the node's HA line (``ha``) whenever its role, leader or
  etcd's reachability changes.
- ``GET /api/dashboard`` the snapshot as JSON; ``GET /api/failovers`` the last
  calls that moved from one target to another, with the plan and each step.
- ``POST /api/login-links`` (bearer token only): a one-time login link.
- ``POST /logout`` ends the session and its streams.

A request with a session cookie is admitted by :meth:`Dashboard.admit` (the
admin API's guard asks it when a request has no ``Authorization`` header); a
POST so admitted must carry the session's CSRF token in ``X-CSRF-Token`` and,
when the browser sends one, an ``Origin`` of this very server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import logging
import math
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from ..health import StateChange
from ..runtime import Runtime
from ._failovers import KEEP, FailoverLog
from ._sessions import LoginThrottle, Session, Sessions
from ._stream import StreamHub
from ._views import change_view, event_view, iso, target_view

log = logging.getLogger("trunkguard.admin")

COOKIE = "tg_session"
CSRF_HEADER = "X-CSRF-Token"
STATIC = Path(__file__).with_name("static")
TIMELINE = 100  # state changes kept for the page
TICK = 1.0  # seconds between two pushes of the figures
MIN_GAP = 0.5  # and at least this between two pushes, however many changes come
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_PUBLIC = frozenset({"/login"})
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it Chromium sends "Origin: null" on the login form's POST,
    # which the Origin check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SESSION_KEY = web.RequestKey("dashboard_session", Session)
DASHBOARD_KEY: web.AppKey[Dashboard] = web.AppKey("dashboard")


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _see_other(where: str) -> web.Response:
    return web.Response(status=303, headers={"Location": where, "Cache-Control": "no-store"})


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _left(until: float | None, now: float) -> float | None:
    return None if until is None or until <= now else round(until - now, 1)


def same_origin(request: web.Request) -> bool:
    """No ``Origin`` (not a browser, or a same-origin GET), or one naming this server."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        given = URL(origin)
        own = URL(f"{given.scheme}://{request.host}")
    except ValueError:
        return False
    if not given.scheme or given.host is None:
        return False  # "null" (a sandboxed frame, a file:// page...)
    return (given.host.lower(), given.port) == ((own.host or "").lower(), own.port)


class Dashboard:
    def __init__(self, runtime: Runtime, token: str) -> None:
        self.runtime = runtime
        self._token = token.strip().encode()
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.hub = StreamHub(self._count)
        self.failovers = FailoverLog(runtime._wall, on_new=self._on_failover)
        self.timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE)
        # What came since the last push: sent together, so that a storm of failovers (a
        # carrier dying at 1,000 calls/s) is a few messages a second, not one per call.
        self._changes: deque[dict[str, Any]] = deque(maxlen=TIMELINE)
        self._failovers: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._page = (STATIC / "dashboard.html").read_text(encoding="utf-8")
        self._login = (STATIC / "login.html").read_text(encoding="utf-8")
        self._wake: asyncio.Event | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._ha_changed = False

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _count(self, name: str) -> None:
        self.runtime.proxy.counters[name] += 1

    # -- wiring ---------------------------------------------------------------------------
    def attach(self, app: web.Application) -> None:
        app[DASHBOARD_KEY] = self
        app.router.add_get("/", self.page)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/dashboard", self.dashboard)
        app.router.add_get("/api/failovers", self.failover_list)
        app.router.add_post("/api/login-links", self.login_link)
        app.router.add_static("/static", STATIC, append_version=False)
        app.on_response_prepare.append(_nosniff)  # the static files too, not only the pages
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)

    async def _start(self, app: web.Application) -> None:
        for row in self.runtime.store.events(limit=TIMELINE):
            self.timeline.append(event_view(row))
        self.runtime.listeners.append(self.feed)
        if self.runtime.ha is not None:
            self.runtime.ha.watchers.append(self._on_ha)
        self._wake = asyncio.Event()
        self._ticker = asyncio.create_task(self._tick(), name="dashboard-ticker")

    async def _shutdown(self, app: web.Application) -> None:
        # Before aiohttp waits for the handlers: an open stream must not hold up a SIGTERM.
        self.hub.close_all()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def _cleanup(self, app: web.Application) -> None:
        with contextlib.suppress(ValueError):
            self.runtime.listeners.remove(self.feed)
        if self.runtime.ha is not None:
            with contextlib.suppress(ValueError):
                self.runtime.ha.watchers.remove(self._on_ha)

    # -- what the page shows --------------------------------------------------------------
    def feed(self, event: object) -> None:
        """A ``Runtime`` listener: quick, never raises past the runtime's guard."""
        self.failovers.feed(event)
        if isinstance(event, StateChange):
            view = change_view(self.runtime, event)
            self.timeline.append(view)
            self._changes.append(view)
            if self._wake is not None:
                self._wake.set()  # out now, not at the next tick

    def _on_ha(self) -> None:
        """The HA node's role, leader or etcd state changed: out now, not at the next tick."""
        self._ha_changed = True
        if self._wake is not None:
            self._wake.set()

    def ha(self) -> dict[str, Any] | None:
        """The HA line's data (None without an ``ha:`` section)."""
        node = self.runtime.ha
        if node is None:
            return None
        v = node.view()
        lost = v["etcd_lost_since"]
        return {
            "node": v["node"],
            "mode": v["mode"],
            "role": v["role"],
            "serving": v["serving"],
            "epoch": v["epoch"],
            "leader": v["leader"],
            "etcd": v["etcd"],
            "etcd_lost_since": None if lost is None else iso(lost),
            "takeovers": v["takeovers"],
        }

    def _on_failover(self, view: dict[str, Any]) -> None:
        self._failovers.append(view)  # out with the next tick

    def cards(self, now: float) -> list[dict[str, Any]]:
        out = []
        for name, h in self.runtime.health.targets.items():
            card = target_view(self.runtime, name, now)
            f = self.runtime.stats.figures(name, now)
            card["figures"] = {
                "seizures": f.seizures,
                "calls_per_s": round(f.calls_per_s, 2),
                "asr": None if f.asr is None else round(f.asr, 4),
                "acd_s": None if f.acd is None else round(f.acd, 1),
                "pdd_p50_ms": _ms(f.pdd_p50),
                "pdd_p95_ms": _ms(f.pdd_p95),
            }
            card["hold_down_left"] = _left(h.hold_down_until, now)
            card["forced_left"] = _left(h.forced_until, now)
            out.append(card)
        return out

    def _targets(self) -> dict[str, Any]:
        now = self._now()
        return {"targets": self.cards(now), "now": iso(self.runtime._wall(now))}

    def snapshot(self) -> dict[str, Any]:
        return {
            **self._targets(),
            "timeline": list(self.timeline),
            "failovers": self.failovers.views(),
            "window_s": self.runtime.stats.window,
            "ha": self.ha(),
        }

    async def _tick(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK)
            self._wake.clear()
            changes, failovers = list(self._changes), list(reversed(self._failovers))
            self._changes.clear()
            self._failovers.clear()
            ha_changed, self._ha_changed = self._ha_changed, False
            if not self.hub.clients:
                continue  # a page that connects later gets them in its snapshot
            now = self._now()
            for key in self.hub.sessions():
                if not self.sessions.alive(key, now):
                    self.hub.close_session(key)  # logged out elsewhere, or expired
            if changes:
                self.hub.broadcast("changes", changes)  # oldest first
            if failovers:
                self.hub.broadcast("failovers", failovers)  # newest first
            if ha_changed:
                self.hub.broadcast("ha", self.ha())
            try:
                self.hub.broadcast("targets", self._targets())
            except Exception:  # a bug here must not end the stream for good
                log.exception("dashboard: the cards could not be made")
            await asyncio.sleep(MIN_GAP)

    # -- access ---------------------------------------------------------------------------
    def admit(self, request: web.Request) -> web.StreamResponse | None:
        """A request without ``Authorization``: None to let it through, else the refusal."""
        if request.path in _PUBLIC or request.path.startswith("/static/"):
            if request.method not in _SAFE and not same_origin(request):
                self._count("admin_csrf_refused")
                return _json_error(403, "cross-origin login refused")
            return None
        sid = request.cookies.get(COOKIE)
        session = self.sessions.get(sid, self._now()) if sid else None
        if session is None:
            if request.method in ("GET", "HEAD") and request.path == "/":
                return _see_other("/login")
            return _json_error(
                401,
                "missing token: send Authorization: Bearer <token>, or log in at /login",
                {"WWW-Authenticate": 'Bearer realm="trunkguard"'},
            )
        if request.method not in _SAFE:
            if not same_origin(request):
                self._count("admin_csrf_refused")
                return _json_error(403, "cross-origin request refused")
            given = request.headers.get(CSRF_HEADER, "").encode(errors="surrogateescape")
            if not hmac.compare_digest(given, session.csrf.encode()):
                self._count("admin_csrf_refused")
                return _json_error(403, f"missing or wrong {CSRF_HEADER}: reload the page")
        request[SESSION_KEY] = session
        return None

    # -- handlers -------------------------------------------------------------------------
    def _html(
        self, text: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            text=text,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={**_PAGE_HEADERS, **(headers or {})},
        )

    def _login_form(
        self, message: str, status: int, headers: dict[str, str] | None = None
    ) -> web.Response:
        return self._html(self._login.replace("{{error}}", html.escape(message)), status, headers)

    async def page(self, request: web.Request) -> web.StreamResponse:
        session = request.get(SESSION_KEY)
        if session is None:  # a bearer-token client: the page needs a session of its own
            return _see_other("/login")
        return self._html(self._page.replace("{{csrf}}", html.escape(session.csrf)))

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        sid = request.cookies.get(COOKIE)
        if sid and self.sessions.get(sid, self._now()) is not None:
            return _see_other("/")
        return self._login_form("", 200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        address = request.remote or "unknown"
        # The form first: with an await between the throttle's look and the failure it
        # counts, guesses sent together (each holding back its body) would all be tried.
        form = await request.post()
        now = self._now()
        wait = self.throttle.wait(address, now)
        if wait > 0:
            self._count("admin_logins_throttled")
            seconds = math.ceil(wait)
            return self._login_form(
                f"Too many failed logins from {address}: try again in {seconds} s.",
                429,
                {"Retry-After": str(seconds)},
            )
        token, once = form.get("token"), form.get("once")
        ok, what = False, "token refused"
        if isinstance(token, str) and token.strip():
            given = token.strip().encode(errors="surrogateescape")
            ok = hmac.compare_digest(given, self._token)
        elif isinstance(once, str) and once:
            ok, what = self.sessions.redeem(once, now), "login link used already or expired"
        else:
            what = "enter the admin token"
        if not ok:
            self._count("admin_logins_failed")
            if self.throttle.failed(address, now):
                log.warning(
                    "dashboard: failed login from %s (%s); further failures from it are "
                    "counted (admin_logins_failed), not logged, until it is quiet for %gs",
                    address,
                    what,
                    self.throttle.quiet,
                )
            return self._login_form(what.capitalize() + ".", 401)
        self.throttle.succeeded(address)
        sid, _ = self.sessions.open(now)
        self._count("admin_logins")
        log.info("dashboard: login from %s", address)
        resp = _see_other("/")
        resp.set_cookie(
            COOKIE,
            sid,
            path="/",
            httponly=True,
            samesite="Strict",
            # Behind a TLS proxy too: Secure only keeps the cookie off plain http, so a
            # client that claims https can do no harm with it.
            secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
            max_age=int(self.sessions.lifetime),
        )
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session = request.get(SESSION_KEY)
        sid = request.cookies.get(COOKIE)
        if session is not None and sid:
            self.sessions.close(sid)
            self.hub.close_session(session.key)
            log.info("dashboard: logout from %s", request.remote)
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def stream(self, request: web.Request) -> web.StreamResponse:
        session = request.get(SESSION_KEY)
        key = None if session is None else session.key
        return await self.hub.serve(request, key, self.snapshot)

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def failover_list(self, request: web.Request) -> web.Response:
        return web.json_response({"failovers": self.failovers.views()})

    async def login_link(self, request: web.Request) -> web.Response:
        if request.get(SESSION_KEY) is not None:
            return _json_error(403, "login links are made with the bearer token only")
        code = self.sessions.make_link(self._now())
        return web.json_response(
            {"path": f"/login#once={code}", "expires_in": self.sessions.link_ttl}
        )
