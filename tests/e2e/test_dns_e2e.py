"""trunkguard.dns against a real DNS server: dnsmasq on 127.0.0.1 (see dnsmasq.py).

What the resolver asked is read from dnsmasq's own query log, so "an explicit port asks
only A/AAAA" is seen by the server, not taken from the code under test. The watcher runs
on uvloop, as in the router, and on the standard asyncio loop. Every wait polls with a
deadline of seconds; each test prints what it measured.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import re
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from dnsmasq import Dnsmasq, HostRecord, NaptrRecord, SrvRecord, free_port

from trunkguard.dns import DnsSettings, DnsWatcher, Query, Resolution, Resolver

pytestmark = pytest.mark.e2e

HOST = "trunk.carrier.test"
SBCS = [
    HostRecord("sbc1.carrier.test", ("127.0.0.2",)),
    HostRecord("sbc2.carrier.test", ("127.0.0.3",)),
    HostRecord("sbc3.carrier.test", ("127.0.0.4",)),
]
UDP_SRV = [
    SrvRecord(f"_sip._udp.{HOST}", "sbc1.carrier.test", 5060, priority=10, weight=60),
    SrvRecord(f"_sip._udp.{HOST}", "sbc2.carrier.test", 5062, priority=10, weight=40),
    SrvRecord(f"_sip._udp.{HOST}", "sbc3.carrier.test", 5064, priority=20, weight=0),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Dnsmasq]:
    with Dnsmasq(ttl=1, tmp_root=tmp_path) as dnsmasq:
        yield dnsmasq


def settings_for(server: Dnsmasq, **kwargs: Any) -> DnsSettings:
    # A lost datagram (one sent while dnsmasq restarts) is asked again after `timeout`.
    values: dict[str, Any] = {"servers": (server.address,), "timeout": 0.5, "lifetime": 3.0}
    values.update(kwargs)
    return DnsSettings(**values)


def resolve(settings: DnsSettings, query: Query, rng: random.Random | None = None) -> Resolution:
    return asyncio.run(Resolver(settings, rng=rng).resolve(query))


def queries_logged(server: Dnsmasq) -> list[str]:
    """``TYPE name`` for each query dnsmasq logged, the generation probes left out."""
    found = re.findall(r"query\[(\w+)\] (\S+) from", server.log())
    return [f"{t} {n}" for t, n in found if not n.startswith("_generation.")]


def run_checked(loop: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``body`` on a new loop of the kind named; fail on any warning or asyncio error
    (a task destroyed while pending, an unclosed transport) it left behind."""
    handler = _Collect()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if loop == "uvloop":
                uvloop.run(body())
            else:
                asyncio.run(body())
            gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert [str(w.message) for w in caught] == []
    assert handler.messages == []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> float:
    """Seconds until ``predicate`` held; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not predicate():
        assert loop.time() - began < timeout, "condition not reached in time"
        await asyncio.sleep(0.01)
    return loop.time() - began


# --------------------------------------------------------------------------- resolver


def test_three_srv_records_resolve_in_priority_then_weight_order(server: Dnsmasq) -> None:
    hosts = [*SBCS[:2], HostRecord("sbc3.carrier.test", ("127.0.0.4",), ttl=7)]
    server.ttl = 30
    server.set_records(srv=UDP_SRV, hosts=hosts)
    settings = settings_for(server)
    query = Query.from_uri("sip:trunk.carrier.test;transport=udp")

    result = resolve(settings, query, random.Random(1))
    assert result.error is None
    assert len(result.destinations) == 3
    assert str(result.destinations[2]) == "udp:127.0.0.4:5064"  # priority 20 last
    assert {str(d) for d in result.destinations[:2]} == {
        "udp:127.0.0.2:5060",
        "udp:127.0.0.3:5062",
    }
    assert result.ttl == 7  # the SRV's 30 s and sbc3's own 7 s: the minimum
    assert [d.host for d in result.destinations][2] == "sbc3.carrier.test"
    assert resolve(settings, query, random.Random(1)) == result  # same seed, same order

    async def many() -> Counter[str]:
        resolver = Resolver(settings, rng=random.Random(2782))
        firsts: Counter[str] = Counter()
        for _ in range(200):
            r = await resolver.resolve(query)
            assert str(r.destinations[2]) == "udp:127.0.0.4:5064"
            firsts[str(r.destinations[0])] += 1
        return firsts

    began = time.monotonic()
    firsts = asyncio.run(many())
    took = time.monotonic() - began
    print(
        f"first destination over 200 resolutions: {dict(firsts)} ({took / 200 * 1000:.1f} ms each)"
    )
    # Weights 60/40: 61/101 first for sbc1; 200 draws, about 7 standard deviations of room.
    assert 0.4 < firsts["udp:127.0.0.2:5060"] / 200 < 0.8


def test_naptr_leads_to_srv_in_naptr_order(server: Dnsmasq) -> None:
    server.set_records(
        naptr=[
            NaptrRecord("carrier.test", 20, 10, "SIP+D2U", "_sip._udp.carrier.test"),
            NaptrRecord("carrier.test", 10, 10, "SIP+D2T", "_sip._tcp.carrier.test"),
            NaptrRecord("carrier.test", 30, 10, "SIPS+D2T", "_sips._tcp.carrier.test"),
        ],
        srv=[
            SrvRecord("_sip._udp.carrier.test", "sbc1.carrier.test", 5060, 10, 0),
            SrvRecord("_sip._tcp.carrier.test", "sbc2.carrier.test", 5060, 10, 0),
            SrvRecord("_sips._tcp.carrier.test", "sbc3.carrier.test", 5061, 10, 0),
        ],
        hosts=SBCS,
    )
    settings = settings_for(server)
    result = resolve(settings, Query.from_uri("sip:carrier.test"))
    print(f"sip:carrier.test -> {[str(d) for d in result.destinations]}")
    assert [str(d) for d in result.destinations] == [
        "tcp:127.0.0.3:5060",
        "udp:127.0.0.2:5060",
        "tls:127.0.0.4:5061",
    ]
    asked = queries_logged(server)
    assert asked[0] == "NAPTR carrier.test"
    assert "SRV _sip._udp.carrier.test" in asked and "A sbc2.carrier.test" in asked

    secure = resolve(settings, Query.from_uri("sips:carrier.test"))
    assert [str(d) for d in secure.destinations] == ["tls:127.0.0.4:5061"]


def test_without_naptr_the_srv_of_each_transport(server: Dnsmasq) -> None:
    server.set_records(srv=UDP_SRV[:1], hosts=SBCS)
    result = resolve(settings_for(server), Query.from_uri("sip:trunk.carrier.test"))
    assert [str(d) for d in result.destinations] == ["udp:127.0.0.2:5060"]
    asked = queries_logged(server)
    print(f"asked: {asked}")
    assert asked[:1] == [f"NAPTR {HOST}"]
    assert {f"SRV _sip._udp.{HOST}", f"SRV _sip._tcp.{HOST}", f"SRV _sips._tcp.{HOST}"} <= set(
        asked
    )


def test_explicit_port_asks_only_for_addresses(server: Dnsmasq) -> None:
    server.set_records(
        naptr=[NaptrRecord(HOST, 10, 10, "SIP+D2U", f"_sip._udp.{HOST}")],
        srv=UDP_SRV,
        hosts=[*SBCS, HostRecord(HOST, ("127.0.0.9", "::9"))],
    )
    result = resolve(settings_for(server), Query.from_uri("sip:trunk.carrier.test:5070"))
    assert [str(d) for d in result.destinations] == ["udp:127.0.0.9:5070", "udp:[::9]:5070"]
    asked = queries_logged(server)
    print(f"asked: {asked}")
    assert sorted(asked) == [f"A {HOST}", f"AAAA {HOST}"]


def test_srv_target_dot_means_not_available(server: Dnsmasq) -> None:
    server.set_records(
        srv=[SrvRecord(f"_sip._udp.{HOST}", ".", 0)],
        hosts=[HostRecord(HOST, ("127.0.0.9",))],
    )
    result = resolve(settings_for(server), Query(HOST, transport="udp"))
    assert result.destinations == ()
    assert result.error == f'{HOST}: service not available (SRV target "." at _sip._udp.{HOST})'


def test_nxdomain_is_an_error_with_a_negative_ttl(server: Dnsmasq) -> None:
    settings = settings_for(server, negative_ttl=17.0)
    began = time.monotonic()
    result = resolve(settings, Query.from_uri("sip:nowhere.carrier.test"))
    took = time.monotonic() - began
    print(f"NXDOMAIN resolution took {took * 1000:.1f} ms: {result.error}")
    assert result.destinations == ()
    assert result.error == "nowhere.carrier.test: no such name (NXDOMAIN)"
    assert not result.transient
    assert result.ttl == 17.0  # dnsmasq sends no SOA: the configured negative TTL


def test_dead_nameserver_is_a_timeout_quickly_and_no_exception() -> None:
    port = free_port()
    settings = DnsSettings(servers=(("127.0.0.1", port),), timeout=0.3, lifetime=0.6)
    began = time.monotonic()
    result = resolve(settings, Query.from_uri("sip:trunk.carrier.test"))
    took = time.monotonic() - began
    print(f"dead nameserver: {took:.2f}s -> {result.error}")
    assert result.destinations == () and result.transient and result.ttl == 0
    assert result.error == (
        f"trunk.carrier.test: DNS timeout after 0.6s via 127.0.0.1:{port} (NAPTR {HOST})"
    )
    assert took < 5.0


# --------------------------------------------------------------------------- watcher


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_watcher_sees_a_record_added_then_removed_once_each(server: Dnsmasq, loop: str) -> None:
    server.set_records(srv=UDP_SRV[:2], hosts=SBCS)
    settings = settings_for(server, min_ttl=1.0)
    changes: list[Resolution] = []

    def keys() -> list[set[str]]:
        return [{str(d) for d in r.destinations} for r in changes]

    async def body() -> None:
        watcher = DnsWatcher(settings, lambda name, r: changes.append(r))
        watcher.add("carrier-a", Query.from_uri("sip:trunk.carrier.test;transport=udp"))
        await watcher.start()
        assert keys() == [{"udp:127.0.0.2:5060", "udp:127.0.0.3:5062"}]

        server.set_records(srv=UDP_SRV, hosts=SBCS)
        added = await eventually(lambda: len(changes) >= 2)
        await asyncio.sleep(2.5)  # two more refreshes at the 1 s TTL: no further change
        assert keys()[1:] == [{"udp:127.0.0.2:5060", "udp:127.0.0.3:5062", "udp:127.0.0.4:5064"}]
        current = watcher.current("carrier-a")
        assert current is not None and current.error is None and len(current.destinations) == 3
        restart_added = server.last_restart_s

        server.set_records(srv=UDP_SRV[1:], hosts=SBCS)
        removed = await eventually(lambda: len(changes) >= 3)
        await asyncio.sleep(2.5)
        assert keys()[2:] == [{"udp:127.0.0.3:5062", "udp:127.0.0.4:5064"}]
        print(
            f"[{loop}] TTL 1 s: added record seen {added:.2f}s after the zone changed "
            f"(dnsmasq restart {restart_added * 1000:.0f} ms), removed one {removed:.2f}s after; "
            f"{len(changes)} on_change calls"
        )
        await watcher.stop()
        assert other_tasks() == set()

    run_checked(loop, body)
    assert len(changes) == 3


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_watcher_reports_nxdomain_then_the_name_appearing(server: Dnsmasq, loop: str) -> None:
    settings = settings_for(server, retry_min=0.2, retry_max=0.5)
    changes: list[Resolution] = []

    async def body() -> None:
        watcher = DnsWatcher(settings, lambda name, r: changes.append(r))
        watcher.add("carrier-b", Query.from_uri("sip:new.carrier.test:5060"))
        await watcher.start()
        assert changes[0].error == "new.carrier.test: no such name (NXDOMAIN)"
        server.set_records(hosts=[HostRecord("new.carrier.test", ("127.0.0.5",))])
        took = await eventually(lambda: len(changes) >= 2)
        print(f"[{loop}] name appeared: seen {took:.2f}s later (retry every 0.2-0.5 s)")
        assert [str(d) for d in changes[1].destinations] == ["udp:127.0.0.5:5060"]
        await watcher.stop()
        assert other_tasks() == set()

    run_checked(loop, body)
    assert len(changes) == 2


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_watcher_stopped_mid_query_to_a_dead_server_leaves_nothing(loop: str) -> None:
    settings = DnsSettings(
        servers=(("127.0.0.1", free_port()),), timeout=1.0, lifetime=2.0, initial_timeout=0.2
    )
    changes: list[Resolution] = []

    async def body() -> None:
        watcher = DnsWatcher(settings, lambda name, r: changes.append(r))
        for i in range(3):
            watcher.add(f"carrier-{i}", Query(f"c{i}.carrier.test"))
        began = asyncio.get_running_loop().time()
        await watcher.start()  # returns at initial_timeout, queries still in flight
        started = asyncio.get_running_loop().time() - began
        assert all(watcher.current(f"carrier-{i}") is None for i in range(3))
        assert len(other_tasks()) >= 3
        began = asyncio.get_running_loop().time()
        await watcher.stop()
        stopped = asyncio.get_running_loop().time() - began
        print(
            f"[{loop}] start() returned after {started:.2f}s, stop() took {stopped * 1000:.1f} ms"
        )
        assert other_tasks() == set()

    run_checked(loop, body)
    assert changes == []


def test_watcher_with_a_dead_server_reports_the_timeout_and_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    settings = DnsSettings(
        servers=(("127.0.0.1", port),), timeout=0.2, lifetime=0.4, retry_min=0.1, retry_max=0.2
    )
    changes: list[Resolution] = []
    resolutions = 0

    class Counting(Resolver):
        async def resolve(self, query: Query) -> Resolution:
            nonlocal resolutions
            resolutions += 1
            return await super().resolve(query)

    async def body() -> None:
        watcher = DnsWatcher(settings, lambda n, r: changes.append(r), resolver=Counting(settings))
        watcher.add("carrier-c", Query(HOST, transport="udp"))
        await watcher.start()
        await eventually(lambda: resolutions >= 3)
        await watcher.stop()

    with caplog.at_level(logging.INFO, "trunkguard.dns"):
        run_checked("uvloop", body)
    print(f"{resolutions} resolutions against a dead server, {len(changes)} on_change call")
    assert len(changes) == 1 and changes[0].transient
    assert f"DNS timeout after 0.4s via 127.0.0.1:{port}" in (changes[0].error or "")
    assert "carrier-c (sip:trunk.carrier.test;transport=udp): no destinations: " in caplog.text
    assert "retrying in 0.1s" in caplog.text


# --------------------------------------------------------------------------- the harness


def _state(pid: int) -> str | None:
    """The process state letter, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_dnsmasq_dies_with_the_process_that_started_it() -> None:
    """PR_SET_PDEATHSIG survives only if dnsmasq keeps its credentials (--user/--group)."""
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from dnsmasq import Dnsmasq\n"
        "server = Dnsmasq().start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the parent printed {line!r}"
        pid = int(line)
        assert _state(pid) not in (None, "Z")
        # The conftest finds a stray child by this marker, inherited from the test session.
        with open(f"/proc/{pid}/environ", "rb") as handle:
            assert any(
                v.startswith(b"TRUNKGUARD_TEST_SESSION=") for v in handle.read().split(b"\0")
            )
    finally:
        parent.kill()
        parent.wait()
    began = time.monotonic()
    while _state(pid) not in (None, "Z"):
        assert time.monotonic() - began < 10.0, f"dnsmasq {pid} outlived its parent"
        time.sleep(0.01)
    print(f"dnsmasq ended {(time.monotonic() - began) * 1000:.0f} ms after its parent was killed")
