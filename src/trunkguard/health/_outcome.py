"""What an attempt's result means: the failure table of ARCHITECTURE.md as data.

The proxy asks one question of every finished attempt, "which class is this?",
and acts on the class alone: fail over or relay, count against the target or
not. Which codes fall in which class is a default table that config can
override globally and per carrier ("this carrier sends 480 when congested").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class OutcomeClass(StrEnum):
    SUCCESS = "success"
    TRUNK_FAULT = "trunk_fault"  # fail over, counts against the target
    ROUTE_MISMATCH = "route_mismatch"  # fail over, the target is fine (no common codec)
    DESTINATION_FINAL = "destination_final"  # relay to the caller, no failover
    NEUTRAL = "neutral"  # caller cancelled


@dataclass(frozen=True, slots=True)
class Verdict:
    klass: OutcomeClass
    failover: bool
    counts_against: bool
    alarm: bool = False  # e.g. 401/403/407 from a carrier: its account or our config is wrong


_POLICY: dict[OutcomeClass, tuple[bool, bool]] = {
    OutcomeClass.SUCCESS: (False, False),
    OutcomeClass.TRUNK_FAULT: (True, True),
    OutcomeClass.ROUTE_MISMATCH: (True, False),
    OutcomeClass.DESTINATION_FINAL: (False, False),
    OutcomeClass.NEUTRAL: (False, False),
}

T, M, F = OutcomeClass.TRUNK_FAULT, OutcomeClass.ROUTE_MISMATCH, OutcomeClass.DESTINATION_FINAL

# The default table (ARCHITECTURE.md, "Failure semantics").
DEFAULT_STATUS_CLASSES: dict[int, OutcomeClass] = {
    408: T, 500: T, 502: T, 503: T, 504: T,
    401: T, 403: T, 407: T,
    488: M, 606: M,
    404: F, 480: F, 484: F, 486: F, 600: F, 603: F, 604: F,
    487: OutcomeClass.NEUTRAL,
}  # fmt: skip

AUTH_ALARM_CODES = frozenset({401, 403, 407})

# Local failures that never produced a response.
TIMEOUT = "timeout"  # no 100/18x within invite_timeout, or Timer B
UNREACHABLE = "unreachable"  # ICMP port unreachable, TCP refused or reset


def _fallback(status: int) -> OutcomeClass:
    # Codes the table does not name: a 5xx is the trunk's trouble, anything
    # else (3xx, other 4xx, 6xx) is the destination's answer.
    if 200 <= status < 300:
        return OutcomeClass.SUCCESS
    if 500 <= status < 600:
        return T
    return F


class FailureTable:
    """The default table plus overrides; ``classify`` is all the proxy calls."""

    __slots__ = ("_table",)

    def __init__(self, overrides: Mapping[int, OutcomeClass] | None = None) -> None:
        self._table = dict(DEFAULT_STATUS_CLASSES)
        if overrides:
            self._table.update(overrides)

    def with_overrides(self, overrides: Mapping[int, OutcomeClass]) -> FailureTable:
        if not overrides:
            return self
        table = FailureTable(self._table)
        table._table.update(overrides)
        return table

    def klass(self, status: int) -> OutcomeClass:
        found = self._table.get(status)
        return found if found is not None else _fallback(status)

    def classify(self, status: int) -> Verdict:
        klass = self.klass(status)
        failover, counts = _POLICY[klass]
        alarm = klass is OutcomeClass.TRUNK_FAULT and status in AUTH_ALARM_CODES
        return Verdict(klass, failover, counts, alarm)

    @staticmethod
    def local_failure(kind: str) -> Verdict:
        """A timeout or an unreachable port: always a trunk fault."""
        del kind
        return Verdict(OutcomeClass.TRUNK_FAULT, True, True)

    def rows(self) -> list[tuple[int, OutcomeClass, Verdict]]:
        return [(code, k, self.classify(code)) for code, k in sorted(self._table.items())]
