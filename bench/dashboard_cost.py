"""What the dashboard costs the router's event loop: one push of the cards, and its snapshot.

The cards are made once per push (at most five times a second, once a second when
nothing moves), for every client at once. The costly part is the figures: a median and
a 95th percentile of the post-dial delays kept for each target (up to 20,000 samples
each, the cap of trunkguard.stats). This fills every target to that cap and times the
making of the cards and of a full snapshot, with its 50 failovers, on this machine.

    .venv/bin/python bench/dashboard_cost.py [targets]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from trunkguard.admin._dashboard import Dashboard
from trunkguard.config import parse_config
from trunkguard.health import OutcomeClass, Verdict
from trunkguard.proxy import AttemptRecord, CallRecord
from trunkguard.runtime import Runtime
from trunkguard.stats import CAP


async def main(n_targets: int) -> None:
    carriers = "\n".join(
        f'  - {{name: t{i}, uri: "sip:127.0.0.1:{20000 + i}"}}' for i in range(n_targets)
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            f"listen: udp:127.0.0.1:0\ncarriers:\n{carriers}\nprobe: {{enabled: false}}\n"
            f"store: {{path: {Path(tmp) / 'events.db'}}}\n",
            "bench.yaml",
        )
        runtime = Runtime(config)
        now = asyncio.get_running_loop().time()
        runtime.start(now)
        ok = Verdict(OutcomeClass.SUCCESS, False, False)
        fault = Verdict(OutcomeClass.TRUNK_FAULT, True, True)
        for i in range(n_targets):
            for k in range(CAP):
                t = now - 290 + k * 0.01
                runtime.stats.attempt(
                    AttemptRecord(f"c{k}", f"t{i}", 1, 200, "response", ok, t, t + 0.02,
                                  t + 0.002 + (k % 97) / 10_000)
                )  # fmt: skip
        dashboard = Dashboard(runtime, "bench-token-0123456789")
        for k in range(50):
            a = AttemptRecord(f"f{k}", "t0", 1, None, "unreachable", fault, now, now, None)
            b = AttemptRecord(f"f{k}", "t1", 2, 200, "response", ok, now, now + 0.01, now)
            dashboard.failovers.feed(
                CallRecord(f"f{k}", "15551234567", "127.0.0.1:5060", ("t0", "t1"),
                           ("t0: config order", "t1: config order"), (a, b), 200, now,
                           now + 0.01, now + 2, "bye")
            )  # fmt: skip
        cards, snaps = [], []
        size = 0
        for _ in range(20):
            t0 = time.perf_counter()
            dashboard.cards(now)
            t1 = time.perf_counter()
            size = len(json.dumps(dashboard.snapshot()))
            t2 = time.perf_counter()
            cards.append((t1 - t0) * 1000)
            snaps.append((t2 - t1) * 1000)
        runtime.close()
    print(
        f"{n_targets} targets x {CAP} samples: cards {statistics.median(cards):.1f} ms "
        f"(max {max(cards):.1f}); snapshot with 50 failovers {statistics.median(snaps):.1f} ms, "
        f"{size / 1024:.0f} KiB of JSON"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
