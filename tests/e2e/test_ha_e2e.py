"""HA on loopback: two real routers sharing one real etcd (Debian's etcd-server).

No service address here (both routers are on 127.0.0.1, on ports of their own):
what is tested is the leadership, the gate, fencing, the shared target state
and the shared capacity. The floating IP, partitions and packet captures are
the network-namespace lab's.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from etcd import EtcdCluster, free_tcp_port
from router import RouterProcess

from trunkguard.lab._caller import CallGenerator, GeneratorSettings
from trunkguard.lab._carrier import SimCarrier

pytestmark = pytest.mark.e2e
TOKEN = "ha-test-token-0123456789"
T = TypeVar("T")
LEASE_TTL = 2.0
WAIT = 20.0  # generous: a loaded CI machine is slow; every wait polls for its condition


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster() as cluster:
        yield cluster


@pytest.fixture
def bg() -> Iterator[Background]:
    with Background() as background:
        yield background


def _ha(node: str, endpoints: list[str], prefix: str, **more: object) -> dict[str, object]:
    return {
        "node": node,
        "etcd": endpoints,
        "prefix": prefix,
        "lease_ttl": LEASE_TTL,
        "renew_every": 0.25,
        "fence_after": 1.2,
        **more,
    }


class Node:
    """One router of the pair, with its admin API."""

    def __init__(self, router: RouterProcess, admin: int) -> None:
        self.router = router
        self.url = f"http://127.0.0.1:{admin}"

    def api(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5) as response:
            out: dict[str, Any] = json.loads(response.read())
            return out

    def ha(self) -> dict[str, Any]:
        block: dict[str, Any] = self.api("/api/counters")["ha"]
        return block

    def state(self, target: str) -> str:
        return str(self.api(f"/api/targets/{target}")["state"])


def _node(
    tmp_path: Path, name: str, carriers: list[tuple[str, int]], ha: dict[str, object],
    extra: dict[str, object] | None = None,
) -> Node:  # fmt: skip
    admin = free_tcp_port()
    router = RouterProcess(
        tmp_path / name,
        carriers,
        extra={
            "admin": {"listen": f"127.0.0.1:{admin}", "token": TOKEN},
            "probe": {"interval": 1.0, "interval_out": 0.5, "timeout": 0.5},
            "ha": ha,
            **(extra or {}),
        },
    )
    return Node(router, admin)


def _until(what: str, check: Any, timeout: float = WAIT, every: float = 0.05) -> float:
    """Poll ``check()`` until true; the seconds it took. Fails with ``what`` after ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except OSError:
            pass  # a router starting or just killed
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(every)


def _roles(nodes: list[Node]) -> list[str]:
    return [n.ha()["role"] for n in nodes]


async def _calls(
    port: int, n: int, hold: float = 0.2, rate: float = 20, timeout: float = 8.0
) -> list[Any]:
    settings = GeneratorSettings(
        target=("127.0.0.1", port), rate=rate, calls=n, hold=hold, timeout=timeout
    )
    gen = CallGenerator(settings)
    return list(await gen.run())


