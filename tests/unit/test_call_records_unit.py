"""Call records: the row a CallRecord becomes, the bounded buffer, the recorder's thread
against a real SQLite file (and a backend that fails on purpose), retention, the filters
of ``trunkguard calls`` and its output, the ``records:`` config."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from test_proxy_core import CALLER, A, B, Net, invite, only_request, reply

from trunkguard.cli import main
from trunkguard.config import ConfigError, parse_config
from trunkguard.health import OutcomeClass, Verdict
from trunkguard.proxy import AttemptRecord, CallRecord
from trunkguard.records import (
    CallQuery,
    CallRow,
    RecordBuffer,
    Recorder,
    RecorderSettings,
    SqliteWriter,
    call_row,
    read_sqlite,
    row_json,
)

FAULT = Verdict(OutcomeClass.TRUNK_FAULT, failover=True, counts_against=True)
OK = Verdict(OutcomeClass.SUCCESS, failover=False, counts_against=False)
BUSY = Verdict(OutcomeClass.DESTINATION_FINAL, failover=False, counts_against=False)


def record(
    call_id: str = "c1",
    number: str = "15551212",
    started: float = 100.0,
    carriers: Sequence[tuple[str, int | None]] = (("a", 503), ("b", 200)),
) -> CallRecord:
    """A call on the core's clock: each attempt 0.5 s, the first response after 0.1 s."""
    attempts = []
    t = started
    for i, (carrier, status) in enumerate(carriers, 1):
        verdict = {503: FAULT, 200: OK, 486: BUSY}.get(status or 0)
        kind = "response" if status is not None else "timeout"
        first = t + 0.1 if status is not None else None
        attempts.append(
            AttemptRecord(
                call_id, carrier, i, status, kind, verdict, t, t + 0.5, first, None, carrier
            )
        )
        t += 0.5
    last = carriers[-1][1]
    answered = t if last == 200 else None
    return CallRecord(
        call_id,
        number,
        "127.0.0.1",
        tuple(c for c, _ in carriers),
        (),
        tuple(attempts),
        last or 408,
        started,
        answered,
        t + 30.0 if answered else t,
        "bye from caller" if answered else "failed",
    )


# ------------------------------------------------------------------------- the row


def test_a_record_becomes_a_row_with_wall_clock_times_and_each_attempt() -> None:
    row = call_row(record(), offset=1_700_000_000.0)
    assert row.call_id == "c1" and row.number == "15551212" and row.plan == ("a", "b")
    assert row.status == 200 and row.carrier == "b" and row.end == "bye from caller"
    assert row.started == 1_700_000_100.0
    assert row.answered == pytest.approx(1_700_000_101.0)
    assert row.duration == pytest.approx(30.0)
    first, second = row.attempts
    assert (first.carrier, first.status, first.outcome, first.failover) == (
        "a", 503, "trunk_fault", True,
    )  # fmt: skip
    assert (second.carrier, second.status, second.outcome, second.failover) == (
        "b", 200, "success", False,
    )  # fmt: skip
    assert first.pdd == pytest.approx(0.1) and first.duration == pytest.approx(0.5)
    assert first.started == pytest.approx(1_700_000_100.0)


def test_an_attempt_without_a_verdict_is_told_by_its_kind_and_has_no_pdd() -> None:
    row = call_row(record(carriers=[("a", None)]), offset=0.0)
    [a] = row.attempts
    assert (a.status, a.kind, a.outcome, a.failover) == (None, "timeout", "timeout", False)
    assert a.pdd is None
    assert row.carrier is None and row.answered is None and row.duration is None


