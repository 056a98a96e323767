"""The call's failover table: every row, every pair it leaves out, and random calls.

Driven like test_proxy_core: a Proxy on a fake clock, bytes in and out, no sockets.
Rows are fed through the call's public entry points (a carrier's response, a timer
firing, the caller's CANCEL) and each named action is checked by what it does; the
pairs a table leaves out are fed to the table itself, where network input is absorbed
and anything else raises CallError.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_proxy_core import CALLER, A, B, C, Net, invite, reply

from trunkguard.health import TIMEOUT, UNREACHABLE, OutcomeClass
from trunkguard.proxy import Flow, Plan, Proxy, select_final
from trunkguard.proxy._call import (
    ABANDON,
    ABANDONED,
    ANSWERED,
    BRANCH_INPUTS,
    BRANCH_NETWORK_INPUTS,
    BRANCH_STATES,
    BUDGET,
    CALL_INPUTS,
    CALL_NETWORK_INPUTS,
    CALL_STATES,
    CALLING,
    CANCEL,
    CANCELLED,
    CANCELLING,
    CHALLENGE,
    CLEANED,
    DEST_FINAL,
    DESTINATION_FINAL,
    ENDED,
    FAILED,
    FINAL,
    LOST,
    NEW,
    NO_ANSWER,
    NO_RESPONSE,
    NO_ROUTE,
    P18X,
    P100,
    PLAN,
    PLAN_REFUSED,
    PORT_UNREACHABLE,
    PROCEEDING,
    R1XX,
    R2XX,
    REJECTED,
    RFINAL,
    RING_TIMEOUT,
    ROUTE,
    ROUTE_MISMATCH,
    ROUTES_FULL,
    ROUTING,
    TRUNK_FAULT,
    TRYING,
    Branch,
    Call,
    CallError,
)
from trunkguard.proxy._entries import server_key
from trunkguard.proxy._timers import TimerHandle
from trunkguard.sip import Request, Response, ServerInvite, parse_message
from trunkguard.sip._digest import Credentials

RING = 20.0  # ring_timeout (Timer C) in these tests
Message = Request | Response
_ids = itertools.count(1)

# The carrier response that stands for each response input.
STATUS = {P100: 100, P18X: 180, R2XX: 200, TRUNK_FAULT: 503, ROUTE_MISMATCH: 488, DEST_FINAL: 486}
BRANCH_STATUS = {R1XX: 180, R2XX: 200, RFINAL: 487}
# The kind an attempt record gets for each input that is not a response.
KIND = {
    NO_RESPONSE: TIMEOUT,
    PORT_UNREACHABLE: UNREACHABLE,
    RING_TIMEOUT: "ring_timeout",
    BUDGET: "budget",
    CANCEL: "cancelled",
}
REFUSED = Plan([], rejected=(403, "blocked by a number rule"))
FULL = Plan([], overflow=["a", "b", "c"])
# Every carrier of these scenes has credentials, so a 401 is a challenge to answer.
CREDENTIALS = Credentials("trunk1", "pw-of-the-table", "carrier.test")
CHALLENGE_HEADER = 'WWW-Authenticate: Digest realm="carrier.test", nonce="n1", qop="auth"\r\n'


class Scene:
    """One call through a proxy, and everything the proxy sent, in order."""

    def __init__(self, **settings: object) -> None:
        self.net = Net(ring_timeout=RING, auth=CREDENTIALS, **settings)
        self.call_id = f"table-{next(_ids)}"
        self.log: list[tuple[Flow, Message]] = []
        self.invites: list[tuple[Flow, Request]] = []
        self._call: Call | None = None

    @property
    def proxy(self) -> Proxy:
        return self.net.proxy

    @property
    def now(self) -> float:
        return self.net.now

    @property
    def call(self) -> Call:
        assert self._call is not None
        return self._call

    def take(self) -> None:
        out = self.net.take()
        self.log += out
        known = {r.vias[0].branch for _, r in self.invites}
        for f, m in out:
            if isinstance(m, Request) and m.method == "INVITE" and m.vias[0].branch not in known:
                known.add(m.vias[0].branch)
                self.invites.append((f, m))  # once each: not its retransmissions

    def dial(self) -> Call:
        self.net.feed(invite(self.call_id), CALLER)
        self.take()
        (call,) = [e.owner for e in self.proxy.servers.values() if isinstance(e.owner, Call)]
        self._call = call
        return call

    def new_call(self) -> Call:
        """A call made the way the proxy makes one, not started yet."""
        request = parse_message(invite(self.call_id))
        assert isinstance(request, Request)
        entry = self.proxy.server_entry(
            request, CALLER, server_key(request, "INVITE"), ServerInvite
        )
        call = Call(
            self.proxy, request, CALLER, entry, self.proxy.plan(request, self.now), self.now
        )
        entry.owner = call
        self._call = call
        return call

    def response(self, index: int, status: int) -> Response:
        """What the carrier of INVITE ``index`` answers (each INVITE has its own To tag)."""
        message = parse_message(reply(self.invites[index][1], status, to_tag=f"t{index}"))
        assert isinstance(message, Response)
        return message

    def respond(self, index: int, status: int) -> None:
        flow, request = self.invites[index]
        self.net.feed(reply(request, status, to_tag=f"t{index}"), flow)
        self.take()

    def fire(self, handle: TimerHandle | None) -> None:
        """Run one timer now, as the timer queue would when it comes due."""
        assert handle is not None and not handle.cancelled
        callback = handle.callback  # a cancelled handle lets go of its callback
        handle.cancel()
        callback(self.now)
        self.take()

    def current(self) -> int:
        """Index of the current branch's INVITE."""
        branch = self.call.branch
        assert branch is not None
        return next(i for i, (_, r) in enumerate(self.invites) if r.vias[0].branch == branch.id)


