"""When to resolve a carrier's name again, and what the router should see meanwhile. Pure.

One :class:`Refresh` per watched name; :func:`refresh_step` takes the last state, a new
Resolution and ``now``, and returns the next state, whether it changed, the delay before
the next resolution, and the log line. The rules:

* Destinations found: the next resolution comes at their TTL, clamped to
  ``[min_ttl, max_ttl]``; the failure count is reset.
* Anything else (DNS said there are none, or could not be asked): the next try comes after
  ``retry_min``, doubling with each failure in a row, up to ``retry_max``.
* A failure to get an answer (``transient``) does not take destinations away: the last ones
  are kept, with the error, until ``serve_stale`` seconds after their TTL ran out (RFC 8767).
  A carrier's DNS being slow for a minute must not take the carrier out of rotation. An
  answer that there are none (NXDOMAIN, no records, target ".") replaces them at once.
* A change is a different set of destinations (key, priority, weight) or a different error;
  a new TTL or a new weighted order of the same destinations is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._rfc3263 import Resolution, describe
from ._settings import DnsSettings


@dataclass(frozen=True, slots=True)
class Refresh:
    """What is known about one watched name between resolutions."""

    current: Resolution | None = None
    failures: int = 0  # unsuccessful resolutions in a row
    keep_until: float = -math.inf  # the last destinations survive failures until then


@dataclass(frozen=True, slots=True)
class Step:
    state: Refresh
    changed: bool
    delay: float  # seconds until the next resolution
    message: str  # what changed, for the log (meaningful when ``changed``)


def signature(resolution: Resolution) -> tuple[frozenset[tuple[object, ...]], str | None]:
    """What a change is measured on: destinations with their SRV ranks, and the error."""
    ranked = frozenset((d.key, d.priority, d.weight) for d in resolution.destinations)
    return ranked, resolution.error


def retry_delay(failures: int, settings: DnsSettings) -> float:
    """``retry_min`` after the first failure, doubling, capped at ``retry_max``."""
    exponent = min(max(failures - 1, 0), 62)
    return float(min(settings.retry_max, settings.retry_min * 2.0**exponent))


def refresh_step(state: Refresh, result: Resolution, now: float, settings: DnsSettings) -> Step:
    previous = state.current
    if result.error is None:
        delay = min(max(result.ttl, settings.min_ttl), settings.max_ttl)
        new = Refresh(result, 0, now + result.ttl + settings.serve_stale)
        message = f"{_count(result)} ({describe(result.destinations)})"
    else:
        failures = state.failures + 1
        delay = retry_delay(failures, settings)
        kept = previous.destinations if previous is not None else ()
        if result.transient and kept and settings.serve_stale > 0 and now < state.keep_until:
            stale = Resolution(kept, 0.0, result.error, transient=True)
            new = Refresh(stale, failures, state.keep_until)
            message = f"{result.error}; keeping {_count(stale)}, retrying in {delay:g}s"
        else:
            new = Refresh(result, failures)
            message = f"no destinations: {result.error}, retrying in {delay:g}s"
    assert new.current is not None
    changed = previous is None or signature(previous) != signature(new.current)
    return Step(new, changed, delay, message)


def _count(resolution: Resolution) -> str:
    n = len(resolution.destinations)
    return f"{n} destination{'' if n == 1 else 's'}"
