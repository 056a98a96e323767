"""``trunkguard events``: the event log as a table or JSON, run as the operator runs it.

Each test fills an event log through EventStore and runs ``python -m trunkguard events``
in a subprocess, with TZ=UTC so that the times it prints (local time) are predictable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trunkguard.health import State, StateChange
from trunkguard.store import EventStore

RUN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def events(*args: str, cwd: Path | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "trunkguard", "events", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=cwd,
        env={**os.environ, "TZ": "UTC"},
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def record(
    store: EventStore,
    target: str,
    old: State,
    new: State,
    reason: str,
    at: float,
    *,
    hold_down: float | None = None,
    until: float | None = None,
    counts: dict[str, int] | None = None,
) -> int:
    return store.record(
        StateChange(target, old, new, reason, 0.0, counts or {}, hold_down), at, until
    )


def stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass(frozen=True)
class Logged:
    path: Path
    now: float  # wall clock when the log was written


@pytest.fixture
def logged(tmp_path: Path) -> Logged:
    """Four events: two hours ago, 70 minutes ago, and in the last two minutes."""
    path = tmp_path / "events.db"
    now = time.time()
    store = EventStore(path)
    counts = {"consecutive_faults": 5, "window_failures": 5, "window_size": 5, "trips": 1}
    record(store, "old", State.UP, State.DRAINED, "drained by operator", now - 7200)
    record(
        store,
        "a",
        State.UP,
        State.DOWN,
        "5 consecutive 503 from a",
        now - 4200,
        hold_down=30.0,
        until=now - 4170,
        counts=counts,
    )
    record(store, "a", State.DOWN, State.PROBING, "hold-down of 30s over", now - 120)
    record(store, "b", State.UP, State.SUSPECT, "3 INVITEs unanswered after 2000 ms", now - 60)
    store.close()
    return Logged(path, now)


def lines(result: Result) -> list[str]:
    assert result.code == 0, result.err
    assert result.err == ""
    return result.out.splitlines()


def row_pattern(target: str, old: str, new: str, reason: str) -> re.Pattern[str]:
    return re.compile(
        rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}}  {re.escape(target)}\s+"
        rf"{old} -> {new}\s+{re.escape(reason)}"
    )


# --------------------------------------------------------------------------- the table


def test_the_table_lists_every_event_oldest_first(logged: Logged) -> None:
    out = lines(events("--db", str(logged.path)))
    assert len(out) == 4
    expected = [
        ("old", "UP", "DRAINED", "drained by operator"),
        ("a", "UP", "DOWN", "5 consecutive 503 from a"),
        ("a", "DOWN", "PROBING", "hold-down of 30s over"),
        ("b", "UP", "SUSPECT", "3 INVITEs unanswered after 2000 ms"),
    ]
    for line, (target, old, new, reason) in zip(out, expected, strict=True):
        assert row_pattern(target, old, new, reason).match(line), line
    assert out[1].endswith("5 consecutive 503 from a (hold-down 30s)")
    assert "hold-down" not in out[0]
    assert out[0].startswith(stamp(logged.now - 7200))
    assert out[3].startswith(stamp(logged.now - 60))


def test_an_empty_log_says_so(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    EventStore(path).close()
    assert lines(events("--db", str(path))) == ["no events"]


def test_target_filters(logged: Logged) -> None:
    out = lines(events("--db", str(logged.path), "--target", "a"))
    assert len(out) == 2
    assert row_pattern("a", "UP", "DOWN", "5 consecutive").match(out[0])
    assert row_pattern("a", "DOWN", "PROBING", "hold-down of 30s over").match(out[1])
    assert lines(events("--db", str(logged.path), "--target", "zz")) == ["no events"]


def test_since_an_hour_leaves_out_older_events(logged: Logged) -> None:
    out = lines(events("--db", str(logged.path), "--since", "1h"))
    assert len(out) == 2
    assert row_pattern("a", "DOWN", "PROBING", "hold-down").match(out[0])
    assert row_pattern("b", "UP", "SUSPECT", "3 INVITEs").match(out[1])
    assert len(lines(events("--db", str(logged.path), "--since", "90m"))) == 3
    assert len(lines(events("--db", str(logged.path), "--since", "1d"))) == 4
    assert len(lines(events("--db", str(logged.path), "--since", "90s"))) == 1


def test_until_and_since_make_a_window(logged: Logged) -> None:
    out = lines(events("--db", str(logged.path), "--until", "1h"))
    assert [line.split()[2] for line in out] == ["old", "a"]
    out = lines(events("--db", str(logged.path), "--since", "100m", "--until", "1h"))
    assert len(out) == 1
    assert row_pattern("a", "UP", "DOWN", "5 consecutive").match(out[0])


def test_since_an_iso_time(logged: Logged) -> None:
    iso = datetime.fromtimestamp(logged.now - 600, UTC).isoformat()
    out = lines(events("--db", str(logged.path), "--since", iso))
    assert len(out) == 2
    naive = datetime.fromtimestamp(logged.now - 600, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert len(lines(events("--db", str(logged.path), "--since", naive))) == 2  # local = UTC


def test_limit_gives_the_most_recent(logged: Logged) -> None:
    out = lines(events("--db", str(logged.path), "--limit", "2"))
    assert len(out) == 2
    assert row_pattern("a", "DOWN", "PROBING", "hold-down").match(out[0])
    assert row_pattern("b", "UP", "SUSPECT", "3 INVITEs").match(out[1])


# --------------------------------------------------------------------------- JSON


def test_json_has_every_field(logged: Logged) -> None:
    result = events("--db", str(logged.path), "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert isinstance(rows, list)
    assert len(rows) == 4
    keys = {"id", "at", "target", "old", "new", "reason", "counts", "hold_down", "until"}
    assert all(set(r) == keys for r in rows)
    down = rows[1]
    assert (down["target"], down["old"], down["new"]) == ("a", "UP", "DOWN")
    assert down["reason"] == "5 consecutive 503 from a"
    assert down["at"] == pytest.approx(logged.now - 4200)
    assert down["hold_down"] == 30.0
    assert down["until"] == pytest.approx(logged.now - 4170)
    assert down["counts"] == {
        "consecutive_faults": 5,
        "window_failures": 5,
        "window_size": 5,
        "trips": 1,
    }
    assert (rows[0]["hold_down"], rows[0]["until"], rows[0]["counts"]) == (None, None, {})
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_json_with_filters_and_no_match(logged: Logged) -> None:
    result = events("--db", str(logged.path), "--json", "--target", "b", "--since", "1h")
    assert [r["new"] for r in json.loads(result.out)] == ["SUSPECT"]
    result = events("--db", str(logged.path), "--json", "--target", "nobody")
    assert result.code == 0
    assert json.loads(result.out) == []


# --------------------------------------------------------------------------- errors


def test_a_missing_file_is_a_clear_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "events.db"
    result = events("--db", str(path))
    assert result.code == 1
    assert result.out == ""
    assert result.err.strip() == f"trunkguard: no event log at {path}"
    assert not path.exists()
    assert not path.parent.exists()


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value", ["yesterday", "10x", "-5m", "m", "2026-13-45"])
def test_a_bad_time_is_a_clear_error(logged: Logged, option: str, value: str) -> None:
    result = events("--db", str(logged.path), f"{option}={value}")  # = for "-5m"
    assert result.code != 0
    assert "Traceback" not in result.err
    assert result.out == ""
    assert result.err.strip() == (
        f"trunkguard: {value!r}: expected 10m, 2h, 1d or an ISO date/time"
    )


def test_a_file_that_is_not_an_event_log_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database, it is a text file of some length\n" * 20)
    result = events("--db", str(path))
    assert result.code == 1
    assert "Traceback" not in result.err
    assert str(path) in result.err
    assert result.err.startswith("trunkguard: ")


def test_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = events("--db", str(tmp_path))
    assert result.code == 1
    assert "Traceback" not in result.err
    assert str(tmp_path) in result.err


# --------------------------------------------------------------------------- -c CONFIG


def write_config(path: Path, store_path: Path) -> Path:
    path.write_text(
        "listen: udp:127.0.0.1:5060\n"
        "allow: [127.0.0.0/8]\n"
        "carriers:\n"
        '  - {name: a, uri: "sip:127.0.0.1:5071"}\n'
        f'store: {{path: "{store_path}"}}\n'
    )
    return path


def test_config_names_the_event_log(logged: Logged, tmp_path: Path) -> None:
    config = write_config(tmp_path / "router.yaml", logged.path)
    out = lines(events("-c", str(config), "--target", "b"))
    assert len(out) == 1
    assert row_pattern("b", "UP", "SUSPECT", "3 INVITEs").match(out[0])
    assert lines(events("--config", str(config))) == lines(events("--db", str(logged.path)))


def test_config_whose_event_log_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "var" / "events.db"
    config = write_config(tmp_path / "router.yaml", missing)
    result = events("-c", str(config))
    assert result.code == 1
    assert result.err.strip() == f"trunkguard: no event log at {missing}"
    assert not missing.exists()


def test_a_bad_config_is_reported_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("listen: udp:127.0.0.1:5060\ncarriers: []\n")
    result = events("-c", str(config))
    assert result.code == 2
    assert "Traceback" not in result.err
    assert f"{config}:2: carriers:" in result.err


# --------------------------------------------------------------------------- a live log


def test_reads_a_log_the_router_holds_open(tmp_path: Path) -> None:
    """The router keeps its store open for as long as it runs; each change is visible at once."""
    path = tmp_path / "events.db"
    store = EventStore(path)
    try:
        now = time.time()
        record(store, "a", State.UP, State.DOWN, "a unreachable: port unreachable", now)
        out = lines(events("--db", str(path)))
        assert len(out) == 1
        assert row_pattern("a", "UP", "DOWN", "a unreachable: port unreachable").match(out[0])
        record(store, "a", State.DOWN, State.PROBING, "hold-down of 30s over", now + 1)
        assert len(lines(events("--db", str(path)))) == 2
    finally:
        store.close()
