"""Server pools: tier 1 while any of it is up, tier 2 promoted at once, preempt delay back."""

from __future__ import annotations

import random
from pathlib import Path

from test_proxy_core import invite

from trunkguard.config import load_config
from trunkguard.routing import PoolMember, ServerPool
from trunkguard.runtime import Runtime
from trunkguard.sip import Request, parse_message


def pool(preempt: float = 60.0) -> ServerPool:
    members = [PoolMember("pbx1", 1, 1), PoolMember("pbx2", 1, 1), PoolMember("pbx3", 2, 1)]
    return ServerPool("inbound", members, ["1800"], preempt, random.Random(1))


def step(
    p: ServerPool, up: dict[str, bool], now: float
) -> tuple[list[str], list[str], str | None]:
    """A tier update on the pool's timer, then a plan's order."""
    change = p.update(lambda n: up[n], now)
    names, explain = p.order(now)
    return names, explain, change


def first_up(names: list[str], up: dict[str, bool]) -> str:
    # The pool orders members; the plan then skips those out of rotation.
    return next(n for n in names if up[n])


def test_tier_one_takes_traffic_while_any_member_is_up() -> None:
    p = pool()
    up = {"pbx1": False, "pbx2": True, "pbx3": True}
    names, explain, change = step(p, up, 0.0)
    assert set(names[:2]) == {"pbx1", "pbx2"} and names[2] == "pbx3"
    assert change is None
    assert explain[0].startswith("pool inbound tier 1 (active)")


def test_standby_promoted_at_once_and_demoted_after_the_preempt_delay() -> None:
    p = pool(preempt=60.0)
    up = {"pbx1": False, "pbx2": False, "pbx3": True}
    names, _, change = step(p, up, 10.0)
    assert names[0] == "pbx3"
    assert change == "inbound: tier 2 promoted: tier 1 has no member up"
    up["pbx1"] = True  # the primary is back...
    names, explain, change = step(p, up, 20.0)
    assert names[0] == "pbx3" and change is None  # ...but the standby keeps it for now
    assert "takes over in 60s" in explain[1]
    names, _, change = step(p, up, 79.0)
    assert names[0] == "pbx3" and change is None
    names, _, change = step(p, up, 80.0)
    assert first_up(names, up) == "pbx1" and names[2] == "pbx3"
    assert change == "inbound: tier 2 demoted: tier 1 up for 60s (preempt delay)"


def test_a_flapping_primary_restarts_the_preempt_delay() -> None:
    p = pool(preempt=30.0)
    up = {"pbx1": False, "pbx2": False, "pbx3": True}
    step(p, up, 0.0)
    up["pbx1"] = True
    step(p, up, 10.0)  # back since 10
    up["pbx1"] = False
    step(p, up, 20.0)  # out again: the clock stops
    up["pbx1"] = True
    step(p, up, 25.0)  # back since 25
    names, _, change = step(p, up, 50.0)
    assert names[0] == "pbx3" and change is None
    names, _, change = step(p, up, 55.0)
    assert first_up(names, up) == "pbx1" and change is not None


def test_standby_down_while_primary_is_back_switches_at_once() -> None:
    p = pool(preempt=600.0)
    up = {"pbx1": False, "pbx2": False, "pbx3": True}
    step(p, up, 0.0)
    up = {"pbx1": True, "pbx2": False, "pbx3": False}
    names, _, change = step(p, up, 5.0)
    assert first_up(names, up) == "pbx1"
    assert change == "inbound: tier 1 back in front: tier 2 has no member up"


def test_weights_share_the_active_tier() -> None:
    members = [PoolMember("a", 1, 3), PoolMember("b", 1, 1)]
    p = ServerPool("w", members, ["1"], rng=random.Random(7))
    firsts = [p.order(0.0)[0][0] for _ in range(4000)]
    share = firsts.count("a") / len(firsts)
    assert 0.70 < share < 0.80  # 3:1


def test_pool_numbers_go_to_the_pool_and_others_to_carriers(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(
        """\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - {name: a, uri: "sip:127.0.0.1:5071"}
pools:
  - name: inbound
    prefixes: ["1800"]
    preempt_delay: 30
    members:
      - {name: pbx1, uri: "sip:127.0.0.1:5081", tier: 1}
      - {name: pbx2, uri: "sip:127.0.0.1:5082", tier: 2}
probe: {enabled: false}
store: {path: events.db}
"""
    )
    config, _ = load_config(path)
    runtime = Runtime(config)
    runtime.start(0.0)
    proxy = runtime.proxy

    def plan_for(number: str, now: float) -> list[str]:
        request = parse_message(invite().replace(b"15551234567", number.encode()))
        assert isinstance(request, Request)
        return [t.name for t in proxy.plan(request, now).targets]

    assert plan_for("18005550100", 1.0) == ["pbx1", "pbx2"]
    assert plan_for("442079460000", 1.0) == ["a"]
    proxy.apply_health_changes(runtime.health.unreachable("pbx1", 2.0, "test"))
    assert plan_for("18005550100", 3.0) == ["pbx2"]
    # The tier moved with the health change, not with the plan.
    assert proxy.counters["pool_changes:inbound"] == 1
    assert proxy.routing is not None and proxy.routing.pools[0].active == 2
    runtime.close()
