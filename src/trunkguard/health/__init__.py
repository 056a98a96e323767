"""Health engine: outcome classification and per-target state. Pure: no I/O, no clock."""

from ._engine import HealthEngine, HealthPolicy, StateChange, TargetHealth
from ._outcome import (
    DEFAULT_STATUS_CLASSES,
    TIMEOUT,
    UNREACHABLE,
    FailureTable,
    OutcomeClass,
    Verdict,
)
from ._rto import ResponseTimer
from ._state import IN_ROTATION, TRANSITIONS, Input, State, transition_table

__all__ = [
    "DEFAULT_STATUS_CLASSES",
    "IN_ROTATION",
    "TIMEOUT",
    "TRANSITIONS",
    "UNREACHABLE",
    "FailureTable",
    "HealthEngine",
    "HealthPolicy",
    "Input",
    "OutcomeClass",
    "ResponseTimer",
    "State",
    "StateChange",
    "TargetHealth",
    "Verdict",
    "transition_table",
]
