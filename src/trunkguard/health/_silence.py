"""Silence: a carrier that has stopped answering, judged against its own first-response times.

The adaptive timer (``_rto``) decides when one call gives up on a carrier;
it is floored at 0.3 s, and a carrier turns SUSPECT only once several INVITEs
are past it, so at 50 calls/s a carrier that died still gets some 18 new
calls first. Yet a carrier that answers every INVITE with 100 Trying within
2 ms, and has said nothing for 20 ms to an INVITE still waiting, is already
an outlier by its own measure. That is *silence*:

- Each first response (100/18x, or any response) to an INVITE is a sample;
  the last ``silence_window`` of them make the carrier's normal. Its
  threshold is ``silence_margin`` x the ``silence_quantile`` of them, never
  below ``silence_floor``. Before ``silence_min_samples`` samples there is
  no threshold, and no silence: the router behaves as it did without it.
- The clock is the oldest INVITE that is still *waiting*: unanswered, sent
  after the newest INVITE the carrier did answer (an older one unanswered
  is a lost packet, not a silent carrier), and still inside its adaptive
  timer (past it, its call has moved on and the usual rules own it: it
  counts toward SUSPECT like any late INVITE).
- A silent carrier gets no new calls while an INVITE waits on it (plans put
  it last); calls already waiting on it keep their adaptive timer, so a
  carrier only slow for a moment loses nothing. When its waiting INVITEs
  have passed their timer and it still has not answered, one new call may
  go, and the next waits for that one: one at a time, which gives the usual
  rule its late INVITEs (three make it SUSPECT) without a burst of calls.
- The episode ends when the carrier answers anything, when it leaves UP
  (SUSPECT, DOWN...: the usual path took over), or when its unanswered
  INVITEs are forgotten (2 x ``invite_timeout``) with no answer.
- The router's own lateness must not look like a carrier's silence: when
  the engine's timer fires late (more than ``CONFIRM`` past the moment the
  INVITE crossed its threshold, so the loop was busy), it confirms the
  silence one loop turn later, so the answers sitting in our socket are read
  first; and the proxy does not run the check at all while its loop is
  stalled or overloaded (see ``Proxy._on_health_timer``).

Invariant (tested with Hypothesis): a target with no INVITE unanswered since
its last answer and older than its threshold is never reported silent.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

CONFIRM = 0.001  # seconds: a timer this late re-checks one loop turn later before acting
NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class SilenceEvent:
    """A silence episode started (``silent``) or ended (``heard``, or ``over``)."""

    target: str
    state: str
    detail: str
    at: float


@dataclass(slots=True)
class ResponseTimes:
    """The last ``size`` first-response times, in arrival order and sorted (for quantiles)."""

    size: int = 100
    order: deque[float] = field(default_factory=deque)
    ranked: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.order.append(seconds)
        bisect.insort(self.ranked, seconds)
        while len(self.order) > self.size:
            old = self.order.popleft()
            del self.ranked[bisect.bisect_left(self.ranked, old)]

    def resize(self, size: int) -> None:
        self.size = size
        while len(self.order) > size:
            old = self.order.popleft()
            del self.ranked[bisect.bisect_left(self.ranked, old)]

    def __len__(self) -> int:
        return len(self.order)

    def quantile(self, q: float) -> float:
        ranked = self.ranked
        return ranked[min(len(ranked) - 1, int(q * len(ranked)))]


@dataclass(slots=True)
class Silence:
    """One target's silence state; the engine moves it."""

    times: ResponseTimes = field(default_factory=ResponseTimes)
    heard_sent: float = NEVER  # when the newest INVITE the target answered was sent
    seen: float | None = None  # a silence first seen then, waiting for CONFIRM
    since: float | None = None  # the silent episode started then
    episodes: int = 0


def threshold(
    times: ResponseTimes, *, floor: float, margin: float, quantile: float, min_samples: int
) -> float | None:
    """How long an INVITE may wait before the target counts as silent; None: too few samples."""
    if len(times) < min_samples:
        return None
    return max(floor, margin * times.quantile(quantile))


def waiting_since(
    outstanding: dict[int, float], heard_sent: float, timer: float, now: float
) -> float | None:
    """When the oldest INVITE still waiting was sent: unanswered, sent after ``heard_sent``
    and still inside its adaptive ``timer`` at ``now``; None when none is.

    ``outstanding`` is in the order the INVITEs left, which is the order of their times.
    The window's edge is ``started + timer > now``, the very sum the engine's deadline
    uses, so the deadline and this check never disagree by a rounding.
    """
    for started in outstanding.values():
        if started > heard_sent and started + timer > now:
            return started
    return None


def oldest_unanswered(outstanding: dict[int, float], silence: Silence) -> float | None:
    """When the oldest INVITE unanswered since the target's last answer was sent (any
    age, until the engine forgets it); None when there is none."""
    for started in outstanding.values():
        if started > silence.heard_sent:
            return started
    return None


def ms(seconds: float) -> str:
    """``21 ms``, ``0.4 ms``: whole milliseconds, one decimal below 10."""
    value = seconds * 1000
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"
