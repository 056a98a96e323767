"""HA on loopback: two real routers sharing one real etcd (Debian's etcd-server).

No service address here (both routers are on 127.0.0.1, on ports of their own):
what is tested is the leadership, the gate, fencing, the shared target state,
registration across a takeover, the dashboard's HA line and the shared capacity.
The floating IP, partitions and packet captures are the network-namespace lab's.

One etcd and one active/standby pair serve the module's tests in file order (each
starts by waiting for the pair to settle, and leaves it with one active): router
start-ups, not the checks, were most of the time; Chromium is launched as the module
starts, for the dashboard's checks in the etcd-lost test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from etcd import EtcdCluster, free_tcp_port
from router import RouterProcess

from trunkguard.cli import main
from trunkguard.lab._caller import CallGenerator, GeneratorSettings
from trunkguard.lab._carrier import RegistrarConfig, SimCarrier

pytestmark = pytest.mark.e2e
TOKEN = "ha-test-token-0123456789"
T = TypeVar("T")
# The defaults. A 1 s lease (fence 0.75 s) would save a second per takeover, but on a
# loaded 2-core machine a router starved of CPU that long fenced itself and lost its
# lease now and then: a takeover no test asked for.
LEASE_TTL = 2.0  # s; etcd rounds TTLs to whole seconds
FENCE_AFTER = 1.2  # s, < LEASE_TTL
RENEW_EVERY = 0.25  # s, <= FENCE_AFTER / 2
WAIT = 20.0  # generous: a loaded CI machine is slow; every wait polls for its condition
REG_USER, REG_PASSWORD = "trunk-ha", "pw-ha-Kestrel-4417"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def bg() -> Iterator[Background]:
    with Background() as background:
        yield background


def _ha(node: str, endpoints: list[str], prefix: str, **more: object) -> dict[str, object]:
    return {
        "node": node,
        "etcd": endpoints,
        "prefix": prefix,
        "lease_ttl": LEASE_TTL,
        "renew_every": RENEW_EVERY,
        "fence_after": FENCE_AFTER,
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

    def counter(self, name: str) -> int:
        return int(self.api("/api/counters")["counters"].get(name, 0))

    def state(self, target: str) -> str:
        return str(self.api(f"/api/targets/{target}")["state"])

    def registration(self, target: str = "reg") -> str:
        return str(self.api(f"/api/targets/{target}")["registration"]["state"])


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


# The routers are started from these threads, which live as long as the module's tests:
# a child's die-with-parent signal comes when the *thread* that started it ends.
_POOL = ThreadPoolExecutor(2, thread_name_prefix="ha-routers")


@pytest.fixture(scope="module", autouse=True)
def _pool() -> Iterator[None]:
    yield
    _POOL.shutdown(wait=True)


def _each(nodes: list[Node], what: Callable[[Node], object]) -> None:
    """``what`` on every node at once (starting and stopping are mostly waiting)."""
    for future in [_POOL.submit(what, n) for n in nodes]:
        future.result()


def _start_all(nodes: list[Node]) -> None:
    _each(nodes, lambda n: n.router.start())


def _stop_all(nodes: list[Node]) -> None:
    _each(nodes, lambda n: n.router.stop())


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
    port: int, n: int, hold: float = 0.2, rate: float = 10, timeout: float = 8.0
) -> list[Any]:
    # Not faster: a call whose start a stall pushes past the window (n / rate) is dropped.
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

    def carrier(self, name: str, registrar: RegistrarConfig | None = None) -> SimCarrier:
        sim = SimCarrier(name, registrar=registrar)
        self.run(sim.start())
        self.sims.append(sim)
        return sim

    def bindings(self, sim: SimCarrier) -> set[int]:
        """The ports of the contacts ``sim``'s registrar holds now (read on its own loop)."""

        async def read() -> set[int]:
            core = sim._core
            if core is None or core.registrar is None:
                return set()
            core.registrar.registered(self.loop.time())  # drops the lapsed ones
            return {int(c.rsplit(":", 1)[1].split(";")[0]) for c in core.registrar.bindings}

        return self.run(read())

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


