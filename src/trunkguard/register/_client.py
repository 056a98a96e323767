"""Outbound registration of the router to its carriers (RFC 3261 §10), as part of their health.

Sans-IO like the prober: each REGISTER is a client transaction of the proxy
core, timers live in the core's timer queue, and every result goes to the
health engine through a *gate* on the carrier's destinations:

- a 200 (after answering a 401/407 with digest credentials) is REGISTERED,
  refreshed at about half the Expires the registrar granted, and counts as a
  good probe of the carrier;
- a refusal (403, a 5xx, credentials rejected: a second challenge that is not
  ``stale``) gates the carrier out at once, with the status as its reason, and
  is retried with a growing backoff (a Retry-After is a floor);
- ``lost_after`` REGISTER timeouts in a row, or an expiry passed without a
  good refresh, gate it out as "registration lost";
- a stale nonce is answered again at once and is not a failure (a stale one
  again, for the nonce just given, is a refusal).

The carrier comes back through the usual way (hold-down, probes, trial
calls) once registered again. Credentials and digest responses never appear
in a log line, an event or a status.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field

from ..health import HealthEngine, StateChange
from ..proxy import Alarm, Proxy, RegistrationEvent
from ..proxy._call import retry_after
from ..proxy._timers import TimerHandle
from ..routing import Flow, Target, TlsClient
from ..sip import NameAddr, ParseError, Response, make_request
from ..sip._digest import (
    Challenge,
    Credentials,
    DigestClient,
    DigestError,
    response_challenge,
)

log = logging.getLogger("trunkguard.register")

# Registration states, as status and the event log show them.
UNREGISTERED = "UNREGISTERED"  # not tried yet
REGISTERING = "REGISTERING"  # a REGISTER is out, no good answer yet
REGISTERED = "REGISTERED"
FAILED = "FAILED"  # refused or lost: the carrier is out, a retry is scheduled
STOPPED = "STOPPED"  # unregistered at shutdown (or never to be registered again)

NOT_YET = "registration: not registered yet"  # why a carrier waits for its first 200
PAUSED = "registration: this node is not serving (HA); the active one registers"


@dataclass(frozen=True, slots=True)
class RegisterSettings:
    """One carrier's registration, from its ``register:`` config block."""

    credentials: Credentials
    registrar: str  # the REGISTER's Request-URI: sip:host[:port]
    aor: str  # the address of record, in To and From: sip:user@domain
    contact_user: str
    expires: int = 300
    timeout: float = 2.0  # a REGISTER unanswered this long is a timeout
    lost_after: int = 3  # timeouts in a row that lose the registration
    retry_min: float = 1.0
    retry_max: float = 300.0
    # A registrar apart from the carrier's servers; None: REGISTER goes to the carrier's
    # destinations, the next one after a timeout.
    flow: Flow | None = None
    tls: TlsClient | None = None


@dataclass(slots=True)
class _Pending:
    key: str = ""
    timer: TimerHandle | None = None
    expires: int = 0
    authorized: bool = False  # this REGISTER carried credentials
    stale: bool = False  # ...that answered a stale challenge
    done: bool = False


