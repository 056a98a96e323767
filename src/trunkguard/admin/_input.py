"""What an operator may send the admin API, checked field by field.

Every refusal is a :class:`BadInput` that names the field and says what was
expected; the API answers it with 400 and that text, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

FORCE_DOWN_MAX = 86_400.0  # a drill that outlives a day is an outage nobody remembers
REASON_MAX = 200
EVENTS_DEFAULT = 100
EVENTS_MAX = 1000


class BadInput(ValueError):
    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


@dataclass(frozen=True, slots=True)
class ForceDown:
    seconds: float
    reason: str | None


@dataclass(frozen=True, slots=True)
class EventsQuery:
    target: str | None
    since: float | None
    until: float | None
    limit: int


def force_down(body: object) -> ForceDown:
    """``{"seconds": 60, "reason": "drill"}``; ``reason`` is optional."""
    if not isinstance(body, dict):
        raise BadInput("body", 'expected a JSON object like {"seconds": 60, "reason": "drill"}')
    unknown = sorted(str(k) for k in body if k not in ("seconds", "reason"))
    if unknown:
        raise BadInput(unknown[0], "unknown field (expected seconds and, optionally, reason)")
    if "seconds" not in body:
        raise BadInput("seconds", "required: how long to force the target down, 1 to 86400")
    seconds = body["seconds"]
    # bool is an int to Python, never a duration to an operator.
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise BadInput("seconds", f"expected a number from 1 to 86400, got {seconds!r}")
    if not (math.isfinite(seconds) and 1 <= seconds <= FORCE_DOWN_MAX):
        raise BadInput("seconds", f"expected a number from 1 to 86400, got {seconds!r}")
    return ForceDown(float(seconds), _reason(body.get("reason")))


def _reason(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput("reason", f"expected a string, got {value!r}")
    text = value.strip()
    if not text:
        return None
    if len(text) > REASON_MAX:
        raise BadInput("reason", f"at most {REASON_MAX} characters, got {len(text)}")
    # It goes into the log one line per change: a newline would forge a second line.
    if any(not c.isprintable() for c in text):
        raise BadInput("reason", "control characters are not allowed")
    return text


def events_query(query: Mapping[str, str]) -> EventsQuery:
    """``target``, ``since`` and ``until`` (Unix seconds or ISO), ``limit`` (1 to 1000)."""
    unknown = sorted(k for k in query if k not in ("target", "since", "until", "limit"))
    if unknown:
        raise BadInput(unknown[0], "unknown parameter (expected target, since, until, limit)")
    target = query.get("target") or None
    raw_limit = query.get("limit")
    limit = EVENTS_DEFAULT
    if raw_limit is not None:
        if not (raw_limit.isascii() and raw_limit.isdigit()):
            raise BadInput("limit", f"expected a whole number from 1 to 1000, got {raw_limit!r}")
        limit = int(raw_limit)
        if not 1 <= limit <= EVENTS_MAX:
            raise BadInput("limit", f"expected a whole number from 1 to 1000, got {limit}")
    return EventsQuery(target, _when("since", query), _when("until", query), limit)


def _when(field: str, query: Mapping[str, str]) -> float | None:
    text = query.get(field)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise BadInput(field, f"expected Unix seconds or an ISO date/time, got {text!r}")
        return value
    try:
        # Without a zone it is the router's local time, as in `trunkguard events`.
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise BadInput(field, f"expected Unix seconds or an ISO date/time, got {text!r}") from None
