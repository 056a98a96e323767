"""The alerts adapter: the runtime's events in, the policy's alerts out to the hooks.

It subscribes to ``runtime.listeners``; for each state change or overload
event it asks the policy, turns what comes out into the hooks' body and hands
it to each hook's queue. One ``loop.call_at`` is kept armed for the policy's
next deadline (a damped target's summary, an alert waiting for the rate
limit). The counters are the router's own (``/api/counters`` shows them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from .._deadline import Deadline
from ..health import State, StateChange
from ..proxy import CoreEvent
from ..proxy._overload import OverloadEvent
from ..routing import CARRIER
from ..runtime import Runtime
from ._hooks import Hook
from ._payload import alert_body, describe_hooks
from ._policy import Alert, AlertPolicy
from ._settings import COMMAND, AlertSettings

log = logging.getLogger("trunkguard.alerts")
_LOUD = frozenset({"critical"})  # the rest: the state change is logged already


class AlertService:
    def __init__(self, runtime: Runtime, settings: AlertSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.counters = runtime.proxy.counters
        self.policy = AlertPolicy(settings.damping, self.counters)
        self.host = socket.gethostname()
        self.hooks: list[Hook] = []
        self._deadline = Deadline(self._tick)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def router(self) -> str:
        return self.settings.router or self.host

    def start(self) -> None:
        """Subscribe to the runtime and start the hooks' workers (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._start_hooks()
        self.runtime.listeners.append(self.feed)
        self._send(self.policy.routes(self.route_states(), self._loop.time()))
        self._arm()

    def _start_hooks(self) -> None:
        self.hooks = [Hook(h, self.counters) for h in self.settings.hooks]
        for hook in self.hooks:
            if hook.settings.type == COMMAND and not os.access(hook.settings.argv[0], os.X_OK):
                log.warning("alert hook %s: not an executable file (yet)", hook.what)
            hook.start()
        if self.hooks:
            log.info("alerts to %s", describe_hooks(self.settings))

    async def reload(self, settings: AlertSettings) -> None:
        """A new ``alerts:`` section: new hooks (the old ones get their queues out first,
        within one stop timeout for all of them) and damping numbers; penalties carry over."""
        old = self.hooks
        self.settings = settings
        self.policy.reconfigure(settings.damping)
        self._start_hooks()
        # Together: one stop timeout in all, not one per hook that hangs.
        await asyncio.gather(*(hook.stop(settings.stop_timeout) for hook in old))
        self._arm()

    async def stop(self) -> None:
        """Unsubscribe, then give each hook up to the stop timeout for what it still has."""
        if self.feed in self.runtime.listeners:
            self.runtime.listeners.remove(self.feed)
        self._deadline.cancel()
        await asyncio.gather(*(h.stop(self.settings.stop_timeout) for h in self.hooks))

    # -- the listener: quick, never raises ----------------------------------------------------
    def feed(self, event: CoreEvent) -> None:
        if not self.hooks or not isinstance(event, StateChange | OverloadEvent):
            return
        try:
            if isinstance(event, StateChange):
                alerts = self.policy.state_change(event)
                if event.target in self.runtime.health.targets:
                    alerts += self.policy.routes(self.route_states(), event.at)
            else:
                alerts = self.policy.overload(event.state, event.detail, event.at)
            self._send(alerts)
            self._arm()
        except Exception:
            self.counters["alerts_errors"] += 1
            log.exception("alerts: could not handle %s", type(event).__name__)

    def resync(self) -> None:
        """After a reload or a DNS change: the set of routes may be another."""
        if self._loop is not None:
            self._send(self.policy.routes(self.route_states(), self._loop.time()))
            self._arm()

    def route_states(self) -> dict[str, State]:
        """Every carrier target's state: what "every route degraded" is about."""
        targets = self.runtime.health.targets
        return {
            t.name: targets[t.name].state
            for t in self.runtime.proxy.targets
            if t.kind == CARRIER and t.name in targets
        }

    def _send(self, alerts: list[Alert]) -> None:
        if not self.hooks:
            return
        for alert in alerts:
            body = alert_body(alert, self.runtime._wall(alert.at), self.router, self.host)
            level = logging.WARNING if body["severity"] in _LOUD else logging.INFO
            log.log(level, "alert: %s", body["text"])
            for hook in self.hooks:
                if alert.kind in hook.settings.events:
                    hook.offer(body)

    def _arm(self) -> None:
        if self._loop is not None:
            self._deadline.arm(self._loop, self.policy.next_deadline())

    def _tick(self) -> None:
        assert self._loop is not None
        try:
            self._send(self.policy.on_timer(self._loop.time()))
        except Exception:
            self.counters["alerts_errors"] += 1
            log.exception("alerts: timer failed")
        self._arm()
