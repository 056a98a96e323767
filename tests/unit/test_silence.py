"""Silence: a carrier quiet far past its own first-response times gets no new calls.

The engine alone with a fake clock (thresholds, confirmation, ends, deadlines), the
invariant under Hypothesis, the plan's hold-back, and the proxy core driven at 50
calls/s with a carrier that goes silent (``test_health_proxy.Lab``).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from test_health_proxy import Lab, answers, invites
from test_proxy_core import A, B, C, target

from trunkguard.health import HealthEngine, HealthPolicy, SilenceEvent, State
from trunkguard.health._silence import ResponseTimes, ms, threshold
from trunkguard.proxy._silence import hold_back_silent
from trunkguard.routing import Plan
from trunkguard.sip import Request

UP, SUSPECT, DOWN, DRAINED = State.UP, State.SUSPECT, State.DOWN, State.DRAINED


class Clock:
    """One engine, a fake clock, and the silence events it handed out."""

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.engine = HealthEngine(["a", "b"], policy, random.Random(3))
        self.now = 100.0
        self.events: list[SilenceEvent] = []
        self.changes: list[tuple[State, State]] = []

    def learn(self, name: str = "a", seconds: float = 0.002, n: int = 20) -> None:
        """``n`` INVITEs, each answered ``seconds`` later, 20 ms apart."""
        for _ in range(n):
            attempt = self.engine.attempt_started(name, self.now)
            self.engine.first_response(name, attempt, self.now + seconds)
            self.engine.attempt_ended(name, attempt, None, self.now + seconds, what="487")
            self.now += 0.02
        self.take()

    def tick_until(self, end: float) -> None:
        """Fire the engine's deadlines up to ``end``, as the proxy's timer would."""
        for _ in range(1000):
            due = self.engine.next_deadline()
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            for c in self.engine.tick(self.now):
                self.changes.append((c.old, c.new))
            after = self.engine.next_deadline()
            assert after is None or after > self.now, "the timer would spin at the same time"
        else:
            raise AssertionError("too many deadlines")
        self.now = end
        self.take()

    def take(self) -> list[SilenceEvent]:
        new = self.engine.take_silences()
        self.events += new
        return new


# -- the threshold -----------------------------------------------------------------------------
def test_threshold_is_margin_times_quantile_never_below_the_floor() -> None:
    times = ResponseTimes(100)
    for i in range(100):
        times.add((i + 1) / 1000)  # 1..100 ms
    assert times.quantile(0.99) == 0.1
    assert times.quantile(0.5) == 51 / 1000
    args = {"floor": 0.02, "margin": 2.0, "quantile": 0.99}
    assert threshold(times, **args, min_samples=20) == 0.2
    fast = ResponseTimes(100)
    for _ in range(30):
        fast.add(0.001)
    assert threshold(fast, **args, min_samples=20) == 0.02  # the floor
    assert threshold(fast, **args, min_samples=31) is None  # too few samples yet


def test_the_window_forgets_the_oldest_and_stays_sorted() -> None:
    times = ResponseTimes(3)
    for value in (0.5, 0.1, 0.3, 0.2):
        times.add(value)
    assert list(times.order) == [0.1, 0.3, 0.2]
    assert times.ranked == [0.1, 0.2, 0.3]
    times.resize(2)
    assert times.ranked == [0.2, 0.3]
    times.add(-1.0)  # a clock step backwards is a 0 sample, not a negative one
    assert times.ranked == [0.0, 0.2]


def test_ms_shows_a_decimal_below_ten() -> None:
    assert ms(0.0004) == "0.4 ms"
    assert ms(0.021) == "21 ms"


# -- one episode ---------------------------------------------------------------------------------
def test_a_fast_carrier_silent_past_the_floor_is_held_back_after_one_confirmation() -> None:
    c = Clock()
    c.learn(seconds=0.002)
    sent = c.now
    c.engine.attempt_started("a", sent)
    assert c.engine.next_deadline() == sent + 0.02  # the floor: 2 x 2 ms is less
    c.tick_until(sent + 0.0199)
    assert c.engine.silenced("a", c.now) is None
    c.tick_until(sent + 0.021)  # the timer fires on time, at the threshold
    why = c.engine.silenced("a", c.now)
    assert why == "silent 21 ms, usually 2.0 ms"
    [start] = c.events
    assert (start.target, start.state) == ("a", "silent")
    assert "threshold 20 ms" in start.detail and "no new calls" in start.detail
    assert c.engine.state("a") is UP and c.engine.admits("a")  # not a state: a hold-back
    assert c.engine.targets["a"].silence.episodes == 1


def test_an_answer_ends_the_silence_with_one_notice() -> None:
    c = Clock()
    c.learn()
    attempt = c.engine.attempt_started("a", c.now)
    c.tick_until(c.now + 0.05)
    assert c.engine.silenced("a", c.now) is not None
    c.engine.first_response("a", attempt, c.now)
    assert c.engine.silenced("a", c.now) is None
    c.take()
    [_, end] = c.events
    assert end.state == "heard"
    assert end.detail.startswith("answered after 50 ms; held new calls back for 30 ms")
    c.tick_until(c.now + 1.0)
    assert c.take() == []  # nothing more: one notice per start, one per end


def test_an_answer_in_our_socket_when_the_timer_fires_late_cancels_the_silence() -> None:
    # The loop was busy: the deadline fires 5 ms late, the 100 Trying is read just after.
    c = Clock()
    c.learn()
    attempt = c.engine.attempt_started("a", c.now)
    c.now += 0.025
    c.engine.tick(c.now)  # seen, not believed
    assert c.engine.silenced("a", c.now) is None
    assert c.engine.next_deadline() == c.now + 0.001
    c.engine.first_response("a", attempt, c.now + 0.0001)
    c.tick_until(c.now + 0.1)
    assert c.events == [] and c.engine.targets["a"].silence.episodes == 0


def test_a_late_timer_still_silences_one_loop_turn_later_if_nothing_came() -> None:
    c = Clock()
    c.learn()
    c.engine.attempt_started("a", c.now)
    c.now += 0.025
    c.engine.tick(c.now)
    c.tick_until(c.now + 0.001)
    assert c.engine.silenced("a", c.now) == "silent 26 ms, usually 2.0 ms"


def test_an_older_lost_invite_does_not_make_a_carrier_silent_once_it_answers_newer_ones() -> None:
    c = Clock()
    c.learn()
    c.engine.attempt_started("a", c.now)  # lost on the way
    c.now += 0.01
    newer = c.engine.attempt_started("a", c.now)
    c.engine.first_response("a", newer, c.now + 0.002)
    c.tick_until(c.now + 0.25)
    assert c.events == []
    assert c.engine.silenced("a", c.now) is None


def test_once_the_waiting_invite_passes_its_timer_one_new_call_may_go() -> None:
    c = Clock()
    c.learn()
    sent = c.now
    c.engine.attempt_started("a", sent)
    timer = c.engine.response_timeout("a")
    assert timer == 0.3
    c.tick_until(sent + 0.1)
    assert c.engine.silenced("a", c.now) is not None
    c.now = sent + timer  # its call fails over now; the INVITE stays outstanding, late
    assert c.engine.silenced("a", c.now) is None  # one new call may go...
    c.engine.attempt_started("a", c.now)
    assert c.engine.silenced("a", c.now) == "silent 300 ms, usually 2.0 ms"  # ...one only
    assert [e.state for e in c.events] == ["silent"]  # one episode all along
    assert c.changes == []  # two late INVITEs are not SUSPECT: that still takes three


def test_a_blackholed_carrier_gets_one_call_per_timer_until_suspect() -> None:
    # What a blackholed carrier sees: no new call while one waits on it, one per adaptive
    # timer after that, and the third late one makes it SUSPECT as before: 3 INVITEs.
    c = Clock()
    c.learn()
    sent = []
    end = c.now + 2.0
    while c.now < end and c.engine.state("a") is UP:
        if c.engine.silenced("a", c.now) is None:
            sent.append(c.now)
            c.engine.attempt_started("a", c.now)
        c.tick_until(c.now + 0.02)  # a new call every 20 ms: 50 calls/s
    assert len(sent) == 3
    assert c.changes == [(UP, SUSPECT)]
    assert [e.state for e in c.events] == ["silent", "heard"]
    assert c.events[-1].detail.startswith("now SUSPECT: 3 INVITEs unanswered after 300 ms")
    assert c.engine.silenced("a", c.now) is None


def test_an_episode_ends_when_its_unanswered_invites_are_forgotten() -> None:
    # Too few calls to make it SUSPECT: after 2 x invite_timeout unanswered INVITEs are
    # forgotten, and so is the episode (the probes and the fault streak still count).
    c = Clock()
    c.learn()
    sent = c.now
    c.engine.attempt_started("a", sent)
    c.tick_until(sent + 0.1)
    assert c.engine.next_deadline() == sent + 4.0
    c.tick_until(sent + 4.0)
    assert c.events[-1].state == "heard"
    assert c.events[-1].detail.startswith("no answer, and its unanswered INVITEs are forgotten")


def test_leaving_up_ends_the_silence_and_an_operator_restore_starts_fresh() -> None:
    c = Clock()
    c.learn()
    c.engine.attempt_started("a", c.now)
    c.tick_until(c.now + 0.05)
    c.engine.drain("a", c.now)
    assert c.engine.silenced("a", c.now) is None
    assert c.take()[-1].detail.startswith("now DRAINED")
    c.engine.restore("a", c.now)
    c.tick_until(c.now + 0.05)
    assert c.engine.silenced("a", c.now) is not None  # the same INVITE still waits


def test_before_enough_samples_there_is_no_silence() -> None:
    c = Clock()
    c.learn(n=19)
    c.engine.attempt_started("a", c.now)
    assert c.engine.silence_threshold("a") is None
    c.tick_until(c.now + 0.25)
    assert c.events == []


def test_turned_off_there_is_no_silence_and_no_extra_deadline() -> None:
    c = Clock(HealthPolicy(silence=False))
    c.learn()
    c.engine.attempt_started("a", c.now)
    assert c.engine.next_deadline() is None
    c.tick_until(c.now + 0.25)
    assert c.events == []


def test_a_policy_swap_applies_at_once_to_a_silence_in_force() -> None:
    c = Clock()
    c.learn()
    c.engine.attempt_started("a", c.now)
    c.tick_until(c.now + 0.05)
    assert c.engine.silenced("a", c.now) is not None
    c.engine.set_policy(HealthPolicy(silence_floor=0.2))
    assert c.engine.silenced("a", c.now) is None  # 50 ms is no longer past the threshold
    c.tick_until(c.now + 0.001)
    assert c.events[-1].state == "heard"
    c.engine.set_policy(HealthPolicy(silence_window=10, silence_min_samples=10))
    assert len(c.engine.targets["a"].silence.times) == 10


def test_a_carrier_slower_than_its_own_timer_is_left_to_the_timer() -> None:
    c = Clock()
    c.learn(seconds=0.2)  # 2 x 200 ms is past the 300 ms floor of srtt + 4 rttvar
    c.engine.attempt_started("a", c.now)
    assert c.engine.silence_threshold("a") is None
    c.tick_until(c.now + 0.29)
    assert c.events == []


def test_a_jittery_carrier_at_50_calls_a_second_is_never_silenced() -> None:
    # First responses between 1 and 50 ms, as the lab's jitter carrier: 10 s of calls.
    rng = random.Random(11)
    c = Clock()
    pending: list[tuple[float, int]] = []
    start = c.now
    for i in range(500):
        at = start + i * 0.02
        for when, attempt in sorted(pending):
            if when <= at:
                c.tick_until(when)
                c.engine.first_response("a", attempt, when)
                c.engine.attempt_ended("a", attempt, None, when, what="487")
        pending = [(w, a) for w, a in pending if w > at]
        c.tick_until(at)
        attempt = c.engine.attempt_started("a", at)
        pending.append((at + rng.uniform(0.001, 0.05), attempt))
    assert c.engine.silence_threshold("a") is not None
    assert c.events == [] and c.changes == []


# -- the invariant -------------------------------------------------------------------------------
OPS = st.lists(
    st.tuples(
        st.sampled_from(["invite", "answer", "end", "timeout", "tick", "wait", "drain", "restore"]),
        st.floats(min_value=0.0, max_value=0.4, allow_nan=False),
        st.integers(min_value=0, max_value=20),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=OPS,
    learn=st.floats(min_value=0.0, max_value=0.1),
    floor=st.sampled_from([0.005, 0.02, 0.1]),
    margin=st.sampled_from([1.0, 2.0, 5.0]),
)
def test_no_invite_waiting_past_the_threshold_means_never_silenced(
    ops: list[tuple[str, float, int]], learn: float, floor: float, margin: float
) -> None:
    policy = HealthPolicy(silence_floor=floor, silence_margin=margin, silence_min_samples=5)
    c = Clock(policy)
    c.learn(seconds=learn, n=5)
    engine = c.engine
    attempts: list[int] = []
    for op, seconds, pick in ops:
        if op == "invite":
            attempts.append(engine.attempt_started("a", c.now))
        elif op in ("answer", "end", "timeout") and attempts:
            attempt = attempts[pick % len(attempts)]
            if op == "answer":
                engine.first_response("a", attempt, c.now)
            else:
                what = "timeout" if op == "timeout" else "487"
                engine.attempt_ended("a", attempt, None, c.now, what=what)
        elif op == "tick":
            engine.tick(c.now)
            due = engine.next_deadline()
            assert due is None or due > c.now, "a deadline the tick did not act on"
        elif op == "wait":
            c.tick_until(c.now + seconds)
        elif op == "drain":
            engine.drain("a", c.now)
        elif op == "restore":
            engine.restore("a", c.now)
        why = engine.silenced("a", c.now)
        if why is not None:
            h = engine.targets["a"]
            limit = engine.silence_threshold("a")
            assert limit is not None and h.state is UP
            unanswered = [t for t in h.outstanding.values() if t > h.silence.heard_sent]
            assert any(t + limit <= c.now for t in unanswered), why
    # Episodes alternate: never two starts (or two ends) in a row.
    c.take()
    states = [e.state for e in c.events]
    assert states[:1] in ([], ["silent"])
    for first, second in itertools.pairwise(states):
        assert first != second


# -- the plan ------------------------------------------------------------------------------------
def _silent_engine(*names: str) -> tuple[HealthEngine, float]:
    c = Clock()
    c.engine = HealthEngine(["a", "b", "c"], None, random.Random(3))
    for name in names:
        c.learn(name)
    for name in names:
        c.engine.attempt_started(name, c.now)
    c.tick_until(c.now + 0.05)
    return c.engine, c.now


def _plan() -> Plan:
    targets = [target("a", A), target("b", B), target("c", C)]
    return Plan(targets, explain=["a: 0.010/min", "b: 0.012/min", "c: 0.020/min"])


def test_a_silent_carrier_goes_last_in_a_new_plan_with_its_reason() -> None:
    engine, now = _silent_engine("a")
    counters: Counter[str] = Counter()
    plan = hold_back_silent(_plan(), engine, now, counters)
    assert [t.name for t in plan.targets] == ["b", "c", "a"]
    assert plan.explain[-1] == "a: held back to the end, silent 50 ms, usually 2.0 ms"
    assert counters["plans_silence_held_back"] == 1


def test_when_every_route_is_silent_the_plan_tries_them_in_order_anyway() -> None:
    engine, now = _silent_engine("a", "b", "c")
    counters: Counter[str] = Counter()
    plan = hold_back_silent(_plan(), engine, now, counters)
    assert [t.name for t in plan.targets] == ["a", "b", "c"]  # silent as long: plan order
    assert plan.explain[-1].startswith("every route is silent (a silent 50 ms")
    assert plan.explain[-1].endswith("trying them anyway, the shortest silence first")
    assert counters["plans_all_silent"] == 1


def test_when_every_route_is_silent_the_shortest_silence_goes_first() -> None:
    # a went quiet long ago (a blackhole); b is merely late for a moment: b first.
    engine = HealthEngine(["a", "b", "c"], None, random.Random(3))
    c = Clock()
    c.engine = engine
    for name in ("a", "b", "c"):
        c.learn(name)
    engine.attempt_started("a", c.now)
    c.tick_until(c.now + 0.2)
    engine.attempt_started("b", c.now)
    engine.attempt_started("c", c.now - 0.1)
    c.tick_until(c.now + 0.03)
    assert all(engine.silenced(n, c.now) for n in ("a", "b", "c"))
    plan = hold_back_silent(_plan(), engine, c.now, Counter())
    assert [t.name for t in plan.targets] == ["b", "c", "a"]


def test_panic_and_refused_plans_are_left_alone() -> None:
    engine, now = _silent_engine("a")
    panic = Plan(_plan().targets, panic=True)
    assert hold_back_silent(panic, engine, now, Counter()) is panic
    refused = Plan([], rejected=(404, "no rate"))
    assert hold_back_silent(refused, engine, now, Counter()) is refused


# -- through the proxy core: a carrier that goes silent at 50 calls/s -------------------------
class Switch:
    """Carrier a: answers at once until ``dead``, then nothing."""

    def __init__(self) -> None:
        self.dead = False

    def __call__(self, request: Request) -> int | None:
        return None if self.dead else 200


def test_a_carrier_gone_silent_at_50_calls_a_second_gets_at_most_3_new_invites() -> None:
    a = Switch()
    lab = Lab({A: a, B: answers(200), C: answers(200)})
    for _ in range(50):  # a second of normal traffic: a answers every call
        lab.dial()
        lab.step(0.02)
    assert lab.health.silence_threshold("a") == 0.02
    before = lab.proxy.counters["invites_to:a"]
    a.dead = True
    ids = []
    for _ in range(150):  # three seconds of calls after the fault
        call_id, _ = lab.dial()
        ids.append(call_id)
        lab.step(0.02)
    lab.step(10.0)
    new = lab.proxy.counters["invites_to:a"] - before
    assert 1 <= new <= 3, new
    assert all(lab.finals.get(i) == 200 for i in ids)  # none failed: each moved on to b
    assert lab.health.state("a") in (SUSPECT, DOWN)
    assert lab.proxy.counters["plans_silence_held_back"] > 0


def test_without_silence_the_same_fault_costs_many_more_invites() -> None:
    # The figure silence improves on: SUSPECT only once 3 INVITEs are past the 300 ms timer.
    a = Switch()
    lab = Lab({A: a, B: answers(200), C: answers(200)}, policy=HealthPolicy(silence=False))
    for _ in range(50):
        lab.dial()
        lab.step(0.02)
    before = lab.proxy.counters["invites_to:a"]
    a.dead = True
    for _ in range(150):
        lab.dial()
        lab.step(0.02)
    assert lab.proxy.counters["invites_to:a"] - before >= 15


class SilenceLab(Lab):
    """The Lab, keeping the silence events the core hands out."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.silences: list[SilenceEvent] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def pump(self) -> None:
        events = self.proxy.take_events()
        self.silences += [e for e in events if isinstance(e, SilenceEvent)]
        self.proxy.events = [e for e in events if not isinstance(e, SilenceEvent)]
        super().pump()


