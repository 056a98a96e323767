"""Shared target state, pure: the record codec, what a node publishes, what it adopts, the
leader key's value. No etcd, no loop: the node (``_node``) only carries these out.

Two health engines stand for two nodes, each with its own monotonic clock; a record
goes from one to the other through ``encode`` / ``decode`` as it would through etcd.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkguard.ha import Leader
from trunkguard.ha._shared import (
    BadRecord,
    TargetRecord,
    decode,
    encode,
    leader_of,
    on_this_clock,
    publishes,
    refusal,
)
from trunkguard.health import HealthEngine, State, StateChange

UP, DOWN, DRAINED, FORCED, PROBING, SUSPECT = (
    State.UP, State.DOWN, State.DRAINED, State.FORCED_DOWN, State.PROBING, State.SUSPECT,
)  # fmt: skip
# Wall clock minus each node's monotonic clock: r1's booted 1000 s after r2's.
R1_OFFSET, R2_OFFSET = 1_700_000_000.0, 1_700_001_000.0


def _tripped(engine: HealthEngine, now: float) -> None:
    engine.gate("x", "3 OPTIONS timeouts", now)  # a trip with a hold-down, as a fault would


def _travel(engine: HealthEngine, seq: int = 1) -> TargetRecord:
    return decode(encode(engine.targets["x"], "r1", seq, R1_OFFSET))


# -- the codec -----------------------------------------------------------------------------
def test_a_tripped_target_travels_with_its_hold_down_on_the_other_clock() -> None:
    r1 = HealthEngine(["x"])
    _tripped(r1, 100.0)
    h1 = r1.targets["x"]
    assert h1.state is DOWN and h1.hold_down_until is not None and h1.trips == 1
    record = _travel(r1)
    assert record.state is DOWN and record.node == "r1" and record.trips == 1
    assert record.since == pytest.approx(100.0 + R1_OFFSET)
    assert record.hold_down_until == pytest.approx(h1.hold_down_until + R1_OFFSET, abs=0.001)
    r2 = HealthEngine(["x"])
    now2 = 100.0 + R1_OFFSET - R2_OFFSET + 0.2  # the same instant, 0.2 s later, on r2's clock
    [change] = r2.adopt("x", record.state, now2, **on_this_clock(record, R2_OFFSET))
    h2 = r2.targets["x"]
    assert (change.old, change.new) == (UP, DOWN)
    assert change.reason == "3 OPTIONS timeouts (on r1)"
    # The same instants, each on its own clock: the hold-down ends when r1's does.
    assert h2.since + R2_OFFSET == pytest.approx(h1.since + R1_OFFSET, abs=0.001)
    assert h2.hold_down_until is not None
    ends = h1.hold_down_until + R1_OFFSET
    assert h2.hold_down_until + R2_OFFSET == pytest.approx(ends, abs=0.001)
    assert (h2.hold_down, h2.trips) == (h1.hold_down, h1.trips)
    assert h2.last_trip is not None and h1.last_trip is not None
    assert h2.last_trip + R2_OFFSET == pytest.approx(h1.last_trip + R1_OFFSET, abs=0.001)
    # r2's own timer ends it (the gate is r1's: adoption brings the state, not the gate).
    assert r2.tick(h2.hold_down_until - 0.01) == []
    assert [c.new for c in r2.tick(h2.hold_down_until)] == [PROBING]


def test_a_drain_keeps_what_it_interrupted() -> None:
    r1 = HealthEngine(["x"])
    _tripped(r1, 10.0)
    r1.drain("x", 11.0)
    record = _travel(r1)
    assert record.state is DRAINED and record.before_operator is DOWN
    r2 = HealthEngine(["x"])
    r2.adopt("x", record.state, 5.0, **on_this_clock(record, R2_OFFSET))
    assert r2.targets["x"].before_operator is DOWN
    # Restored there, it comes back by PROBING like any target that was out for its health.
    assert [c.new for c in r2.restore("x", 6.0)] == [PROBING]


def test_the_record_is_small_json_with_wall_clock_times() -> None:
    r1 = HealthEngine(["x"])
    r1.force_down("x", until=160.0, now=100.0, reason="drill")
    data = json.loads(encode(r1.targets["x"], "r1", 42, R1_OFFSET))
    assert set(data) == {
        "state", "reason", "since", "hold_down_until", "forced_until", "hold_down", "trips",
        "last_trip", "before_operator", "node", "seq",
    }  # fmt: skip
    assert data["state"] == "FORCED_DOWN" and data["seq"] == 42 and data["node"] == "r1"
    assert data["forced_until"] == round(160.0 + R1_OFFSET, 3)
    assert data["hold_down_until"] is None and data["last_trip"] is None


def test_long_text_is_cut_not_refused() -> None:
    raw = json.dumps(
        {"state": "DOWN", "reason": "r" * 2000, "node": "n" * 200, "seq": 1, "since": 5}
    ).encode()
    record = decode(raw)
    assert len(record.reason) == 500 and len(record.node) == 64
    assert record.hold_down == 0.0 and record.trips == 0 and record.before_operator is UP


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"7", "not a JSON object"),
        (b'{"state":"UP","reason":"x","node":"r1","seq":1}', "since: not a time"),
        (b'{"state":"UP","reason":"x","node":"r1","seq":1,"since":true}', "since: not a time"),
        (b'{"state":"UP","reason":"x","node":"r1","seq":1,"since":1,"forced_until":"x"}',
         "forced_until: not a time"),
        (b'{"state":"UP","reason":"x","node":"r1","seq":1.5,"since":1}', "integers"),
        (b'{"state":"UP","reason":"x","node":"r1","seq":1,"since":1,"trips":"2"}', "integers"),
        (b'{"state":"UP","reason":"x","node":"r1","seq":1,"since":1,"before_operator":"NO"}',
         "not a target state"),
        (b'{"state":"UP","reason":"x","node":7,"seq":1,"since":1}', "must be text"),
    ],
)  # fmt: skip
def test_each_bad_field_is_named(raw: bytes, why: str) -> None:
    with pytest.raises(BadRecord, match=why):
        decode(raw)


def test_infinite_and_nan_times_are_refused() -> None:
    # Python's json reads Infinity and NaN: a time must still be finite.
    for value in ("Infinity", "-Infinity", "NaN"):
        raw = f'{{"state":"UP","reason":"x","node":"r1","seq":1,"since":{value}}}'.encode()
        with pytest.raises(BadRecord, match="not a time"):
            decode(raw)


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_refused_with_bad_record(raw: bytes) -> None:
    try:
        record = decode(raw)
    except BadRecord:
        return
    assert isinstance(record.state, State) and math.isfinite(record.since)


@given(
    st.sampled_from(list(State)),
    st.floats(0, 1e6),
    st.one_of(st.none(), st.floats(0, 1e6)),
    st.integers(0, 1000),
)
def test_encode_then_decode_keeps_every_field(
    state: State, since: float, until: float | None, trips: int
) -> None:
    engine = HealthEngine(["x"])
    h = engine.targets["x"]
    h.state, h.since, h.trips, h.reason = state, since, trips, "why"
    h.hold_down_until = until
    record = decode(encode(h, "r9", 3, 0.0))
    assert (record.state, record.trips, record.reason, record.node, record.seq) == (
        state, trips, "why", "r9", 3,
    )  # fmt: skip
    assert record.since == pytest.approx(since, abs=0.001)
    assert (record.hold_down_until is None) == (until is None)


# -- what a node publishes -------------------------------------------------------------------
def _change(old: State, new: State) -> StateChange:
    return StateChange("x", old, new, "why", 1.0)


@pytest.mark.parametrize(
    ("old", "new", "serving", "adopting", "out"),
    [
        (UP, DOWN, True, False, True),  # the active's health engine: always
        (UP, DOWN, False, False, False),  # a standby's: it only follows
        (DOWN, PROBING, False, False, False),
        (UP, SUSPECT, False, False, False),
        (UP, DRAINED, False, False, True),  # an operator's move on the standby's API
        (DRAINED, UP, False, False, True),  # ...and its end
        (FORCED, PROBING, False, False, True),  # a forced-down's revert
        (UP, FORCED, False, False, True),
        (UP, DOWN, True, True, False),  # adopted: never echoed back
        (UP, DRAINED, False, True, False),
    ],
)  # fmt: skip
def test_what_a_node_publishes(
    old: State, new: State, serving: bool, adopting: bool, out: bool
) -> None:
    assert publishes(_change(old, new), serving, adopting) is out


# -- what a node adopts ----------------------------------------------------------------------
def _record(node: str = "r2") -> TargetRecord:
    raw = json.dumps({"state": "DOWN", "reason": "x", "node": node, "seq": 1, "since": 5})
    return decode(raw.encode())


def test_what_a_node_adopts() -> None:
    known, none = {"x", "y"}, set[str]()
    assert refusal("x", _record("r2"), "r1", known, none) is None
    assert refusal("x", _record("r1"), "r1", known, none) == "this node's own record"
    assert refusal("z", _record("r2"), "r1", known, none) == "no such target here"
    assert refusal("x", _record("r2"), "r1", known, {"x"}) == (
        "this node's newer change is on its way"
    )
    assert refusal("y", _record("r2"), "r1", known, {"x"}) is None


# -- the leader key --------------------------------------------------------------------------
def test_the_leader_keys_value() -> None:
    assert leader_of(None, 0) == (None, True)
    value = json.dumps({"node": "r2", "since": 1.0, "lease": "abc"}).encode()
    assert leader_of(value, 17) == (Leader("r2", 17), True)
    # Unreadable, it is still somebody's key: never an absent one to campaign for.
    for bad in (b"", b"junk", b"[1]", b'{"node": 3}', b'{"node": ""}', b'{"other": "r2"}'):
        assert leader_of(bad, 9) == (Leader("?", 9), False), bad