def to_caller(out: list[tuple[Flow, Message]]) -> list[int]:
    return [m.status for f, m in out if f == CALLER and isinstance(m, Response)]


def requests_to(out: list[tuple[Flow, Message]], flow: Flow) -> list[Request]:
    return [m for f, m in out if f == flow and isinstance(m, Request)]


# -- reaching each state ----------------------------------------------------------------------
def reach(state: str, **settings: object) -> Scene:
    s = Scene(**settings)
    if state == NEW:
        s.new_call()
        return s
    if state == REJECTED:
        s.new_call().plan = REFUSED
        s.call.start(s.now)
        s.take()
        return s
    call = s.dial()
    if state == ROUTING:
        call.state = ROUTING  # never seen between two inputs: forced, for the table alone
    elif state == PROCEEDING:
        s.respond(0, 100)
    elif state == ANSWERED:
        s.respond(0, 200)
    elif state == DESTINATION_FINAL:
        s.respond(0, 486)
    elif state == NO_ANSWER:
        s.respond(0, 180)
        s.net.advance(RING + 1)
        s.take()
    elif state == FAILED:
        for i in range(3):
            s.respond(i, 503)
    elif state == CANCELLED:
        call.cancel(s.now)
        s.take()
    assert call.state == state
    return s


def apply(s: Scene, what: str) -> None:
    """Feed ``what`` the way it reaches a call in the proxy."""
    call = s.call
    branch = call.branch
    if what in (PLAN, PLAN_REFUSED, ROUTES_FULL):
        if what == PLAN_REFUSED:
            call.plan = REFUSED
        elif what == ROUTES_FULL:
            call.plan = FULL
        call.start(s.now)
    elif what in STATUS:
        assert branch is not None
        call.on_response(branch, s.response(s.current(), STATUS[what]), s.now)
    elif what == PORT_UNREACHABLE:
        assert branch is not None
        s.proxy.transport_error(branch.flow, s.now)  # the INVITE transaction reports it
    elif what in (NO_RESPONSE, RING_TIMEOUT):
        assert branch is not None
        s.fire(branch.timer)  # the invite timer, or Timer C once it rang
    elif what == BUDGET:
        s.fire(call.budget_timer)
    elif what == CANCEL:
        call.cancel(s.now)
    elif what == CHALLENGE:
        assert branch is not None
        flow, request = s.invites[s.current()]
        del flow
        data = reply(request, 401, to_tag=f"t{s.current()}", extra=CHALLENGE_HEADER)
        challenge = parse_message(data)
        assert isinstance(challenge, Response)
        call.on_response(branch, challenge, s.now)
    else:
        raise AssertionError(what)
    s.take()


