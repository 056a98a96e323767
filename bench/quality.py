"""What quality in route choice costs: a call record into the tracker, and a plan with it.

The tracker works a group's verdicts out again on every call record of that group,
so its cost grows with the carriers in the group; a plan reads one verdict per
carrier (a dict lookup) and adds the figures to its explain lines. This fills
groups of 3 and of 20 carriers to the sample cap and times both, on this machine.

    .venv/bin/python bench/quality.py
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

from trunkguard.health import FailureTable
from trunkguard.proxy import AttemptRecord, CallRecord, Flow, Target
from trunkguard.quality import QualitySettings, QualityTracker
from trunkguard.routing import CarrierRoute, DeckColumns, RoutingTable, build_plan, load_deck
from trunkguard.sip import parse_uri

TABLE = FailureTable()
NUMBER = "15551234567"


def record(carrier: str, status: int, at: float) -> CallRecord:
    a = AttemptRecord(
        call_id=f"c{at}",
        target=carrier,
        attempt=1,
        status=status,
        kind="response",
        verdict=TABLE.classify(status),
        started=at,
        ended=at + 0.3,
        first_response=at + 0.05,
        carrier=carrier,
    )
    answered = at + 1.0 if status == 200 else None
    return CallRecord(
        call_id=a.call_id,
        number=NUMBER,
        source="127.0.0.1",
        plan=(carrier,),
        explain=(),
        attempts=(a,),
        status=status,
        started=at,
        answered=answered,
        ended=at + 30.0 if answered is not None else at + 0.3,
        end="bye" if answered is not None else "failed",
    )


def timed(fn: object, n: int) -> float:
    """Median microseconds per call of ``fn`` over 5 rounds of ``n``."""
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()  # type: ignore[operator]
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(rounds)


def measure(n_carriers: int, tmp: Path) -> str:
    rng = random.Random(1)
    names = [f"c{i}" for i in range(n_carriers)]
    q = QualityTracker(QualitySettings(groups=("1",)))
    now = 0.0
    for _ in range(5_000 * n_carriers):  # every series at its cap
        now += 0.01
        q.feed(record(rng.choice(names), 200 if rng.random() < 0.4 else 486, now))
    clock = [now]

    def feed() -> None:
        clock[0] += 0.001  # 1,000 call records a second
        q.feed(record(rng.choice(names), 486, clock[0]))

    per_record = timed(feed, 5_000)
    carriers = []
    for i, name in enumerate(names):
        path = tmp / f"{name}.csv"
        path.write_text(f"prefix,rate\n1,0.00{i + 1:02d}\n")
        carriers.append(CarrierRoute(name, load_deck(path, DeckColumns(), name)))
    routing = RoutingTable(carriers)
    targets = [
        Target(n, parse_uri(f"sip:127.0.0.1:{6000 + i}"), Flow("udp", ("127.0.0.1", 6000 + i)))
        for i, n in enumerate(names)
    ]
    plain = timed(lambda: build_plan(NUMBER, targets, now, routing=routing), 5_000)
    with_q = timed(lambda: build_plan(NUMBER, targets, now, routing=routing, quality=q), 5_000)
    return (
        f"{n_carriers:>2} carriers in the group, 5,000 samples each, 1,000 records/s: a call "
        f"record into the tracker {per_record:.1f} us; a plan {plain:.1f} us without quality, "
        f"{with_q:.1f} us with it (+{with_q - plain:.1f} us)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n in (3, 20):
            print(measure(n, Path(tmp)))


if __name__ == "__main__":
    main()
