"""The four transaction state machines, driven h2-style: every state x input, with a fake clock.

The driver below feeds a transaction one input at a time and checks each step
against the class's own TABLE: the state moves only along a row, the events are
those the row's actions announce, network input the table does not list is
absorbed without a trace, transaction-user input it does not list raises.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sipgen import build

from trunkguard.sip import (
    ALL_TRANSACTIONS,
    ClientInvite,
    ClientNonInvite,
    Deliver,
    Event,
    Request,
    Response,
    Send,
    ServerInvite,
    ServerNonInvite,
    Terminated,
    TimedOut,
    TimerConfig,
    Transaction,
    TransactionError,
    TransportFailed,
    parse_message,
)
from trunkguard.sip._transaction import (
    ABANDON,
    ACK,
    R1XX,
    R2XX,
    REQUEST,
    RFINAL,
    TERMINATED,
    TRANSPORT_ERROR,
    TU_1XX,
    TU_2XX,
    TU_FINAL,
)

CFG = TimerConfig()  # T1 0.5, T2 4, T4 5
T1, T2, T4, T64 = CFG.t1, CFG.t2, CFG.t4, 64 * CFG.t1
TIMER = "timer"  # the driver's name for "fire handle_timer at the deadline"

DIALOG = [
    "Via: SIP/2.0/UDP caller.example.com;branch=z9hG4bKcaller",
    "From: <sip:alice@example.com>;tag=a1",
    "To: <sip:bob@example.net>",
    "Call-ID: txn-test@example.com",
    "Max-Forwards: 70",
]
INVITE_BYTES = build("INVITE sip:bob@example.net SIP/2.0", [*DIALOG, "CSeq: 1 INVITE"])
OPTIONS_BYTES = build("OPTIONS sip:bob@example.net SIP/2.0", [*DIALOG, "CSeq: 2 OPTIONS"])


def _request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


INVITE = _request(INVITE_BYTES)
OPTIONS = _request(OPTIONS_BYTES)


def response(status: int, cseq: str = "1 INVITE") -> Response:
    msg = parse_message(build(f"SIP/2.0 {status} Reason", [*DIALOG, f"CSeq: {cseq}"]))
    assert isinstance(msg, Response)
    return msg


def response_bytes(status: int) -> bytes:
    return f"SIP/2.0 {status} from the TU\r\n\r\n".encode()


STATUSES = {
    R1XX: [100, 180, 183],
    R2XX: [200, 202],
    RFINAL: [300, 404, 486, 503, 603, 699],
    TU_1XX: [100, 180],
    TU_2XX: [200],
    TU_FINAL: [302, 486, 500],
}

# Inputs each class accepts from the network and from its transaction user.
INPUTS: dict[type[Transaction], list[str]] = {
    ClientInvite: [R1XX, R2XX, RFINAL, TRANSPORT_ERROR, ABANDON],
    ClientNonInvite: [R1XX, R2XX, RFINAL, TRANSPORT_ERROR],
    ServerInvite: [REQUEST, ACK, TU_1XX, TU_2XX, TU_FINAL, TRANSPORT_ERROR],
    ServerNonInvite: [REQUEST, TU_1XX, TU_2XX, TU_FINAL, TRANSPORT_ERROR],
}

# What each action of a row announces. Timers are armed and stopped silently.
ACTION_EVENTS: dict[str, type] = {
    "deliver": Deliver,
    "send": Send,
    "resend": Send,
    "send_ack": Send,
    "retransmit_a": Send,
    "retransmit_e": Send,
    "retransmit_e_t2": Send,
    "retransmit_g": Send,
    "timeout_b": TimedOut,
    "timeout_f": TimedOut,
    "timeout_h": TimedOut,
    "transport_failed": TransportFailed,
}
QUICK_TIMERS = {"D", "I", "J", "K"}  # zero over a reliable transport
RETRANSMIT_TIMERS = {"A", "E", "G"}  # never armed over a reliable transport


def states_of(cls: type[Transaction]) -> set[str]:
    out = {cls.INITIAL, TERMINATED}
    for (state, _), (nxt, _) in cls.TABLE.items():
        out |= {state, nxt}
    return out


def timer_names(cls: type[Transaction]) -> set[str]:
    return {what.split()[1] for (_, what) in cls.TABLE if what.startswith("timer ")}


# -- the driver ------------------------------------------------------------------------------
@dataclass
class Step:
    what: str
    before: str
    after: str
    events: list[Event]
    raised: bool
    now: float


@dataclass
class Driver:
    cls: type[Transaction]
    reliable: bool
    clock: float = 0.0
    ack_calls: list[Response] = field(default_factory=list)
    last_response: bytes | None = None  # what a server transaction has sent last
    history: list[Step] = field(default_factory=list)
    all_events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        cls = self.cls
        self.txn: Transaction
        if cls is ClientInvite:
            self.txn = ClientInvite(
                INVITE_BYTES, self._make_ack, reliable=self.reliable, timers=CFG
            )
        elif cls is ClientNonInvite:
            self.txn = ClientNonInvite(OPTIONS_BYTES, reliable=self.reliable, timers=CFG)
        elif cls is ServerInvite:
            self.txn = ServerInvite(INVITE, reliable=self.reliable, timers=CFG)
        else:
            self.txn = ServerNonInvite(OPTIONS, reliable=self.reliable, timers=CFG)
        if isinstance(self.txn, ClientInvite | ClientNonInvite):
            events = self.txn.start(self.clock)
            assert events == [Send(self.request_bytes)]
            assert self.txn.deadline() == (T64 if self.reliable else T1)
        else:
            assert self.txn.deadline() is None
        self.check_invariants()

    @property
    def request_bytes(self) -> bytes:
        return INVITE_BYTES if self.cls is ClientInvite else OPTIONS_BYTES

    def _make_ack(self, resp: Response) -> bytes:
        self.ack_calls.append(resp)
        return b"ACK for " + str(resp.status).encode()

    @property
    def state(self) -> str:
        return self.txn.state

    def advance(self, dt: float) -> None:
        """Let time pass, but never beyond the next deadline (timers are not skipped)."""
        deadline = self.txn.deadline()
        self.clock += dt
        if deadline is not None:
            self.clock = min(self.clock, deadline)

    # -- one input ------------------------------------------------------------------------
    def apply(self, what: str, status: int = 0) -> Step:
        if what == TIMER:
            return self._fire()
        txn, now, before = self.txn, self.clock, self.state
        timers_before = dict(txn.timers)
        resp = response(status) if what in (R1XX, R2XX, RFINAL) else None
        data = response_bytes(status)
        try:
            events = self._call(what, status, resp, data, now)
        except TransactionError as exc:
            assert what not in self.cls.NETWORK_INPUTS, "network input must never raise"
            assert (before, what) not in self.cls.TABLE
            assert self.cls.__name__ in str(exc) and repr(what) in str(exc)
            assert self.state == before
            assert txn.timers == timers_before
            step = Step(what, before, before, [], True, now)
            self.history.append(step)
            self.check_invariants()
            return step
        row = self.cls.TABLE.get((before, what))
        if row is None:
            assert what in self.cls.NETWORK_INPUTS, f"TU input {what!r} in {before} did not raise"
            assert events == [], f"absorbed {what!r} in {before} produced {events}"
            assert self.state == before
            assert txn.timers == timers_before
        else:
            assert self.state == row[0]
            self._check_events(before, row, events, resp=resp, sent=data)
            if what in (TU_1XX, TU_2XX, TU_FINAL):
                self.last_response = data
        step = Step(what, before, self.state, events, False, now)
        self.history.append(step)
        self.all_events += events
        self.check_invariants()
        return step

    def _call(
        self, what: str, status: int, resp: Response | None, data: bytes, now: float
    ) -> list[Event]:
        txn = self.txn
        if what in (R1XX, R2XX, RFINAL):
            assert isinstance(txn, ClientInvite | ClientNonInvite) and resp is not None
            return txn.receive(resp, now)
        if what == TRANSPORT_ERROR:
            assert isinstance(txn, ClientInvite | ClientNonInvite | ServerInvite | ServerNonInvite)
            return txn.transport_error(now)
        if what == ABANDON:
            assert isinstance(txn, ClientInvite)
            return txn.abandon(now)
        if what == REQUEST:
            assert isinstance(txn, ServerInvite | ServerNonInvite)
            return txn.receive_request(now)
        if what == ACK:
            assert isinstance(txn, ServerInvite)
            return txn.receive_ack(now)
        assert isinstance(txn, ServerInvite | ServerNonInvite)
        return txn.respond(status, data, now)

    def _fire(self) -> Step:
        txn, before = self.txn, self.state
        deadline = txn.deadline()
        if deadline is None:
            assert txn.handle_timer(self.clock + 1e6) == [], "no timer armed, nothing may fire"
            return Step(TIMER, before, before, [], False, self.clock)
        assert deadline >= self.clock, "the clock never passes an armed timer"
        self.clock = now = deadline
        due = sorted((when, name) for name, when in txn.timers.items() if when <= now)
        assert due and due[0][0] == deadline
        events = txn.handle_timer(now)
        if self.reliable:
            assert not any(isinstance(e, Send) for e in events), "no retransmission over TCP"
        if len(due) == 1:
            name = due[0][1]
            row = self.cls.TABLE.get((before, "timer " + name))
            assert row is not None, f"timer {name} was armed in {before} without a row"
            assert self.state == row[0]
            self._check_events(before, row, events, resp=None, sent=None)
        else:
            assert self.state in self._reachable_by_timers(before, {n for _, n in due})
        assert all(when > now for when in txn.timers.values()), "every due timer fired"
        step = Step(TIMER, before, self.state, events, False, now)
        self.history.append(step)
        self.all_events += events
        self.check_invariants()
        return step

    def _reachable_by_timers(self, state: str, names: set[str]) -> set[str]:
        seen, todo = {state}, [state]
        while todo:
            s = todo.pop()
            for n in names:
                row = self.cls.TABLE.get((s, "timer " + n))
                if row and row[0] not in seen:
                    seen.add(row[0])
                    todo.append(row[0])
        return seen

    def _check_events(
        self,
        before: str,
        row: tuple[str, tuple[str, ...]],
        events: list[Event],
        *,
        resp: Response | None,
        sent: bytes | None,
    ) -> None:
        next_state, actions = row
        expected: list[type] = []
        for action in actions:
            kind = ACTION_EVENTS.get(action)
            if action == "resend" and self._resend_bytes() is None:
                kind = None  # a server with nothing sent yet has nothing to resend
            if kind is not None:
                expected.append(kind)
        entering = next_state == TERMINATED and before != TERMINATED
        if entering:
            expected.append(Terminated)
        assert [type(e) for e in events] == expected, (before, actions, events)
        for action, event in zip(
            [a for a in actions if a in ACTION_EVENTS and not self._skipped(a)],
            events,
            strict=False,
        ):
            if isinstance(event, Deliver):
                assert event.response is resp
            elif isinstance(event, Send):
                self._check_send(action, event, sent)
            elif isinstance(event, TimedOut):
                assert event.timer == action[-1].upper()
            elif isinstance(event, TransportFailed):
                assert event.reason
        if next_state == TERMINATED:
            assert self.txn.timers == {}
            assert self.txn.deadline() is None

    def _skipped(self, action: str) -> bool:
        return action == "resend" and self._resend_bytes() is None

    def _resend_bytes(self) -> bytes | None:
        if self.cls in (ClientInvite, ClientNonInvite):
            return self.request_bytes
        return self.last_response

    def _check_send(self, action: str, event: Send, sent: bytes | None) -> None:
        if action == "send":
            assert event.data == sent
        elif action == "send_ack":
            assert self.ack_calls, "the ACK comes from make_ack"
            assert event.data == b"ACK for " + str(self.ack_calls[0].status).encode()
        else:  # resend, retransmit_*: the last thing sent to the peer, unchanged
            assert event.data == self._resend_bytes()

    # -- invariants after every step ------------------------------------------------------
    def check_invariants(self) -> None:
        txn = self.txn
        assert txn.state in states_of(self.cls)
        assert txn.deadline() == (min(txn.timers.values()) if txn.timers else None)
        for name in txn.timers:
            assert (txn.state, "timer " + name) in self.cls.TABLE, (txn.state, name)
        if self.reliable:
            assert not RETRANSMIT_TIMERS & set(txn.timers)
        terminated = sum(isinstance(e, Terminated) for e in self.all_events)
        assert terminated == (1 if txn.state == TERMINATED else 0)
        if txn.state == TERMINATED:
            assert txn.timers == {}
        seen_terminated = False
        for step in self.history:
            if seen_terminated:
                assert step.before == step.after == TERMINATED, "TERMINATED is absorbing"
                assert step.events == []
            seen_terminated = seen_terminated or step.after == TERMINATED
        if self.reliable and self.history:
            step = self.history[-1]
            if not step.raised and step.after != step.before:
                for name in QUICK_TIMERS & set(txn.timers):
                    assert txn.timers[name] == step.now, f"timer {name} is zero over TCP"


# -- property: random input sequences ---------------------------------------------------------
def input_sequences(cls: type[Transaction]) -> st.SearchStrategy[list[tuple[str, int, float]]]:
    ops = [*INPUTS[cls], TIMER, TIMER]

    @st.composite
    def one(draw: st.DrawFn) -> tuple[str, int, float]:
        what = draw(st.sampled_from(ops))
        status = draw(st.sampled_from(STATUSES[what])) if what in STATUSES else 0
        dt = draw(st.sampled_from([0.0, 0.1, T1, 1.0, T2, 10.0, 40.0]))
        return what, status, dt

    return st.lists(one(), max_size=40)


@pytest.mark.parametrize("cls", ALL_TRANSACTIONS, ids=lambda c: c.__name__)
@given(reliable=st.booleans(), data=st.data())
def test_random_inputs_follow_the_table(
    cls: type[Transaction], reliable: bool, data: st.DataObject
) -> None:
    driver = Driver(cls, reliable)
    for what, status, dt in data.draw(input_sequences(cls)):
        driver.apply(what, status)
        driver.advance(dt)
    # Drain: fire timers until none is left. A machine never stalls in a state that only
    # a timer can leave: if it is not TERMINATED, its state has no timer rows at all.
    for _ in range(200):
        if driver.txn.deadline() is None:
            break
        driver.apply(TIMER)
    assert driver.txn.deadline() is None
    if driver.state != TERMINATED:
        timer_rows = [w for (s, w) in cls.TABLE if s == driver.state and w.startswith("timer ")]
        assert timer_rows == [], (driver.state, timer_rows)


# -- exhaustive: every state x every input -------------------------------------------------------
Path = list[tuple[str, int]]


def replay(cls: type[Transaction], reliable: bool, path: Path) -> Driver:
    d = Driver(cls, reliable)
    for what, status in path:
        d.apply(what, status)
    return d


def explore(cls: type[Transaction], reliable: bool) -> tuple[dict[str, Path], set[tuple[str, str]]]:
    """Breadth-first over (state, armed timers), every input and the next timer.

    Returns a shortest path to each state and the table rows the walk took (the
    driver checked each of them as it went).
    """
    start = replay(cls, reliable, [])
    paths: dict[str, Path] = {start.state: []}
    seen: dict[tuple[str, frozenset[str], bool], Path] = {}
    rows: set[tuple[str, str]] = set()
    queue: deque[Path] = deque([[]])
    while queue:
        path = queue.popleft()
        d = replay(cls, reliable, path)
        key = (d.state, frozenset(d.txn.timers), d.last_response is not None)
        if key in seen:
            continue
        seen[key] = path
        paths.setdefault(d.state, path)
        for what in [*INPUTS[cls], TIMER]:
            status = STATUSES[what][-1] if what in STATUSES else 0
            nxt = replay(cls, reliable, path)
            before = nxt.state
            due = sorted(nxt.txn.timers.items(), key=lambda kv: kv[1])[:1]
            step = nxt.apply(what, status)
            if what == TIMER:
                if due:
                    rows.add((before, "timer " + due[0][0]))
                else:
                    continue
            elif (before, what) in cls.TABLE:
                rows.add((before, what))
            if not step.raised:
                queue.append([*path, (what, status)])
    return paths, rows


@pytest.mark.parametrize("cls", ALL_TRANSACTIONS, ids=lambda c: c.__name__)
def test_every_row_of_the_table_is_reachable_and_behaves(cls: type[Transaction]) -> None:
    udp_paths, udp_rows = explore(cls, reliable=False)
    tcp_paths, tcp_rows = explore(cls, reliable=True)
    assert set(udp_paths) == set(tcp_paths) == states_of(cls), "every state is reachable"
    assert (udp_rows | tcp_rows) == set(cls.TABLE), "every row is taken"
    # Over TCP the retransmission rows are the only ones never taken.
    untaken = {w.split()[1] for (_, w) in set(cls.TABLE) - tcp_rows}
    assert untaken <= RETRANSMIT_TIMERS


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("cls", ALL_TRANSACTIONS, ids=lambda c: c.__name__)
def test_every_state_and_input_is_in_the_table_absorbed_or_refused(
    cls: type[Transaction], reliable: bool
) -> None:
    paths, _ = explore(cls, reliable)
    timers = timer_names(cls)
    for state, path in paths.items():
        for what in INPUTS[cls]:
            d = replay(cls, reliable, path)
            assert d.state == state
            status = STATUSES[what][0] if what in STATUSES else 0
            step = d.apply(what, status)  # the driver checks row / absorbed / raised
            if (state, what) in cls.TABLE:
                assert not step.raised
                assert step.after == cls.TABLE[(state, what)][0]
            elif what in cls.NETWORK_INPUTS:
                assert step.after == state and step.events == []
            else:
                assert step.raised
        # Timers: one the state has no row for is never armed there, so it cannot fire.
        d = replay(cls, reliable, path)
        for name in timers:
            if (state, "timer " + name) not in cls.TABLE:
                assert name not in d.txn.timers


@pytest.mark.parametrize("cls", ALL_TRANSACTIONS, ids=lambda c: c.__name__)
def test_table_only_names_known_inputs_and_actions(cls: type[Transaction]) -> None:
    for (state, what), (nxt, actions) in cls.TABLE.items():
        assert what in INPUTS[cls] or what.startswith("timer "), what
        assert what in cls.NETWORK_INPUTS or what not in {R1XX, R2XX, RFINAL, REQUEST, ACK}
        for action in actions:
            assert hasattr(cls, "_a_" + action), action
            known = action in ACTION_EVENTS or action.startswith(("stop_", "arm_"))
            assert known, f"unknown action {action}: teach ACTION_EVENTS what it sends"
        assert state in states_of(cls) and nxt in states_of(cls)
    # TERMINATED has no way out.
    assert all(nxt == TERMINATED for (s, _), (nxt, _) in cls.TABLE.items() if s == TERMINATED)
    assert cls.transition_table().count("\n") == len(cls.TABLE) - 1


def test_terminated_is_reported_once_even_if_abandoned_afterwards() -> None:
    txn = ClientInvite(INVITE_BYTES, lambda r: b"ACK", reliable=True, timers=CFG)
    txn.start(0.0)
    assert txn.transport_error(1.0) == [TransportFailed("transport error"), Terminated()]
    assert txn.abandon(2.0) == []
    assert txn.receive(response(200), 3.0) == []
    assert txn.state == TERMINATED


# -- targeted: timers and retransmissions ----------------------------------------------------------
def fire_all(txn: Transaction, limit: int = 100) -> list[tuple[float, list[Event]]]:
    """Fire each deadline in turn until none is left: [(when, events)]."""
    out: list[tuple[float, list[Event]]] = []
    for _ in range(limit):
        when = txn.deadline()
        if when is None:
            break
        out.append((when, txn.handle_timer(when)))
    return out


def test_timer_a_doubles_and_timer_b_times_out() -> None:
    txn = ClientInvite(INVITE_BYTES, lambda r: b"ACK", reliable=False, timers=CFG)
    assert txn.start(10.0) == [Send(INVITE_BYTES)]
    fired = fire_all(txn)
    times = [when - 10.0 for when, _ in fired]
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]  # A is not capped by T2
    assert times[-1] == T64 == 32.0
    for _, events in fired[:-1]:
        assert events == [Send(INVITE_BYTES)]
    assert fired[-1][1] == [TimedOut("B"), Terminated()]
    assert txn.state == TERMINATED


def test_timer_b_fires_even_if_the_tu_abandoned_the_branch() -> None:
    txn = ClientInvite(INVITE_BYTES, lambda r: b"ACK", reliable=False, timers=CFG)
    txn.start(0.0)
    assert txn.abandon(0.2) == []
    assert txn.deadline() == T64  # Timer A stopped: no more retransmissions
    assert fire_all(txn) == [(T64, [TimedOut("B"), Terminated()])]


def test_handle_timer_before_the_deadline_does_nothing() -> None:
    txn = ClientInvite(INVITE_BYTES, lambda r: b"ACK", reliable=False, timers=CFG)
    txn.start(0.0)
    assert txn.handle_timer(0.49) == []
    assert txn.deadline() == 0.5


def test_late_handle_timer_fires_each_due_timer_once_and_rearms_from_now() -> None:
    txn = ClientInvite(INVITE_BYTES, lambda r: b"ACK", reliable=False, timers=CFG)
    txn.start(0.0)
    assert txn.handle_timer(5.0) == [Send(INVITE_BYTES)]
    assert txn.deadline() == 5.0 + 1.0


def test_timer_e_caps_at_t2_then_is_t2_in_proceeding() -> None:
    txn = ClientNonInvite(OPTIONS_BYTES, reliable=False, timers=CFG)
    txn.start(0.0)
    deadlines = []
    for _ in range(6):
        when = txn.deadline()
        assert when is not None
        deadlines.append(when)
        assert txn.handle_timer(when) == [Send(OPTIONS_BYTES)]
    gaps = [b - a for a, b in zip([0.0, *deadlines], deadlines, strict=False)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]

    txn = ClientNonInvite(OPTIONS_BYTES, reliable=False, timers=CFG)
    txn.start(0.0)
    txn.handle_timer(0.5)  # next E at 1.5 (interval 1)
    trying = response(100, "2 OPTIONS")
    assert txn.receive(trying, 0.6) == [Deliver(trying)]
    assert txn.state == "PROCEEDING"
    assert txn.deadline() == 1.5
    assert txn.handle_timer(1.5) == [Send(OPTIONS_BYTES)]
    assert txn.deadline() == 1.5 + T2
    assert txn.handle_timer(5.5) == [Send(OPTIONS_BYTES)]
    assert txn.deadline() == 5.5 + T2


def test_timer_f_times_out_a_non_invite() -> None:
    txn = ClientNonInvite(OPTIONS_BYTES, reliable=True, timers=CFG)
    txn.start(0.0)
    assert fire_all(txn) == [(T64, [TimedOut("F"), Terminated()])]


def test_non_invite_final_then_timer_k() -> None:
    for reliable, k in ((False, T4), (True, 0.0)):
        txn = ClientNonInvite(OPTIONS_BYTES, reliable=reliable, timers=CFG)
        txn.start(0.0)
        ok = response(200, "2 OPTIONS")
        assert txn.receive(ok, 1.0) == [Deliver(ok)]
        assert txn.deadline() == 1.0 + k
        assert txn.receive(ok, 1.0 + k / 2) == []  # retransmitted final absorbed
        assert fire_all(txn) == [(1.0 + k, [Terminated()])]


def test_timer_g_caps_at_t2_and_timer_h_times_out() -> None:
    txn = ServerInvite(INVITE, reliable=False, timers=CFG)
    busy = response_bytes(486)
    assert txn.respond(486, busy, 0.0) == [Send(busy)]
    fired = fire_all(txn)
    times = [when for when, _ in fired]
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:6] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert times[-1] == T64
    assert all(events == [Send(busy)] for _, events in fired[:-1])
    assert fired[-1][1] == [TimedOut("H"), Terminated()]


def test_server_invite_ack_stops_g_and_h_then_timer_i() -> None:
    for reliable, i in ((False, T4), (True, 0.0)):
        txn = ServerInvite(INVITE, reliable=reliable, timers=CFG)
        txn.respond(404, response_bytes(404), 0.0)
        assert txn.deadline() == (T64 if reliable else T1)
        assert txn.receive_ack(2.0) == []
        assert txn.state == "CONFIRMED"
        assert txn.deadline() == 2.0 + i
        assert txn.receive_ack(2.0) == []  # absorbed
        assert txn.receive_request(2.0) == []  # absorbed
        assert fire_all(txn) == [(2.0 + i, [Terminated()])]


def test_ack_for_a_non_2xx_is_built_once_and_resent_for_each_retransmitted_final() -> None:
    calls: list[Response] = []

    def make_ack(resp: Response) -> bytes:
        calls.append(resp)
        return b"ACK sip:bob@example.net SIP/2.0 ..."

    txn = ClientInvite(INVITE_BYTES, make_ack, reliable=False, timers=CFG)
    txn.start(0.0)
    ringing, busy = response(180), response(486)
    assert txn.receive(ringing, 0.1) == [Deliver(ringing)]
    assert txn.receive(busy, 1.0) == [Deliver(busy), Send(b"ACK sip:bob@example.net SIP/2.0 ...")]
    assert txn.state == "COMPLETED"
    assert calls == [busy]
    again = response(486)
    assert txn.receive(again, 2.0) == [Send(b"ACK sip:bob@example.net SIP/2.0 ...")]
    assert txn.receive(again, 3.0) == [Send(b"ACK sip:bob@example.net SIP/2.0 ...")]
    assert calls == [busy], "make_ack is called once"
    assert txn.receive(response(180), 3.0) == []
    assert txn.receive(response(200), 3.0) == []
    assert txn.deadline() == 1.0 + 32.0  # Timer D, at least 32 s over UDP
    assert fire_all(txn) == [(33.0, [Terminated()])]


def test_2xx_goes_to_accepted_and_retransmitted_2xx_are_delivered_until_timer_m() -> None:
    for first in (None, 180):
        txn = ClientInvite(INVITE_BYTES, lambda r: b"ACK", reliable=False, timers=CFG)
        txn.start(0.0)
        if first is not None:
            txn.receive(response(first), 0.2)
        ok, ok_again, other = response(200), response(200), response(200)
        assert txn.receive(ok, 1.0) == [Deliver(ok)]
        assert txn.state == "ACCEPTED"
        assert txn.deadline() == 1.0 + T64  # Timer M; A and B are gone
        assert txn.receive(ok_again, 2.0) == [Deliver(ok_again)]
        assert txn.receive(other, 30.0) == [Deliver(other)]  # e.g. a 2xx from another fork
        assert txn.receive(response(486), 31.0) == []
        assert txn.receive(response(180), 31.0) == []
        assert fire_all(txn) == [(1.0 + T64, [Terminated()])]
        assert txn.receive(response(200), 40.0) == []


def test_server_invite_absorbs_retransmitted_invites_by_resending_the_last_response() -> None:
    txn = ServerInvite(INVITE, reliable=False, timers=CFG)
    assert txn.receive_request(0.0) == []  # nothing sent yet
    trying, ringing, busy = response_bytes(100), response_bytes(180), response_bytes(486)
    assert txn.respond(100, trying, 0.1) == [Send(trying)]
    assert txn.receive_request(0.2) == [Send(trying)]
    assert txn.respond(180, ringing, 0.3) == [Send(ringing)]
    assert txn.receive_request(0.4) == [Send(ringing)]
    assert txn.respond(486, busy, 0.5) == [Send(busy)]
    assert txn.receive_request(0.6) == [Send(busy)]
    with pytest.raises(TransactionError):
        txn.respond(200, response_bytes(200), 0.7)
    assert txn.receive_request(0.8) == [Send(busy)], "a refused response does not replace it"


def test_server_invite_2xx_waits_in_accepted_for_timer_l() -> None:
    txn = ServerInvite(INVITE, reliable=True, timers=CFG)
    ok = response_bytes(200)
    assert txn.respond(200, ok, 1.0) == [Send(ok)]
    assert txn.state == "ACCEPTED"
    assert txn.receive_request(2.0) == []  # absorbed, RFC 6026
    assert txn.receive_ack(2.0) == []
    assert txn.respond(200, ok, 3.0) == [Send(ok)]  # the TU retransmits its 2xx
    with pytest.raises(TransactionError):
        txn.respond(486, response_bytes(486), 3.0)
    assert fire_all(txn) == [(1.0 + T64, [Terminated()])]


def test_server_non_invite() -> None:
    txn = ServerNonInvite(OPTIONS, reliable=False, timers=CFG)
    assert txn.receive_request(0.0) == []  # TRYING: retransmission absorbed
    trying, ok = response_bytes(100), response_bytes(200)
    assert txn.respond(100, trying, 0.1) == [Send(trying)]
    assert txn.receive_request(0.2) == [Send(trying)]
    assert txn.respond(200, ok, 0.3) == [Send(ok)]
    assert txn.receive_request(0.4) == [Send(ok)]
    assert txn.deadline() == 0.3 + T64  # Timer J
    with pytest.raises(TransactionError):
        txn.respond(180, trying, 0.5)
    assert fire_all(txn) == [(0.3 + T64, [Terminated()])]
    reliable = ServerNonInvite(OPTIONS, reliable=True, timers=CFG)
    reliable.respond(404, response_bytes(404), 7.0)
    assert reliable.deadline() == 7.0
    assert reliable.handle_timer(7.0) == [Terminated()]


def test_client_invite_over_tcp_never_retransmits_and_d_is_zero() -> None:
    txn = ClientInvite(INVITE_BYTES, lambda r: b"ACK", reliable=True, timers=CFG)
    assert txn.start(0.0) == [Send(INVITE_BYTES)]
    assert txn.deadline() == T64  # only Timer B
    unavailable = response(503)
    assert txn.receive(unavailable, 5.0) == [Deliver(unavailable), Send(b"ACK")]
    assert txn.deadline() == 5.0
    assert txn.handle_timer(5.0) == [Terminated()]


def test_transport_errors() -> None:
    for cls in ALL_TRANSACTIONS:
        d = Driver(cls, reliable=False)
        step = d.apply(TRANSPORT_ERROR)
        assert step.after == TERMINATED
        assert [type(e) for e in step.events] == [TransportFailed, Terminated]
    # In COMPLETED a non-INVITE server just ends; an INVITE server reports the failure.
    d = Driver(ServerNonInvite, reliable=False)
    d.apply(TU_FINAL, 404)
    assert d.apply(TRANSPORT_ERROR).events == [Terminated()]
    d = Driver(ServerInvite, reliable=False)
    d.apply(TU_FINAL, 404)
    assert [type(e) for e in d.apply(TRANSPORT_ERROR).events] == [TransportFailed, Terminated]
