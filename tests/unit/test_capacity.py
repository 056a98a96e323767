"""Capacity limits: a full target is skipped as overflow, never counted as a fault."""

from __future__ import annotations

import random

from test_proxy_core import CALLER, A, B, Net, invite, only_request, reply, responses

from trunkguard.health import HealthEngine, State
from trunkguard.health._capacity import Capacity


def test_concurrent_limit() -> None:
    cap = Capacity(max_calls=2)
    assert cap.full(0.0) is None
    cap.take(0.0)
    cap.take(0.0)
    assert cap.full(0.0) == "2 calls up, limit 2"
    cap.release()
    assert cap.full(0.0) is None


def test_rate_limit_refills_over_time() -> None:
    cap = Capacity(max_cps=2.0)
    cap.take(10.0)
    cap.take(10.0)
    assert cap.full(10.0) == "over 2 new calls per second"
    assert cap.full(10.4) is not None  # 0.8 of a token refilled
    assert cap.full(10.5) is None
    cap.take(10.5)
    assert cap.full(10.5) is not None
    assert cap.full(11.0) is None


def _net_with_limits(max_calls: int | None, max_cps: float | None) -> Net:
    net = Net()
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1), probes_enabled=False)
    health.set_capacity("a", max_calls, max_cps)
    net.proxy.health = health
    return net


def test_full_carrier_is_skipped_and_is_not_a_fault() -> None:
    net = _net_with_limits(max_calls=1, max_cps=None)
    net.feed(invite("cap1"), CALLER)
    first = only_request(net.take(), A, "INVITE")
    net.feed(reply(first, 180), A)
    net.feed(reply(first, 200), A)
    net.take()
    net.feed(invite("cap2"), CALLER)  # a has its one call up: straight to b
    out = net.take()
    assert net.sent_to(A, out) == [] and net.sent_to(B, out) == ["INVITE"]
    assert net.proxy.counters["overflow:a"] == 1
    assert net.proxy.health is not None
    assert net.proxy.health.state("a") is State.UP


def test_every_route_full_gets_our_own_503_with_retry_after() -> None:
    net = Net()
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1), probes_enabled=False)
    for name in ("a", "b", "c"):
        health.set_capacity(name, None, 1.0)
    net.proxy.health = health
    for i in range(3):
        net.feed(invite(f"cap-r{i}"), CALLER)
    net.take()
    net.feed(invite("cap-over"), CALLER)
    out = net.take()
    assert responses(out, CALLER) == [100, 503]
    final = out[-1][1]
    assert final.get("retry-after") == "1"
    assert net.proxy.counters["calls_overflow"] == 1
