"""The last failovers: calls that needed more than one attempt, with the plan and each step.

A ``Runtime`` listener that keeps the last ``keep`` such call records (bounded,
oldest dropped) and turns them into what the dashboard and ``GET /api/failovers``
show. Pure apart from the ``wall`` function it is given (the runtime's clock
conversion), so it is tested with hand-made records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ..proxy import CallRecord
from ._views import iso

KEEP = 50


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def failover_view(record: CallRecord, wall: Callable[[float], float]) -> dict[str, Any]:
    steps = []
    for a in record.attempts:
        steps.append(
            {
                "target": a.target,
                "carrier": a.carrier or a.target,
                "attempt": a.attempt,
                "status": a.status,
                "kind": a.kind,
                "class": None if a.verdict is None else a.verdict.klass.value,
                "failover": None if a.verdict is None else a.verdict.failover,
                "ms": _ms(a.ended - a.started),
                "pdd_ms": _ms(a.post_dial_delay),
            }
        )
    return {
        "call_id": record.call_id,
        "number": record.number,
        "source": record.source,
        "at": iso(wall(record.started)),
        "at_unix": round(wall(record.started), 3),
        "plan": list(record.plan),
        "explain": list(record.explain),
        "steps": steps,
        "status": record.status,
        "answered": record.answered is not None,
        "carrier": record.carrier,
        "end": record.end,
    }


class FailoverLog:
    """Keeps the last ``keep`` calls that moved from one target to another."""

    def __init__(
        self,
        wall: Callable[[float], float],
        keep: int = KEEP,
        on_new: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.wall = wall
        self.on_new = on_new
        self._records: deque[dict[str, Any]] = deque(maxlen=keep)

    def feed(self, event: object) -> None:
        """A ``Runtime`` listener: takes call records with more than one attempt."""
        if not isinstance(event, CallRecord) or len(event.attempts) < 2:
            return
        view = failover_view(event, self.wall)
        self._records.append(view)
        if self.on_new is not None:
            self.on_new(view)

    def views(self) -> list[dict[str, Any]]:
        """The kept failovers, newest first."""
        return list(reversed(self._records))
