"""Restart: target states come back from the event log, on the new process's clock.

Each test drives a first Runtime through state changes, closes it, builds a second one
on the same event log and starts it with another monotonic origin, as a new process
would. The wall clock is the runtime module's ``time.time``, replaced by a clock the
test moves, so remaining hold-downs are exact. Nothing is sent: the carriers are
loopback ports nobody listens on, probes are disabled, and the proxy's outbox is only
checked to be empty.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import trunkguard.runtime as runtime_module
from trunkguard.config import parse_config
from trunkguard.health import State, StateChange
from trunkguard.runtime import Runtime
from trunkguard.store import EventRow, EventStore

W0 = 1_700_000_000.0  # the wall clock when the first router starts
HOLD = 60.0
NAMES = ["a", "b", "c", "d", "e", "f"]


class FakeWall:
    """Stands in for the ``time`` module inside trunkguard.runtime: ``time()`` only."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> FakeWall:
    clock = FakeWall(W0)
    monkeypatch.setattr(runtime_module, "time", clock)
    return clock


def config_text(db: Path) -> str:
    carriers = "\n".join(
        f'  - {{name: {n}, uri: "sip:127.0.0.1:{5991 + i}"}}' for i, n in enumerate(NAMES)
    )
    return f"""\
listen: udp:127.0.0.1:0
allow: [127.0.0.0/8]
carriers:
{carriers}
health: {{hold_down: {HOLD}, hold_down_jitter: 0}}
probe: {{enabled: false}}
store: {{path: "{db}"}}
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "events.db"


class Routers:
    """Builds runtimes on one event log and closes whatever is still open at the end."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.open: list[Runtime] = []

    def new(self) -> Runtime:
        rt = Runtime(parse_config(config_text(self.db), "test.yaml"))
        self.open.append(rt)
        return rt

    def close(self, rt: Runtime) -> None:
        assert rt.proxy.outbox == [], "these tests must not send anything"
        rt.close()
        self.open.remove(rt)

    def close_all(self) -> None:
        for rt in list(self.open):
            self.close(rt)


@pytest.fixture
def routers(db: Path) -> Iterator[Routers]:
    r = Routers(db)
    yield r
    r.close_all()


def apply(rt: Runtime, changes: list[StateChange]) -> list[StateChange]:
    assert changes, "the move should have changed something"
    rt.proxy.apply_health_changes(changes)
    rt.pump()  # what the router's loop does after the input
    return changes


def trip(rt: Runtime, name: str, now: float) -> StateChange:
    (change,) = apply(rt, rt.health.unreachable(name, now, "port unreachable"))
    assert change.new is State.DOWN
    return change


def make_suspect(rt: Runtime, name: str, now: float) -> StateChange:
    """Three INVITEs unanswered past the timer (invite_timeout before any sample)."""
    for _ in range(3):
        rt.health.attempt_started(name, now)
    (change,) = apply(rt, rt.health.tick(now + 2.0))
    assert (change.target, change.new) == (name, State.SUSPECT)
    return change


def run_timers(rt: Runtime, now: float) -> None:
    """What the event loop does at ``now``: the core's due timers, the health timer among them."""
    rt.proxy.run_timers(now)
    rt.pump()


def state(rt: Runtime, name: str) -> State:
    return rt.health.state(name)


def log_of(db: Path, target: str | None = None) -> list[EventRow]:
    store = EventStore(db)
    try:
        return store.events(target)
    finally:
        store.close()


def moves(rows: list[EventRow]) -> list[tuple[str, str, str]]:
    return [(r.target, r.old, r.new) for r in rows]


# --------------------------------------------------------------------------- DOWN


def test_down_comes_back_down_with_the_remaining_hold_down(
    routers: Routers, wall: FakeWall, db: Path
) -> None:
    first = routers.new()
    first.start(1000.0)
    wall.now = W0 + 10
    trip(first, "a", 1010.0)  # DOWN at W0+10 until W0+70
    (row,) = log_of(db, "a")
    assert (row.at, row.hold_down, row.until) == (W0 + 10, HOLD, W0 + 70)
    routers.close(first)

    wall.now = W0 + 30  # the new process starts 20 s into the 60 s hold-down
    second = routers.new()
    second.start(5.0)  # a new monotonic origin, far from the first one's
    h = second.health.targets["a"]
    assert h.state is State.DOWN
    assert h.hold_down_until == pytest.approx(5.0 + 40.0)  # not 60 fresh, not 0
    assert h.reason.startswith("restored after restart: a unreachable")
    assert not second.health.admits("a")

    run_timers(second, 44.9)
    assert state(second, "a") is State.DOWN
    run_timers(second, 45.0)  # the restart armed the health timer for the remaining 40 s
    assert state(second, "a") is State.PROBING
    routers.close(second)

    rows = log_of(db, "a")
    assert moves(rows) == [("a", "UP", "DOWN"), ("a", "DOWN", "PROBING")]
    assert rows[1].at == pytest.approx(W0 + 70)  # on the wall clock: when the hold-down ended
    assert rows[1].reason == "hold-down of 60s over"


