"""Dialer feedback: what a state change costs the event loop.

Every state change makes the adapter work out each campaign's capacity from the health
states and ask the controller; this measures that, on a real Runtime: ``--carriers``
carriers, ``--campaigns`` campaigns of 10 carriers each (drawn at random, fixed seed),
``--changes`` state changes (a random carrier flips UP <-> DOWN, all within seconds)
fed through the
service's listener, in dry run (each level change is logged and written to the event
log as a notice, as it is for real; only the HTTP call, which runs in a task of its
own, is left out). Prints microseconds per state change (p50, p99, max) and how many
level changes came out.

With ``min_interval`` 0 every flip may change levels (the worst case: the cost is then
the notices' writes, each committed to SQLite as every event is); with the default 60 s
a campaign changes at most once in the run.

Run: ``.venv/bin/python bench/dialer.py [--carriers 50] [--campaigns 100] [--changes 5000]
[--min-interval S ...]`` (``make bench`` runs it without options: 0 s, then 60 s).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

from trunkguard.config import parse_config
from trunkguard.dialer import CampaignSettings, DialerSettings, Step
from trunkguard.dialer._service import DialerService
from trunkguard.health import State, StateChange
from trunkguard.runtime import Runtime


async def run(carriers: int, campaigns: int, changes: int, min_interval: float = 0.0) -> None:
    names = [f"c{i}" for i in range(carriers)]
    lines = "\n".join(
        f'  - {{name: {n}, uri: "sip:127.0.0.1:{10000 + i}"}}' for i, n in enumerate(names)
    )
    text = f'listen: "udp:127.0.0.1:0"\nprobe: {{enabled: false}}\ncarriers:\n{lines}\n'
    rng = random.Random(7)
    steps = (Step(0.9, 2.0), Step(0.5, 1.0), Step(0.2, 0.0))
    camps = tuple(
        CampaignSettings(
            f"C{i}",
            3.0,
            steps,
            carriers=tuple(rng.sample(names, 10)),
            min_interval=min_interval,
            dry_run=True,
        )
        for i in range(campaigns)
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(text + f"store: {{path: {Path(tmp) / 'events.db'}}}\n")
        runtime = Runtime(config)
        loop = asyncio.get_running_loop()
        runtime.start(loop.time())
        service = DialerService(runtime, DialerSettings(campaigns=camps))
        service.start()
        times = []
        for _ in range(changes):
            name = rng.choice(names)
            h = runtime.health.targets[name]
            old = h.state
            h.state = State.DOWN if old is State.UP else State.UP
            event = StateChange(name, old, h.state, "bench", loop.time())
            start = time.perf_counter()
            service.feed(event)
            times.append(time.perf_counter() - start)
        made = runtime.proxy.counters["dialer_changes"]
        await service.stop()
        runtime.close()
    us = sorted(t * 1e6 for t in times)
    print(
        f"dialer feedback, {carriers} carriers, {campaigns} campaigns of 10, min_interval "
        f"{min_interval:g} s: per state change "
        f"p50 {statistics.median(us):.0f} us, p99 {us[int(len(us) * 0.99)]:.0f} us, "
        f"max {us[-1]:.0f} us over {changes} changes; {made} level changes (dry run, each "
        "logged and written as a notice)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carriers", type=int, default=50)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--changes", type=int, default=5000)
    parser.add_argument("--min-interval", type=float, action="append")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the level changes' log lines are not what is measured
    # 0: every flip may change levels (the worst case); 60: the default, a change a minute
    for interval in args.min_interval or [0.0, 60.0]:
        asyncio.run(run(args.carriers, args.campaigns, args.changes, interval))


if __name__ == "__main__":
    main()
