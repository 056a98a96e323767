"""OPTIONS keepalives: one probe per target per interval, faster while it is out.

Sans-IO like the proxy it rides on: probes are ordinary client transactions
of the proxy core, their schedule lives in the core's timer queue, and each
result goes to the health engine. Keepalives use transactions of their own,
so they never touch a call in progress.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from functools import partial

from ..health import HealthEngine, State, StateChange
from ..proxy import Proxy
from ..proxy._timers import TimerHandle
from ..routing import Target
from ..sip import Response, make_request


def _default_dead() -> frozenset[int]:
    return frozenset({408, *range(500, 600)})


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    interval: float = 10.0
    interval_out: float = 2.0  # while the target is DOWN, SUSPECT or PROBING
    timeout: float = 2.0
    dead: frozenset[int] = field(default_factory=_default_dead)  # replies meaning "not alive"


class _Probe:
    """One OPTIONS in flight; reports once, by response, failure or timeout."""

    __slots__ = ("done", "key", "prober", "sent", "target", "timer")

    def __init__(self, prober: Prober, target: Target, sent: float) -> None:
        self.prober = prober
        self.target = target
        self.sent = sent
        self.done = False
        self.key = ""
        self.timer: TimerHandle | None = None

    def on_response(self, response: Response, now: float) -> None:
        if response.status < 200:
            return
        if not self.done:
            self.prober.rtt[self.target.name] = now - self.sent
        alive = response.status not in self.prober.settings.dead
        self._report(alive, f"answered {response.status}", now)

    def on_failure(self, kind: str, now: float) -> None:
        self._report(False, kind, now)

    def on_timeout(self, now: float) -> None:
        self._report(False, "timeouts", now)

    def _report(self, ok: bool, detail: str, now: float) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None  # its callback is our own method: a reference cycle
        self.prober.proxy.forget_request(self.key)
        self.prober.result(self.target, ok, detail, now)


class Prober:
    def __init__(
        self,
        proxy: Proxy,
        health: HealthEngine,
        settings: ProbeSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.proxy = proxy
        self.health = health
        self.settings = settings or ProbeSettings()
        self.rng = rng or random.Random()
        self.sent = 0
        self._cseq = 0
        self._tag = os.urandom(4).hex()
        self._next: dict[str, TimerHandle] = {}
        # Seconds from the last answered OPTIONS to its final response, by target (metrics).
        self.rtt: dict[str, float] = {}
        # An HA node that does not serve (standby, fenced) sends no probes and takes no
        # result: its gate would drop them, and the lost answers are no carrier's fault.
        self.paused = False

    def start(self, now: float) -> None:
        # Spread the first probes over a second so targets are not probed in a burst.
        for target in self.proxy.targets:
            delay = self.rng.uniform(0, min(self.settings.interval, 1.0))
            self._schedule(target, now + delay)

    def add(self, target: Target, now: float) -> None:
        """Probe a target that a reload added (those already probed keep their schedule)."""
        if target.name not in self._next:
            self._schedule(target, now + self.rng.uniform(0, min(self.settings.interval, 1.0)))

    def _schedule(self, target: Target, when: float) -> None:
        old = self._next.get(target.name)
        if old is not None:
            old.cancel()
        self._next[target.name] = self.proxy.timers.schedule(when, partial(self._probe, target))

    def state_changed(self, change: StateChange) -> None:
        """A target just went out (or came back): probe it on its new schedule from now on."""
        target = next((t for t in self.proxy.targets if t.name == change.target), None)
        handle = self._next.get(change.target)
        if target is None or handle is None:
            return
        when = change.at + self._interval(target)
        if when < handle.when:
            self._schedule(target, when)

    def _interval(self, target: Target) -> float:
        state = self.health.state(target.name)
        out = state in (State.DOWN, State.SUSPECT, State.PROBING)
        return self.settings.interval_out if out else self.settings.interval

    def _probe(self, target: Target, now: float) -> None:
        current = next((t for t in self.proxy.targets if t.name == target.name), None)
        if current is None:
            self._next.pop(target.name, None)
            self.rtt.pop(target.name, None)
            return  # removed by a reload
        target = current  # a reload may have moved it
        self._schedule(target, now + self._interval(target))
        if self.paused:
            return
        if self.health.state(target.name) in (State.DRAINED, State.FORCED_DOWN):
            return  # the operator's: probes would not change it
        if not target.flow.addr[1]:
            return  # a carrier name that has not resolved: nowhere to send to
        probe = _Probe(self, target, now)
        self._cseq += 1
        hostport = target.uri.hostport()
        host, port = self.proxy.settings.advertise
        call_id = f"tgprobe-{os.urandom(6).hex()}"
        cseq = self._cseq

        def build(via: str) -> bytes:
            return make_request(
                "OPTIONS",
                f"sip:{hostport}",
                via=via,
                from_=f"<sip:trunkguard@{host}:{port}>;tag={self._tag}",
                to=f"<sip:{hostport}>",
                call_id=call_id,
                cseq=cseq,
                extra=[("Accept", "application/sdp")],
            )

        probe.timer = self.proxy.timers.schedule(now + self.settings.timeout, probe.on_timeout)
        probe.key = self.proxy.send_request(target.flow, build, probe, now)
        self.sent += 1
        self.proxy.counters[f"probes_to:{target.name}"] += 1

    def result(self, target: Target, ok: bool, detail: str, now: float) -> None:
        if self.paused:
            return
        self.proxy.counters[f"probes_{'ok' if ok else 'failed'}:{target.name}"] += 1
        changes = []
        if not ok and detail == "unreachable":
            changes += self.health.unreachable(target.name, now, "OPTIONS port unreachable")
        changes += self.health.probe_result(target.name, ok, now, detail)
        self.proxy.apply_health_changes(changes)
