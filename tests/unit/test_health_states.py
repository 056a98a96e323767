"""The target state machine, exhaustively: every state x every input, then any sequence of them.

Like h2's ``test_state_machines.py``: a table of what each public call does from each state,
a Hypothesis test that throws arbitrary sequences (calls of every outcome class, first
responses, probes, ticks, the operator) at the engine and checks every move against
TRANSITIONS, and a flapping carrier whose state changes must stay within the bound that
hold-down doubling allows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunkguard.health import (
    TIMEOUT,
    TRANSITIONS,
    UNREACHABLE,
    FailureTable,
    HealthEngine,
    HealthPolicy,
    Input,
    State,
    StateChange,
    Verdict,
)

UP, SUSPECT, DOWN, PROBING = State.UP, State.SUSPECT, State.DOWN, State.PROBING
DRAINED, FORCED_DOWN = State.DRAINED, State.FORCED_DOWN
TABLE = FailureTable()
CANCELLED = "cancelled"
Result = int | str
LEGAL = {(old, new) for (old, _), new in TRANSITIONS.items()}


def verdict_of(result: Result) -> Verdict | None:
    if isinstance(result, int):
        return TABLE.classify(result)
    return None if result == CANCELLED else FailureTable.local_failure(result)


def call(
    engine: HealthEngine, name: str, result: Result, now: float, **kw: float | None
) -> list[StateChange]:
    """One attempt reported as the proxy core reports it (unreachable: a trip, then the end)."""
    attempt = engine.attempt_started(name, now)
    out: list[StateChange] = []
    if isinstance(result, int):
        out += engine.first_response(name, attempt, now)
    elif result == UNREACHABLE:
        out += engine.unreachable(name, now, "port unreachable")
    retry_after = kw.get("retry_after") if isinstance(result, int) else None  # only a response
    out += engine.attempt_ended(
        name, attempt, verdict_of(result), now, what=str(result), retry_after=retry_after
    )
    return out


# -- every state x every public input ----------------------------------------------------------
def in_state(state: State) -> tuple[HealthEngine, float]:
    """A one-target engine brought to ``state`` through public calls only; returns it and now."""
    engine = HealthEngine(["a"], HealthPolicy(), random.Random(1))
    now = 0.0
    if state is SUSPECT:
        for _ in range(3):
            engine.attempt_started("a", now)
        now = 2.0  # no samples yet: the timer is invite_timeout
        engine.tick(now)
    elif state in (DOWN, PROBING):
        [down] = engine.unreachable("a", now, "port unreachable")
        if state is PROBING:
            now = down.at + (down.hold_down or 0.0)
            engine.tick(now)
    elif state is DRAINED:
        engine.drain("a", now)
    elif state is FORCED_DOWN:
        engine.force_down("a", until=300.0, now=now, reason="drill")
    assert engine.state("a") is state
    return engine, now


Action = Callable[[HealthEngine, float], list[StateChange]]


def _probes(ok: bool, n: int) -> Action:
    def act(e: HealthEngine, now: float) -> list[StateChange]:
        out: list[StateChange] = []
        for i in range(n):
            out += e.probe_result("a", ok, now + i, "answered 200" if ok else "timeouts")
        return out

    return act


def _calls(result: Result, n: int) -> Action:
    def act(e: HealthEngine, now: float) -> list[StateChange]:
        return [c for i in range(n) for c in call(e, "a", result, now + i)]

    return act


def _silent_invites(e: HealthEngine, now: float) -> list[StateChange]:
    for _ in range(3):
        e.attempt_started("a", now)
    return e.tick(now + 2.0)


ACTIONS: dict[str, Action] = {
    "unreachable": lambda e, now: e.unreachable("a", now, "port unreachable"),
    "3 probes fail": _probes(False, 3),
    "probe ok": _probes(True, 1),
    "call answered": _calls(200, 1),
    "3 calls answered": _calls(200, 3),
    "call 503": _calls(503, 1),
    "3 INVITEs silent": _silent_invites,
    "10 minutes pass": lambda e, now: e.tick(now + 600.0),
    "drain": lambda e, now: e.drain("a", now),
    "force down": lambda e, now: e.force_down("a", now + 300.0, now, "drill"),
    "restore": lambda e, now: e.restore("a", now),
}

# What each action leaves a target in, from each state. Read a row as "a target that is
# <state>, when <action> happens, becomes <cell>".
S, F, R = DRAINED, FORCED_DOWN, None  # R: stays where it was
EXPECTED: dict[State, dict[str, State | None]] = {
    UP: {
        "unreachable": DOWN, "3 probes fail": DOWN, "probe ok": R, "call answered": R,
        "3 calls answered": R, "call 503": R, "3 INVITEs silent": SUSPECT,
        "10 minutes pass": R, "drain": S, "force down": F, "restore": R,
    },
    SUSPECT: {
        "unreachable": DOWN, "3 probes fail": DOWN, "probe ok": R, "call answered": UP,
        "3 calls answered": UP, "call 503": UP,  # any response proves it alive
        "3 INVITEs silent": DOWN, "10 minutes pass": DOWN, "drain": S, "force down": F,
        "restore": R,
    },
    DOWN: {
        "unreachable": R, "3 probes fail": R, "probe ok": R, "call answered": R,
        "3 calls answered": R, "call 503": R, "3 INVITEs silent": R,
        "10 minutes pass": PROBING, "drain": S, "force down": F, "restore": R,
    },
    PROBING: {
        "unreachable": DOWN, "3 probes fail": DOWN, "probe ok": R, "call answered": R,
        "3 calls answered": UP, "call 503": DOWN, "3 INVITEs silent": R,
        "10 minutes pass": R, "drain": S, "force down": F, "restore": R,
    },
    DRAINED: {
        "unreachable": R, "3 probes fail": R, "probe ok": R, "call answered": R,
        "3 calls answered": R, "call 503": R, "3 INVITEs silent": R, "10 minutes pass": R,
        "drain": R, "force down": R, "restore": UP,
    },
    FORCED_DOWN: {
        "unreachable": R, "3 probes fail": R, "probe ok": R, "call answered": R,
        "3 calls answered": R, "call 503": R, "3 INVITEs silent": R,
        "10 minutes pass": UP,  # the drill's revert time
        "drain": S, "force down": R, "restore": UP,
    },
}  # fmt: skip


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_every_state_times_every_input(state: State, action: str) -> None:
    engine, now = in_state(state)
    changes = ACTIONS[action](engine, now)
    expected = EXPECTED[state][action] or state
    assert engine.state("a") is expected
    current = state
    for change in changes:
        assert change.old is current
        assert (change.old, change.new) in LEGAL, change
        current = change.new
    assert current is expected
    if expected is state:
        assert changes == []


def test_restore_of_a_target_that_was_out_goes_to_probing() -> None:
    for state, act in ((DRAINED, "drain"), (FORCED_DOWN, "force down")):
        engine, now = in_state(DOWN)
        ACTIONS[act](engine, now)
        assert engine.state("a") is state
        [change] = ACTIONS["restore"](engine, now + 1)
        assert (change.old, change.new) == (state, PROBING)


def test_the_table_exercises_every_legal_move() -> None:
    moves = {
        (state, expected)
        for state, row in EXPECTED.items()
        for expected in row.values()
        if expected is not None and expected is not state
    }
    # The table starts DRAINED and FORCED_DOWN from UP; the test above covers the rest.
    moves |= {(DRAINED, PROBING), (FORCED_DOWN, PROBING)}
    assert moves == LEGAL


# -- any sequence of inputs (Hypothesis) -------------------------------------------------------
NAMES = ("a", "b")
RESULTS: list[Result] = [
    200, 408, 500, 502, 503, 504, 401, 403, 407, 599, 488, 606,
    404, 480, 484, 486, 600, 603, 604, 302, 487, TIMEOUT, UNREACHABLE, CANCELLED,
]  # fmt: skip
FAULTS: list[Result] = [503, 500, TIMEOUT, UNREACHABLE]


@dataclass(frozen=True)
class Call:
    target: str
    result: Result
    retry_after: float | None = None
    times: int = 1


@dataclass(frozen=True)
class Start:
    target: str


@dataclass(frozen=True)
class Answer:
    index: int


@dataclass(frozen=True)
class End:
    index: int
    result: Result
    retry_after: float | None = None


@dataclass(frozen=True)
class Probe:
    target: str
    ok: bool
    unreachable: bool = False


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Drain:
    target: str


@dataclass(frozen=True)
class Force:
    target: str
    seconds: float


@dataclass(frozen=True)
class Restore:
    target: str


Op = Call | Start | Answer | End | Probe | Wait | Drain | Force | Restore

targets = st.sampled_from(NAMES)
retry_afters = st.one_of(st.none(), st.sampled_from([1.0, 45.0, 120.0, 5000.0]))
OPS: st.SearchStrategy[Op] = st.one_of(
    st.builds(Call, targets, st.sampled_from(RESULTS), retry_afters),
    st.builds(Call, targets, st.sampled_from(FAULTS), st.none(), st.integers(2, 12)),
    st.builds(Call, targets, st.just(200), st.none(), st.integers(2, 4)),
    st.builds(Start, targets),
    st.builds(Answer, st.integers(0, 9)),
    st.builds(End, st.integers(0, 9), st.sampled_from(RESULTS), retry_afters),
    st.builds(Probe, targets, st.booleans(), st.booleans()),
    st.builds(
        Wait,
        st.one_of(
            st.floats(0.0, 3.0),
            st.sampled_from([0.3, 2.0, 30.0, 66.0, 600.0]),
            st.floats(0.0, 700.0),
        ),
    ),
    st.builds(Drain, targets),
    st.builds(Force, targets, st.floats(0.0, 900.0)),
    st.builds(Restore, targets),
)
# Which inputs of the table each kind of call may feed the machine.
INPUTS_OF: dict[type, frozenset[Input]] = {
    Call: frozenset({Input.TRIP, Input.TRIAL_FAILED, Input.RECOVERED, Input.ANSWERED}),
    End: frozenset({Input.TRIP, Input.TRIAL_FAILED, Input.RECOVERED}),
    Answer: frozenset({Input.ANSWERED}),
    Start: frozenset(),
    Probe: frozenset({Input.TRIP, Input.PROBE_FAILED}),
    Wait: frozenset(
        {
            Input.HOLD_DOWN_OVER,
            Input.SILENCE_CONFIRMED,
            Input.SILENT,
            Input.RESTORE,
            Input.RESTORE_PROBING,
        }
    ),
    Drain: frozenset({Input.DRAIN}),
    Force: frozenset({Input.FORCE_DOWN}),
    Restore: frozenset({Input.RESTORE, Input.RESTORE_PROBING}),
}
TWITCHY = HealthPolicy(
    consecutive_faults=2,
    window_size=4,
    window_ratio=0.5,
    window_min_volume=2,
    probe_failures=1,
    probe_successes=1,
    trial_calls=1,
    hold_down=5.0,
    hold_down_max=40.0,
    hold_down_window=100.0,
    hold_down_jitter=0.2,
    retry_after_max=50.0,
    suspect_outstanding=1,
    invite_timeout=1.0,
    response_timeout_floor=0.1,
)


@dataclass
class Trips:
    """What a spec-reader expects of one target's hold-downs, kept beside the engine."""

    last_at: float | None = None
    level: float = 0.0  # the un-jittered hold-down of the last trip
    hold: float = 0.0  # what the last trip got
    up_since: bool = True  # back UP since the last trip
    retry_until: float | None = None
    down_until: float | None = None
    forced_until: float | None = None


