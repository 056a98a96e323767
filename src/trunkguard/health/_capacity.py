"""Capacity of one target: concurrent calls and new calls per second.

A full target is skipped as *overflow*: it is healthy, so this is never a
fault and never moves its state. New calls take a token from a bucket that
refills at ``max_cps`` per second (bursts up to one second's worth).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Capacity:
    max_calls: int | None = None
    max_cps: float | None = None
    active: int = 0
    tokens: float = 0.0
    stamp: float | None = None
    taken: int = 0  # calls ever started (a node's usage rate, for shared capacity)

    def _refill(self, now: float) -> None:
        if self.max_cps is None:
            return
        if self.stamp is None:
            self.tokens = self.max_cps
        else:
            self.tokens = min(self.max_cps, self.tokens + (now - self.stamp) * self.max_cps)
        self.stamp = now

    def full(self, now: float) -> str | None:
        """Why a new call cannot go to this target now, or None if it can."""
        if self.max_calls is not None and self.active >= self.max_calls:
            return f"{self.active} calls up, limit {self.max_calls}"
        if self.max_cps is not None:
            self._refill(now)
            if self.tokens < 1.0:
                return f"over {self.max_cps:g} new calls per second"
        return None

    def take(self, now: float) -> None:
        self.active += 1
        self.taken += 1
        if self.max_cps is not None:
            self._refill(now)
            self.tokens -= 1.0

    def release(self) -> None:
        if self.active > 0:
            self.active -= 1
