"""The call generator's sans-IO layers, with scripted peers and a fake clock: no sockets, no sleeps.

- one call (:class:`Call`): what it sends for each response the far end scripts, and what
  it records (final, post-dial delay, who answered, how it ended);
- the schedule (:class:`Pacer`): a steady rate, no catch-up bursts, a bounded window;
- many calls (:class:`Dialer`) against an in-memory carrier with network latency, moved
  from one deadline to the next, aioquic-style.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from trunkguard.lab._caller import CallGenerator, CallRecord, GeneratorSettings
from trunkguard.lab._caller_call import (
    BYE_RECEIVED,
    CALL_OVER,
    ENDED,
    IDLE,
    START,
    Call,
)
from trunkguard.lab._caller_dialer import Dialer
from trunkguard.lab._caller_pacer import Pacer
from trunkguard.sip import Request, Response, TimerConfig, make_response, parse_message

Addr = tuple[str, int]
LOCAL: Addr = ("127.0.0.1", 5070)
TARGET: Addr = ("127.0.0.1", 5080)
T0 = 100.0
CONTACT = "<sip:carrier@127.0.0.1:5099;transport=UDP>"
CONTACT_HOP: Addr = ("127.0.0.1", 5099)


def settings(**changes: Any) -> GeneratorSettings:
    base: dict[str, Any] = {"target": TARGET, "rate": 1.0, "calls": 1, "hold": 1.0}
    return GeneratorSettings(**(base | changes))


# -- one call ------------------------------------------------------------------------------------
@dataclass
class Wire:
    """A call and the far end of its wire: what the call sent, parsed, with where it went."""

    call: Call
    log: list[tuple[Request | Response, Addr, bytes]] = field(default_factory=list)

    def sent(self) -> list[tuple[Request | Response, Addr, bytes]]:
        """Datagrams sent since the last look."""
        out = []
        for data, addr in self.call.datagrams_to_send():
            message = parse_message(data)
            message.check()
            out.append((message, addr, data))
        self.log += out
        return out

    def requests(self, method: str) -> list[tuple[Request, Addr, bytes]]:
        return [(m, a, d) for m, a, d in self.log if isinstance(m, Request) and m.method == method]

    def invite(self) -> Request:
        return self.requests("INVITE")[0][0]

    def answer(
        self,
        request: Request,
        status: int,
        now: float,
        *,
        tag: str = "callee1",
        extra: Sequence[tuple[str, str]] = (),
        source: Addr = TARGET,
    ) -> None:
        response = parse_message(make_response(request, status, to_tag=tag, extra=extra))
        response.check()
        self.call.receive(response, source, now)

    def run_timers(self, until: float) -> None:
        """Fire every deadline up to ``until``, in order, as the event loop would."""
        while (when := self.call.deadline()) is not None and when <= until:
            self.call.handle_timer(when)


def started(**changes: Any) -> Wire:
    wire = Wire(Call(settings(**changes), 0, LOCAL))
    wire.call.start(T0)
    (message, addr, _), *rest = wire.sent()
    assert isinstance(message, Request) and message.method == "INVITE" and addr == TARGET
    assert rest == []
    return wire


def test_invite_is_a_complete_request_with_an_offer() -> None:
    wire = started()
    invite = wire.invite()
    assert invite.uri == "sip:15551234567@127.0.0.1:5080"
    assert invite.top_via.sent_by == "127.0.0.1:5070"
    assert invite.top_via.branch is not None and invite.top_via.branch.startswith("z9hG4bK")
    assert "rport" in invite.top_via.params
    assert invite.from_.tag and invite.to.tag is None
    assert str(invite.cseq) == "1 INVITE"
    assert invite.contacts[0].uri.hostport() == "127.0.0.1:5070"
    assert invite.get("content-type") == "application/sdp"
    assert invite.body.startswith(b"v=0\r\n") and int(invite.get("content-length") or 0) == len(
        invite.body
    )
    assert wire.call.record().started == T0


def test_number_for_picks_the_request_uri_per_call() -> None:
    s = settings(number_for=lambda i: f"1555000{i:04d}")
    call = Call(s, 7, LOCAL)
    call.start(T0)
    (data, _), *_ = call.datagrams_to_send()
    request = parse_message(data)
    assert isinstance(request, Request)
    assert request.uri == "sip:15550000007@127.0.0.1:5080"
    assert call.record().number == "15550000007" and call.record().index == 7


def test_answered_call_acks_in_the_dialog_then_hangs_up_after_hold() -> None:
    wire = started(hold=1.0)
    invite = wire.invite()
    routes = [("Record-Route", "<sip:10.0.0.1;lr>"), ("Record-Route", "<sip:10.0.0.2:5090;lr>")]
    ok_extra = [("Contact", CONTACT), *routes, ("X-Sim-Carrier", "carrier-a")]
    wire.answer(invite, 100, T0 + 0.01)
    wire.answer(invite, 180, T0 + 0.05, extra=[("Contact", CONTACT), *routes])
    assert wire.sent() == []
    wire.answer(invite, 200, T0 + 0.2, extra=ok_extra)

    [(ack, hop, _)] = wire.sent()
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == "sip:carrier@127.0.0.1:5099;transport=UDP"  # the 2xx's Contact
    assert ack.call_id == invite.call_id
    assert ack.from_.tag == invite.from_.tag
    assert ack.to.tag == "callee1"  # from the 200
    assert str(ack.cseq) == "1 ACK"
    assert ack.top_via.branch != invite.top_via.branch  # an ACK for a 2xx is its own transaction
    assert ack.get_all("route") == ["<sip:10.0.0.2:5090;lr>", "<sip:10.0.0.1;lr>"]  # reversed
    assert hop == ("10.0.0.2", 5090)

    wire.run_timers(T0 + 1.1)
    assert wire.requests("BYE") == []
    wire.run_timers(T0 + 1.2)
    [(bye, bye_hop, _)] = wire.sent()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert str(bye.cseq) == "2 BYE"
    assert bye.uri == ack.uri and bye.get_all("route") == ack.get_all("route")
    assert (bye.from_.tag, bye.to.tag, bye.call_id) == (invite.from_.tag, "callee1", ack.call_id)
    assert bye.top_via.branch not in (invite.top_via.branch, ack.top_via.branch)
    assert bye_hop == ("10.0.0.2", 5090)
    assert not wire.call.finished

    wire.answer(bye, 200, T0 + 1.21)
    record = wire.call.record()
    assert wire.call.finished and record.ok and record.answered
    assert (record.final, record.final_at, record.bye_status) == (200, T0 + 0.2, 200)
    assert (record.ended, record.ended_by) == (T0 + 1.21, "caller")
    assert record.trying == T0 + 0.01 and record.ringing == T0 + 0.05
    assert record.pdd == pytest.approx(0.05)
    assert record.answered_by == "carrier-a"


def test_retransmitted_2xx_gets_the_same_ack_again() -> None:
    wire = started()
    invite = wire.invite()
    wire.answer(invite, 200, T0 + 0.1, extra=[("Contact", CONTACT)])
    [(_, _, first)] = wire.sent()
    wire.answer(invite, 200, T0 + 0.6, extra=[("Contact", CONTACT)])
    [(_, hop, again)] = wire.sent()
    assert again == first and hop == CONTACT_HOP


def test_2xx_without_record_route_is_acked_at_its_contact() -> None:
    wire = started()
    wire.answer(wire.invite(), 200, T0 + 0.1, extra=[("Contact", CONTACT)])
    [(ack, hop, _)] = wire.sent()
    assert isinstance(ack, Request) and not ack.has("route")
    assert hop == CONTACT_HOP


def test_strict_router_becomes_the_request_uri() -> None:
    # RFC 3261 §12.2.1.1: no lr on the first route -> it is the Request-URI, the target goes last.
    wire = started()
    extra = [("Contact", CONTACT), ("Record-Route", "<sip:10.0.0.9:5070>")]
    wire.answer(wire.invite(), 200, T0 + 0.1, extra=extra)
    [(ack, hop, _)] = wire.sent()
    assert isinstance(ack, Request)
    assert ack.uri == "sip:10.0.0.9:5070"
    assert ack.get_all("route") == ["<sip:carrier@127.0.0.1:5099;transport=UDP>"]
    assert hop == ("10.0.0.9", 5070)


def test_non_2xx_final_is_recorded_and_acked_by_the_transaction() -> None:
    wire = started()
    invite = wire.invite()
    wire.answer(invite, 100, T0 + 0.01)
    wire.answer(invite, 486, T0 + 0.3, tag="busy1")
    [(ack, hop, _)] = wire.sent()
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.top_via.branch == invite.top_via.branch  # same transaction (§17.1.1.3)
    assert str(ack.cseq) == "1 ACK" and ack.to.tag == "busy1"
    assert ack.uri == invite.uri and hop == TARGET
    record = wire.call.record()
    assert wire.call.finished and record.final == 486 and not record.ok
    assert record.pdd == pytest.approx(0.3)  # no 18x: the final ends the post-dial delay
    assert record.answered_by is None and record.ended is None
    assert "486" in record.reason
    wire.answer(invite, 486, T0 + 0.8, tag="busy1")  # retransmitted final: ACK again, nothing else
    [(again, _, _)] = wire.sent()
    assert isinstance(again, Request) and again.method == "ACK"
    wire.run_timers(T0 + 60)
    assert wire.sent() == [] and wire.call.idle


def test_expected_final_counts_as_ok() -> None:
    wire = started(expect=frozenset({486}))
    wire.answer(wire.invite(), 486, T0 + 0.1)
    assert wire.call.record().ok


def test_invite_is_retransmitted_on_timer_a_until_a_provisional() -> None:
    wire = started()
    first = wire.requests("INVITE")[0][2]
    times = []
    while (when := wire.call.deadline()) is not None and when < T0 + 4:
        wire.call.handle_timer(when)
        for message, addr, data in wire.sent():
            assert isinstance(message, Request) and message.method == "INVITE"
            assert data == first and addr == TARGET
            times.append(when - T0)
    assert times == pytest.approx([0.5, 1.5, 3.5])  # T1, doubling
    wire.answer(wire.invite(), 100, T0 + 4.0)
    wire.run_timers(T0 + 20)
    assert len(wire.requests("INVITE")) == 4


def test_no_final_within_the_timeout_is_hung_and_sends_no_cancel_before_a_provisional() -> None:
    wire = started(timeout=5.0)
    wire.run_timers(T0 + 4.99)
    assert not wire.call.finished
    wire.run_timers(T0 + 5.0)
    record = wire.call.record()
    assert wire.call.finished and record.hung and record.final is None and not record.ok
    assert record.pdd is None and "within 5 s" in record.reason
    sent = [m.method for m, _, _ in wire.sent() if isinstance(m, Request)]
    assert sent == ["INVITE"] * 3  # Timer A only: §9.1, no CANCEL before a provisional
    wire.run_timers(T0 + 60)
    assert wire.sent() == []  # abandoned: no more retransmissions
    assert wire.call.idle


def test_hung_while_ringing_cancels_and_acks_the_late_487() -> None:
    wire = started(timeout=5.0)
    invite = wire.invite()
    wire.answer(invite, 180, T0 + 0.1)
    wire.run_timers(T0 + 5.0)
    [(cancel, hop, _)] = wire.sent()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL" and hop == TARGET
    record = wire.call.record()
    assert record.hung and record.ringing == T0 + 0.1 and record.pdd == pytest.approx(0.1)
    wire.answer(cancel, 200, T0 + 5.01)
    wire.answer(invite, 487, T0 + 5.02)
    [(ack, _, _)] = wire.sent()
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert wire.call.record() == record  # fixed once the outcome was known


def test_timer_b_ends_a_call_whose_timeout_is_longer() -> None:
    wire = started(timeout=40.0, timers=TimerConfig(t1=0.5))
    wire.run_timers(T0 + 31.9)
    assert not wire.call.finished
    wire.run_timers(T0 + 32.0)
    record = wire.call.record()
    assert record.hung and "timer B" in record.reason


def test_pdd_runs_from_the_invite_to_the_first_18x_not_the_100() -> None:
    wire = started()
    invite = wire.invite()
    wire.answer(invite, 100, T0 + 0.01)
    wire.answer(invite, 183, T0 + 0.30)
    wire.answer(invite, 180, T0 + 0.50)
    wire.answer(invite, 200, T0 + 0.90, extra=[("Contact", CONTACT)])
    record = wire.call.record()
    assert record.trying == T0 + 0.01
    assert record.ringing == T0 + 0.30
    assert wire.call.pdd == pytest.approx(0.30)


def test_answered_by_is_the_contact_without_x_sim_carrier() -> None:
    wire = started()
    wire.answer(wire.invite(), 200, T0 + 0.1, extra=[("Contact", CONTACT)])
    assert wire.call.answered_by == "127.0.0.1:5099"


def test_answered_by_prefers_x_sim_carrier() -> None:
    wire = started()
    extra = [("Contact", CONTACT), ("X-Sim-Carrier", "  b ")]
    wire.answer(wire.invite(), 200, T0 + 0.1, extra=extra)
    assert wire.call.answered_by == "b"


def test_cancel_after_ringing_ends_with_an_expected_487() -> None:
    wire = started(cancel_after=1.0)
    invite = wire.invite()
    wire.answer(invite, 180, T0 + 0.1)
    wire.run_timers(T0 + 1.0)
    [(cancel, hop, _)] = wire.sent()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == invite.top_via.branch  # §9.1: the INVITE's branch
    assert str(cancel.cseq) == "1 CANCEL" and cancel.uri == invite.uri and hop == TARGET
    assert cancel.to.tag is None
    wire.answer(cancel, 200, T0 + 1.01)
    wire.answer(invite, 487, T0 + 1.02)
    [(ack, _, _)] = wire.sent()
    assert isinstance(ack, Request) and ack.method == "ACK"
    record = wire.call.record()
    assert record.final == 487 and record.cancelled == T0 + 1.0 and record.ok
    assert record.reason == "cancelled by the caller"


def test_cancel_waits_for_a_provisional() -> None:
    wire = started(cancel_after=0.2)
    wire.run_timers(T0 + 0.45)
    assert wire.sent() == []
    wire.answer(wire.invite(), 100, T0 + 0.6)
    [(cancel, _, _)] = wire.sent()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"


def test_2xx_crossing_the_cancel_is_acked_and_hung_up() -> None:
    wire = started(cancel_after=0.5)
    invite = wire.invite()
    wire.answer(invite, 180, T0 + 0.1)
    wire.run_timers(T0 + 0.5)
    wire.sent()
    wire.answer(invite, 200, T0 + 0.51, extra=[("Contact", CONTACT)])
    methods = [m.method for m, _, _ in wire.sent() if isinstance(m, Request)]
    assert methods == ["ACK", "BYE"]
    bye = wire.requests("BYE")[0][0]
    wire.answer(bye, 200, T0 + 0.52)
    record = wire.call.record()
    assert record.final == 200 and record.ok and record.ended == T0 + 0.52


def test_callee_hangs_up_during_hold() -> None:
    wire = started(hold=10.0)
    invite = wire.invite()
    wire.answer(invite, 200, T0 + 0.1, extra=[("Contact", CONTACT)])
    ack = wire.sent()[0][0]
    assert isinstance(ack, Request)
    bye = (
        f"BYE {wire.call.local_uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKcalleebye\r\n"
        f"From: {ack.get('to')}\r\nTo: {ack.get('from')}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(bye.encode())
    wire.call.receive(message, CONTACT_HOP, T0 + 2.0)
    [(response, addr, _)] = wire.sent()
    assert isinstance(response, Response) and response.status == 200 and addr == CONTACT_HOP
    record = wire.call.record()
    assert record.ok and record.ended == T0 + 2.0 and record.ended_by == "callee"
    wire.run_timers(T0 + 60)
    assert wire.sent() == []


def test_unanswered_bye_ends_the_call_at_its_bound() -> None:
    wire = started(hold=1.0, timeout=5.0)
    wire.answer(wire.invite(), 200, T0 + 0.1, extra=[("Contact", CONTACT)])
    wire.run_timers(T0 + 5.99)
    wire.sent()
    assert not wire.call.finished and len(wire.requests("BYE")) > 1  # Timer E retransmits
    wire.run_timers(T0 + 6.0)  # started + timeout + hold
    record = wire.call.record()
    assert wire.call.finished and record.answered and not record.ok and record.ended is None
    assert "BYE unanswered" in record.reason


def test_a_2xx_after_giving_up_is_acked_and_hung_up() -> None:
    wire = started(timeout=2.0)
    invite = wire.invite()
    wire.run_timers(T0 + 2.0)
    wire.sent()
    assert wire.call.record().hung
    wire.answer(invite, 200, T0 + 2.5, extra=[("Contact", CONTACT)])
    methods = [m.method for m, _, _ in wire.sent() if isinstance(m, Request)]
    assert methods == ["ACK", "BYE"]
    assert wire.call.record().hung  # the outcome stands: the caller had given up


def test_every_pair_outside_the_table_is_absorbed_and_a_second_start_raises() -> None:
    inputs = {what for (_, what) in Call.TABLE}
    states = {s for (s, _) in Call.TABLE} | {n for (n, _) in Call.TABLE.values()}
    for state in states:
        for what in inputs - {START}:
            if (state, what) in Call.TABLE:
                continue
            call = Call(settings(), 0, LOCAL)
            call.state = state
            call._input(what, T0)
            assert call.state == state and call.datagrams_to_send() == []
        if state != IDLE:
            call = Call(settings(), 0, LOCAL)
            call.state = state
            with pytest.raises(RuntimeError, match="not allowed"):
                call.start(T0)
    assert (ENDED, BYE_RECEIVED) in Call.TABLE and (IDLE, CALL_OVER) not in Call.TABLE
    assert len(Call.transition_table().splitlines()) == len(Call.TABLE)


# -- the schedule --------------------------------------------------------------------------------
def drain(pacer: Pacer, polls: Sequence[float]) -> list[float]:
    return [now for now in polls if pacer.take(now)]


def test_pacer_starts_on_schedule_at_a_steady_rate() -> None:
    pacer = Pacer(10.0, 0.0, window=1.0, limit=10)
    starts = []
    while (when := pacer.next_start()) is not None:
        assert pacer.take(when) and not pacer.take(when)  # one call per slot
        starts.append(when)
    assert starts == pytest.approx([k / 10 for k in range(10)])


def test_pacer_small_lag_does_not_add_up() -> None:
    pacer = Pacer(10.0, 0.0, window=1.0, limit=10)
    starts = [when + 0.004 for when in [k / 10 for k in range(10)] if pacer.take(when + 0.004)]
    assert len(starts) == 10 and pacer.slips == 0
    assert pacer.origin == 0.0


def test_pacer_after_a_stall_moves_on_without_a_burst() -> None:
    pacer = Pacer(10.0, 0.0, window=10.0, limit=100)
    assert pacer.take(0.0)
    # The loop stalls until 0.55: slots 0.1..0.5 were missed; only one call starts now.
    assert drain(pacer, [0.55, 0.55, 0.56, 0.6]) == [0.55]
    assert pacer.slips == 1
    assert pacer.next_start() == pytest.approx(0.65)


def test_pacer_never_starts_two_calls_closer_than_half_an_interval() -> None:
    pacer = Pacer(10.0, 0.0, window=100.0, limit=1000)
    polls = sorted({round(t * 0.013 + (0.3 if t % 97 == 0 else 0), 4) for t in range(5000)})
    starts = drain(pacer, polls)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.05 - 1e-9


def test_pacer_never_starts_past_its_window() -> None:
    pacer = Pacer(10.0, 0.0, window=1.0, limit=100)
    assert pacer.take(0.0)
    assert not pacer.take(1.5)  # stalled past the window: the schedule is over
    assert pacer.next_start() is None and pacer.started == 1


@pytest.mark.parametrize(
    ("duration", "calls", "rate", "planned", "window"),
    [
        (1.0, None, 10.0, 10, 1.0),
        (0.5, None, 1.0, 1, 0.5),
        (10.1, None, 5.0, 51, 10.1),
        (None, 5, 2.0, 5, 2.5),
        (10.0, 5, 1.0, 5, 5.0),
        (2.0, 100, 10.0, 20, 2.0),
    ],
)
def test_settings_plan(
    duration: float | None, calls: int | None, rate: float, planned: int, window: float
) -> None:
    s = settings(duration=duration, calls=calls, rate=rate, hold=1.5, timeout=4.0)
    assert s.planned == planned
    assert s.window == pytest.approx(window)
    assert s.bound == pytest.approx(window + 1.5 + 4.0)


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"rate": 0.0}, "rate"),
        ({"rate": math.inf}, "rate"),
        ({"calls": None}, "duration or calls"),
        ({"calls": 0}, "calls"),
        ({"duration": -1.0}, "duration"),
        ({"hold": -0.1}, "hold"),
        ({"timeout": 0.0}, "timeout"),
        ({"cancel_after": -1.0}, "cancel_after"),
        ({"number": ""}, "number"),
        ({"target": ("127.0.0.1", 0)}, "target"),
    ],
)
def test_settings_errors_name_the_field(changes: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=f"^{field_name}"):
        settings(**changes)


# -- many calls ----------------------------------------------------------------------------------
class ScriptedCarrier:
    """An in-memory UAS: 100 at once, 180 after ``ring``, then the final after ``answer``.

    Numbers in ``reject`` get that status instead of 200; ``silent`` answers nothing.
    """

    def __init__(
        self,
        name: str,
        *,
        ring: float = 0.05,
        answer: float = 0.1,
        reject: dict[str, int] | None = None,
        silent: bool = False,
    ) -> None:
        self.name = name
        self.ring = ring
        self.answer = answer
        self.reject = reject or {}
        self.silent = silent
        self.received: list[tuple[float, str, str]] = []  # (time, method, Call-ID)
        self.rang: dict[str, float] = {}

    def __call__(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        request = parse_message(data)
        assert isinstance(request, Request)
        request.check()
        self.received.append((now, request.method, request.call_id))
        if self.silent or request.method == "ACK":
            return []
        tag = "t" + request.call_id[:8]
        if request.method == "BYE":
            return [(now, make_response(request, 200))]
        contact = [("Contact", "<sip:carrier@127.0.0.1:5080>"), ("X-Sim-Carrier", self.name)]
        self.rang[request.call_id] = now + self.ring
        status = self.reject.get(request.request_uri.user or "", 200)
        return [
            (now, make_response(request, 100)),
            (now + self.ring, make_response(request, 180, to_tag=tag, extra=contact)),
            (now + self.answer, make_response(request, status, to_tag=tag, extra=contact)),
        ]


def simulate(dialer: Dialer, carrier: ScriptedCarrier, latency: float = 0.001) -> tuple[float, int]:
    """Move the dialer from deadline to deadline, carrying datagrams with ``latency`` each way.

    Returns the time the dialer was done and how many steps it took.
    """
    network: list[tuple[float, int, str, bytes]] = []
    seq = itertools.count()
    now = dialer.began
    for steps in itertools.count():
        for data, addr in dialer.datagrams_to_send():
            assert addr in (TARGET, ("127.0.0.1", 5080))
            heapq.heappush(network, (now + latency, next(seq), "carrier", data))
        if dialer.done:
            return now, steps
        assert steps < 100_000
        times = [
            t for t in (dialer.deadline(), network[0][0] if network else None) if t is not None
        ]
        now = min(times)
        if network and network[0][0] == now:
            _, _, to, data = heapq.heappop(network)
            if to == "carrier":
                for when, reply in carrier(data, now):
                    heapq.heappush(network, (when + latency, next(seq), "caller", reply))
            else:
                dialer.receive(data, TARGET, now)
        else:
            dialer.handle_timer(now)
    raise AssertionError("unreachable")


def test_dialer_runs_calls_at_a_steady_rate_and_records_each() -> None:
    busy = "15550000003"
    s = settings(
        rate=20.0,
        duration=1.0,
        calls=None,
        hold=0.5,
        timeout=5.0,
        number_for=lambda i: f"1555000{i:04d}",
    )
    carrier = ScriptedCarrier("a", ring=0.05, answer=0.1, reject={busy: 486})
    dialer = Dialer(s, LOCAL, T0)
    ended: list[CallRecord] = []
    done_at, _ = simulate(dialer, carrier)
    while (record := dialer.next_record()) is not None:
        ended.append(record)
    records = dialer.results()

    assert len(records) == 20 and [r.index for r in records] == list(range(20))
    starts = [r.started for r in records]
    assert starts == pytest.approx([T0 + k / 20 for k in range(20)])
    assert sorted(r.call_id for r in ended) == sorted(r.call_id for r in records)
    for r in records:
        if r.number == busy:
            assert r.final == 486 and not r.ok and r.pdd == pytest.approx(0.052)
        else:
            assert r.ok and r.final == 200 and r.answered_by == "a"
            assert r.pdd == pytest.approx(0.052)  # 1 ms each way + 50 ms ringing
            assert r.ended is not None and r.final_at is not None
            assert r.ended == pytest.approx(r.final_at + 0.5 + 0.002)
    invites = [(t, cid) for t, m, cid in carrier.received if m == "INVITE"]
    assert len(invites) == 20
    assert len([m for _, m, _ in carrier.received if m == "ACK"]) == 20  # 19 by us, 1 by the txn
    assert len([m for _, m, _ in carrier.received if m == "BYE"]) == 19

    snap = dialer.snapshot()
    assert snap["started"] == 20 and snap["answered"] == 19 and snap["ok"] == 19
    assert snap["failed"] == 1 and snap["in_progress"] == 0 and snap["hung"] == 0
    assert snap["by_carrier"] == {"a": 19} and snap["finals"] == {200: 19, 486: 1}
    assert snap["last_pdd"] == pytest.approx(0.052)
    assert done_at <= dialer.end
    assert dialer.calls.keys() <= {r.call_id for r in records}


def test_dialer_with_a_silent_carrier_ends_every_call_hung_within_its_bound() -> None:
    s = settings(rate=10.0, calls=5, hold=1.0, timeout=3.0)
    carrier = ScriptedCarrier("x", silent=True)
    dialer = Dialer(s, LOCAL, T0)
    done_at, _ = simulate(dialer, carrier)
    records = dialer.results()
    assert [r.final for r in records] == [None] * 5 and all(r.hung for r in records)
    assert done_at == pytest.approx(T0 + 0.4 + 3.0)
    assert done_at <= T0 + s.bound
    snap = dialer.snapshot()
    assert snap["hung"] == 5 and snap["failed"] == 5 and snap["answered"] == 0


def test_dialer_answers_481_to_requests_of_unknown_calls_and_counts_junk() -> None:
    dialer = Dialer(settings(), LOCAL, T0)
    bye = (
        b"BYE sip:caller@127.0.0.1:5070 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKx\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n"
        b"Call-ID: nobody\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    dialer.receive(bye, TARGET, T0)
    dialer.receive(b"garbage\r\n\r\n", TARGET, T0)
    [(data, addr)] = dialer.datagrams_to_send()
    response = parse_message(data)
    assert isinstance(response, Response) and response.status == 481 and addr == TARGET
    snap = dialer.snapshot()
    assert snap["stray"] == 1 and snap["unparsable"] == 1


def test_generator_snapshot_before_the_run_has_every_counter_at_zero() -> None:
    generator = CallGenerator(settings(rate=5.0, duration=2.0, calls=None))
    snap = generator.snapshot()
    assert snap["planned"] == 10
    assert all(snap[k] == 0 for k in ("started", "answered", "failed", "in_progress"))
    assert snap["by_carrier"] == {} and snap["last_pdd"] is None