@dataclass(slots=True)
class Registration:
    """The registration of one carrier, and where it stands."""

    carrier: str
    settings: RegisterSettings
    state: str = UNREGISTERED
    detail: str = "not registered yet"
    since: float = 0.0
    granted: float | None = None  # seconds the registrar granted
    expires_at: float | None = None  # when the binding lapses without a refresh
    next_at: float | None = None  # the next REGISTER (refresh or retry)
    timeouts: int = 0  # in a row
    refusals: int = 0  # in a row: the backoff grows with them
    sent: int = 0
    alarmed: bool = False  # the credentials alarm was raised for this episode
    call_id: str = field(default_factory=lambda: f"tgreg-{os.urandom(8).hex()}")
    tag: str = field(default_factory=lambda: os.urandom(6).hex())
    cseq: int = 0
    flow_index: int = 0  # which of the carrier's destinations the next REGISTER goes to
    challenge: Challenge | None = None  # the last challenge, answered in the next REGISTER
    interval: int = 0  # the Expires to ask for (a 423's Min-Expires raises it)
    pending: _Pending | None = None
    timer: TimerHandle | None = None
    digest: DigestClient | None = None

    def view(self, now: float) -> dict[str, object]:
        """What status and the API show: never a credential."""
        out: dict[str, object] = {
            "state": self.state,
            "detail": self.detail,
            "since_s": round(now - self.since, 1),
            "user": self.settings.credentials.user,
            "registrar": self.settings.registrar,
        }
        if self.granted is not None:
            out["expires_s"] = self.granted
        if self.expires_at is not None and self.state == REGISTERED:
            out["expires_in_s"] = round(max(0.0, self.expires_at - now), 1)
        if self.next_at is not None:
            out["next_register_in_s"] = round(max(0.0, self.next_at - now), 1)
        return out


