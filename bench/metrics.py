"""What the Prometheus metrics cost the router: one scrape, and the listener per call.

In one process, without SIPp: a Runtime with 50 carriers (the router's own, from a
config), whose event listeners get synthetic attempt and call records as the core
hands them out. Figures:

- the listener's cost per call: the metrics' tallies fed one call's records (two
  attempts, a 503 then a 200, and the call's record), in µs;
- one scrape with 50 targets: reading the router's state (on its loop, which is
  blocked for that long), encoding the text (in a worker thread), the whole HTTP
  round trip through the admin app on loopback, and the worst stall of the loop
  while scrapes go on (a 1 ms ticker on it), each as the median of many, in ms, with the
  window's figures (calls/s, ASR, ACD) holding a typical number of samples per target
  (--samples, default 600: 100 calls/s over the 5-minute window) and the most they can
  hold (the stats' cap, 20,000 per target).

Run: ``.venv/bin/python bench/metrics.py [--targets N] [--samples N] [--scrapes N]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, web
from prometheus_client import generate_latest

from trunkguard.admin import build_app
from trunkguard.admin._api import METRICS
from trunkguard.admin._metrics import _Snapshot
from trunkguard.admin._tallies import Tallies
from trunkguard.config import parse_config
from trunkguard.health import OutcomeClass, Verdict
from trunkguard.proxy import AttemptRecord, CallRecord
from trunkguard.runtime import Runtime
from trunkguard.stats import CAP

TOKEN = "bench-metrics-token-0001"
FAULT = Verdict(OutcomeClass.TRUNK_FAULT, failover=True, counts_against=True)
OK = Verdict(OutcomeClass.SUCCESS, failover=False, counts_against=False)


def config_text(targets: int, workdir: Path) -> str:
    carriers = "\n".join(
        f'  - {{name: carrier{i:02d}, uri: "sip:127.0.0.1:{20000 + i}"}}' for i in range(targets)
    )
    return (
        "listen: udp:127.0.0.1:0\nallow: [127.0.0.0/8]\n"
        f"carriers:\n{carriers}\n"
        f"probe: {{enabled: false}}\nstore: {{path: {workdir}/events.db}}\n"
    )


def call_records(i: int, first: str, second: str, at: float) -> list[object]:
    cid = f"bench-{i}"
    a = AttemptRecord(cid, first, 1, 503, "response", FAULT, at, at + 0.03, at + 0.01)
    b = AttemptRecord(cid, second, 2, 200, "response", OK, at + 0.03, at + 1.0, at + 0.05)
    record = CallRecord(
        cid, "15551234567", "10.0.0.1", (first, second), ("", ""), (a, b), 200,
        at, at + 1.0, at + 61.0, "bye from caller",
    )  # fmt: skip
    return [a, b, record]


def listener_cost(names: list[str], calls: int) -> float:
    """µs per call for the metrics' tallies (three records per call)."""
    tallies = Tallies()
    events = [
        e for i in range(calls) for e in call_records(i, names[i % len(names)],
                                                      names[(i + 1) % len(names)], 100.0)
    ]  # fmt: skip
    feed = tallies.feed
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for event in events:
            feed(event)
        best = min(best, time.perf_counter() - start)
    assert tallies.targets[names[0]].calls > 0
    return best / calls * 1e6


def fill_window(runtime: Runtime, names: list[str], per_target: int, now: float) -> None:
    """``per_target`` seizures per target in the stats window that ends at ``now``."""
    stats = runtime.stats
    for n, name in enumerate(names):
        for i in range(per_target):
            at = now - 290.0 + 290.0 * i / per_target
            for event in call_records(n * per_target + i, name, name, at - 62.0):
                stats.feed(event)


async def scrapes(runtime: Runtime, count: int, now: float) -> dict[str, float]:
    """Medians, in ms: reading the state (on the loop), encoding the text (a worker
    thread), a whole HTTP scrape; the worst loop stall seen during the HTTP scrapes;
    and the text's size."""
    app = build_app(runtime, TOKEN)
    metrics = app[METRICS]
    metrics.collector.clock = lambda: now
    names = [t.name for t in runtime.proxy.targets]
    for i in range(10 * len(names)):  # counts (and PDD buckets) for every target
        for event in call_records(i, names[i % len(names)], names[(i + 3) % len(names)], now):
            metrics.tallies.feed(event)
    read: list[float] = []
    encode: list[float] = []
    size = 0
    for _ in range(count):
        start = time.perf_counter()
        families = metrics.snapshot()
        read.append(time.perf_counter() - start)
        start = time.perf_counter()
        size = len(generate_latest(_Snapshot(families)))
        encode.append(time.perf_counter() - start)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http: list[float] = []
    stall = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal stall
        loop = asyncio.get_running_loop()
        while not done.is_set():
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            stall = max(stall, loop.time() - due)

    tick = asyncio.create_task(ticker())
    try:
        async with ClientSession() as session:
            for _ in range(count):
                start = time.perf_counter()
                async with session.get(
                    f"http://127.0.0.1:{port}/metrics",
                    headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"},
                ) as resp:
                    assert resp.status == 200
                    await resp.read()
                http.append(time.perf_counter() - start)
    finally:
        done.set()
        await tick
        await runner.cleanup()
    return {
        "read": statistics.median(read) * 1000,
        "encode": statistics.median(encode) * 1000,
        "http": statistics.median(http) * 1000,
        "stall": stall * 1000,
        "kib": size / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--samples", type=int, default=600, help="window samples per target")
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--calls", type=int, default=100_000, help="calls fed to the listener")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = parse_config(config_text(args.targets, workdir), "bench.yaml")
        names = [t.name for t in config.targets()]
        us = listener_cost(names, args.calls)
        print(f"metrics listener: {us:.2f} µs per call (2 attempts + 1 call record), "
              f"over {args.calls} calls")  # fmt: skip
        for label, per_target in (("typical", args.samples), ("full window", CAP)):
            runtime = Runtime(config)
            now = 10_000.0
            runtime.start(now)
            try:
                fill_window(runtime, names, per_target, now)
                # As the router runs (cli._GcPolicy): what lives on is frozen, out of the
                # cyclic collector's passes.
                gc.collect()
                gc.freeze()
                gc.set_threshold(10_000, 10, 10)
                f = asyncio.run(scrapes(runtime, args.scrapes, now))
            finally:
                runtime.close()
            print(
                f"scrape, {args.targets} targets, {label} ({per_target} window samples per "
                f"target), medians of {args.scrapes}: state read on the loop "
                f"{f['read']:.2f} ms, text encoded off the loop {f['encode']:.2f} ms, "
                f"HTTP GET /metrics {f['http']:.2f} ms ({f['kib']:.0f} KiB of text); "
                f"worst loop stall during the HTTP scrapes {f['stall']:.2f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
