"""The admin API: aiohttp in the router's own process, on its event loop.

It reads the health engine and the proxy's counters as they are, and moves a
target only through :class:`Runtime`, so an operator's drain or force-down is
logged and stored in the event log like any other change. No business rule
lives here: whether a move is legal is the state table's answer.

Every request, ``/api/health`` included, must carry ``Authorization: Bearer
<token>``, or come from a browser logged in to the dashboard (a session cookie,
and on a POST the session's CSRF token: see ``_dashboard``). There is no TLS:
the default address is loopback, and another one is logged as a warning.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..health import TRANSITIONS, Input, State, StateChange
from ..reloading import Reload
from ..runtime import Runtime
from . import _calls, _input
from ._dashboard import Dashboard
from ._input import BadInput
from ._metrics import Metrics
from ._quality import BadQuery, quality_view
from ._views import change_view, event_view, iso, registration_views, target_view

log = logging.getLogger("trunkguard.admin")

_MAX_BODY = 64 * 1024
METRICS = web.AppKey("metrics", Metrics)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    """Where the admin API listens and the token every request must carry."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise ValueError("admin token: required, and must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"admin port: expected 0-65535, got {self.port}")


class _Refused(Exception):
    """A request the API answers with ``status`` and ``message`` as its error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _guard(token: str, dashboard: Dashboard | None = None) -> Middleware:
    expected = token.strip().encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Checked before routing errors too: without the token, no path is known to exist.
        if dashboard is not None and "Authorization" not in request.headers:
            # A browser: its session cookie (and CSRF token on a POST), or the login page.
            refused = dashboard.admit(request)
            if refused is not None:
                return refused
        else:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            challenge = {"WWW-Authenticate": 'Bearer realm="trunkguard"'}
            if scheme.lower() != "bearer" or not given.strip():
                return _error(401, "missing token: send Authorization: Bearer <token>", challenge)
            if not hmac.compare_digest(given.strip().encode(errors="surrogateescape"), expected):
                return _error(401, "token refused", challenge)
        try:
            return await handler(request)
        except BadInput as exc:
            return _error(400, str(exc))
        except _Refused as exc:
            return _error(exc.status, exc.message)
        except web.HTTPNotFound:
            return _error(404, f"no such endpoint: {request.method} {request.path}")
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            return _error(405, f"{request.method} not allowed on {request.path} (only {allowed})")
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)
        except Exception:
            log.exception("admin API: %s %s failed", request.method, request.path)
            return _error(500, "internal error (see the router's log)")

    return guard


class _Api:
    def __init__(
        self,
        runtime: Runtime,
        on_change: Callable[[], None] | None,
        reload: Reload | None = None,
    ) -> None:
        self.runtime = runtime
        self.on_change = on_change
        self.reload_config = reload

    @staticmethod
    def _now() -> float:
        # The engine's clock: the loop's monotonic time (see Runtime).
        return asyncio.get_running_loop().time()

    def _name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if name not in self.runtime.health.targets:
            raise _Refused(404, f"no target named {name!r}")
        return name

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def targets(self, request: web.Request) -> web.Response:
        now = self._now()
        targets = [target_view(self.runtime, n, now) for n in self.runtime.health.targets]
        return web.json_response(
            {
                "targets": targets,
                "registrations": registration_views(self.runtime, now),
                "now": iso(self.runtime._wall(now)),
            }
        )

    async def target(self, request: web.Request) -> web.Response:
        name = self._name(request)
        return web.json_response(target_view(self.runtime, name, self._now()))

    async def force_down(self, request: web.Request) -> web.Response:
        name = self._name(request)
        if not request.can_read_body:
            raise BadInput("body", 'required: {"seconds": 60, "reason": "drill"}')
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raise BadInput("body", "not valid JSON") from None
        order = _input.force_down(body)
        why = f"forced down by operator for {order.seconds:g}s"
        if order.reason is not None:
            why += f": {order.reason}"
        now = self._now()
        changes = self.runtime.force_down(name, order.seconds, now, why)
        return self._moved(request, name, "force-down", changes, now)

    async def drain(self, request: web.Request) -> web.Response:
        name = self._name(request)
        now = self._now()
        return self._moved(request, name, "drain", self.runtime.drain(name, now), now)

    async def restore(self, request: web.Request) -> web.Response:
        name = self._name(request)
        now = self._now()
        return self._moved(request, name, "restore", self.runtime.restore(name, now), now)

    def _moved(
        self, request: web.Request, name: str, verb: str, changes: list[StateChange], now: float
    ) -> web.Response:
        if not changes:
            raise _Refused(409, _refusal(name, self.runtime.health.state(name), verb))
        log.info(
            "admin API: %s %s from %s: %s",
            verb,
            name,
            request.remote,
            ", ".join(f"{c.old} -> {c.new}" for c in changes),
        )
        if self.on_change is not None:
            self.on_change()
        return web.json_response(
            {
                "changes": [change_view(self.runtime, c) for c in changes],
                "target": target_view(self.runtime, name, now),
            }
        )

    async def reload(self, request: web.Request) -> web.Response:
        """Read the config again, as SIGHUP does: 200 with what changed, or 422 with why not."""
        if self.reload_config is None:
            raise _Refused(501, "this router cannot reload through the API")
        log.info("admin API: reload from %s", request.remote)
        outcome = await self.reload_config("admin API")
        if outcome.busy:
            raise _Refused(409, "a reload is under way; try again when it is done")
        return web.json_response(outcome.view(), status=200 if outcome.ok else 422)

    async def events(self, request: web.Request) -> web.Response:
        q = _input.events_query(request.query)
        rows = self.runtime.store.events(q.target, q.since, q.until, q.limit)
        return web.json_response({"events": [event_view(r) for r in rows]})

    async def calls(self, request: web.Request) -> web.Response:
        limit = _calls.calls_limit(request.query)
        return web.json_response(_calls.calls_view(self.runtime, limit, self._now()))

    async def quality(self, request: web.Request) -> web.Response:
        try:
            view = quality_view(self.runtime, request.query, self._now())
        except BadQuery as exc:
            raise _Refused(400, str(exc)) from None
        return web.json_response(view)

    async def counters(self, request: web.Request) -> web.Response:
        proxy = self.runtime.proxy
        return web.json_response(
            {
                "counters": dict(sorted(proxy.counters.items())),
                "open": proxy.open_work(),
                "active": proxy.active(),
                **proxy.load_view(self._now()),
                **({"ha": self.runtime.ha.view()} if self.runtime.ha is not None else {}),
            }
        )


_MOVES: dict[str, tuple[Input, ...]] = {
    "drain": (Input.DRAIN,),
    "force-down": (Input.FORCE_DOWN,),
    "restore": (Input.RESTORE, Input.RESTORE_PROBING),
}
_RESTORABLE = frozenset(s for (s, i) in TRANSITIONS if i in _MOVES["restore"])


def _refusal(name: str, state: State, verb: str) -> str:
    """Why ``verb`` does not move ``name``, from the state table itself."""
    inputs = _MOVES[verb]
    allowed = list(dict.fromkeys(s.value for (s, i) in TRANSITIONS if i in inputs))
    ends = {new for (s, i), new in TRANSITIONS.items() if i in inputs}
    already = "already " if state in ends else ""
    hint = "; restore it first" if verb != "restore" and state in _RESTORABLE else ""
    return f"{name} is {already}{state}: {verb} is allowed only from {', '.join(allowed)}{hint}"


def build_app(
    runtime: Runtime,
    token: str,
    *,
    on_change: Callable[[], None] | None = None,
    reload: Reload | None = None,
) -> web.Application:
    """The admin API as an aiohttp application (tests serve it with aiohttp's TestServer).

    ``on_change`` is called after every move the API makes: the router passes the
    call that re-arms its loop timer, so that a forced-down period's end is on it.
    ``reload`` is the router's reload (the one SIGHUP runs), for ``POST /api/reload``.
    """
    if not token.strip():
        raise ValueError("admin token: required, and must not be empty")
    api = _Api(runtime, on_change, reload)
    dashboard = Dashboard(runtime, token)
    app = web.Application(middlewares=[_guard(token, dashboard)], client_max_size=_MAX_BODY)
    dashboard.attach(app)  # the page, its login and its live stream
    app.router.add_get("/api/health", api.health)
    app.router.add_get("/api/targets", api.targets)
    app.router.add_get("/api/targets/{name}", api.target)
    app.router.add_post("/api/targets/{name}/force-down", api.force_down)
    app.router.add_post("/api/targets/{name}/drain", api.drain)
    app.router.add_post("/api/targets/{name}/restore", api.restore)
    app.router.add_get("/api/events", api.events)
    app.router.add_get("/api/counters", api.counters)
    app.router.add_get("/api/quality", api.quality)
    app.router.add_post("/api/reload", api.reload)
    # Prometheus, behind the same token (its scrape config's authorization: credentials_file).
    metrics = app[METRICS] = Metrics(runtime)
    metrics.attach()
    app.on_cleanup.append(lambda _app: _detach(metrics))
    app.router.add_get("/metrics", metrics.handler)
    app.router.add_get("/api/calls", api.calls)
    return app


async def _detach(metrics: Metrics) -> None:
    metrics.detach()


class AdminServer:
    """The admin API, listening; ``port`` is the one bound (the kernel's pick for port 0)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_admin(
    runtime: Runtime,
    settings: AdminSettings,
    *,
    on_change: Callable[[], None] | None = None,
    reload: Reload | None = None,
) -> AdminServer:
    """Serve the admin API on ``settings.host``/``port``; raises OSError if it cannot bind."""
    app = build_app(runtime, settings.token, on_change=on_change, reload=reload)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1])
    if not _is_loopback(settings.host):
        log.warning(
            "admin API on %s, not loopback: its token crosses the network in clear text",
            settings.host,
        )
    log.info("admin API listening on %s:%d", settings.host, port)
    return AdminServer(runner, settings.host, port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