# -- what each action does ------------------------------------------------------------------
@dataclass
class Before:
    state: str
    branch: Branch | None
    branch_state: str | None
    log: int
    attempts: int
    tries: int
    counters: Counter[str]


def snapshot(s: Scene) -> Before:
    call = s.call
    branch = call.branch
    return Before(
        state=call.state,
        branch=branch,
        branch_state=None if branch is None else branch.state,
        log=len(s.log),
        attempts=len(s.net.attempts),
        tries=call.attempts,
        counters=Counter(s.proxy.counters),
    )


Check = Callable[[Scene, Before, str], None]


def _branch(b: Before) -> Branch:
    assert b.branch is not None
    return b.branch


def _counted(name: str) -> Check:
    def check(s: Scene, b: Before, what: str) -> None:
        assert s.proxy.counters[name] == b.counters[name] + 1, name

    return check


def _start_branch(s: Scene, b: Before, what: str) -> None:
    branch = s.call.branch
    assert branch is not None and branch is not b.branch and branch.state == CALLING
    assert s.call.attempts == b.tries + 1
    sent = [r for r in requests_to(s.log[b.log :], branch.flow) if r.method == "INVITE"]
    assert [r.vias[0].branch for r in sent] == [branch.id]


def _sample(s: Scene, b: Before, what: str) -> None:
    assert _branch(b).first_response == s.now


def _ring(s: Scene, b: Before, what: str) -> None:
    branch = _branch(b)
    assert branch.state == PROCEEDING
    assert branch.timer is not None and branch.timer.when == s.now + RING  # Timer C


def _answer_branch(s: Scene, b: Before, what: str) -> None:
    branch = _branch(b)
    assert branch.state == ANSWERED and branch.timer is None
    _counted("calls_answered")(s, b, what)


def _end_branch(s: Scene, b: Before, what: str) -> None:
    branch = _branch(b)
    assert branch.state == ENDED and branch.timer is None


def _record(s: Scene, b: Before, what: str) -> None:
    record = s.net.attempts[b.attempts]
    assert (record.status, record.kind) == (STATUS[what], "response")
    assert record.target == _branch(b).target.name


def _record_fault(s: Scene, b: Before, what: str) -> None:
    record = s.net.attempts[b.attempts]
    assert (record.status, record.kind) == (None, KIND[what])
    assert record.verdict is not None and record.verdict.klass is OutcomeClass.TRUNK_FAULT


def _record_neutral(s: Scene, b: Before, what: str) -> None:
    record = s.net.attempts[b.attempts]
    assert (record.status, record.kind, record.verdict) == (None, KIND[what], None)


def _open_dialog(s: Scene, b: Before, what: str) -> None:
    assert s.call_id in s.proxy.dialogs.table


def _keep_status(s: Scene, b: Before, what: str) -> None:
    assert s.call.results[-1] == STATUS[what]


def _keep_local(s: Scene, b: Before, what: str) -> None:
    assert s.call.results[-1] == (503 if what == PORT_UNREACHABLE else None)


def _abandon(s: Scene, b: Before, what: str) -> None:
    branch = _branch(b)
    assert branch.state == (ABANDONED if b.branch_state == CALLING else CANCELLING)
    assert branch.timer is None


def _nothing(s: Scene, b: Before, what: str) -> None:
    pass


def _authenticate(s: Scene, b: Before, what: str) -> None:
    old = _branch(b)
    branch = s.call.branch
    assert branch is not None and branch is not old and branch.state == CALLING
    assert (branch.target, branch.attempt, s.call.attempts) == (old.target, old.attempt, b.tries)
    (sent,) = [r for r in requests_to(s.log[b.log :], branch.flow) if r.method == "INVITE"]
    assert sent.vias[0].branch == branch.id
    assert sent.cseq.number == old.cseq + 1  # RFC 3261 §22.2: CSeq + 1, same Call-ID
    assert sent.call_id == s.call_id and sent.from_.tag == "caller1"
    assert (sent.get("authorization") or "").startswith('Digest username="trunk1"')
    _counted("auth_challenges_answered")(s, b, what)


