"""One call from the caller's side, sans-IO: INVITE, provisionals, final, ACK, hold, BYE.

Invariants, in plain words:

- Driven by ``start``/``receive``/``handle_timer`` with an explicit ``now``;
  it answers with datagrams (``datagrams_to_send``) and, once the outcome is
  known, a :class:`CallRecord` (``record``). Its timers are data
  (``deadline()``).
- The INVITE runs in a :class:`ClientInvite` transaction: retransmissions
  (Timer A), Timer B and the ACK for a non-2xx final are the transaction's.
  The ACK for a 2xx is ours (RFC 3261 §13.2.2.4): new branch, CSeq of the
  INVITE, sent inside the dialog the 2xx set up, and sent again for every
  retransmission of that 2xx. BYE and CANCEL run in ClientNonInvite
  transactions.
- Every legal move is a row of ``TABLE``: ``(state, input) -> (next state,
  actions)``. Network input and timers the table does not list are absorbed
  (late provisionals, retransmissions, a timer that lost a race); starting a
  call twice raises.
- A call is bounded: no final by ``started + timeout`` means it hung; an
  answered call is over by ``started + timeout + hold`` whether its BYE was
  answered or not.
- Once ENDED the record is fixed, but the call still acknowledges what comes
  late: a retransmitted 2xx gets its ACK again, and a 2xx we did not take (it
  came after we gave up) is acknowledged and hung up at once, so no call is
  left up at the far end.
"""

from __future__ import annotations

import os
from functools import partial
from typing import ClassVar

from ..sip import (
    ClientInvite,
    ClientNonInvite,
    Deliver,
    Event,
    ParseError,
    Request,
    Response,
    Send,
    Terminated,
    TimedOut,
    TransportFailed,
    make_ack,
    make_cancel,
    make_response,
    new_branch,
    new_tag,
)
from ._caller_dialog import Addr, Dialog
from ._caller_invite import Invite, hostport, make_invite, via
from ._caller_record import CallRecord
from ._caller_settings import GeneratorSettings

# -- states -------------------------------------------------------------------------------
IDLE = "IDLE"
CALLING = "CALLING"  # INVITE sent, nothing back yet
CANCEL_WAIT = "CANCEL_WAIT"  # hung up before any provisional: the CANCEL waits for one (§9.1)
PROCEEDING = "PROCEEDING"  # a provisional came
CANCELLING = "CANCELLING"  # CANCEL sent, waiting for the INVITE's final response
HOLDING = "HOLDING"  # answered and acknowledged, talking until the hold time is over
HANGING_UP = "HANGING_UP"  # BYE sent
ENDED = "ENDED"  # the outcome is known

# -- inputs -------------------------------------------------------------------------------
START = "start"
R1XX = "1xx"
R2XX = "2xx"
RFINAL = "300-699"
NO_FINAL = "no final"  # our timeout, Timer B, or a transport error on the INVITE
CANCEL_TIME = "timer cancel"
HOLD_OVER = "timer hold"
CALL_OVER = "timer end"
BYE_ANSWERED = "BYE answered"
BYE_LOST = "BYE unanswered"  # Timer F, or a transport error on our BYE
BYE_RECEIVED = "BYE received"

Row = tuple[str, tuple[str, ...]]
Table = dict[tuple[str, str], Row]

# The call's own timers, in the order they fire when due together.
_TIMER_INPUTS: dict[str, str] = {
    "cancel": CANCEL_TIME,
    "final": NO_FINAL,
    "hold": HOLD_OVER,
    "end": CALL_OVER,
}

# Transactions of a call, by what they are for.
_INVITE, _CANCEL, _BYE, _CLEANUP = "invite", "cancel", "bye", "cleanup"
_Txn = tuple[ClientInvite | ClientNonInvite, Addr, str]


