"""The FastAGI route advisor in a real router process, with Asterisk's side played over TCP.

Asterisk is not packaged in Debian 12: the sessions in agi_sessions/ are written
by hand as res_agi writes them (launch_netscript, setup_env, agi_handle_command,
run_agi's HANGUP) and replayed byte for byte; every byte the server sends back
is checked. The plan comes from the router's own planner: carriers b, d, a, c
by cost (d has no dial: and is not given to Asterisk).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agi import SESSIONS, header_block, read_line, read_to_eof, replay
from kamailio import free_tcp_port
from router import RouterProcess
from sipp import free_udp_ports

TOKEN = "agi-e2e-token-0123456789"
RATES = {"a": "0.020", "b": "0.010", "c": "0.030", "d": "0.015"}
DIAL = {
    "a": "PJSIP/${NUMBER}@carrier-a",
    "b": "SIP/carrier-b/${EXTEN}",
    "c": "IAX2/carrier-c/${NUMBER}",
}
SESSION_TIMEOUT = 2.0
DEADLINE = 30.0


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


class Lab:
    def __init__(self, router: RouterProcess, agi: tuple[str, int], admin_port: int) -> None:
        self.router = router
        self.agi = agi
        self.admin_port = admin_port

    def api(self, path: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def counters(self) -> dict[str, int]:
        return dict(self.api("/api/counters")["counters"])


def start_lab(workdir: Path) -> RouterProcess:
    workdir.mkdir(parents=True)
    ports = free_udp_ports(len(RATES))
    carriers: list[dict[str, object]] = []
    for (name, rate), port in zip(RATES.items(), ports, strict=True):
        (workdir / f"{name}.csv").write_text(f"prefix,rate\n1,{rate}\n")
        carrier: dict[str, object] = {
            "name": name,
            "uri": f"sip:127.0.0.1:{port}",
            "deck": {"path": f"{name}.csv"},
        }
        if name in DIAL:
            carrier["dial"] = DIAL[name]
        carriers.append(carrier)
    admin_port = free_tcp_port()
    router = RouterProcess(
        workdir,
        [],
        extra={
            "carriers": carriers,
            "numbers": {"country_code": "1", "national_lengths": [10]},
            # No SIP peer answers here: only the advisor's reports move health.
            "probe": {"enabled": False},
            "admin": {"listen": f"127.0.0.1:{admin_port}", "token": TOKEN},
            "agi": {"enabled": True, "listen": "127.0.0.1:0", "session_timeout": SESSION_TIMEOUT},
        },
    )
    router.admin_port = admin_port  # type: ignore[attr-defined]
    return router.start()


def lab_of(router: RouterProcess) -> Lab:
    ready = json.loads(router.ready_file.read_text())
    host, port = ready["agi"]
    return Lab(router, (str(host), int(port)), router.admin_port)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    router = start_lab(tmp_path_factory.mktemp("agi") / "router")
    try:
        yield lab_of(router)
    finally:
        router.stop()


@pytest.mark.parametrize("name", sorted(p.name for p in SESSIONS.glob("*.agi")))
def test_replay_res_agi_session(lab: Lab, name: str) -> None:
    """Each transcript, byte for byte, against the running server."""
    replay(lab.agi, (SESSIONS / name).read_text())


def test_500_concurrent_sessions(lab: Lab) -> None:
    """500 channels in AGI at once: all 500 open and waiting on their first reply before
    any is answered, then each is led through to its routes."""
    n = 500

    async def one(opened: asyncio.Event, count: list[int]) -> list[bytes]:
        reader, writer = await asyncio.open_connection(*lab.agi)
        try:
            writer.write(header_block("route", ["15551234567"], f"SIP/load-{id(writer):x}"))
            lines = [await reader.readline()]  # the first command: this session is open
            count[0] += 1
            if count[0] == n:
                opened.set()
            await opened.wait()
            while lines[-1]:
                writer.write(b"200 result=1\n")
                lines.append(await reader.readline())
            return lines[:-1]
        finally:
            writer.close()

    async def run() -> list[list[bytes]]:
        opened = asyncio.Event()
        count = [0]
        return await asyncio.wait_for(
            asyncio.gather(*(one(opened, count) for _ in range(n))), DEADLINE
        )

    before = lab.counters()
    started = time.monotonic()
    results = asyncio.run(run())
    took = time.monotonic() - started
    print(f"500 concurrent FastAGI route sessions in {took:.2f}s")
    plan_ids = set()
    for lines in results:
        assert len(lines) == 5, lines
        assert lines[0].startswith(b'SET VARIABLE TG_PLAN_ID "')
        plan_ids.add(lines[0])
        assert lines[1:] == [
            b'SET VARIABLE TG_ROUTE_1 "SIP/carrier-b/15551234567"\n',
            b'SET VARIABLE TG_ROUTE_2 "PJSIP/15551234567@carrier-a"\n',
            b'SET VARIABLE TG_ROUTE_3 "IAX2/carrier-c/15551234567"\n',
            b'SET VARIABLE TG_ROUTE_COUNT "3"\n',
        ]
    assert len(plan_ids) == n  # one plan id each
    after = lab.counters()
    assert after.get("agi_route", 0) - before.get("agi_route", 0) == n
    assert after.get("agi_refused", 0) == before.get("agi_refused", 0)
    assert after.get("agi_timeouts", 0) == before.get("agi_timeouts", 0)


def _closed(sock: socket.socket) -> bytes:
    return read_to_eof(sock, time.monotonic() + DEADLINE)


def test_malformed_sessions_are_closed_counted_and_logged(lab: Lab) -> None:
    before = lab.counters()
    cases: list[tuple[str, bytes, str]] = [
        ("binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", "agi_malformed"),
        ("no colon", b"agi_network: yes\nhello there\n", "agi_malformed"),
        ("not agi_*", b"agi_network: yes\nHost: example.com\n", "agi_malformed"),
        ("a line too long", b"agi_network: yes\nagi_request: " + b"x" * 5000, "agi_malformed"),
        ("a header twice", b"agi_network: yes\nagi_request: a\nagi_request: b\n", "agi_malformed"),
        ("no agi_request", b"agi_network: yes\nagi_arg_1: 1555\n\n", "agi_malformed"),
        ("closed mid-header", b"agi_network: yes\nagi_request: agi://x/route\n", "agi_abandoned"),
        ("abandoned, silent", b"", "agi_timeouts"),
        ("abandoned mid-header", b"agi_network: yes\n", "agi_timeouts"),
    ]
    for what, data, counter in cases:
        with socket.create_connection(lab.agi, timeout=DEADLINE) as sock:
            if data:
                sock.sendall(data)
            if what == "closed mid-header":
                sock.shutdown(socket.SHUT_WR)
            started = time.monotonic()
            assert _closed(sock) == b"", what  # closed, nothing said
            if counter == "agi_timeouts":
                assert time.monotonic() - started >= SESSION_TIMEOUT * 0.9, what
    # A reply that is not one: the session is malformed once the headers are in.
    with socket.create_connection(lab.agi, timeout=DEADLINE) as sock:
        sock.sendall(header_block("route", ["15551234567"]))
        assert read_line(sock, time.monotonic() + DEADLINE).startswith(b"SET VARIABLE TG_PLAN_ID")
        sock.sendall(b"HTTP/1.1 200 OK\n")
        assert _closed(sock) == b""
    counts = {c: 0 for _, _, c in cases}
    for _, _, c in cases:
        counts[c] += 1
    counts["agi_malformed"] += 1
    assert wait_until(
        lambda: all(
            lab.counters().get(c, 0) - before.get(c, 0) == k for c, k in counts.items()
        ),
        DEADLINE,
    ), (counts, lab.counters())
    log = lab.router.log()
    assert "FastAGI: malformed session from 127.0.0.1:" in log
    assert "(agi.session_timeout): closed" in log
    # And the server still serves.
    replay(lab.agi, (SESSIONS / "route.agi").read_text())


def route(agi: tuple[str, int], number: str) -> tuple[str, list[str]]:
    """A route session as Asterisk runs it: the plan id and the dial strings, in order."""
    with socket.create_connection(agi, timeout=DEADLINE) as sock:
        sock.sendall(header_block("route", [number]))
        values: dict[str, str] = {}
        deadline = time.monotonic() + DEADLINE
        while True:
            line = read_line(sock, deadline).decode()
            if not line:
                break
            _, _, name, value = line.rstrip("\n").split(" ", 3)
            values[name] = value.strip('"')
            sock.sendall(b"200 result=1\n")
    count = int(values["TG_ROUTE_COUNT"])
    return values.get("TG_PLAN_ID", ""), [values[f"TG_ROUTE_{i}"] for i in range(1, count + 1)]


def report(agi: tuple[str, int], plan_id: str, n: int, status: str, cause: str) -> tuple[str, str]:
    """A report session: what the server set in TG_REPORT and TG_FAILOVER."""
    with socket.create_connection(agi, timeout=DEADLINE) as sock:
        sock.sendall(header_block("report", [plan_id, str(n), status, cause]))
        values = []
        deadline = time.monotonic() + DEADLINE
        for name in ("TG_REPORT", "TG_FAILOVER"):
            line = read_line(sock, deadline).decode()
            assert line.startswith(f"SET VARIABLE {name} "), line
            values.append(line.rstrip("\n").split(" ", 3)[3].strip('"'))
            sock.sendall(b"200 result=1\n")
        assert _closed(sock) == b""
    return values[0], values[1]


def test_reports_of_congestion_trip_the_carrier(tmp_path: Path) -> None:
    """Busy lines (BUSY/17) do not count against b; CONGESTION/34 does: the fifth in a
    row (health.consecutive_faults) takes b out, and the next route leaves it out."""
    router = start_lab(tmp_path / "router")
    try:
        lab = lab_of(router)
        cheapest = ["SIP/carrier-b/15551234567", "PJSIP/15551234567@carrier-a",
                    "IAX2/carrier-c/15551234567"]
        for _ in range(8):
            plan_id, routes = route(lab.agi, "15551234567")
            assert routes == cheapest
            assert report(lab.agi, plan_id, 1, "BUSY", "17") == ("ok", "0")
        for i in range(5):
            plan_id, routes = route(lab.agi, "15551234567")
            assert routes == cheapest, f"b left out after {i} congestion reports"
            assert report(lab.agi, plan_id, 1, "CONGESTION", "34") == ("ok", "1")
            # Route 2 (a) answered: a's reports are its own.
            assert report(lab.agi, plan_id, 2, "ANSWER", "16") == ("ok", "0")
        states = {t["name"]: t["state"] for t in lab.api("/api/targets")["targets"]}
        assert states["b"] == "DOWN" and states["a"] == "UP", states
        plan_id, routes = route(lab.agi, "15551234567")
        assert routes == ["PJSIP/15551234567@carrier-a", "IAX2/carrier-c/15551234567"]
        counters = lab.counters()
        assert counters["agi_outcome:trunk_fault"] == 5
        assert counters["agi_outcome:destination_final"] == 8
        assert counters["agi_outcome:success"] == 5
        assert counters["state:b:DOWN"] == 1
    finally:
        router.stop()
    events = [e for e in router.events() if e.get("target") == "b"]
    assert any("5 consecutive CONGESTION/34 (Asterisk) from b" in str(e.get("reason"))
               for e in events), events
