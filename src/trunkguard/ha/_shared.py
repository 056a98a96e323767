"""Shared target state: one etcd key per target, its value a small JSON record.

Times are wall-clock unix seconds on the wire (each node's monotonic clock is its
own) and are converted on the way in and out. A record that does not parse is
refused with a reason, never half-applied.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..health import State
from ..health._engine import TargetHealth


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
