"""Call records in a real PostgreSQL (Debian's server, run by tests/e2e/postgres.py).

* The writer alone: tables made on first use, batched COPY, the filters of ``trunkguard
  calls``, retention.
* The router: SIPp callers through it to SIPp carriers (one refuses every other INVITE
  with 503, so calls fail over), PostgreSQL stopped mid-run (``pg_ctl stop -m fast``) and
  started again. No call fails; ``trunkguard calls --json``, run as a command, then gives
  back exactly the calls SIPp made, each with the carriers its INVITE reached (from the
  carriers' own traces) and the final status the caller got.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres import PostgresServer
from router import RouterProcess
from sipp import ShortMessage, free_udp_ports, start_uac, start_uas

from trunkguard.health import OutcomeClass, Verdict
from trunkguard.proxy import AttemptRecord, CallRecord
from trunkguard.records import CallQuery, PostgresWriter, call_row, read_postgres
from trunkguard.records._recorder import Recorder, RecorderSettings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def record(
    call_id: str = "c1",
    number: str = "15551212",
    started: float = 0.0,
    carriers: list[tuple[str, int]] | None = None,
) -> CallRecord:
    """A call of 0.5 s attempts (first response after 0.1 s); answered if the last got 200."""
    verdicts = {
        503: Verdict(OutcomeClass.TRUNK_FAULT, failover=True, counts_against=True),
        486: Verdict(OutcomeClass.DESTINATION_FINAL, failover=False, counts_against=False),
        200: Verdict(OutcomeClass.SUCCESS, failover=False, counts_against=False),
    }
    attempts = []
    t = started
    for i, (carrier, status) in enumerate(carriers or [("a", 503), ("b", 200)], 1):
        attempts.append(
            AttemptRecord(
                call_id, carrier, i, status, "response", verdicts[status], t, t + 0.5, t + 0.1,
                None, carrier,
            )
        )
        t += 0.5
    answered = t if attempts[-1].status == 200 else None
    return CallRecord(
        call_id, number, "127.0.0.1", tuple(a.target for a in attempts), (), tuple(attempts),
        attempts[-1].status or 500, started, answered, t + 1.0, "bye from caller",
    )  # fmt: skip


def finals(messages: list[ShortMessage]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in messages:
        status = m.status
        final = status is not None and status >= 200 and m.cseq_method == "INVITE"
        if m.direction == "R" and final and status is not None:
            out.setdefault(m.call_id, status)
    return out


def invited(messages: list[ShortMessage]) -> set[str]:
    return {m.call_id for m in messages if m.direction == "R" and m.method == "INVITE"}


def calls_json(config: Path, *args: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "trunkguard", "calls", "-c", str(config), "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_writer_makes_its_tables_copies_batches_and_prunes(pg: PostgresServer) -> None:
    import asyncio

    pg.sql("CREATE DATABASE writer_test")
    writer = PostgresWriter(pg.dsn("writer_test"))
    now = time.time()
    try:
        writer.open()
        rows = [
            call_row(record(f"w{i}", f"44{i:06d}", 0.0, [("a", 503), ("b", 200)]), now - 100 + i)
            for i in range(50)
        ]
        old = call_row(record("old", "1212", 0.0, [("b", 486)]), now - 40 * 86400)
        writer.write(rows)
        writer.write([old])
        assert pg.sql("SELECT count(*) FROM calls", "writer_test") == "51"
        assert pg.sql("SELECT count(*) FROM call_attempts", "writer_test") == "101"
        got = asyncio.run(read_postgres(pg.dsn("writer_test"), None, CallQuery(carrier="a")))
        assert [r.call_id for r in got] == [f"w{i}" for i in range(50)]
        assert got[0].attempts[0].outcome == "trunk_fault" and got[0].carrier == "b"
        assert abs(got[0].started - (now - 100)) < 0.001
        got = asyncio.run(
            read_postgres(pg.dsn("writer_test"), None, CallQuery(number="49", limit=5))
        )
        assert [r.call_id for r in got] == ["w49"]
        assert writer.prune(now - 30 * 86400) == 1
        assert pg.sql("SELECT count(*) FROM call_attempts", "writer_test") == "100"
    finally:
        writer.shutdown()


def test_a_recorder_reconnects_after_postgresql_restarts(pg: PostgresServer) -> None:
    pg.sql("CREATE DATABASE restart_test")
    recorder = Recorder(
        PostgresWriter(pg.dsn("restart_test")),
        RecorderSettings(batch=10, flush_interval=0.05, max_queue=1000),
    )
    recorder.start()
    try:
        for i in range(10):
            recorder.feed(record(f"r{i}"))
        assert wait_for(lambda: recorder.written == 10, 30)
        pg.stop("fast")
        for i in range(10, 30):
            recorder.feed(record(f"r{i}"))
        assert wait_for(lambda: recorder.errors >= 1, 30)
        pg.start()
        assert wait_for(lambda: recorder.written == 30, 30)
    finally:
        if not pg.running():
            pg.start()
        recorder.stop_blocking(10)
    assert pg.sql("SELECT count(*) FROM calls", "restart_test") == "30"
    assert recorder.buffer.dropped == 0 and recorder.lost == 0


def wait_for(predicate: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


CALLS_EACH = 80  # two callers at 10 calls/s each: 160 calls at 20/s


def test_calls_go_on_while_postgresql_is_stopped_and_every_record_arrives(
    pg: PostgresServer, tmp_path: Path
) -> None:
    pg.sql("CREATE DATABASE router_test")
    pa, pb = free_udp_ports(2)
    extra = {
        "records": {
            "backend": "postgresql",
            "dsn": pg.dsn("router_test"),
            "batch": 20,
            "flush_interval": 0.2,
        },
        "probe": {"enabled": False},
    }
    numbers = {"1212": "12125550100", "3434": "34345550100"}
    with (
        start_uas("uas_half", port=pa, lifetime=90, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, lifetime=90, tmp_root=tmp_path) as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)], extra=extra) as router,
    ):
        callers = {
            key: start_uac(
                "uac_call", router.address, calls=CALLS_EACH, rate=10, pause_ms=200,
                timeout=60, service=number, tmp_root=tmp_path,
            )
            for key, number in numbers.items()
        }
        try:
            # A third of the way in, the database goes away for about three seconds.
            assert wait_for(lambda: b.received("INVITE") >= 40, 30), b.describe()
            pg.stop("fast")
            stopped = time.time()
            time.sleep(3.0)  # calls go on meanwhile: what the test is about
            pg.start()
            results = {key: caller.wait() for key, caller in callers.items()}
        finally:
            for caller in callers.values():
                caller.close()
            if not pg.running():
                pg.start()
        for result in results.values():
            assert result.ok and result.failed == 0, result.describe()
            assert result.successful == CALLS_EACH
        reached_a, reached_b = invited(a.short_messages()), invited(b.short_messages())
        made: dict[str, tuple[str, int]] = {}
        for key, result in results.items():
            for call_id, status in finals(result.messages).items():
                made[call_id] = (numbers[key], status)
        assert len(made) == 2 * CALLS_EACH
        # Every record is written once the database is back (the buffer never filled).
        deadline = time.monotonic() + 30
        records = calls_json(router.config_path, "--since", "1h")
        while len(records) < len(made) and time.monotonic() < deadline:
            time.sleep(0.5)
            records = calls_json(router.config_path, "--since", "1h")
        counters = router.stop()
    assert counters.get("records_write_errors", 0) >= 1, counters  # it was down, and tried
    assert counters.get("records_dropped", 0) == 0, counters
    assert counters.get("records_written") == len(made), counters
    by_id = {str(r["call_id"]): r for r in records}
    assert len(records) == len(by_id) == len(made)
    assert set(by_id) == set(made)
    failovers = 0
    for call_id, (number, status) in made.items():
        r = by_id[call_id]
        assert (r["number"], r["status"]) == (number, status), r
        attempts = r["attempts"]
        assert isinstance(attempts, list)
        carriers = [a["carrier"] for a in attempts]
        truth = [c for c, seen in (("a", reached_a), ("b", reached_b)) if call_id in seen]
        assert carriers == truth, (call_id, r)
        if carriers == ["a", "b"]:
            failovers += 1
            assert [(x["status"], x["outcome"], x["failover"]) for x in attempts] == [
                (503, "trunk_fault", True),
                (200, "success", False),
            ]
            assert attempts[0]["pdd"] is not None
        assert r["carrier"] == carriers[-1] and r["end"] == "bye from caller"
        assert r["duration"] is not None and float(str(r["duration"])) >= 0.15
    assert failovers >= 1
    # Calls made while the database was down are among them.
    assert any(
        abs(time_of(str(r["started"])) - stopped) < 2.0 for r in records
    ), "no call was recorded from the outage"
    # The number and carrier filters, against the same truth.
    b_1212 = calls_json(router.config_path, "--number", "1212", "--carrier", "b")
    assert {str(r["call_id"]) for r in b_1212} == {
        c for c, (n, _) in made.items() if n == numbers["1212"] and c in reached_b
    }


def time_of(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
