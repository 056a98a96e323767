"""Health engine: outcome classification and per-target state. Pure: no I/O, no clock."""

from ._engine import HealthEngine, HealthPolicy, StateChange, TargetHealth
from ._outcome import (
    DEFAULT_DIALSTATUS_CLASSES,
    DEFAULT_Q850_CLASSES,
    DEFAULT_STATUS_CLASSES,
    Q850_TO_STATUS,
    TIMEOUT,
    UNREACHABLE,
    FailureTable,
    OutcomeClass,
    Verdict,
    q850_cause,
)
from ._rto import ResponseTimer
from ._silence import SilenceEvent
from ._state import TRANSITIONS, Input, State, transition_table

__all__ = [
    "DEFAULT_DIALSTATUS_CLASSES",
    "DEFAULT_Q850_CLASSES",
    "DEFAULT_STATUS_CLASSES",
    "Q850_TO_STATUS",
    "TIMEOUT",
    "TRANSITIONS",
    "UNREACHABLE",
    "FailureTable",
    "HealthEngine",
    "HealthPolicy",
    "Input",
    "OutcomeClass",
    "ResponseTimer",
    "SilenceEvent",
    "State",
    "StateChange",
    "TargetHealth",
    "Verdict",
    "q850_cause",
    "transition_table",
]