class Call:
    TABLE: ClassVar[Table] = {
        (IDLE, START): (CALLING, ("send_invite", "arm_timers")),
        (CALLING, R1XX): (PROCEEDING, ("note_provisional",)),
        (CALLING, R2XX): (HOLDING, ("note_final", "send_ack", "arm_hold")),
        (CALLING, RFINAL): (ENDED, ("note_final",)),
        (CALLING, NO_FINAL): (ENDED, ("note_hung", "abandon")),
        (CALLING, CANCEL_TIME): (CANCEL_WAIT, ()),
        (CANCEL_WAIT, R1XX): (CANCELLING, ("note_provisional", "send_cancel")),
        (CANCEL_WAIT, R2XX): (HANGING_UP, ("note_final", "send_ack", "send_bye")),
        (CANCEL_WAIT, RFINAL): (ENDED, ("note_final",)),
        (CANCEL_WAIT, NO_FINAL): (ENDED, ("note_hung", "abandon")),
        (PROCEEDING, R1XX): (PROCEEDING, ("note_provisional",)),
        (PROCEEDING, R2XX): (HOLDING, ("note_final", "send_ack", "arm_hold")),
        (PROCEEDING, RFINAL): (ENDED, ("note_final",)),
        (PROCEEDING, CANCEL_TIME): (CANCELLING, ("send_cancel",)),
        # Hung while ringing: CANCEL, so the far end stops too (its 487 is ACKed by the txn).
        (PROCEEDING, NO_FINAL): (ENDED, ("note_hung", "send_cancel")),
        (CANCELLING, R1XX): (CANCELLING, ("note_provisional",)),
        # The 2xx crossed our CANCEL: the call is up, so the caller hangs it up at once.
        (CANCELLING, R2XX): (HANGING_UP, ("note_final", "send_ack", "send_bye")),
        (CANCELLING, RFINAL): (ENDED, ("note_final",)),
        (CANCELLING, NO_FINAL): (ENDED, ("note_hung",)),
        (HOLDING, R2XX): (HOLDING, ("ack_again",)),
        (HOLDING, HOLD_OVER): (HANGING_UP, ("send_bye",)),
        (HOLDING, BYE_RECEIVED): (ENDED, ("answer_bye", "note_callee_hangup")),
        (HANGING_UP, R2XX): (HANGING_UP, ("ack_again",)),
        (HANGING_UP, BYE_ANSWERED): (ENDED, ("note_bye",)),
        (HANGING_UP, BYE_LOST): (ENDED, ("note_bye_lost",)),
        (HANGING_UP, CALL_OVER): (ENDED, ("note_bye_lost",)),
        (HANGING_UP, BYE_RECEIVED): (HANGING_UP, ("answer_bye",)),
        (ENDED, R2XX): (ENDED, ("ack_again",)),
        (ENDED, BYE_RECEIVED): (ENDED, ("answer_bye",)),
    }

    def __init__(
        self,
        settings: GeneratorSettings,
        index: int,
        local: Addr,
        *,
        call_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.local = local
        self.number = settings.number_of(index)
        self.call_id = call_id or f"{os.urandom(8).hex()}@{local[0]}"
        self.state = IDLE
        self.timers: dict[str, float] = {}
        self.uri = f"sip:{self.number}@{hostport(settings.target)}"
        self.local_uri = f"sip:caller@{hostport(local)}"
        self.from_ = f"<{self.local_uri}>;tag={new_tag()}"
        self.dialog: Dialog | None = None
        # What the caller measured.
        self.started = 0.0
        self.trying: float | None = None
        self.ringing: float | None = None
        self.final: int | None = None
        self.final_at: float | None = None
        self.answered_by: str | None = None
        self.ended: float | None = None
        self.ended_by: str | None = None
        self.bye_status: int | None = None
        self.cancelled: float | None = None
        self.reason = ""
        # Protocol state.
        self._txns: dict[tuple[str, str], _Txn] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._invite: Invite | None = None
        self._invite_branch = ""
        self._acks: dict[str | None, tuple[bytes, Addr]] = {}  # by the 2xx's To tag
        self._record: CallRecord | None = None
        # The input being handled, for the actions.
        self._now = 0.0
        self._message: Request | Response | None = None
        self._source: Addr | None = None
        self._detail = ""

    # -- driving ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._input(START, now)

    def receive(self, message: Request | Response, source: Addr, now: float) -> None:
        """A message of this call (same Call-ID), already checked by the caller."""
        if isinstance(message, Response):
            self._on_response(message, now)
        else:
            self._on_request(message, source, now)

    def handle_timer(self, now: float) -> None:
        while True:
            due = [name for name in _TIMER_INPUTS if self.timers.get(name, now + 1) <= now]
            if not due:
                break
            name = min(due, key=lambda n: self.timers[n])
            del self.timers[name]
            detail = f"no final response within {self.settings.timeout:g} s"
            self._input(_TIMER_INPUTS[name], now, detail=detail if name == "final" else "")
        for key, (txn, _, _) in list(self._txns.items()):
            when = txn.deadline()
            if when is not None and when <= now:
                self._drive(key, txn.handle_timer(now), now)

    def deadline(self) -> float | None:
        times = list(self.timers.values())
        times += [w for txn, _, _ in self._txns.values() if (w := txn.deadline()) is not None]
        return min(times) if times else None

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    # -- results ------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """The caller knows the outcome (the record will not change)."""
        return self.state == ENDED

    @property
    def idle(self) -> bool:
        """Finished, and no transaction left to retransmit or to absorb late messages."""
        return self.state == ENDED and not self._txns

    @property
    def pdd(self) -> float | None:
        marks = [t for t in (self.ringing, self.final_at) if t is not None]
        return min(marks) - self.started if marks else None

    def record(self) -> CallRecord:
        """The outcome; for a call not finished yet, what it is so far."""
        if self._record is not None:
            return self._record
        return self._build_record()

    def _build_record(self) -> CallRecord:
        expected = self.settings.expect
        if self.cancelled is not None:
            expected = expected | {487}
        return CallRecord(
            call_id=self.call_id,
            started=self.started,
            trying=self.trying,
            ringing=self.ringing,
            final=self.final,
            final_at=self.final_at,
            answered_by=self.answered_by,
            ended=self.ended,
            ended_by=self.ended_by,
            bye_status=self.bye_status,
            cancelled=self.cancelled,
            expected=expected,
            reason=self.reason or "in progress",
            number=self.number,
            index=self.index,
        )

    @classmethod
    def transition_table(cls) -> str:
        """The table as text, one legal move per line."""
        return "\n".join(
            f"{s:<11} + {i:<15} -> {n:<11} {', '.join(a)}" for (s, i), (n, a) in cls.TABLE.items()
        )

    # -- table engine -------------------------------------------------------------------------
    def _input(
        self,
        what: str,
        now: float,
        message: Request | Response | None = None,
        source: Addr | None = None,
        detail: str = "",
    ) -> None:
        row = self.TABLE.get((self.state, what))
        if row is None:
            if what == START:
                raise RuntimeError(f"call {self.call_id}: {what!r} not allowed in {self.state}")
            return
        next_state, actions = row
        entering = next_state == ENDED and self.state != ENDED
        self._now, self._message, self._source, self._detail = now, message, source, detail
        self.state = next_state
        for action in actions:
            getattr(self, "_a_" + action)()
        if entering:
            self.timers.clear()
            self._record = self._build_record()
        self._message = self._source = None

    def _drive(self, key: tuple[str, str], events: list[Event], now: float) -> None:
        entry = self._txns.get(key)
        if entry is None:
            return
        _, dest, kind = entry
        for event in events:
            if isinstance(event, Send):
                self._out.append((event.data, dest))
            elif isinstance(event, Deliver):
                self._delivered(kind, event.response, now)
            elif isinstance(event, TimedOut | TransportFailed):
                detail = f"timer {event.timer}" if isinstance(event, TimedOut) else event.reason
                if kind == _INVITE:
                    self._input(NO_FINAL, now, detail=detail)
                elif kind == _BYE:
                    self._input(BYE_LOST, now, detail=detail)
            elif isinstance(event, Terminated):
                self._txns.pop(key, None)

    def _delivered(self, kind: str, response: Response, now: float) -> None:
        status = response.status
        if kind == _INVITE:
            what = R1XX if status < 200 else R2XX if status < 300 else RFINAL
            self._input(what, now, response)
        elif kind == _BYE and status >= 200:
            self._input(BYE_ANSWERED, now, response)

    def _on_response(self, response: Response, now: float) -> None:
        key = (response.top_via.branch or "", response.cseq.method)
        entry = self._txns.get(key)
        if entry is not None:
            self._drive(key, entry[0].receive(response, now), now)
        elif key == (self._invite_branch, "INVITE") and 200 <= response.status < 300:
            # The INVITE transaction is over (Timer M): a retransmitted 2xx still needs its ACK.
            self._input(R2XX, now, response)

    def _on_request(self, request: Request, source: Addr, now: float) -> None:
        if request.method == "ACK":
            return
        if request.method == "BYE":
            if (self.state, BYE_RECEIVED) in self.TABLE:
                self._input(BYE_RECEIVED, now, request, source)
            else:
                self._out.append((make_response(request, 481), source))
            return
        # Re-INVITE, UPDATE, INFO...: a caller of the lab's does not take part in them.
        self._out.append((make_response(request, 501), source))

    # -- helpers ------------------------------------------------------------------------------
    def _via(self, branch: str) -> str:
        return via(self.local, branch)

    def _response(self) -> Response:
        assert isinstance(self._message, Response)
        return self._message

    def _open(
        self, key: tuple[str, str], txn: ClientInvite | ClientNonInvite, dest: Addr, kind: str
    ) -> None:
        self._txns[key] = (txn, dest, kind)
        self._drive(key, txn.start(self._now), self._now)

    def _start_bye(self, dialog: Dialog, kind: str) -> None:
        branch = new_branch()
        data = dialog.request("BYE", 2, via=self._via(branch))
        txn = ClientNonInvite(data, reliable=False, timers=self.settings.timers)
        self._open((branch, "BYE"), txn, dialog.next_hop(), kind)

    # -- actions ------------------------------------------------------------------------------
    def _a_send_invite(self) -> None:
        invite = make_invite(
            uri=self.uri,
            from_=self.from_,
            contact=self.local_uri,
            call_id=self.call_id,
            local=self.local,
        )
        self._invite, self._invite_branch = invite, invite.branch
        self.started = self._now
        txn = ClientInvite(
            invite.data,
            partial(make_ack, invite.request, uri=self.uri, via=invite.via, routes=()),
            reliable=False,
            timers=self.settings.timers,
        )
        self._open((invite.branch, "INVITE"), txn, self.settings.target, _INVITE)

    def _a_arm_timers(self) -> None:
        s = self.settings
        self.timers["final"] = self._now + s.timeout
        self.timers["end"] = self._now + s.timeout + s.hold
        if s.cancel_after is not None:
            self.timers["cancel"] = self._now + s.cancel_after

    def _a_note_provisional(self) -> None:
        if self._response().status == 100:
            if self.trying is None:
                self.trying = self._now
        elif self.ringing is None:
            self.ringing = self._now

    def _a_note_final(self) -> None:
        response = self._response()
        status = response.status
        self.final, self.final_at = status, self._now
        self.answered_by = _who_answered(response)
        if status < 300:
            self.dialog = Dialog.from_2xx(response, local=self.from_, fallback_target=self.uri)
            self.reason = "answered"
        elif status == 487 and self.cancelled is not None:
            self.reason = "cancelled by the caller"
        else:
            self.reason = f"rejected {status} {response.reason}"

    def _a_note_hung(self) -> None:
        self.reason = f"hung: {self._detail}"

    def _a_abandon(self) -> None:
        key = (self._invite_branch, "INVITE")
        entry = self._txns.get(key)
        if entry is not None and isinstance(entry[0], ClientInvite):
            self._drive(key, entry[0].abandon(self._now), self._now)

    def _a_send_ack(self) -> None:
        assert self.dialog is not None
        ack = self.dialog.request("ACK", 1, via=self._via(new_branch()))
        self._acks[self.dialog.remote_tag] = (ack, self.dialog.next_hop())
        self._out.append(self._acks[self.dialog.remote_tag])

    def _a_ack_again(self) -> None:
        response = self._response()
        tag = response.to.tag
        if tag in self._acks:
            self._out.append(self._acks[tag])  # the same ACK again (§13.2.2.4)
            return
        # A 2xx we did not take: another fork, or an answer after we gave up. End it.
        dialog = Dialog.from_2xx(response, local=self.from_, fallback_target=self.uri)
        self._acks[tag] = (dialog.request("ACK", 1, via=self._via(new_branch())), dialog.next_hop())
        self._out.append(self._acks[tag])
        self._start_bye(dialog, _CLEANUP)

    def _a_arm_hold(self) -> None:
        self.timers["hold"] = self._now + self.settings.hold

    def _a_send_bye(self) -> None:
        assert self.dialog is not None
        self._start_bye(self.dialog, _BYE)

    def _a_send_cancel(self) -> None:
        assert self._invite is not None
        data = make_cancel(self._invite.request, uri=self.uri, via=self._invite.via, routes=())
        txn = ClientNonInvite(data, reliable=False, timers=self.settings.timers)
        self.cancelled = self._now
        self._open((self._invite_branch, "CANCEL"), txn, self.settings.target, _CANCEL)

    def _a_note_bye(self) -> None:
        status = self._response().status
        self.bye_status, self.ended, self.ended_by = status, self._now, "caller"
        if status >= 300:
            self.reason = f"BYE answered {status}"

    def _a_note_bye_lost(self) -> None:
        self.reason = f"BYE unanswered ({self._detail or 'call over'})"

    def _a_answer_bye(self) -> None:
        assert isinstance(self._message, Request) and self._source is not None
        self._out.append((make_response(self._message, 200), self._source))

    def _a_note_callee_hangup(self) -> None:
        self.ended, self.ended_by = self._now, "callee"


def _who_answered(response: Response) -> str | None:
    """The simulated carrier's name if it says it, else the Contact's host:port."""
    name = response.get("x-sim-carrier")
    if name:
        return name.strip()
    try:
        contacts = response.contacts
    except ParseError:  # a malformed Contact names nobody
        return None
    return contacts[0].uri.hostport() if contacts else None
