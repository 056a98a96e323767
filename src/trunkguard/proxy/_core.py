"""The stateful proxy, sans-IO: bytes and ``now`` in, (flow, bytes) out.

The asyncio adapter (``_server.py``) feeds every datagram or stream frame to
:meth:`Proxy.receive`, reports ICMP/TCP errors to :meth:`Proxy.transport_error`,
sends what lands in :attr:`Proxy.outbox` and keeps one timer armed for
:meth:`Proxy.next_deadline`. Everything a SIP proxy decides happens here, so it
is tested without sockets.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from ..health import TIMEOUT, UNREACHABLE, HealthEngine, StateChange
from ..routing import NumberRules, RoutingTable
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
    make_request,
    make_response,
    parse_message,
)
from ._call import Branch, Call
from ._dialog import Dialogs
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
from ._plan import build_plan
from ._timers import TimerHandle, TimerQueue
from ._types import Addr, AttemptRecord, Flow, Plan, ProxySettings, Target

log = logging.getLogger("trunkguard.proxy")

STALL_GRACE = 2.0  # seconds after a stall during which timeouts are excused
SHED_FOR = 0.5  # seconds after a stall during which new calls get our own 503


class Proxy:
    def __init__(self, settings: ProxySettings, targets: Sequence[Target]) -> None:
        self.settings = settings
        self.targets = list(targets)
        self.outbox: list[tuple[Flow, bytes]] = []
        self.timers = TimerQueue()
        self.counters: Counter[str] = Counter()
        self.clients: dict[str, ClientEntry] = {}
        self.servers: dict[tuple[object, ...], ServerEntry] = {}
        self.dialogs = Dialogs(self)
        self.on_attempt: Callable[[AttemptRecord], None] | None = None
        self.on_state_change: Callable[[StateChange], None] | None = None
        self.health: HealthEngine | None = None
        self.routing: RoutingTable | None = None
        self.numbers: NumberRules | None = None
        self._health_timer: TimerHandle | None = None
        # Until then our own event loop was (just) stalled: answers may have waited in our
        # socket, so timeouts are not the carriers' fault, and new calls are shed.
        self.stalled_until = float("-inf")
        self.shedding_until = float("-inf")
        self._allowed: dict[str, bool] = {}
        self._carrier_hosts = {t.flow.addr[0] for t in targets}
        self.set_advertise(settings.advertise)
        self.tag = os.urandom(6).hex()
        self.timers.schedule(0.0, self.dialogs.sweep)

    def reconfigure(self, settings: ProxySettings, targets: Sequence[Target]) -> None:
        """New settings and targets (a reload). Calls in progress keep the plans they have."""
        self.settings = dataclasses.replace(settings, advertise=self.settings.advertise)
        self.targets = list(targets)
        self._carrier_hosts = {t.flow.addr[0] for t in targets}
        self._allowed.clear()

    def set_advertise(self, addr: Addr) -> None:
        """The address put in Via and Record-Route (known only after binding port 0)."""
        self.settings = dataclasses.replace(self.settings, advertise=addr)
        host, port = addr
        self._via_host = f"{host}:{port}"
        self.record_route = f"<sip:{host}:{port};lr>"

    # -- plumbing ---------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def run_timers(self, now: float) -> None:
        self.timers.run_due(now)

    def send(self, flow: Flow, data: bytes) -> None:
        self.outbox.append((flow, data))

    def via(self, flow: Flow, branch: str) -> str:
        return f"SIP/2.0/{flow.transport.upper()} {self._via_host};branch={branch};rport"

    def new_branch(self) -> str:
        return BRANCH_PREFIX + os.urandom(8).hex()

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
        self._retime(entry)

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
        try:
            message = parse_message(data, self.settings.limits)
        except ParseError as exc:
            self.counters["parse_errors"] += 1
            self.counters[f"parse_error:{exc.header or 'message'}"] += 1
            partial = exc.partial
            if partial is not None and partial.method != "ACK":
                self._reject(partial, source, exc.status, str(exc))
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

    def transport_error(self, flow: Flow, now: float) -> None:
        """ICMP unreachable or TCP refused/reset toward ``flow``: fail its pending branches.

        Ringing branches too (PROCEEDING): a carrier whose port is closed will
        never answer the calls it was ringing, and they can still complete
        through the next carrier.
        """
        self.counters["transport_errors"] += 1
        for entry in [e for e in self.clients.values() if e.flow == flow]:
            if entry.txn.state in ("CALLING", "TRYING", "PROCEEDING"):
                self.drive(entry, entry.txn.transport_error(now), now)

    def _reject(self, request: Request, source: Flow, status: int, why: str) -> None:
        self.counters[f"rejected_{status}"] += 1
        # The reason quotes bytes from the request: keep it one safe quoted-string.
        text = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "?" for c in why[:200])
        extra = [("Warning", f'399 trunkguard "{text}"')] if why else []
        try:
            data = make_response(request, status, to_tag=self.tag, extra=extra)
        except ParseError:
            return
        if request.raw_lines("via"):
            self.send(source, data)

    def _allowed_source(self, host: str) -> bool:
        cached = self._allowed.get(host)
        if cached is None:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                cached = False
            else:
                cached = host in self._carrier_hosts or any(
                    ip in net for net in self.settings.allow
                )
            if len(self._allowed) < 65_536:
                self._allowed[host] = cached
        return cached

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
            self.dialogs.ack(request, now)
            return
        key = server_key(request, method)
        entry = self.servers.get(key)
        if entry is not None:
            self.counters["retransmissions_in"] += 1
            self.drive(entry, entry.txn.receive_request(now), now)
            return
        if not self._allowed_source(source.addr[0]):
            self.counters["forbidden_source"] += 1
            self._reject(request, source, 403, f"source {source.addr[0]} not allowed")
            return
        if method == "CANCEL":
            self._on_cancel(request, source, key, now)
            return
        if request.to.tag is not None:
            self.dialogs.relay(request, source, key, now)
            return
        ruri = request.request_uri
        if not ruri.is_sip:
            self._reject(request, source, 416, f"cannot route scheme {ruri.scheme}")
            return
        if request.has("proxy-require"):
            self.counters["rejected_420"] += 1
            extra = [("Unsupported", ", ".join(request.values("proxy-require")))]
            self.send(source, make_response(request, 420, to_tag=self.tag, extra=extra))
            return
        if method == "OPTIONS":
            # Out-of-dialog OPTIONS are for us: a PBX's qualify of its trunk to trunkguard.
            self.counters["options_answered"] += 1
            extra = [("Allow", ALLOW), ("Accept", "application/sdp")]
            self.send(source, make_response(request, 200, to_tag=self.tag, extra=extra))
            return
        if method != "INVITE":
            extra = [("Allow", ALLOW)]
            self.counters["rejected_405"] += 1
            self.send(source, make_response(request, 405, to_tag=self.tag, extra=extra))
            return
        self._new_call(request, source, key, now)

    def max_forwards_or_reject(self, request: Request, source: Flow) -> int | None:
        mf = request.max_forwards
        if mf is None:
            return 69
        if mf <= 0:
            self._reject(request, source, 483, "")
            return None
        return mf - 1

    def _looped(self, request: Request) -> bool:
        for via in request.vias:
            branch = via.branch or ""
            if branch.startswith(BRANCH_PREFIX) and via.sent_by == self._via_host:
                return True
        return False

    def is_us(self, uri: Uri) -> bool:
        host, port = self.settings.advertise
        return uri.host == host and (uri.port or 5060) == port

    # -- new calls --------------------------------------------------------------------------
    def _new_call(
        self, request: Request, source: Flow, key: tuple[object, ...], now: float
    ) -> None:
        if self._looped(request):
            self._reject(request, source, 482, "")
            return
        mf = self.max_forwards_or_reject(request, source)
        if mf is None:
            return
        if now < self.shedding_until:
            # Overloaded: a quick 503 of our own (the dialer retries) beats a call that
            # times out, and lets the backlog drain.
            self.counters["calls_shed"] += 1
            self.send(
                source,
                make_response(
                    request,
                    503,
                    to_tag=self.tag,
                    extra=[("Retry-After", "1"), ("Warning", '399 trunkguard "overloaded"')],
                ),
            )
            return
        self.counters["calls"] += 1
        entry = self.server_entry(request, source, key, ServerInvite)
        self.respond(entry, 100, make_response(request, 100), now)
        call = Call(self, request, source, entry, self.plan(request, now), now)
        entry.owner = call
        call.start(now)

    def plan(self, request: Request, now: float) -> Plan:
        """The ordered targets for a new call, each with the reason (see ``_plan.py``)."""
        return build_plan(
            request.request_uri.user or "",
            self.targets,
            now,
            routing=self.routing,
            numbers=self.numbers,
            health=self.health,
            counters=self.counters,
        )

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

    def start_branch(self, call: Call, target: Target, attempt: int, now: float) -> Branch:
        request = call.request
        branch_id = self.new_branch()
        flow = target.flow
        via = self.via(flow, branch_id)
        user = call.plan.number or request.request_uri.user
        host = target.uri.hostport()
        uri = f"sip:{user}@{host}" if user else f"sip:{host}"
        if flow.transport == "tcp":
            uri += ";transport=tcp"
        branch = Branch(target, attempt, branch_id, uri, via, now)
        routes = request.routes
        pop = bool(routes) and self.is_us(routes[0].uri)
        mf = request.max_forwards
        data = request.forwarded(
            via=via,
            uri=uri,
            max_forwards=69 if mf is None else mf - 1,
            pop_route=pop,
            record_route=self.record_route,
        )
        branch.routes = [v for v in request.values("route")][1 if pop else 0 :]
        txn = ClientInvite(
            data,
            partial(ack_for, request, branch.uri, branch.via, branch.routes),
            reliable=flow.transport != "udp",
            timers=self.settings.timers,
        )
        branch.txn = txn
        entry = ClientEntry(txn, flow, branch, branch_id, call=call)
        self.clients[branch_id] = entry
        timeout = self.settings.invite_timeout
        if self.health is not None:
            branch.health_id = self.health.attempt_started(target.name, now)
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

    def abandon_branch(self, branch: Branch, now: float) -> None:
        """Stop retransmitting a branch's INVITE; its transaction still takes late answers."""
        entry = self.clients.get(branch.id)
        if entry is not None and branch.txn is not None:
            self.drive(entry, branch.txn.abandon(now), now)

    def cancel_branch(self, call: Call, branch: Branch, now: float) -> None:
        """CANCEL a branch that sent a provisional, in a transaction of its own."""
        data = make_cancel(call.request, uri=branch.uri, via=branch.via, routes=branch.routes)
        txn = ClientNonInvite(
            data, reliable=branch.flow.transport != "udp", timers=self.settings.timers
        )
        entry = ClientEntry(txn, branch.flow, None, branch.id + "/cancel")
        self.clients[entry.key] = entry
        self.counters["cancels_sent"] += 1
        self.drive(entry, txn.start(now), now)

    def _stray_leg(
        self, call: Call, branch: Branch, response: Response
    ) -> tuple[str, list[str], str, str]:
        """Where requests inside a stray 2xx's dialog go: (target, routes, To, From)."""
        try:
            contacts = response.contacts
        except ParseError:
            contacts = []
        target_uri = str(contacts[0].uri) if contacts else branch.uri
        routes = [v for v in reversed(response.values("record-route"))]
        return target_uri, routes, response.get("to") or "", call.request.get("from") or ""

    def ack_stray(self, call: Call, branch: Branch, response: Response) -> None:
        """ACK a 2xx nobody wanted (again for each retransmission of it)."""
        self.counters["stray_2xx"] += 1
        request = call.request
        target_uri, routes, to, from_ = self._stray_leg(call, branch, response)
        ack = make_request(
            "ACK",
            target_uri,
            via=self.via(branch.flow, derived_branch(branch.id + "ack")),
            from_=from_,
            to=to,
            call_id=request.call_id,
            cseq=request.cseq.number,
            routes=routes,
        )
        self.send(branch.flow, ack)

    def bye_stray(self, call: Call, branch: Branch, response: Response, now: float) -> None:
        """BYE a 2xx nobody wanted, so the carrier does not bill a call nobody hears."""
        request = call.request
        target_uri, routes, to, from_ = self._stray_leg(call, branch, response)
        bye_branch = self.new_branch()
        bye = make_request(
            "BYE",
            target_uri,
            via=self.via(branch.flow, bye_branch),
            from_=from_,
            to=to,
            call_id=request.call_id,
            cseq=request.cseq.number + 1,
            routes=routes,
            extra=[("Reason", 'SIP;cause=200;text="Call completed elsewhere"')],
        )
        txn = ClientNonInvite(
            bye, reliable=branch.flow.transport != "udp", timers=self.settings.timers
        )
        entry = ClientEntry(txn, branch.flow, None, bye_branch)
        self.clients[bye_branch] = entry
        self.counters["stray_byes_sent"] += 1
        self.drive(entry, txn.start(now), now)

    def record_attempt(self, branch: Branch, record: AttemptRecord) -> None:
        self.counters[f"attempts:{record.kind}"] += 1
        if self.on_attempt is not None:
            self.on_attempt(record)
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
        self.apply_health_changes(changes)

    def branch_answered(self, branch: Branch, now: float) -> None:
        """The first response on a branch: a sample for the target's adaptive timer."""
        if self.health is not None:
            self.apply_health_changes(
                self.health.first_response(branch.target.name, branch.health_id, now)
            )

    def apply_health_changes(self, changes: list[StateChange]) -> None:
        for change in changes:
            self.counters[f"state:{change.target}:{change.new}"] += 1
            if self.on_state_change is not None:
                self.on_state_change(change)
        self._retime_health()

    def _retime_health(self) -> None:
        if self.health is None:
            return
        self._health_timer = self.timers.rearm(
            self._health_timer, self.health.next_deadline(), self._on_health_timer
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
            # again once the backlog is through.
            self._health_timer = self.timers.schedule(
                self.stalled_until + 0.001, self._on_health_timer
            )
            return
        if self.health is not None:
            self.apply_health_changes(self.health.tick(now))

    # -- CANCEL, ACK, dialogs ----------------------------------------------------------------
    def _on_cancel(
        self, request: Request, source: Flow, key: tuple[object, ...], now: float
    ) -> None:
        invite_key = (*key[:-1], "INVITE")
        invite = self.servers.get(invite_key)
        if invite is None or not isinstance(invite.owner, Call):
            self.send(source, make_response(request, 481, to_tag=self.tag))
            return
        entry = self.server_entry(request, source, key, ServerNonInvite)
        self.respond(entry, 200, make_response(request, 200, to_tag=invite.owner.to_tag), now)
        invite.owner.cancel(now)

    # -- responses ---------------------------------------------------------------------------
    def _on_response(self, response: Response, source: Flow, now: float) -> None:
        try:
            via = response.top_via
            response.cseq  # noqa: B018 - validates CSeq before matching
        except ParseError:
            self.counters["bad_responses"] += 1
            return
        branch = via.branch or ""
        entry = self.clients.get(branch)
        if entry is not None and response.cseq.method == "CANCEL":
            entry = self.clients.get(branch + "/cancel")
        if entry is None:
            self.counters["stray_responses"] += 1
            return
        self.drive(entry, entry.txn.receive(response, now), now)

    # -- introspection -----------------------------------------------------------------------
    def active(self) -> dict[str, int]:
        return {
            "client_transactions": len(self.clients),
            "server_transactions": len(self.servers),
            "dialogs": len(self.dialogs),
        }

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
