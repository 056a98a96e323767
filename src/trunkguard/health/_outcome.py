"""What an attempt's result means: the failure table of ARCHITECTURE.md as data.

The proxy asks one question of every finished attempt, "which class is this?",
and acts on the class alone: fail over or relay, count against the target or
not. Which codes fall in which class is a default table that config can
override globally and per carrier ("this carrier sends 480 when congested").
"""

from __future__ import annotations

import re
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


# Q.850 causes in a Reason header (RFC 3326) and Asterisk's DIALSTATUS values mean the
# same classes: the network failed (trunk fault) or the called party answered (final).
DEFAULT_Q850_CLASSES: dict[int, OutcomeClass] = {
    27: T, 34: T, 38: T, 41: T, 42: T, 44: T, 47: T, 102: T,
    1: F, 16: F, 17: F, 19: F, 21: F, 22: F, 28: F,
}  # fmt: skip
DEFAULT_DIALSTATUS_CLASSES: dict[str, OutcomeClass] = {
    "CONGESTION": T, "CHANUNAVAIL": T,
    "BUSY": F, "NOANSWER": F,
    "ANSWER": OutcomeClass.SUCCESS, "CANCEL": OutcomeClass.NEUTRAL,
}  # fmt: skip

# RFC 3398 §8.2.6.1: the SIP status that says what a final Q.850 cause says, for relaying a
# destination's answer that a carrier wrapped in a 5xx.
Q850_TO_STATUS: dict[int, int] = {1: 404, 16: 480, 17: 486, 19: 480, 21: 603, 22: 410, 28: 484}

_CAUSE_RE = re.compile(r"(?:^|,)\s*Q\.850\s*;(?:[^,]*?;)?\s*cause\s*=\s*(\d{1,3})", re.I)


def q850_cause(reason: str | None) -> int | None:
    """The Q.850 cause of a Reason header value (``Q.850;cause=34;text="..."``), if any."""
    if not reason:
        return None
    m = _CAUSE_RE.search(reason)
    return int(m.group(1)) if m else None


class FailureTable:
    """Default tables plus overrides; ``classify`` is all the proxy calls."""

    __slots__ = ("_dialstatus", "_q850", "_table")

    def __init__(
        self,
        overrides: Mapping[int, OutcomeClass] | None = None,
        *,
        q850: Mapping[int, OutcomeClass] | None = None,
        dialstatus: Mapping[str, OutcomeClass] | None = None,
    ) -> None:
        self._table = {**DEFAULT_STATUS_CLASSES, **(overrides or {})}
        self._q850 = {**DEFAULT_Q850_CLASSES, **(q850 or {})}
        self._dialstatus = {**DEFAULT_DIALSTATUS_CLASSES, **(dialstatus or {})}

    def with_overrides(
        self,
        overrides: Mapping[int, OutcomeClass] | None = None,
        *,
        q850: Mapping[int, OutcomeClass] | None = None,
        dialstatus: Mapping[str, OutcomeClass] | None = None,
    ) -> FailureTable:
        if not overrides and not q850 and not dialstatus:
            return self
        return FailureTable(
            {**self._table, **(overrides or {})},
            q850={**self._q850, **(q850 or {})},
            dialstatus={
                **self._dialstatus,
                **{k.upper(): v for k, v in (dialstatus or {}).items()},
            },
        )

    def klass(self, status: int) -> OutcomeClass:
        found = self._table.get(status)
        return found if found is not None else _fallback(status)

    def classify(self, status: int, reason: str | None = None) -> Verdict:
        """The verdict on a final response; a Q.850 cause in its Reason header wins."""
        klass = self.klass(status)
        if reason is not None and status >= 300:
            cause = q850_cause(reason)
            if cause is not None and cause in self._q850:
                klass = self._q850[cause]
        failover, counts = _POLICY[klass]
        alarm = klass is OutcomeClass.TRUNK_FAULT and status in AUTH_ALARM_CODES
        return Verdict(klass, failover, counts, alarm)

    def classify_dialstatus(self, value: str) -> Verdict:
        """The verdict on an Asterisk DIALSTATUS (unknown values count as trunk faults)."""
        klass = self._dialstatus.get(value.strip().upper(), T)
        failover, counts = _POLICY[klass]
        return Verdict(klass, failover, counts)

    def classify_dial(self, dialstatus: str, cause: int | None) -> Verdict:
        """The verdict on an Asterisk Dial(): its DIALSTATUS, and its HANGUPCAUSE.

        As with a Reason header, a Q.850 cause the table knows wins over the
        status (CONGESTION with cause 17 is a busy line, not a trunk fault), but
        for ANSWER and CANCEL, whose cause is the call's clearing, not the trunk's.
        """
        verdict = self.classify_dialstatus(dialstatus)
        if verdict.klass in (OutcomeClass.SUCCESS, OutcomeClass.NEUTRAL) or cause is None:
            return verdict
        klass = self._q850.get(cause)
        if klass is None:
            return verdict
        failover, counts = _POLICY[klass]
        return Verdict(klass, failover, counts)

    @staticmethod
    def local_failure(kind: str) -> Verdict:
        """A timeout or an unreachable port: always a trunk fault."""
        del kind
        return Verdict(OutcomeClass.TRUNK_FAULT, True, True)
