"""Which alerts to send, and when: flap damping and a rate limit. Pure: ``now`` comes in.

Inputs are the health engine's state changes, the states of the routes (every
carrier target) after them, and the router's own overload start and end.
Output is a list of :class:`Alert` to hand to the hooks, now or at
:meth:`AlertPolicy.next_deadline`.

Invariants, in plain words:

- A *subject* is what flaps: one target, or the router-wide ``routes``
  (every route degraded / one back) or ``overload``. Each has a penalty, as in
  RFC 2439 route flap damping: a change that takes it out of service (a
  target leaving UP, every route degraded, overload starting) adds
  ``penalty``, any other change ``penalty_other``; the penalty halves every
  ``half_life`` seconds and never exceeds ``reuse * 2^(max_suppress /
  half_life)``, so a subject that stops flapping is reused within
  ``max_suppress`` seconds.
- While a subject's penalty is below ``suppress`` its alerts go out as they
  come. The alert that takes it to ``suppress`` or over still goes out,
  marked ``damped`` (what follows is held); later ones are held and counted.
  When the penalty has decayed to ``reuse`` one ``flapping`` summary goes out
  (how many changes, over how long, the state now), if anything was held; a
  subject still flapping after ``max_suppress`` (it changed within the last
  half-life) gets one such summary per ``max_suppress`` and stays held.
- On top, a token bucket (``burst``, ``per_minute``) bounds what all
  subjects together send. An alert that finds the bucket empty waits, and a
  later alert of the same subject replaces it (it says how many it
  replaced): the latest word on every subject always goes out, late rather
  than never. The router-wide ``routes`` alerts are damped but never wait
  for the bucket: "no route is UP" is the one alert that must not queue
  behind a flapping carrier's.
- "Every route degraded": there is at least one route and none is UP.
  SUSPECT, DOWN, PROBING (trial calls only), DRAINED and FORCED_DOWN all
  count as not UP. "Recovered": one is UP again.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..health import State, StateChange

# Kinds: what a hook's ``events`` filter selects.
STATE = "state"
DEGRADED = "degraded"
OVERLOAD = "overload"
KINDS = (STATE, DEGRADED, OVERLOAD)

# Events: what an alert says.
EV_STATE = "state"  # a target changed state
EV_DEGRADED = "degraded"  # no route is UP
EV_RECOVERED = "recovered"  # a route is UP again
EV_OVERLOAD = "overload"  # the router started refusing work
EV_OVERLOAD_OVER = "overload_over"
EV_FLAPPING = "flapping"  # summary of what damping held
EVENTS = (EV_STATE, EV_DEGRADED, EV_RECOVERED, EV_OVERLOAD, EV_OVERLOAD_OVER, EV_FLAPPING)

# The subjects that are not a target; a target's name cannot start with "*".
ROUTES = "*routes"
ROUTER = "*overload"
_MAX_EXPONENT = 60.0  # 2^60: a ceiling beyond any penalty that matters, and no overflow
_MAX_SUBJECTS = 10_000  # forgotten once calm, beyond this many
_ONE = 1.0 - 1e-6  # a token, give or take the float error of a refill
_SLACK = 0.005  # seconds: a loop timer may fire a clock step early


_LABELS = {DEGRADED: ("every route", "degraded"), OVERLOAD: ("the router", "overloaded")}


@dataclass(frozen=True, slots=True)
class DampingSettings:
    """Flap damping and the rate limit; every field has an ``alerts:`` config key."""

    penalty: float = 1000.0  # a change out of service: a target leaving UP
    penalty_other: float = 250.0  # any other change (DOWN -> PROBING, back UP...)
    suppress: float = 3000.0
    reuse: float = 750.0
    half_life: float = 60.0  # seconds
    max_suppress: float = 600.0  # seconds
    burst: int = 20  # alerts
    per_minute: float = 20.0

    @property
    def ceiling(self) -> float:
        """The highest penalty: from it, decay reaches ``reuse`` in ``max_suppress`` seconds."""
        return float(self.reuse * 2.0 ** min(self.max_suppress / self.half_life, _MAX_EXPONENT))


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing to tell the hooks; ``at`` is on the loop's monotonic clock."""

    event: str  # one of EVENTS
    kind: str  # one of KINDS
    target: str | None  # None: router-wide
    old: str
    new: str
    reason: str
    at: float
    counts: Mapping[str, int] = field(default_factory=dict)
    damped: bool = False  # this subject flaps: its next alerts are held (a summary follows)
    changes: int = 0  # flapping: state changes in the period
    flaps: int = 0  # flapping: of which out of service
    over: float = 0.0  # flapping: seconds the period lasted
    replaced: int = 0  # earlier alerts of this subject the rate limit replaced by this one

    @property
    def subject(self) -> str:
        if self.target is not None:
            return self.target
        return ROUTES if self.kind == DEGRADED else ROUTER


