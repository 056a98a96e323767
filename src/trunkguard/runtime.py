"""The router assembled: proxy core, health engine, prober and event log, from one config.

The health engine runs on the event loop's monotonic clock; the event log
keeps wall-clock times, which still mean something after a restart. This is
the one place that converts between the two.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from .config import RouterConfig, destination_targets
from .dns import Destination, DnsWatcher
from .health import HealthEngine, SilenceEvent, State, StateChange
from .prober import Prober
from .proxy import Alarm, AttemptRecord, CoreEvent, Flow, Proxy, RegistrationEvent, Target
from .proxy._overload import OverloadEvent
from .proxy._sources import BanEvent
from .quality import QualityTracker
from .register import FAILED, RegisterSettings, Registrations
from .routing import NumberRules, RoutingTable
from .stats import TargetStats
from .store import EventStore

if TYPE_CHECKING:
    from .ha._node import HaNode

log = logging.getLogger("trunkguard.health")

SECRET_FILE = "trunkguard-route.key"  # beside the event log, unless the config names one


def record_route_secret(path: Path) -> bytes:
    """The key that signs the router's Record-Route, from ``path``; made there the first time.

    Kept in the state directory so that dialogs survive a restart (and a
    standby with the same file can take them over). Only the owner may read it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text(encoding="ascii").strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) < 16:
            raise ValueError(f"{path}: not a key of at least 16 bytes in hex") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
    log.info("made a new Record-Route key in %s", path)
    return key


_OPERATOR = (State.DRAINED.value, State.FORCED_DOWN.value)