@dataclass
class Run:
    engine: HealthEngine
    now: float = 0.0
    states: dict[str, State] = field(default_factory=lambda: dict.fromkeys(NAMES, UP))
    trips: dict[str, Trips] = field(default_factory=lambda: {n: Trips() for n in NAMES})
    pending: list[tuple[str, int]] = field(default_factory=list)
    seen: set[tuple[State, State]] = field(default_factory=set)

    @property
    def policy(self) -> HealthPolicy:
        return self.engine.policy

    def do(self, op: Op) -> None:
        engine, now = self.engine, self.now
        match op:
            case Call(target, result, retry_after, times):
                for _ in range(times):
                    self._retry_after(target, result, retry_after)
                    self.check(op, call(engine, target, result, now, retry_after=retry_after))
            case Start(target):
                self.pending.append((target, engine.attempt_started(target, now)))
            case Answer(index) if self.pending:
                target, attempt = self.pending[index % len(self.pending)]
                self.check(op, engine.first_response(target, attempt, now))
            case End(index, result, retry_after) if self.pending:
                target, attempt = self.pending.pop(index % len(self.pending))
                retry_after = retry_after if isinstance(result, int) else None
                self._retry_after(target, result, retry_after)
                verdict = verdict_of(result)
                ended = engine.attempt_ended(
                    target, attempt, verdict, now, what=str(result), retry_after=retry_after
                )
                self.check(op, ended)
            case Probe(target, ok, unreachable):
                changes: list[StateChange] = []
                if unreachable and not ok:  # what the prober does with a transport error
                    changes += engine.unreachable(target, now, "OPTIONS port unreachable")
                changes += engine.probe_result(target, ok, now, "answered 200")
                self.check(op, changes)
            case Wait(seconds):
                deadline = engine.next_deadline()
                self.now = now = now + seconds
                changes = engine.tick(now)
                if deadline is None or now < deadline:
                    assert changes == [], "tick() acted before next_deadline()"
                self.check(op, changes)
                # A deadline at or before now is armed again at once by the proxy: another
                # tick() at this instant must act on it or move it past now, or the timer
                # queue spins for ever. (A move in one tick, such as a drill's revert, may make
                # another one due at once; a tick that only forgets stale INVITEs moves it.)
                for _ in range(4):
                    after = engine.next_deadline()
                    if after is None or after > now:
                        break
                    more = engine.tick(now)
                    moved = engine.next_deadline()
                    assert more or moved is None or moved > now, (
                        f"next_deadline() {after} <= {now}, and tick() neither acts nor moves it"
                    )
                    self.check(op, more)
                else:
                    pytest.fail("tick() keeps finding work at one instant")
                self._check_timers()
            case Drain(target):
                self.check(op, engine.drain(target, now))
            case Force(target, seconds):
                self.check(op, engine.force_down(target, now + seconds, now, "drill"))
                if engine.state(target) is FORCED_DOWN:
                    self.trips[target].forced_until = now + seconds
            case Restore(target):
                self.check(op, engine.restore(target, now))

    def _retry_after(self, target: str, result: Result, retry_after: float | None) -> None:
        verdict = verdict_of(result)
        if not isinstance(result, int):
            return  # a Retry-After comes with a response
        if retry_after and verdict is not None and verdict.counts_against:
            t = self.trips[target]
            until = self.now + min(retry_after, self.policy.retry_after_max)
            t.retry_until = until if t.retry_until is None else max(t.retry_until, until)

    def check(self, op: Op, changes: list[StateChange]) -> None:
        allowed = INPUTS_OF[type(op)]
        for change in changes:
            name = change.target
            old = self.states[name]
            assert change.old is old, f"{change} but {name} was {old}"
            assert change.at == self.now
            legal = [i for i in allowed if TRANSITIONS.get((old, i)) is change.new]
            assert legal, f"{type(op).__name__} moved {name} {old} -> {change.new}"
            if not isinstance(op, Wait):
                assert name == getattr(op, "target", name) or isinstance(op, Answer | End)
            if old in (DRAINED, FORCED_DOWN):
                assert isinstance(op, Drain | Restore | Wait), "health input moved an admin state"
            self.states[name] = change.new
            self.seen.add((old, change.new))
            self._follow(change)
        for name in NAMES:
            state = self.engine.state(name)
            assert state is self.states[name]
            assert self.engine.admits(name) == (state is UP) or state is PROBING

    def _follow(self, change: StateChange) -> None:
        t = self.trips[change.target]
        if change.old is FORCED_DOWN:
            t.forced_until = None
        if change.new is UP:
            t.up_since = True
        if change.new is not DOWN:
            assert change.hold_down is None
            return
        p, now = self.policy, change.at
        level = self.engine.targets[change.target].hold_down
        hold = change.hold_down
        assert hold is not None
        within = t.last_at is not None and now - t.last_at <= p.hold_down_window
        floor = None if t.retry_until is None else t.retry_until - now
        doubled = min(max(t.level, p.hold_down) * 2, p.hold_down_max) if within else p.hold_down
        # A Retry-After floor raises the level the next re-trip doubles from.
        expected = doubled if floor is None else max(doubled, min(hold, p.hold_down_max))
        assert level == pytest.approx(expected)
        if within:
            assert level >= t.level
        base = doubled
        lo = base * (1 - p.hold_down_jitter) - 1e-9
        hi = min(base * (1 + p.hold_down_jitter), p.hold_down_max) + 1e-9
        if base >= p.hold_down_max:
            lo = hi = p.hold_down_max  # no jitter at the cap
            lo -= 1e-9
            hi += 1e-9
        if floor is None:
            assert lo <= hold <= hi
        else:
            assert hold >= floor - 1e-9
            assert lo <= hold <= hi or hold == pytest.approx(floor)
        if within and not t.up_since:
            # Still failing: the next hold-down is never shorter than the last one (a
            # Retry-After beyond hold_down_max is the carrier's own, not a level to keep).
            assert hold >= min(t.hold, p.hold_down_max) - 1e-9
        t.last_at, t.level, t.hold = now, level, hold
        t.up_since = False
        t.retry_until = None
        t.down_until = now + hold

    def _check_timers(self) -> None:
        """After a tick, nothing that was due is left undone."""
        for name in NAMES:
            t, state = self.trips[name], self.states[name]
            if state is DOWN and t.down_until is not None:
                assert self.now < t.down_until, "a hold-down over, still DOWN"
            if state is FORCED_DOWN and t.forced_until is not None:
                assert self.now < t.forced_until, "a forced-down past its revert time"


@settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ops=st.lists(OPS, min_size=20, max_size=120),
    policy=st.sampled_from([HealthPolicy(), TWITCHY]),
    probes=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_sequence_of_inputs_moves_only_along_the_table(
    ops: list[Op], policy: HealthPolicy, probes: bool, seed: int
) -> None:
    engine = HealthEngine(list(NAMES), policy, random.Random(seed), probes_enabled=probes)
    run = Run(engine)
    for op in ops:
        run.do(op)


def test_the_random_runs_reach_every_legal_move() -> None:
    # The property above is only as good as the states it visits: the same strategy, a fixed
    # seed, must walk every (old, new) pair the table allows.
    rng = random.Random(2024)
    seen: set[tuple[State, State]] = set()
    for example in range(600):
        policy = TWITCHY if example % 2 else HealthPolicy()
        run = Run(HealthEngine(list(NAMES), policy, random.Random(example)))
        for _ in range(80):
            run.do(_random_op(rng))
        seen |= run.seen
    assert seen == LEGAL


def _random_op(rng: random.Random) -> Op:
    target = rng.choice(NAMES)
    retry_after = rng.choice([None, None, None, 45.0, 5000.0])
    kind = rng.randrange(11)
    if kind == 0:
        return Call(target, rng.choice(RESULTS), retry_after)
    if kind == 1:
        return Call(target, rng.choice(FAULTS), None, rng.randint(2, 12))
    if kind == 2:
        return Call(target, 200, None, rng.randint(2, 4))
    if kind == 3:
        return Start(target)
    if kind == 4:
        return Answer(rng.randrange(10))
    if kind == 5:
        return End(rng.randrange(10), rng.choice(RESULTS), retry_after)
    if kind == 6:
        return Probe(target, rng.random() < 0.5, rng.random() < 0.3)
    if kind == 7:
        return Wait(rng.choice([0.1, 0.5, 1.0, 2.0, 30.0, 66.0, 600.0, rng.uniform(0, 700)]))
    if kind == 8:
        return Drain(target) if rng.random() < 0.3 else Restore(target)
    if kind == 9:
        return Force(target, rng.uniform(0, 900)) if rng.random() < 0.3 else Restore(target)
    return Wait(rng.uniform(0, 3))


