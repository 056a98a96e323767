"""Per-target figures over a sliding window: calls/s, ASR, ACD and post-dial delay.

Fed with the core's attempt and call records (through ``Runtime.listeners``), read by
the metrics and the dashboard. Pure: every input and every reading carries ``now``, on
the core's clock, so it is tested without sockets or sleeps.

- A *seizure* is an attempt sent to a target; it is *answered* when the target's
  answer was a 2xx. ASR is answered seizures over all seizures in the window (the
  ITU-T E.411 definition; a busy or a no-answer counts against it, as it does for the
  dialer).
- ACD is the mean length of the answered calls that *ended* in the window, counted on
  the target that answered them.
- PDD is the time from our INVITE to the target's first response (100 or 18x); its
  quantiles are those of the latest ``PDD_SAMPLES`` attempts in the window.

Each target keeps at most ``cap`` samples: at a rate that would hold more within the
window, the oldest go first, and the figures cover the shorter span that remains (the
rate is worked out over that span, so it stays right).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

from .proxy import AttemptRecord, CallRecord

WINDOW = 300.0  # seconds
CAP = 20_000  # samples per target and kind
PDD_SAMPLES = 1_000  # the latest post-dial delays the quantiles are taken over


@dataclass(frozen=True, slots=True)
class Figures:
    """One target's figures over the window ending at ``now``; None where there is no sample."""

    seizures: int
    answered: int
    calls_per_s: float
    asr: float | None  # 0..1
    acd: float | None  # seconds
    pdd_p50: float | None  # seconds
    pdd_p95: float | None


class _Target:
    __slots__ = ("answered", "calls", "durations", "first", "seconds")

    def __init__(self) -> None:
        self.calls: deque[tuple[float, bool, float | None]] = deque()  # (ended, answered, pdd)
        self.durations: deque[tuple[float, float]] = deque()  # (ended, seconds)
        self.first: float | None = None  # when the first sample came: the rate's span
        # Running totals of what the deques hold, so a reading needs no pass over them.
        self.answered = 0
        self.seconds = 0.0

    def drop_call(self) -> None:
        if self.calls.popleft()[1]:
            self.answered -= 1

    def drop_duration(self) -> None:
        self.seconds -= self.durations.popleft()[1]
        if not self.durations:
            self.seconds = 0.0  # no float drift survives an empty window


def _quantile(values: list[float], q: float) -> float:
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))]


class TargetStats:
    def __init__(self, window: float = WINDOW, cap: int = CAP) -> None:
        if window <= 0 or cap <= 0:
            raise ValueError("window and cap must be positive")
        self.window = window
        self.cap = cap
        self._targets: dict[str, _Target] = {}

    def _of(self, name: str) -> _Target:
        t = self._targets.get(name)
        if t is None:
            t = self._targets[name] = _Target()
        return t

    def attempt(self, record: AttemptRecord) -> None:
        """An attempt ended: a seizure of its target, answered if the target said 2xx."""
        if record.kind == "budget":
            return  # never sent: the call's time ran out before this target was tried
        t = self._of(record.target)
        if t.first is None:
            t.first = record.started
        answered = record.status is not None and 200 <= record.status < 300
        t.calls.append((record.ended, answered, record.post_dial_delay))
        t.answered += answered
        if len(t.calls) > self.cap:
            t.drop_call()

    def call(self, record: CallRecord) -> None:
        """A call ended: if it was answered, its length counts for the target that answered."""
        if record.answered is None or not record.attempts:
            return
        t = self._of(record.attempts[-1].target)
        seconds = max(record.ended - record.answered, 0.0)
        t.durations.append((record.ended, seconds))
        t.seconds += seconds
        if len(t.durations) > self.cap:
            t.drop_duration()

    def feed(self, event: object) -> None:
        """A ``Runtime`` listener: takes the records, ignores every other event."""
        if isinstance(event, AttemptRecord):
            self.attempt(event)
        elif isinstance(event, CallRecord):
            self.call(event)

    def forget(self, name: str) -> None:
        self._targets.pop(name, None)

    def names(self) -> list[str]:
        return list(self._targets)

    def _trim(self, t: _Target, now: float) -> None:
        start = now - self.window
        calls, durations = t.calls, t.durations
        while calls and calls[0][0] < start:
            t.drop_call()
        while durations and durations[0][0] < start:
            t.drop_duration()

    def figures(self, name: str, now: float) -> Figures:
        t = self._targets.get(name)
        if t is None:
            return Figures(0, 0, 0.0, None, None, None, None)
        f = self.rates(name, now)
        # The quantiles of the latest PDD_SAMPLES in the window: a push of the dashboard
        # sorts a thousand numbers per target, not the whole window's.
        pdds = []
        for _, _, p in reversed(t.calls):
            if p is not None:
                pdds.append(p)
                if len(pdds) >= PDD_SAMPLES:
                    break
        return dataclasses.replace(
            f,
            pdd_p50=_quantile(pdds, 0.5) if pdds else None,
            pdd_p95=_quantile(pdds, 0.95) if pdds else None,
        )

    def rates(self, name: str, now: float) -> Figures:
        """The figures but the PDD quantiles (None): in constant time, for every scrape."""
        t = self._targets.get(name)
        if t is None:
            return Figures(0, 0, 0.0, None, None, None, None)
        self._trim(t, now)
        start = now - self.window
        calls, durations = t.calls, t.durations
        seizures = len(calls)
        answered = t.answered
        # Over the window, or the part of it since the first sample, or since the oldest
        # kept when the cap cut it: whichever is shortest.
        since = max(start, t.first if t.first is not None else now)
        if seizures >= self.cap:
            since = max(since, calls[0][0])
        span = max(now - since, 1.0)
        return Figures(
            seizures=seizures,
            answered=answered,
            calls_per_s=seizures / span if seizures else 0.0,
            asr=answered / seizures if seizures else None,
            acd=t.seconds / len(durations) if durations else None,
            pdd_p50=None,
            pdd_p95=None,
        )
