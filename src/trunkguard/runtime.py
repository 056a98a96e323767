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
from pathlib import Path

from .config import RouterConfig
from .health import HealthEngine, State, StateChange
from .prober import Prober
from .proxy import AttemptRecord, Proxy, Target
from .routing import NumberRules, RoutingTable
from .store import EventStore

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
        # Decks may be large: a caller that loaded them already passes them in.
        self.proxy.routing, self.proxy.numbers = routing or config.routing()
        names = [t.name for t in self.proxy.targets]
        self.health = HealthEngine(
            names, config.health_policy(), probes_enabled=config.probe.enabled
        )
        self._set_capacity(config)
        self.proxy.health = self.health
        self.on_attempt: Callable[[AttemptRecord], None] | None = None
        self.store = store if store is not None else EventStore(config.store_path())
        self.prober = (
            Prober(self.proxy, self.health, config.probe_settings())
            if config.probe.enabled
            else None
        )
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
            self.health.set_capacity(carrier.name, carrier.max_calls, carrier.max_cps)
        for pool in config.pools:
            for member in pool.members:
                self.health.set_capacity(member.name, member.max_calls, None)

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
        self.proxy.apply_health_changes([], now)  # arms the engine's first deadline
        self.pump()

    def pump(self) -> None:
        """Take what the proxy core reported (attempts, state changes) to the logs and the store.

        The adapter calls this after each input, and so does every operator
        action here: the core itself never writes to the store.
        """
        for event in self.proxy.take_events():
            if isinstance(event, StateChange):
                self._on_change(event)
            elif self.on_attempt is not None:
                self.on_attempt(event)

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
    ) -> list[str]:
        """Put a new, already validated config and its loaded decks in force.

        ``targets`` are the config's, already resolved (off the event loop);
        without them they are resolved here. Calls in progress continue on the
        plans they have. Target states and hold-downs carry over by name.
        Returns notes on what needs a restart.
        """
        notes = []
        old = self.config
        if (config.listen, config.advertise) != (old.listen, old.advertise):
            notes.append("listen/advertise changes take effect at the next restart")
        if config.store_path() != old.store_path():
            notes.append("store.path changes take effect at the next restart")
        if (config.secret, config.secret_path()) != (old.secret, old.secret_path()):
            notes.append("secret/secret_file changes take effect at the next restart")
        if targets is None:
            targets = config.targets()
        self.proxy.reconfigure(config.proxy_settings(), targets)
        self.proxy.routing, self.proxy.numbers = routing
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
