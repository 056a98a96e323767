"""Issue 12's lab: an active/standby pair on a 3-member etcd cluster, in network namespaces.

One lab for the whole file (module-scoped): a caller, routers r1 and r2 (both with the same
Record-Route key, advertising the service address), carriers c1 and c2, etcd members e1-e3,
the service address 10.77.0.100 moved by the routers' own hooks. The tests run in the
order written, each starting from whatever node is active when it begins:

* a carrier forced DOWN on the active is DOWN on the standby (measured);
* one etcd member killed (the raft leader, the harder case): no role change, no call lost;
* the active partitioned from etcd fences itself before the standby takes over, and the
  bridge capture shows no moment with two MACs answering for the service address; healed,
  the old active comes back as standby and does not answer;
* kill -9 of the active under 50 calls/s (HALAB_CALLS calls, 400 by default): the time
  until the standby answers, as the caller sees it on the wire; the calls lost, each by its
  cause; long-hold calls set up before the takeover are ended by their BYE through the new
  active.

Each prints its figures. Deadlines are generous (a loaded CI machine); the figures are
what the issue asks to see, the assertions are on counts and order.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sipp
from etcd import EtcdCluster
from halab import (
    SIP_PORT,
    admin_get,
    admin_post,
    lab_etcd,
    lab_router,
    lab_sim_carrier,
    lab_uac,
    lab_uas,
    wait_for,
)
from netns import ROUTER_HOSTS, SERVICE_ADDRESS, Lab, overlaps, read_pcap, senders, sequence
from router import RouterProcess

pytest.importorskip("trunkguard.ha", reason="the HA module (issue 12) is not in this tree")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab's network namespaces need root"),
]

PREFIX = "/trunkguard/lab"
# A 1 s lease (etcd's minimum with a 500 ms election timeout is 0.75 s): the standby can
# win 1 s after the active's last renewal; the active fences 0.6 s after it.
HA_TIMING = {"lease_ttl": 1.0, "fence_after": 0.6, "renew_every": 0.15}
SERVICE = (SERVICE_ADDRESS, SIP_PORT)
# Calls at 50/s around the kill -9: 400 (8 s) in make test; make ha-lab runs 2,000, as in
# the Kamailio comparison.
CALLS = int(os.environ.get("HALAB_CALLS", "400"))
# The address hooks are the router's defaults: `ip addr add/del` and a gratuitous ARP sent
# from the service address (Debian's arping is Habets': -S names the sender), so these
# tests prove that the defaults move the address.


@dataclass
class Pair:
    lab: Lab
    etcd: EtcdCluster
    routers: dict[str, RouterProcess]
    carriers: list[sipp.Uas]
    root: Path

    def ha(self, node: str) -> dict[str, Any]:
        view: dict[str, Any] = admin_get(self.lab, node, "/api/counters")["ha"]
        return view

    def roles(self) -> dict[str, str]:
        out = {}
        for node, router in self.routers.items():
            if router._proc is not None and router._proc.poll() is None:
                out[node] = str(self.ha(node)["role"])
        return out

    def active(self, timeout: float = 30.0) -> tuple[str, str]:
        """(active, standby) once exactly one live node is active and serving."""

        def one() -> tuple[str, str] | None:
            views = {n: self.ha(n) for n in self.routers if self.routers[n]._proc is not None}
            act = [n for n, v in views.items() if v["role"] == "active" and v.get("serving", True)]
            if len(act) != 1:
                return None
            other = next(n for n in ROUTER_HOSTS if n != act[0])
            return act[0], other

        found = wait_for(one, timeout, every=0.1)
        assert found is not None, f"no single active node: {self.describe()}"
        return found

    def describe(self) -> str:
        lines = []
        for node, router in self.routers.items():
            try:
                lines.append(f"{node}: {self.ha(node)}")
            except Exception as exc:  # a dead node: its log says why
                lines.append(f"{node}: {exc!r}")
            lines.append(router.log()[-1500:])
        return "\n".join(lines)

    def calls(self, port: int, **kw: Any) -> sipp.Uac:
        """Calls from the caller to the service address; numbers route by prefix (routes:),
        so the callee is a number: 555... for the default plan, 9... for c2."""
        kw.setdefault("service", "5551000")
        return lab_uac(self.lab, "caller", SERVICE, self.root, port=port, **kw)


def _outcomes(
    messages: list[sipp.ShortMessage], killed: float
) -> tuple[dict[str, int], dict[str, float], set[str]]:
    """Per call, the first final status its INVITE got; for the calls that got none, when
    their last provisional came (0 if none); and the answered calls whose BYE went out
    before ``killed`` and never got a 200 (the dead node held their BYE)."""
    finals: dict[str, int] = {}
    last_1xx: dict[str, float] = {}
    bye_sent: dict[str, float] = {}
    bye_ok: set[str] = set()
    for m in messages:
        status = m.status
        last_1xx.setdefault(m.call_id, 0.0)
        if m.direction == "S" and m.method == "BYE":
            bye_sent.setdefault(m.call_id, m.time)
        elif m.direction == "R" and status is not None and m.cseq_method == "BYE":
            if status == 200:
                bye_ok.add(m.call_id)
        elif m.direction == "R" and status is not None and m.cseq_method == "INVITE":
            if status < 200:
                last_1xx[m.call_id] = m.time
            else:
                finals.setdefault(m.call_id, status)
    lost = {c: t for c, t in last_1xx.items() if c not in finals}
    held_bye = {c for c, t in bye_sent.items() if t < killed and c not in bye_ok}
    return finals, lost, held_bye


def _stopped(view: dict[str, Any]) -> bool:
    """The node no longer serves: fenced (or already standby again), not serving."""
    return view["role"] in ("fenced", "standby") and not view.get("serving", False)


def _shed(pair: Pair, node: str) -> int:
    """Calls ``node`` refused as overloaded so far (its event loop late or stalled)."""
    counters: dict[str, int] = admin_get(pair.lab, node, "/api/counters")["counters"]
    return counters.get("calls_shed", 0)


def _router_config(pair_root: Path, node: str, key: Path) -> dict[str, object]:
    return {
        "secret_file": str(key),
        "advertise": f"{SERVICE_ADDRESS}:{SIP_PORT}",
        "ha": {
            "node": node,
            "etcd": [f"http://10.77.0.{31 + i}:2379" for i in range(3)],
            "prefix": PREFIX,
            "mode": "active-standby",
            **HA_TIMING,
            "service_address": f"{SERVICE_ADDRESS}/24",
            "interface": "eth0",
        },
        "probe": {"interval": 2.0},
        # The lab's end stops the routers: a call left in setup need not hold them 10 s.
        "shutdown": {"drain_timeout": 1.0},
        "routes": [{"prefix": "9", "pin": ["c2"]}],
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("ha-lab")
    key = root / "route.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    started = time.monotonic()
    with Lab(root / "lab") as lab, lab_etcd(lab) as etcd:
        # c1: SIPp, the calls that see no change of node; c2: the simulator, the calls
        # across a takeover (numbers 9...), whose responses must reach the new active: SIPp
        # answers the node a call first came through (lab_sim_carrier, docs/ha-lab.md).
        carriers = [lab_uas(lab, "c1", root, lifetime=600)]
        sim = lab_sim_carrier(lab, "c2", root)
        routers = {
            n: lab_router(lab, n, root / n, carriers=("c1", "c2"),
                          extra=_router_config(root, n, key))
            for n in ROUTER_HOSTS
        }  # fmt: skip
        pair = Pair(lab, etcd, routers, carriers, root)
        try:
            routers["r1"].start()
            assert wait_for(lambda: pair.ha("r1")["role"] == "active", 30.0), pair.describe()
            routers["r2"].start()
            assert wait_for(lambda: pair.ha("r2")["role"] == "standby", 30.0), pair.describe()
            print(f"\nHA lab up in {time.monotonic() - started:.1f} s: {pair.roles()}")
            yield pair
        finally:
            for router in routers.values():
                if router._proc is not None:
                    router.stop()  # SIGTERM: the router writes its counters
            for carrier in carriers:
                carrier.close()
            sim.kill()
            sim.wait()


def test_a_carrier_down_on_one_node_is_down_on_the_other_within_1s(pair: Pair) -> None:
    active, standby = pair.active()
    assert admin_get(pair.lab, standby, "/api/targets/c2")["state"] == "UP"
    t0 = time.monotonic()
    admin_post(pair.lab, active, "/api/targets/c2/force-down", {"seconds": 30, "reason": "lab"})
    local = time.monotonic() - t0
    state = admin_get(pair.lab, active, "/api/targets/c2")["state"]  # FORCED_DOWN
    assert state != "UP"
    seen = wait_for(
        lambda: admin_get(pair.lab, standby, "/api/targets/c2")["state"] == state, 10.0, 0.01
    )
    took = time.monotonic() - t0
    assert seen, pair.describe()
    view = admin_get(pair.lab, standby, "/api/targets/c2")
    print(f"\nc2 forced down on {active} (API answered in {local * 1000:.0f} ms): {state} on "
          f"{standby} {took * 1000:.0f} ms after the request; there: "
          f"{view['reason']!r}")  # fmt: skip
    # The aim is 1 s (printed above); a loaded CI machine gets more room before it fails.
    assert took < 5.0, f"{took:.3f} s"
    admin_post(pair.lab, active, "/api/targets/c2/restore", {})
    assert wait_for(
        lambda: admin_get(pair.lab, standby, "/api/targets/c2")["state"] == "UP", 10.0
    ), pair.describe()


def test_one_etcd_member_killed_nothing_changes(pair: Pair) -> None:
    active, standby = pair.active()
    before = {n: pair.ha(n) for n in ROUTER_HOSTS}
    leader = pair.etcd.leader(timeout=2.0)
    assert leader is not None
    calls = pair.calls(5061, calls=100, rate=20, timeout=60)
    try:
        assert wait_for(lambda: calls.sent("INVITE") >= 20, 20.0)
        pair.etcd.kill(leader)
        killed = time.monotonic()
        result = calls.wait()
    finally:
        calls.close()
    after = {n: pair.ha(n) for n in ROUTER_HOSTS}
    print(f"\netcd leader m{leader} killed under 20 calls/s: {result.successful} of 100 calls "
          f"completed, {result.failed} failed; roles {before[active]['role']}/"
          f"{before[standby]['role']} -> {after[active]['role']}/{after[standby]['role']}, "
          f"epoch {before[active]['epoch']} -> {after[active]['epoch']}, takeovers "
          f"{before[standby].get('takeovers')} -> {after[standby].get('takeovers')}, "
          f"{time.monotonic() - killed:.1f} s observed")  # fmt: skip
    assert result.successful == 100 and result.failed == 0, result.describe()
    assert after[active]["role"] == "active" and after[standby]["role"] == "standby"
    assert after[active]["epoch"] == before[active]["epoch"]
    # Beyond ha-spec.md's block (node, mode, role, epoch, leader, etcd...), when given.
    assert after[standby].get("takeovers") == before[standby].get("takeovers")
    # The raft leader's death stops lease renewals for one election (about 0.5-1.3 s here):
    # with fence_after 0.6 s the active may fence for that moment, which the calls above
    # ride out on retransmissions. Shown, so the figure is in the output.
    if "fences" in after[active]:
        print(f"{active} fenced itself {after[active]['fences'] - before[active]['fences']} "
              f"time(s) meanwhile")
    pair.etcd.start_member(leader)
    pair.etcd.wait_healthy(members=[leader])


def test_partitioned_active_fences_before_the_standby_takes_over(pair: Pair) -> None:
    lab = pair.lab
    active, standby = pair.active()
    capture = lab.capture(pair.root / "partition.pcap")
    # 12 s of calls; the bound ends a call the fenced node had answered 100 Trying for.
    calls = pair.calls(5062, calls=240, rate=20, timeout=30, service="9003")  # the simulator
    try:
        assert wait_for(lambda: calls.sent("INVITE") >= 20, 20.0)
        cut = time.time()
        with lab.partition(active, ["e1", "e2", "e3"]):
            fenced = wait_for(lambda: _stopped(pair.ha(active)), 20.0, 0.02)
            t_fenced = time.time() - cut
            took_over = wait_for(lambda: pair.ha(standby)["role"] == "active", 30.0, 0.02)
            t_active = time.time() - cut
            assert fenced and took_over, pair.describe()
            old_view = pair.ha(active)
        healed = time.time()
        # Back in touch with etcd, the old active sees the new epoch and stays standby.
        assert wait_for(lambda: pair.ha(active)["role"] == "standby", 30.0), pair.describe()
        result = calls.wait()
    finally:
        calls.close()
        capture.stop()
    frames = read_pcap(capture.path)
    spans = senders(frames, SERVICE_ADDRESS)
    runs = sequence(frames, SERVICE_ADDRESS)
    _, lost, _ = _outcomes(result.messages, cut)
    old_mac, new_mac = lab.mac(active), lab.mac(standby)
    old = [s for s in spans if s.mac == old_mac]
    new = [s for s in spans if s.mac == new_mac]
    gap = (new[0].first - old[0].last) if old and new else float("nan")
    print(f"\n{active} cut from etcd: it stopped serving {t_fenced:.2f} s later "
          f"(role {old_view['role']}), {standby} active {t_active:.2f} s later; on the wire "
          f"{active}'s last packet from {SERVICE_ADDRESS} {old[0].last - cut if old else 0:+.3f}"
          f" s, {standby}'s first {new[0].first - cut if new else 0:+.3f} s (gap "
          f"{gap * 1000:.0f} ms); runs of senders: "
          f"{[lab.host_of_mac(r[0]) for r in runs]}; calls {result.successful} completed, "
          f"{result.failed} failed, {len(lost)} left waiting after a 100 Trying from "
          f"{active}, of 240; healed, {active} is {pair.ha(active)['role']}")  # fmt: skip
    assert old and new, spans
    assert overlaps(spans) == [], spans
    assert [lab.host_of_mac(r[0]) for r in runs] == [active, standby], runs
    assert old[0].last < new[0].first
    assert all(f.time < healed for f in frames if f.src_mac == old_mac and
               f.src_ip == SERVICE_ADDRESS)  # fmt: skip


def test_kill_9_the_active_under_50_calls_per_second(pair: Pair) -> None:
    lab = pair.lab
    active, standby = pair.active()
    shed_before = _shed(pair, standby)
    shed_old_before = _shed(pair, active)
    capture = lab.capture(pair.root / "kill.pcap")
    # Long-hold calls set up before the kill; their BYE goes out after the takeover.
    held = pair.calls(5063, calls=20, rate=20, pause_ms=8000, timeout=60, service="9001")
    load = None
    try:
        assert wait_for(lambda: held.responses_received(200) >= 20, 20.0), held.describe()
        # 8 s of calls; a call the dead node had answered 100 Trying for waits (the caller
        # no longer retransmits) until this run's end, hence the bound.
        # To the simulator too: SIPp's UAS pins each call to the address its first INVITE
        # came from, so a call the dead node had sent on, or whose BYE the new one relays,
        # is answered at the dead node (see docs/ha-lab.md).
        load = pair.calls(5064, calls=CALLS, rate=50, timeout=CALLS / 50 + 17, service="9002")
        assert wait_for(lambda: load.sent("INVITE") >= 100, 20.0)
        shed_old = _shed(pair, active)
        killed = time.time()
        os.kill(pair.routers[active].pid, signal.SIGKILL)
        pair.routers[active]._proc.wait()  # type: ignore[union-attr]
        pair.routers[active]._proc = None
        assert wait_for(lambda: pair.ha(standby)["role"] == "active", 30.0), pair.describe()
        loaded = load.wait()
        holding = held.wait()
    finally:
        held.close()
        if load is not None:
            load.close()
        capture.stop()
    frames = read_pcap(capture.path)
    caller_mac = lab.mac("caller")
    answered = sorted(f.time for f in frames if f.src_ip == SERVICE_ADDRESS
                      and f.dst_mac == caller_mac and f.src_mac == lab.mac(standby)
                      and f.time > killed)  # fmt: skip
    last_old = max((f.time for f in frames if f.src_mac == lab.mac(active)
                    and f.src_ip == SERVICE_ADDRESS), default=float("nan"))  # fmt: skip
    # The killed process ran no release hook: its host still has the address, and its
    # kernel may still answer ARP for it (counted, shown).
    after_kill = sum(1 for f in frames if f.src_mac == lab.mac(active)
                     and f.src_ip == SERVICE_ADDRESS and f.time > killed)  # fmt: skip
    byes = [m.time for m in holding.messages if m.direction == "S" and m.method == "BYE"]
    served = answered[0] - killed if answered else float("nan")
    print(f"\nkill -9 {active} under 50 calls/s: {standby} answered the caller "
          f"{served:.2f} s after the kill ({active}'s last packet "
          f"{last_old - killed:+.3f} s, {after_kill} from its host after the kill); "
          f"calls {loaded.successful} completed, {loaded.failed} failed of {CALLS}; long-hold "
          f"calls {holding.successful} of 20 ended by a BYE sent "
          f"{min(byes) - killed if byes else 0:+.2f}..{max(byes) - killed if byes else 0:+.2f}"
          f" s after the kill")  # fmt: skip
    refused = {k: v for k, v in admin_get(lab, standby, "/api/counters")["counters"].items()
               if k.startswith("dialog_refused")}  # fmt: skip
    counters = admin_get(lab, standby, "/api/counters")["counters"]
    shed = _shed(pair, standby) - shed_before
    shed_old -= shed_old_before
    print(f"in-dialog requests {standby} refused: {refused or 'none'}; calls it shed as "
          f"overloaded: {shed} (loop stalls {counters.get('loop_stalls', 0)}); stray 2xx "
          f"it ended with a BYE: {counters.get('stray_byes_sent', 0)}")  # fmt: skip
    finals, lost, held_bye = _outcomes(loaded.messages, killed)
    refused = sum(1 for code in finals.values() if code == 503)
    other = CALLS - loaded.successful - refused - len(lost) - len(held_bye)
    print(f"the {CALLS} calls: {loaded.successful} completed, {refused} refused 503 (shed "
          f"as overloaded: {shed_old} by {active} before the kill, {shed} by {standby}), "
          f"{len(lost)} left waiting after a 100 Trying from {active} before it died, "
          f"{len(held_bye)} whose BYE {active} held when it died, {other} otherwise "
          f"failed")  # fmt: skip
    assert answered, "the standby never answered the caller"
    # Zero failed is the aim, and what an idle machine shows. Three kinds of loss are not
    # the takeover's doing, and are counted apart: a call a node refused (503) because its
    # own event loop was late (the overload guard, on a busy machine); a call whose INVITE
    # the dead node had already answered 100 Trying (the caller then stops retransmitting,
    # RFC 3261 17.1.1.2, so no INVITE reaches the new active); a call whose BYE the dead
    # node had received (its retransmissions may reach a carrier whose dialog is over).
    # Any other failure fails the test.
    assert refused <= shed + shed_old, loaded.describe()
    assert all(t <= killed + 0.05 for t in lost.values()), lost
    assert other == 0, loaded.describe()
    assert holding.successful == 20 and holding.failed == 0, holding.describe()
    assert byes and min(byes) > answered[0], "a BYE went out before the takeover"