@dataclass(slots=True)
class _Subject:
    penalty: float = 0.0
    at: float = 0.0  # when ``penalty`` was last brought up to date
    suppressed: bool = False
    start: float = 0.0  # when the alerts began to be held
    since: float = 0.0  # start of the current period (``start``, or the last reminder)
    remind: float = 0.0  # when a "still flapping" summary is due, if it still flaps then
    changes: int = 0  # in the period, the damped alert included
    flaps: int = 0
    held: int = 0
    total: tuple[int, int, int] = (0, 0, 0)  # changes, flaps, held: before this period
    reported: str = ""  # the state the last alert that went out named
    last: Alert | None = None  # the latest alert of the period

    def decay(self, now: float, half_life: float) -> None:
        if now > self.at:
            self.penalty *= 2.0 ** (-(now - self.at) / half_life)
            self.at = now

    def reuse_at(self, reuse: float, half_life: float) -> float:
        if self.penalty <= reuse:
            return self.at
        return self.at + half_life * math.log2(self.penalty / reuse)


class AlertPolicy:
    """Alerts in, alerts out: damped per subject, rate-limited overall.

    ``counts`` (the router's counters) gets ``alerts_suppressed`` (held by
    damping) and ``alerts_rate_limited`` (waited for the bucket; those a later
    alert replaced are in ``alerts_replaced``).
    """

    def __init__(self, settings: DampingSettings, counts: Counter[str] | None = None) -> None:
        self.settings = settings
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self._subjects: dict[str, _Subject] = {}
        self._tokens = float(settings.burst)
        self._refilled: float | None = None
        self._waiting: dict[str, Alert] = {}  # subject -> its latest alert the bucket held
        self._degraded: bool | None = None  # unknown until the routes are first seen
        self._overloaded = False
        # next_deadline() may be early, never late: a held alert only moves its subject's
        # reuse later, so the minimum is worked out again only when a deadline may come
        # sooner (a subject starts to be held, an alert starts to wait) or one has passed.
        self._next: float | None = None
        self._stale = False

    def reconfigure(self, settings: DampingSettings) -> None:
        """New numbers (a reload): penalties, held alerts and what waits are kept."""
        self.settings = settings
        self._tokens = min(self._tokens, float(settings.burst))
        self._stale = True

    # -- inputs -----------------------------------------------------------------------------
    def state_change(self, change: StateChange) -> list[Alert]:
        alert = Alert(
            EV_STATE,
            STATE,
            change.target,
            change.old,  # a StrEnum: the str "UP" itself
            change.new,
            change.reason,
            change.at,
            dict(change.counts),
        )
        out_of_service = change.old is State.UP
        return self._admit(alert, out_of_service, change.at)

    def routes(self, states: Mapping[str, State], now: float) -> list[Alert]:
        """The routes' states now (after a change, a reload, or at start)."""
        up = [name for name, s in states.items() if s is State.UP]
        degraded = bool(states) and not up
        was = self._degraded
        self._degraded = degraded
        if degraded == (was or False):
            return []
        counts = {"routes_up": len(up), "routes": len(states)}
        if degraded:
            listed = ", ".join(f"{n} {s.value}" for n, s in list(states.items())[:10])
            more = f" and {len(states) - 10} more" if len(states) > 10 else ""
            why = f"no route is UP: {listed}{more}"
            alert = Alert(EV_DEGRADED, DEGRADED, None, "OK", "DEGRADED", why, now, counts)
        else:
            why = f"{', '.join(up[:10])} UP again" + (f" (+{len(up) - 10})" if len(up) > 10 else "")
            alert = Alert(EV_RECOVERED, DEGRADED, None, "DEGRADED", "OK", why, now, counts)
        return self._admit(alert, degraded, now)

    def overload(self, state: str, detail: str, now: float) -> list[Alert]:
        """The router's overload started (``state`` "overloaded") or ended."""
        overloaded = state == "overloaded"
        if overloaded == self._overloaded:
            return []
        self._overloaded = overloaded
        if overloaded:
            alert = Alert(EV_OVERLOAD, OVERLOAD, None, "OK", "OVERLOADED", detail, now)
        else:
            alert = Alert(EV_OVERLOAD_OVER, OVERLOAD, None, "OVERLOADED", "OK", detail, now)
        return self._admit(alert, overloaded, now)

    # -- timers -----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When to call :meth:`on_timer` (it may find nothing due yet, and say the next)."""
        if self._stale:
            self._next = self._deadline()
            self._stale = False
        return self._next

    def _deadline(self) -> float | None:
        s = self.settings
        times = [
            min(sub.reuse_at(s.reuse, s.half_life), sub.remind)
            for sub in self._subjects.values()
            if sub.suppressed
        ]
        if self._waiting and self._refilled is not None:
            times.append(self._refilled + max(0.0, 1.0 - self._tokens) * 60.0 / s.per_minute)
        return min(times) if times else None

    def on_timer(self, now: float) -> list[Alert]:
        s = self.settings
        self._stale = True
        out: list[Alert] = []
        for name, sub in list(self._subjects.items()):
            if not sub.suppressed:
                continue
            sub.decay(now, s.half_life)
            if sub.reuse_at(s.reuse, s.half_life) <= now + _SLACK:
                # The whole suppressed time, reminders or not: how it went, and that it ended.
                sub.suppressed = False
                changes, flaps, held = sub.total
                sub.changes += changes
                sub.flaps += flaps
                sub.held += held
                sub.since = sub.start
                summary = self._summary(name, sub, now, still=False)
                if summary is not None:
                    out += self._limit(summary, now)
            elif now + _SLACK >= sub.remind:
                sub.remind = now + s.max_suppress
                if sub.last is None or now - sub.last.at > s.half_life:
                    continue  # it has calmed down: the "stable again" summary is near
                summary = self._summary(name, sub, now, still=True)
                changes, flaps, held = sub.total
                sub.total = (changes + sub.changes, flaps + sub.flaps, held + sub.held)
                sub.since, sub.changes, sub.flaps, sub.held = now, 0, 0, 0
                if summary is not None:
                    out += self._limit(summary, now)
        out += self._release(now)
        if len(self._subjects) > _MAX_SUBJECTS:
            self._forget_calm(now)
        return out

    # -- state ------------------------------------------------------------------------------
    @property
    def degraded(self) -> bool:
        return bool(self._degraded)

    def suppressed(self) -> list[str]:
        """The subjects whose alerts are held now."""
        return [name for name, sub in self._subjects.items() if sub.suppressed]

    def penalty(self, subject: str, now: float) -> float:
        sub = self._subjects.get(subject)
        if sub is None:
            return 0.0
        sub.decay(now, self.settings.half_life)
        return sub.penalty

    # -- the rules --------------------------------------------------------------------------
    def _admit(self, alert: Alert, out_of_service: bool, now: float) -> list[Alert]:
        s = self.settings
        name = alert.subject
        sub = self._subjects.get(name)
        if sub is None:
            sub = self._subjects[name] = _Subject(at=now)
        sub.decay(now, s.half_life)
        added = s.penalty if out_of_service else s.penalty_other
        sub.penalty = min(sub.penalty + added, s.ceiling)
        if sub.suppressed:
            sub.changes += 1
            sub.flaps += out_of_service
            sub.held += 1
            sub.last = alert
            self.counts["alerts_suppressed"] += 1
            return self._release(now)
        if sub.penalty >= s.suppress:
            sub.suppressed = True
            self._stale = True
            sub.start, sub.total, sub.remind = now, (0, 0, 0), now + s.max_suppress
            sub.since, sub.changes, sub.flaps, sub.held = now, 1, int(out_of_service), 0
            sub.last = alert
            alert = replace(alert, damped=True)
        sub.reported = alert.new
        return self._limit(alert, now)

    def _summary(self, name: str, sub: _Subject, now: float, still: bool) -> Alert | None:
        last = sub.last
        if last is None or sub.held == 0:
            return None
        over = now - sub.since
        what = "still flapping" if still else "stable again"
        label, bad = _LABELS.get(last.kind, (name, "out of service"))
        why = (
            f"{label} flapped: {sub.flaps} times {bad}, {sub.changes} changes "
            f"in the last {over:.0f}s ({sub.held} alerts held), now {last.new}; {what}"
        )
        summary = Alert(
            EV_FLAPPING,
            last.kind,
            last.target,
            sub.reported,
            last.new,
            why,
            now,
            dict(last.counts),
            damped=still,
            changes=sub.changes,
            flaps=sub.flaps,
            over=over,
        )
        sub.reported = last.new
        return summary

    def _refill(self, now: float) -> None:
        s = self.settings
        if self._refilled is None:
            self._refilled = now
        elif now > self._refilled:
            self._tokens = min(
                float(s.burst), self._tokens + (now - self._refilled) * s.per_minute / 60.0
            )
            self._refilled = now

    def _limit(self, alert: Alert, now: float) -> list[Alert]:
        if alert.kind == DEGRADED:
            return [*self._release(now), alert]
        self._refill(now)
        name = alert.subject
        earlier = self._waiting.pop(name, None)
        if earlier is not None:
            self.counts["alerts_replaced"] += 1
            alert = replace(alert, replaced=earlier.replaced + 1, damped=alert.damped)
        out = self._release(now)
        if self._tokens >= _ONE and not self._waiting:
            self._tokens -= 1.0
            return [*out, alert]
        self.counts["alerts_rate_limited"] += 1
        self._waiting[name] = alert
        self._stale = True
        return out

    def _release(self, now: float) -> list[Alert]:
        """What waited for the bucket, oldest first, as far as the tokens go."""
        if not self._waiting:
            return []
        self._refill(now)
        out: list[Alert] = []
        while self._waiting and self._tokens >= _ONE:
            name = next(iter(self._waiting))
            out.append(self._waiting.pop(name))
            self._tokens -= 1.0
        return out

    def _forget_calm(self, now: float) -> None:
        for name, sub in list(self._subjects.items()):
            sub.decay(now, self.settings.half_life)
            if not sub.suppressed and sub.penalty < 1.0:
                del self._subjects[name]