class Registrations:
    """Every carrier's registration, driven through the proxy core's transactions and timers."""

    def __init__(
        self,
        proxy: Proxy,
        health: HealthEngine,
        settings: dict[str, RegisterSettings],
        rng: random.Random | None = None,
    ) -> None:
        self.proxy = proxy
        self.health = health
        self.rng = rng or random.Random()
        self.by_carrier: dict[str, Registration] = {}
        self.paused = False  # an HA node that does not serve: no REGISTER goes out
        for carrier, s in settings.items():
            self.by_carrier[carrier] = self._new(carrier, s)
        self._share_registrars()

    @staticmethod
    def _new(carrier: str, settings: RegisterSettings) -> Registration:
        reg = Registration(carrier, settings)
        reg.interval = settings.expires
        reg.digest = DigestClient(settings.credentials)
        return reg

    # -- life ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        for reg in self.by_carrier.values():
            reg.since = now
            self._hold(reg)
            self._schedule(reg, now + self.rng.uniform(0, 0.2))

    def _hold(self, reg: Registration) -> None:
        """No calls to a carrier before its first registration: it would refuse them."""
        for target in self._targets(reg.carrier):
            if target.name in self.health.targets:
                self.health.hold(target.name, NOT_YET)

    def pause(self, now: float) -> None:
        """This node stops serving (an HA standby, or fenced): no REGISTER until :meth:`resume`.

        Nothing is unregistered: the node that serves registers the same service
        address, and an Expires: 0 from here would take away its binding. Refreshes
        stop (a REGISTER out would be dropped by the gate anyway, and its timeouts
        would gate the carrier here for nothing); the carrier waits for this node's
        own registration before it takes calls from it again.
        """
        self.paused = True
        for reg in self.by_carrier.values():
            if reg.state == STOPPED:
                continue
            self._stop_timers(reg)
            reg.next_at = None
            was = reg.state
            reg.state, reg.detail = UNREGISTERED, "paused: this node is not serving (HA)"
            reg.granted = reg.expires_at = None
            if was != UNREGISTERED:
                reg.since = now
                self._event(reg, now)
            for target in self._targets(reg.carrier):
                if target.name in self.health.targets:
                    self.health.hold(target.name, PAUSED)

    def resume(self, now: float) -> None:
        """This node serves now (it took over): every registration goes out at once.

        The backoff of refusals and timeouts seen before is forgotten: they were the
        standby's, or another node's registrar trouble, not a reason to wait now.
        """
        if not self.paused:
            return
        self.paused = False
        for reg in self.by_carrier.values():
            if reg.state == STOPPED:
                continue
            self._stop_timers(reg)
            reg.refusals = reg.timeouts = 0
            reg.detail = "registering: this node serves now (HA)"
            self._schedule(reg, now)

    def reconfigure(self, settings: dict[str, RegisterSettings], now: float) -> None:
        """A reload: new and changed registrations start over; removed ones are dropped."""
        for carrier in list(self.by_carrier):
            if carrier not in settings:
                self._stop_timers(self.by_carrier.pop(carrier))
                self.health_ungate(carrier, now, "no registration configured")
        for carrier, s in settings.items():
            old = self.by_carrier.get(carrier)
            if old is not None and old.settings == s:
                continue
            if old is not None:
                self._stop_timers(old)
            reg = self._new(carrier, s)
            reg.since = now
            self.by_carrier[carrier] = reg
            if old is None:
                self._hold(reg)
            self._schedule(reg, now)
        self._share_registrars()

    def stop(self, now: float) -> list[str]:
        """Unregister (Expires: 0) what is registered; returns the carriers unregistered."""
        out = []
        for reg in self.by_carrier.values():
            was = reg.state
            self._stop_timers(reg)
            reg.state, reg.detail, reg.since = STOPPED, "unregistering at shutdown", now
            if was == REGISTERED:
                reg.challenge = None
                self._send(reg, now, expires=0)
                out.append(reg.carrier)
        return out

    def pending(self) -> int:
        """REGISTERs still waiting for an answer."""
        return sum(1 for reg in self.by_carrier.values() if reg.pending is not None)

    def _stop_timers(self, reg: Registration) -> None:
        if reg.timer is not None:
            reg.timer.cancel()
            reg.timer = None
        pending = reg.pending
        if pending is not None:
            pending.done = True
            if pending.timer is not None:
                pending.timer.cancel()
            self.proxy.forget_request(pending.key)
            reg.pending = None

    def _schedule(self, reg: Registration, when: float) -> None:
        if reg.timer is not None:
            reg.timer.cancel()
        reg.next_at = when
        reg.timer = self.proxy.timers.schedule(when, lambda now: self._due(reg, now))

    # -- the destinations ----------------------------------------------------------------------
    def _targets(self, carrier: str) -> list[Target]:
        return [t for t in self.proxy.targets if t.carrier == carrier]

    def _flow(self, reg: Registration) -> Flow | None:
        if reg.settings.flow is not None:
            return reg.settings.flow
        # A carrier whose name has not resolved (port 0) has nowhere to register yet.
        targets = [t for t in self._targets(reg.carrier) if t.flow.addr[1]]
        if not targets:
            return None
        return targets[reg.flow_index % len(targets)].flow

    def _share_registrars(self) -> None:
        # Registrars apart from the carriers: the core takes responses from them (only).
        self.proxy.registrars = {
            (s.flow.transport, s.flow.addr): s.tls
            for s in (r.settings for r in self.by_carrier.values())
            if s.flow is not None
        }

    def sync(self, now: float) -> None:
        """The carrier's destinations changed (DNS): new ones share the registration's gate."""
        for reg in self.by_carrier.values():
            if reg.state in (FAILED,) and reg.detail:
                self._gate(reg, reg.detail, now)
            elif reg.granted is None and reg.state != STOPPED:
                self._hold(reg)  # never registered yet: new destinations wait too

    # -- sending -------------------------------------------------------------------------------
    def _due(self, reg: Registration, now: float) -> None:
        reg.timer = None
        reg.next_at = None
        if reg.state == STOPPED or self.paused:
            return  # paused: resume() schedules every registration again
        if reg.state == REGISTERED and reg.expires_at is not None and now >= reg.expires_at:
            self._lost(reg, "registration lost: expired without a refresh", now)
            return
        if reg.pending is not None:
            return
        if reg.state == UNREGISTERED:
            # A FAILED registration stays FAILED while it retries: the carrier is still out,
            # and for that reason (a retry refused again is no news for the event log).
            reg.state = REGISTERING
        reg.challenge = None
        self._send(reg, now, expires=reg.interval)

    def _send(self, reg: Registration, now: float, expires: int) -> None:
        flow = self._flow(reg)
        if flow is None:
            # No destination yet (the name does not resolve): try again later.
            reg.detail = "no destination to send REGISTER to"
            self._schedule(reg, now + self.proxy.settings.timers.t1 * 4)
            return
        s = reg.settings
        reg.cseq += 1
        pending = _Pending(expires=expires)
        reg.pending = pending
        host, port = self.proxy.settings.advertise
        param = "" if flow.transport == "udp" else f";transport={flow.transport}"
        contact = f"<sip:{s.contact_user}@{host}:{port}{param}>"
        extra: list[tuple[str, str]] = [("Contact", contact), ("Expires", str(expires))]
        challenge = reg.challenge
        if challenge is not None and reg.digest is not None:
            try:
                extra.append(reg.digest.authorize(challenge, "REGISTER", s.registrar))
            except DigestError as exc:
                reg.pending = None
                self._refused(reg, f"registration refused: cannot answer the challenge: {exc}", now)
                return
            pending.authorized = True
            pending.stale = challenge.stale
        cseq = reg.cseq
        agent = self.proxy.settings.server_header

        def build(via: str) -> bytes:
            return make_request(
                "REGISTER",
                s.registrar,
                via=via,
                from_=f"<{s.aor}>;tag={reg.tag}",
                to=f"<{s.aor}>",
                call_id=reg.call_id,
                cseq=cseq,
                extra=extra,
                agent=agent,
            )

        owner = _Owner(self, reg, pending)
        deadline = now + s.timeout
        if reg.state == REGISTERED and reg.expires_at is not None:
            # Should the binding lapse first, the registration is lost then, not later.
            deadline = min(deadline, max(now, reg.expires_at))
        pending.timer = self.proxy.timers.schedule(deadline, owner.on_timeout)
        pending.key = self.proxy.send_request(flow, build, owner, now)
        reg.sent += 1
        self.proxy.counters[f"registers_to:{reg.carrier}"] += 1

    # -- results ---------------------------------------------------------------------------------
    def on_response(
        self, reg: Registration, pending: _Pending, response: Response, now: float
    ) -> None:
        status = response.status
        if status < 200:
            return
        self._finish(reg, pending)
        stopping = reg.state == STOPPED
        if 200 <= status < 300:
            if stopping:
                reg.detail = "unregistered"
                self._event(reg, now)
                return
            self._registered(reg, response, pending, now)
            return
        if status in (401, 407):
            self._challenged(reg, pending, response, now)
            return
        if stopping:
            return
        if status == 423:
            minimum = _int(response.get("min-expires"))
            if minimum is not None and reg.interval < minimum <= 86_400:
                # At least doubled: a registrar raising its minimum by one second at a
                # time gets a handful of REGISTERs, not thousands.
                reg.interval = min(86_400, max(minimum, reg.interval * 2))
                log.info("%s: registrar wants Expires >= %d", reg.carrier, minimum)
                self._send(reg, now, expires=reg.interval)
                return
        reason = "".join(c for c in response.reason[:60] if " " <= c < "\x7f").strip()
        self._refused(
            reg,
            f"registration refused: {status}{(' ' + reason) if reason else ''}",
            now,
            retry_after(response),
        )

    def _challenged(
        self, reg: Registration, pending: _Pending, response: Response, now: float
    ) -> None:
        realm = reg.settings.credentials.realm  # several challenges: the one for our realm
        try:
            challenge = response_challenge(response, realm)
        except DigestError as exc:
            self._refused(reg, f"registration refused: {response.status}, {exc}", now)
            return
        if pending.authorized and not challenge.stale:
            # Our credentials were answered with a new challenge: they are wrong.
            self._refused(
                reg, f"registration refused: {response.status} (credentials rejected)", now
            )
            if not reg.alarmed:
                reg.alarmed = True
                self._alarm(
                    reg,
                    f"REGISTER credentials for {reg.settings.credentials} rejected "
                    f"by {reg.settings.registrar}",
                    now,
                )
            return
        if pending.authorized and pending.stale:
            # The fresh nonce it gave was stale at once too: answering every such
            # challenge at once would be a REGISTER loop as fast as the network.
            self._refused(reg, f"registration refused: {response.status} (stale nonce again)", now)
            return
        if pending.authorized:
            self.proxy.counters[f"registers_stale_nonce:{reg.carrier}"] += 1
        reg.challenge = challenge
        self._send(reg, now, expires=pending.expires)

    def _registered(
        self, reg: Registration, response: Response, pending: _Pending, now: float
    ) -> None:
        ours = self.proxy.settings.advertise
        granted = _granted(response, reg.settings.contact_user, ours, pending.expires)
        # A registrar may shorten what we asked for, not lengthen it (RFC 3261 §10.3).
        granted = min(granted, pending.expires) if pending.expires > 0 else granted
        if granted <= 0:
            self._refused(reg, "registration refused: the registrar kept no binding", now)
            return
        old = reg.state
        reg.granted = float(granted)
        reg.expires_at = now + granted
        reg.timeouts = reg.refusals = 0
        reg.alarmed = False
        reg.state = REGISTERED
        reg.detail = f"registered for {granted}s"
        if old != REGISTERED:
            reg.since = now
            self._event(reg, now)
            log.info("%s: registered with %s for %ds", reg.carrier, reg.settings.registrar, granted)
        # Refresh at about half the granted time (RFC 3261 §10.2.4 leaves it to us).
        self._schedule(reg, now + max(1.0, granted / 2))
        self.health_ungate(reg.carrier, now, "registered")

    def on_failure(self, reg: Registration, pending: _Pending, kind: str, now: float) -> None:
        if pending.done:
            return
        self._finish(reg, pending)
        if reg.state == STOPPED:
            return
        reg.timeouts += 1
        reg.flow_index += 1  # the next try goes to the carrier's next destination, if any
        s = reg.settings
        if reg.timeouts >= s.lost_after:
            # The threshold, not the count: each retry that times out again is the same loss.
            self._lost(reg, f"registration lost: {_failures(s.lost_after, kind)}", now)
            return
        if reg.state == REGISTERED and reg.expires_at is not None and now >= reg.expires_at:
            self._lost(reg, "registration lost: expired without a refresh", now)
            return
        if reg.state != FAILED:  # FAILED keeps the reason the carrier is out (see sync)
            reg.detail = f"{_failures(reg.timeouts, kind)} in a row"
        # Try again at once, nearly: the REGISTER just waited a whole timeout (and over UDP
        # was retransmitted meanwhile), so the binding's remaining time is spent on proof.
        self._schedule(reg, now + s.timeout / 4)

    def _finish(self, reg: Registration, pending: _Pending) -> None:
        pending.done = True
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        self.proxy.forget_request(pending.key)
        if reg.pending is pending:
            reg.pending = None

    def _lost(self, reg: Registration, why: str, now: float) -> None:
        reg.refusals += 1
        self._failed(reg, why, now, self._backoff(reg, None, quick=True))

    def _refused(
        self, reg: Registration, why: str, now: float, retry_after: float | None = None
    ) -> None:
        reg.refusals += 1
        reg.timeouts = 0
        self._failed(reg, why, now, self._backoff(reg, retry_after))

    def _backoff(self, reg: Registration, retry_after: float | None, quick: bool = False) -> float:
        s = reg.settings
        base = s.timeout if quick else s.retry_min
        # Jittered, then capped: retry_max is the longest a carrier waits, jitter or not.
        delay = base * 2.0 ** max(0, reg.refusals - 1) * self.rng.uniform(0.9, 1.1)
        delay = min(s.retry_max, delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.retry_max))
        return delay

    def _failed(self, reg: Registration, why: str, now: float, retry_in: float) -> None:
        if reg.state == STOPPED:
            # The unregister at shutdown was refused: nothing to gate, nothing to retry.
            reg.detail = f"not unregistered: {why}"
            self._event(reg, now)
            log.warning("%s: %s", reg.carrier, reg.detail)
            return
        changed = reg.state != FAILED or reg.detail != why
        reg.state, reg.detail = FAILED, why
        reg.expires_at = None
        if changed:
            reg.since = now
            self._event(reg, now)
            log.warning("%s: %s; next REGISTER in %.1fs", reg.carrier, why, retry_in)
        else:
            log.info("%s: still %s; next REGISTER in %.1fs", reg.carrier, why, retry_in)
        self.proxy.counters[f"registration_failures:{reg.carrier}"] += 1
        self._gate(reg, why, now)
        self._schedule(reg, now + retry_in)

    # -- health and events -------------------------------------------------------------------------
    def _gate(self, reg: Registration, why: str, now: float) -> None:
        changes: list[StateChange] = []
        for target in self._targets(reg.carrier):
            if target.name in self.health.targets:
                changes += self.health.gate(target.name, why, now)
        self.proxy.apply_health_changes(changes, now)

    def health_ungate(self, carrier: str, now: float, detail: str) -> None:
        changes: list[StateChange] = []
        for target in self._targets(carrier):
            if target.name in self.health.targets:
                changes += self.health.ungate(target.name, now, detail)
        self.proxy.apply_health_changes(changes, now)

    def _event(self, reg: Registration, now: float) -> None:
        self.proxy.events.append(
            RegistrationEvent(reg.carrier, reg.state, reg.detail, now, reg.granted)
        )

    def _alarm(self, reg: Registration, detail: str, now: float) -> None:
        log.error("ALARM %s: %s", reg.carrier, detail)
        self.proxy.counters[f"alarms:{reg.carrier}"] += 1
        self.proxy.events.append(Alarm(reg.carrier, "credentials", detail, now))


