"""The FastAGI route advisor's asyncio adapter: a TCP listener, one task per session.

Each session reads Asterisk's header block through :class:`Session`, asks the
advisor, writes its SET VARIABLE commands one at a time and reads each reply
(lockstep, as res_agi expects), then closes. Everything is bounded: the
number of sessions at once, each session's time and its input's size. A
session past a bound, malformed or abandoned is closed, counted in the
proxy's counters (so /api/counters and /metrics see it) and logged, at most
a few lines per kind however many come.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from ..routing import Plan, build_plan
from ..runtime import Runtime
from ._advisor import Advice, PlanTable, advise, check_report
from ._protocol import Hangup, Malformed, Reply, Request, Session, set_variable
from ._settings import AgiSettings

log = logging.getLogger("trunkguard.agi")

READ_SIZE = 4096


def _often(n: int) -> bool:
    """Log the 1st, 10th, 100th and every 1000th of a kind: a flood is a few lines."""
    return n in (1, 10, 100) or n % 1000 == 0


class _Closed(Exception):
    """The session is over: Asterisk closed, or a reply said to stop."""


class AgiServer:
    def __init__(
        self,
        runtime: Runtime,
        settings: AgiSettings,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.on_change = on_change
        self.plans = PlanTable(settings.plans, settings.plan_ttl)
        self.active = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.bound: tuple[str, int] | None = None
        self._plan_counters: Counter[str] = Counter()

    @property
    def counters(self) -> Counter[str]:
        return self.runtime.proxy.counters

    def templates(self) -> dict[str, str]:
        """Each carrier's dial string, from the config in force (a reload changes them;
        plans already given keep theirs)."""
        return {c.name: c.dial for c in self.runtime.config.carriers if c.dial}

    async def start(self) -> None:
        s = self.settings
        self._server = await asyncio.start_server(
            self._accept, s.host, s.port, limit=s.max_line + 2, backlog=512
        )
        sock = self._server.sockets[0].getsockname()
        self.bound = (sock[0], sock[1])
        log.info("FastAGI route advisor listening on %s:%d", sock[0], sock[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        c = self.counters
        try:
            if self.active >= self.settings.max_sessions:
                c["agi_refused"] += 1
                if _often(c["agi_refused"]):
                    log.warning(
                        "FastAGI: %d sessions open (agi.max_sessions): "
                        "closed a new one (%d so far)",
                        self.active,
                        c["agi_refused"],
                    )
                return
            self.active += 1
            c["agi_sessions"] += 1
            try:
                await asyncio.wait_for(
                    self._session(reader, writer), timeout=self.settings.session_timeout
                )
            except TimeoutError:
                c["agi_timeouts"] += 1
                if _often(c["agi_timeouts"]):
                    log.warning(
                        "FastAGI: a session from %s took over %.0fs (agi.session_timeout): "
                        "closed (%d so far)",
                        _peer(writer),
                        self.settings.session_timeout,
                        c["agi_timeouts"],
                    )
            except Malformed as exc:
                c["agi_malformed"] += 1
                if _often(c["agi_malformed"]):
                    log.warning(
                        "FastAGI: malformed session from %s: %s; closed (%d so far)",
                        _peer(writer),
                        exc,
                        c["agi_malformed"],
                    )
            except (_Closed, ConnectionError):
                pass
            except Exception:  # a bug of ours must cost one session, never the listener
                c["agi_errors"] += 1
                if _often(c["agi_errors"]):
                    log.exception("FastAGI: session from %s failed", _peer(writer))
            finally:
                self.active -= 1
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self.settings.max_line, self.settings.max_header)
        request = await self._request(reader, session)
        c = self.counters
        if request.script == "route":
            c["agi_route"] += 1
            await self._route(request, session, reader, writer)
        elif request.script == "report":
            c["agi_report"] += 1
            await self._report(request, session, reader, writer)
        else:
            c["agi_unknown_script"] += 1
            if _often(c["agi_unknown_script"]):
                log.warning(
                    "FastAGI: unknown script %r from %s (route and report are served)",
                    request.script[:60],
                    _peer(writer),
                )
            await self._command(session, reader, writer, "TG_ERROR", "unknown script")

    async def _request(self, reader: asyncio.StreamReader, session: Session) -> Request:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                c = self.counters
                c["agi_abandoned"] += 1
                if _often(c["agi_abandoned"]):
                    log.warning(
                        "FastAGI: a session closed before its header block ended (%d so far)",
                        c["agi_abandoned"],
                    )
                raise _Closed
            for event in session.receive(data):
                if isinstance(event, Request):
                    return event

    async def _command(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        name: str,
        value: str,
    ) -> None:
        """One SET VARIABLE and its reply; _Closed when the session cannot go on."""
        writer.write(set_variable(name, value))
        await writer.drain()
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise _Closed
            for event in session.receive(data):
                if isinstance(event, Hangup):
                    self.counters["agi_hangups"] += 1
                elif isinstance(event, Reply):
                    if event.code == 200:
                        return
                    c = self.counters
                    c[f"agi_reply_{event.code}"] += 1
                    if _often(c[f"agi_reply_{event.code}"]):
                        log.warning("FastAGI: Asterisk answered SET VARIABLE %s: %s",
                                    name, event.text[:80])
                    raise _Closed

    async def _route(
        self,
        request: Request,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        now = asyncio.get_running_loop().time()
        exten = request.args[0].strip() if request.args else ""
        advice = advise(
            exten, lambda user: self._plan(user, now), self.templates(), self.settings.max_routes
        )
        for name, value in self._commands(advice, now):
            await self._command(session, reader, writer, name, value)
            if session.hung_up:
                return  # the caller is gone: the rest would be for nobody

    def _plan(self, user: str, now: float) -> Plan:
        """The proxy's own plan for ``user``: the same health, capacity, cost and quality."""
        proxy = self.runtime.proxy
        return build_plan(
            user,
            proxy.targets,
            now,
            routing=proxy.routing,
            numbers=proxy.numbers,
            health=proxy.health,
            quality=proxy.quality,
            # Counters of its own: the panic and overflow counts stay the calls'.
            counters=self._plan_counters,
        )

    def _commands(self, advice: Advice, now: float) -> list[tuple[str, str]]:
        c = self.counters
        if not advice.routes:
            c["agi_route_none"] += 1
            return [("TG_ROUTE_COUNT", "0"), ("TG_ROUTE_ERROR", advice.error)]
        plan_id = self.plans.add(advice.routes, now)
        c["agi_plans_evicted"] = self.plans.evicted
        out = [("TG_PLAN_ID", plan_id)]
        out += [(f"TG_ROUTE_{i}", r.dial) for i, r in enumerate(advice.routes, 1)]
        # The count last: a session cut short leaves no count that names missing routes.
        out.append(("TG_ROUTE_COUNT", str(len(advice.routes))))
        return out

    async def _report(
        self,
        request: Request,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        now = asyncio.get_running_loop().time()
        report = check_report(request.args, self.plans, now)
        c = self.counters
        if report.route is None or report.verdict is None:
            c[report.counter] += 1
            if _often(c[report.counter]):
                log.warning("FastAGI report ignored: %s (%d so far)", report.error,
                            c[report.counter])
            await self._command(session, reader, writer, "TG_REPORT", report.error)
            await self._command(session, reader, writer, "TG_FAILOVER", str(int(report.failover)))
            return
        target = report.route.target.name
        health = self.runtime.health
        c[f"agi_outcome:{report.verdict.klass}"] += 1
        if target in health.targets:
            changes = health.outcome_reported(
                target, report.verdict, now, what=f"{report.what} (Asterisk)"
            )
            self.runtime.proxy.apply_health_changes(changes, now)
            self.runtime.pump()
            if self.on_change is not None:
                self.on_change()
        await self._command(session, reader, writer, "TG_REPORT", "ok")
        await self._command(session, reader, writer, "TG_FAILOVER", str(int(report.failover)))


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "?"
