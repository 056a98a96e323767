"""A simulated carrier, sans-IO: datagrams and ``now`` in, datagrams and one deadline out.

What it does, by behaviour (see ``_carrier_mode``):

=============  ==============================================================
healthy        INVITE: 100, 180, then 200 with SDP after ``ring_ms``; the 200
               is resent until the ACK comes (RFC 6026: the server transaction
               leaves 2xx retransmission to its user). BYE 200 (481 for an
               unknown call; 487 to the INVITE if it is still ringing),
               CANCEL 200 + 487 to the INVITE (481 if no INVITE matches),
               OPTIONS and REGISTER 200, any other method 405.
reject         INVITE: 100 then ``code`` (with Retry-After if set); the rest
               as healthy.
options-only   INVITE: ``code`` at once, no 100: only keepalives look alive.
slow           as healthy, but each new request is taken up ``delay_ms``
               later; its retransmissions meanwhile are absorbed.
jitter         as slow, with a delay drawn anew for each request, evenly
               between ``delay_ms`` and ``jitter_ms`` (a seeded draw: one
               carrier's run repeats).
blackhole      nothing is answered, and nothing already due is sent either.
killed         as blackhole, and every call and transaction is forgotten (the
               adapter closes the socket: the kernel answers, not us).
registrar-     REGISTER is received and counted but never answered; every
silent         other request as healthy.
false-answer   as healthy, then ``hangup_ms`` after its 200 the carrier sends a
               BYE along the dialog (the INVITE's Record-Route set, to its
               Contact): an answer that is no conversation.
fake-busy      INVITE: 100 then 486 for ``busy_pct`` % of calls, spread evenly
               (a running count, not chance); the others as healthy.
=============  ==============================================================

With a registrar (:class:`RegistrarConfig`), REGISTER is answered by it
(``_carrier_registrar``: 401 with a digest challenge, 200 once the
credentials check out) instead of a plain 200; if its config says ``require``,
an INVITE that arrives while no binding is live gets ``403`` whatever the
mode. Every new REGISTER and what became of it is kept, with its time, in
:attr:`CarrierCore.register_log`.

Requests go through the project's own server transactions
(:class:`ServerInvite`, :class:`ServerNonInvite`), which resend the last
response to a retransmitted request and retransmit non-2xx finals until the
ACK. A mode change applies to the next datagram in and to every datagram due
out from then on.
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..sip import (
    MAGIC_COOKIE,
    Event,
    ParseError,
    Request,
    Response,
    Send,
    ServerInvite,
    ServerNonInvite,
    Terminated,
    TimedOut,
    TimerConfig,
    new_tag,
    parse_message,
)
from ._caller_dialog import Dialog
from ._carrier_counters import Counters, remember
from ._carrier_mode import REGISTRAR_SILENT, SILENT, Mode, behaviour, phase_end
from ._carrier_registrar import Registrar, RegistrarConfig
from ._carrier_wire import ALLOW, HEADER, build_response, sdp_answer

Addr = tuple[str, int]
TxnKey = tuple[str, str, str]  # branch, sent-by, method (an ACK belongs to its INVITE)
MAX_CALLS = 100_000
MAX_REGISTER_LOG = 10_000
DEFAULT_TIMERS = TimerConfig()
_DELAYED = frozenset({"slow", "jitter"})  # behaviours that take each request up late
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class Datagram:
    data: bytes
    addr: Addr


@dataclass(eq=False, slots=True)
class _Txn:
    key: TxnKey
    server: ServerInvite | ServerNonInvite
    addr: Addr
    armed: float | None = None  # the earliest wake-up queued for it


@dataclass(eq=False, slots=True)
class _Call:
    call_id: str
    tag: str
    invite: Request
    txn: _Txn
    final: int | None = None
    ok: bytes | None = None  # the 2xx, resent until the ACK
    acked: bool = False
    ended: bool = False
    interval: float = 0.0
    give_up: float = 0.0


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"carrier name {name!r}: use letters, digits, '.', '_' or '-' (at most 63)"
        )
    return name


class CarrierCore:
    """One simulated carrier. Call :meth:`handle_timer` at :meth:`next_deadline`."""

    def __init__(
        self,
        name: str,
        mode: Mode,
        now: float,
        *,
        local: Addr = ("127.0.0.1", 5060),
        timers: TimerConfig = DEFAULT_TIMERS,
        registrar: RegistrarConfig | None = None,
    ) -> None:
        self.name = check_name(name)
        self.local = local
        self.timers = timers
        self.counters = Counters()
        self.mode = mode
        self.since = now
        self._now = now
        self._txns: dict[TxnKey, _Txn] = {}
        self._calls: dict[str, _Call] = {}
        self._pending: set[TxnKey] = set()
        self._wakeups: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._out: list[Datagram] = []
        self._busy_seen = 0  # fake-busy: INVITEs so far, for an even 486 share
        self._hung_up: dict[str, None] = {}  # false-answer: Call-IDs we sent a BYE for
        self._rng = random.Random(name)  # jitter's delays
        self.registrar = Registrar(registrar) if registrar is not None else None
        #: (time, what) for every new REGISTER: "received", then "unanswered" or the
        #: registrar's outcome ("challenged", "accepted", ...). Oldest dropped first.
        self.register_log: deque[tuple[float, str]] = deque(maxlen=MAX_REGISTER_LOG)

    # -- the interface ---------------------------------------------------------------
    def set_mode(self, mode: Mode, now: float) -> None:
        self.mode = mode
        self.since = now
        if mode.name == "killed":
            # A killed process forgets everything; the counters are the simulator's own.
            self._txns.clear()
            self._calls.clear()
            self._pending.clear()
            self._wakeups.clear()
            if self.registrar is not None:
                self.registrar.forget()

    def behaviour(self, now: float) -> str:
        return behaviour(self.mode, self.since, now)

    def next_deadline(self) -> float | None:
        return self._wakeups[0][0] if self._wakeups else None

    def receive(self, data: bytes, addr: Addr, now: float) -> list[Datagram]:
        self._now = now
        try:
            message = parse_message(data)
        except ParseError as exc:
            self._malformed(exc, exc.partial, addr)
            return self._flush()
        if isinstance(message, Response):
            cseq = message.get("cseq") or ""
            if cseq.rstrip().endswith("BYE") and message.get("call-id") in self._hung_up:
                self.counters.bye_answers += 1
            else:
                self.counters.stray_responses += 1
            return self._flush()
        try:
            message.check()
        except ParseError as exc:
            self._malformed(exc, message, addr)
            return self._flush()
        self._request(message, addr)
        return self._flush()

    def handle_timer(self, now: float) -> list[Datagram]:
        self._now = now
        while self._wakeups and self._wakeups[0][0] <= now:
            _, _, action = heapq.heappop(self._wakeups)
            action()
        return self._flush()

    def snapshot(self, now: float) -> dict[str, object]:
        """Mode and counters, JSON-able."""
        out: dict[str, object] = {
            "mode": self.mode.name,
            "mode_detail": self.mode.describe(),
            "params": self.mode.as_dict(),
            "acting_as": self.behaviour(now),
            "mode_since_s": round(now - self.since, 3),
        }
        turn = phase_end(self.mode, self.since, now)
        if turn is not None:
            out["phase_ends_in_s"] = round(turn - now, 3)
        out.update(self.counters.as_dict())
        if self.registrar is not None:
            out["registrar"] = self.registrar.snapshot(now)
        # Ringing or answered and not hung up; rejected calls wait out Timer I uncounted.
        out["open_calls"] = sum(1 for c in self._calls.values() if (c.final or 0) < 300)
        return out

    @property
    def contact(self) -> str:
        host, port = self.local
        return f"sip:{self.name}@{f'[{host}]' if ':' in host else host}:{port}"

    # -- requests in ---------------------------------------------------------------------
    def _request(self, req: Request, addr: Addr) -> None:
        method = req.method
        via = req.top_via
        branch = via.branch or ""
        if not branch.startswith(MAGIC_COOKIE):
            # RFC 2543 peers: no usable branch, the transaction is Call-ID, CSeq and From tag.
            branch = f"{req.call_id}/{req.cseq.number}/{req.from_.tag}"
        new = self.counters.request(method, (branch, via.sent_by, method), req.call_id)
        if method == "REGISTER" and new:
            self.register_log.append((self._now, "received"))
        acting = self.behaviour(self._now)
        if acting in SILENT or (acting in REGISTRAR_SILENT and method == "REGISTER"):
            self.counters.swallowed += 1
            if method == "REGISTER" and new:
                self.register_log.append((self._now, "unanswered"))
            return
        key: TxnKey = (branch, via.sent_by, "INVITE" if method == "ACK" else method)
        if method == "ACK":
            self._ack(req, key)
            return
        txn = self._txns.get(key)
        if txn is not None:
            self._retransmitted(txn, req)
        elif key in self._pending:
            pass  # slow: the first copy is queued already
        elif acting in _DELAYED:
            self._pending.add(key)
            self._at(self._now + self._delay(acting), lambda: self._delayed(req, addr, key))
        else:
            # Also a retransmission of a request that met a silent carrier: answer it now.
            self._dispatch(req, addr, key, acting)

    def _delay(self, acting: str) -> float:
        mode = self.mode
        if acting == "jitter":
            return self._rng.uniform(mode.delay_ms, mode.jitter_ms) / 1000
        return mode.delay_ms / 1000

    def _delayed(self, req: Request, addr: Addr, key: TxnKey) -> None:
        self._pending.discard(key)
        acting = self.behaviour(self._now)
        if acting in SILENT or (acting in REGISTRAR_SILENT and req.method == "REGISTER"):
            self.counters.swallowed += 1
        elif key not in self._txns:
            self._dispatch(req, addr, key, "healthy" if acting in _DELAYED else acting)

    def _dispatch(self, req: Request, addr: Addr, key: TxnKey, acting: str) -> None:
        method = req.method
        if method == "INVITE":
            self._invite(req, addr, key, acting)
        elif method == "CANCEL":
            self._cancel(req, addr, key)
        elif method == "BYE":
            self._bye(req, addr, key)
        elif method == "OPTIONS":
            self._answer(req, addr, key, 200, extra=[("Allow", ALLOW)])
        elif method == "REGISTER":
            self._register(req, addr, key)
        else:
            self._answer(req, addr, key, 405, extra=[("Allow", ALLOW)])

    def _register(self, req: Request, addr: Addr, key: TxnKey) -> None:
        if self.registrar is None:
            extra = [("Contact", c) for c in req.get_all("contact")]
            extra.append(("Expires", req.get("expires") or "3600"))
            self.register_log.append((self._now, "accepted"))
            self._answer(req, addr, key, 200, extra=extra)
            return
        answer = self.registrar.handle(req, self._now)
        self.register_log.append((self._now, answer.outcome))
        self._answer(req, addr, key, answer.status, extra=answer.headers)

    def _retransmitted(self, txn: _Txn, req: Request) -> None:
        self._run(txn, txn.server.receive_request(self._now), resent=True)
        call = self._calls.get(req.call_id)
        # In ACCEPTED the transaction absorbs the INVITE (RFC 6026); the 2xx is ours to resend.
        if call is not None and call.txn is txn and call.ok is not None and not call.acked:
            self._send(call.ok, txn.addr, resent=True)

    def _ack(self, req: Request, key: TxnKey) -> None:
        txn = self._txns.get(key)
        if txn is not None and isinstance(txn.server, ServerInvite):
            self._run(txn, txn.server.receive_ack(self._now))  # ACK for a non-2xx final
        call = self._calls.get(req.call_id)
        if call is not None and call.ok is not None:
            call.acked = True  # ACK for the 2xx: its own transaction, matched by dialog

    def _invite(self, req: Request, addr: Addr, key: TxnKey, acting: str) -> None:
        txn = self._open(ServerInvite(req, reliable=False, timers=self.timers), key, addr)
        call = _Call(req.call_id, req.to.tag or new_tag(), req, txn)
        self._calls.pop(call.call_id, None)
        self._calls[call.call_id] = call
        if len(self._calls) > MAX_CALLS:
            del self._calls[next(iter(self._calls))]
        mode = self.mode
        registrar = self.registrar
        if (
            registrar is not None
            and registrar.config.require
            and not registrar.registered(self._now)
        ):
            # Not registered: this account may not call (a real trunk's 403).
            registrar.count("invites_refused")
            self._respond(call, 403)
            return
        if acting in ("reject", "options-only"):
            if acting == "reject":
                self._respond(call, 100)
            self._respond(call, mode.code, retry_after=mode.retry_after)
            return
        if acting == "fake-busy":
            self._busy_seen += 1
            seen, pct = self._busy_seen, mode.busy_pct
            if seen * pct // 100 != (seen - 1) * pct // 100:
                self._respond(call, 100)
                self._respond(call, 486)
                return
        self._respond(call, 100)
        self._respond(call, 180)
        if mode.ring_ms <= 0:
            self._answered(call, acting)
        else:
            self._at(self._now + mode.ring_ms / 1000, lambda: self._answered(call, acting))

    def _answered(self, call: _Call, acting: str) -> None:
        self._respond(call, 200)
        if acting == "false-answer" and call.final == 200:
            self._at(self._now + self.mode.hangup_ms / 1000, lambda: self._hang_up(call))

    def _hang_up(self, call: _Call) -> None:
        """false-answer: our BYE, as the callee side of the dialog (RFC 3261 §12.1.1)."""
        if call.ended or self._calls.get(call.call_id) is not call:
            return
        invite = call.invite
        try:
            contacts = invite.contacts
            dialog = Dialog(
                call_id=call.call_id,
                local=f"{invite.get('to')};tag={call.tag}",
                remote=invite.get("from") or "",
                remote_tag=invite.from_.tag,
                remote_target=str(contacts[0].uri) if contacts else str(invite.uri),
                route_set=tuple(invite.values("record-route")),  # in order, for the callee
            )
            hop = dialog.next_hop()
        except ParseError:
            self.counters.unparsable += 1
            return
        host, port = self.local
        via = f"SIP/2.0/UDP {host}:{port};branch={MAGIC_COOKIE}{new_tag()};rport"
        data = dialog.request("BYE", 1, via=via, extra=[(HEADER, self.name)])
        call.ended = True
        del self._calls[call.call_id]
        remember(self._hung_up, call.call_id, MAX_CALLS)
        self.counters.byes_sent += 1
        if self.behaviour(self._now) not in SILENT:
            self._out.append(Datagram(data, hop))

    def _cancel(self, req: Request, addr: Addr, key: TxnKey) -> None:
        invite = self._txns.get((key[0], key[1], "INVITE"))
        call = self._calls.get(req.call_id)
        if invite is None or call is None or call.txn is not invite:
            self._answer(req, addr, key, 481)
            return
        # Same To tag as the INVITE's responses (RFC 3261 §9.2).
        self._answer(req, addr, key, 200, tag=call.tag)
        self._respond(call, 487)  # nothing if the INVITE got its final already

    def _bye(self, req: Request, addr: Addr, key: TxnKey) -> None:
        call = self._calls.get(req.call_id)
        if call is None or (call.final is not None and call.final >= 300):
            self._answer(req, addr, key, 481)
            return
        self._answer(req, addr, key, 200, tag=call.tag)
        call.ended = True
        del self._calls[call.call_id]
        self._respond(call, 487)  # a BYE before the answer ends the INVITE (RFC 3261 §15.1.2)

    # -- responses out -----------------------------------------------------------------
    def _answer(
        self,
        req: Request,
        addr: Addr,
        key: TxnKey,
        status: int,
        *,
        tag: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        txn = self._open(ServerNonInvite(req, reliable=False, timers=self.timers), key, addr)
        data = build_response(req, status, self.name, tag=tag or new_tag(), extra=extra)
        self._run(txn, txn.server.respond(status, data, self._now))

    def _respond(self, call: _Call, status: int, *, retry_after: int | None = None) -> None:
        if call.final is not None:
            return
        dialog = 100 < status < 300
        ok = 200 <= status < 300
        data = build_response(
            call.invite,
            status,
            self.name,
            tag=call.tag,
            contact=self.contact if dialog else None,
            retry_after=retry_after,
            sdp=sdp_answer(self.name, self.local[0]) if ok else None,
        )
        if status >= 200:
            call.final = status
        self._run(call.txn, call.txn.server.respond(status, data, self._now))
        if ok:
            call.ok = data
            call.interval = self.timers.t1
            call.give_up = self._now + self.timers.timeout
            self._at(self._now + call.interval, lambda: self._resend_ok(call))

    def _resend_ok(self, call: _Call) -> None:
        if call.acked or call.ended or call.ok is None:
            return
        if self._now >= call.give_up:
            self.counters.ack_timeouts += 1
            return
        self._send(call.ok, call.txn.addr, resent=True)
        call.interval = min(call.interval * 2, self.timers.t2)
        self._at(self._now + call.interval, lambda: self._resend_ok(call))

    def _send(self, data: bytes, addr: Addr, *, resent: bool) -> None:
        if self.behaviour(self._now) in SILENT:
            self.counters.suppressed += 1
            return
        self.counters.response(int(data[8:11]), resent)
        # To the address the request came from, as rport asks (RFC 3581): behind a NAT
        # or from a router's connected socket, that is where the answer is awaited.
        self._out.append(Datagram(data, addr))

    def _malformed(self, exc: ParseError, req: Request | None, addr: Addr) -> None:
        self.counters.unparsable += 1
        if req is None or req.method == "ACK" or self.behaviour(self._now) in SILENT:
            return
        self._send(build_response(req, exc.status, self.name), addr, resent=False)

    # -- transactions and timers -------------------------------------------------------
    def _open(self, server: ServerInvite | ServerNonInvite, key: TxnKey, addr: Addr) -> _Txn:
        txn = _Txn(key, server, addr)
        self._txns[key] = txn
        return txn

    def _run(self, txn: _Txn, events: list[Event], *, resent: bool = False) -> None:
        for event in events:
            if isinstance(event, Send):
                self._send(event.data, txn.addr, resent=resent)
            elif isinstance(event, TimedOut):
                self.counters.ack_timeouts += 1  # Timer H: a final never acknowledged
            elif isinstance(event, Terminated):
                self._terminated(txn)
        self._arm(txn)

    def _terminated(self, txn: _Txn) -> None:
        if self._txns.get(txn.key) is txn:
            del self._txns[txn.key]
        if isinstance(txn.server, ServerInvite):
            call = self._calls.get(txn.server.request.call_id)
            if call is not None and call.txn is txn and (call.final or 0) >= 300:
                del self._calls[call.call_id]  # rejected or cancelled: no dialog to keep

    def _arm(self, txn: _Txn) -> None:
        deadline = txn.server.deadline()
        if deadline is None or self._txns.get(txn.key) is not txn:
            return
        if txn.armed is not None and txn.armed <= deadline:
            return  # an earlier wake-up is queued; it re-arms after it runs
        txn.armed = deadline
        self._at(deadline, lambda: self._txn_timer(txn, deadline))

    def _txn_timer(self, txn: _Txn, at: float) -> None:
        if txn.armed == at:
            txn.armed = None
        if self._txns.get(txn.key) is txn:
            self._run(txn, txn.server.handle_timer(self._now), resent=True)

    def _at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._wakeups, (when, next(self._seq), action))

    def _flush(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out
