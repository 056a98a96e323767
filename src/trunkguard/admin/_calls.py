"""``GET /api/calls``: the calls in progress, as the core lists them, with wall-clock times."""

from __future__ import annotations

from collections.abc import Mapping

from ..runtime import Runtime
from ._input import BadInput
from ._views import JSON, iso

CALLS_DEFAULT = 1000
CALLS_MAX = 10_000


def calls_limit(query: Mapping[str, str]) -> int:
    """``?limit=`` (1 to 10000, default 1000); no other parameter."""
    unknown = sorted(k for k in query if k != "limit")
    if unknown:
        raise BadInput(unknown[0], "unknown parameter (expected limit)")
    raw = query.get("limit")
    if raw is None:
        return CALLS_DEFAULT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= CALLS_MAX:
        raise BadInput("limit", f"expected a whole number from 1 to {CALLS_MAX}, got {raw!r}")
    return int(raw)


def calls_view(runtime: Runtime, limit: int, now: float) -> JSON:
    """Calls in setup first, then answered ones, oldest first in each; at most ``limit``."""
    # One more than asked: whether the list was cut short, without counting them all.
    calls = runtime.proxy.calls_in_progress(limit + 1)
    truncated = len(calls) > limit
    out = []
    for c in calls[:limit]:
        out.append(
            {
                "call_id": c.call_id,
                "number": c.number,
                "source": c.source,
                "state": c.state,
                "target": c.target,
                "attempt": c.attempt,
                "started": iso(runtime._wall(c.started)),
                "answered": None if c.answered is None else iso(runtime._wall(c.answered)),
                "for_seconds": round(max(now - c.started, 0.0), 3),
            }
        )
    return {"calls": out, "count": len(out), "truncated": truncated, "now": iso(runtime._wall(now))}
