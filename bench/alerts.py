"""Alerts: what the policy costs per state change, and that hanging hooks cost the loop nothing.

1. The pure policy (:class:`trunkguard.alerts.AlertPolicy`, default damping) fed
   ``--changes`` state changes over 10 targets flapping UP <-> DOWN, one every
   millisecond of fake time, plus the "every route degraded" check after each one (as
   the router does): nanoseconds per change, and how many alerts came out.
2. The adapter (:class:`AlertService`) on a real Runtime on uvloop, fed 1,000 state
   changes a second for ``--seconds`` seconds through its listener, three runs: no
   hooks; a webhook and a command that answer at once; a webhook whose server never
   answers (a socket that listens and never accepts) and a command that never exits
   (``sleep``), each with a 2 s timeout. A ticker sleeps 10 ms in a loop and records how
   late it wakes: the loop's lag. The hanging hooks must leave it where the others do.

Run: ``.venv/bin/python bench/alerts.py [--changes 200000] [--seconds 10] [--json PATH]``
(``make bench`` runs it without options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

from trunkguard.alerts import AlertPolicy, AlertSettings, DampingSettings, HookSettings
from trunkguard.alerts._service import AlertService
from trunkguard.config import parse_config
from trunkguard.health import State, StateChange
from trunkguard.runtime import Runtime

TARGETS = [f"t{i}" for i in range(10)]
CONFIG = """\
listen: udp:127.0.0.1:0
allow: [127.0.0.0/8]
probe: {enabled: false}
store: {path: events.db}
carriers:
""" + "".join(f'  - {{name: {n}, uri: "sip:127.0.0.1:{9 + i}"}}\n' for i, n in enumerate(TARGETS))


def policy_cost(changes: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    policy = AlertPolicy(DampingSettings(), counts)
    states = dict.fromkeys(TARGETS, State.UP)
    out = 0
    inputs = []
    for i in range(changes):
        name = TARGETS[i % len(TARGETS)]
        old = states[name]
        new = State.DOWN if old is State.UP else State.UP
        states[name] = new
        inputs.append((StateChange(name, old, new, "bench", i * 0.001), dict(states)))
    started = time.perf_counter()
    for change, routes in inputs:
        out += len(policy.state_change(change))
        out += len(policy.routes(routes, change.at))
        if (when := policy.next_deadline()) is not None and when <= change.at:
            out += len(policy.on_timer(change.at))
    elapsed = time.perf_counter() - started
    return {
        "changes": changes,
        "ns_per_change": round(elapsed / changes * 1e9),
        "alerts_out": out,
        "suppressed": counts["alerts_suppressed"],
        "rate_limited": counts["alerts_rate_limited"],
    }


class _Blackhole:
    """A TCP port that completes the handshake (the kernel's backlog) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]


def _hanging_script(workdir: Path) -> Path:
    path = workdir / "hangs.sh"
    path.write_text("#!/bin/sh\nexec sleep 3600\n")
    path.chmod(0o755)
    return path


async def _answering_server() -> tuple[Any, int]:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def loop_lag(hooks: str, seconds: float, workdir: Path) -> dict[str, Any]:
    config = parse_config(CONFIG)
    config._base = workdir
    runtime = Runtime(config)
    loop = asyncio.get_running_loop()
    runtime.start(loop.time())
    runner = None
    blackhole = None
    settings: tuple[HookSettings, ...] = ()
    if hooks == "answering":
        runner, port = await _answering_server()
        settings = (
            HookSettings(name="w", type="webhook", url=f"http://127.0.0.1:{port}/hook"),
            HookSettings(name="c", type="command", argv=("/bin/true",)),
        )
    elif hooks == "hanging":
        blackhole = _Blackhole()
        settings = (
            HookSettings(
                name="w",
                type="webhook",
                url=f"http://127.0.0.1:{blackhole.port}/hook",
                timeout=2.0,
                retries=0,
            ),
            HookSettings(
                name="c", type="command", argv=(str(_hanging_script(workdir)),), timeout=2.0
            ),
        )
    # Damping off: every change becomes an alert, the worst case for the queues.
    damping = DampingSettings(penalty=0, penalty_other=0, burst=10_000, per_minute=60_000)
    service = AlertService(runtime, AlertSettings(hooks=settings, damping=damping))
    service.start()
    lags: list[float] = []
    fed = 0
    feed_time = 0.0
    states = dict.fromkeys(TARGETS, State.UP)

    async def ticker() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    tick = loop.create_task(ticker())
    start = loop.time()
    end = start + seconds
    batches = 0
    try:
        while loop.time() < end:
            t0 = time.thread_time()  # CPU time: the machine's other work does not count
            for _ in range(10):  # 10 changes every 10 ms: 1,000 a second
                name = TARGETS[fed % len(TARGETS)]
                old = states[name]
                states[name] = new = State.DOWN if old is State.UP else State.UP
                service.feed(StateChange(name, old, new, "bench", loop.time()))
                fed += 1
            feed_time += time.thread_time() - t0
            batches += 1
            await asyncio.sleep(max(0.0, start + batches * 0.01 - loop.time()))
    finally:
        tick.cancel()
        counters = dict(runtime.proxy.counters)
        stop_started = time.perf_counter()
        await service.stop()
        stopped_in = time.perf_counter() - stop_started
        runtime.close()
        if runner is not None:
            await runner.cleanup()
        if blackhole is not None:
            blackhole.sock.close()
    lags.sort()
    return {
        "hooks": hooks,
        "changes": fed,
        "changes_per_s": round(fed / seconds),
        "feed_us_per_change": round(feed_time / fed * 1e6, 2),
        "lag_p50_ms": round(statistics.median(lags) * 1000, 2),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 2),
        "lag_max_ms": round(lags[-1] * 1000, 2),
        "sent": counters.get("alerts_sent", 0),
        "failed": counters.get("alerts_failed", 0),
        "dropped": counters.get("alerts_dropped", 0),
        "stop_s": round(stopped_in, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    # A hook failing a thousand times a second logs each failure: not what is measured.
    logging.getLogger("trunkguard").setLevel(logging.CRITICAL)
    cost = policy_cost(args.changes)
    print(
        f"policy: {cost['ns_per_change']} ns per state change (with the routes check), "
        f"{cost['changes']} changes on {len(TARGETS)} flapping targets -> "
        f"{cost['alerts_out']} alerts, {cost['suppressed']} held by damping, "
        f"{cost['rate_limited']} waited for the rate limit"
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="tg-alerts-bench-") as tmp:
        for hooks in ("none", "answering", "hanging"):
            workdir = Path(tmp) / hooks
            workdir.mkdir()
            r = uvloop.run(loop_lag(hooks, args.seconds, workdir))
            runs.append(r)
            print(
                f"{hooks:>9} hooks: {r['changes_per_s']} changes/s for {args.seconds:g} s, "
                f"listener {r['feed_us_per_change']} us CPU/change; loop lag p50 "
                f"{r['lag_p50_ms']} ms, p99 {r['lag_p99_ms']} ms, max {r['lag_max_ms']} ms; "
                f"sent {r['sent']}, failed {r['failed']}, dropped {r['dropped']}; "
                f"stopped in {r['stop_s']} s"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"policy": cost, "loop": runs}, indent=1))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(cpus {os.cpu_count()}, load average {load}, python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