def test_silence_notices_reach_the_core_events_once_per_episode() -> None:
    a = Switch()
    lab = SilenceLab({A: a, B: answers(200), C: answers(200)})
    for _ in range(30):
        lab.dial()
        lab.step(0.02)
    a.dead = True
    for _ in range(100):
        _, sent = lab.dial()
        lab.step(0.02)
    starts = [e for e in lab.silences if e.state == "silent"]
    ends = [e for e in lab.silences if e.state == "heard"]
    assert len(starts) == 1 and len(ends) == 1  # one episode, from silence to SUSPECT
    assert all(e.target == "a" for e in lab.silences)
    assert "now SUSPECT" in ends[-1].detail
    _, sent = lab.dial()
    assert invites(sent, A) == 0 and invites(sent, B) == 1


def test_a_router_late_itself_silences_no_carrier() -> None:
    # The loop stalled (or is overloaded): answers may sit in our own socket, so silence is
    # not judged, as timeouts are excused; the usual path still runs once the grace is over.
    a = Switch()
    lab = SilenceLab({A: a, B: answers(200), C: answers(200)})
    for _ in range(30):
        lab.dial()
        lab.step(0.02)
    lab.proxy.note_stall(0.4, lab.now)
    a.dead = True
    for _ in range(50):  # one second, within the stall's grace
        lab.dial()
        lab.step(0.02)
    assert lab.silences == []
    assert lab.health.silenced("a", lab.now) is None
    assert lab.proxy.counters["plans_silence_held_back"] == 0


def test_a_probing_target_is_never_silenced_its_trial_has_the_usual_timer() -> None:
    c = Clock(HealthPolicy(probe_successes=0))
    c.learn()
    [down] = c.engine.unreachable("a", c.now, "test")
    c.tick_until(c.now + (down.hold_down or 0.0) + 0.01)
    assert c.engine.state("a") is State.PROBING
    c.engine.attempt_started("a", c.now)  # the trial
    c.tick_until(c.now + 0.2)
    assert c.engine.silenced("a", c.now) is None and c.events == []
