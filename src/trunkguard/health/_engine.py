"""The health engine: outcomes and probe results in, target states and events out.

Pure and deterministic: every method takes ``now``; jitter comes from a
``random.Random`` the caller seeds. The proxy reports each attempt (start,
first response, end), the prober reports each OPTIONS result, and the
engine answers with :class:`StateChange` events, each with the reason a
person can read ("5 consecutive 503 from a").
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from ._capacity import Capacity
from ._outcome import TIMEOUT, OutcomeClass, Verdict
from ._rto import ResponseTimer
from ._silence import (
    CONFIRM,
    NEVER,
    ResponseTimes,
    Silence,
    SilenceEvent,
    ms,
    oldest_unanswered,
    threshold,
    waiting_since,
)
from ._state import TRANSITIONS, Input, State

_OPERATOR = (State.DRAINED, State.FORCED_DOWN)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Thresholds; every number here has a config key of the same name."""

    consecutive_faults: int = 5
    window_size: int = 20
    window_ratio: float = 0.5
    window_min_volume: int = 10
    probe_failures: int = 3
    probe_successes: int = 2
    trial_calls: int = 3
    hold_down: float = 30.0
    hold_down_max: float = 600.0
    hold_down_window: float = 600.0
    hold_down_jitter: float = 0.1  # +/- fraction
    retry_after_max: float = 600.0
    suspect_outstanding: int = 3
    invite_timeout: float = 2.0
    response_timeout_floor: float = 0.3
    # Silence (see _silence): an INVITE waiting longer than margin x the quantile of the
    # target's recent first-response times (never less than the floor) holds new calls back.
    silence: bool = True
    silence_floor: float = 0.02
    silence_margin: float = 2.0
    silence_quantile: float = 0.99
    silence_min_samples: int = 20
    silence_window: int = 100


@dataclass(frozen=True, slots=True)
class StateChange:
    target: str
    old: State
    new: State
    reason: str
    at: float
    counts: dict[str, int] = field(default_factory=dict)
    hold_down: float | None = None  # seconds, when the change starts one


@dataclass(slots=True)
class TargetHealth:
    """Everything the engine knows about one target."""

    name: str
    state: State = State.UP
    since: float = 0.0
    reason: str = "start"
    consecutive_faults: int = 0
    last_fault: str = ""
    window: deque[bool] = field(default_factory=lambda: deque(maxlen=20))
    probe_fail_streak: int = 0
    probe_ok_streak: int = 0
    trials_passed: int = 0
    trial_in_flight: bool = False
    trips: int = 0
    last_trip: float | None = None
    hold_down: float = 0.0
    hold_down_until: float | None = None
    retry_until: float | None = None  # a 503's Retry-After, as the time it names (capped)
    forced_until: float | None = None
    before_operator: State = State.UP  # the health state a drain or force-down interrupted
    outstanding: dict[int, float] = field(default_factory=dict)  # attempt id -> started
    suspect_since: float | None = None
    timer: ResponseTimer = field(default_factory=ResponseTimer)
    capacity: Capacity = field(default_factory=Capacity)
    attempts: int = 0
    faults: int = 0
    # Why the target may not come back whatever its probes say (its registration is
    # lost, say), or None. Set and cleared by gate() and ungate().
    gate: str | None = None
    silence: Silence = field(default_factory=Silence)