class Pair:
    """r1 and r2, active/standby, carriers reg (registers, first in every plan), a and b."""

    def __init__(self, r1: Node, r2: Node, reg: SimCarrier) -> None:
        self.r1, self.r2, self.reg = r1, r2, reg

    @property
    def nodes(self) -> list[Node]:
        return [self.r1, self.r2]

    def settled(self) -> tuple[Node, Node]:
        """(active, standby), once one serves and the other follows it."""

        seen: list[object] = []

        def check() -> bool:
            a, b = (n.ha() for n in self.nodes)
            seen[:] = [a, b]
            roles = sorted((a["role"], b["role"]))
            return roles == ["active", "standby"] and a["leader"] == b["leader"] is not None

        try:
            _until("one active, one standby, the same leader", check)
        except AssertionError as exc:
            logs = "\n".join(n.router.log()[-3000:] for n in self.nodes)
            raise AssertionError(f"{exc}; last seen: {seen}\n{logs}") from None
        first = self.r1.ha()["role"] == "active"
        return (self.r1, self.r2) if first else (self.r2, self.r1)


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster, bg: Background
) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("pair")
    reg = bg.carrier("reg", RegistrarConfig(REG_USER, REG_PASSWORD))
    sim_a, sim_b = bg.carrier("a"), bg.carrier("b")
    register = {"user": REG_USER, "password": REG_PASSWORD, "expires": 60}
    carriers = [
        {"name": "reg", "uri": f"sip:127.0.0.1:{reg.port}", "register": register},
        {"name": "a", "uri": f"sip:127.0.0.1:{sim_a.port}"},
        {"name": "b", "uri": f"sip:127.0.0.1:{sim_b.port}"},
    ]
    nodes = [
        _node(tmp, n, [], _ha(n, etcd.endpoints, "/tg/pair"), {"carriers": carriers})
        for n in ("r1", "r2")
    ]
    try:
        _start_all(nodes)
        yield Pair(nodes[0], nodes[1], reg)
    finally:
        _stop_all(nodes)


def test_operator_moves_on_one_node_show_on_the_other(pair: Pair) -> None:
    active, standby = pair.settled()
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
            every=0.01,
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
    assert abs(_iso(left["forced_until"]) - _iso(mine["forced_until"])) < 0.01
    # Adopted, never echoed back: the standby logged it as the active's.
    events = standby.api("/api/events?target=b")["events"]
    assert any("(on " in e["reason"] for e in events), events
    active.api("/api/targets/b/restore", {})
    _until("b UP on both", lambda: [n.state("b") for n in pair.nodes] == ["UP", "UP"])


def _iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_one_active_serves_and_the_standby_takes_over_after_kill(
    pair: Pair, bg: Background
) -> None:
    active, standby = pair.settled()
    assert active.ha()["epoch"] == standby.ha()["epoch"] and active.ha()["serving"] is True
    # Only the active registers with the carrier that wants it.
    _until("the active registered", lambda: active.registration() == "REGISTERED")
    assert active.router.port in bg.bindings(pair.reg)
    assert standby.registration() == "UNREGISTERED" and standby.counter("registers_to:reg") == 0
    # The active serves; the standby drops everything (and sends no probe).
    ok = bg.run(_calls(active.router.port, 5))
    assert [c.final for c in ok] == [200] * 5
    dropped_before = standby.counter("ha_dropped_in")
    lost = bg.run(_calls(standby.router.port, 2, timeout=1.0))
    assert all(c.final is None for c in lost), [c.final for c in lost]
    counters = standby.api("/api/counters")["counters"]
    assert counters.get("ha_dropped_in", 0) > dropped_before
    assert not any(k.startswith("probes_to:") and v for k, v in counters.items())
    assert standby.counter("registers_to:reg") == 0
    # kill -9 the active: the standby serves once the lease is gone.
    active.router._proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    killed = time.monotonic()
    took = _until("the standby active", lambda: standby.ha()["role"] == "active", every=0.02)
    print(f"takeover after kill -9: active {took:.2f}s after the kill (lease {LEASE_TTL}s)")
    assert took <= LEASE_TTL + 1.0  # the lease, etcd's 0.5 s expiry sweep, the polls
    assert standby.ha()["takeovers"] == 1
    # It registers at once, not at the end of a standby's backoff.
    reg_took = _until("the new active registered", lambda: standby.registration() == "REGISTERED")
    print(f"the new active registered {reg_took:.2f}s after it became active")
    assert standby.counter("registers_to:reg") >= 1
    assert standby.router.port in bg.bindings(pair.reg)
    # The old active comes back (started meanwhile, from the pool: it takes seconds).
    active.router._proc.wait()  # type: ignore[union-attr]
    active.router._proc = None
    back = _POOL.submit(active.router.start)
    attempts = standby.api("/api/targets/reg")["attempts"]
    again = bg.run(_calls(standby.router.port, 5))
    assert [c.final for c in again] == [200] * 5
    # reg is first in the plan and admits calls only while registered: they went there.
    assert standby.api("/api/targets/reg")["attempts"] - attempts == 5
    print(f"first calls through the new active answered {time.monotonic() - killed:.2f}s "
          "after the kill")  # fmt: skip
    # It never serves next to the new one, nor registers.
    back.result()
    _until("the old active is standby", lambda: active.ha()["leader"] == standby.ha()["node"])
    assert _roles([active, standby]) == ["standby", "active"]
    bg.run(_calls(standby.router.port, 1))  # some time passes, the new active still serving
    assert active.counter("registers_to:reg") == 0 and active.registration() == "UNREGISTERED"


