"""How a simulated carrier behaves: its mode, checked on construction, and the flap schedule.

A mode is data; what a carrier does at an instant is its *behaviour*, one of
``healthy``, ``reject``, ``options-only``, ``slow``, ``blackhole``, ``killed`` or
``registrar-silent`` (REGISTER goes unanswered, everything else as healthy),
``jitter`` (as healthy, each new request taken up after a delay drawn anew
between ``delay_ms`` and ``jitter_ms``: a carrier whose latency varies),
``false-answer`` (answers as healthy, then hangs up with a BYE ``hangup_ms`` after
the 200) or ``fake-busy`` (486 to ``busy_pct`` % of INVITEs, evenly spread; the
rest answered as healthy). The last two look fine to health: they are quality
faults, not trunk faults.
Every mode but ``flap`` behaves as itself; ``flap`` behaves as ``healthy`` for
``period_s`` seconds from the moment it was set, then as ``blackhole`` for
``period_s``, and so on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

MODE_NAMES = (
    "healthy",
    "reject",
    "blackhole",
    "options-only",
    "slow",
    "flap",
    "killed",
    "registrar-silent",
    "false-answer",
    "fake-busy",
    "jitter",
)
# The name for the options-only carrier, accepted where users type a mode.
ALIASES = {"options-only-alive": "options-only"}
# Behaviours under which nothing is answered.
SILENT = frozenset({"blackhole", "killed"})
# Behaviours under which REGISTER alone is not answered.
REGISTRAR_SILENT = frozenset({"registrar-silent"})
_FIELDS = (
    "name",
    "code",
    "retry_after",
    "ring_ms",
    "delay_ms",
    "period_s",
    "hangup_ms",
    "busy_pct",
    "jitter_ms",
)


class ModeError(ValueError):
    """A mode that cannot be simulated; the message says which field and why."""


def _int_field(name: str, value: object, low: int, high: int | None = None) -> None:
    # bool is an int to Python, never to a user.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModeError(f"{name} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ModeError(f"{name} must be {span}, not {value}")


@dataclass(frozen=True, slots=True)
class Mode:
    """A carrier's mode; invalid values raise :class:`ModeError` here, not later."""

    name: str
    code: int = 503  # reject, options-only: the final status for an INVITE
    retry_after: int | None = None  # reject, options-only: Retry-After seconds
    ring_ms: int = 0  # healthy, slow, flap: 180 to 200
    delay_ms: int = 0  # slow: before any answer
    period_s: float = 20.0  # flap: length of each healthy and each dead phase
    hangup_ms: int = 2000  # false-answer: the carrier's BYE this long after its 200
    busy_pct: int = 80  # fake-busy: the share of INVITEs answered 486
    jitter_ms: int = 50  # jitter: the longest delay (the shortest is delay_ms)

    def __post_init__(self) -> None:
        if self.name not in MODE_NAMES:
            raise ModeError(f"unknown mode {self.name!r}: expected one of {', '.join(MODE_NAMES)}")
        _int_field("code", self.code, 300, 699)
        if self.retry_after is not None:
            _int_field("retry_after", self.retry_after, 0)
        _int_field("ring_ms", self.ring_ms, 0)
        _int_field("delay_ms", self.delay_ms, 0)
        _int_field("hangup_ms", self.hangup_ms, 0)
        _int_field("busy_pct", self.busy_pct, 0, 100)
        _int_field("jitter_ms", self.jitter_ms, 0)
        if self.name == "jitter" and self.jitter_ms < self.delay_ms:
            raise ModeError(
                f"jitter_ms ({self.jitter_ms}) must be at least delay_ms ({self.delay_ms})"
            )
        period = self.period_s
        if isinstance(period, bool) or not isinstance(period, int | float):
            raise ModeError(f"period_s must be a number of seconds, not {period!r}")
        if not math.isfinite(period) or period <= 0:
            raise ModeError(f"period_s must be more than 0, not {period}")

    def describe(self) -> str:
        """One short line: ``reject 503 (Retry-After 30)``, ``flap 20 s``..."""
        name = self.name
        if name in ("reject", "options-only"):
            after = f" (Retry-After {self.retry_after})" if self.retry_after is not None else ""
            return f"{name} {self.code}{after}"
        ring = f", ring {self.ring_ms} ms" if self.ring_ms else ""
        if name == "slow":
            return f"slow {self.delay_ms} ms{ring}"
        if name == "jitter":
            return f"jitter {self.delay_ms} to {self.jitter_ms} ms{ring}"
        if name == "false-answer":
            return f"false-answer: BYE {self.hangup_ms} ms after the 200{ring}"
        if name == "fake-busy":
            return f"fake-busy: 486 to {self.busy_pct} % of calls{ring}"
        if name == "flap":
            return f"flap {self.period_s:g} s healthy / {self.period_s:g} s dead{ring}"
        return f"{name}{ring}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def behaviour(mode: Mode, since: float, now: float) -> str:
    """What a carrier in ``mode`` (set at ``since``) does at ``now``."""
    if mode.name != "flap":
        return mode.name
    phase = math.floor((now - since) / mode.period_s)
    return "healthy" if phase % 2 == 0 else "blackhole"


def phase_end(mode: Mode, since: float, now: float) -> float | None:
    """When a flapping carrier next turns (None for every other mode)."""
    if mode.name != "flap":
        return None
    return since + (math.floor((now - since) / mode.period_s) + 1) * mode.period_s


def mode_from_json(data: object) -> Mode:
    """A mode from a decoded JSON object such as ``{"name": "reject", "code": 486}``.

    Fields left out take their defaults; unknown fields are an error, so a typo
    never silently leaves a carrier healthy.
    """
    if not isinstance(data, dict):
        raise ModeError(f"a mode is a JSON object with a 'name', not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _FIELDS)
    if unknown:
        raise ModeError(f"unknown field(s) {', '.join(unknown)}: expected {', '.join(_FIELDS)}")
    if "name" not in data:
        raise ModeError(f"missing 'name': one of {', '.join(MODE_NAMES)}")
    fields = dict(data)
    name = fields["name"]
    if not isinstance(name, str):
        raise ModeError(f"name must be a string, not {name!r}")
    fields["name"] = ALIASES.get(name, name)
    return Mode(**fields)
