"""A router restart keeps a dead carrier out: its state comes back from the event log.

One carrier on a loopback port nobody listens on: its OPTIONS meet ICMP port unreachable
and it goes DOWN for a 60 s hold-down. The router is stopped (SIGTERM) and a new one
starts on the same working directory, hence the same event log. It must say it restored
the carrier as DOWN, and must not log the carrier UP again (nor anything else: the
hold-down is far from over) while its probes keep failing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import free_udp_port, udp_port_bound

from trunkguard.store import EventRow, EventStore

pytestmark = pytest.mark.e2e

TEST_BUDGET = 15.0  # seconds, for the whole test
DOWN_WITHIN = 5.0  # first probe within 0.5 s, ICMP back at once
SECOND_RUN = 1.5  # the new router's probes every 0.5 s: at least two of them fail

EXTRA: dict[str, object] = {
    "health": {"hold_down": 60},
    "probe": {"interval": 0.5, "interval_out": 0.5, "timeout": 0.3},
}


def read_events(db: Path) -> list[EventRow]:
    store = EventStore(db)
    try:
        return store.events()
    finally:
        store.close()


def wait_for_down(db: Path, target: str, timeout: float) -> EventRow:
    deadline = time.monotonic() + timeout
    while True:
        for row in read_events(db):
            if row.target == target and row.new == "DOWN":
                return row
        if time.monotonic() > deadline:
            raise AssertionError(f"{target} not DOWN in the event log within {timeout}s")
        time.sleep(0.05)


def test_a_down_carrier_is_still_down_after_a_restart(tmp_path: Path) -> None:
    started = time.monotonic()
    workdir = tmp_path / "router"
    db = workdir / "events.db"
    port = free_udp_port()

    first = RouterProcess(workdir, [("a", port)], extra=EXTRA)
    with first:
        assert not udp_port_bound(port), "somebody listens on the carrier port"
        down = wait_for_down(db, "a", DOWN_WITHIN)
    assert first.returncode == 0, first.log()
    assert (down.old, down.new) == ("UP", "DOWN")
    assert "unreachable" in down.reason
    assert down.hold_down is not None
    assert 54.0 <= down.hold_down <= 66.0  # 60 s +/- the default 10 % jitter
    assert down.until == pytest.approx(down.at + down.hold_down)
    assert first.counters.get("state:a:DOWN") == 1, first.counters
    before = read_events(db)
    assert all(r.target == "a" for r in before)
    assert before[-1].new == "DOWN", before  # nothing after it: the hold-down is long
    first_log = first.log_path.read_text(errors="replace")
    assert "restored as" not in first_log  # a fresh log has nothing to restore

    second = RouterProcess(workdir, [("a", port)], extra=EXTRA)
    assert second.log_path == first.log_path  # same workdir: the log is appended to
    with second:
        time.sleep(SECOND_RUN)
    assert second.returncode == 0, second.log()
    second_log = second.log_path.read_text(errors="replace")[len(first_log) :]
    assert "a restored as DOWN (a unreachable" in second_log, second_log
    assert "a restored as DOWN" in second.log()

    # The new router probed the carrier and the probes failed, yet nothing moved it.
    assert second.counters.get("probes_failed:a", 0) >= 2, second.counters
    assert not any(k.startswith("state:") for k in second.counters), second.counters
    after = read_events(db)
    assert after == before
    assert not [r for r in after if r.target == "a" and r.new == "UP"]
    assert not re.search(r"\ba: [A-Z_]+ -> ", second_log)  # no state change logged anew

    assert time.monotonic() - started < TEST_BUDGET
