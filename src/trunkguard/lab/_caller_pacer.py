"""When the next call may start: a steady rate, by schedule, without catch-up bursts.

Call ``k`` is due at ``origin + k / rate``. Computing each start from the
schedule, not by waiting 1/rate after the previous one, keeps small timer lag
from adding up over a run. A start that comes late by more than half an
interval (the event loop stalled) moves the schedule instead: the calls missed
during a stall are not fired together to catch up, so consecutive starts are
always at least half an interval apart. No start goes past the window, so a
stall costs calls, never time.
"""

from __future__ import annotations


class Pacer:
    __slots__ = ("end", "interval", "limit", "origin", "slips", "started")

    def __init__(self, rate: float, now: float, *, window: float, limit: int) -> None:
        self.interval = 1.0 / rate
        self.origin = now
        self.end = now + window
        self.limit = limit
        self.started = 0
        self.slips = 0  # times a late start moved the schedule

    def next_start(self) -> float | None:
        """When the next call is due; None once the schedule is over."""
        if self.started >= self.limit:
            return None
        when = self.origin + self.started * self.interval
        # The epsilon absorbs float error in the last slot of an exact window.
        return when if when < self.end - 1e-9 else None

    def take(self, now: float) -> bool:
        """Whether a call starts now (at most one per due slot)."""
        when = self.next_start()
        if when is None or now < when:
            return False
        if now >= self.end - 1e-9:
            self.limit = self.started  # stalled past the window: the schedule is over
            return False
        late = now - when
        if late > self.interval / 2:
            self.origin += late
            self.slips += 1
        self.started += 1
        return True