def _refuse(s: Scene, b: Before, what: str) -> None:
    (final,) = [m for f, m in s.log[b.log :] if f == CALLER and isinstance(m, Response)]
    assert final.get("warning") == '399 127.0.0.1:5060 "blocked by a number rule"'


def _refuse_full(s: Scene, b: Before, what: str) -> None:
    (final,) = [m for f, m in s.log[b.log :] if f == CALLER and isinstance(m, Response)]
    assert final.get("retry-after") == "1"
    _counted("calls_overflow")(s, b, what)


CALL_ACTIONS: dict[str, Check] = {
    "pick_route": _nothing,  # the follow-up row (next route, no route left) is checked
    "start_branch": _start_branch,
    "refuse": _refuse,
    "refuse_full": _refuse_full,
    "give_up": _counted("calls_failed"),
    "sample": _sample,
    "ring": _ring,
    "relay_provisional": _nothing,  # what reached the caller is checked for every row
    "answer_branch": _answer_branch,
    "relay": _nothing,
    "record": _record,
    "open_dialog": _open_dialog,
    "end_branch": _end_branch,
    "keep_status": _keep_status,
    "abandon": _abandon,
    "record_fault": _record_fault,
    "keep_local": _keep_local,
    "record_neutral": _record_neutral,
    "relay_final": _counted("calls_final"),
    "answer_408": _nothing,
    "answer_487": _counted("calls_cancelled"),
    "authenticate": _authenticate,
}


def caller_gets(s: Scene, b: Before, what: str, actions: tuple[str, ...]) -> list[int]:
    """What the caller must receive for these actions, in order."""
    out: list[int] = []
    for action in actions:
        if action in ("relay_provisional", "relay", "relay_final"):
            out.append(STATUS[what])
        elif action == "answer_408":
            out.append(408)
        elif action == "answer_487":
            out.append(487)
        elif action == "refuse":
            out.append(403)
        elif action == "refuse_full":
            out.append(503)
        elif action == "give_up":
            out.append(select_final(s.call.results))
    return out


# -- every row of the call table --------------------------------------------------------------
def _call_rows() -> list[object]:
    params: list[object] = []
    for (state, what), (after, _) in Call.TABLE.items():
        if state == ROUTING:
            continue  # the follow-up of the rows that lead there, below
        if after == ROUTING:
            params.append(pytest.param(state, what, ROUTE, id=f"{state}+{what}+route"))
            params.append(pytest.param(state, what, NO_ROUTE, id=f"{state}+{what}+none"))
        else:
            params.append(pytest.param(state, what, None, id=f"{state}+{what}"))
    return params


def test_every_call_action_is_checked() -> None:
    named = {a for _, actions in Call.TABLE.values() for a in actions}
    assert named == set(CALL_ACTIONS)
    # Both rows out of ROUTING are reached as follow-ups.
    assert {w for s, w in Call.TABLE if s == ROUTING} == {ROUTE, NO_ROUTE}


@pytest.mark.parametrize(("state", "what", "then"), _call_rows())
def test_call_row(state: str, what: str, then: str | None) -> None:
    after, actions = Call.TABLE[(state, what)]
    if then is not None:
        # ``next route``: the plan has carriers left; ``no route left``: one attempt only
        # (or, for a call that starts, an empty plan).
        follow_state, follow = Call.TABLE[(ROUTING, then)]
        after, actions = follow_state, actions + follow
    settings: dict[str, object] = {"max_attempts": 1} if then == NO_ROUTE else {}
    s = reach(state, **settings)
    if state == NEW and then == NO_ROUTE:
        s.call.plan = Plan([])
    b = snapshot(s)
    apply(s, what)
    call = s.call
    assert call.state == after
    for action in actions:
        CALL_ACTIONS[action](s, b, what)
    new = s.log[b.log :]
    assert to_caller(new) == caller_gets(s, b, what, actions)
    records = sum(a in ("record", "record_fault", "record_neutral") for a in actions)
    assert len(s.net.attempts) == b.attempts + records
    if after in FINAL:
        assert call.budget_timer is None
    if "abandon" in actions and b.branch_state == PROCEEDING:
        assert [r.method for r in requests_to(new, _branch(b).flow)] == ["CANCEL"]


