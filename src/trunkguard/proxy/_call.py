"""One INVITE and its serial failover across the targets of its plan, as transition tables.

A call tries its targets one at a time. Each attempt (a *branch*) ends in a
response, a timeout (no 100/18x within ``invite_timeout``) or an unreachable
port; the target's failure table says whether that means "try the next one"
or "this is the caller's answer". The caller sees provisionals, then one final
response: the 2xx of the branch that answered, a destination-final response,
or, when every attempt failed, the best response chosen as RFC 3261 §16.7
says (never a carrier's 503 as 503).

Invariants, in plain words:

- Every legal move is a row of a table: ``Call.TABLE`` for the call and the
  branch it is waiting on, ``Branch.TABLE`` for a branch the call has let go
  of. A row is ``(state, input) -> (next state, actions)``; each action is a
  short ``_a_*`` method of :class:`Call` that asks the proxy for one thing.
  ``trunkguard states --call`` prints both tables.
- Input from the network and from timers that a table does not list is
  absorbed: late and duplicate responses, a CANCEL after the final, a timer
  that lost a race. Any other input not listed (starting a call twice, the
  call's own routing inputs out of place, abandoning a branch twice) is a bug
  and raises :class:`CallError`.
- The current branch's state mirrors the call's: CALLING while the call is
  TRYING, PROCEEDING while it is PROCEEDING, ANSWERED when it is ANSWERED, and
  the call's table takes its input. Once its final came (ENDED) or the call
  abandoned it, its own table takes what comes late: a provisional gets a
  CANCEL (RFC 3261 §9.1: not before one), a 2xx gets ACK and BYE, so no leg
  is left ringing or billing at a carrier.
- ROUTING is the only state that never outlives an input: ``pick_route``
  answers with a follow-up input, ``next route`` or ``no route left``.
- Entering a final state stops the failover budget timer. Timers hold bound
  methods of the call, so dropping them is what lets reference counting free
  a finished call (no reference cycles).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from ..health import Q850_TO_STATUS, TIMEOUT, UNREACHABLE, FailureTable, Verdict, q850_cause
from ..sip import ClientInvite, Request, Response
from ..sip._digest import Challenge
from ._timers import TimerHandle
from ._types import AttemptRecord, Flow, Plan, Target

if TYPE_CHECKING:
    from ._core import Proxy
    from ._entries import ServerEntry

log = logging.getLogger("trunkguard.proxy")


class CallError(Exception):
    """An input a call's tables do not allow (a bug in the proxy, never the network's doing)."""


# -- call states ----------------------------------------------------------------------------
NEW = "NEW"  # made, not started
REJECTED = "REJECTED"  # refused before any attempt (plan refused, or every route full): ours
ROUTING = "ROUTING"  # choosing the next target of the plan (within one input, never after)
TRYING = "TRYING"  # the current branch's INVITE is out, nothing back yet
PROCEEDING = "PROCEEDING"  # the current branch sent 100 or 18x: Timer C, not the budget, ends it
ANSWERED = "ANSWERED"  # its 2xx went to the caller
DESTINATION_FINAL = "DESTINATION_FINAL"  # a destination's final (busy, not found...) went up
NO_ANSWER = "NO_ANSWER"  # it rang until Timer C: our 408 went up
FAILED = "FAILED"  # every attempt failed, or the budget ran out: the best of their answers
CANCELLED = "CANCELLED"  # the caller cancelled: 487

CALL_STATES = (
    NEW,
    REJECTED,
    ROUTING,
    TRYING,
    PROCEEDING,
    ANSWERED,
    DESTINATION_FINAL,
    NO_ANSWER,
    FAILED,
    CANCELLED,
)
UNANSWERED = frozenset({NEW, ROUTING, TRYING, PROCEEDING})
FINAL = frozenset(CALL_STATES) - UNANSWERED

# -- call inputs ----------------------------------------------------------------------------
PLAN = "plan"  # start(): the plan has targets to try
PLAN_REFUSED = "plan refused"  # start(): routing refused the number (blocked, undialable)
ROUTES_FULL = "every route full"  # start(): every healthy target is at capacity
ROUTE = "next route"  # pick_route found a target
NO_ROUTE = "no route left"  # pick_route found none (plan, attempt limits or budget spent)
P100 = "100"
P18X = "18x"  # any provisional but 100: 180, 183...
R2XX = "2xx"
TRUNK_FAULT = "trunk fault"  # a final that fails over and counts against the target (503...)
ROUTE_MISMATCH = "route mismatch"  # a final that fails over, target not blamed (488, 606)
DEST_FINAL = "destination final"  # a final for the caller (486, 404...; 487 unasked)
NO_RESPONSE = "timeout"  # nothing within the invite timer (or Timer B)
PORT_UNREACHABLE = "unreachable"  # ICMP unreachable, TCP refused or reset
RING_TIMEOUT = "Timer C"  # rang for ring_timeout without a final (RFC 3261 §16.6 step 11)
BUDGET = "budget spent"  # time_budget since the INVITE came
CANCEL = "caller CANCEL"
# A 401/407 from a target we have credentials for, not yet answered on this attempt (or
# stale): the INVITE goes again with them (RFC 3261 §22.2). Challenged again: TRUNK_FAULT.
CHALLENGE = "401/407"

CALL_INPUTS = (
    PLAN,
    PLAN_REFUSED,
    ROUTES_FULL,
    ROUTE,
    NO_ROUTE,
    P100,
    P18X,
    R2XX,
    TRUNK_FAULT,
    ROUTE_MISMATCH,
    DEST_FINAL,
    NO_RESPONSE,
    PORT_UNREACHABLE,
    RING_TIMEOUT,
    BUDGET,
    CANCEL,
    CHALLENGE,
)
# What the network and the timers bring: late or duplicate is normal, so absorbed when unlisted.
CALL_NETWORK_INPUTS = frozenset(CALL_INPUTS) - {PLAN, PLAN_REFUSED, ROUTES_FULL, ROUTE, NO_ROUTE}

# -- branch states --------------------------------------------------------------------------
CALLING = "CALLING"  # the INVITE is out, nothing back yet (the invite timer runs)
# PROCEEDING: a provisional came (Timer C runs); ANSWERED: its 2xx went to the caller.
ENDED = "ENDED"  # its final came (the transaction ACKs a non-2xx), or nothing ever will
ABANDONED = "ABANDONED"  # given up before any response: no retransmissions, CANCEL waits
CANCELLING = "CANCELLING"  # given up after a provisional: CANCEL sent, the 487 is awaited
CLEANED = "CLEANED"  # a 2xx nobody wanted: ACKed, and a BYE sent

BRANCH_STATES = (CALLING, PROCEEDING, ANSWERED, ENDED, ABANDONED, CANCELLING, CLEANED)
_CALL_OWNED = frozenset({CALLING, PROCEEDING, ANSWERED})  # the call's table takes their input
_PENDING = frozenset({CALLING, PROCEEDING})

# -- branch inputs --------------------------------------------------------------------------
ABANDON = "abandon"  # from the call: it no longer wants this branch
R1XX = "1xx"
RFINAL = "300-699"
LOST = "timeout/unreachable"
BRANCH_INPUTS = (ABANDON, R1XX, R2XX, RFINAL, LOST)
BRANCH_NETWORK_INPUTS = frozenset({R1XX, R2XX, RFINAL, LOST})

Row = tuple[str, tuple[str, ...]]
Table = dict[tuple[str, str], Row]
_Rows = dict[tuple[str, str], tuple[str, tuple[Callable[["Call"], None], ...]]]


def retry_after(response: Response) -> float | None:
    """Seconds of a Retry-After header (RFC 3261 §20.33), ignoring comment and params."""
    value = response.get("retry-after")
    if not value:
        return None
    digits = value.split("(", 1)[0].split(";", 1)[0].strip()
    return float(digits) if digits.isascii() and digits.isdigit() and len(digits) < 9 else None


def select_final(statuses: list[int | None]) -> int:
    """The response for the caller when every attempt failed (RFC 3261 §16.7 steps 6-7).

    ``None`` is an attempt that got no response at all. A 6xx wins, else the
    lowest class; no response at all is 408. A 503 becomes 500, so the caller
    does not take the proxy itself for overloaded, and a carrier's 401/407
    becomes 403: its challenge is for our account, not for the caller.
    """
    codes = [s for s in statuses if s is not None]
    if not codes:
        return 408
    six = [c for c in codes if c >= 600]
    best = min(six) if six else min(codes, key=lambda c: (c // 100, c))
    if best == 503:
        return 500
    if best in (401, 407):
        return 403
    return best


def _format(table: Table, width: int) -> str:
    rows = (
        f"{s:<{width}} + {i:<19} -> {n:<{width}} {', '.join(a)}" for (s, i), (n, a) in table.items()
    )
    return "\n".join(row.rstrip() for row in rows)


class Branch:
    """One attempt: the INVITE as sent to one target, and where it stands."""

    # A branch the call has let go of (ENDED, abandoned): what comes late on it.
    TABLE: ClassVar[Table] = {
        (CALLING, ABANDON): (ABANDONED, ("stop_timer", "stop_retransmitting")),
        (PROCEEDING, ABANDON): (CANCELLING, ("stop_timer", "send_cancel")),
        # The CANCEL waited for a provisional (RFC 3261 §9.1).
        (ABANDONED, R1XX): (CANCELLING, ("sample", "send_cancel")),
        (ABANDONED, R2XX): (CLEANED, ("sample", "ack_stray", "bye_stray")),
        (ABANDONED, RFINAL): (ENDED, ("sample",)),  # the transaction ACKs it
        (ABANDONED, LOST): (ENDED, ()),  # Timer B: nothing ever came
        (CANCELLING, R1XX): (CANCELLING, ()),
        (CANCELLING, R2XX): (CLEANED, ("ack_stray", "bye_stray")),  # it crossed our CANCEL
        (CANCELLING, RFINAL): (ENDED, ()),  # the 487
        (CANCELLING, LOST): (ENDED, ()),
        (CLEANED, R2XX): (CLEANED, ("ack_stray",)),  # retransmitted: ACK again, one BYE is enough
    }

    __slots__ = (
        "attempt",
        "auth",
        "auth_stale",
        "cseq",
        "first_response",
        "flow",
        "health_id",
        "id",
        "routes",
        "started",
        "state",
        "target",
        "timer",
        "txn",
        "uri",
        "via",
    )

    def __init__(
        self,
        target: Target,
        attempt: int,
        branch_id: str,
        uri: str,
        via: str,
        now: float,
    ) -> None:
        self.target = target
        self.flow: Flow = target.flow
        self.attempt = attempt
        self.id = branch_id
        self.uri = uri
        self.via = via
        self.routes: list[str] = []
        self.started = now
        self.first_response: float | None = None
        self.state = CALLING
        self.timer: TimerHandle | None = None  # the invite timer, then Timer C
        self.txn: ClientInvite | None = None
        self.health_id = 0
        self.cseq = 0  # the CSeq number this branch's INVITE carries
        self.auth: tuple[str, str] | None = None  # the credentials it carries, if any
        self.auth_stale = False  # ...which answer a stale challenge

    @property
    def pending(self) -> bool:
        """Is the call waiting for this branch's final answer?"""
        return self.state in _PENDING

    @classmethod
    def transition_table(cls) -> str:
        """The branch table as text, one legal move per line."""
        return _format(cls.TABLE, 10)


