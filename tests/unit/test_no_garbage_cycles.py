"""Calls leave no reference cycles behind: their state is freed by reference counting.

A router holds tens of thousands of calls' worth of objects; a full garbage collection over
them stops the event loop for seconds. So the proxy breaks its own cycles when a call's
transactions end, and this test holds it to that: with the collector off, run calls of every
kind to the end of every timer, then count what a collection finds unreachable.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from test_proxy_core import CALLER, A, B, Net, invite, only_request, reply


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _bye(call_id: str) -> bytes:
    return (
        "BYE sip:carrier@127.0.0.1:5071 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bye-{call_id}\r\n"
        "Route: <sip:127.0.0.1:5060;lr>\r\n"
        "From: <sip:agent@127.0.0.1>;tag=caller1\r\n"
        "To: <sip:15551234567@127.0.0.1>;tag=carrier\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _calls(net: Net, n: int) -> None:
    for i in range(n):
        call_id = f"gc-{i}"
        net.feed(invite(call_id), CALLER)
        to_a = only_request(net.take(), A, "INVITE")
        kind = i % 4
        if kind == 0:  # answered, then hung up by the caller
            for status in (100, 180, 200):
                net.feed(reply(to_a, status), A)
            net.take()
            net.feed(_bye(call_id), CALLER)
            bye = only_request(net.take(), A, "BYE")
            net.feed(reply(bye, 200), A)
        elif kind == 1:  # 503, then answered by b
            net.feed(reply(to_a, 503), A)
            to_b = only_request(net.take(), B, "INVITE")
            net.feed(reply(to_b, 200), B)
        elif kind == 2:  # a is silent: timeout, then b rejects finally
            net.advance(2.05)
            to_b = only_request(net.take(), B, "INVITE")
            net.feed(reply(to_b, 486), B)
        else:  # late 2xx on an abandoned branch
            net.advance(2.05)
            to_b = only_request(net.take(), B, "INVITE")
            net.feed(reply(to_b, 200), B)
            net.feed(reply(to_a, 200, to_tag="late"), A)
        net.take()
    net.advance(600)  # every transaction, dialog and timer runs out
    net.take()


def test_finished_calls_leave_no_garbage_cycles(collector_off: None) -> None:
    net = Net()
    _calls(net, 200)
    found = gc.collect()
    assert found == 0, f"{found} objects were only reachable through reference cycles"


def test_health_engine_and_probes_leave_no_garbage_cycles(collector_off: None) -> None:
    from test_health_proxy import Lab, answers, silent

    from trunkguard.prober import ProbeSettings

    lab = Lab(
        {A: silent, B: answers(200)},
        probes=ProbeSettings(interval=1.0, interval_out=0.5, timeout=0.3),
    )
    for _ in range(50):
        lab.dial()
        lab.step(0.7)
    lab.step(600)
    found = gc.collect()
    assert found == 0, f"{found} objects were only reachable through reference cycles"
