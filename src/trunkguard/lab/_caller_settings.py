"""Settings of a call generator run, checked when they are made."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..sip import TimerConfig


@dataclass(frozen=True)
class GeneratorSettings:
    """How many calls, how fast, how long each one lasts, and where they go.

    Give ``duration`` (seconds of call starts), ``calls`` (how many), or both
    (whichever ends first). The run lasts at most ``window + hold + timeout``.
    """

    target: tuple[str, int]
    rate: float  # calls started per second
    duration: float | None = None
    calls: int | None = None
    hold: float = 1.0  # answered calls hang up this long after the 2xx
    number: str = "15551234567"  # user part of the Request-URI
    number_for: Callable[[int], str] | None = None  # per call index, instead of ``number``
    timeout: float = 32.0  # no final response by then: the call hung
    cancel_after: float | None = None  # the caller hangs up this long after its INVITE
    expect: frozenset[int] = frozenset()  # non-2xx finals that count as a good outcome
    bind: str = "127.0.0.1"
    timers: TimerConfig = field(default_factory=TimerConfig)

    def __post_init__(self) -> None:
        if not self.rate > 0 or math.isinf(self.rate):
            raise ValueError(f"rate: must be positive calls per second, not {self.rate}")
        if self.duration is None and self.calls is None:
            raise ValueError("duration or calls: give at least one")
        if self.duration is not None and not 0 < self.duration < math.inf:
            raise ValueError(f"duration: must be positive seconds, not {self.duration}")
        if self.calls is not None and self.calls < 1:
            raise ValueError(f"calls: must be at least 1, not {self.calls}")
        if not 0 <= self.hold < math.inf:
            raise ValueError(f"hold: must be zero or more seconds, not {self.hold}")
        if not 0 < self.timeout < math.inf:
            raise ValueError(f"timeout: must be positive seconds, not {self.timeout}")
        if self.cancel_after is not None and not 0 <= self.cancel_after < math.inf:
            raise ValueError(f"cancel_after: must be zero or more seconds, not {self.cancel_after}")
        if not self.number:
            raise ValueError("number: must not be empty")
        host, port = self.target
        if not host or not 0 < port < 65536:
            raise ValueError(f"target: not a host and port: {self.target!r}")

    @property
    def planned(self) -> int:
        """Calls the schedule holds: one every 1/rate seconds, all starting inside the window."""
        counts = []
        if self.calls is not None:
            counts.append(self.calls)
        if self.duration is not None:
            # Slot k starts at k/rate; only slots strictly inside the duration are used.
            counts.append(max(1, math.ceil(self.duration * self.rate - 1e-9)))
        return min(counts)

    @property
    def window(self) -> float:
        """Seconds during which calls may start (a start late by a stall may not go past it)."""
        ends = []
        if self.calls is not None:
            ends.append(self.calls / self.rate)
        if self.duration is not None:
            ends.append(self.duration)
        return min(ends)

    @property
    def bound(self) -> float:
        """The longest a run can last: every call started in the window has ended by then."""
        return self.window + self.hold + self.timeout

    def number_of(self, index: int) -> str:
        return self.number_for(index) if self.number_for is not None else self.number
