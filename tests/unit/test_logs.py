"""Log lines: JSON objects with the structured fields, the bounded writer, one line per call."""

from __future__ import annotations

import io
import json
import logging
import queue

import pytest

from trunkguard.config import ConfigError, parse_config
from trunkguard.logs import (
    CallLog,
    JsonFormatter,
    LogPipe,
    _BoundedQueueHandler,
    attempts_text,
    call_pdd,
)
from trunkguard.proxy import AttemptRecord, CallRecord


def _record(msg: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object):
    rec = logging.LogRecord("trunkguard.test", logging.WARNING, __file__, 1, msg, args, None)
    rec.created = 1_700_000_000.25
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_json_line_has_ts_level_logger_message_and_the_fields() -> None:
    line = JsonFormatter().format(_record(call_id="abc", status=200))
    out = json.loads(line)
    assert out == {
        "ts": "2023-11-14T22:13:20.250Z",
        "level": "warning",
        "logger": "trunkguard.test",
        "message": "hello world",
        "call_id": "abc",
        "status": 200,
    }
    assert "\n" not in line


def test_json_keeps_an_exception_as_text_and_odd_fields_as_strings() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = _record(exc_info=sys.exc_info(), where=object())
    out = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in out["exc"]
    assert out["where"].startswith("<object object")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_pipe_writes_every_line_through_its_thread(fmt: str) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    pipe = LogPipe("info", fmt, stream=stream)
    try:
        log = logging.getLogger("trunkguard.test")
        for i in range(200):
            log.info("line %d", i, extra={"n": i})
        log.debug("not at info")
    finally:
        pipe.stop()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 200
    if fmt == "json":
        assert [json.loads(x)["n"] for x in lines] == list(range(200))
    else:
        assert lines[0].endswith("INFO trunkguard.test: line 0")


def test_a_full_queue_drops_counts_and_says_so_when_there_is_room() -> None:
    q: queue.Queue[logging.LogRecord] = queue.Queue(2)
    handler = _BoundedQueueHandler(q)
    for i in range(5):
        handler.handle(_record("n %d", (i,)))  # never blocks
    assert q.qsize() == 2 and handler.dropped == 3
    q.get_nowait()
    q.get_nowait()
    handler.handle(_record("after", ()))
    first, second = q.get_nowait(), q.get_nowait()
    assert first.getMessage() == "3 log line(s) dropped: the log could not keep up"
    assert first.dropped == 3  # type: ignore[attr-defined]
    assert second.getMessage() == "after"
    assert handler.dropped == 0


def _attempt(target: str, status: int | None, kind: str, started: float, first: float | None):
    return AttemptRecord(
        call_id="c1",
        target=target,
        attempt=1,
        status=status,
        kind=kind,
        verdict=None,
        started=started,
        ended=started + 0.1,
        first_response=first,
        carrier=target,
    )


CALL = CallRecord(
    call_id="c1@host",
    number="15551234567",
    source="10.0.0.5",
    plan=("a", "b", "c"),
    explain=("", "", ""),
    attempts=(
        _attempt("a", 503, "response", 100.0, 100.02),
        _attempt("b", None, "timeout", 100.1, None),
        _attempt("c", 200, "response", 100.5, 100.6),
    ),
    status=200,
    started=100.0,
    answered=101.0,
    ended=131.5,
    end="bye from caller",
)


def test_attempts_are_compact_and_pdd_is_what_the_caller_waited() -> None:
    assert attempts_text(CALL) == "a:503 b:timeout c:200"
    assert call_pdd(CALL) == pytest.approx(0.6)  # to c's first response, failover included


def test_one_info_line_per_call_with_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="trunkguard.calls"):
        CallLog()(CALL)
        CallLog()(CALL.attempts[0])  # not a call: nothing
    (rec,) = caplog.records
    assert rec.levelno == logging.INFO
    assert rec.getMessage() == (
        "call c1@host: 15551234567 from 10.0.0.5: 200 via c; attempts a:503 b:timeout c:200; "
        "pdd 600 ms; duration 30.5s; end bye from caller"
    )
    out = json.loads(JsonFormatter().format(rec))
    assert {k: out[k] for k in ("call_id", "number", "status", "carrier", "attempts")} == {
        "call_id": "c1@host",
        "number": "15551234567",
        "status": 200,
        "carrier": "c",
        "attempts": "a:503 b:timeout c:200",
    }
    assert out["pdd_ms"] == 600 and out["duration_s"] == 30.5 and out["end"] == "bye from caller"


def test_an_unanswered_call_has_no_carrier_nor_duration(caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    failed = dataclasses.replace(
        CALL, attempts=CALL.attempts[:2], status=500, answered=None, end="failed"
    )
    with caplog.at_level(logging.INFO, logger="trunkguard.calls"):
        CallLog()(failed)
    (rec,) = caplog.records
    assert "500;" in rec.getMessage() and "duration -" in rec.getMessage()
    assert rec.carrier is None and rec.duration_s is None  # type: ignore[attr-defined]


BASE = "listen: udp:127.0.0.1:5060\ncarriers: [{name: a, uri: 'sip:127.0.0.1:5071'}]\n"


def test_log_settings_default_and_validation() -> None:
    config = parse_config(BASE, "t.yaml")
    assert (config.log.format, config.log.calls) == ("text", False)
    config = parse_config(BASE + "log: {format: json, calls: true}\n", "t.yaml")
    assert (config.log.format, config.log.calls) == ("json", True)
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE + "log: {format: xml}\n", "t.yaml")
    (line,) = exc.value.problems
    assert line.startswith("t.yaml:3: log.format:") and "'text' or 'json'" in line


def test_admin_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE + "admin: {token_env: TG_UNIT_TOKEN}\n"
    monkeypatch.delenv("TG_UNIT_TOKEN", raising=False)
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "t.yaml")
    assert exc.value.problems == [
        "t.yaml:3: admin: token_env: that variable is not set in the environment, or empty"
    ]
    monkeypatch.setenv("TG_UNIT_TOKEN", "0123456789abcdef-secret")
    config = parse_config(text, "t.yaml")
    assert config.admin.token == "0123456789abcdef-secret"
    assert "0123456789abcdef-secret" not in repr(config)
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE + "admin: {token_env: TG_UNIT_TOKEN, token: x}\n", "t.yaml")
    assert "give token or token_env, not both" in exc.value.problems[0]