class Chromium:
    """Headless Chromium on the background loop (Playwright's async API), launched as the
    module starts: its start-up (seconds on a loaded machine) overlaps the first tests."""

    def __init__(self, bg: Background) -> None:
        self.bg = bg
        self._objects: list[Any] = []  # what to close, last first
        self._browser = asyncio.run_coroutine_threadsafe(self._launch(), bg.loop)

    async def _launch(self) -> Any:
        from playwright.async_api import async_playwright
        from test_dashboard_browser import ARGS

        pw = await async_playwright().start()
        self._objects.append(pw)
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        self._objects.append(browser)
        return browser

    def dashboard(self, base: str) -> Any:
        """A new page on ``base``'s dashboard, logged in with the token."""
        browser = self._browser.result(timeout=60)

        async def open_page() -> Any:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(base + "/")
            await page.fill("#token", TOKEN)
            await page.click("button[type=submit]")
            return page

        return self.bg.run(open_page())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Steps on a page, on the browser's loop."""
        return self.bg.run(coro)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._browser.result(timeout=60)

        async def close() -> None:
            for thing in reversed(self._objects):
                await (thing.close() if hasattr(thing, "close") else thing.stop())

        self.bg.run(close())


@pytest.fixture(scope="module", autouse=True)
def chromium() -> Iterator[Chromium | None]:
    if not Path(CHROMIUM).exists():
        yield None  # the dashboard's checks are skipped; make test installs it
        return
    # A loop of its own: Playwright's traffic must not hold up the simulated carriers.
    with Background() as loop:
        browser = Chromium(loop)
        try:
            yield browser
        finally:
            browser.close()