def test_down_also_ends_by_the_engine_tick(routers: Routers, wall: FakeWall) -> None:
    first = routers.new()
    first.start(1000.0)
    trip(first, "a", 1000.0)
    routers.close(first)
    wall.now = W0 + 45
    second = routers.new()
    second.start(300.0)
    assert second.health.tick(314.9) == []
    (change,) = second.health.tick(315.0)
    assert (change.target, change.old, change.new) == ("a", State.DOWN, State.PROBING)


def test_an_expired_hold_down_comes_back_probing_at_the_first_timer(
    routers: Routers, wall: FakeWall, db: Path
) -> None:
    first = routers.new()
    first.start(1000.0)
    trip(first, "a", 1000.0)  # DOWN until W0+60
    routers.close(first)

    wall.now = W0 + 100  # the router was off for longer than the hold-down
    second = routers.new()
    second.start(7.0)
    assert state(second, "a") is State.DOWN  # as logged, until its timer runs
    assert second.health.targets["a"].hold_down_until is not None
    assert second.health.targets["a"].hold_down_until <= 7.0
    run_timers(second, 7.0)  # the very first timer run, not a hold-down later
    assert state(second, "a") is State.PROBING
    routers.close(second)
    assert moves(log_of(db, "a")) == [("a", "UP", "DOWN"), ("a", "DOWN", "PROBING")]


def test_a_restored_down_target_that_trips_again_gets_a_doubled_hold_down(
    routers: Routers, wall: FakeWall
) -> None:
    """The trip before the restart still counts: a flapping carrier is not forgiven."""
    first = routers.new()
    first.start(1000.0)
    trip(first, "a", 1000.0)
    routers.close(first)
    wall.now = W0 + 30
    second = routers.new()
    second.start(0.0)
    run_timers(second, 30.0)
    assert state(second, "a") is State.PROBING
    again = trip(second, "a", 31.0)  # 61 s after the first trip, within hold_down_window
    assert again.hold_down == pytest.approx(2 * HOLD)


# --------------------------------------------------------------------------- operator


def test_drained_stays_drained(routers: Routers, wall: FakeWall) -> None:
    first = routers.new()
    first.start(1000.0)
    first.drain("b", 1000.0)
    routers.close(first)

    wall.now = W0 + 3600
    second = routers.new()
    second.start(50.0)
    assert state(second, "b") is State.DRAINED
    assert not second.health.admits("b")
    run_timers(second, 50.0 + 86_400)
    assert state(second, "b") is State.DRAINED
    (back,) = second.restore("b", 50.0 + 86_400)
    assert (back.old, back.new) == (State.DRAINED, State.UP)


def test_forced_down_keeps_its_revert_time(routers: Routers, wall: FakeWall, db: Path) -> None:
    first = routers.new()
    first.start(1000.0)
    wall.now = W0 + 5
    first.force_down("c", 300.0, 1005.0, "maintenance window")  # until W0+305
    (row,) = log_of(db, "c")
    assert (row.new, row.reason, row.until) == ("FORCED_DOWN", "maintenance window", W0 + 305)
    routers.close(first)

    wall.now = W0 + 105
    second = routers.new()
    second.start(20.0)
    h = second.health.targets["c"]
    assert h.state is State.FORCED_DOWN
    assert h.forced_until == pytest.approx(20.0 + 200.0)
    run_timers(second, 219.9)
    assert state(second, "c") is State.FORCED_DOWN
    run_timers(second, 220.0)
    assert state(second, "c") is State.UP  # it was UP when it was forced down
    routers.close(second)
    rows = log_of(db, "c")
    assert moves(rows) == [("c", "UP", "FORCED_DOWN"), ("c", "FORCED_DOWN", "UP")]
    assert rows[1].reason == "forced-down period over"
    assert rows[1].at == pytest.approx(W0 + 305)


def test_a_down_target_forced_down_comes_back_through_probing_after_a_restart(
    routers: Routers, wall: FakeWall, db: Path
) -> None:
    """DOWN is left only through PROBING, restart or not."""
    first = routers.new()
    first.start(1000.0)
    trip(first, "c", 1000.0)
    first.force_down("c", 120.0, 1001.0, "carrier maintenance")
    routers.close(first)

    wall.now = W0 + 11
    second = routers.new()
    second.start(0.0)
    assert state(second, "c") is State.FORCED_DOWN
    run_timers(second, 110.0)
    assert state(second, "c") is State.PROBING
    routers.close(second)
    assert moves(log_of(db, "c"))[-1] == ("c", "FORCED_DOWN", "PROBING")


