"""The health engine on a fake clock: thresholds, recovery, hold-downs, the operator, timers.

Every test drives :class:`HealthEngine` through its public calls with an explicit ``now``
and a seeded ``random.Random``; nothing sleeps and nothing touches a socket.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from trunkguard.health import (
    TIMEOUT,
    UNREACHABLE,
    FailureTable,
    HealthEngine,
    HealthPolicy,
    ResponseTimer,
    State,
    StateChange,
)

UP, SUSPECT, DOWN, PROBING = State.UP, State.SUSPECT, State.DOWN, State.PROBING
DRAINED, FORCED_DOWN = State.DRAINED, State.FORCED_DOWN
TABLE = FailureTable()
CANCELLED = "cancelled"  # the caller gave up: no verdict at all
Result = int | str  # a final status, TIMEOUT, UNREACHABLE or CANCELLED


@dataclass
class Feed:
    """One engine and a fake clock; every change the engine answers is kept in ``changes``."""

    engine: HealthEngine
    now: float = 0.0
    changes: list[StateChange] = field(default_factory=list)

    def _keep(self, changes: list[StateChange]) -> list[StateChange]:
        self.changes += changes
        return changes

    def call(
        self, name: str, result: Result, *, retry_after: float | None = None
    ) -> list[StateChange]:
        """One attempt to ``name`` that ends at once, reported as the proxy core reports it."""
        engine, now = self.engine, self.now
        attempt = engine.attempt_started(name, now)
        out: list[StateChange] = []
        if isinstance(result, int):
            out += engine.first_response(name, attempt, now)
            verdict = TABLE.classify(result)
        elif result == CANCELLED:
            verdict = None
        else:
            if result == UNREACHABLE:
                out += engine.unreachable(name, now, "port unreachable")
            verdict = FailureTable.local_failure(result)
        out += engine.attempt_ended(
            name, attempt, verdict, now, what=str(result), retry_after=retry_after
        )
        return self._keep(out)

    def calls(self, name: str, result: Result, n: int) -> list[StateChange]:
        out: list[StateChange] = []
        for _ in range(n):
            out += self.call(name, result)
        return out

    def probe(self, name: str, ok: bool) -> list[StateChange]:
        detail = "answered 200" if ok else "timeouts"
        return self._keep(self.engine.probe_result(name, ok, self.now, detail))

    def at(self, when: float) -> list[StateChange]:
        """Move the clock to ``when`` and let the engine act on it."""
        assert when >= self.now
        self.now = when
        return self._keep(self.engine.tick(when))

    def state(self, name: str = "a") -> State:
        return self.engine.state(name)


def feed(policy: HealthPolicy | None = None, seed: int = 7, probes: bool = True) -> Feed:
    return Feed(HealthEngine(["a", "b"], policy, random.Random(seed), probes_enabled=probes))


def moves(changes: list[StateChange]) -> list[tuple[State, State]]:
    return [(c.old, c.new) for c in changes]


def trip_to_probing(f: Feed, name: str = "a") -> StateChange:
    """Take an UP target DOWN (unreachable) and through its hold-down to PROBING."""
    [down] = f.call(name, UNREACHABLE)
    assert down.hold_down is not None
    [probing] = f.at(f.now + down.hold_down)
    assert (probing.old, probing.new) == (DOWN, PROBING)
    return down


# -- 1. one bad call never switches; a string of them does ---------------------------------------
def test_one_503_does_not_trip_but_five_in_a_row_do() -> None:
    f = feed()
    assert f.call("a", 503) == []
    assert f.state() is UP
    assert f.calls("a", 503, 3) == []
    [change] = f.call("a", 503)
    assert (change.target, change.old, change.new) == ("a", UP, DOWN)
    assert change.reason == "5 consecutive 503 from a"
    assert change.counts == {
        "consecutive_faults": 5,
        "window_failures": 5,
        "window_size": 5,
        "trips": 1,
    }
    assert change.hold_down is not None and 27.0 <= change.hold_down <= 33.0
    assert f.state("b") is UP


def test_a_success_in_between_resets_the_consecutive_count() -> None:
    f = feed()
    assert f.calls("a", 503, 4) + f.call("a", 200) + f.calls("a", 503, 4) == []
    assert f.state() is UP
    assert f.engine.targets["a"].consecutive_faults == 4
    [change] = f.call("a", 503)
    assert change.reason == "5 consecutive 503 from a"


@pytest.mark.parametrize("fine", [200, 486, 404, 488])
def test_answers_that_are_not_faults_reset_the_count(fine: int) -> None:
    # Destination final (486, 404) and route mismatch (488): the carrier is fine. The ratio
    # rule would trip on 80 % failures, so it is out of the way here.
    f = feed(HealthPolicy(window_size=100, window_min_volume=100))
    for _ in range(4):
        assert f.calls("a", 503, 4) + f.call("a", fine) == []
    assert f.state() is UP


@pytest.mark.parametrize("neutral", [487, CANCELLED])
def test_neutral_endings_neither_count_nor_reset(neutral: Result) -> None:
    f = feed()
    assert f.calls("a", 503, 2) + f.call("a", neutral) + f.calls("a", 503, 2) == []
    assert f.engine.targets["a"].consecutive_faults == 4
    assert moves(f.call("a", 503)) == [(UP, DOWN)]


@pytest.mark.parametrize("fault", [408, 500, 502, 503, 504, 401, 403, 407, TIMEOUT])
def test_every_trunk_fault_counts(fault: Result) -> None:
    f = feed()
    assert f.calls("a", fault, 4) == []
    [change] = f.call("a", fault)
    assert change.reason == f"5 consecutive {fault} from a"


def test_unreachable_trips_at_once() -> None:
    f = feed()
    [change] = f.call("a", UNREACHABLE)
    assert (change.old, change.new) == (UP, DOWN)
    assert change.reason == "a unreachable: port unreachable"


# -- 2. failure ratio over a sliding window with a minimum volume --------------------------------
def test_half_of_the_last_attempts_trips_once_there_are_ten() -> None:
    f = feed()
    for _ in range(4):
        assert f.call("a", 200) + f.call("a", 503) == []
    assert f.call("a", 200) == []
    [change] = f.call("a", 503)  # 5 of 10: 50 %
    assert change.reason == "5 of the last 10 attempts to a failed"


def test_ten_of_the_last_twenty_trips() -> None:
    f = feed()
    assert f.calls("a", 200, 10) == []
    for _ in range(9):
        assert f.call("a", 503) + f.call("a", 200) == []
    [change] = f.call("a", 503)
    assert change.reason == "10 of the last 20 attempts to a failed"
    assert change.counts == {
        "consecutive_faults": 1,
        "window_failures": 10,
        "window_size": 20,
        "trips": 1,
    }


def test_four_failures_in_nine_do_not_trip() -> None:
    f = feed()
    for result in (503, 200, 503, 200, 503, 200, 503, 200, 200):
        assert f.call("a", result) == []
    assert f.state() is UP


def test_below_the_minimum_volume_even_a_majority_does_not_trip() -> None:
    f = feed()
    for result in (503, 503, 503, 503, 200, 503, 200, 200, 200):  # 5 of 9
        assert f.call("a", result) == []
    assert f.state() is UP
    [change] = f.call("a", 503)  # 6 of 10
    assert change.reason == "6 of the last 10 attempts to a failed"


def test_the_window_slides() -> None:
    f = feed()
    assert f.calls("a", 200, 100) == []
    assert len(f.engine.targets["a"].window) == 20
    pattern = [503, 503, 503, 503, 200] * 2 + [503]
    for result in pattern:  # never 5 in a row; 9 failures in the last 20
        assert f.call("a", result) == []
    # Over every attempt so far this is 10 of 112; over the last 20 it is half.
    [change] = f.call("a", 503)
    assert change.reason == "10 of the last 20 attempts to a failed"


# -- 3. alive on OPTIONS, dead on INVITE: the passive path trips it, probes alone never heal it --
def test_options_alive_invite_dead_carrier_never_comes_back_on_probes() -> None:
    f = feed()
    assert f.probe("a", True) == []
    f.calls("a", 503, 5)
    [down] = f.changes
    assert down.reason == "5 consecutive 503 from a"
    holds: list[float] = []
    for _ in range(4):
        assert down.new is DOWN and down.hold_down is not None
        holds.append(down.hold_down)
        until = down.at + down.hold_down
        while f.now + 2.0 < until:  # good probes all through the hold-down change nothing
            assert f.at(f.now + 2.0) + f.probe("a", True) == []
            assert not f.engine.admits("a")
        [probing] = f.at(until)
        assert (probing.old, probing.new) == (DOWN, PROBING)
        for _ in range(2):
            assert not f.engine.admits("a")  # R=2 good probes first
            f.at(f.now + 2.0)
            assert f.probe("a", True) == []
        assert f.engine.admits("a")
        [down] = f.call("a", 503)  # the trial call fails: back DOWN, for longer
        assert (down.old, down.new) == (PROBING, DOWN)
        assert down.reason == "trial call failed: 503"
    assert all(c.new is not UP for c in f.changes)
    assert holds == sorted(holds) and holds[-1] > 4 * holds[0]


def test_probing_needs_two_probes_then_three_trials_one_at_a_time() -> None:
    f = feed()
    down = trip_to_probing(f)
    assert f.engine.targets["a"].hold_down_until is None
    engine = f.engine
    assert not engine.admits("a")
    f.probe("a", True)
    assert not engine.admits("a")
    f.probe("a", False)  # "in a row": one failed probe while PROBING is a trip
    assert f.state() is DOWN
    assert down.hold_down is not None
    f.at(f.now + 1000.0)
    assert f.state() is PROBING
    f.probe("a", True)
    f.probe("a", True)
    for _ in range(20):  # more good probes still are not a trial call
        assert f.probe("a", True) == []
    assert f.state() is PROBING and engine.admits("a")
    for n in range(3):
        attempt = engine.attempt_started("a", f.now)
        assert not engine.admits("a")  # one trial at a time
        assert engine.first_response("a", attempt, f.now + 0.1) == []
        assert not engine.admits("a")
        changes = engine.attempt_ended("a", attempt, TABLE.classify(200), f.now + 1, what="200")
        if n < 2:
            assert changes == [] and engine.admits("a") and f.state() is PROBING
    [up] = changes
    assert (up.old, up.new, up.reason) == (PROBING, UP, "3 trial calls answered")
    assert engine.admits("a")


@pytest.mark.parametrize("ending", [CANCELLED, 487, 486, 488])
def test_a_trial_that_proves_nothing_frees_the_slot_without_counting(ending: Result) -> None:
    f = feed(probes=False)
    trip_to_probing(f)
    assert f.engine.admits("a")  # without probes, trials start at once
    assert f.calls("a", 200, 2) == []
    assert f.call("a", ending) == []
    assert f.engine.admits("a") and f.state() is PROBING
    assert moves(f.call("a", 200)) == [(PROBING, UP)]


def test_a_failed_trial_goes_back_down_with_a_longer_hold_down() -> None:
    f = feed(probes=False)
    first = trip_to_probing(f)
    f.call("a", 200)
    [again] = f.call("a", TIMEOUT)
    assert (again.old, again.new, again.reason) == (PROBING, DOWN, "trial call failed: timeout")
    assert first.hold_down is not None and again.hold_down is not None
    assert 54.0 <= again.hold_down <= 66.0 and again.hold_down > first.hold_down
    assert not f.engine.admits("a")


# -- 6. Retry-After ------------------------------------------------------------------------------
def test_retry_after_is_a_floor_for_the_hold_down() -> None:
    f = feed()
    f.calls("a", 503, 4)
    [change] = f.call("a", 503, retry_after=120)
    assert change.hold_down is not None and change.hold_down >= 120.0
    assert f.at(119.9) == [] and f.state() is DOWN
    assert moves(f.at(120.0)) == [(DOWN, PROBING)]


@pytest.mark.parametrize(("cap", "expected"), [(600.0, 600.0), (300.0, 300.0), (10.0, None)])
def test_retry_after_is_capped(cap: float, expected: float | None) -> None:
    f = feed(HealthPolicy(retry_after_max=cap))
    f.calls("a", 503, 4)
    [change] = f.call("a", 503, retry_after=86_400)
    assert change.hold_down is not None
    if expected is None:  # a cap below the base hold-down leaves the jittered base
        assert 27.0 <= change.hold_down <= 33.0
    else:
        assert change.hold_down == pytest.approx(expected)


def test_retry_after_counts_from_the_503_that_carried_it() -> None:
    f = feed()
    f.call("a", 503, retry_after=120)
    f.now = 10.0
    [change] = f.calls("a", 503, 4)
    assert change.hold_down is not None
    assert change.at + change.hold_down == pytest.approx(120.0)  # when the carrier asked


def test_an_old_retry_after_does_not_lengthen_a_later_trip() -> None:
    f = feed()
    f.call("a", 503, retry_after=600)
    for t in range(1, 3600, 60):
        f.now = float(t)
        assert f.call("a", 200) == []
    f.now = 3600.0
    [change] = f.calls("a", 503, 5)
    assert change.hold_down is not None and change.hold_down <= 33.0


# -- 8. drains and forced-downs ------------------------------------------------------------------
def test_drained_target_takes_no_calls_and_ignores_health_input() -> None:
    f = feed()
    [drain] = f.engine.drain("a", 0.0)
    assert (drain.old, drain.new, drain.reason) == (UP, DRAINED, "drained by operator")
    assert not f.engine.admits("a")
    quiet = (
        f.calls("a", 503, 30)
        + f.call("a", UNREACHABLE)
        + [c for _ in range(5) for c in f.probe("a", False)]
        + f.at(10_000.0)
    )
    assert quiet == [] and f.state() is DRAINED
    assert f.engine.next_deadline() is None
    [back] = f.engine.restore("a", f.now)
    assert (back.old, back.new, back.reason) == (DRAINED, UP, "restored by operator")
    assert f.engine.admits("a")
    assert f.call("a", 503) == []  # a fresh start: one fault is one fault


def test_forced_down_reverts_by_itself_at_its_time_and_not_before() -> None:
    f = feed()
    [forced] = f.engine.force_down("a", until=300.0, now=0.0, reason="drill")
    assert (forced.old, forced.new, forced.reason) == (UP, FORCED_DOWN, "drill")
    assert not f.engine.admits("a")
    assert f.engine.next_deadline() == 300.0
    assert f.calls("a", 200, 5) + f.probe("a", True) == []  # health input does not end a drill
    assert f.at(150.0) + f.at(299.999) == [] and f.state() is FORCED_DOWN
    [revert] = f.at(300.0)
    assert (revert.old, revert.new, revert.reason) == (FORCED_DOWN, UP, "forced-down period over")
    assert f.engine.next_deadline() is None


def test_forced_down_restored_early_stays_up() -> None:
    f = feed()
    f.engine.force_down("a", until=300.0, now=0.0, reason="drill")
    f.now = 100.0
    [back] = f.engine.restore("a", 100.0)
    assert (back.old, back.new) == (FORCED_DOWN, UP)
    assert f.engine.next_deadline() is None
    assert f.at(300.0) + f.at(900.0) == [] and f.state() is UP


def test_operator_moves_on_a_down_target_leave_no_stale_deadline() -> None:
    f = feed()
    f.call("a", UNREACHABLE)
    f.engine.drain("a", 1.0)
    assert f.engine.next_deadline() is None  # the hold-down no longer applies
    f.engine.restore("a", 2.0)
    f.call("a", UNREACHABLE)
    f.engine.force_down("a", until=50.0, now=3.0, reason="drill")
    assert f.engine.next_deadline() == 50.0


def test_a_restored_target_needs_k_probe_failures_again() -> None:
    f = feed()
    for _ in range(2):  # lost keepalives while UP, short of the K that trips
        f.probe("a", False)
    f.engine.drain("a", 1.0)
    f.engine.restore("a", 2.0)
    assert f.engine.state("a") is State.UP
    assert f.probe("a", False) + f.probe("a", False) == []
    [change] = f.probe("a", False)
    assert change.reason == "3 OPTIONS timeouts"


def test_a_target_out_for_its_health_comes_back_from_the_operator_through_probing() -> None:
    f = feed()
    f.call("a", UNREACHABLE)
    f.engine.drain("a", 1.0)
    [change] = f.engine.restore("a", 2.0)
    assert (change.old, change.new) == (State.DRAINED, State.PROBING)
    assert not f.engine.admits("a")  # good probes first, then trial calls
    f.engine.force_down("a", until=10.0, now=3.0, reason="drill")
    [change] = f.engine.tick(10.0)
    assert (change.old, change.new) == (State.FORCED_DOWN, State.PROBING)


# -- 9. hold-down doubling -----------------------------------------------------------------------
def test_re_trips_within_the_window_double_up_to_the_cap() -> None:
    f = feed(HealthPolicy(hold_down_jitter=0.0), probes=False)
    holds = []
    for _ in range(8):
        down = trip_to_probing(f)  # each trip comes right after the previous hold-down
        assert down.hold_down is not None
        holds.append(down.hold_down)
        f.call("a", 200)  # a trial answered, then the carrier fails again
    assert holds == [30, 60, 120, 240, 480, 600, 600, 600]


def test_a_trip_after_the_window_starts_again_at_the_base() -> None:
    f = feed(HealthPolicy(hold_down_jitter=0.0), probes=False)
    trip_to_probing(f)
    f.calls("a", 200, 3)
    assert f.state() is UP
    second = trip_to_probing(f)
    assert second.hold_down == 60
    f.calls("a", 200, 3)
    f.now = second.at + 600.0  # exactly the window: still a re-trip
    third = trip_to_probing(f)
    assert third.hold_down == 120
    f.calls("a", 200, 3)
    f.now = third.at + 600.5
    [fresh] = f.call("a", UNREACHABLE)
    assert fresh.hold_down == 30


def test_jitter_stays_within_plus_minus_ten_percent() -> None:
    holds = []
    for seed in range(300):
        f = feed(seed=seed)
        [down] = f.call("a", UNREACHABLE)
        assert down.hold_down is not None
        holds.append(down.hold_down)
    assert all(27.0 <= h <= 33.0 for h in holds)
    assert max(holds) - min(holds) > 5.0  # it does jitter: targets do not all return together
    capped = feed(seed=3, probes=False)
    for _ in range(9):
        down = trip_to_probing(capped)
        assert down.hold_down is not None and down.hold_down <= 600.0


def test_same_seed_same_hold_downs() -> None:
    a, b = feed(seed=42), feed(seed=42)
    assert a.call("a", UNREACHABLE) == b.call("a", UNREACHABLE)


# -- 10. the adaptive timer and SUSPECT ----------------------------------------------------------
def test_response_timer_before_and_after_the_first_sample() -> None:
    timer = ResponseTimer(floor=0.3, cap=2.0)
    assert timer.timeout() == 2.0  # nothing measured yet: invite_timeout
    timer.sample(0.2)
    assert timer.srtt == 0.2 and timer.rttvar == 0.1
    assert timer.timeout() == pytest.approx(0.6)  # 0.2 + 4 * 0.1


def test_response_timer_converges_on_a_steady_carrier() -> None:
    timer = ResponseTimer(floor=0.3, cap=2.0)
    for _ in range(60):
        timer.sample(0.5)
    assert timer.timeout() == pytest.approx(0.5, abs=1e-3)
    rng = random.Random(11)
    for _ in range(200):
        timer.sample(rng.uniform(0.4, 0.6))
    assert 0.5 < timer.timeout() < 0.5 + 4 * 0.1
    assert timer.srtt == pytest.approx(0.5, abs=0.05)


def test_response_timer_floor_and_cap() -> None:
    fast = ResponseTimer(floor=0.3, cap=2.0)
    for _ in range(50):
        fast.sample(0.01)
    assert fast.timeout() == 0.3
    slow = ResponseTimer(floor=0.3, cap=2.0)
    slow.sample(5.0)
    assert slow.timeout() == 2.0
    clock_skew = ResponseTimer(floor=0.3, cap=2.0)
    clock_skew.sample(-1.0)
    assert clock_skew.srtt == 0.0 and clock_skew.timeout() == 0.3


def test_engine_timer_learns_from_first_responses() -> None:
    f = feed()
    assert f.engine.response_timeout("a") == 2.0
    for _ in range(30):
        attempt = f.engine.attempt_started("a", f.now)
        f.engine.first_response("a", attempt, f.now + 0.1)
        f.now += 1.0
    assert f.engine.response_timeout("a") == pytest.approx(0.3)  # floored
    assert f.engine.response_timeout("b") == 2.0  # per carrier


# The adaptive timer and SUSPECT alone: silence (which would act first on these INVITEs)
# has tests of its own, in test_silence.py.
USUAL_PATH = HealthPolicy(silence=False)


def silent_invites(f: Feed, n: int = 3) -> list[int]:
    """Teach the timer a 0.1 s carrier, then send ``n`` INVITEs 10 ms apart that get nothing."""
    for _ in range(20):
        attempt = f.engine.attempt_started("a", f.now)
        f.engine.first_response("a", attempt, f.now + 0.1)
        f.now += 1.0
    assert f.engine.next_deadline() is None
    attempts = []
    for i in range(n):
        attempts.append(f.engine.attempt_started("a", f.now + i * 0.01))
    f.now += (n - 1) * 0.01
    return attempts


def test_silent_invites_turn_suspect_on_tick_then_down() -> None:
    f = feed(USUAL_PATH)
    silent_invites(f)
    limit = f.engine.response_timeout("a")
    deadline = f.engine.next_deadline()
    assert deadline == f.now + limit  # when the third INVITE is late, not the first
    assert f.at(deadline - 0.001) == []
    [suspect] = f.at(deadline)
    assert (suspect.old, suspect.new) == (UP, SUSPECT)
    assert suspect.reason == "3 INVITEs unanswered after 300 ms"
    assert not f.engine.admits("a")
    assert f.engine.next_deadline() == deadline + 2.0  # invite_timeout more
    assert f.at(deadline + 1.999) == []
    [down] = f.at(deadline + 2.0)
    assert (down.old, down.new) == (SUSPECT, DOWN)
    assert down.reason == "no answer for 2.0s after turning suspect"
    assert f.engine.next_deadline() == down.at + (down.hold_down or 0.0)


def test_a_suspect_target_that_answers_is_up_again() -> None:
    f = feed(USUAL_PATH)
    attempts = silent_invites(f)
    deadline = f.engine.next_deadline()
    assert deadline is not None
    f.at(deadline)
    assert f.state() is SUSPECT
    f.now += 0.5
    [up] = f.engine.first_response("a", attempts[0], f.now)
    assert (up.old, up.new, up.reason) == (SUSPECT, UP, "answered again while suspect")
    assert f.engine.admits("a")


def test_fewer_late_invites_than_the_threshold_need_no_timer() -> None:
    f = feed(USUAL_PATH)
    attempts = silent_invites(f, n=2)
    assert f.engine.next_deadline() is None
    assert f.at(f.now + 5.0) == [] and f.state() is UP
    f.engine.attempt_ended("a", attempts[0], FailureTable.local_failure(TIMEOUT), f.now, what="t")
    assert f.engine.next_deadline() is None


def test_next_deadline_is_never_a_time_tick_would_ignore() -> None:
    # One INVITE left over after a faster sample: the old code asked for a tick at its
    # deadline, tick did nothing, and the proxy re-armed the same past time for ever.
    f = feed()
    f.engine.attempt_started("a", 0.0)
    other = f.engine.attempt_started("a", 0.05)
    f.engine.first_response("a", other, 0.1)
    assert f.engine.next_deadline() is None
    f.call("b", UNREACHABLE)
    for _ in range(5):
        deadline = f.engine.next_deadline()
        assert deadline is not None
        assert f.at(deadline) != []  # every deadline is a move
        after = f.engine.next_deadline()
        assert after is None or after > f.now
        if f.state("b") is PROBING:
            break
    assert f.engine.targets["b"].hold_down_until is None