# -- every pair the call table leaves out ---------------------------------------------------
def _gaps(states: Iterable[str], inputs: Iterable[str], table: Container[object]) -> list[object]:
    """Every (state, input) pair that ``table`` has no row for, as test parameters."""
    return [
        pytest.param(state, what, id=f"{state}+{what}")
        for state in states
        for what in inputs
        if (state, what) not in table
    ]


@pytest.mark.parametrize(("state", "what"), _gaps(CALL_STATES, CALL_INPUTS, Call.TABLE))
def test_call_gap(state: str, what: str) -> None:
    s = reach(state)
    call = s.call
    response = None
    if what in STATUS:
        request = parse_message(invite(s.call_id))
        assert isinstance(request, Request)
        response = parse_message(reply(request, STATUS[what]))
        assert isinstance(response, Response)
    b = snapshot(s)
    branch_state = None if call.branch is None else call.branch.state
    if what in CALL_NETWORK_INPUTS:
        call._feed(what, s.now, call.branch, response, KIND.get(what, ""))
        s.take()
        assert call.state == state  # absorbed: late, duplicate, or a timer that lost a race
        assert (None if call.branch is None else call.branch.state) == branch_state
        assert s.log[b.log :] == []
        assert len(s.net.attempts) == b.attempts
        assert s.proxy.counters == b.counters
    else:
        with pytest.raises(CallError, match=f"'{what}' not allowed in {state}"):
            call._feed(what, s.now, call.branch, response)


def test_starting_a_call_twice_is_an_error() -> None:
    s = reach(TRYING)
    with pytest.raises(CallError, match=f"call {s.call_id}: 'plan' not allowed in TRYING"):
        s.call.start(s.now)


def test_the_network_inputs_are_the_ones_a_peer_or_a_timer_brings() -> None:
    assert set(CALL_INPUTS) - CALL_NETWORK_INPUTS == {
        PLAN,
        PLAN_REFUSED,
        ROUTES_FULL,
        ROUTE,
        NO_ROUTE,
    }
    assert set(BRANCH_INPUTS) - BRANCH_NETWORK_INPUTS == {ABANDON}


def test_the_tables_print_one_row_per_move() -> None:
    call = Call.transition_table().splitlines()
    branch = Branch.transition_table().splitlines()
    assert len(call) == len(Call.TABLE) and len(branch) == len(Branch.TABLE)
    assert "TRYING            + 2xx" in call[7]
    assert all(line == line.rstrip() for line in call + branch)


# -- the branch table: a branch the call let go of -----------------------------------------------
def reach_branch(state: str) -> tuple[Scene, Branch]:
    """A call whose first branch (INVITE 0, to carrier a) is in ``state``."""
    s = Scene()
    call = s.dial()
    first = call.branch
    assert first is not None
    if state == PROCEEDING:
        s.respond(0, 100)
    elif state == ANSWERED:
        s.respond(0, 200)
    elif state == ENDED:
        s.respond(0, 503)  # the call moves on to b
    elif state in (ABANDONED, CLEANED):
        s.fire(first.timer)  # silent past the invite timer: the call moves on to b
        if state == CLEANED:
            s.respond(0, 200)
    elif state == CANCELLING:
        s.respond(0, 180)
        call.cancel(s.now)
        s.take()
    assert first.state == state
    return s, first


BRANCH_ACTIONS = ("stop_timer", "stop_retransmitting", "send_cancel", "sample", "ack_stray")


def test_every_branch_action_is_checked() -> None:
    named = {a for _, actions in Branch.TABLE.values() for a in actions}
    assert named == {*BRANCH_ACTIONS, "bye_stray"}


