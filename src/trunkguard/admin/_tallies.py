"""What the metrics count as events go by: per-target calls, answers, outcomes, PDD.

Pure and quick: a listener on ``Runtime.listeners`` (:meth:`Tallies.feed`) that
adds to plain integers, with no lock, no label lookup and no allocation after a
target's first record. The collector in ``_metrics`` reads them at scrape time,
and only for the targets that exist then, so a target a reload or DNS removed
stops appearing (:meth:`Tallies.keep_only` forgets it).

Labels are bounded by construction: targets (from the config), outcome classes
(``OutcomeClass``), attempt kinds and call ends (fixed sets in the core). A
value outside the known set is counted under ``other``, never as a new label.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from ..health import OutcomeClass
from ..proxy import AttemptRecord, CallRecord

# Post-dial delay buckets, seconds: a carrier's 100/18x comes in tens of milliseconds
# when well, in seconds when it struggles; invite_timeout defaults to 2 s.
PDD_BUCKETS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
CLASSES: tuple[str, ...] = tuple(c.value for c in OutcomeClass)
FAULT_KINDS: tuple[str, ...] = ("response", "timeout", "unreachable")
# How a call ended, as the core says it (CallRecord.end), answered calls folded into one.
CALL_ENDS: tuple[str, ...] = (
    "answered",
    "destination_final",
    "no_answer",
    "failed",
    "cancelled",
    "refused",
)
_END_OF = {
    "destination final": "destination_final",
    "no answer": "no_answer",
    "failed": "failed",
    "cancelled": "cancelled",
    "refused": "refused",
}
_TRUNK_FAULT = OutcomeClass.TRUNK_FAULT


class TargetTally:
    """One target's counts since it appeared (or since the process started)."""

    __slots__ = (
        "answers",
        "calls",
        "faults",
        "outcomes",
        "overflow",
        "pdd_buckets",
        "pdd_count",
        "pdd_sum",
    )

    def __init__(self) -> None:
        self.calls = 0  # attempts sent to it
        self.answers = 0  # of which it answered 2xx
        self.outcomes = dict.fromkeys(CLASSES, 0)  # by the verdict's class
        self.faults = dict.fromkeys(FAULT_KINDS, 0)  # trunk faults, by how the attempt ended
        self.overflow = 0  # calls whose plan skipped it as full
        self.pdd_buckets = [0] * (len(PDD_BUCKETS) + 1)  # not cumulative; the last is +Inf
        self.pdd_sum = 0.0
        self.pdd_count = 0

    def cumulative(self) -> list[tuple[str, float]]:
        """The PDD histogram's buckets as Prometheus wants them: cumulative, ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*map(_le, PDD_BUCKETS), "+Inf"), self.pdd_buckets, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


def _le(bound: float) -> str:
    return repr(bound)


class Tallies:
    def __init__(self) -> None:
        self.targets: dict[str, TargetTally] = {}
        self.calls_ended = dict.fromkeys((*CALL_ENDS, "other"), 0)

    def _of(self, name: str) -> TargetTally:
        t = self.targets.get(name)
        if t is None:
            t = self.targets[name] = TargetTally()
        return t

    def feed(self, event: object) -> None:
        """A ``Runtime`` listener: takes the attempt and call records, ignores the rest."""
        if isinstance(event, AttemptRecord):
            self.attempt(event)
        elif isinstance(event, CallRecord):
            self.call(event)

    def attempt(self, record: AttemptRecord) -> None:
        if record.kind == "budget":
            return  # never sent: the call's time ran out before this target was tried
        t = self._of(record.target)
        t.calls += 1
        status = record.status
        if status is not None and 200 <= status < 300:
            t.answers += 1
        verdict = record.verdict
        if verdict is not None:
            klass = verdict.klass
            t.outcomes[klass.value] += 1
            if klass is _TRUNK_FAULT:
                kind = record.kind if record.kind in t.faults else "response"
                t.faults[kind] += 1
        pdd = record.post_dial_delay
        if pdd is not None:
            pdd = max(pdd, 0.0)
            t.pdd_buckets[bisect_left(PDD_BUCKETS, pdd)] += 1
            t.pdd_sum += pdd
            t.pdd_count += 1

    def call(self, record: CallRecord) -> None:
        end = "answered" if record.answered is not None else _END_OF.get(record.end, "other")
        self.calls_ended[end] += 1
        for name in record.overflow:
            self._of(name).overflow += 1

    def keep_only(self, names: Iterable[str]) -> None:
        """Forget every target not in ``names`` (removed by a reload or by DNS)."""
        keep = set(names)
        for name in [n for n in self.targets if n not in keep]:
            del self.targets[name]

    def of(self, name: str) -> TargetTally:
        """A target's tally; a fresh, zero one (not stored) for a target with no record yet."""
        t = self.targets.get(name)
        return t if t is not None else TargetTally()