class HealthEngine:
    def __init__(
        self,
        targets: list[str],
        policy: HealthPolicy | None = None,
        rng: random.Random | None = None,
        probes_enabled: bool = True,
    ) -> None:
        self.policy = policy or HealthPolicy()
        self.rng = rng or random.Random()
        self.probes_enabled = probes_enabled
        self.targets: dict[str, TargetHealth] = {}
        self._gone: dict[str, Capacity] = {}  # removed targets with calls still up
        for name in targets:
            self.add_target(name)
        self._next_attempt = 0
        self._clock = NEVER  # the latest ``now`` any call brought: next_deadline() has none
        self.silence_events: list[SilenceEvent] = []  # taken by take_silences()

    def set_policy(self, policy: HealthPolicy) -> None:
        """New thresholds (a reload); states, counts and hold-downs in force are kept."""
        self.policy = policy
        for h in self.targets.values():
            h.timer.floor, h.timer.cap = policy.response_timeout_floor, policy.invite_timeout
            if h.window.maxlen != policy.window_size:
                h.window = deque(h.window, maxlen=policy.window_size)
            h.silence.times.resize(policy.silence_window)

    def set_capacity(self, name: str, max_calls: int | None, max_cps: float | None) -> None:
        h = self.targets[name]
        h.capacity.max_calls, h.capacity.max_cps = max_calls, max_cps

    def overflow(self, name: str, now: float) -> str | None:
        """Why ``name`` has no room for a new call now (not a fault), or None."""
        return self.targets[name].capacity.full(now)

    def call_ended(self, name: str) -> None:
        """An answered call through ``name`` hung up: its capacity is free again."""
        target = self.targets.get(name)
        if target is not None:
            target.capacity.release()
        elif name in self._gone:
            capacity = self._gone[name]
            capacity.release()
            if not capacity.active:
                del self._gone[name]

    def share_capacity(self, names: list[str]) -> None:
        """One carrier's destinations (DNS records) share its call and rate limits."""
        if not names:
            return
        # The one already shared (it counts the carrier's calls up), not a new record's.
        shared = max((self.targets[n].capacity for n in names), key=lambda c: c.active)
        for name in names:
            self.targets[name].capacity = shared

    def remove_target(self, name: str) -> None:
        """Forget a target that no longer exists (a DNS record gone).

        Its calls still up hold their place in the carrier's shared capacity until
        they end: :meth:`call_ended` still finds it.
        """
        h = self.targets.pop(name, None)
        if h is not None and h.capacity.active:
            self._gone[name] = h.capacity

    def add_target(self, name: str) -> TargetHealth:
        p = self.policy
        health = TargetHealth(name, window=deque(maxlen=p.window_size))
        health.timer = ResponseTimer(floor=p.response_timeout_floor, cap=p.invite_timeout)
        health.silence = Silence(ResponseTimes(p.silence_window))
        self.targets[name] = health
        return health

    def load_state(
        self,
        name: str,
        state: State,
        now: float,
        *,
        reason: str,
        until: float | None = None,
        hold_down: float = 0.0,
        last_trip: float | None = None,
    ) -> None:
        """Put a target back in the state it had when the router stopped (from the event log).

        ``until`` is the end of its hold-down or forced-down period on this
        engine's clock. SUSPECT is transient and comes back as UP.
        """
        h = self.targets.get(name)
        if h is None:
            return
        if state is State.SUSPECT:
            state = State.UP
        h.state, h.since, h.reason = state, now, f"restored after restart: {reason}"
        h.hold_down = hold_down
        h.last_trip = last_trip
        if state is State.DOWN:
            h.hold_down_until = until if until is not None else now
        elif state is State.FORCED_DOWN:
            h.forced_until = until

    def adopt(
        self,
        name: str,
        state: State,
        now: float,
        *,
        reason: str,
        since: float,
        hold_down_until: float | None = None,
        forced_until: float | None = None,
        hold_down: float = 0.0,
        trips: int = 0,
        last_trip: float | None = None,
        before_operator: State = State.UP,
    ) -> list[StateChange]:
        """Take a target's state from another node (shared state), times on this clock.

        The other node's engine made the move; this one follows it as it is,
        without the table (a DOWN target here may be UP there). Returns the change
        (for the log, the store and the plans), or none when the state was the same
        (its deadlines are still brought in line).
        """
        h = self.targets.get(name)
        if h is None:
            return []
        old = h.state
        h.hold_down, h.trips, h.last_trip = hold_down, trips, last_trip
        h.hold_down_until = hold_down_until if state is State.DOWN else None
        h.forced_until = forced_until if state is State.FORCED_DOWN else None
        if state in _OPERATOR:
            h.before_operator = before_operator
        if state is old:
            return []
        h.state, h.since, h.reason = state, since, reason
        h.suspect_since = now if state is State.SUSPECT else None
        h.consecutive_faults = 0
        h.window.clear()
        h.probe_ok_streak = h.probe_fail_streak = 0
        h.trials_passed, h.trial_in_flight = 0, False
        hold = None
        if state is State.DOWN and hold_down_until is not None:
            hold = max(0.0, hold_down_until - now)  # the log keeps at + hold as its end
        counts = {"trips": trips}
        return [StateChange(name, old, state, reason, now, counts, hold)]

    # -- reading ----------------------------------------------------------------------
    def state(self, name: str) -> State:
        return self.targets[name].state

    def describe(self, name: str, now: float) -> str:
        """A target's state for a plan's explanation: "DOWN for 42s (5 consecutive 503)"."""
        h = self.targets[name]
        what = "one trial at a time" if h.state is State.PROBING else h.reason
        if h.gate is not None and h.gate != what:
            what = f"{what}; {h.gate}"
        return f"{h.state} for {now - h.since:.0f}s ({what})"

    def response_timeout(self, name: str) -> float:
        """How long an INVITE to ``name`` may wait for its first response before failing over."""
        return self.targets[name].timer.timeout()

    def admits(self, name: str) -> bool:
        """May a new call be sent to ``name`` now? PROBING admits one trial at a time."""
        h = self.targets[name]
        if h.gate is not None:
            return False
        if h.state is State.UP:
            return True
        if h.state is State.PROBING:
            probes_done = (
                not self.probes_enabled or h.probe_ok_streak >= self.policy.probe_successes
            )
            return probes_done and not h.trial_in_flight
        return False

    def next_deadline(self) -> float | None:
        times = [
            t
            for h in self.targets.values()
            for t in (None if h.gate else h.hold_down_until, h.forced_until)
            if t is not None
        ]
        k = self.policy.suspect_outstanding
        for h in self.targets.values():
            if h.state is State.UP and len(h.outstanding) >= k:
                # tick() acts when the k-th oldest INVITE is late, not the oldest alone: an
                # earlier deadline would fire, change nothing and be re-armed in the past.
                times.append(heapq.nsmallest(k, h.outstanding.values())[-1] + h.timer.timeout())
            elif h.state is State.SUSPECT and h.suspect_since is not None:
                times.append(h.suspect_since + self.policy.invite_timeout)
            if h.state is State.UP and h.outstanding:
                due = self._silence_deadline(h)
                if due is not None:
                    times.append(due)
        return min(times) if times else None

    # -- silence (see _silence) ------------------------------------------------------------
    def silenced(self, name: str, now: float) -> str | None:
        """Why no new call should go to ``name`` now ("silent 21 ms, usually 2 ms"), or None.

        Only within a silent episode the engine confirmed (in :meth:`tick`), only while
        an INVITE still waits on the target, and only while an INVITE unanswered since
        its last answer is older than its threshold: between two waiting INVITEs, one
        new call may go, one at a time, until the target answers.
        """
        h = self.targets.get(name)
        if h is None or h.silence.since is None:
            return None
        return self._held(h, now)

    def silent_for(self, name: str, now: float) -> float | None:
        """How long ``name``'s oldest INVITE unanswered since its last answer has waited,
        while its new calls are held back; else None."""
        if self.silenced(name, now) is None:
            return None
        oldest = oldest_unanswered(self.targets[name].outstanding, self.targets[name].silence)
        return None if oldest is None else now - oldest

    def take_silences(self) -> list[SilenceEvent]:
        """The silence episodes that started or ended since the last call."""
        events, self.silence_events = self.silence_events, []
        return events

    def silence_threshold(self, name: str) -> float | None:
        """The wait past which ``name`` counts as silent; None when silence does not apply
        (too few samples yet, turned off, or not shorter than its adaptive timer)."""
        return self._limit(self.targets[name])

    def _limit(self, h: TargetHealth) -> float | None:
        p = self.policy
        if not p.silence:
            return None
        limit = threshold(
            h.silence.times,
            floor=p.silence_floor,
            margin=p.silence_margin,
            quantile=p.silence_quantile,
            min_samples=p.silence_min_samples,
        )
        if limit is None or limit >= h.timer.timeout():
            return None  # the adaptive timer comes first: nothing for silence to add
        return limit

    def _waiting(self, h: TargetHealth, now: float) -> float | None:
        """When the oldest INVITE still waiting on ``h`` (see ``waiting_since``) was sent."""
        if h.state is not State.UP or not h.outstanding:
            return None
        return waiting_since(h.outstanding, h.silence.heard_sent, h.timer.timeout(), now)

    def _silent(self, h: TargetHealth, now: float) -> str | None:
        """Why ``h`` turns silent now (the start of an episode), or None."""
        limit = self._limit(h)
        sent = self._waiting(h, now)
        if limit is None or sent is None:
            return None
        # The same sum as the deadline's: a float rounding must not make the deadline
        # come and the check disagree (the timer would be re-armed at now, for ever).
        if now < sent + limit:
            return None
        return f"silent {ms(now - sent)}, usually {ms(h.silence.times.quantile(0.5))}"

    def _still(self, h: TargetHealth, now: float) -> float | None:
        """Within an episode: the oldest INVITE unanswered since the last answer, if it is
        still past the threshold (and still kept); None when the episode is over."""
        limit = self._limit(h)
        if limit is None or h.state is not State.UP:
            return None
        oldest = oldest_unanswered(h.outstanding, h.silence)
        if oldest is None or now < oldest + limit:
            return None
        return oldest

    def _held(self, h: TargetHealth, now: float) -> str | None:
        oldest = self._still(h, now)
        if oldest is None or self._waiting(h, now) is None:
            return None  # over, or nothing waits on it now: one new call may go
        return f"silent {ms(now - oldest)}, usually {ms(h.silence.times.quantile(0.5))}"

    def _silence_deadline(self, h: TargetHealth) -> float | None:
        s = h.silence
        now = self._clock
        if s.since is not None:
            oldest = self._still(h, now)
            if oldest is None:
                return now  # over (an answer, a new policy): end it at the next tick
            # Pruned then (see _prune), with no answer: the episode ends.
            return oldest + 2 * self.policy.invite_timeout
        limit = self._limit(h)
        sent = self._waiting(h, now)
        if limit is None or sent is None:
            return None
        if s.seen is not None:
            return s.seen + CONFIRM
        return sent + limit

    def _tick_silence(self, h: TargetHealth, now: float) -> None:
        s = h.silence
        if s.since is not None:
            if self._still(h, now) is None:
                self._end_silence(h, now, "no answer, and its unanswered INVITEs are forgotten")
            return
        why = self._silent(h, now)
        if why is None:
            s.seen = None
            return
        if s.seen is None:
            sent = self._waiting(h, now)
            limit = self._limit(h)
            assert sent is not None and limit is not None  # why is not None
            if now > sent + limit + CONFIRM:
                # Our timer fired late: the loop was busy, and the answer may be waiting in
                # our socket. Seen, not yet believed: one loop turn first, to read it.
                s.seen = now
                return
        elif now < s.seen + CONFIRM:
            return
        s.seen, s.since = None, now
        s.episodes += 1
        limit = self._limit(h) or 0.0
        detail = (
            f"{why} (threshold {ms(limit)}): no new calls while an INVITE waits on it, "
            "until it answers; calls waiting on it keep their timer"
        )
        self.silence_events.append(SilenceEvent(h.name, "silent", detail, now))

    def _recheck_silence(self, h: TargetHealth, now: float, how: str) -> None:
        s = h.silence
        if s.since is None:
            if self._silent(h, now) is None:
                s.seen = None
        elif self._still(h, now) is None:
            self._end_silence(h, now, how)

    def _end_silence(self, h: TargetHealth, now: float, how: str) -> None:
        s = h.silence
        if s.since is None:
            return
        lasted = now - s.since
        s.since = s.seen = None
        detail = f"{how}; held new calls back for {ms(lasted)}"
        self.silence_events.append(SilenceEvent(h.name, "heard", detail, now))

    # -- moves ------------------------------------------------------------------------------
    def _move(self, h: TargetHealth, what: Input, reason: str, now: float) -> list[StateChange]:
        old = h.state
        new = TRANSITIONS.get((old, what))
        if new is None:
            return []
        # The counts that explain the move, taken before the hold-down clears them.
        counts = {
            "consecutive_faults": h.consecutive_faults,
            "window_failures": sum(1 for ok in h.window if not ok),
            "window_size": len(h.window),
        }
        if new in _OPERATOR and old not in _OPERATOR:
            h.before_operator = old
        h.state, h.since, h.reason = new, now, reason
        if new is not State.UP:
            self._end_silence(h, now, f"now {new}: {reason}")
            h.silence.seen = None
        hold = None
        if new is State.DOWN:
            hold = self._start_hold_down(h, now)
        if new is not State.SUSPECT:
            h.suspect_since = None
        if new is not State.DOWN:
            h.hold_down_until = None  # a stale deadline would fire for ever (see next_deadline)
        if new in (State.DOWN, State.PROBING):
            h.probe_ok_streak = 0
            h.trials_passed = 0
            h.trial_in_flight = False
        if new is State.UP:
            h.consecutive_faults = 0
            h.probe_fail_streak = 0  # "K failed probes in a row" counts from here, not from DOWN
            h.window.clear()
            h.forced_until = None
        if old is State.FORCED_DOWN:
            h.forced_until = None
        counts["trips"] = h.trips
        return [StateChange(h.name, old, new, reason, now, counts, hold)]

    def _start_hold_down(self, h: TargetHealth, now: float) -> float:
        p = self.policy
        if h.last_trip is not None and now - h.last_trip <= p.hold_down_window:
            h.hold_down = min(max(h.hold_down, p.hold_down) * 2, p.hold_down_max)
        else:
            h.hold_down = p.hold_down
        h.trips += 1
        h.last_trip = now
        if h.hold_down >= p.hold_down_max:
            # At the cap, no jitter: a downward one would shorten the hold-down of a
            # target that keeps failing.
            hold = p.hold_down_max
        else:
            jitter = 1 + self.rng.uniform(-p.hold_down_jitter, p.hold_down_jitter)
            hold = min(h.hold_down * jitter, p.hold_down_max)
        # A 503's Retry-After is a floor: do not come back before the carrier asked. It
        # counts from the 503 that carried it, so an old one does not lengthen a later trip.
        if h.retry_until is not None:
            hold = max(hold, h.retry_until - now)
            h.retry_until = None
            # The next re-trip doubles what was served, not the shorter base: a carrier
            # that asked for 120 s and fails again waits 240 s, not 60.
            h.hold_down = max(h.hold_down, min(hold, p.hold_down_max))
        h.hold_down_until = now + hold
        h.consecutive_faults = 0
        h.window.clear()
        return hold

    # -- calls -------------------------------------------------------------------------------
    def attempt_started(self, name: str, now: float) -> int:
        """An INVITE left for ``name``; returns the attempt id for the calls below."""
        h = self.targets[name]
        if now > self._clock:
            self._clock = now
        self._prune(h, now)
        h.capacity.take(now)
        self._next_attempt += 1
        h.outstanding[self._next_attempt] = now
        if h.state is State.PROBING:
            h.trial_in_flight = True
        return self._next_attempt

    def _prune(self, h: TargetHealth, now: float) -> None:
        # An INVITE unanswered for twice invite_timeout has had its chance: it no longer
        # counts as outstanding (nor, answered later, as a sample). Twice, so that one
        # late at invite_timeout itself (before any sample) still counts as late.
        limit = 2 * self.policy.invite_timeout
        stale = [a for a, t in h.outstanding.items() if t + limit <= now]
        for a in stale:
            del h.outstanding[a]

    def first_response(self, name: str, attempt: int, now: float) -> list[StateChange]:
        """The first 100/18x (or any response) for ``attempt``: the carrier is alive."""
        h = self.targets[name]
        if now > self._clock:
            self._clock = now
        started = h.outstanding.pop(attempt, None)
        if started is not None:
            h.timer.sample(now - started)
            h.silence.times.add(now - started)
            # Older INVITEs still unanswered were lost, not met by a silent carrier.
            h.silence.heard_sent = max(h.silence.heard_sent, started)
            self._recheck_silence(h, now, f"answered after {ms(now - started)}")
        if h.state is State.SUSPECT:
            return self._move(h, Input.ANSWERED, "answered again while suspect", now)
        return []

    def attempt_ended(
        self,
        name: str,
        attempt: int,
        verdict: Verdict | None,
        now: float,
        *,
        what: str,
        retry_after: float | None = None,
    ) -> list[StateChange]:
        """How the attempt ended; ``what`` names it for reasons ("503", "timeout").

        A timed-out INVITE stays outstanding: the call has moved on, but the
        carrier may still answer it (a late sample widens its timer), and
        several of them late at once is what makes a carrier SUSPECT.
        """
        h = self.targets[name]
        if now > self._clock:
            self._clock = now
        if what != TIMEOUT and h.outstanding.pop(attempt, None) is not None:
            self._recheck_silence(h, now, f"its waiting INVITE ended ({what})")
        if verdict is None or verdict.klass is not OutcomeClass.SUCCESS:
            h.capacity.release()  # an answered call holds its place until call_ended()
        trial = h.state is State.PROBING and h.trial_in_flight
        if verdict is None or verdict.klass is OutcomeClass.NEUTRAL:
            if trial:
                h.trial_in_flight = False
            return []
        h.attempts += 1
        if verdict.klass is OutcomeClass.SUCCESS or not verdict.counts_against:
            h.consecutive_faults = 0
            h.window.append(True)
            if trial and verdict.klass is OutcomeClass.SUCCESS:
                h.trial_in_flight = False
                h.trials_passed += 1
                if h.trials_passed >= self.policy.trial_calls:
                    reason = f"{h.trials_passed} trial calls answered"
                    return self._move(h, Input.RECOVERED, reason, now)
            elif trial:
                h.trial_in_flight = False
            return []
        h.faults += 1
        h.consecutive_faults += 1
        h.window.append(False)
        h.last_fault = what
        if retry_after:
            until = now + min(retry_after, self.policy.retry_after_max)
            h.retry_until = until if h.retry_until is None else max(h.retry_until, until)
        if trial:
            return self._move(h, Input.TRIAL_FAILED, f"trial call failed: {what}", now)
        return self._check_trip(h, now)

    def outcome_reported(
        self, name: str, verdict: Verdict, now: float, *, what: str
    ) -> list[StateChange]:
        """An attempt made elsewhere (Asterisk dialled the carrier itself and said how it
        went): it counts toward the streak and the window like one of ours, but takes
        no capacity, gives no response-time sample and is never a trial call.
        """
        h = self.targets.get(name)
        if h is None or verdict.klass is OutcomeClass.NEUTRAL:
            return []
        h.attempts += 1
        if verdict.klass is OutcomeClass.SUCCESS or not verdict.counts_against:
            h.consecutive_faults = 0
            h.window.append(True)
            return []
        h.faults += 1
        h.consecutive_faults += 1
        h.window.append(False)
        h.last_fault = what
        return self._check_trip(h, now)

    def _check_trip(self, h: TargetHealth, now: float) -> list[StateChange]:
        p = self.policy
        if h.consecutive_faults >= p.consecutive_faults:
            reason = f"{h.consecutive_faults} consecutive {h.last_fault} from {h.name}"
            return self._move(h, Input.TRIP, reason, now)
        failures = sum(1 for ok in h.window if not ok)
        if len(h.window) >= p.window_min_volume and failures / len(h.window) >= p.window_ratio:
            reason = f"{failures} of the last {len(h.window)} attempts to {h.name} failed"
            return self._move(h, Input.TRIP, reason, now)
        return []

    def unreachable(self, name: str, now: float, detail: str) -> list[StateChange]:
        """ICMP port unreachable or TCP refused: no need to wait for a string of faults."""
        h = self.targets[name]
        return self._move(h, Input.TRIP, f"{name} unreachable: {detail}", now)

    # -- probes ------------------------------------------------------------------------------
    def probe_result(self, name: str, ok: bool, now: float, detail: str) -> list[StateChange]:
        h = self.targets[name]
        p = self.policy
        if ok:
            h.probe_fail_streak = 0
            if h.state is State.PROBING:
                h.probe_ok_streak += 1
            return []
        h.probe_ok_streak = 0
        h.probe_fail_streak += 1
        if h.state is State.PROBING:
            return self._move(h, Input.PROBE_FAILED, f"probe failed while probing: {detail}", now)
        if h.probe_fail_streak >= p.probe_failures and h.state in (State.UP, State.SUSPECT):
            reason = f"{h.probe_fail_streak} OPTIONS {detail}"
            return self._move(h, Input.TRIP, reason, now)
        return []

    # -- gates ---------------------------------------------------------------------------
    def gate(self, name: str, reason: str, now: float) -> list[StateChange]:
        """Take ``name`` out until :meth:`ungate`, whatever its probes say.

        For a carrier whose registration is lost or refused: it is DOWN with
        ``reason`` (a new hold-down when it was in rotation), and its hold-down
        does not end while the gate stands. The operator's states stay as they
        are; the gate still keeps the target from taking calls.
        """
        h = self.targets[name]
        h.gate = reason
        if h.state in (State.UP, State.SUSPECT, State.PROBING):
            return self._move(h, Input.TRIP, reason, now)
        if h.state is State.DOWN:
            h.reason = reason
        return []

    def hold(self, name: str, reason: str) -> None:
        """Keep ``name`` from taking calls until :meth:`ungate`, without moving its state.

        For a carrier before its first registration: not a fault, nothing to log.
        """
        h = self.targets[name]
        if h.gate is None:
            h.gate = reason

    def ungate(self, name: str, now: float, detail: str) -> list[StateChange]:
        """The gate's cause is gone (registered again): a good probe, and the usual way back.

        A DOWN target whose hold-down is over goes to PROBING now; its
        remaining probes and trial calls still have to pass.
        """
        h = self.targets[name]
        if h.gate is None:
            return self.probe_result(name, True, now, detail)
        h.gate = None
        changes: list[StateChange] = []
        if h.state is State.DOWN and (h.hold_down_until is None or now >= h.hold_down_until):
            changes = self._move(h, Input.HOLD_DOWN_OVER, f"{detail}, hold-down over", now)
        return changes + self.probe_result(name, True, now, detail)

    # -- the operator --------------------------------------------------------------------------
    def drain(
        self, name: str, now: float, reason: str = "drained by operator"
    ) -> list[StateChange]:
        return self._move(self.targets[name], Input.DRAIN, reason, now)

    def force_down(self, name: str, until: float, now: float, reason: str) -> list[StateChange]:
        h = self.targets[name]
        changes = self._move(h, Input.FORCE_DOWN, reason, now)
        if h.state is State.FORCED_DOWN:
            h.forced_until = until
        return changes

    def restore(
        self, name: str, now: float, reason: str = "restored by operator"
    ) -> list[StateChange]:
        return self._move(self.targets[name], self._restore_input(self.targets[name]), reason, now)

    @staticmethod
    def _restore_input(h: TargetHealth) -> Input:
        # Back from the operator's hands: a target that was out for its health
        # comes back through PROBING, like any other (never straight to UP).
        if h.before_operator in (State.SUSPECT, State.DOWN, State.PROBING):
            return Input.RESTORE_PROBING
        return Input.RESTORE

    # -- time ----------------------------------------------------------------------------------
    def tick(self, now: float) -> list[StateChange]:
        """Hold-downs that ended, forced-downs that revert, INVITEs unanswered too long."""
        out: list[StateChange] = []
        p = self.policy
        if now > self._clock:
            self._clock = now
        for h in self.targets.values():
            if (
                h.state is State.FORCED_DOWN
                and h.forced_until is not None
                and now >= h.forced_until
            ):
                out += self._move(h, self._restore_input(h), "forced-down period over", now)
            elif (
                h.state is State.DOWN
                and h.gate is None
                and h.hold_down_until is not None
                and now >= h.hold_down_until
            ):
                held = now - h.since
                out += self._move(h, Input.HOLD_DOWN_OVER, f"hold-down of {held:.0f}s over", now)
            elif h.state is State.SUSPECT and h.suspect_since is not None:
                if now >= h.suspect_since + p.invite_timeout:
                    reason = f"no answer for {p.invite_timeout:.1f}s after turning suspect"
                    out += self._move(h, Input.SILENCE_CONFIRMED, reason, now)
            elif h.state is State.UP and h.outstanding:
                self._prune(h, now)
                limit = h.timer.timeout()
                late = sum(1 for t in h.outstanding.values() if now >= t + limit)
                if late >= p.suspect_outstanding:
                    reason = f"{late} INVITEs unanswered after {limit * 1000:.0f} ms"
                    out += self._move(h, Input.SILENT, reason, now)
                    h.suspect_since = now
            if h.state is State.UP and (h.outstanding or h.silence.since is not None):
                self._tick_silence(h, now)
        return out
