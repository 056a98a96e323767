"""Health engine: outcome classification (and, later, per-target state). Pure: no I/O, no clock."""

from ._outcome import (
    DEFAULT_STATUS_CLASSES,
    TIMEOUT,
    UNREACHABLE,
    FailureTable,
    OutcomeClass,
    Verdict,
)

__all__ = [
    "DEFAULT_STATUS_CLASSES",
    "TIMEOUT",
    "UNREACHABLE",
    "FailureTable",
    "OutcomeClass",
    "Verdict",
]
