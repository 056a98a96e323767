"""Call records: what one call costs the event loop, and records/s into SQLite and PostgreSQL.

* Loop cost: ``Recorder.feed`` (the runtime's listener: type check, conversion to a row
  with wall-clock times, append to the bounded buffer) on a realistic record (two
  attempts: a 503 then an answer), fed ``--rate`` calls/s for 20 s, in µs per call (the
  time between calls not counted), with the router's garbage-collector settings; once
  with a backend that takes the batches at once, once with the SQLite writer thread
  writing them meanwhile (it competes for the GIL, as it does in the router).
* Records/s: ``--calls`` records fed as fast as the loop side can, then the time until the
  writer thread has written the last one (batches of ``--batch``, one transaction each):
  into SQLite (a file in a temporary directory: WAL, synchronous=NORMAL, as the router
  uses it), and into PostgreSQL (Debian's server, made for the run in a temporary
  directory, with fsync and synchronous commit on) through asyncpg's COPY.

Run: ``.venv/bin/python bench/records.py [--calls N] [--batch N] [--no-postgresql]
[--json PATH]`` (``make bench`` runs it without options).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from postgres import PostgresServer  # noqa: E402

from trunkguard.health import OutcomeClass, Verdict  # noqa: E402
from trunkguard.proxy import AttemptRecord, CallRecord  # noqa: E402
from trunkguard.records import (  # noqa: E402
    PostgresWriter,
    Recorder,
    RecorderSettings,
    RecordWriter,
    SqliteWriter,
)

FAULT = Verdict(OutcomeClass.TRUNK_FAULT, failover=True, counts_against=True)
OK = Verdict(OutcomeClass.SUCCESS, failover=False, counts_against=False)


def make_records(n: int) -> list[CallRecord]:
    out = []
    for i in range(n):
        t = 1000.0 + i * 0.001
        call_id = f"{i}-4711@10.0.0.5"
        a = AttemptRecord(call_id, "carrier-a", 1, 503, "response", FAULT, t, t + 0.04, t + 0.01,
                          None, "carrier-a")  # fmt: skip
        b = AttemptRecord(call_id, "carrier-b", 2, 200, "response", OK, t + 0.04, t + 2.5,
                          t + 0.06, None, "carrier-b")  # fmt: skip
        number = f"4420{i % 10_000_000:07d}"
        plan = ("carrier-a", "carrier-b")
        out.append(
            CallRecord(call_id, number, "10.0.0.5", plan, ("cost 0.010", "cost 0.012"), (a, b),
                       200, t, t + 2.5, t + 92.5, "bye from caller")
        )
    return out


class Idle:
    """A backend that takes every batch at once: the loop side alone is measured."""

    name = "none"

    def open(self) -> None:
        pass

    def write(self, rows: object) -> None:
        pass

    def prune(self, before: float) -> int:
        return 0

    def refused(self, exc: BaseException) -> bool:
        return False

    def describe(self, exc: BaseException) -> str:
        return ""

    def close(self) -> None:
        pass


def loop_cost(records: list[CallRecord], writer: RecordWriter, batch: int, rate: int) -> float:
    """µs per call of the listener, fed ``rate`` calls/s while the writer thread drains.

    The time between calls is not counted; the writer thread works in it and, as in the
    router, competes for the GIL with the feeding: that is in the figure.
    """
    settings = RecorderSettings(batch=batch, flush_interval=0.05, max_queue=len(records) + 1)
    recorder = Recorder(writer, settings, Counter(), offset=1.7e9)
    recorder.start()
    feed = recorder.feed
    chunk = max(rate // 100, 1)  # every 10 ms, like a loop turn with many calls ending
    spent = 0.0
    start = time.perf_counter()
    for i in range(0, len(records), chunk):
        began = time.perf_counter()
        for r in records[i : i + chunk]:
            feed(r)
        spent += time.perf_counter() - began
        pause = start + (i + chunk) / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    recorder.stop_blocking(120)
    return spent / len(records) * 1e6


def throughput(records: list[CallRecord], writer: RecordWriter, batch: int) -> dict[str, float]:
    settings = RecorderSettings(batch=batch, flush_interval=0.05, max_queue=len(records) + 1)
    recorder = Recorder(writer, settings, Counter(), offset=1.7e9)
    recorder.start()
    time.sleep(0.5)  # opened, tables made
    began = time.perf_counter()
    for r in records:
        recorder.feed(r)
    fed = time.perf_counter() - began
    while recorder.written < len(records) and time.perf_counter() - began < 600:
        time.sleep(0.005)
    took = time.perf_counter() - began
    written = recorder.written
    recorder.stop_blocking(60)
    if written != len(records) or recorder.errors:
        raise SystemExit(f"{writer.name}: {written} of {len(records)} written, errors")
    return {"records_per_s": round(written / took), "seconds": round(took, 3),
            "feed_seconds": round(fed, 3)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=int, default=2000, help="calls/s for the loop cost")
    parser.add_argument("--no-postgresql", action="store_true")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    records = make_records(args.calls)
    figures: dict[str, object] = {"calls": args.calls, "batch": args.batch, "cpus": os.cpu_count()}
    # The router's collector settings (cli._GcPolicy): what survives is frozen, young
    # generations only are collected.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    with tempfile.TemporaryDirectory(prefix="records-bench-") as tmp:
        sample = records[: min(len(records), args.rate * 20)]  # 20 s at --rate
        idle = loop_cost(sample, Idle(), args.batch, args.rate)
        busy = loop_cost(sample, SqliteWriter(Path(tmp) / "cost.db"), args.batch, args.rate)
        figures["loop_rate"] = args.rate
        figures["loop_us_per_call"] = round(idle, 2)
        figures["loop_us_per_call_with_sqlite_writer"] = round(busy, 2)
        print(f"loop cost per call at {args.rate:,} calls/s: {idle:.2f} µs (records taken "
              f"at once), {busy:.2f} µs (the SQLite writer thread writing them meanwhile)")
        sqlite = throughput(records, SqliteWriter(Path(tmp) / "calls.db"), args.batch)
        figures["sqlite"] = sqlite
        print(f"SQLite: {sqlite['records_per_s']:,} records/s "
              f"({args.calls:,} calls, 2 attempts each, in {sqlite['seconds']} s)")  # fmt: skip
    if not args.no_postgresql:
        with PostgresServer(durable=True) as pg:
            pg.sql("CREATE DATABASE bench")
            result = throughput(records, PostgresWriter(pg.dsn("bench")), args.batch)
        figures["postgresql"] = result
        print(f"PostgreSQL (COPY, fsync on): {result['records_per_s']:,} records/s "
              f"({args.calls:,} calls in {result['seconds']} s)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