def test_a_down_target_drained_comes_back_through_probing_after_a_restart(
    routers: Routers, wall: FakeWall
) -> None:
    first = routers.new()
    first.start(1000.0)
    trip(first, "b", 1000.0)
    first.force_down("b", 600.0, 1001.0, "maintenance")
    first.drain("b", 1002.0)  # DOWN -> FORCED_DOWN -> DRAINED
    routers.close(first)

    wall.now = W0 + 5
    second = routers.new()
    second.start(0.0)
    assert state(second, "b") is State.DRAINED
    (back,) = second.restore("b", 1.0)
    assert (back.old, back.new) == (State.DRAINED, State.PROBING)


def test_an_up_target_drained_comes_back_up_after_a_restart(
    routers: Routers, wall: FakeWall
) -> None:
    first = routers.new()
    first.start(1000.0)
    first.drain("b", 1000.0)
    routers.close(first)
    second = routers.new()
    second.start(0.0)
    (back,) = second.restore("b", 1.0)
    assert (back.old, back.new) == (State.DRAINED, State.UP)


# --------------------------------------------------------------------------- UP, SUSPECT


def test_up_targets_stay_up_and_suspect_comes_back_up(
    routers: Routers, wall: FakeWall, db: Path
) -> None:
    first = routers.new()
    first.start(1000.0)
    make_suspect(first, "e", 1000.0)
    first.drain("d", 1001.0)
    first.restore("d", 1002.0)  # d's last event says UP
    routers.close(first)
    assert log_of(db, "d")[-1].new == "UP"
    assert log_of(db, "e")[-1].new == "SUSPECT"

    wall.now = W0 + 10
    second = routers.new()
    second.start(0.0)
    for name in ("d", "e", "f"):  # f has no event at all
        assert state(second, name) is State.UP, name
        assert second.health.admits(name)
    assert second.health.targets["e"].reason.startswith("restored after restart:")
    run_timers(second, 3600.0)
    assert all(state(second, n) is State.UP for n in ("d", "e", "f"))
    routers.close(second)
    assert log_of(db, "f") == []


# --------------------------------------------------------------------------- everything


def test_every_state_at_once_and_every_event_in_the_log_with_its_reason(
    routers: Routers, wall: FakeWall, db: Path
) -> None:
    first = routers.new()
    first.start(1000.0)
    trip(first, "a", 1000.0)  # until W0+60
    first.drain("b", 1000.0)
    first.force_down("c", 300.0, 1000.0, "maintenance window")  # until W0+300
    make_suspect(first, "e", 1000.0)
    routers.close(first)

    wall.now = W0 + 20
    second = routers.new()
    second.start(500.0)
    assert {n: state(second, n) for n in NAMES} == {
        "a": State.DOWN,
        "b": State.DRAINED,
        "c": State.FORCED_DOWN,
        "d": State.UP,
        "e": State.UP,
        "f": State.UP,
    }
    assert second.health.targets["a"].hold_down_until == pytest.approx(540.0)
    assert second.health.targets["c"].forced_until == pytest.approx(780.0)
    run_timers(second, 540.0)
    run_timers(second, 780.0)
    assert (state(second, "a"), state(second, "c")) == (State.PROBING, State.UP)
    routers.close(second)

    rows = log_of(db)
    assert [(r.target, r.old, r.new, r.reason) for r in rows] == [
        ("a", "UP", "DOWN", "a unreachable: port unreachable"),
        ("b", "UP", "DRAINED", "drained by operator"),
        ("c", "UP", "FORCED_DOWN", "maintenance window"),
        ("e", "UP", "SUSPECT", "3 INVITEs unanswered after 2000 ms"),
        ("a", "DOWN", "PROBING", "hold-down of 60s over"),
        ("c", "FORCED_DOWN", "UP", "forced-down period over"),
    ]
    assert rows[0].counts["trips"] == 1
    assert [r.at for r in rows] == sorted(r.at for r in rows)


def test_restore_on_the_real_clock(routers: Routers, db: Path) -> None:
    """Without the fake clock: the conversion uses the real wall clock at both ends."""
    first = routers.new()
    origin = time.monotonic()
    first.start(origin)
    trip(first, "a", origin)
    routers.close(first)
    (row,) = log_of(db, "a")
    assert row.until is not None
    assert row.until - row.at == pytest.approx(HOLD)
    assert abs(row.at - time.time()) < 5.0

    second = routers.new()
    second.start(10.0)
    until = second.health.targets["a"].hold_down_until
    assert until is not None
    assert 10.0 + HOLD - 5.0 < until <= 10.0 + HOLD