class Call:
    """One call's failover: reads ``TABLE`` (and ``Branch.TABLE``), runs the named actions."""

    TABLE: ClassVar[Table] = {
        (NEW, PLAN): (ROUTING, ("pick_route",)),
        (NEW, PLAN_REFUSED): (REJECTED, ("refuse",)),
        # Our own 503 (not a carrier's): the dialer retries soon, the number is not dead.
        (NEW, ROUTES_FULL): (REJECTED, ("refuse_full",)),
        (ROUTING, ROUTE): (TRYING, ("start_branch",)),
        (ROUTING, NO_ROUTE): (FAILED, ("give_up",)),
        (TRYING, P100): (PROCEEDING, ("sample", "ring")),
        (TRYING, P18X): (PROCEEDING, ("sample", "ring", "relay_provisional")),
        (TRYING, R2XX): (ANSWERED, ("sample", "answer_branch", "relay", "record", "open_dialog")),
        (TRYING, TRUNK_FAULT): (
            ROUTING,
            ("sample", "end_branch", "record", "keep_status", "pick_route"),
        ),
        (TRYING, ROUTE_MISMATCH): (
            ROUTING,
            ("sample", "end_branch", "record", "keep_status", "pick_route"),
        ),
        (TRYING, DEST_FINAL): (
            DESTINATION_FINAL,
            ("sample", "end_branch", "record", "relay_final"),
        ),
        (TRYING, NO_RESPONSE): (ROUTING, ("abandon", "record_fault", "keep_local", "pick_route")),
        (TRYING, PORT_UNREACHABLE): (
            ROUTING,
            ("abandon", "record_fault", "keep_local", "pick_route"),
        ),
        (TRYING, BUDGET): (FAILED, ("abandon", "record_neutral", "keep_local", "give_up")),
        # The same attempt goes on: the INVITE again, CSeq + 1, with credentials.
        (TRYING, CHALLENGE): (TRYING, ("sample", "end_branch", "authenticate")),
        (TRYING, CANCEL): (CANCELLED, ("abandon", "record_neutral", "answer_487")),
        (PROCEEDING, P100): (PROCEEDING, ()),
        (PROCEEDING, P18X): (PROCEEDING, ("relay_provisional",)),
        (PROCEEDING, R2XX): (ANSWERED, ("answer_branch", "relay", "record", "open_dialog")),
        (PROCEEDING, TRUNK_FAULT): (ROUTING, ("end_branch", "record", "keep_status", "pick_route")),
        (PROCEEDING, ROUTE_MISMATCH): (
            ROUTING,
            ("end_branch", "record", "keep_status", "pick_route"),
        ),
        (PROCEEDING, DEST_FINAL): (DESTINATION_FINAL, ("end_branch", "record", "relay_final")),
        # A carrier whose port closed will never answer what it was ringing: move on.
        (PROCEEDING, PORT_UNREACHABLE): (
            ROUTING,
            ("abandon", "record_fault", "keep_local", "pick_route"),
        ),
        (PROCEEDING, RING_TIMEOUT): (NO_ANSWER, ("abandon", "record_neutral", "answer_408")),
        # The budget is for failing over; a ringing call is up to the callee now (Timer C
        # ends it). Should this branch still fail, pick_route finds the budget spent.
        (PROCEEDING, BUDGET): (PROCEEDING, ()),
        (PROCEEDING, CANCEL): (CANCELLED, ("abandon", "record_neutral", "answer_487")),
        (PROCEEDING, CHALLENGE): (TRYING, ("end_branch", "authenticate")),
        (ANSWERED, R2XX): (ANSWERED, ("relay",)),  # retransmitted: the caller may not have it
    }

    __slots__ = (
        "_branch",
        "_challenge",
        "_kind",
        "_now",
        "_response",
        "_target",
        "_then",
        "_verdict",
        "attempts",
        "branch",
        "budget_timer",
        "final",
        "history",
        "plan",
        "plan_index",
        "proxy",
        "relayed",
        "request",
        "results",
        "server",
        "source",
        "started",
        "state",
        "to_tag",
        "tried",
    )

    def __init__(
        self,
        proxy: Proxy,
        request: Request,
        source: Flow,
        server: ServerEntry,
        plan: Plan,
        now: float,
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.source = source
        self.server = server
        self.plan = plan
        self.plan_index = 0
        self.attempts = 0
        self.tried: dict[str, int] = {}  # carrier -> branches started to its destinations
        self.branch: Branch | None = None  # the current attempt
        self.results: list[int | None] = []
        self.history: list[AttemptRecord] = []  # every attempt's record, for the call's
        self.final = 0  # the final status the caller got (0: none yet)
        self.relayed: set[int] = set()
        self.started = now
        self.state = NEW
        self.to_tag = proxy.tag
        self.budget_timer: TimerHandle | None = proxy.timers.schedule(
            now + proxy.settings.time_budget, self._on_budget
        )
        # The input being handled, for the actions.
        self._now = now
        self._branch: Branch | None = None
        self._response: Response | None = None
        self._verdict: Verdict | None = None
        self._kind = ""
        self._target: Target | None = None
        self._then: str | None = None
        self._challenge: Challenge | None = None

    @property
    def unanswered(self) -> bool:
        """No final response has gone to the caller yet."""
        return self.state in UNANSWERED

    def may_try(self, target: Target) -> bool:
        """Within the call's limits: ``max_attempts`` carriers, ``max_destinations`` of each.

        A carrier is one target, or one per DNS record of its name; trying its next
        record (another SBC) does not use up the carriers the call may try.
        """
        settings = self.proxy.settings
        tried = self.tried.get(target.carrier, 0)
        if tried:
            return tried < settings.max_destinations
        return len(self.tried) < settings.max_attempts

    def last_attempt(self) -> bool:
        """Is the branch being started the last this call may try?"""
        return not any(self.may_try(t) for t in self.plan.targets[self.plan_index :])

    @classmethod
    def transition_table(cls) -> str:
        """The call table as text, one legal move per line (``trunkguard states --call``)."""
        return _format(cls.TABLE, 17)

    # -- inputs ---------------------------------------------------------------------------
    def start(self, now: float) -> None:
        plan = self.plan
        if plan.rejected is not None:
            what = PLAN_REFUSED
        elif not plan.targets and plan.overflow:
            what = ROUTES_FULL
        else:
            what = PLAN
        self._feed(what, now, None)

    def on_response(self, branch: Branch, response: Response, now: float) -> None:
        status = response.status
        if branch is not self.branch or branch.state not in _CALL_OWNED:
            self._feed_branch(
                R1XX if status < 200 else R2XX if status < 300 else RFINAL, now, branch, response
            )
            return
        if status < 200:
            what = P100 if status == 100 else P18X
        elif status < 300:
            what = R2XX
        else:
            if status in (401, 407) and branch.target.auth is not None:
                challenge = self.proxy.answerable_challenge(branch, response, now)
                if challenge is not None:
                    self._challenge = challenge
                    self._feed(CHALLENGE, now, branch, response)
                    return
            verdict = branch.target.failures.classify(status, response.get("reason"))
            self._verdict = verdict
            if not verdict.failover:
                what = DEST_FINAL
            else:
                what = TRUNK_FAULT if verdict.counts_against else ROUTE_MISMATCH
        self._feed(what, now, branch, response)

    def on_no_response(self, branch: Branch, kind: str, now: float) -> None:
        """The branch timed out (``TIMEOUT``) or its target is unreachable (``UNREACHABLE``)."""
        if branch is not self.branch or branch.state not in _CALL_OWNED:
            self._feed_branch(LOST, now, branch, None)
            return
        self._feed(PORT_UNREACHABLE if kind == UNREACHABLE else NO_RESPONSE, now, branch, kind=kind)

    def on_invite_timeout(self, branch: Branch, now: float) -> None:
        branch.timer = None
        self.on_no_response(branch, TIMEOUT, now)

    def _on_ring_timeout(self, branch: Branch, now: float) -> None:
        branch.timer = None
        if branch is self.branch:
            self._feed(RING_TIMEOUT, now, branch, kind="ring_timeout")

    def _on_budget(self, now: float) -> None:
        self.budget_timer = None
        self._feed(BUDGET, now, self.branch, kind="budget")

    def cancel(self, now: float) -> None:
        """The caller sent CANCEL: stop failing over, end the branch, answer 487."""
        self._feed(CANCEL, now, self.branch, kind="cancelled")

    # -- table engine ---------------------------------------------------------------------
    def _feed(
        self,
        what: str,
        now: float,
        branch: Branch | None,
        response: Response | None = None,
        kind: str = "",
    ) -> None:
        """Run the call table on one input (``branch`` is the current branch)."""
        self._now = now
        self._branch = branch
        self._response = response
        self._kind = kind
        was_final = self.state in FINAL
        try:
            while True:
                row = _CALL_ROWS.get((self.state, what))
                if row is None:
                    if what in CALL_NETWORK_INPUTS:
                        return
                    raise CallError(
                        f"call {self.request.call_id}: {what!r} not allowed in {self.state}"
                    )
                self.state, actions = row
                for action in actions:
                    action(self)
                then = self._then
                if then is None:
                    break
                self._then = None
                what = then
            if self.state in FINAL and not was_final:
                if self.budget_timer is not None:
                    self._stop_budget()
                self.proxy.call_over(self, now)
        finally:
            self._branch = self._response = self._verdict = None
            self._challenge = None

    def _feed_branch(
        self, what: str, now: float, branch: Branch, response: Response | None
    ) -> None:
        self._now = now
        self._branch = branch
        self._response = response
        try:
            self._branch_input(what)
        finally:
            self._branch = self._response = None

    def _branch_input(self, what: str) -> None:
        branch = self._branch
        assert branch is not None
        row = _BRANCH_ROWS.get((branch.state, what))
        if row is None:
            if what in BRANCH_NETWORK_INPUTS:
                return
            raise CallError(
                f"call {self.request.call_id}, branch {branch.attempt}: "
                f"{what!r} not allowed in {branch.state}"
            )
        branch.state, actions = row
        for action in actions:
            action(self)

    # -- helpers --------------------------------------------------------------------------
    def _current(self) -> Branch:
        branch = self._branch
        assert branch is not None
        return branch

    def _message(self) -> Response:
        response = self._response
        assert response is not None
        return response

    def _answer(self, status: int, extra: list[tuple[str, str]] | None = None) -> None:
        """A final response of our own to the caller."""
        data = self.proxy.response(self.request, status, to_tag=self.to_tag, extra=extra or ())
        self.final = self.final or status
        self.proxy.respond(self.server, status, data, self._now)

    def _record(
        self,
        status: int | None,
        kind: str,
        verdict: Verdict | None,
        retry: float | None = None,
    ) -> None:
        branch = self._current()
        record = AttemptRecord(
            call_id=self.request.call_id,
            target=branch.target.name,
            attempt=branch.attempt,
            status=status,
            kind=kind,
            verdict=verdict,
            started=branch.started,
            ended=self._now,
            first_response=branch.first_response,
            retry_after=retry,
            carrier=branch.target.carrier,
        )
        self.history.append(record)
        self.proxy.record_attempt(branch, record)

    def _stop_budget(self) -> None:
        # Dropping the handle matters: it refers back to this call (a reference cycle).
        if self.budget_timer is not None:
            self.budget_timer.cancel()
            self.budget_timer = None

    # -- actions: routing -------------------------------------------------------------------
    def _a_pick_route(self) -> None:
        settings = self.proxy.settings
        now = self._now
        targets = self.plan.targets
        while self.plan_index < len(targets) and now < self.started + settings.time_budget:
            target = targets[self.plan_index]
            self.plan_index += 1
            if not self.may_try(target):
                continue
            if self.attempts and not self.plan.panic and not self.proxy.admits(target, now):
                # Out of rotation since the plan was made (tripped by another call, or
                # its one trial slot taken): do not spend this call on it.
                self.proxy.counters["skipped_since_plan"] += 1
                continue
            self._target = target
            self._then = ROUTE
            return
        self._then = NO_ROUTE

    def _a_start_branch(self) -> None:
        target = self._target
        assert target is not None
        self._target = None
        self.attempts += 1
        self.tried[target.carrier] = self.tried.get(target.carrier, 0) + 1
        if self.attempts > 1:
            self.proxy.counters["failovers"] += 1
        self.branch = self.proxy.start_branch(self, target, self.attempts, self._now)

    def _a_authenticate(self) -> None:
        """The challenged INVITE again, to the same target, with credentials (same attempt)."""
        old = self._current()
        challenge = self._challenge
        assert challenge is not None
        branch = self.proxy.resend_branch(self, old, challenge, self._now)
        if branch is None:
            # The challenge cannot be answered (another realm, say): a trunk fault.
            self._verdict = old.target.failures.classify(self._message().status)
            self._then = TRUNK_FAULT
            return
        self.branch = branch

    def _a_refuse(self) -> None:
        assert self.plan.rejected is not None
        status, why = self.plan.rejected
        log.warning(
            "call %s to %s refused with %d: %s",
            self.request.call_id,
            self.request.request_uri.user,
            status,
            why,
        )
        self._answer(status, [self.proxy.warning(why)])

    def _a_refuse_full(self) -> None:
        self.proxy.counters["calls_overflow"] += 1
        self._answer(503, [("Retry-After", "1"), self.proxy.warning("every route at capacity")])

    def _a_give_up(self) -> None:
        self.proxy.counters["calls_failed"] += 1
        self._answer(select_final(self.results))

    # -- actions: the current branch ------------------------------------------------------
    def _a_sample(self) -> None:
        # The first response, even on a branch given up on, shows the target is alive.
        branch = self._current()
        branch.first_response = self._now
        self.proxy.branch_answered(branch, self._now)

    def _a_ring(self) -> None:
        branch = self._current()
        branch.state = PROCEEDING
        self._a_stop_timer()
        # Timer C: a branch may ring, but not for ever (RFC 3261 §16.6 step 11).
        branch.timer = self.proxy.timers.schedule(
            self._now + self.proxy.settings.ring_timeout, partial(self._on_ring_timeout, branch)
        )

    def _a_answer_branch(self) -> None:
        self.final = self._message().status
        self._current().state = ANSWERED
        self._a_stop_timer()
        self.proxy.counters["calls_answered"] += 1

    def _a_end_branch(self) -> None:
        self._current().state = ENDED
        self._a_stop_timer()

    def _a_abandon(self) -> None:
        self._branch_input(ABANDON)

    def _a_relay_provisional(self) -> None:
        response = self._message()
        status = response.status
        # One 180 upstream however many branches ring; 183 carries early
        # media that differs per branch, so each 183 with a body goes up.
        if status not in self.relayed or (status == 183 and response.body):
            self.relayed.add(status)
            self.proxy.respond(self.server, status, self._upstream(response), self._now)

    def _upstream(self, response: Response) -> bytes:
        """A branch's response as the caller gets it: our Via off, the caller's CSeq back."""
        number = self.request.cseq.number
        return response.without_top_via(None if self._current().cseq == number else number)

    def _a_relay(self) -> None:
        response = self._message()
        self.proxy.respond(self.server, response.status, self._upstream(response), self._now)

    def _a_relay_final(self) -> None:
        response = self._message()
        status = response.status
        self.proxy.counters["calls_final"] += 1
        reason = response.get("reason")
        if status >= 500 and reason is not None:
            # A destination's answer (busy, no answer...) that the carrier sent as a 5xx,
            # known by its Q.850 cause: relay the status that says so, never the 5xx.
            cause = q850_cause(reason)
            mapped = Q850_TO_STATUS.get(cause, 500) if cause is not None else 500
            self._answer(mapped, [("Reason", reason)])
            return
        self.final = self.final or status
        self.proxy.respond(self.server, status, self._upstream(response), self._now)

    def _a_open_dialog(self) -> None:
        self.proxy.open_dialog(self, self._current(), self._message(), self._now)

    def _a_record(self) -> None:
        response = self._message()
        status = response.status
        if status < 300:
            self._record(status, "response", self._current().target.failures.classify(status))
        else:
            self._record(status, "response", self._verdict, retry_after(response))

    def _a_record_fault(self) -> None:
        self._record(None, self._kind, FailureTable.local_failure(self._kind))

    def _a_record_neutral(self) -> None:
        self._record(None, self._kind, None)

    def _a_keep_status(self) -> None:
        self.results.append(self._message().status)

    def _a_keep_local(self) -> None:
        # RFC 3261 §8.1.3.1: a transport error counts as a 503, a timeout as nothing received.
        self.results.append(503 if self._kind == UNREACHABLE else None)

    def _a_answer_408(self) -> None:
        self._answer(408)

    def _a_answer_487(self) -> None:
        self.proxy.counters["calls_cancelled"] += 1
        self._answer(487)

    # -- actions: a branch let go of ------------------------------------------------------
    def _a_stop_timer(self) -> None:
        branch = self._current()
        if branch.timer is not None:
            branch.timer.cancel()
            branch.timer = None

    def _a_stop_retransmitting(self) -> None:
        self.proxy.abandon_branch(self._current(), self._now)

    def _a_send_cancel(self) -> None:
        self.proxy.cancel_branch(self, self._current(), self._now)

    def _a_ack_stray(self) -> None:
        self.proxy.ack_stray(self, self._current(), self._message())

    def _a_bye_stray(self) -> None:
        self.proxy.bye_stray(self, self._current(), self._message(), self._now)


def _compile(table: Table) -> _Rows:
    # Action names resolved once, here: a typo fails at import, and an input costs one lookup.
    return {
        key: (next_state, tuple(getattr(Call, "_a_" + a) for a in actions))
        for key, (next_state, actions) in table.items()
    }


_CALL_ROWS = _compile(Call.TABLE)
_BRANCH_ROWS = _compile(Branch.TABLE)