@pytest.mark.parametrize(("state", "what"), list(Branch.TABLE), ids="+".join)
def test_branch_row(state: str, what: str) -> None:
    after, actions = Branch.TABLE[(state, what)]
    s, branch = reach_branch(state)
    b = snapshot(s)
    first_response = branch.first_response
    if what == ABANDON:
        s.call._feed_branch(ABANDON, s.now, branch, None)
    elif what == LOST:
        s.call.on_no_response(branch, TIMEOUT, s.now)  # Timer B, or a transport error
    else:
        s.respond(0, BRANCH_STATUS[what])
    s.take()
    new = s.log[b.log :]
    assert branch.state == after
    assert to_caller(new) == []  # the caller never hears of a branch let go of
    assert len(s.net.attempts) == b.attempts  # and it was recorded when let go of
    sent = Counter(r.method for r in requests_to(new, A))
    acks = actions.count("ack_stray") + (1 if what == RFINAL else 0)  # the txn ACKs a final
    want = Counter(
        {"CANCEL": actions.count("send_cancel"), "ACK": acks, "BYE": actions.count("bye_stray")}
    )
    assert sent == +want
    tag = "t0"
    for request in requests_to(new, A):
        if request.method == "CANCEL":
            assert request.vias[0].branch == branch.id
        elif request.method in ("BYE", "ACK") and what == R2XX:
            assert request.to.tag == tag
    if "stop_timer" in actions:
        assert branch.timer is None
    if "stop_retransmitting" in actions:
        assert branch.txn is not None and "A" not in branch.txn.timers
    if "sample" in actions:
        assert first_response is None and branch.first_response == s.now
    else:
        assert branch.first_response == first_response




@pytest.mark.parametrize(
    ("state", "what"), _gaps(BRANCH_STATES, BRANCH_INPUTS, Branch.TABLE)
)
def test_branch_gap(state: str, what: str) -> None:
    s, branch = reach_branch(state)
    b = snapshot(s)
    response = s.response(0, BRANCH_STATUS[what]) if what in BRANCH_STATUS else None
    if what in BRANCH_NETWORK_INPUTS:
        s.call._feed_branch(what, s.now, branch, response)
        s.take()
        assert branch.state == state
        assert s.log[b.log :] == [] and s.proxy.counters == b.counters
    else:
        with pytest.raises(CallError, match=f"branch 1: 'abandon' not allowed in {state}"):
            s.call._feed_branch(what, s.now, branch, response)


# -- random calls against the invariants ----------------------------------------------------------
CARRIERS = (A, B, C)

_respond = st.tuples(
    st.just("respond"),
    st.integers(0, 5),
    st.sampled_from([100, 180, 183, 200, 200, 404, 408, 486, 487, 488, 503]),
)
steps = st.lists(
    st.one_of(
        _respond,
        _respond,
        st.tuples(st.just("advance"), st.sampled_from([0.3, 2.0, 11.0, RING + 1])),
        st.tuples(st.just("unreachable"), st.integers(0, 2)),
        st.tuples(st.just("cancel")),
    ),
    max_size=20,
)


class Carriers:
    """The carriers' side: lawful SIP, picked at random (a final is only ever resent)."""

    def __init__(self, s: Scene) -> None:
        self.s = s
        self.final: dict[int, int] = {}
        self.rang: dict[int, int] = {}  # branch -> log position of its first provisional
        self.dead: set[int] = set()  # its transaction ended without an answer
        self.delivered_2xx: Counter[str] = Counter()  # To tag -> 2xx that reached the call

    def respond(self, pick: int, status: int) -> None:
        s = self.s
        if not s.invites:
            return
        i = pick % len(s.invites)
        if i in self.dead:
            return
        if (
            i not in self.rang
            and i not in self.final
            and s.invites[i][1].vias[0].branch not in s.proxy.clients
        ):
            # Timer B ended its transaction (32 s of silence): an answer now would be a
            # stray of no transaction, which the proxy drops before any call sees it.
            self.dead.add(i)
            return
        status = self.final.get(i, status)
        if status < 200:
            self.rang.setdefault(i, len(s.log))
        else:
            self.final.setdefault(i, status)
        branch = s.invites[i][1].vias[0].branch
        if 200 <= status < 300 and (branch in s.proxy.clients or s.proxy.finished.get(branch)):
            # It reaches the call, or the record the transaction left (not after Timer M).
            self.delivered_2xx[f"t{i}"] += 1
        s.respond(i, status)

    def unreachable(self, k: int) -> None:
        flow = CARRIERS[k]
        for i, (f, _) in enumerate(self.s.invites):
            if f == flow and i not in self.final:
                self.dead.add(i)
        self.s.proxy.transport_error(flow, self.s.now)
        self.s.take()


