"""What the admin API says about a target, a state change and a logged event, as JSON.

The health engine keeps its times on the event loop's monotonic clock; an
operator reads wall-clock times. Every time leaves here as ISO 8601 in UTC,
converted through the runtime, the one place that knows the offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..health import StateChange, TargetHealth
from ..runtime import Runtime
from ..store import EventRow

JSON = dict[str, Any]


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


def _iso_mono(runtime: Runtime, mono: float | None) -> str | None:
    return None if mono is None else iso(runtime._wall(mono))


def _since(runtime: Runtime, h: TargetHealth) -> float:
    # A target that never moved still has the engine's initial ``since`` of 0.0,
    # which is no moment on the loop's clock: it has been in its state since the start.
    if h.since == 0.0 and h.reason == "start":
        return runtime._clock
    return h.since


def registration_views(runtime: Runtime, now: float) -> JSON:
    """Every carrier's registration: state, why, expiry; never a credential."""
    return {c: reg.view(now) for c, reg in runtime.registrations.by_carrier.items()}


def _silence_view(runtime: Runtime, name: str, now: float) -> JSON:
    """``silent``: why new calls are held back now ("silent 21 ms, usually 2 ms"), or None;
    ``silence``: the threshold that applies (None before enough samples) and the episodes."""
    health = runtime.health
    times = health.targets[name].silence.times
    limit = health.silence_threshold(name)
    return {
        "silent": health.silenced(name, now),
        "silence": {
            "threshold_ms": None if limit is None else round(limit * 1000, 1),
            "usual_ms": round(times.quantile(0.5) * 1000, 1) if len(times) else None,
            "samples": len(times),
            "episodes": health.targets[name].silence.episodes,
        },
    }


def target_view(runtime: Runtime, name: str, now: float) -> JSON:
    h = runtime.health.targets[name]
    since = _since(runtime, h)
    target = next((t for t in runtime.proxy.targets if t.name == name), None)
    carrier = target.carrier if target is not None else name
    extra: JSON = {}
    if target is not None:
        extra["carrier"] = carrier
        extra["destination"] = str(target.flow) if target.flow.addr[1] else None
    reg = runtime.registrations.by_carrier.get(carrier)
    if reg is not None:
        extra["registration"] = reg.view(now)
    if carrier in runtime.dns_errors:
        extra["dns"] = runtime.dns_errors[carrier]
    return {
        **extra,
        "name": name,
        "state": h.state.value,
        "since": iso(runtime._wall(since)),
        "for_seconds": round(max(now - since, 0.0), 3),
        "reason": h.reason,
        "consecutive_faults": h.consecutive_faults,
        "window": {"failures": sum(1 for ok in h.window if not ok), "size": len(h.window)},
        "trips": h.trips,
        "hold_down_until": _iso_mono(runtime, h.hold_down_until),
        "forced_until": _iso_mono(runtime, h.forced_until),
        "calls_up": h.capacity.active,
        "response_timeout_ms": round(h.timer.timeout() * 1000),
        **_silence_view(runtime, name, now),
        "attempts": h.attempts,
        "faults": h.faults,
    }


def change_view(runtime: Runtime, change: StateChange) -> JSON:
    return {
        "target": change.target,
        "old": change.old.value,
        "new": change.new.value,
        "reason": change.reason,
        "at": iso(runtime._wall(change.at)),
        "counts": dict(change.counts),
        "hold_down": change.hold_down,
    }


def event_view(row: EventRow) -> JSON:
    return {
        "id": row.id,
        "at": iso(row.at),
        "at_unix": row.at,
        "target": row.target,
        "old": row.old,
        "new": row.new,
        "reason": row.reason,
        "counts": row.counts,
        "hold_down": row.hold_down,
        "until": None if row.until is None else iso(row.until),
    }