# -- a flapping carrier --------------------------------------------------------------------------
def max_trips(policy: HealthPolicy, duration: float) -> int:
    """The most trips that fit in ``duration`` when every re-trip doubles the hold-down.

    A target cannot trip again before its hold-down is over, and each hold-down is at least
    (1 - jitter) x base x 2^k, capped: trips 1, 2, 3... come no sooner than 0, 27, 81, 189,
    405, 837 s with the defaults.
    """
    trips, elapsed, level = 1, 0.0, policy.hold_down
    while True:
        elapsed += level * (1 - policy.hold_down_jitter)
        if elapsed > duration:
            return trips
        trips += 1
        level = min(level * 2, policy.hold_down_max)


# A trip costs at most UP/PROBING -> DOWN, DOWN -> PROBING and PROBING -> UP; a failed
# PROBING -> DOWN is the next trip's first change.
CHANGES_PER_TRIP = 3


def flap(policy: HealthPolicy, seed: int, duration: float = 600.0) -> list[StateChange]:
    """A carrier healthy for 20 s, dead for 20 s, and so on: one call a second while it is
    admitted, probes every 10 s (2 s while out) as the prober sends them."""
    engine = HealthEngine(["a"], policy, random.Random(seed))

    def healthy(t: float) -> bool:
        return int(t // 20.0) % 2 == 0

    changes: list[StateChange] = []
    next_probe = 0.0
    t = 0.0
    while t < duration:
        changes += engine.tick(t)
        if t >= next_probe:
            ok = healthy(t)
            changes += engine.probe_result("a", ok, t, "answered 200" if ok else "timeouts")
            out = engine.state("a") is not UP
            next_probe = t + (2.0 if out else 10.0)
        if engine.admits("a"):
            status = 200 if healthy(t) else 503
            attempt = engine.attempt_started("a", t)
            changes += engine.first_response("a", attempt, t + 0.05)
            verdict = TABLE.classify(status)
            changes += engine.attempt_ended("a", attempt, verdict, t + 0.1, what=str(status))
        t += 1.0
    return changes


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_flapping_carrier_is_damped_by_hold_down_doubling(seed: int) -> None:
    policy, duration = HealthPolicy(), 600.0
    changes = flap(policy, seed, duration)
    bound = max_trips(policy, duration)
    assert bound == 5  # 30 + 60 + 120 + 240 s of hold-down (less 10 %) fit; 480 more do not
    trips = [c for c in changes if c.new is DOWN]
    assert 3 <= len(trips) <= bound
    assert len(changes) <= CHANGES_PER_TRIP * bound  # 15, where a flap per period would be 45
    holds = [c.hold_down or 0.0 for c in trips]
    for k, hold in enumerate(holds):
        level = min(policy.hold_down * 2**k, policy.hold_down_max)
        assert level * 0.9 <= hold <= min(level * 1.1, policy.hold_down_max)
    outages = [c for c in changes if c.old is UP]
    flips = [c for c in changes if UP in (c.old, c.new)]
    assert any(c.new is UP for c in changes)  # it did come back in a healthy spell
    assert len(outages) <= bound
    assert len(flips) <= 2 * len(outages)
    for change in changes:
        assert (change.old, change.new) in LEGAL
    # While it stays failing, every hold-down is longer than the one before.
    assert holds == sorted(holds)


def test_with_no_doubling_the_same_flap_would_break_the_bound() -> None:
    # The bound is not loose: with a flat 30 s hold-down the same carrier trips every period.
    flat = HealthPolicy(hold_down_max=30.0)
    changes = flap(flat, seed=1)
    trips = [c for c in changes if c.new is State.DOWN]
    assert len(trips) > 2 * max_trips(HealthPolicy(), 600.0)
    assert len(changes) > CHANGES_PER_TRIP * max_trips(HealthPolicy(), 600.0)
