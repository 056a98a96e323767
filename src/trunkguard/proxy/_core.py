"""The stateful proxy, sans-IO: bytes and ``now`` in, what must happen out.

The asyncio adapter (``_server.py``) feeds every datagram or stream frame to
:meth:`Proxy.receive`, reports ICMP/TCP errors and failed sends to
:meth:`Proxy.transport_error`, and after each input does what the core
queued: it sends :attr:`Proxy.outbox`, keeps one timer armed for
:meth:`Proxy.next_deadline`, and hands :meth:`Proxy.take_events` (attempt
records, state changes) to the store and the logs. The core itself never
does I/O.

One request, top to bottom: parse (``sip``), the edge (``_admission``: who
may send, Max-Forwards, loops), one transaction lookup, then its owner: a new
call goes to the call machine (``_call``), a request inside a dialog to the
dialog table (``_dialogs``, with the signed Record-Route), a response to the
client transaction that sent its request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import NamedTuple

from ..health import TIMEOUT, UNREACHABLE, HealthEngine, SilenceEvent, StateChange
from ..routing import (
    CARRIER,
    NumberRules,
    QualityView,
    RoutingTable,
    TlsClient,
    build_plan,
)
from ..sip import (
    ClientInvite,
    ClientNonInvite,
    Deliver,
    Event,
    ParseError,
    Request,
    Response,
    Send,
    ServerInvite,
    ServerNonInvite,
    TimedOut,
    TransportFailed,
    Uri,
    make_cancel,
    make_response,
    parse_message,
)
from ..sip._digest import Challenge, Credentials, DigestClient, DigestError, response_challenge
from ._admission import Admission
from ._call import (
    ANSWERED,
    CANCELLED,
    CLEANED,
    DESTINATION_FINAL,
    FAILED,
    NO_ANSWER,
    REJECTED,
    Branch,
    Call,
)
from ._dialogs import SWEEP_EVERY, Dialog, DialogTable, Hop, RouteSigner
from ._entries import (
    ALLOW,
    BRANCH_PREFIX,
    ClientEntry,
    ServerEntry,
    TxnOwner,
    ack_for,
    derived_branch,
    server_key,
)
from ._finished import (
    ACCEPTED,
    COMPLETED,
    CONFIRMED,
    ClientDone,
    FinishedTable,
    Record,
    ServerDone,
    StrayLeg,
)
from ._keepalive import Probe, Quiet, build_bye, build_options, contact_uri
from ._overload import (
    Load,
    OverloadControl,
    OverloadEvent,
    is_shed_ack,
    quick_invite,
    response_with_oc,
    shed_response,
)
from ._relay import Relay
from ._silence import hold_back_silent
from ._sources import BanEvent, SourceLimits
from ._stray import stray_request
from ._timers import TimerHandle, TimerQueue
from ._types import (
    Addr,
    Alarm,
    AttemptRecord,
    CallRecord,
    Flow,
    Plan,
    ProxySettings,
    RegistrationEvent,
    Target,
)

log = logging.getLogger("trunkguard.proxy")

STALL_GRACE = 2.0  # seconds after a stall during which timeouts are excused
MAX_DEFERRAL = 5.0  # seconds the health engine's silence checks may wait for a stall's end
SHED_FOR = 0.5  # seconds after a stall during which new calls get our own 503
EVICTED_LOG_EVERY = 10_000  # a full table is logged on its first eviction, then once per this many

class ActiveCall(NamedTuple):
    """A call in progress, as ``GET /api/calls`` lists it (times on the core's clock)."""

    call_id: str
    number: str
    source: str
    state: str  # the call table's state: TRYING, PROCEEDING... or ANSWERED
    target: str | None  # where its current attempt (or its answer) is
    attempt: int
    started: float
    answered: float | None


# How an unanswered call ended, for its record.
_CALL_END = {
    REJECTED: "refused",
    DESTINATION_FINAL: "destination final",
    NO_ANSWER: "no answer",
    FAILED: "failed",
    CANCELLED: "cancelled",
}

CoreEvent = (
    AttemptRecord
    | CallRecord
    | StateChange
    | Alarm
    | RegistrationEvent
    | BanEvent
    | OverloadEvent
    | SilenceEvent
)
ORPHAN_MAC_HEX = 12  # hex digits of the MAC in a signed branch (48 bits)
ORPHAN_MEMORY = 10_000  # late 2xx of other nodes' INVITEs remembered, so one BYE each
SOURCE_SWEEP = 5.0  # seconds between sweeps of the per-source table (quiet bans lifted)
# In-dialog requests of a caller that the router answers a carrier's challenge for.
AUTHENTICATED_IN_DIALOG = frozenset({"BYE", "INVITE", "UPDATE", "INFO", "PRACK"})


class Proxy:
    def __init__(self, settings: ProxySettings, targets: Sequence[Target]) -> None:
        self.settings = settings
        self.targets = list(targets)
        self.outbox: list[tuple[Flow, bytes]] = []
        self.events: list[CoreEvent] = []
        self.timers = TimerQueue()
        self.counters: Counter[str] = Counter()
        self.clients: dict[str, ClientEntry] = {}
        self.servers: dict[tuple[object, ...], ServerEntry] = {}
        # Transactions that only absorb retransmissions, as records (see _finished).
        self.finished = FinishedTable(settings.max_finished)
        self._sweep: TimerHandle | None = None
        self._closing: TimerHandle | None = None  # dialogs ended by a BYE (see DialogTable)
        self.health: HealthEngine | None = None
        self.routing: RoutingTable | None = None
        self.numbers: NumberRules | None = None
        self.quality: QualityView | None = None  # demotions per destination group, read-only
        self._health_timer: TimerHandle | None = None
        self._pool_timer: TimerHandle | None = None
        # Until then our own event loop was (just) stalled: answers may have waited in our
        # socket, so timeouts are not the carriers' fault, and new calls are shed.
        self.stalled_until = float("-inf")
        self._deferred_since: float | None = None  # health checks put off since
        self.shedding_until = float("-inf")
        self.draining = False  # shutting down: new calls get 503, the rest finish
        self._own: list[Addr] = []
        self._digests: dict[str, tuple[Credentials, DigestClient]] = {}
        # Registrars that are not targets: their responses are taken, nothing else.
        self.registrars: dict[tuple[str, Addr], TlsClient | None] = {}
        self._alarmed: set[str] = set()  # carriers whose credentials alarm is raised
        self.tag = os.urandom(6).hex()
        # The To tag of the stateless 503s that refuse calls under overload: their ACKs
        # are known by it without a parse.
        self.shed_tag = "s" + os.urandom(6).hex()
        self._shed_ack = f"tag={self.shed_tag}".encode()
        self._shed_extra: tuple[bytes, ...] = ()
        self.overload = OverloadControl(settings.overload)
        self.sources = SourceLimits(settings.sources, self.counters)
        self._quick_admitted = False  # the INVITE being handled passed the overload check
        self._secret = settings.secret or os.urandom(32)
        # Late 2xx already hung up (Call-ID, To tag), oldest first: retransmissions get an ACK.
        self._orphans: dict[tuple[str, str], float] = {}
        self.set_advertise(settings.advertise)
        self.timers.schedule(0.0, self._sweep_dialogs)
        self.timers.schedule(SOURCE_SWEEP, self._sweep_sources)

    def reconfigure(self, settings: ProxySettings, targets: Sequence[Target]) -> None:
        """New settings and targets (a reload). Calls in progress keep the plans they have."""
        self.settings = dataclasses.replace(
            settings, advertise=self.settings.advertise, secret=self._secret
        )
        self.targets = list(targets)
        self.finished.cap = settings.max_finished
        self.dialogs.cap = settings.max_dialogs
        self._new_admission()

    def set_targets(self, targets: Sequence[Target]) -> None:
        """A new list of targets (a carrier's DNS records changed): calls keep their plans."""
        self.targets = list(targets)
        self._new_admission()

    def set_advertise(self, addr: Addr) -> None:
        """The address put in Via and Record-Route (known only after binding port 0)."""
        self.settings = dataclasses.replace(self.settings, advertise=addr)
        host, port = addr
        self._via_host = f"{host}:{port}"
        self._new_admission()
        self.dialogs = DialogTable(
            RouteSigner(self._secret, self._via_host), self.settings.max_dialogs
        )

    def _new_admission(self) -> None:
        self.admission = Admission(self.settings, self.targets)
        self.admission.set_own(self._own)
        self.overload.settings = self.settings.overload
        hosts = frozenset(t.flow.addr[0] for t in self.targets)
        self.sources.reconfigure(self.settings.sources, hosts)
        extra = [f"Retry-After: {self.settings.overload.retry_after}"]
        extra.append("{}: {}".format(*self.warning("overloaded")))
        if self.settings.server_header:
            extra.append(f"Server: {self.settings.server_header}")
        self._shed_extra = tuple(line.encode() for line in extra)

    def set_own_addresses(self, addrs: Sequence[Addr]) -> None:
        """Every address the router listens on: never a next hop, and a Route to it is ours."""
        self._own = list(addrs)
        self.admission.set_own(self._own)

    # -- plumbing ---------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def run_timers(self, now: float) -> None:
        self.timers.run_due(now)

    def take_events(self) -> list[CoreEvent]:
        """What happened since the last call (attempts, state changes), for store and logs."""
        events, self.events = self.events, []
        return events

    def send(self, flow: Flow, data: bytes) -> None:
        self.outbox.append((flow, data))

    def via(self, flow: Flow, branch: str) -> str:
        return f"SIP/2.0/{flow.transport.upper()} {self._via_host};branch={branch};rport"

    def new_branch(self) -> str:
        return BRANCH_PREFIX + os.urandom(8).hex()

    def signed_branch(self) -> str:
        """A branch for an INVITE to a carrier that any node with our secret knows as ours:
        its late 2xx, after a restart or a takeover, is ACKed and BYEd (:meth:`_orphan_2xx`)."""
        nonce = os.urandom(8).hex()
        return BRANCH_PREFIX + nonce + self._branch_mac(nonce)

    def _branch_mac(self, nonce: str) -> str:
        text = b"branch:" + nonce.encode("ascii", "replace")
        return hmac.new(self._secret, text, hashlib.sha256).hexdigest()[:ORPHAN_MAC_HEX]

    def _is_signed_branch(self, branch: str) -> bool:
        body = branch[len(BRANCH_PREFIX) :]
        if not branch.startswith(BRANCH_PREFIX) or len(body) != 16 + ORPHAN_MAC_HEX:
            return False
        return hmac.compare_digest(self._branch_mac(body[:16]), body[16:])

    def warning(self, text: str) -> tuple[str, str]:
        """A Warning header (RFC 3261 §20.43) from this router, named by its address."""
        # The text may quote bytes from a request: keep it one safe quoted-string.
        safe = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "?" for c in text[:200])
        return ("Warning", f'399 {self._via_host} "{safe}"')

    def response(
        self,
        request: Request,
        status: int,
        *,
        to_tag: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """A response of the router's own, with the configured Server header (if any)."""
        return make_response(
            request, status, to_tag=to_tag, extra=extra, agent=self.settings.server_header
        )

    def _retime(self, entry: ClientEntry | ServerEntry) -> None:
        deadline = entry.txn.deadline()
        handle = entry.handle
        if handle is not None and not handle.cancelled and handle.when == deadline:
            return  # no new callback object on the hot path
        entry.handle = self.timers.rearm(handle, deadline, partial(self._on_txn_timer, entry))

    def _on_txn_timer(self, entry: ClientEntry | ServerEntry, now: float) -> None:
        entry.handle = None
        self.drive(entry, entry.txn.handle_timer(now), now)

    def drive(self, entry: ClientEntry | ServerEntry, events: Iterable[Event], now: float) -> None:
        for event in events:
            if isinstance(event, Send):
                self.send(entry.flow, event.data)
            elif isinstance(entry, ClientEntry):
                self._client_event(entry, event, now)
            elif isinstance(event, (TimedOut, TransportFailed)):
                self.counters["server_txn_failed"] += 1
            if not isinstance(event, Send) and entry.txn.state == "TERMINATED":
                self._forget(entry)
        absorbing = entry.txn.absorbing()
        if absorbing is not None:
            self._finish(entry, absorbing, now)
            return
        self._retime(entry)

    # -- finished transactions ---------------------------------------------------------
    def _finish(
        self, entry: ClientEntry | ServerEntry, absorbing: tuple[str, float], now: float
    ) -> None:
        """The transaction only absorbs retransmissions now: a record of that takes its place."""
        live: dict[str, ClientEntry] | dict[tuple[object, ...], ServerEntry]
        live = self.clients if isinstance(entry, ClientEntry) else self.servers
        if live.get(entry.key) is not entry:  # type: ignore[arg-type]
            return  # already replaced by its record (or forgotten)
        timer, expires = absorbing
        record = self._record(entry, now, expires) if expires > now else None
        self._forget(entry)
        if record is not None:
            self._keep(record, timer, now)

    def _record(self, entry: ClientEntry | ServerEntry, now: float, expires: float) -> Record:
        txn = entry.txn
        state = txn.state
        if isinstance(entry, ServerEntry):
            invite = isinstance(txn, ServerInvite)
            server = ServerDone(
                entry.key,
                entry.flow,
                state,
                expires,
                invite=invite,
                call=isinstance(entry.owner, Call),
                data=txn.last_sent if state == COMPLETED else None,
            )
            interval = txn.retransmit_interval if isinstance(txn, ServerInvite) else None
            if interval is not None:
                server.interval = interval
                server.handle = self.timers.schedule(
                    txn.timers["G"], partial(self._on_timer_g, server)
                )
            return server
        record = ClientDone(entry.key, entry.flow, state, expires)
        if not isinstance(txn, ClientInvite):
            return record  # a non-INVITE's responses are all absorbed
        if state == COMPLETED:
            record.ack = txn.ack
            return record
        # ACCEPTED: what the owner did with the first 2xx, it does with each retransmission.
        owner, call = entry.owner, entry.call
        if isinstance(owner, Branch) and call is not None:
            if owner.state == ANSWERED:
                record.upstream = call.source
                number = call.request.cseq.number
                record.cseq = None if owner.cseq == number else number
            elif owner.state == CLEANED:
                via = self.via(owner.flow, derived_branch(owner.id + "ack"))
                agent = self.settings.server_header
                request = call.request
                from_ = request.get("from") or ""
                leg = StrayLeg(from_, request.call_id, owner.uri, via, agent, owner.auth)
                record.stray = leg
        elif isinstance(owner, Relay):
            record.upstream, record.cseq = owner.server.flow, owner.cseq
        return record

    def _keep(self, record: Record, timer: str, now: float) -> None:
        table = self.finished
        evicted = table.evicted
        if table.add(record, timer, now) or self._sweep is None:
            self._sweep = self.timers.rearm(self._sweep, table.next_deadline(), self._on_sweep)
        if table.evicted != evicted:
            before = self.counters["finished_evicted"]
            self.counters["finished_evicted"] += table.evicted - evicted
            if before % EVICTED_LOG_EVERY == 0:
                log.warning(
                    "finished-transaction table full (limits.max_finished %d): the oldest "
                    "evicted, %d so far; their retransmissions would be taken as new",
                    table.cap,
                    self.counters["finished_evicted"],
                )

    def _on_sweep(self, now: float) -> None:
        self._sweep = None
        for record in self.finished.expire(now):
            if isinstance(record, ServerDone):
                if record.invite and record.state == COMPLETED:
                    self.counters["server_txn_failed"] += 1  # Timer H: no ACK came
                record.stop()
        self._sweep = self.timers.rearm(None, self.finished.next_deadline(), self._on_sweep)

    def _on_timer_g(self, record: ServerDone, now: float) -> None:
        """Timer G: the final of a server INVITE again, until the ACK (RFC 3261 §17.2.1)."""
        record.handle = None
        if self.finished.get(record.key) is not record or record.data is None:
            return
        self.send(record.flow, record.data)
        record.interval = min(record.interval * 2, self.settings.timers.t2)
        record.handle = self.timers.schedule(
            now + record.interval, partial(self._on_timer_g, record)
        )

    def _confirm(self, record: ServerDone, now: float) -> None:
        """The ACK of a server INVITE's non-2xx final: Timer I absorbs its retransmissions."""
        self.finished.remove(record)
        key = record.key
        if record.flow.transport != "udp" or not isinstance(key, tuple):
            return  # Timer I is zero over a reliable transport
        confirmed = ServerDone(
            key,
            record.flow,
            CONFIRMED,
            now + self.settings.timers.t4,
            invite=True,
            call=record.call,
        )
        self._keep(confirmed, "I", now)

    def _absorb_response(self, record: ClientDone, response: Response) -> None:
        """A response for a finished client transaction: its ACK again, or its 2xx on."""
        status = response.status
        if record.ack is not None:
            if status >= 300:
                self.send(record.flow, record.ack)
        elif 200 <= status < 300 and record.state == ACCEPTED:
            if record.upstream is not None:
                self.send(record.upstream, response.without_top_via(record.cseq))
            elif record.stray is not None:
                self.counters["stray_2xx"] += 1
                self.send(record.flow, record.stray.ack(response))

    def _forget(self, entry: ClientEntry | ServerEntry) -> None:
        if isinstance(entry, ClientEntry):
            if self.clients.get(entry.key) is entry:
                del self.clients[entry.key]
            entry.call = None
        elif self.servers.get(entry.key) is entry:
            del self.servers[entry.key]
        # The owner (a call, relay or probe) refers back to this entry, and the timer
        # handle's callback does too: break both cycles, so reference counting frees the
        # call at once and the cyclic collector never has to walk it.
        entry.owner = None
        if entry.handle is not None:
            entry.handle.cancel()
            entry.handle = None

    def _client_event(self, entry: ClientEntry, event: Event, now: float) -> None:
        owner = entry.owner
        if owner is None:
            return
        if isinstance(event, Deliver):
            if isinstance(owner, Branch):
                if entry.call is not None:
                    entry.call.on_response(owner, event.response, now)
            else:
                owner.on_response(event.response, now)
        elif isinstance(event, (TimedOut, TransportFailed)):
            kind = UNREACHABLE if isinstance(event, TransportFailed) else "timeout"
            if isinstance(owner, Branch):
                if entry.call is not None:
                    entry.call.on_no_response(owner, kind, now)
            else:
                owner.on_failure(kind, now)

    def send_request(
        self, flow: Flow, build: Callable[[str], bytes], owner: TxnOwner, now: float
    ) -> str:
        """Send a request of our own (an OPTIONS probe) in a client transaction.

        ``build`` gets the Via value to put on top; returns the transaction key,
        which :meth:`forget_request` takes.
        """
        branch = self.new_branch()
        data = build(self.via(flow, branch))
        txn = ClientNonInvite(data, reliable=flow.transport != "udp", timers=self.settings.timers)
        entry = ClientEntry(txn, flow, owner, branch)
        self.clients[branch] = entry
        self.drive(entry, txn.start(now), now)
        return branch

    def forget_request(self, key: str) -> None:
        """Stop a request of our own: no more retransmissions, later responses are strays."""
        entry = self.clients.pop(key, None)
        if entry is not None and entry.handle is not None:
            entry.handle.cancel()
            entry.handle = None

    # -- input ------------------------------------------------------------------------
    def receive(self, data: bytes, source: Flow, now: float) -> None:
        """Handle one datagram or one stream frame from ``source``."""
        self.counters["messages_in"] += 1
        if not self.admission.allowed(source):
            if not (
                data.startswith(b"SIP/2.0 ") and (source.transport, source.addr) in self.registrars
            ):
                self._unknown_source(data, source)
                return
        elif not self.sources.message(source.addr[0], now, data):
            # Banned, or over its message rate: dropped unparsed (the ban is logged once).
            self.counters["source_dropped"] += 1
            if self.sources.events:
                self.events += self.sources.take_events()
            return
        if is_shed_ack(data, self._shed_ack):
            self.counters["shed_acks_absorbed"] += 1
            return
        self._quick_admitted = False
        if data.startswith(b"INVITE "):
            if self.overload.reject > 0.0:
                if self._shed_early(data, source, now):
                    return
            else:
                self.overload.count(source.addr[0])
        try:
            message = parse_message(data, self.settings.limits)
        except ParseError as exc:
            self.counters["parse_errors"] += 1
            self.counters[f"parse_error:{exc.header or 'message'}"] += 1
            partial = exc.partial
            if partial is not None and partial.method != "ACK":
                self._reject(partial, source, exc.status, str(exc))
            elif partial is None or partial.method == "ACK":
                self.counters["parse_errors_unanswerable"] += 1
            return
        try:
            if isinstance(message, Response):
                self._on_response(message, source, now)
            else:
                self._on_request(message, source, now)
        except ParseError as exc:
            # A header the fast path did not validate turned out malformed.
            self.counters["parse_errors"] += 1
            if isinstance(message, Request) and message.method != "ACK":
                self._reject(message, source, exc.status, str(exc))

    def _shed_early(self, data: bytes, source: Flow, now: float) -> bool:
        """Under overload, refuse a new INVITE from its raw lines (no parse, no transaction).

        Only one that is new: not inside a dialog (a To tag) and not a retransmission
        of a call already admitted (its transaction or its record exists). One drawn to
        be refused that the cheap look cannot read goes the full way, and is drawn again
        there once it is known to be a new call.
        """
        if not self.overload.refuse_next(source.addr[0]):
            self._quick_admitted = True  # admitted: the full path, without a second draw
            return False
        quick = quick_invite(data)
        if quick is None or quick.to_tag or quick.key in self.servers:
            return False
        if self.finished.get(quick.key) is not None:
            return False  # answered already: its record absorbs the retransmission
        self.counters["calls_shed"] += 1
        self.counters["calls_shed_overload"] += 1
        if self.settings.overload.policy == "drop":
            return True
        oc = self.overload.oc_params(now) if self.settings.overload.oc and quick.oc else ""
        self.send(source, shed_response(quick, self.shed_tag, self._shed_extra, oc))
        return True

    def note_load(self, load: Load, now: float) -> None:
        """A sample of the router's own load from the adapter (see ``_overload``)."""
        control = self.overload
        change = control.sample(load, now)
        if load.drops:
            self.counters["kernel_drops"] += load.drops  # the sample has those since the last
        if control.reject > 0.0 and control.signal:
            # Answers wait in our queue: timeouts now are not the carriers' fault. Only while
            # a signal says so, not while the refused share winds down.
            self.stalled_until = max(self.stalled_until, now + STALL_GRACE)
        if change == "start":
            self.counters["overload_episodes"] += 1
            self.events.append(OverloadEvent("overloaded", control.why, now))
        elif change == "end":
            shed = self.counters["calls_shed_overload"]
            detail = f"load back to normal; {shed} calls refused so far"
            self.events.append(OverloadEvent("recovered", detail, now))

    def _sweep_sources(self, now: float) -> None:
        self.sources.sweep(now)
        if self.sources.events:
            self.events += self.sources.take_events()
        self.timers.schedule(now + SOURCE_SWEEP, self._sweep_sources)

    def _unknown_source(self, data: bytes, source: Flow) -> None:
        """A source that is neither a target nor in ``allow``: nothing, or a bare 403."""
        self.counters["forbidden_source"] += 1
        if self.settings.reject != "403":
            return
        try:
            message = parse_message(data, self.settings.limits)
        except ParseError:
            return
        if isinstance(message, Request) and message.method != "ACK" and message.raw_lines("via"):
            self.send(source, self.response(message, 403, to_tag=self.tag))

    def transport_error(self, flow: Flow, now: float, why: str | None = None) -> None:
        """ICMP unreachable, TCP refused/reset, a TLS handshake that failed, or a failed send.

        Fails its pending requests; for a call, the branch fails over. Ringing
        branches too (PROCEEDING): a carrier whose port is closed will never
        answer the calls it was ringing, and they can still complete through
        the next carrier. ``why`` (a TLS failure, say) is the reason the target
        is out with; without one, the request that found the closed port names it.
        """
        self.counters["transport_errors"] += 1
        target = self.admission.peer(flow)
        # A target whose port is closed is out at once, whichever message found it: a BYE
        # of a call it was carrying too, not only an INVITE or a keepalive (which trip it
        # with their own reason, unless ``why`` already did).
        if why is not None:
            self._unreachable(target, why, now)
        for entry in [e for e in self.clients.values() if e.flow == flow]:
            if entry.txn.state in ("CALLING", "TRYING", "PROCEEDING"):
                self.drive(entry, entry.txn.transport_error(now), now)
        if why is None:
            self._unreachable(target, "port unreachable", now)

    def _unreachable(self, target: Target | None, why: str, now: float) -> None:
        if target is not None and self.health is not None:
            self.apply_health_changes(self.health.unreachable(target.name, now, why), now)

    def _reject(self, request: Request, source: Flow, status: int, why: str) -> None:
        self.counters[f"rejected_{status}"] += 1
        extra = [self.warning(why)] if why else []
        try:
            data = self.response(request, status, to_tag=self.tag, extra=extra)
        except ParseError:
            return
        if request.raw_lines("via"):
            self.send(source, data)

    def _on_request(self, request: Request, source: Flow, now: float) -> None:
        try:
            request.check()
        except ParseError as exc:
            self.counters["bad_requests"] += 1
            if request.method != "ACK":
                self._reject(request, source, exc.status, str(exc))
            return
        method = request.method
        if method == "ACK":
            self._on_ack(request, now)
            return
        key = server_key(request, method)
        entry = self.servers.get(key)
        if entry is not None:
            self.counters["retransmissions_in"] += 1
            self.drive(entry, entry.txn.receive_request(now), now)
            return
        record = self.finished.get(key)
        if isinstance(record, ServerDone):
            # Its final went: COMPLETED sends it again, ACCEPTED and CONFIRMED absorb.
            self.counters["retransmissions_in"] += 1
            if record.state == COMPLETED and record.data is not None:
                self.send(record.flow, record.data)
            return
        if method == "CANCEL":
            self._on_cancel(request, source, key, now)
            return
        if request.to.tag is not None:
            self._in_dialog(request, source, key, now)
            return
        ruri = request.request_uri
        if not ruri.is_sip:
            self._reject(request, source, 416, f"cannot route scheme {ruri.scheme}")
            return
        if request.has("proxy-require"):
            self.counters["rejected_420"] += 1
            extra = [("Unsupported", ", ".join(request.values("proxy-require")))]
            self.send(source, self.response(request, 420, to_tag=self.tag, extra=extra))
            return
        if method == "OPTIONS":
            # Out-of-dialog OPTIONS are for us: a PBX's qualify of its trunk to trunkguard.
            self.counters["options_answered"] += 1
            extra = [("Allow", ALLOW), ("Accept", "application/sdp")]
            self.send(source, self.response(request, 200, to_tag=self.tag, extra=extra))
            return
        if method != "INVITE":
            self.counters["rejected_405"] += 1
            extra = [("Allow", ALLOW)]
            self.send(source, self.response(request, 405, to_tag=self.tag, extra=extra))
            return
        self._new_call(request, source, key, now)

    def max_forwards_or_reject(self, request: Request, source: Flow) -> int | None:
        mf = self.admission.next_max_forwards(request)
        if mf is None:
            self._reject(request, source, 483, "")
        return mf

    def is_us(self, uri: Uri) -> bool:
        return self.admission.is_us(uri)

    def _top_route_is_us(self, request: Request) -> bool:
        """Is the first Route ours? Then it is consumed as the request goes on (loose routing)."""
        routes = request.routes
        return bool(routes) and self.is_us(routes[0].uri)

    # -- new calls --------------------------------------------------------------------------
    def _new_call(
        self, request: Request, source: Flow, key: tuple[object, ...], now: float
    ) -> None:
        try:
            _ = request.routes  # read when the INVITE goes out: a bad one is refused now
        except ParseError as exc:
            self.counters["bad_requests"] += 1
            self._reject(request, source, exc.status, str(exc))
            return
        if self.admission.looped(request, self._via_host):
            self._reject(request, source, 482, "")
            return
        if self.max_forwards_or_reject(request, source) is None:
            return
        if self.draining or now < self.shedding_until:
            # Overloaded or shutting down: a quick 503 of our own (the dialer retries,
            # elsewhere or shortly) beats a call that times out.
            why = "shutting down" if self.draining else "overloaded"
            self.counters["calls_shed_draining" if self.draining else "calls_shed_stalled"] += 1
            self._shed(request, source, why)
            return
        overload = self.overload
        if overload.reject and not self._quick_admitted and overload.refuse_next(source.addr[0]):
            self.counters["calls_shed_overload"] += 1
            self._shed(request, source, "overloaded")
            return
        host = source.addr[0]
        over = self.sources.new_call(host, now)
        if over is not None:
            self.counters["calls_limited"] += 1
            if self.sources.events:
                self.events += self.sources.take_events()
            if not self.sources.banned(host):  # a banned source gets nothing from now on
                self._shed(request, source, over)
            return
        if self._table_full():
            self.counters["calls_shed_table_full"] += 1
            extra = [("Retry-After", "1"), self.warning("overloaded")]
            self.send(source, self.response(request, 503, to_tag=self.tag, extra=extra))
            return
        self.counters["calls"] += 1
        self.sources.call_started(host, now)
        entry = self.server_entry(request, source, key, ServerInvite)
        trying = make_response(request, 100)
        if self.settings.overload.oc and "oc" in request.top_via.params:
            trying = response_with_oc(trying, self.overload.oc_params(now))
        self.respond(entry, 100, trying, now)
        call = Call(self, request, source, entry, self.plan(request, now, source), now)
        entry.owner = call
        call.start(now)

    def _shed(self, request: Request, source: Flow, why: str) -> None:
        """A quick 503 of our own: the dialer retries, elsewhere or shortly."""
        self.counters["calls_shed"] += 1
        if why == "overloaded" and self.settings.overload.policy == "drop":
            return
        retry = str(self.settings.overload.retry_after)
        extra = [("Retry-After", retry), self.warning(why)]
        data = self.response(request, 503, to_tag=self.tag, extra=extra)
        if self.settings.overload.oc and "oc" in request.top_via.params:
            data = response_with_oc(data, self.overload.oc_params(self.overload.since or 0.0))
        self.send(source, data)

    def call_over(self, call: Call, now: float) -> None:
        """A call reached its final state. Unanswered, it no longer counts for its source,
        and its record goes out; answered, its dialog counts (and keeps the record) until
        it ends (:meth:`_dialog_over`)."""
        request = call.request
        plan = call.plan
        record = CallRecord(
            call_id=request.call_id,
            number=plan.number or request.request_uri.user or "",
            source=call.source.addr[0],
            plan=tuple(t.name for t in plan.targets),
            explain=plan.explain,  # written out only if read (routing.Explain)
            attempts=tuple(call.history),
            status=call.final,
            started=call.started,
            answered=now if call.state == ANSWERED else None,
            ended=now,
            end=_CALL_END.get(call.state, "failed"),
            # Each entry is "name: why" (a target's name has no ": " in it).
            overflow=tuple(full.partition(": ")[0] for full in plan.overflow),
        )
        if call.state != ANSWERED:
            self.sources.call_ended(call.source.addr[0])
            self.events.append(record)
            return
        dialog = self.dialogs.table.get(request.call_id)
        if dialog is not None and dialog.record is None:
            dialog.record = record
        else:  # no dialog to wait for (evicted as it opened): the call is over for us
            self.events.append(dataclasses.replace(record, end="untracked"))

    def _dialog_over(self, dialog: Dialog, now: float, how: str) -> None:
        """An answered call ended (BYE, a dead side, too old): its capacity is free again,
        and its record goes out, ``how`` saying why it ended."""
        if self.health is not None:
            self.health.call_ended(dialog.target)
        self.sources.call_ended(dialog.caller.addr[0])
        record = dialog.record
        if record is not None:
            dialog.record = None
            self.events.append(dataclasses.replace(record, ended=now, end=how))

    def _table_full(self) -> bool:
        """As many live transactions as ``max_transactions``: nothing new is taken on."""
        full = len(self.clients) + len(self.servers) >= self.settings.max_transactions
        if full and self.counters["table_full"] % EVICTED_LOG_EVERY == 0:
            log.warning(
                "transaction table full (limits.max_transactions %d): new calls get 503",
                self.settings.max_transactions,
            )
        self.counters["table_full"] += full
        return full

    def plan(self, request: Request, now: float, source: Flow | None = None) -> Plan:
        """The ordered targets for a new call, each with the reason (``routing.build_plan``)."""
        peer = self.admission.peer(source) if source is not None else None
        plan = build_plan(
            request.request_uri.user or "",
            self.targets,
            now,
            routing=self.routing,
            numbers=self.numbers,
            health=self.health,
            counters=self.counters,
            inbound_from=peer if peer is not None and peer.kind == CARRIER else None,
            quality=self.quality,
        )
        if self.health is None:
            return plan
        return hold_back_silent(plan, self.health, now, self.counters)

    def admits(self, target: Target, now: float) -> bool:
        """May a call be sent to ``target`` right now (for a failover, later than its plan)?"""
        health = self.health
        if health is None:
            return True
        return health.admits(target.name) and health.overflow(target.name, now) is None

    def server_entry(
        self,
        request: Request,
        source: Flow,
        key: tuple[object, ...],
        kind: type[ServerInvite] | type[ServerNonInvite],
    ) -> ServerEntry:
        txn = kind(request, reliable=source.transport != "udp", timers=self.settings.timers)
        entry = ServerEntry(txn, source, key)
        self.servers[key] = entry
        return entry

    def respond(self, entry: ServerEntry, status: int, data: bytes, now: float) -> None:
        txn = entry.txn
        if txn.state == "TERMINATED" or (status >= 200 and txn.state in ("COMPLETED", "CONFIRMED")):
            # Too late for the transaction: a 2xx still goes up statelessly (RFC 3261 §16.7).
            if 200 <= status < 300:
                self.send(entry.flow, data)
            return
        self.drive(entry, txn.respond(status, data, now), now)

    def start_branch(
        self,
        call: Call,
        target: Target,
        attempt: int,
        now: float,
        resent: tuple[Branch, tuple[str, str]] | None = None,
    ) -> Branch:
        """Send the call's INVITE to ``target`` on a new branch.

        ``resent``: the branch that was challenged and the credentials header
        to add: the same attempt goes on with CSeq + 1 (RFC 3261 §22.2).
        """
        request = call.request
        branch_id = self.signed_branch()
        flow = target.flow
        via = self.via(flow, branch_id)
        user = call.plan.number or request.request_uri.user
        host = target.uri.hostport()
        uri = f"sip:{user}@{host}" if user else f"sip:{host}"
        if flow.transport != "udp":
            uri += f";transport={flow.transport}"
        branch = Branch(target, attempt, branch_id, uri, via, now)
        number = request.cseq.number
        extra: list[tuple[str, str]] = []
        if resent is not None:
            old, header = resent
            branch.cseq = old.cseq + 1
            branch.auth = header
            branch.started, branch.first_response = old.started, old.first_response
            extra.append(header)
        else:
            branch.cseq = number
        pop = self._top_route_is_us(request)
        mf = request.max_forwards
        # The dialog's peers, signed: a BYE after a restart still finds its way.
        record_route = self.dialogs.signer.record_route(
            request.call_id, request.from_.tag or "", call.source, flow, branch.cseq - number
        )
        data = request.forwarded(
            via=via,
            uri=uri,
            max_forwards=69 if mf is None else mf - 1,
            pop_route=pop,
            record_route=record_route,
            cseq=None if branch.cseq == number else branch.cseq,
            extra=extra,
        )
        branch.routes = [v for v in request.values("route")][1 if pop else 0 :]
        txn = ClientInvite(
            data,
            partial(
                ack_for,
                request,
                branch.uri,
                branch.via,
                branch.routes,
                cseq=branch.cseq,
                extra=extra,
            ),
            reliable=flow.transport != "udp",
            timers=self.settings.timers,
        )
        branch.txn = txn
        entry = ClientEntry(txn, flow, branch, branch_id, call=call)
        self.clients[branch_id] = entry
        timeout = self.settings.invite_timeout
        if self.health is not None:
            if resent is None:
                branch.health_id = self.health.attempt_started(target.name, now)
            else:
                branch.health_id = resent[0].health_id  # one attempt, one capacity slot
            # The adaptive timer is there to reach the next route sooner. With no route
            # left for this call, giving up early gains nothing (and under load, answers
            # that queue past it would fail calls that were about to be answered).
            if not call.last_attempt():
                timeout = min(timeout, self.health.response_timeout(target.name))
            self._retime_health()
        branch.timer = self.timers.schedule(now + timeout, partial(call.on_invite_timeout, branch))
        self.counters[f"invites_to:{target.name}"] += 1
        self.drive(entry, txn.start(now), now)
        return branch

    # -- digest authentication toward targets ------------------------------------------------
    def _digest(self, target: Target) -> DigestClient | None:
        credentials = target.auth
        if credentials is None:
            return None
        known = self._digests.get(target.carrier)
        if known is None or known[0] != credentials:  # new, or changed by a reload
            if known is not None:
                self.clear_alarm(target.carrier)  # the alarm was about the old ones
            known = self._digests[target.carrier] = (credentials, DigestClient(credentials))
        return known[1]

    def answerable_challenge(
        self, branch: Branch, response: Response, now: float
    ) -> Challenge | None:
        """The challenge of a 401/407 on ``branch``, if we answer it; else None (a trunk fault).

        Not answered: one that cannot be parsed, and a second challenge in a row
        (not ``stale``) after our credentials: they are wrong. Both raise a
        credentials alarm once for the carrier, not once per call. A stale
        challenge is answered once; stale again is a trunk fault (no alarm).
        """
        status = response.status
        target = branch.target
        realm = target.auth.realm if target.auth is not None else None  # ours, among several
        try:
            challenge = response_challenge(response, realm)
        except DigestError as exc:
            self.counters[f"auth_failures:{target.carrier}"] += 1
            self.alarm(
                target.carrier, f"INVITE challenged with {status} we cannot answer: {exc}", now
            )
            return None
        if branch.auth is not None and not challenge.stale:
            self.counters[f"auth_failures:{target.carrier}"] += 1
            self.alarm(
                target.carrier,
                f"credentials for {target.auth} rejected with {status} on INVITE",
                now,
            )
            return None
        if branch.auth is not None and branch.auth_stale:
            # Stale again, for the nonce it has just given: answering each such challenge
            # would send INVITEs as fast as the carrier answers them, for the whole budget.
            self.counters[f"auth_failures:{target.carrier}"] += 1
            return None
        if branch.auth is not None:
            self.counters[f"auth_stale_nonce:{target.carrier}"] += 1
        return challenge

    def resend_branch(
        self, call: Call, old: Branch, challenge: Challenge, now: float
    ) -> Branch | None:
        """The challenged INVITE again, with credentials; None when they cannot be made."""
        client = self._digest(old.target)
        if client is None:
            return None
        try:
            header = client.authorize(challenge, "INVITE", old.uri)
        except DigestError as exc:
            self.counters[f"auth_failures:{old.target.carrier}"] += 1
            self.alarm(old.target.carrier, f"cannot answer the INVITE's challenge: {exc}", now)
            return None
        self.counters["auth_challenges_answered"] += 1
        branch = self.start_branch(call, old.target, old.attempt, now, resent=(old, header))
        branch.auth_stale = challenge.stale
        return branch

    def alarm(self, target: str, detail: str, now: float) -> None:
        """A credentials alarm for ``target``: once, until its credentials work again."""
        if target in self._alarmed:
            return
        self._alarmed.add(target)
        self.counters[f"alarms:{target}"] += 1
        log.error("ALARM %s: %s", target, detail)
        self.events.append(Alarm(target, "credentials", detail, now))

    def clear_alarm(self, target: str) -> None:
        self._alarmed.discard(target)

    def abandon_branch(self, branch: Branch, now: float) -> None:
        """Stop retransmitting a branch's INVITE; its transaction still takes late answers."""
        entry = self.clients.get(branch.id)
        if entry is not None and branch.txn is not None:
            self.drive(entry, branch.txn.abandon(now), now)

    def cancel_branch(self, call: Call, branch: Branch, now: float) -> None:
        """CANCEL a branch that sent a provisional, in a transaction of its own."""
        data = make_cancel(
            call.request,
            uri=branch.uri,
            via=branch.via,
            routes=branch.routes,
            cseq=branch.cseq,
            extra=[branch.auth] if branch.auth is not None else (),
        )
        txn = ClientNonInvite(
            data, reliable=branch.flow.transport != "udp", timers=self.settings.timers
        )
        entry = ClientEntry(txn, branch.flow, None, branch.id + "/cancel")
        self.clients[entry.key] = entry
        self.counters["cancels_sent"] += 1
        self.drive(entry, txn.start(now), now)
        # RFC 3261 §9.1: a CANCELled INVITE that never gets its final is given up after
        # 64*T1; its transaction (no timer of its own in PROCEEDING) must not live on.
        self.timers.schedule(
            now + self.settings.timers.timeout, partial(self._give_up_branch, branch.id)
        )

    def _give_up_branch(self, key: str, now: float) -> None:
        del now
        entry = self.clients.get(key)
        if entry is not None and entry.txn.state == "PROCEEDING":
            self.counters["cancelled_branches_given_up"] += 1
            self._forget(entry)

    def ack_stray(self, call: Call, branch: Branch, response: Response) -> None:
        """ACK a 2xx nobody wanted (again for each retransmission of it)."""
        self.counters["stray_2xx"] += 1
        via = self.via(branch.flow, derived_branch(branch.id + "ack"))
        request = call.request
        ack = stray_request(
            "ACK",
            request.get("from") or "",
            request.call_id,
            response,
            branch_uri=branch.uri,
            via=via,
            agent=self.settings.server_header,
            auth=branch.auth,
        )
        self.send(branch.flow, ack)

    def _orphan_2xx(self, response: Response, source: Flow, now: float) -> bool:
        """A 2xx to an INVITE that this process never sent, on a branch signed with our
        secret, from a carrier's address: the INVITE of a node that died (or of this one
        before a restart). Nobody will take the call: ACK it, each time it comes, and hang
        it up with one BYE, as for a stray 2xx of our own (RFC 3261 §13.2.2.4)."""
        if (
            response.cseq.method != "INVITE"
            or not 200 <= response.status < 300
            or not self._is_signed_branch(response.top_via.branch or "")
            or not any(t.flow.addr == source.addr for t in self.targets)
        ):
            return False
        try:
            from_ = response.get("from") or ""
            call_id = response.call_id
            to_tag = response.to.tag or ""
        except ParseError:
            return False
        dialog = self.dialogs.table.get(call_id)
        if dialog is not None and dialog.callee_tag == to_tag:
            return False  # a call of ours, up: never hung up from here
        self.counters["orphan_2xx"] += 1
        leg = (call_id, to_tag)
        via = self.via(source, derived_branch(f"{call_id}/{to_tag}/orphan-ack"))
        uri = f"sip:{source.addr[0]}:{source.addr[1]}"
        ack = stray_request(
            "ACK", from_, call_id, response, branch_uri=uri, via=via,
            agent=self.settings.server_header,
        )
        self.send(source, ack)
        if leg in self._orphans:
            return True
        self._orphans[leg] = now
        while len(self._orphans) > ORPHAN_MEMORY:
            del self._orphans[next(iter(self._orphans))]
        bye_branch = self.new_branch()
        bye = stray_request(
            "BYE", from_, call_id, response, branch_uri=uri, via=self.via(source, bye_branch),
            agent=self.settings.server_header,
        )
        txn = ClientNonInvite(bye, reliable=source.transport != "udp", timers=self.settings.timers)
        entry = ClientEntry(txn, source, None, bye_branch)
        self.clients[bye_branch] = entry
        self.counters["orphan_byes_sent"] += 1
        log.info("late 2xx for an INVITE this node did not send (call %s): ACK and BYE", call_id)
        self.drive(entry, txn.start(now), now)
        return True

    def bye_stray(self, call: Call, branch: Branch, response: Response, now: float) -> None:
        """BYE a 2xx nobody wanted, so the carrier does not bill a call nobody hears."""
        bye_branch = self.new_branch()
        bye = stray_request(
            "BYE",
            call.request.get("from") or "",
            call.request.call_id,
            response,
            branch_uri=branch.uri,
            via=self.via(branch.flow, bye_branch),
            agent=self.settings.server_header,
        )
        txn = ClientNonInvite(
            bye, reliable=branch.flow.transport != "udp", timers=self.settings.timers
        )
        entry = ClientEntry(txn, branch.flow, None, bye_branch)
        self.clients[bye_branch] = entry
        self.counters["stray_byes_sent"] += 1
        self.drive(entry, txn.start(now), now)

    # -- health -----------------------------------------------------------------------------
    def record_attempt(self, branch: Branch, record: AttemptRecord) -> None:
        self.counters[f"attempts:{record.kind}"] += 1
        if branch.auth is not None and record.status is not None and record.status < 300:
            self.clear_alarm(branch.target.carrier)  # its credentials work
        self.events.append(record)
        health = self.health
        if health is None:
            return
        now = record.ended
        changes: list[StateChange] = []
        verdict = record.verdict
        if record.kind == TIMEOUT and now <= self.stalled_until:
            # The answer may be sitting in our own socket: not the carrier's fault.
            self.counters["timeouts_excused"] += 1
            verdict = None
        if record.kind == UNREACHABLE:
            changes += health.unreachable(record.target, now, "port unreachable")
        what = str(record.status) if record.status is not None else record.kind
        changes += health.attempt_ended(
            record.target,
            branch.health_id,
            verdict,
            now,
            what=what,
            retry_after=record.retry_after,
        )
        self.apply_health_changes(changes, now)

    def branch_answered(self, branch: Branch, now: float) -> None:
        """The first response on a branch: a sample for the target's adaptive timer."""
        if self.health is not None:
            self.apply_health_changes(
                self.health.first_response(branch.target.name, branch.health_id, now), now
            )

    def apply_health_changes(self, changes: list[StateChange], now: float | None = None) -> None:
        for change in changes:
            self.counters[f"state:{change.target}:{change.new}"] += 1
        self.events += changes
        if self.health is not None and self.health.silence_events:
            self.events += self.health.take_silences()
        self._retime_health()
        if now is None and changes:
            now = max(c.at for c in changes)
        if now is not None:
            self._update_pools(now)

    def _retime_health(self) -> None:
        if self.health is None:
            return
        self._health_timer = self.timers.rearm(
            self._health_timer, self.health.next_deadline(), self._on_health_timer
        )

    def _update_pools(self, now: float) -> None:
        """Move each pool's active tier with its members' health; wake at a preempt deadline."""
        if self.routing is None or not self.routing.pools:
            return
        health = self.health
        admits = health.admits if health is not None else (lambda name: True)
        deadlines = []
        for pool in self.routing.pools:
            change = pool.update(admits, now)
            if change is not None:
                self.counters[f"pool_changes:{pool.name}"] += 1
                log.warning("%s", change)
            deadline = pool.next_deadline()
            if deadline is not None:
                deadlines.append(deadline)
        self._pool_timer = self.timers.rearm(
            self._pool_timer, min(deadlines, default=None), self._update_pools
        )

    def note_stall(self, lag: float, now: float) -> None:
        """The event loop ran ``lag`` seconds late (we were overloaded, or paused)."""
        self.counters["loop_stalls"] += 1
        log.warning(
            "event loop stalled %.0f ms: shedding new calls, not blaming carriers", lag * 1e3
        )
        self.stalled_until = max(self.stalled_until, now + STALL_GRACE)
        self.shedding_until = max(self.shedding_until, now + SHED_FOR)

    def _on_health_timer(self, now: float) -> None:
        self._health_timer = None
        if now <= self.stalled_until and self.health is not None:
            # Silence seen through our own stall proves nothing about the carriers: look
            # again once the backlog is through, but not later than MAX_DEFERRAL after the
            # first look was put off (a long overload must not hide a dead carrier).
            if self._deferred_since is None:
                self._deferred_since = now
            if now - self._deferred_since < MAX_DEFERRAL:
                self._health_timer = self.timers.schedule(
                    min(self.stalled_until, self._deferred_since + MAX_DEFERRAL) + 0.001,
                    self._on_health_timer,
                )
                return
        self._deferred_since = None
        if self.health is not None:
            self.apply_health_changes(self.health.tick(now), now)

    # -- CANCEL, ACK, dialogs ----------------------------------------------------------------
    def _on_cancel(
        self, request: Request, source: Flow, key: tuple[object, ...], now: float
    ) -> None:
        invite_key = (*key[:-1], "INVITE")
        invite = self.servers.get(invite_key)
        call = invite.owner if invite is not None else None
        if not isinstance(call, Call):
            # A call whose final went: the CANCEL is answered, and changes nothing.
            record = self.finished.get(invite_key)
            if not isinstance(record, ServerDone) or not record.call:
                self.counters["cancels_unmatched"] += 1
                self.send(source, self.response(request, 481, to_tag=self.tag))
                return
        entry = self.server_entry(request, source, key, ServerNonInvite)
        self.respond(entry, 200, self.response(request, 200, to_tag=self.tag), now)
        if isinstance(call, Call):
            call.cancel(now)

    def _on_ack(self, request: Request, now: float) -> None:
        """An ACK goes on only for a non-2xx of ours (absorbed) or a dialog of ours."""
        record = self.finished.get(server_key(request, "INVITE"))
        if isinstance(record, ServerDone) and record.state in (COMPLETED, CONFIRMED):
            if record.state == COMPLETED:
                self._confirm(record, now)
            return  # CONFIRMED: a retransmitted ACK, absorbed
        if request.to.tag is None:
            self.counters["acks_absorbed"] += 1
            return
        hop = self._hop(request)
        mf = self.admission.next_max_forwards(request)
        if hop is None or mf is None:
            self.counters["acks_absorbed"] += 1
            return
        # ACK for a 2xx: a transaction of its own, forwarded statelessly along the dialog;
        # the same branch for a retransmission.
        branch = derived_branch(request.top_via.branch or request.call_id)
        pop = self._top_route_is_us(request)
        offset = hop.cseq_offset if hop.from_caller else 0
        auth = hop.dialog.auth if hop.from_caller and hop.dialog is not None else None
        data = request.forwarded(
            via=self.via(hop.dest, branch),
            max_forwards=mf,
            pop_route=pop,
            cseq=request.cseq.number + offset if offset else None,
            extra=[auth] if auth is not None else (),  # an ACK repeats the INVITE's (§22.1)
        )
        self.counters["acks_forwarded"] += 1
        self.send(hop.dest, data)

    def _hop(self, request: Request) -> Hop | None:
        """The next hop of an in-dialog request, when the dialog is ours (else counted)."""
        hop, why = self.dialogs.hop(request, self.admission.is_us)
        if hop is None:
            self.counters["dialog_refused"] += 1
            self.counters[f"dialog_refused:{why}"] += 1
            return None
        if self.admission.is_own(hop.dest.addr):
            self.counters["dialog_refused"] += 1
            self.counters["dialog_refused:next hop is the router itself"] += 1
            return None
        return hop

    def _in_dialog(
        self, request: Request, source: Flow, key: tuple[object, ...], now: float
    ) -> None:
        """BYE, re-INVITE, INFO...: relayed statefully along a dialog of ours, else 481."""
        hop = self._hop(request)
        if hop is None:
            self.send(source, self.response(request, 481))
            return
        mf = self.max_forwards_or_reject(request, source)
        if mf is None:
            return
        method = request.method
        if method != "BYE" and self._table_full():
            # A BYE always goes on: it ends a call (and its billing), and frees the table.
            self.counters["in_dialog_shed_table_full"] += 1
            extra = [("Retry-After", "1"), self.warning("overloaded")]
            self.send(source, self.response(request, 503, extra=extra))
            return
        kind = ServerInvite if method == "INVITE" else ServerNonInvite
        server = self.server_entry(request, source, key, kind)
        relay = Relay(server, method, self.respond, self.settings.server_header)
        server.owner = relay
        if method == "INVITE":
            self.respond(server, 100, make_response(request, 100), now)
        offset = hop.cseq_offset if hop.from_caller else 0
        if offset:
            relay.cseq = request.cseq.number  # the caller's number, put back in responses
        if hop.from_caller:
            relay.challenged = partial(self._in_dialog_challenge, hop, request, mf, offset)
        self._relay_out(relay, hop, request, mf, offset, None, now)
        dialog = hop.dialog
        if dialog is not None:
            # The highest CSeq of each side: a BYE of ours must come after it.
            if hop.from_caller:
                dialog.caller_cseq = max(dialog.caller_cseq, request.cseq.number)
                if method == "INVITE":
                    dialog.auth = None  # its ACK repeats this re-INVITE's credentials: none yet
            else:
                dialog.callee_cseq = max(dialog.callee_cseq, request.cseq.number)
        if method == "BYE" and dialog is not None and not dialog.ending:
            # Keep the dialog a little for retransmitted BYEs and their responses.
            how = "bye from caller" if hop.from_caller else "bye from callee"
            self._dialog_over(dialog, now, how)
            self.dialogs.close(dialog, now + self.settings.timers.timeout)
            self._closing = self.timers.rearm(
                self._closing, self.dialogs.next_close(), self._end_dialogs
            )
        self.counters[f"in_dialog:{method}"] += 1

    def _relay_out(
        self,
        relay: Relay,
        hop: Hop,
        request: Request,
        mf: int,
        offset: int,
        auth: tuple[str, str] | None,
        now: float,
    ) -> None:
        """Send an in-dialog request on to ``hop``, in a client transaction of ``relay``'s."""
        method = request.method
        branch = self.new_branch()
        dest = hop.dest
        pop = self._top_route_is_us(request)
        via = self.via(dest, branch)
        cseq = request.cseq.number + offset if offset else None
        extra = [auth] if auth is not None else []
        data = request.forwarded(via=via, max_forwards=mf, pop_route=pop, cseq=cseq, extra=extra)
        reliable = dest.transport != "udp"
        txn: ClientInvite | ClientNonInvite
        if method == "INVITE":
            remaining = request.values("route")[1 if pop else 0 :]
            txn = ClientInvite(
                data,
                partial(ack_for, request, request.uri, via, remaining, cseq=cseq, extra=extra),
                reliable=reliable,
                timers=self.settings.timers,
            )
        else:
            txn = ClientNonInvite(data, reliable=reliable, timers=self.settings.timers)
        entry = ClientEntry(txn, dest, relay, branch)
        relay.client = entry
        self.clients[branch] = entry
        self.drive(entry, txn.start(now), now)

    def _in_dialog_challenge(
        self,
        hop: Hop,
        request: Request,
        mf: int,
        offset: int,
        relay: Relay,
        response: Response,
        now: float,
    ) -> bool:
        """A 401/407 to a caller's in-dialog request (BYE, re-INVITE): resend it with credentials.

        True when it was resent (the challenge goes no further): once per request,
        and once more for a stale nonce. Only for the methods that keep up or end the
        call: our credentials never vouch for a REFER, MESSAGE or SUBSCRIBE a caller
        sends, which could make the carrier place calls on our account.
        """
        if request.method not in AUTHENTICATED_IN_DIALOG:
            return False
        dialog = hop.dialog
        if dialog is not None:
            target = next((t for t in self.targets if t.name == dialog.target), None)
        else:  # known by the signed Record-Route only (after a restart): by its address
            target = self.admission.peer(hop.dest)
        client = self._digest(target) if target is not None else None
        if target is None or client is None:
            return False
        realm = target.auth.realm if target.auth is not None else None
        try:
            challenge: Challenge | None = response_challenge(response, realm)
        except DigestError:
            challenge = None
        stale = challenge is not None and challenge.stale
        if relay.authorized and (not stale or relay.stale):
            self.counters[f"auth_failures:{target.carrier}"] += 1
            if not stale:  # stale again: the nonces are wrong, not the credentials
                self.alarm(
                    target.carrier,
                    f"credentials for {target.auth} rejected with {response.status} "
                    f"on {request.method}",
                    now,
                )
            return False
        if challenge is None:
            return False
        try:
            auth = client.authorize(challenge, request.method, str(request.uri))
        except DigestError:
            return False
        relay.authorized, relay.stale = True, stale
        offset += 1
        if dialog is not None:
            dialog.cseq_offset = max(dialog.cseq_offset, offset)
            if request.method == "INVITE":
                dialog.auth = auth  # the ACK of the 2xx repeats them (RFC 3261 §22.1)
        relay.cseq = request.cseq.number
        relay.challenged = partial(self._in_dialog_challenge, hop, request, mf, offset)
        self.counters["auth_challenges_answered"] += 1
        self._relay_out(relay, hop, request, mf, offset, auth, now)
        return True

    def _end_dialogs(self, now: float) -> None:
        self.dialogs.end_closed(now)
        self._closing = self.timers.rearm(None, self.dialogs.next_close(), self._end_dialogs)

    def open_dialog(self, call: Call, branch: Branch, response: Response, now: float) -> None:
        """A 2xx went to the caller: remember the dialog (and its place on the carrier)."""
        request = call.request
        dialog = Dialog(
            call_id=request.call_id,
            caller_tag=request.from_.tag,
            callee_tag=response.to.tag,
            caller=call.source,
            callee=branch.flow,
            target=branch.target.name,
            created=now,
            caller_contact=request.get("contact") or "",
            callee_contact=response.get("contact") or "",
            caller_from=request.get("from") or "",
            callee_to=response.get("to") or "",
            caller_cseq=request.cseq.number,
            cseq_offset=branch.cseq - request.cseq.number,
            auth=branch.auth,
        )
        replaced = self.dialogs.table.get(dialog.call_id)
        if replaced is not None and not replaced.ending:
            # The same Call-ID answered again: the old one is over.
            self._dialog_over(replaced, now, "replaced")
        for old in self.dialogs.open(dialog):
            if not old.ending:
                self._dialog_over(old, now, "evicted")  # its capacity slot is free again
            self.counters["dialogs_evicted"] += 1
            if self.counters["dialogs_evicted"] % EVICTED_LOG_EVERY == 1:
                log.warning(
                    "dialog table full (limits.max_dialogs %d): oldest dialogs evicted, "
                    "%d so far",
                    self.dialogs.cap,
                    self.counters["dialogs_evicted"],
                )
        interval = self.settings.dialog_keepalive
        if interval is not None:
            self.timers.schedule(now + interval, partial(self._keepalive, dialog.call_id))

    def _keepalive(self, call_id: str, now: float) -> None:
        """OPTIONS inside the dialog to both sides; a side that is gone ends it (see _keepalive)."""
        dialog = self.dialogs.table.get(call_id)
        interval = self.settings.dialog_keepalive
        if dialog is None or dialog.ending or interval is None:
            return
        agent = self.settings.server_header
        for to_caller, flow, contact in (
            (True, dialog.caller, dialog.caller_contact),
            (False, dialog.callee, dialog.callee_contact),
        ):
            if contact_uri(contact):
                probe = Probe(call_id, self._dialog_dead)
                self.send_request(flow, build_options(dialog, to_caller, agent), probe, now)
                self.counters["dialog_keepalives_sent"] += 1
        self.timers.schedule(now + interval, partial(self._keepalive, call_id))

    def _dialog_dead(self, call_id: str, why: str, now: float) -> None:
        """One side of a dialog is gone: BYE both sides, free the capacity, forget it."""
        dialog = self.dialogs.table.get(call_id)
        if dialog is None or dialog.ending:
            return
        dialog.ending = True
        agent = self.settings.server_header
        for to_caller, flow, contact in (
            (True, dialog.caller, dialog.caller_contact),
            (False, dialog.callee, dialog.callee_contact),
        ):
            if contact_uri(contact):
                self.send_request(flow, build_bye(dialog, to_caller, agent), Quiet(), now)
        self._dialog_over(dialog, now, f"dead: {why}")
        self.dialogs.end(call_id)
        self.counters["dialogs_ended_dead"] += 1
        self.counters[f"dialogs_ended_dead:{why}"] += 1

    def _sweep_dialogs(self, now: float) -> None:
        # Dialogs whose BYE never came through us must not pile up, nor hold capacity.
        stale = self.dialogs.expired(now, self.settings.dialog_max_age)
        for dialog in stale:
            if not dialog.ending:
                self._dialog_over(dialog, now, "expired")
        self.counters["dialogs_expired"] += len(stale)
        every = min(SWEEP_EVERY, self.settings.dialog_max_age / 4)
        self.timers.schedule(now + every, self._sweep_dialogs)

    # -- responses ---------------------------------------------------------------------------
    def _on_response(self, response: Response, source: Flow, now: float) -> None:
        try:
            via = response.top_via
            response.cseq  # noqa: B018 - validates CSeq before matching
        except ParseError:
            self.counters["bad_responses"] += 1
            return
        key = via.branch or ""
        method = response.cseq.method
        if method == "CANCEL":
            key += "/cancel"
        entry = self.clients.get(key)
        found = entry if entry is not None else self.finished.get(key)
        if (
            not isinstance(found, (ClientEntry, ClientDone))
            or (found.flow != source and not self.admission.allowed(source))
            or (method != "CANCEL" and _invite_txn(found) != (method == "INVITE"))
        ):
            # Unknown, or from elsewhere: a source that is let in only as a registrar (see
            # receive) gets its own REGISTERs' responses taken, nothing else. Or its
            # branch with another method's CSeq: not the answer to what we sent (§17.1.3).
            if found is None and self._orphan_2xx(response, source, now):
                return
            self.counters["stray_responses"] += 1
            return
        if isinstance(found, ClientDone):
            self._absorb_response(found, response)
            return
        self.drive(found, found.txn.receive(response, now), now)

    # -- shutdown ----------------------------------------------------------------------------
    def drain(self) -> None:
        """Stop taking new calls (they get 503 + Retry-After); calls in progress go on."""
        self.draining = True

    # -- introspection -----------------------------------------------------------------------
    def active(self) -> dict[str, int]:
        return {
            "client_transactions": len(self.clients),
            "server_transactions": len(self.servers),
            "finished_transactions": len(self.finished),
            "dialogs": len(self.dialogs),
        }

    def load_view(self, now: float) -> dict[str, object]:
        """The router's own load and the per-source bans, for the admin API."""
        control, last = self.overload, self.overload.last
        return {
            "overload": {
                "refusing_pct": round(control.reject * 100, 1),
                "why": control.why if control.active else "",
                "for_seconds": None if control.since is None else round(now - control.since, 3),
                "queued_bytes": last.queued,
                "loop_lag_ms": round(last.lag * 1000, 1),
                "busy_pct": round(last.busy * 100, 1),
                "resident_mb": last.memory >> 20,
            },
            "sources": self.sources.snapshot(now),
        }

    def flush_records(self, now: float) -> int:
        """The router stops: hand out the records of answered calls still up (``end``
        "router stopped", ``ended`` now), so that none is lost. Their dialogs go on
        through the signed Record-Route, but this process will not see them end."""
        flushed = 0
        for dialog in self.dialogs.table.values():
            record = dialog.record
            if record is not None and not dialog.ending:
                dialog.record = None
                self.events.append(dataclasses.replace(record, ended=now, end="router stopped"))
                flushed += 1
        return flushed

    def calls_in_progress(self, limit: int = 1000) -> list[ActiveCall]:
        """Calls in setup, then answered calls, oldest first within each; at most ``limit``."""
        out: list[ActiveCall] = []
        for e in self.servers.values():
            call = e.owner
            if not isinstance(call, Call) or not call.unanswered:
                continue
            branch = call.branch
            out.append(
                ActiveCall(
                    call_id=call.request.call_id,
                    number=call.plan.number or call.request.request_uri.user or "",
                    source=call.source.addr[0],
                    state=call.state,
                    target=branch.target.name if branch is not None else None,
                    attempt=call.attempts,
                    started=call.started,
                    answered=None,
                )
            )
            if len(out) >= limit:
                return out
        for dialog in self.dialogs.table.values():
            record = dialog.record
            if dialog.ending or record is None:
                continue
            out.append(
                ActiveCall(
                    call_id=record.call_id,
                    number=record.number,
                    source=record.source,
                    state=ANSWERED,
                    target=dialog.target,
                    attempt=len(record.attempts),
                    started=record.started,
                    answered=record.answered,
                )
            )
            if len(out) >= limit:
                break
        return out

    def open_work(self) -> dict[str, int]:
        """What is still unfinished: calls without a final answer, branches awaiting one."""
        calls = sum(
            1 for e in self.servers.values() if isinstance(e.owner, Call) and e.owner.unanswered
        )
        # An abandoned branch is not waited on: a late answer on it is cleaned up (CANCEL,
        # or ACK + BYE), and Timer B ends its transaction.
        branches = sum(
            1
            for e in self.clients.values()
            if isinstance(e.owner, Branch)
            and e.owner.pending
            and e.txn.state in ("CALLING", "PROCEEDING")
        )
        return {
            "calls_unanswered": calls,
            "branches_pending": branches,
            "dialogs": len(self.dialogs),
        }


def _invite_txn(found: ClientEntry | ClientDone) -> bool:
    """Was this client transaction (or its record) an INVITE's?"""
    if isinstance(found, ClientEntry):
        return isinstance(found.txn, ClientInvite)
    return found.ack is not None or found.upstream is not None or found.stray is not None