def test_a_record_from_the_core_itself_converts() -> None:
    net = Net()
    net.proxy.receive(invite("r1"), CALLER, net.now)
    to_a = only_request(net.take(), A, "INVITE")
    net.now += 0.05
    net.proxy.receive(reply(to_a, 503), A, net.now)
    to_b = only_request(net.take(), B, "INVITE")
    net.now += 0.02
    net.proxy.receive(reply(to_b, 486), B, net.now)
    [rec] = [e for e in net.proxy.take_events() if isinstance(e, CallRecord)]
    row = call_row(rec, offset=10.0)
    assert [(a.carrier, a.status, a.outcome) for a in row.attempts] == [
        ("a", 503, "trunk_fault"),
        ("b", 486, "destination_final"),
    ]
    assert row.status == 486 and row.started == pytest.approx(net.now - 0.07 + 10.0)
    out = row_json(row, str)
    assert out["attempts"][0]["failover"] is True and out["answered"] is None


# ---------------------------------------------------------------------- the buffer


def test_the_buffer_keeps_up_to_its_cap_then_drops_the_newest_and_counts() -> None:
    buffer = RecordBuffer(cap=3, batch=2)
    full: list[int] = []
    resumed: list[int] = []
    buffer.on_full = full.append
    buffer.on_resumed = resumed.append
    rows = [call_row(record(f"c{i}"), 0.0) for i in range(6)]
    assert [buffer.append(r) for r in rows[:5]] == [1, 2, 3, -1, -1]
    assert buffer.wake.is_set()  # a batch was ready at the 2nd
    assert len(buffer) == 3 and buffer.dropped == 2
    assert full == [3] and resumed == []  # once per burst, not per record
    assert [r.call_id for r in buffer.peek(2)] == ["c0", "c1"]
    assert len(buffer) == 3  # peek leaves them
    buffer.commit(2)
    assert buffer.append(rows[5]) == 2
    assert resumed == [2]
    assert [r.call_id for r in buffer.peek(10)] == ["c2", "c5"]


# --------------------------------------------------------------- recorder + SQLite


def rows_in(path: Path, **query: object) -> list[CallRow]:
    return read_sqlite(path, CallQuery(**query))  # type: ignore[arg-type]


def settings(**kw: object) -> RecorderSettings:
    base: dict[str, object] = {"batch": 50, "flush_interval": 0.05, "max_queue": 10_000}
    base.update(kw)
    return RecorderSettings(**base)  # type: ignore[arg-type]


def test_the_recorder_writes_every_record_to_sqlite_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    counters: Counter[str] = Counter()
    recorder = Recorder(SqliteWriter(path), settings(), counters, offset=1_700_000_000.0)
    recorder.start()
    for i in range(237):
        recorder.feed(record(f"c{i}", number=f"1555{i:04d}", started=100.0 + i))
        recorder.feed(object())  # not a CallRecord: ignored
    recorder.stop_blocking(10.0)
    rows = rows_in(path, limit=1000)
    assert [r.call_id for r in rows] == [f"c{i}" for i in range(237)]  # oldest first
    assert all(len(r.attempts) == 2 for r in rows)
    assert rows[5].attempts[0].outcome == "trunk_fault" and rows[5].carrier == "b"
    assert counters["records_written"] == 237
    assert counters["records_queued"] == 0 and counters["records_dropped"] == 0
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT count(*) FROM call_attempts").fetchone() == (474,)
    db.close()


class Flaky:
    """A backend that fails while ``down`` is set (as a database that went away does)."""

    name = "flaky"

    def __init__(self, refuse: str | None = None) -> None:
        self.down = threading.Event()
        self.refuse = refuse  # a Call-ID whose record it never takes
        self.rows: list[str] = []
        self.opens = 0
        self.batches: list[int] = []

    def open(self) -> None:
        if self.down.is_set():
            raise ConnectionRefusedError("no database")
        self.opens += 1

    def write(self, rows: Sequence[CallRow]) -> None:
        if self.down.is_set():
            raise ConnectionResetError("gone")
        if any(r.call_id == self.refuse for r in rows):
            raise ValueError("refused row")
        self.rows += [r.call_id for r in rows]
        self.batches.append(len(rows))

    def prune(self, before: float) -> int:
        return 0

    def refused(self, exc: BaseException) -> bool:
        return isinstance(exc, ValueError)

    def describe(self, exc: BaseException) -> str:
        return repr(exc)

    def close(self) -> None:
        pass


