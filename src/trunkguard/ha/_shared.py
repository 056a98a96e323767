"""Shared target state: one etcd key per target, its value a small JSON record.

Times are wall-clock unix seconds on the wire (each node's monotonic clock is its
own) and are converted on the way in and out. A record that does not parse is
refused with a reason, never half-applied.
"""

from __future__ import annotations

import json
import math
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from ..health import State, StateChange
from ..health._engine import TargetHealth
from ._role import Leader

_OPERATOR = (State.DRAINED, State.FORCED_DOWN)


@dataclass(frozen=True, slots=True)
class TargetRecord:
    state: State
    reason: str
    since: float  # wall clock
    hold_down_until: float | None
    forced_until: float | None
    hold_down: float
    trips: int
    last_trip: float | None
    before_operator: State
    node: str
    seq: int


class BadRecord(ValueError):
    pass


def _wall(mono: float | None, offset: float) -> float | None:
    return None if mono is None else round(mono + offset, 3)


def encode(h: TargetHealth, node: str, seq: int, offset: float) -> bytes:
    """``h`` as its record; ``offset`` is wall clock minus this node's monotonic clock."""
    record = {
        "state": h.state.value,
        "reason": h.reason,
        "since": _wall(h.since, offset),
        "hold_down_until": _wall(h.hold_down_until, offset),
        "forced_until": _wall(h.forced_until, offset),
        "hold_down": h.hold_down,
        "trips": h.trips,
        "last_trip": _wall(h.last_trip, offset),
        "before_operator": h.before_operator.value,
        "node": node,
        "seq": seq,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def _time(data: dict[str, Any], key: str, optional: bool = True) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRecord(f"{key}: not a time")
    return float(value)


def decode(raw: bytes) -> TargetRecord:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRecord("not JSON") from None
    if not isinstance(data, dict):
        raise BadRecord("not a JSON object")
    try:
        state = State(str(data.get("state")))
        before = State(str(data.get("before_operator", "UP")))
    except ValueError:
        raise BadRecord("state: not a target state") from None
    reason, node = data.get("reason"), data.get("node")
    seq, trips = data.get("seq"), data.get("trips", 0)
    if not isinstance(reason, str) or not isinstance(node, str) or not node:
        raise BadRecord("reason and node must be text")
    if not isinstance(seq, int) or not isinstance(trips, int):
        raise BadRecord("seq and trips must be integers")
    since = _time(data, "since", optional=False)
    assert since is not None
    return TargetRecord(
        state=state,
        reason=reason[:500],
        since=since,
        hold_down_until=_time(data, "hold_down_until"),
        forced_until=_time(data, "forced_until"),
        hold_down=_time(data, "hold_down") or 0.0,
        trips=trips,
        last_trip=_time(data, "last_trip"),
        before_operator=before,
        node=node[:64],
        seq=seq,
    )


# -- what a node does with records: pure decisions, the node (``_node``) only carries them out --
def publishes(change: StateChange, serving: bool, adopting: bool) -> bool:
    """Does this node write ``change`` to etcd?

    Never what it is adopting (that would echo another node's record back). An
    operator's move (a drain, a forced-down, and their end) always: it may be made on
    the standby's API. Any other move only while this node serves: a standby's engine
    just follows (its own ticks repeat the active's moves, later).
    """
    if adopting:
        return False
    return serving or change.new in _OPERATOR or change.old in _OPERATOR


def refusal(name: str, record: TargetRecord, node: str, known: Container[str],
            dirty: Container[str]) -> str | None:  # fmt: skip
    """Why ``record`` (the key of target ``name``) is not adopted here, or None: adopt it.

    ``known`` are this node's targets, ``dirty`` the ones whose own change is still on
    its way to etcd (it comes later in etcd's order, so it wins: adopting the older
    record now would flap the target for a moment).
    """
    if record.node == node:
        return "this node's own record"
    if name not in known:
        return "no such target here"
    if name in dirty:
        return "this node's newer change is on its way"
    return None


def on_this_clock(record: TargetRecord, offset: float) -> dict[str, Any]:
    """The keyword arguments of ``HealthEngine.adopt`` for ``record``, times on this node's
    monotonic clock (``offset`` = wall clock minus it), the reason naming the writer."""

    def mono(wall: float | None) -> float | None:
        return None if wall is None else wall - offset

    return {
        "reason": f"{record.reason} (on {record.node})",
        "since": record.since - offset,
        "hold_down_until": mono(record.hold_down_until),
        "forced_until": mono(record.forced_until),
        "hold_down": record.hold_down,
        "trips": record.trips,
        "last_trip": mono(record.last_trip),
        "before_operator": record.before_operator,
    }


def leader_of(
    value: bytes | None, create_revision: int, lease: int | None = None
) -> tuple[Leader | None, bool]:
    """The leader key's value as a Leader (None: no key), and whether it was readable.

    A key whose value names no node is still somebody's leadership (its lease holds
    it): it is a leader named "?", never an absent key a standby would campaign for.
    """
    if value is None:
        return None, True
    try:
        node = json.loads(value).get("node")
    except (ValueError, AttributeError):
        node = None
    if not isinstance(node, str) or not node:
        return Leader("?", create_revision, lease), False
    return Leader(node[:64], create_revision, lease), True