class Background:
    """An event loop in a thread of its own: the simulated carriers answer (probes too)
    while the test polls the routers' APIs; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def carrier(self, name: str) -> SimCarrier:
        sim = SimCarrier(name)
        self.run(sim.start())
        self.sims.append(sim)
        return sim

    sims: list[SimCarrier]

    def __enter__(self) -> Background:
        self.sims = []
        return self

    def __exit__(self, *exc: object) -> None:
        for sim in self.sims:
            self.run(sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def test_one_active_serves_and_the_standby_takes_over_after_kill(
    tmp_path: Path, etcd: EtcdCluster, bg: Background
) -> None:
    sim = bg.carrier("a")
    prefix = "/tg/kill"
    r1 = _node(tmp_path, "r1", [("a", sim.port)], _ha("r1", etcd.endpoints, prefix))
    r2 = _node(tmp_path, "r2", [("a", sim.port)], _ha("r2", etcd.endpoints, prefix))
    try:
        r1.router.start()
        _until("r1 active", lambda: r1.ha()["role"] == "active")
        r2.router.start()
        _until("r2 standby", lambda: r2.ha()["role"] == "standby" and r2.ha()["leader"] == "r1")
        assert _roles([r1, r2]) == ["active", "standby"]
        assert r1.ha()["epoch"] == r2.ha()["epoch"] and r1.ha()["serving"] is True
        # The active serves; the standby drops everything (and sends no probe).
        ok = bg.run(_calls(r1.router.port, 5))
        assert [c.final for c in ok] == [200] * 5
        dropped_before = r2.api("/api/counters")["counters"].get("ha_dropped_in", 0)
        lost = bg.run(_calls(r2.router.port, 2, timeout=1.5))
        assert all(c.final is None for c in lost), [c.final for c in lost]
        counters = r2.api("/api/counters")["counters"]
        assert counters.get("ha_dropped_in", 0) > dropped_before
        assert not any(k.startswith("probes_to:") and v for k, v in counters.items())
        # kill -9 the active: the standby serves within lease_ttl + 1 s.
        r1.router._proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        killed = time.monotonic()
        took = _until("r2 active", lambda: r2.ha()["role"] == "active", every=0.02)
        print(f"takeover after kill -9: r2 active {took:.2f}s after the kill (lease {LEASE_TTL}s)")
        assert took <= LEASE_TTL + 1.0
        assert r2.ha()["takeovers"] == 1
        again = bg.run(_calls(r2.router.port, 5))
        assert [c.final for c in again] == [200] * 5
        print(f"first calls through r2 answered {time.monotonic() - killed:.2f}s after the kill")
        # The old active comes back: it never serves next to the new one.
        r1.router._proc.wait()  # type: ignore[union-attr]
        r1.router._proc = None
        r1.router.start()
        _until("r1 standby", lambda: r1.ha()["role"] == "standby" and r1.ha()["leader"] == "r2")
        assert _roles([r1, r2]) == ["standby", "active"]
    finally:
        r1.router.stop()
        r2.router.stop()


def test_operator_moves_on_one_node_show_on_the_other(
    tmp_path: Path, etcd: EtcdCluster, bg: Background
) -> None:
    sim, sim_b = bg.carrier("a"), bg.carrier("b")
    prefix = "/tg/state"
    carriers = [("a", sim.port), ("b", sim_b.port)]
    r1 = _node(tmp_path, "r1", carriers, _ha("r1", etcd.endpoints, prefix))
    r2 = _node(tmp_path, "r2", carriers, _ha("r2", etcd.endpoints, prefix))
    try:
        r1.router.start()
        r2.router.start()
        _until("one active", lambda: sorted(_roles([r1, r2])) == ["active", "standby"])
        standby = r1 if r1.ha()["role"] == "standby" else r2
        active = r2 if standby is r1 else r1
        figures = []
        # A drain on the active shows on the standby, and one on the standby on the active.
        for source, other, target, move, body, want in (
            (active, standby, "a", "drain", {}, "DRAINED"),
            (active, standby, "a", "restore", {}, "UP"),
            (standby, active, "b", "force-down", {"seconds": 60, "reason": "drill"}, "FORCED_DOWN"),
            (standby, active, "b", "restore", {}, "UP"),
        ):
            source.api(f"/api/targets/{target}/{move}", body)
            took = _until(
                f"{target} {want} on the other",
                lambda o=other, t=target, w=want: o.state(t) == w,  # type: ignore[misc]
            )
            figures.append((move, target, took))
            assert took <= 1.0 + 0.5, f"{move} {target} took {took:.2f}s"  # 1 s, plus the poll
        print("replication (seconds until the other node's API shows it): " + ", ".join(
            f"{m} {t} {s:.3f}" for m, t, s in figures
        ))  # fmt: skip
        # A forced-down's revert time comes across too (on the other node's clock).
        active.api("/api/targets/b/force-down", {"seconds": 30, "reason": "drill"})
        _until("b forced down on the standby", lambda: standby.state("b") == "FORCED_DOWN")
        left = standby.api("/api/targets/b")
        mine = active.api("/api/targets/b")
        assert left["forced_until"] == mine["forced_until"] or abs(
            _iso(left["forced_until"]) - _iso(mine["forced_until"])
        ) < 0.01
        # Adopted, never echoed back: each change went to etcd once.
        events = standby.api("/api/events?target=b")["events"]
        assert any("(on " in e["reason"] for e in events), events
    finally:
        r1.router.stop()
        r2.router.stop()


def _iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_etcd_lost_both_keep_their_state_and_say_so(tmp_path: Path, bg: Background) -> None:
    sim = bg.carrier("a")
    with EtcdCluster() as etcd:
        prefix = "/tg/lost"
        r1 = _node(tmp_path, "r1", [("a", sim.port)], _ha("r1", etcd.endpoints, prefix))
        r2 = _node(tmp_path, "r2", [("a", sim.port)], _ha("r2", etcd.endpoints, prefix))
        try:
            r1.router.start()
            _until("r1 active", lambda: r1.ha()["role"] == "active")
            r2.router.start()
            _until("r2 standby", lambda: r2.ha()["leader"] == "r1")
            r1.api("/api/targets/a/drain", {})
            _until("a drained on r2", lambda: r2.state("a") == "DRAINED")
            etcd.stop()
            _until("both see etcd lost", lambda: [n.ha()["etcd"] for n in (r1, r2)] == ["lost"] * 2)
            # The active cannot renew: it fences itself (and the standby cannot win).
            _until("r1 fenced", lambda: r1.ha()["role"] == "fenced")
            assert r1.ha()["serving"] is False and r2.ha()["role"] == "standby"
            assert r1.state("a") == "DRAINED" and r2.state("a") == "DRAINED"
            for node in (r1, r2):
                assert node.ha()["etcd_lost_since"] is not None
                status = subprocess.run(
                    [sys.executable, "-m", "trunkguard", "status", "--config",
                     str(node.router.config_path)],
                    capture_output=True, text=True, timeout=30, check=False,
                )  # fmt: skip
                assert status.returncode == 0, status.stderr
                assert "etcd lost since" in status.stdout, status.stdout
                assert "routing on the last-known state" in status.stdout
            metrics = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                urllib.request.Request(
                    r1.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
                ),
                timeout=5,
            ).read().decode()
            assert "trunkguard_ha_etcd_connected 0.0" in metrics
            assert 'trunkguard_ha_role{role="fenced"} 1.0' in metrics
            # etcd back: the fenced node finds its lease and key still there, or the other won.
            etcd.start()
            _until("one active again", lambda: sorted(_roles([r1, r2])) == ["active", "standby"])
            assert [n.ha()["etcd"] for n in (r1, r2)] == ["connected"] * 2
        finally:
            r1.router.stop()
            r2.router.stop()


def test_active_active_nodes_share_max_calls(
    tmp_path: Path, etcd: EtcdCluster, bg: Background
) -> None:
    sim = bg.carrier("a")
    prefix = "/tg/aa"
    carrier = {"name": "a", "uri": f"sip:127.0.0.1:{sim.port}", "max_calls": 4}
    nodes = [
        _node(
            tmp_path,
            name,
            [("a", sim.port)],
            _ha(name, etcd.endpoints, prefix, mode="active-active"),
            {"carriers": [carrier]},
        )
        for name in ("r1", "r2")
    ]
    r1, r2 = nodes
    try:
        for n in nodes:
            n.router.start()
        _until("both active", lambda: _roles(nodes) == ["active", "active"])

        async def both() -> tuple[list[Any], list[Any]]:
            first = asyncio.ensure_future(_calls(r1.router.port, 3, hold=4.0, rate=20))
            await asyncio.sleep(1.5)  # r1's three calls are up, and published
            second = await _calls(r2.router.port, 3, hold=0.5, rate=20)
            return await first, second

        first, second = bg.run(both())
        assert [c.final for c in first] == [200] * 3
        finals = sorted(c.final or 0 for c in second)
        print(f"active-active, max_calls 4: r1 held 3, r2's three calls got {finals}")
        # 4 - 3 = 1 left for r2: one answered, the others refused (no other route).
        assert finals.count(200) == 1, finals
        overflow = r2.api("/api/counters")["counters"]
        assert any(k.startswith("overflow") or "overflow" in k for k in overflow), overflow
    finally:
        for n in nodes:
            n.router.stop()