class _Owner:
    """The transaction owner of one REGISTER: routes its outcome to the registration."""

    __slots__ = ("pending", "reg", "regs")

    def __init__(self, regs: Registrations, reg: Registration, pending: _Pending) -> None:
        self.regs = regs
        self.reg = reg
        self.pending = pending

    def on_response(self, response: Response, now: float) -> None:
        if not self.pending.done:
            self.regs.on_response(self.reg, self.pending, response, now)

    def on_failure(self, kind: str, now: float) -> None:
        self.regs.on_failure(self.reg, self.pending, kind, now)

    def on_timeout(self, now: float) -> None:
        self.pending.timer = None
        self.regs.on_failure(self.reg, self.pending, "timeout", now)


def _failures(count: int, kind: str) -> str:
    """``3 REGISTER timeouts``, ``1 REGISTER unreachable``."""
    if kind == "timeout":
        return f"{count} REGISTER timeout{'s' if count != 1 else ''}"
    return f"{count} REGISTER{'s' if count != 1 else ''} {kind}"


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _granted(response: Response, contact_user: str, ours: tuple[str, int], asked: int) -> int:
    """The Expires the registrar granted our binding (RFC 3261 §10.2.4).

    The ``expires`` parameter of our own Contact in the 200 wins, then the
    Expires header, then what we asked for. The 200 lists every binding of the
    address of record (§10.3 step 8), another box's of the same user too: ours
    is the one at our address (``ours``), else, for a registrar that rewrote
    it, the one with our user.
    """
    mine = [c for c in _contacts(response) if c.uri.user == contact_user]
    host, port = ours
    here = [c for c in mine if c.uri.host.lower() == host.lower() and (c.uri.port or 5060) == port]
    for contact in here or mine:
        value = _int(str(contact.params.get("expires") or "") or None)
        if value is not None:
            return value
    header = _int(response.get("expires"))
    return header if header is not None else asked


def _contacts(response: Response) -> list[NameAddr]:
    try:
        return response.contacts
    except ParseError:  # a registrar's malformed Contact: fall back on the Expires header
        return []
