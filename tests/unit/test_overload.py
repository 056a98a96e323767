"""Our own stall is not the carriers' fault: excuse their timeouts, shed new calls briefly."""

from __future__ import annotations

import random

from test_proxy_core import CALLER, A, B, Net, invite, only_request, responses

from trunkguard.health import HealthEngine, State
from trunkguard.proxy._core import SHED_FOR, STALL_GRACE


def _net() -> Net:
    net = Net(invite_timeout=1.0)
    net.proxy.health = HealthEngine(["a", "b", "c"], rng=random.Random(1), probes_enabled=False)
    return net


def test_new_calls_get_our_own_503_right_after_a_stall() -> None:
    net = _net()
    net.proxy.note_stall(0.8, net.now)
    net.feed(invite("o1"), CALLER)
    out = net.take()
    assert responses(out, CALLER) == [503]
    assert out[0][1].get("retry-after") == "1"
    assert net.sent_to(A, out) == [] and net.proxy.counters["calls_shed"] == 1
    net.advance(SHED_FOR + 0.01)
    net.feed(invite("o2"), CALLER)
    assert net.sent_to(A, net.take()) == ["INVITE"]


def test_timeouts_during_a_stall_do_not_trip_the_carrier() -> None:
    net = _net()
    health = net.proxy.health
    assert health is not None
    for i in range(6):
        net.advance(SHED_FOR + 0.01)
        net.feed(invite(f"t{i}"), CALLER)
        only_request(net.take(), A, "INVITE")
        net.proxy.note_stall(0.5, net.now)  # the loop is stalled while a's answers wait
        net.advance(1.05)  # a's no-response timer fires: the call moves to b
        only_request(net.take(), B, "INVITE")
    assert health.state("a") is State.UP
    assert net.proxy.counters["timeouts_excused"] >= 6  # a's, and b's that followed
    # Without a stall, the same string of timeouts is a string of faults.
    net.advance(STALL_GRACE + 0.1)
    for i in range(5):
        net.feed(invite(f"u{i}"), CALLER)
        only_request(net.take(), A, "INVITE")
        net.advance(1.05)
        net.take()
    assert health.state("a") is State.DOWN


def test_the_last_route_waits_invite_timeout_not_the_adaptive_timer() -> None:
    net = _net()
    health = net.proxy.health
    assert health is not None
    health.targets["a"].timer.sample(0.002)  # a answers in 2 ms: its timer is the 0.3 s floor
    health.targets["b"].timer.sample(0.002)
    net = _single_route(net)
    net.feed(invite("l1"), CALLER)
    net.take()
    net.advance(0.5)
    assert responses(net.take(), CALLER) == []  # still waiting: a is the only route
    net.advance(0.6)  # invite_timeout (1 s) passed
    assert 408 in responses(net.take(), CALLER)


def _single_route(net: Net) -> Net:
    net.proxy.targets = net.proxy.targets[:1]
    return net
