"""A call record as it is stored: one row per call, one row per attempt.

The core hands out a :class:`~trunkguard.proxy.CallRecord` with its times on the
event loop's monotonic clock. :func:`call_row` turns it into plain tuples with
wall-clock times (Unix seconds), on the loop, and nothing more: it must cost a
few microseconds. Everything else (keys, JSON, timestamps the database wants)
is done by the writer, in its own thread.

An attempt's *outcome* is the class the failure table gave it (``trunk_fault``,
``destination_final``...), or, when it got no verdict, how it ended
(``cancelled``, ``budget``). Its *duration* is from our INVITE to its end; its
*PDD* from our INVITE to the carrier's first response (100 or 18x).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..proxy import CallRecord


class AttemptRow(NamedTuple):
    attempt: int  # 1, 2... in the order the call tried them
    target: str
    carrier: str
    status: int | None  # None: no response (timeout, unreachable)
    kind: str  # "response", "timeout", "unreachable", "cancelled", "budget"
    outcome: str  # the verdict's class, or the kind when there was no verdict
    failover: bool  # whether this attempt's outcome moved the call on
    started: float  # wall clock
    ended: float
    pdd: float | None  # seconds from our INVITE to the first 100/18x

    @property
    def duration(self) -> float:
        return self.ended - self.started


class CallRow(NamedTuple):
    call_id: str
    number: str
    source: str
    plan: tuple[str, ...]  # the targets the plan offered, in order
    status: int  # the final status the caller got
    carrier: str | None  # who answered, if anyone did
    started: float  # wall clock
    answered: float | None
    ended: float
    end: str  # how it ended: "bye from caller", "failed", "cancelled"...
    attempts: tuple[AttemptRow, ...]

    @property
    def duration(self) -> float | None:
        """Seconds from the answer to the end; None for a call that was not answered."""
        return None if self.answered is None else self.ended - self.answered


_new = tuple.__new__  # a NamedTuple's own __new__ is a Python call: this is half the cost


def call_row(record: CallRecord, offset: float) -> CallRow:
    """``record`` with wall-clock times (``offset``: wall clock minus the core's clock)."""
    attempts = []
    for a in record.attempts:
        verdict = a.verdict
        first = a.first_response
        attempts.append(
            _new(
                AttemptRow,
                (
                    a.attempt,
                    a.target,
                    a.carrier or a.target,
                    a.status,
                    a.kind,
                    # The class itself: a StrEnum is its value, without .value's lookup.
                    a.kind if verdict is None else verdict.klass,
                    False if verdict is None else verdict.failover,
                    a.started + offset,
                    a.ended + offset,
                    None if first is None else first - a.started,
                ),
            )
        )
    answered = record.answered
    return _new(
        CallRow,
        (
            record.call_id,
            record.number,
            record.source,
            record.plan,
            record.status,
            record.carrier,
            record.started + offset,
            None if answered is None else answered + offset,
            record.ended + offset,
            record.end,
            tuple(attempts),
        ),
    )


def row_json(row: CallRow, iso: Any) -> dict[str, Any]:
    """``row`` as ``trunkguard calls --json`` prints it; ``iso`` formats a wall-clock time."""

    def when(t: float | None) -> str | None:
        return None if t is None else str(iso(t))

    return {
        "call_id": row.call_id,
        "number": row.number,
        "source": row.source,
        "plan": list(row.plan),
        "status": row.status,
        "carrier": row.carrier,
        "started": when(row.started),
        "answered": when(row.answered),
        "ended": when(row.ended),
        "duration": None if row.duration is None else round(row.duration, 3),
        "end": row.end,
        "attempts": [
            {
                "attempt": a.attempt,
                "target": a.target,
                "carrier": a.carrier,
                "status": a.status,
                "kind": a.kind,
                "outcome": a.outcome,
                "failover": a.failover,
                "started": when(a.started),
                "ended": when(a.ended),
                "pdd": None if a.pdd is None else round(a.pdd, 4),
                "duration": round(a.duration, 4),
            }
            for a in row.attempts
        ],
    }