def wait_for(predicate: object, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_records_wait_in_the_buffer_while_the_backend_is_down_and_none_is_lost() -> None:
    flaky = Flaky()
    counters: Counter[str] = Counter()
    recorder = Recorder(flaky, settings(batch=10), counters)
    recorder.start()
    try:
        for i in range(20):
            recorder.feed(record(f"a{i}"))
        assert wait_for(lambda: len(flaky.rows) == 20)
        flaky.down.set()
        for i in range(40):
            recorder.feed(record(f"b{i}"))
        assert wait_for(lambda: recorder.errors >= 2)  # it tried, and tried again
        assert flaky.rows == [f"a{i}" for i in range(20)]
        assert len(recorder.buffer) == 40
        flaky.down.clear()
        assert wait_for(lambda: len(flaky.rows) == 60)
    finally:
        recorder.stop_blocking(5.0)
    assert flaky.rows == [f"a{i}" for i in range(20)] + [f"b{i}" for i in range(40)]
    assert max(flaky.batches) <= 10
    assert flaky.opens >= 2  # reconnected
    assert counters["records_written"] == 60 and counters["records_dropped"] == 0
    assert counters["records_write_errors"] == recorder.errors >= 2


def test_a_full_buffer_drops_the_newest_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky()
    flaky.down.set()
    counters: Counter[str] = Counter()
    recorder = Recorder(flaky, settings(batch=5, max_queue=25), counters)
    recorder.start()
    try:
        for i in range(100):
            recorder.feed(record(f"c{i}"))
        assert counters["records_dropped"] == 75 and counters["records_queued"] == 25
        assert sum("buffer is full" in r.message for r in caplog.records) == 1
        flaky.down.clear()
        assert wait_for(lambda: len(flaky.rows) == 25)
    finally:
        recorder.stop_blocking(5.0)
    assert flaky.rows == [f"c{i}" for i in range(25)]  # the oldest were kept
    assert counters["records_written"] == 25


def test_a_record_the_backend_refuses_is_dropped_alone() -> None:
    flaky = Flaky(refuse="c3")
    counters: Counter[str] = Counter()
    recorder = Recorder(flaky, settings(batch=10), counters)
    recorder.start()
    for i in range(8):
        recorder.feed(record(f"c{i}"))
    recorder.stop_blocking(5.0)
    assert flaky.rows == [f"c{i}" for i in range(8) if i != 3]
    assert counters["records_dropped"] == 1 and counters["records_written"] == 7


def test_records_left_when_the_shutdown_wait_runs_out_are_counted_as_dropped() -> None:
    flaky = Flaky()
    flaky.down.set()
    counters: Counter[str] = Counter()
    recorder = Recorder(flaky, settings(batch=5), counters)
    recorder.start()
    for i in range(12):
        recorder.feed(record(f"c{i}"))
    began = time.monotonic()
    recorder.stop_blocking(0.5)
    assert time.monotonic() - began < 4.0  # bounded
    assert counters["records_dropped"] == 12 and counters["records_written"] == 0


def test_retention_deletes_the_old_calls_and_their_attempts(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    writer = SqliteWriter(path)
    writer.open()
    now = time.time()
    old = [call_row(record(f"old{i}", started=now - 40 * 86400 + i), 0.0) for i in range(30)]
    new = [call_row(record(f"new{i}", started=now - 3600 + i), 0.0) for i in range(5)]
    writer.write(old + new)
    assert writer.prune(now - 30 * 86400) == 30
    assert writer.prune(now - 30 * 86400) == 0
    writer.write([call_row(record("later", started=now), 0.0)])  # keys go on after a prune
    writer.close()
    assert [r.call_id for r in rows_in(path)] == [f"new{i}" for i in range(5)] + ["later"]
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM call_attempts").fetchone() == (12,)
    db.close()


def test_the_recorder_prunes_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trunkguard.records._recorder as recorder_module

    monkeypatch.setattr(recorder_module, "PRUNE_FIRST", 0.0)
    path = tmp_path / "calls.db"
    counters: Counter[str] = Counter()
    recorder = Recorder(SqliteWriter(path), settings(retention=3600.0), counters)
    recorder.start()
    now = time.time()
    recorder.feed(record("old", started=now - 7200))
    recorder.feed(record("new", started=now))
    assert wait_for(lambda: counters["records_pruned"] == 1 or recorder.pruned == 1)
    recorder.stop_blocking(5.0)
    assert [r.call_id for r in rows_in(path)] == ["new"]


# ------------------------------------------------------------------ query and CLI


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A config whose records file holds six calls of the last hour, and one from 3 h ago."""
    (tmp_path / "router.yaml").write_text(
        "listen: udp:127.0.0.1:0\nallow: [127.0.0.0/8]\n"
        "carriers:\n  - {name: a, uri: 'sip:127.0.0.1:5991'}\n"
        "  - {name: b, uri: 'sip:127.0.0.1:5992'}\n"
        "store: {path: state/events.db}\n"
    )
    writer = SqliteWriter(tmp_path / "state" / "calls.db")  # the default: by the event log
    writer.open()
    now = time.time()
    calls = [
        record("x1", "441212000", now - 600, [("a", 503), ("b", 200)]),
        record("x2", "441212001", now - 500, [("a", 200)]),
        record("x3", "331212", now - 400, [("b", 486)]),
        record("x4", "5550000", now - 300, [("a", 200)]),
        record("x5", "12%45", now - 200, [("a", 503), ("b", 503)]),
        record("x6", "1212", now - 100, [("b", 200)]),
        record("old", "1212", now - 3 * 3600, [("b", 200)]),
    ]
    writer.write([call_row(c, 0.0) for c in calls])
    writer.close()
    return tmp_path / "router.yaml"


def json_lines(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[dict[str, object]]:
    assert main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def ids(calls: list[dict[str, object]]) -> list[object]:
    return [c["call_id"] for c in calls]


def test_calls_filters(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = ["calls", "-c", str(filled), "--json"]
    assert ids(json_lines(capsys, c)) == ["old", "x1", "x2", "x3", "x4", "x5", "x6"]
    assert ids(json_lines(capsys, [*c, "--since", "1h"])) == ["x1", "x2", "x3", "x4", "x5", "x6"]
    assert ids(json_lines(capsys, [*c, "--until", "2h"])) == ["old"]
    # --number matches anywhere in the number; % and _ are plain characters
    assert ids(json_lines(capsys, [*c, "--since", "1h", "--number", "1212"])) == [
        "x1", "x2", "x3", "x6",
    ]  # fmt: skip
    assert ids(json_lines(capsys, [*c, "--number", "2%4"])) == ["x5"]
    # --carrier: any attempt at it, the one that answered or one failed over from
    assert ids(json_lines(capsys, [*c, "--since", "1h", "--carrier", "b"])) == [
        "x1", "x3", "x5", "x6",
    ]  # fmt: skip
    assert ids(json_lines(capsys, [*c, "--since", "1h", "--number", "1212", "--carrier", "a"])) == [
        "x1", "x2",
    ]  # fmt: skip
    assert ids(json_lines(capsys, [*c, "--status", "503"])) == ["x5"]
    assert ids(json_lines(capsys, [*c, "--limit", "2"])) == ["x5", "x6"]  # the most recent


def test_calls_json_has_every_attempt(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [x1] = json_lines(capsys, ["calls", "-c", str(filled), "--json", "--number", "441212000"])
    assert x1["status"] == 200 and x1["carrier"] == "b" and x1["plan"] == ["a", "b"]
    attempts = x1["attempts"]
    assert isinstance(attempts, list)
    assert [(a["carrier"], a["status"], a["outcome"], a["failover"]) for a in attempts] == [
        ("a", 503, "trunk_fault", True),
        ("b", 200, "success", False),
    ]
    assert attempts[0]["pdd"] == pytest.approx(0.1) and attempts[0]["duration"] == 0.5
    assert str(x1["started"]).endswith("+00:00") and x1["duration"] == 30.0


def test_calls_table(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "-c", str(filled), "--since", "1h", "--carrier", "b"]) == 0
    out = capsys.readouterr().out
    assert "4 calls" in out and "441212000" in out and "a 503 (trunk_fault) -> b 200" in out
    assert "5550000" not in out
    assert main(["calls", "-c", str(filled), "--number", "999"]) == 0
    assert "no calls" in capsys.readouterr().out


def test_calls_into_a_closed_pipe_ends_without_a_traceback(filled: Path) -> None:
    """``trunkguard calls --json | head -1``: the reader goes away, the command just stops."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "trunkguard", "calls", "-c", str(filled), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


def test_calls_without_a_records_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "router.yaml"
    cfg.write_text(
        "listen: udp:127.0.0.1:0\nallow: [127.0.0.0/8]\n"
        "carriers: [{name: a, uri: 'sip:127.0.0.1:5991'}]\n"
    )
    assert main(["calls", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "no call records at" in err and "calls.db" in err and "Traceback" not in err


def test_calls_from_an_unreachable_postgresql_is_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "router.yaml"
    cfg.write_text(
        "listen: udp:127.0.0.1:0\nallow: [127.0.0.0/8]\n"
        "carriers: [{name: a, uri: 'sip:127.0.0.1:5991'}]\n"
        f"records: {{backend: postgresql, dsn: 'postgresql://tg:hunter2secret@127.0.0.1:{port}/tg'}}\n"
    )
    assert main(["calls", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}/tg" in err and "hunter2secret" not in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------ config

BASE = "listen: udp:127.0.0.1:0\ncarriers: [{name: a, uri: 'sip:127.0.0.1:5991'}]\n"


def test_records_are_on_by_default_in_sqlite_beside_the_event_log(tmp_path: Path) -> None:
    config = parse_config(BASE + "store: {path: st/events.db}\n")
    config._base = tmp_path
    r = config.records
    assert r.enabled and r.backend == "sqlite" and r.retention_seconds() == 30 * 86400
    assert r.sqlite_path(config.base_dir, config.store_path()) == tmp_path / "st" / "calls.db"


@pytest.mark.parametrize(
    ("records", "says"),
    [
        ("{backend: postgresql}", "give exactly one of dsn, dsn_file, dsn_env"),
        ("{dsn: 'postgresql://u:pw-of-test@h/db'}", "dsn is for backend postgresql"),
        ("{retention: 30 days}", "expected a duration like 12h or 30d"),
        ("{retention: 10s}", "at least 60s"),
        ("{max_queue: 10, batch: 100}", "max_queue cannot be smaller than batch"),
        ("{backend: mysql}", "records.backend"),
        ("{batch: 0}", "records.batch"),
    ],
)
def test_records_config_errors_are_clear_lines(records: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + f"records: {records}\n", "r.yaml")
    text = "\n".join(err.value.problems)
    assert says in text and "r.yaml:" in text
    assert "pw-of-test" not in text


def test_the_dsn_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dsn").write_text("postgresql://tg@db:5432/calls\n")
    (tmp_path / "pw").write_text("s3cret-pw\n")
    config = parse_config(
        BASE + "records: {backend: postgresql, dsn_file: dsn, password_file: pw}\n"
    )
    config._base = tmp_path
    assert config.records.postgres_dsn(tmp_path) == ("postgresql://tg@db:5432/calls", "s3cret-pw")
    monkeypatch.setenv("TG_DSN", "postgresql://tg:x@db/calls")
    config = parse_config(BASE + "records: {backend: postgresql, dsn_env: TG_DSN}\n")
    assert config.records.postgres_dsn(tmp_path) == ("postgresql://tg:x@db/calls", None)
    config = parse_config(BASE + "records: {backend: postgresql, dsn_env: TG_NOT_SET}\n")
    with pytest.raises(ConfigError, match="TG_NOT_SET: not set"):
        config.records.postgres_dsn(tmp_path)
    config = parse_config(BASE + "records: {backend: postgresql, dsn: 'mysql://x'}\n")
    with pytest.raises(ConfigError, match="expected postgresql://"):
        config.records.postgres_dsn(tmp_path)