def test_etcd_lost_both_keep_their_state_and_say_so(
    pair: Pair, etcd: EtcdCluster, chromium: Chromium | None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    active, standby = pair.settled()
    node = active.ha()["node"]
    # Open before etcd goes: whatever it shows first, every later change must be pushed.
    page = None if chromium is None else chromium.dashboard(active.url)
    if page is not None:

        async def connected(page: Any) -> None:
            from playwright.async_api import expect

            text = page.locator("#ha-text")
            line = f"HA {node} (active-standby): active"
            await expect(text).to_contain_text(line, timeout=WAIT_MS)
            await expect(text).to_contain_text("etcd connected")
            await expect(page.locator("#ha-lost")).to_be_hidden()
            await page.evaluate("window.__sameDocument = 'yes'")  # gone if the page reloads

        chromium.run(connected(page))
    active.api("/api/targets/a/drain", {})
    _until("a drained on the standby", lambda: standby.state("a") == "DRAINED")
    etcd.stop()
    _until("both see etcd lost", lambda: [n.ha()["etcd"] for n in pair.nodes] == ["lost"] * 2)
    # The active cannot renew: it fences itself (and the standby cannot win).
    _until("the active fenced", lambda: active.ha()["role"] == "fenced")
    assert active.ha()["serving"] is False and standby.ha()["role"] == "standby"
    assert active.state("a") == "DRAINED" and standby.state("a") == "DRAINED"
    # A node that stops serving stops refreshing its registration (and does not unregister).
    assert active.registration() == "UNREGISTERED"
    for n in pair.nodes:
        assert n.ha()["etcd_lost_since"] is not None
        # The command itself (its config, token and API call), in this process: an
        # interpreter start-up per node was seconds on a loaded machine.
        assert main(["status", "--config", str(n.router.config_path)]) == 0
        out = capsys.readouterr().out
        assert "etcd lost since" in out, out
        assert "routing on the last-known state" in out
        line = n.api("/api/dashboard")["ha"]
        assert line["etcd"] == "lost" and line["etcd_lost_since"] is not None
    metrics = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        urllib.request.Request(
            active.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        ),
        timeout=5,
    ).read().decode()
    assert "trunkguard_ha_etcd_connected 0.0" in metrics
    assert 'trunkguard_ha_role{role="fenced"} 1.0' in metrics
    shot = tmp_path / "dashboard-etcd-lost.png"
    if page is not None:

        async def lost(page: Any) -> str:
            from playwright.async_api import expect

            line = page.locator("#ha-lost")
            await expect(line).to_contain_text("etcd lost since", timeout=WAIT_MS)
            await expect(line).to_contain_text("routing on last-known state")
            text = page.locator("#ha-text")
            await expect(text).to_contain_text(f"HA {node} (active-standby): fenced")
            await expect(text).to_contain_text("not serving · etcd lost")
            await page.screenshot(path=str(shot))
            red: str = await page.evaluate(
                "getComputedStyle(document.getElementById('ha-lost')).color"
            )
            return red

        assert chromium.run(lost(page)) == "rgb(192, 38, 45)"  # --down, a DOWN card's red
        with capsys.disabled():
            print(f"dashboard screenshot: {shot}")
    # etcd back: the fenced node finds its lease and key still there, or the other won.
    etcd.start()
    pair.settled()
    assert [n.ha()["etcd"] for n in pair.nodes] == ["connected"] * 2
    if page is not None:

        async def back(page: Any) -> str:
            from playwright.async_api import expect

            await expect(page.locator("#ha-lost")).to_be_hidden(timeout=WAIT_MS)
            text = page.locator("#ha-text")
            await expect(text).to_contain_text("etcd connected", timeout=WAIT_MS)
            await expect(text).not_to_contain_text("fenced", timeout=WAIT_MS)
            same: str = await page.evaluate("window.__sameDocument")
            return same

        # Both changes were pushed over the stream: the same document, never reloaded.
        assert chromium.run(back(page)) == "yes"
    active, standby = pair.settled()
    _until("the active registered again", lambda: active.registration() == "REGISTERED")
    assert standby.registration() == "UNREGISTERED"
    active.api("/api/targets/a/restore", {})
    _until("a UP on both", lambda: [n.state("a") for n in pair.nodes] == ["UP", "UP"])


def test_active_active_nodes_share_max_calls(
    tmp_path: Path, etcd: EtcdCluster, bg: Background
) -> None:
    sim = bg.carrier("aa")
    prefix = "/tg/aa"
    carrier = {"name": "aa", "uri": f"sip:127.0.0.1:{sim.port}", "max_calls": 4}
    nodes = [
        _node(
            tmp_path, name, [], _ha(name, etcd.endpoints, prefix, mode="active-active"),
            {"carriers": [carrier]},
        )
        for name in ("r1", "r2")
    ]
    r1, r2 = nodes
    try:
        _start_all(nodes)
        _until("both active", lambda: _roles(nodes) == ["active", "active"])

        def seen_by_r2() -> int:
            usage = r2.ha()["load"].get("r1", {}).get("aa", [0, 0])
            return int(usage[0])

        async def both() -> tuple[list[Any], list[Any]]:
            first = asyncio.ensure_future(_calls(r1.router.port, 3, hold=3.0))
            loop = asyncio.get_running_loop()
            # r1's three calls are up, and r2 has their count (r1 publishes every 0.25 s).
            await loop.run_in_executor(
                None, lambda: _until("r2 sees r1's three calls", lambda: seen_by_r2() == 3)
            )
            second = await _calls(r2.router.port, 3, hold=0.5)
            return await first, second

        first, second = bg.run(both())
        assert [c.final for c in first] == [200] * 3
        finals = sorted(c.final or 0 for c in second)
        print(f"active-active, max_calls 4: r1 held 3, r2's three calls got {finals}")
        # 4 - 3 = 1 left for r2: one answered, the others refused (no other route).
        assert finals.count(200) == 1, finals
        overflow = r2.api("/api/counters")["counters"]
        assert any("overflow" in k for k in overflow), overflow
    finally:
        _stop_all(nodes)