def _cancel(s: Scene) -> None:
    s.net.feed(
        (
            "CANCEL sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{s.call_id}\r\n"
            "From: <sip:agent@127.0.0.1>;tag=caller1\r\nTo: <sip:15551234567@127.0.0.1>\r\n"
            f"Call-ID: {s.call_id}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode(),
        CALLER,
    )
    s.take()


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_random_calls_keep_the_invariants(script: list[tuple[Any, ...]]) -> None:
    s = Scene()
    call = s.dial()
    carriers = Carriers(s)
    for step in script:
        kind = step[0]
        if kind == "respond":
            carriers.respond(step[1], step[2])
        elif kind == "advance":
            s.net.advance(step[1])
            s.take()
        elif kind == "unreachable":
            carriers.unreachable(step[1])
        else:
            _cancel(s)
        assert call.state != ROUTING  # only ever within one input
    s.net.advance(600)  # every timer runs out: Timer C, the budget, every transaction
    s.take()
    log = s.log

    # Exactly one final answer reaches the caller (resent as is, never a second one).
    finals = [
        (i, m.status, m.to.tag)
        for i, (f, m) in enumerate(log)
        if f == CALLER
        and isinstance(m, Response)
        and m.status >= 200
        and m.cseq.method == "INVITE"  # not the 200 for a CANCEL
    ]
    assert finals and len({(code, tag) for _, code, tag in finals}) == 1, finals
    first_final, status, tag = finals[0]
    assert call.state in FINAL and call.state != ROUTING
    assert (call.state == ANSWERED) == (200 <= status < 300)
    relayed = tag if 200 <= status < 300 else None
    event(f"call ended {call.state}")

    # After the caller's final, only ACK, BYE and CANCEL go to a carrier.
    late = [m for f, m in log[first_final:] if f != CALLER]
    assert all(isinstance(m, Request) and m.method in ("ACK", "BYE", "CANCEL") for m in late)

    # No carrier leg is left ringing or billing.
    by_branch = {r.vias[0].branch: i for i, (_, r) in enumerate(s.invites)}
    cancelled: set[int] = set()
    acked: Counter[str | None] = Counter()
    byed: list[str | None] = []
    for pos, (f, m) in enumerate(log):
        if f == CALLER or not isinstance(m, Request):
            continue
        if m.method == "CANCEL":
            i = by_branch[m.vias[0].branch]
            assert i in carriers.rang and carriers.rang[i] <= pos  # never before a provisional
            cancelled.add(i)
        elif m.method == "ACK":
            acked[m.to.tag] += 1
        elif m.method == "BYE":
            byed.append(m.to.tag)
    for i in range(len(s.invites)):
        answer = carriers.final.get(i)
        if answer is not None and answer < 300 and f"t{i}" != relayed:
            # A 2xx nobody wanted: ACKed by us, each time it came (RFC 3261 §13.2.2.4),
            # and hung up with one BYE transaction.
            tag_i = f"t{i}"
            assert acked[tag_i] == carriers.delivered_2xx[tag_i] > 0, (i, answer)
            assert tag_i in byed, (i, answer)
        if i in carriers.rang and answer is None:
            assert i in cancelled, i  # it rang and was let go of: CANCELled
    assert relayed not in byed
    if set(byed):
        event("a stray 2xx was ACKed and BYEd")
    if cancelled:
        event("a branch let go of was CANCELled")
    bye_txns = {m.vias[0].branch for f, m in log if isinstance(m, Request) and m.method == "BYE"}
    assert len(bye_txns) == len(set(byed)) == s.proxy.counters["stray_byes_sent"]
    assert s.proxy.counters["cancels_sent"] == len(cancelled)

    # One attempt record per branch; nothing left waited on.
    assert len({(a.target, a.attempt) for a in s.net.attempts}) == len(s.net.attempts)
    assert len(s.net.attempts) == len(s.invites)
    open_work = s.proxy.open_work()
    assert open_work["calls_unanswered"] == 0 and open_work["branches_pending"] == 0
