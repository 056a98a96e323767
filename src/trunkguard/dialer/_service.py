"""The dialer feedback adapter: state changes in, the controller's level changes out.

It subscribes to ``runtime.listeners``; on each state change it works out every
campaign's capacity from the health states and asks the controller. Each change is
logged, counted and kept in the event log as a notice (kind ``dialer``); unless dry
run, it goes to a small outbox (the newest change per campaign: a level not sent yet
is replaced by a newer one, so the outbox is bounded by the campaigns) drained by one
task that calls the dialer. One ``loop.call_at`` is armed for the controller's next
deadline (a change held back by min_interval, a retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence

from .._deadline import Deadline
from ..health import State, StateChange
from ..proxy import CoreEvent
from ..routing import CARRIER, Target
from ..runtime import Runtime
from ._policy import Capacity, DialController, LevelChange, capacity, shown
from ._settings import CampaignSettings, DialerSettings, describe
from ._sinks import DeliveryFailed, Sink, Vicidial, Webhook

log = logging.getLogger("trunkguard.dialer")
_RANK = {State.UP: 3, State.SUSPECT: 2, State.PROBING: 1}  # a carrier: its best target


class DialerService:
    def __init__(self, runtime: Runtime, settings: DialerSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.counters = runtime.proxy.counters
        self.controller = DialController(settings.campaigns)
        self.sinks: list[Sink] = []
        self.outbox: dict[str, LevelChange] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deadline = Deadline(self._tick)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing: dict[str, int] = {}  # sink -> failures in the current burst
        self._members: dict[str, list[tuple[str, float]]] = {}  # campaign -> carriers
        self._carrier_of: dict[str, str] = {}  # target -> its carrier
        self._by_carrier: dict[str, list[str]] = {}  # carrier -> the campaigns it serves
        self.busy = False

    @property
    def router(self) -> str:
        return self.settings.router or socket.gethostname()

    # -- life --------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._make_sinks()
        self._task = self._loop.create_task(self._run(), name="dialer feedback")
        self.runtime.listeners.append(self.feed)
        if self.settings.campaigns:
            log.info("dialer feedback: %s", describe(self.settings))
        self.resync()

    def _make_sinks(self) -> None:
        s = self.settings
        self.sinks = []
        if s.vicidial is not None:
            self.sinks.append(Vicidial(s.vicidial))
        if s.webhook is not None:
            hook = Webhook(s.webhook, self.router)
            hook.wall_offset = self.runtime._wall(0.0)
            self.sinks.append(hook)

    async def reload(self, settings: DialerSettings) -> None:
        """A new ``dialer:`` section; campaigns that stay keep their level."""
        old = self.sinks
        self.settings = settings
        self.controller.reconfigure(settings.campaigns)
        self._make_sinks()
        for sink in old:
            await sink.close()
        self.resync()

    async def stop(self, timeout: float = 3.0) -> None:
        if self.feed in self.runtime.listeners:
            self.runtime.listeners.remove(self.feed)
        self._deadline.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self.outbox or self.busy) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.outbox:
            log.warning("dialer: stopping with %d change(s) unsent", len(self.outbox))
            self.outbox.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sink in self.sinks:
            await sink.close()

    # -- the listener: quick, never raises ----------------------------------------------------
    def feed(self, event: CoreEvent) -> None:
        if not isinstance(event, StateChange) or not self.controller.campaigns:
            return
        carrier = self._carrier_of.get(event.target)
        only = self._by_carrier.get(carrier, ()) if carrier is not None else ()
        if only:  # only the campaigns this carrier counts for
            self._evaluate(event.at, only)

    def resync(self) -> None:
        """After start, a reload or a DNS change: the carriers of each campaign again."""
        try:
            self._members = {c.id: self.members(c) for c in self.settings.campaigns}
        except Exception:
            self.counters["dialer_errors"] += 1
            log.exception("dialer: could not work out the campaigns' carriers")
            return
        self._carrier_of = {
            t.name: t.carrier for t in self.runtime.proxy.targets if t.kind == CARRIER
        }
        self._by_carrier = {}
        for cid, members in self._members.items():
            if not members:
                log.warning("dialer campaign %s: no carrier serves it", cid)
            for name, _ in members:
                self._by_carrier.setdefault(name, []).append(cid)
        if self._loop is not None:
            self._evaluate(self._loop.time())

    def members(self, campaign: CampaignSettings) -> list[tuple[str, float]]:
        """The carriers whose health counts for ``campaign``, each with its weight."""
        config = {c.name: c for c in self.runtime.config.carriers}
        known = [n for n in config if any(t.carrier == n for t in self._carrier_targets())]
        if campaign.carriers:
            names = [n for n in campaign.carriers if n in known]
        elif campaign.prefixes and self.runtime.proxy.routing is not None:
            routing = self.runtime.proxy.routing
            chosen = {ch.name for p in campaign.prefixes for ch in routing.rank(p) if ch.used}
            names = [n for n in known if n in chosen]
        else:
            names = known
        return [(n, float(config[n].max_calls or 1)) for n in names]

    def _carrier_targets(self) -> list[Target]:
        return [t for t in self.runtime.proxy.targets if t.kind == CARRIER]

    def capacities(self, only: Sequence[str] | None = None) -> dict[str, Capacity]:
        """Each campaign's capacity now (or those in ``only``)."""
        targets = self.runtime.health.targets
        best: dict[str, State] = {}
        for name, carrier in self._carrier_of.items():
            h = targets.get(name)
            if h is None:
                continue
            held = best.get(carrier)
            if held is None or _RANK.get(h.state, 0) > _RANK.get(held, 0):
                best[carrier] = h.state
        degraded = self.settings.degraded
        ids = self._members if only is None else only
        return {cid: capacity(self._members.get(cid, []), best, degraded) for cid in ids}

    def _evaluate(self, now: float, only: Sequence[str] | None = None) -> None:
        try:
            for change in self.controller.evaluate(self.capacities(only), now):
                self._publish(change)
        except Exception:
            self.counters["dialer_errors"] += 1
            log.exception("dialer: could not evaluate the campaigns")
        self._arm()

    def _publish(self, change: LevelChange) -> None:
        c = self.controller.campaigns[change.campaign].settings
        if change.retry:
            state = "resend"
        elif change.new >= c.normal:
            state = "restored"
        elif change.old is not None and change.new > change.old:
            state = "raised"
        else:
            state = "lowered"
        self.counters["dialer_changes"] += 1
        wall = self.runtime._wall(change.at)
        if change.dry_run:
            self.counters["dialer_dry_run"] += 1
            log.warning("dialer campaign %s (dry run): %s", change.campaign, change.reason)
            self.runtime.store.record_notice(
                change.campaign, "dialer", f"dry run: {state}", change.reason, wall
            )
            return
        log.warning("dialer campaign %s: %s", change.campaign, change.reason)
        self.runtime.store.record_notice(change.campaign, "dialer", state, change.reason, wall)
        if not self.sinks:
            return
        self.outbox[change.campaign] = change  # a newer level replaces one not sent yet
        self._wake.set()

    # -- the timer -----------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._loop is not None:
            self._deadline.arm(self._loop, self.controller.next_deadline())

    def _tick(self) -> None:
        assert self._loop is not None
        self._evaluate(self._loop.time())

    # -- the worker ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self.outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            campaign = next(iter(self.outbox))
            change = self.outbox.pop(campaign)
            self.busy = True
            try:
                results = await asyncio.gather(
                    *(self._deliver(sink, change) for sink in self.sinks)
                )
                if not all(results):
                    assert self._loop is not None
                    # Unless a newer change is already waiting, send again later.
                    if campaign not in self.outbox:
                        now = self._loop.time()
                        self.controller.failed(campaign, now, self.settings.retry_after)
                        self._arm()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the worker
                self.counters["dialer_errors"] += 1
                log.exception("dialer: unexpected error sending %s", campaign)
            finally:
                self.busy = False

    async def _deliver(self, sink: Sink, change: LevelChange) -> bool:
        before = sink.attempts
        try:
            await sink.send(change)
        except DeliveryFailed as exc:
            self.counters["dialer_failed"] += 1
            self.counters["dialer_retries"] += max(0, sink.attempts - before - 1)
            burst = self._failing.get(sink.name, 0)
            self._failing[sink.name] = burst + 1
            if not burst:  # once per burst: the first failure, then the recovery
                log.warning(
                    "dialer: %s failed on campaign %s (auto_dial_level %s): %s; "
                    "sending again in %gs",
                    sink.what,
                    change.campaign,
                    shown(change.new),
                    exc,
                    self.settings.retry_after,
                )
                self.runtime.store.record_notice(
                    change.campaign,
                    "dialer",
                    "failed",
                    f"{sink.what}: {exc}",
                    self.runtime._wall(asyncio.get_running_loop().time()),
                )
            return False
        self.counters["dialer_retries"] += max(0, sink.attempts - before - 1)
        self.counters["dialer_sent"] += 1
        failures = self._failing.pop(sink.name, 0)
        if failures:
            log.warning("dialer: %s answers again, after %d failed change(s)", sink.what, failures)
        log.info(
            "dialer: %s took campaign %s auto_dial_level %s",
            sink.what,
            change.campaign,
            shown(change.new),
        )
        return True
