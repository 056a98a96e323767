"""Alerts from a real router: SIPp carriers and caller, a real webhook receiver, a command.

The receiver is an aiohttp server on 127.0.0.1 port 0 in this process (its own thread
and loop): ``/ok`` records each body and answers 200, ``/hang`` records and never
answers. The command hook is a shell script that appends its arguments and TG_REASON to
a file. Everything is polled with generous deadlines; what is asserted is counts and
causality (the DOWN alert after the kill, the summary after the flapping), not timings.
"""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kamailio import free_tcp_port
from router import RouterProcess
from sipp import free_udp_ports, start_uac, start_uas

pytestmark = pytest.mark.e2e
TOKEN = "alerts-e2e-token-0123456789"


class Receiver:
    """A webhook receiver in a thread of its own; ``bodies(path)`` is what reached a path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._got: list[tuple[str, dict[str, Any], float]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self._got.append((request.path, body, time.time()))
        if request.path == "/hang":
            await asyncio.sleep(3600)
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/ok", self._handle)
        app.router.add_post("/hang", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str = "/ok") -> list[dict[str, Any]]:
        with self._lock:
            return [b for p, b, _ in self._got if p == path]

    def __enter__(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # The /hang handlers are still waiting: end them, so none is left pending.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def notify_script(tmp_path: Path) -> tuple[str, Path]:
    out = tmp_path / "notify.log"
    path = tmp_path / "notify.sh"
    path.write_text(f'#!/bin/sh\necho "$1|$2|$3|$4|$TG_REASON" >> {out}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path), out


def lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("|", 4) for line in path.read_text().splitlines()]


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def admin(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def state_alerts(bodies: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    return [b for b in bodies if b["target"] == target]


def test_kill_a_carrier_then_all_of_them(tmp_path: Path) -> None:
    """A carrier killed under traffic: one DOWN alert at the webhook and the command, with
    the reason; the last one killed: every route degraded."""
    pa, pb = free_udp_ports(2)
    argv, notified = notify_script(tmp_path)
    with Receiver() as receiver:
        alerts = {
            "router": "edge-e2e",
            "hooks": [
                {"type": "webhook", "url": receiver.url("/ok"), "timeout": 5},
                {"type": "command", "argv": [argv], "timeout": 5},
            ],
        }
        with (
            start_uas("uas_answer", port=pa, tmp_root=tmp_path / "a") as a,
            start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b") as b,
            RouterProcess(
                tmp_path / "router", [("a", pa), ("b", pb)], extra={"alerts": alerts}
            ) as router,
        ):
            with start_uac(
                "uac_call", router.address, calls=60, rate=10, timeout=30, tmp_root=tmp_path / "c"
            ) as caller:
                assert a.wait_until(lambda: a.responses_sent(200) >= 10, timeout=20), a.describe()
                a.kill()
                assert wait_until(lambda: state_alerts(receiver.bodies(), "a"), 20), router.log()
                assert wait_until(lambda: any(ln[1] == "a" for ln in lines(notified)), 20)
                caller.wait()
            assert b.responses_sent(200) > 0
            b.kill()
            assert wait_until(
                lambda: any(x["event"] == "degraded" for x in receiver.bodies()), 30
            ), router.log()
            assert wait_until(lambda: any(ln[0] == "degraded" for ln in lines(notified)), 20)
            counters = router.stop()
    bodies = receiver.bodies()
    print(f"alerts at the webhook: {[(x['event'], x['target'], x['new']) for x in bodies]}")
    print(f"alerts at the command: {lines(notified)}")
    # (A slow run may see a's hold-down end and its probes fail: PROBING -> DOWN, not this.)
    down_a = [x for x in state_alerts(bodies, "a") if (x["old"], x["new"]) == ("UP", "DOWN")]
    assert len(down_a) == 1, bodies
    assert "unreachable" in down_a[0]["reason"], down_a
    assert down_a[0]["router"] == "edge-e2e" and down_a[0]["at"].endswith("Z")
    cmd_a = [ln for ln in lines(notified) if ln[:4] == ["state", "a", "UP", "DOWN"]]
    assert len(cmd_a) == 1 and cmd_a[0][4] == down_a[0]["reason"]
    degraded = [x for x in bodies if x["event"] == "degraded"]
    assert len(degraded) == 1 and degraded[0]["severity"] == "critical"
    assert "no route is UP" in degraded[0]["reason"]
    # The DOWN of b came before the degraded alert, at both hooks.
    order = [(x["event"], x["target"], x["new"]) for x in bodies]
    assert order.index(("state", "b", "DOWN")) < order.index(("degraded", None, "DEGRADED"))
    assert counters.get("alerts_sent", 0) == len(bodies) + len(lines(notified))
    assert counters.get("alerts_failed", 0) == 0


def test_flapping_is_damped_and_a_hanging_webhook_costs_no_call(tmp_path: Path) -> None:
    """30 force-down/restore pairs on a through the admin API under traffic: a bounded
    number of alerts, then one summary; a webhook that never answers loses only its own
    alerts, and every call completes."""
    pa, pb = free_udp_ports(2)
    admin_port = free_tcp_port()
    argv, notified = notify_script(tmp_path)
    flaps = 30
    with Receiver() as receiver:
        alerts = {
            # Damped even if a loaded machine takes 2 s per flap; reused within 12 s.
            "damping": {"half_life": 3, "max_suppress": 12},
            "hooks": [
                {"type": "webhook", "url": receiver.url("/ok"), "events": ["state"]},
                {"type": "command", "argv": [argv], "events": ["state"]},
                {
                    "type": "webhook",
                    "name": "hangs",
                    "url": receiver.url("/hang"),
                    "timeout": 1,
                    "retries": 0,
                    "queue": 3,
                },
            ],
        }
        with (
            start_uas("uas_answer", port=pa, tmp_root=tmp_path / "a") as a,
            start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b") as b,
            RouterProcess(
                tmp_path / "router",
                [("a", pa), ("b", pb)],
                extra={
                    "alerts": alerts,
                    "admin": {"listen": f"127.0.0.1:{admin_port}", "token": TOKEN},
                    # A loaded machine stalls the loop for a few hundred ms now and then, and
                    # the overload control would shed a call. A hook that blocked the loop
                    # would block it for its whole 1 s timeout: still above this.
                    "overload": {"lag_high": 0.9},
                },
            ) as router,
        ):
            with start_uac(
                "uac_call", router.address, calls=100, rate=20, timeout=40, tmp_root=tmp_path / "c"
            ) as caller:
                assert a.wait_until(lambda: a.responses_sent(200) >= 5, timeout=20), a.describe()
                started = time.monotonic()
                for i in range(flaps):
                    admin(admin_port, "POST", "/api/targets/a/force-down", {"seconds": 60})
                    if i == 0:
                        # The first time a stays down until a call has gone to b instead
                        # (the calls still have seconds to run): a loaded machine may fit no
                        # call into the short forced-down moments of the flapping.
                        assert b.wait_until(lambda: b.received("INVITE") > 0, timeout=10)
                    admin(admin_port, "POST", "/api/targets/a/restore")
                    time.sleep(0.05)  # paced: the flapping spans a good part of the calls
                flapped_in = time.monotonic() - started
                result = caller.wait()
            assert b.received("INVITE") > 0  # a's calls went to b while it was forced down
            assert wait_until(
                lambda: any(x["event"] == "flapping" for x in receiver.bodies()), 40
            ), router.log()
            assert wait_until(lambda: any(ln[0] == "flapping" for ln in lines(notified)), 20)
            counters = admin(admin_port, "GET", "/api/counters")["counters"]
            stopped = router.stop()
    bodies = receiver.bodies()
    print(
        f"{flaps} flaps in {flapped_in:.1f} s: {len(bodies)} alerts at the webhook "
        f"{[(x['event'], x['new'], x['damped']) for x in bodies]}; counters "
        f"{ {k: v for k, v in counters.items() if k.startswith('alerts')} }; "
        f"calls {result.successful} ok / {result.failed} failed"
    )
    direct = [x for x in bodies if x["event"] == "state"]
    assert 2 <= len(direct) <= 8 and direct[-1]["damped"], bodies
    summaries = [x for x in bodies if x["event"] == "flapping"]
    assert len(summaries) == 1 and summaries[0]["new"] == "UP", summaries
    assert summaries[0]["flapping"]["changes"] + len(direct) - 1 == 2 * flaps
    assert "now UP; stable again" in summaries[0]["reason"]
    assert [ln[0] for ln in lines(notified)] == [x["event"] for x in bodies]
    assert counters["alerts_suppressed"] == 2 * flaps - len(direct)
    # The hanging hook got its first alert, then timed out or overflowed; never the calls.
    assert receiver.bodies("/hang")
    assert counters.get("alerts_failed", 0) + counters.get("alerts_dropped", 0) >= 1
    assert result.failed == 0 and result.successful == 100, result.describe()
    assert stopped.get("open:calls_unanswered", 0) == 0