class Runtime:
    def __init__(
        self,
        config: RouterConfig,
        store: EventStore | None = None,
        routing: tuple[RoutingTable | None, NumberRules | None] | None = None,
    ) -> None:
        self.config = config
        settings = config.proxy_settings()
        if not settings.secret:
            settings = dataclasses.replace(settings, secret=self._secret(config))
        self.proxy = Proxy(settings, config.targets())
        self.dns_errors: dict[str, str] = {}  # carrier -> why its name has no destinations
        self.dns_destinations: dict[str, list[Destination]] = {}  # carrier -> its records
        self._stand_ins = self._dns_stand_ins(config, self.proxy.targets)
        self.watcher: DnsWatcher | None = None  # set by the adapter that runs it
        # Decks may be large: a caller that loaded them already passes them in.
        self.proxy.routing, self.proxy.numbers = routing or config.routing()
        names = [t.name for t in self.proxy.targets]
        self.health = HealthEngine(
            names, config.health_policy(), probes_enabled=config.probe.enabled
        )
        self._set_capacity(config)
        self.proxy.health = self.health
        self.on_attempt: Callable[[AttemptRecord], None] | None = None
        # Everything the core hands out, after the logs and the store have had it: metrics,
        # alerts, call records and the dashboard subscribe here. Each must be quick and
        # must not raise; slow work (a database, a hook) goes to a queue of its own.
        self.listeners: list[Callable[[CoreEvent], None]] = []
        self.stats = TargetStats()  # calls/s, ASR, ACD, PDD per target, over 5 minutes
        self.listeners.append(self.stats.feed)
        self.quality: QualityTracker | None = None  # quality.enabled: demotions per group
        self._set_quality(config)
        self.listeners.append(self._quality_feed)
        self.store = store if store is not None else EventStore(config.store_path())
        self.prober = (
            Prober(self.proxy, self.health, config.probe_settings())
            if config.probe.enabled
            else None
        )
        self.registrations = Registrations(self.proxy, self.health, config.register_settings())
        self.ha: HaNode | None = None  # set by the HA node (the ha: section)
        self._clock = 0.0  # monotonic "now" of the last call into us
        self._offset = time.time()  # wall clock minus monotonic clock

    @staticmethod
    def _secret(config: RouterConfig) -> bytes:
        path = config.secret_path() or config.store_path().parent / SECRET_FILE
        try:
            return record_route_secret(path)
        except (OSError, ValueError) as exc:
            # Calls still work; only dialogs cannot outlive this process.
            log.error("no Record-Route key (%s): dialogs will not survive a restart", exc)
            return secrets.token_bytes(32)

    def _set_capacity(self, config: RouterConfig) -> None:
        for carrier in config.carriers:
            names = [t.name for t in self.proxy.targets if t.carrier == carrier.name]
            if names:
                self.health.share_capacity(names)
                self.health.set_capacity(names[0], carrier.max_calls, carrier.max_cps)
        for pool in config.pools:
            for member in pool.members:
                self.health.set_capacity(member.name, member.max_calls, None)

    def _set_quality(self, config: RouterConfig) -> None:
        """Start, keep or stop the quality tracker as ``quality:`` says (samples survive a
        reload that leaves the settings alone)."""
        settings = config.quality_settings()
        if settings is None:
            self.quality = None
        elif self.quality is None or self.quality.settings != settings:
            self.quality = QualityTracker(settings)
        self.proxy.quality = self.quality

    def _quality_feed(self, event: CoreEvent) -> None:
        """A listener: the call records feed the tracker; each demotion is logged and kept."""
        if self.quality is None:
            return
        for change in self.quality.feed(event):
            state = "demoted" if change.demoted else "restored"
            log.warning(
                "carrier %s %s for %s: %s", change.carrier, state, change.group, change.reason
            )
            self.store.record_notice(
                change.carrier,
                "quality",
                state,
                f"for {change.group}: {change.reason}",
                self._wall(change.at),
            )

    def _wall(self, mono: float) -> float:
        return mono + self._offset

    def start(self, now: float) -> None:
        """Restore target states from the event log, then start probing."""
        self._clock = now
        self._offset = time.time() - now
        wall_now = time.time()
        for name, row in self.store.last_states().items():
            if name not in self.health.targets:
                continue
            state = State(row.new)
            if state is State.UP:
                continue
            until = None if row.until is None else now + (row.until - wall_now)
            self.health.load_state(
                name,
                state,
                now,
                reason=row.reason,
                until=until,
                hold_down=row.hold_down or 0.0,
                last_trip=now - (wall_now - row.at) if state is State.DOWN else None,
            )
            h = self.health.targets[name]
            if h.state is state:  # not SUSPECT, which comes back UP
                # In this state since the logged change, not since the restart.
                h.since = now - (wall_now - row.at)
            if state in _OPERATOR:
                h.before_operator = self._before_operator(name)
            log.info("%s restored as %s (%s)", name, state, row.reason)
        if self.prober is not None:
            self.prober.start(now)
        self.registrations.start(now)
        self.proxy.apply_health_changes([], now)  # arms the engine's first deadline
        self.pump()

    def stop(self, now: float) -> list[str]:
        """Clean shutdown: unregister from the carriers (Expires: 0); returns which."""
        done = self.registrations.stop(now)
        self.proxy.flush_records(now)  # answered calls still up: their records, now
        self.pump()
        return done

    def pump(self) -> None:
        """Take what the proxy core reported (attempts, state changes) to the logs and the store.

        The adapter calls this after each input, and so does every operator
        action here: the core itself never writes to the store.
        """
        for event in self.proxy.take_events():
            if isinstance(event, StateChange):
                self._on_change(event)
            elif isinstance(event, RegistrationEvent):
                level = logging.WARNING if event.state == FAILED else logging.INFO
                log.log(level, "%s: registration %s: %s", event.carrier, event.state, event.detail)
                self.store.record_notice(
                    event.carrier, "registration", event.state, event.detail, self._wall(event.at)
                )
            elif isinstance(event, Alarm):
                self.store.record_notice(
                    event.target, "alarm", event.kind, event.detail, self._wall(event.at)
                )
            elif isinstance(event, BanEvent):
                # Once per ban (and once when lifted), never per packet.
                log.warning("source %s %s: %s", event.source, event.state, event.detail)
                self.store.record_notice(
                    event.source, "source", event.state, event.detail, self._wall(event.at)
                )
            elif isinstance(event, OverloadEvent):
                log.warning("router %s: %s", event.state, event.detail)
                self.store.record_notice(
                    "router", "overload", event.state, event.detail, self._wall(event.at)
                )
            elif isinstance(event, SilenceEvent):
                # Once per episode (its start and its end), never per call.
                log.info("%s %s: %s", event.target, event.state, event.detail)
                self.store.record_notice(
                    event.target, "silence", event.state, event.detail, self._wall(event.at)
                )
            elif isinstance(event, AttemptRecord) and self.on_attempt is not None:
                self.on_attempt(event)
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:  # one listener's bug must not stop the others, nor calls
                    log.exception("event listener %r failed on %s", listener, type(event).__name__)

    # -- DNS --------------------------------------------------------------------------------
    def _dns_gate(self, carrier: str, why: str, now: float) -> None:
        self.dns_errors[carrier] = why
        changes = []
        for t in self.proxy.targets:
            if t.carrier == carrier and t.name in self.health.targets:
                changes += self.health.gate(t.name, why, now)
        self.proxy.apply_health_changes(changes, now)

    def dns_changed(
        self, carrier: str, destinations: list[Destination], error: str | None, now: float
    ) -> bool:
        """A carrier's name resolved to new destinations (or to none, with ``error``).

        Each destination is a target of its own; those that stay keep their
        health, new ones start UP (but for the carrier's registration), gone
        ones are forgotten. Returns whether the flows changed (the adapter then
        opens sockets toward the new ones).
        """
        stand_in = self._stand_ins.get(carrier)
        if stand_in is None:
            return False
        old = [t for t in self.proxy.targets if t.carrier == carrier]
        # From the stand-in made with the config: no file is read here, on the loop.
        new = destination_targets(stand_in, destinations)
        if [(t.name, t.flow, t.priority, t.weight) for t in new] == [
            (t.name, t.flow, t.priority, t.weight) for t in old
        ]:
            if not destinations and error:
                self._dns_gate(carrier, f"DNS: {error}", now)
            return False
        targets: list[Target] = []
        placed = False
        for t in self.proxy.targets:
            if t.carrier != carrier:
                targets.append(t)
            elif not placed:
                targets += new
                placed = True
        self.proxy.set_targets(targets)
        names = {t.name for t in new}
        for t in old:
            if t.name not in names:
                # Calls and probes in flight may still report on it: forget it later.
                self.proxy.timers.schedule(
                    now + self._forget_after(), partial(self._forget, t.name)
                )
        for t in new:
            if t.name not in self.health.targets:
                self.health.add_target(t.name)
        self._set_capacity(self.config)
        if self.prober is not None:
            for t in new:
                self.prober.add(t, now)
        if destinations:
            self.dns_destinations[carrier] = list(destinations)
            self.dns_errors.pop(carrier, None)
            log.info(
                "%s: %d destinations from DNS: %s",
                carrier,
                len(new),
                ", ".join(str(t.flow) for t in new),
            )
        else:
            self.dns_destinations.pop(carrier, None)
            self._dns_gate(carrier, f"DNS: {error or 'no destinations'}", now)
        self.registrations.sync(now)
        self.proxy.apply_health_changes([], now)
        self.pump()
        return True

    @staticmethod
    def _dns_stand_ins(config: RouterConfig, targets: list[Target]) -> dict[str, Target]:
        """Each DNS carrier's stand-in target (settings its destinations share), by carrier."""
        names = config.dns_queries()
        out = {}
        for t in targets:
            if t.carrier in names and t.carrier not in out:
                out[t.carrier] = dataclasses.replace(
                    t,
                    name=t.carrier,
                    flow=Flow(t.flow.transport, ("0.0.0.0", 0)),
                    priority=0,
                    weight=0,
                )
        return out

    def _forget_after(self) -> float:
        s = self.proxy.settings
        return s.time_budget + s.ring_timeout + s.timers.timeout + 60.0

    def _forget(self, name: str, now: float) -> None:
        del now
        if all(t.name != name for t in self.proxy.targets):
            self.health.remove_target(name)
            self.stats.forget(name)
            if self.quality is not None:
                self.quality.forget(name)

    def _before_operator(self, name: str) -> State:
        """The health state the operator's drain or force-down interrupted, from the log.

        Restore (or a forced-down period's end) sends a target that was out for its
        health through PROBING: the engine keeps that state in memory only.
        """
        for row in reversed(self.store.events(name, limit=10)):
            if row.old not in _OPERATOR:
                return State(row.old)
        return State.UP

    def _on_change(self, change: StateChange) -> None:
        until = None
        if change.new is State.DOWN and change.hold_down is not None:
            until = self._wall(change.at + change.hold_down)
        elif change.new is State.FORCED_DOWN:
            forced = self.health.targets[change.target].forced_until
            until = None if forced is None else self._wall(forced)
        extra = f" for {change.hold_down:.0f}s" if change.hold_down else ""
        level = logging.WARNING if change.new in (State.DOWN, State.SUSPECT) else logging.INFO
        log.log(
            level, "%s: %s -> %s%s: %s", change.target, change.old, change.new, extra, change.reason
        )
        self.store.record(change, self._wall(change.at), until)
        if self.prober is not None:
            self.prober.state_changed(change)

    def reload(
        self,
        config: RouterConfig,
        routing: tuple[RoutingTable | None, NumberRules | None],
        now: float,
        targets: list[Target] | None = None,
        registrations: dict[str, RegisterSettings] | None = None,
    ) -> list[str]:
        """Put a new, already validated config and its loaded decks in force.

        ``targets`` (with the DNS destinations known now) and ``registrations``
        are the config's, already resolved and read (off the event loop);
        without them that is done here. Either raises ConfigError before
        anything changes. Calls in progress continue on the plans they have.
        Target states and hold-downs carry over by name. Returns notes on what
        needs a restart.
        """
        if targets is None:
            targets = config.targets(self.dns_destinations)
        if registrations is None:
            registrations = config.register_settings()
        dns = config.dns_queries()
        stand_ins = self._dns_stand_ins(
            config, [t for c in config.carriers if c.name in dns for t in config.carrier_targets(c)]
        )
        notes = []
        old = self.config
        if (config.listen, config.advertise) != (old.listen, old.advertise):
            notes.append("listen/advertise changes take effect at the next restart")
        if config.store_path() != old.store_path():
            notes.append("store.path changes take effect at the next restart")
        if (config.secret, config.secret_path()) != (old.secret, old.secret_path()):
            notes.append("secret/secret_file changes take effect at the next restart")
        self.proxy.reconfigure(config.proxy_settings(), targets)
        self.proxy.routing, self.proxy.numbers = routing
        self._set_quality(config)
        self.health.set_policy(config.health_policy())
        for target in targets:
            if target.name not in self.health.targets:
                self.health.add_target(target.name)
        self._set_capacity(config)
        if self.prober is not None:
            self.prober.settings = config.probe_settings()
            for target in targets:
                self.prober.add(target, now)
        self.config = config
        self._stand_ins = stand_ins
        self.registrations.reconfigure(registrations, now)
        if self.watcher is not None:
            queries = config.dns_queries()
            for name in self.watcher.names():
                if name not in queries:
                    self.watcher.remove(name)
            for name, query in queries.items():
                self.watcher.add(name, query)
        self.proxy.apply_health_changes([], now)  # pools' tiers under the new config
        self.pump()
        return notes

    def drain(self, name: str, now: float) -> list[StateChange]:
        changes = self.health.drain(name, now)
        self.proxy.apply_health_changes(changes, now)
        self.pump()
        return changes

    def force_down(self, name: str, seconds: float, now: float, why: str) -> list[StateChange]:
        changes = self.health.force_down(name, now + seconds, now, why)
        self.proxy.apply_health_changes(changes, now)
        self.pump()
        return changes

    def restore(self, name: str, now: float) -> list[StateChange]:
        changes = self.health.restore(name, now)
        self.proxy.apply_health_changes(changes, now)
        self.pump()
        return changes

    def close(self) -> None:
        self.store.close()
