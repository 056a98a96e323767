"""The core's record of each call (CallRecord): one per call, when it is over, with its attempts."""

from __future__ import annotations

import random

from test_proxy_core import CALLER, A, B, C, Net, invite, only_request, reply

from trunkguard.health import HealthEngine
from trunkguard.proxy import CallRecord, Flow


def records(net: Net) -> list[CallRecord]:
    out = []
    for event in net.proxy.take_events():
        if isinstance(event, CallRecord):
            out.append(event)
    return out


def bye_from_caller(call_id: str) -> bytes:
    return (
        b"BYE sip:carrier@127.0.0.1:5071 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bye-" + call_id.encode() + b"\r\n"
        b"Route: <sip:127.0.0.1:5060;lr>\r\n"
        b"From: <sip:agent@127.0.0.1>;tag=caller1\r\n"
        b"To: <sip:15551234567@127.0.0.1>;tag=carrier\r\n"
        b"Call-ID: " + call_id.encode() + b"\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def feed(net: Net, data: bytes, source: Flow) -> list[CallRecord]:
    """Feed without the harness's pump, so the records stay for us."""
    net.proxy.receive(data, source, net.now)
    return records(net)


def test_an_answered_call_is_recorded_once_when_its_bye_comes_with_each_attempt() -> None:
    net = Net()
    assert feed(net, invite("r1"), CALLER) == []
    to_a = only_request(net.take(), A, "INVITE")
    net.now += 0.05
    assert feed(net, reply(to_a, 503), A) == []
    to_b = only_request(net.take(), B, "INVITE")
    net.now += 0.02
    assert feed(net, reply(to_b, 180), B) == []
    net.now += 1.0
    assert feed(net, reply(to_b, 200), B) == []  # answered: not over yet
    net.take()
    net.now += 30.0
    [record] = feed(net, bye_from_caller("r1").replace(b"5071", b"5072"), CALLER)
    assert record.call_id == "r1"
    assert record.number == "15551234567"
    assert record.source == "127.0.0.1"
    assert record.plan == ("a", "b", "c")
    assert len(record.explain) >= 1
    assert [(a.target, a.status, a.kind) for a in record.attempts] == [
        ("a", 503, "response"),
        ("b", 200, "response"),
    ]
    assert record.attempts[0].verdict is not None and record.attempts[0].verdict.failover
    assert record.status == 200
    assert record.carrier == "b"
    assert record.answered is not None
    assert round(record.answered - record.started, 2) == 1.07
    assert round(record.ended - record.answered, 2) == 30.0
    assert record.end == "bye from caller"
    net.now += 40.0
    net.proxy.run_timers(net.now)
    assert records(net) == []  # once


def test_a_call_every_carrier_refused_is_recorded_as_it_fails() -> None:
    net = Net()
    net.feed(invite("r2"), CALLER)
    net.proxy.events.clear()
    got: list[CallRecord] = []
    for flow in (A, B, C):
        sent = only_request(net.take(), flow, "INVITE")
        got += feed(net, reply(sent, 503), flow)
    [record] = got
    assert record.status == 500 and record.end == "failed" and record.answered is None
    assert [a.target for a in record.attempts] == ["a", "b", "c"]
    assert record.carrier is None


def test_a_busy_destination_and_a_cancelled_call_say_so() -> None:
    net = Net()
    net.feed(invite("r3"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    [busy] = feed(net, reply(sent, 486), A)
    assert (busy.status, busy.end) == (486, "destination final")

    net.feed(invite("r4"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 180), A)
    net.take()
    cancel = (
        b"CANCEL sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-r4\r\n"
        b"From: <sip:agent@127.0.0.1>;tag=caller1\r\nTo: <sip:15551234567@127.0.0.1>\r\n"
        b"Call-ID: r4\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    [cancelled] = feed(net, cancel, CALLER)
    assert (cancelled.status, cancelled.end) == (487, "cancelled")
    assert [a.kind for a in cancelled.attempts] == ["cancelled"]


def test_an_answered_call_whose_dialog_expires_is_still_recorded() -> None:
    net = Net(dialog_max_age=120.0)
    net.feed(invite("r5"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 200), A)
    net.proxy.events.clear()
    got: list[CallRecord] = []
    end = net.now + 400.0
    while (deadline := net.proxy.next_deadline()) is not None and deadline <= end:
        net.now = max(net.now, deadline)
        net.proxy.run_timers(net.now)
        got += records(net)
    [record] = got
    assert record.end == "expired" and record.status == 200 and record.carrier == "a"


def test_calls_in_progress_lists_setup_then_answered_calls() -> None:
    net = Net()
    net.feed(invite("p1"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 180), A)
    net.feed(invite("p2"), CALLER)
    to_a2 = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a2, 200), A)
    [ringing, answered] = net.proxy.calls_in_progress()
    assert (ringing.call_id, ringing.state, ringing.target, ringing.answered) == (
        "p1", "PROCEEDING", "a", None,
    )
    assert (answered.call_id, answered.state, answered.target) == ("p2", "ANSWERED", "a")
    assert answered.answered is not None and answered.number == "15551234567"
    assert len(net.proxy.calls_in_progress(limit=1)) == 1


def test_answered_calls_still_up_are_recorded_when_the_router_stops() -> None:
    net = Net()
    net.feed(invite("s1"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 200), A)
    net.proxy.events.clear()
    net.now += 5.0
    assert net.proxy.flush_records(net.now) == 1
    [record] = records(net)
    assert (record.call_id, record.end, record.status) == ("s1", "router stopped", 200)
    assert record.answered is not None and record.ended - record.answered == 5.0
    assert net.proxy.flush_records(net.now) == 0  # once


def test_the_record_names_the_targets_its_plan_skipped_as_full() -> None:
    net = Net()
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1), probes_enabled=False)
    health.set_capacity("a", 1, None)
    net.proxy.health = health
    net.feed(invite("o1"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 200), A)  # a has its one call up
    net.take()
    net.proxy.events.clear()
    net.proxy.receive(invite("o2"), CALLER, net.now)
    to_b = only_request(net.take(), B, "INVITE")
    [record] = feed(net, reply(to_b, 486), B)
    assert record.overflow == ("a",)
    assert record.plan == ("b", "c")
    assert [a.target for a in record.attempts] == ["b"]
    # The call that had room names none, when its dialog ends.
    [first] = feed(net, bye_from_caller("o1"), CALLER)
    assert first.call_id == "o1" and first.overflow == ()
