"""The alert policy on a fake clock: damping, summaries, the rate limit, every route degraded.

No sockets, no sleeps: each test moves ``now`` itself and fires the policy's deadlines
in order, as the adapter's one ``call_at`` would.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from trunkguard.alerts import Alert, AlertPolicy, DampingSettings
from trunkguard.alerts._policy import ROUTER, ROUTES
from trunkguard.health import State, StateChange

S = State
D = DampingSettings()


def change(target: str, old: State, new: State, at: float, why: str = "test") -> StateChange:
    return StateChange(target, old, new, why, at, {"trips": 1})


def drain(policy: AlertPolicy, until: float = math.inf) -> list[tuple[float, Alert]]:
    """Fire every deadline up to ``until`` in order; (when, alert) for what comes out."""
    out: list[tuple[float, Alert]] = []
    for _ in range(10_000):
        when = policy.next_deadline()
        if when is None or when > until:
            return out
        out += [(when, a) for a in policy.on_timer(when)]
    raise AssertionError("the policy's deadlines never end")


def flap(policy: AlertPolicy, target: str, times: int, start: float, every: float) -> list[Alert]:
    """``times`` force-down/restore pairs, one change every ``every`` seconds."""
    out: list[Alert] = []
    t = start
    for _ in range(times):
        out += policy.state_change(change(target, S.UP, S.FORCED_DOWN, t))
        t += every
        out += policy.state_change(change(target, S.FORCED_DOWN, S.UP, t))
        t += every
    return out


# -- one outage ----------------------------------------------------------------------------


def test_a_single_down_and_its_recovery_go_out_at_once() -> None:
    p = AlertPolicy(D)
    sent = p.state_change(change("a", S.UP, S.DOWN, 10.0, "5 consecutive 503 from a"))
    sent += p.state_change(change("a", S.DOWN, S.PROBING, 40.0))
    sent += p.state_change(change("a", S.PROBING, S.UP, 41.0))
    assert [(a.event, a.old, a.new, a.at) for a in sent] == [
        ("state", "UP", "DOWN", 10.0),
        ("state", "DOWN", "PROBING", 40.0),
        ("state", "PROBING", "UP", 41.0),
    ]
    assert sent[0].reason == "5 consecutive 503 from a" and sent[0].counts == {"trips": 1}
    assert not any(a.damped for a in sent)
    assert p.next_deadline() is None  # nothing held, nothing to summarise
    assert p.counts["alerts_suppressed"] == 0


def test_two_outages_in_a_row_still_go_out_whole() -> None:
    p = AlertPolicy(D)
    sent = []
    for start in (0.0, 5.0):
        sent += p.state_change(change("a", S.UP, S.DOWN, start))
        sent += p.state_change(change("a", S.DOWN, S.PROBING, start + 1))
        sent += p.state_change(change("a", S.PROBING, S.UP, start + 2))
    assert len(sent) == 6 and not any(a.damped for a in sent)


def test_targets_are_damped_apart() -> None:
    p = AlertPolicy(D)
    flap(p, "a", 50, 0.0, 0.5)
    assert p.suppressed() == ["a"]
    sent = p.state_change(change("b", S.UP, S.DOWN, 60.0))
    assert [a.target for a in sent] == ["b"]


# -- flap damping --------------------------------------------------------------------------


def test_a_hundred_flaps_give_a_handful_of_alerts_and_one_summary() -> None:
    p = AlertPolicy(D)
    sent = flap(p, "a", 100, 0.0, 1.0)  # 200 changes in 200 s
    assert len(sent) == 5
    assert [a.damped for a in sent] == [False, False, False, False, True]
    assert sent[-1].new == "FORCED_DOWN"
    assert p.counts["alerts_suppressed"] == 195
    later = drain(p)
    assert len(later) == 1
    when, summary = later[0]
    assert summary.event == "flapping" and summary.target == "a"
    assert (summary.old, summary.new) == ("FORCED_DOWN", "UP")
    assert summary.changes == 196 and summary.flaps == 98
    assert "a flapped: 98 times out of service, 196 changes" in summary.reason
    assert "now UP; stable again" in summary.reason
    # The summary comes once the penalty has decayed to reuse, within max_suppress.
    assert 200.0 < when <= 200.0 + D.max_suppress
    assert p.penalty("a", when) <= D.reuse * 1.0001
    assert p.suppressed() == [] and p.next_deadline() is None


def test_the_alert_that_crosses_suppress_goes_out_marked_damped() -> None:
    p = AlertPolicy(DampingSettings(penalty=1000, penalty_other=0, suppress=2000, reuse=500))
    first = p.state_change(change("a", S.UP, S.DOWN, 0.0))
    p.state_change(change("a", S.DOWN, S.UP, 0.0))
    second = p.state_change(change("a", S.UP, S.DOWN, 0.0))
    assert not first[0].damped and second[0].damped
    assert p.state_change(change("a", S.DOWN, S.UP, 0.0)) == []  # held


def test_penalty_halves_every_half_life_and_is_capped() -> None:
    p = AlertPolicy(D)
    p.state_change(change("a", S.UP, S.DOWN, 0.0))
    assert p.penalty("a", 0.0) == D.penalty
    assert math.isclose(p.penalty("a", D.half_life), D.penalty / 2)
    assert math.isclose(p.penalty("a", 3 * D.half_life), D.penalty / 8)
    flap(p, "b", 5_000, 0.0, 0.001)
    assert p.penalty("b", 10.0) <= D.ceiling
    assert math.isclose(D.ceiling, D.reuse * 2 ** (D.max_suppress / D.half_life))


def test_nothing_held_means_no_summary() -> None:
    p = AlertPolicy(DampingSettings(penalty=1000, penalty_other=0, suppress=2000, reuse=500))
    p.state_change(change("a", S.UP, S.DOWN, 0.0))
    p.state_change(change("a", S.DOWN, S.UP, 0.0))
    assert p.state_change(change("a", S.UP, S.DOWN, 0.0))[0].damped
    assert p.suppressed() == ["a"]
    assert drain(p) == []  # reused, nothing was held: the damped alert said it all
    assert p.suppressed() == []


def test_still_flapping_after_max_suppress_gets_one_summary_per_period() -> None:
    s = DampingSettings(half_life=10.0, max_suppress=60.0)
    p = AlertPolicy(s)
    summaries: list[tuple[float, Alert]] = []
    t = 0.0
    while t < 300.0:  # flapping all along: one change a second
        p.state_change(change("a", S.UP, S.DOWN, t))
        p.state_change(change("a", S.DOWN, S.UP, t + 0.5))
        t += 1.0
        summaries += drain(p, until=t)
    reminders = [a for _, a in summaries if a.damped]
    assert 3 <= len(reminders) <= 5  # about one per 60 s over 300 s
    assert all("still flapping" in a.reason for a in reminders)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(summaries)]
    assert all(g >= 60.0 - 1.0 for g in gaps)
    final = [(w, a) for w, a in drain(p) if not a.damped]
    assert len(final) == 1 and "stable again" in final[0][1].reason
    assert final[0][0] <= 300.0 + s.max_suppress  # the ceiling bounds the wait
    # It covers the whole time the alerts were held, not only the last period.
    assert final[0][1].changes > 500 and final[0][1].over > 290


def test_flapping_that_stopped_gets_no_still_flapping_reminder() -> None:
    s = DampingSettings(half_life=2.0, max_suppress=10.0)
    p = AlertPolicy(s)
    flap(p, "a", 30, 0.0, 0.1)  # over by 6 s, before the first reminder is due at ~10.5 s
    later = drain(p)
    assert [a.damped for _, a in later] == [False]
    assert "stable again" in later[0][1].reason and later[0][1].changes == 56
    assert later[0][0] <= 6.0 + s.max_suppress


def test_a_flap_after_reuse_starts_afresh() -> None:
    p = AlertPolicy(D)
    flap(p, "a", 20, 0.0, 1.0)
    drain(p)
    sent = p.state_change(change("a", S.UP, S.DOWN, 5_000.0))
    assert len(sent) == 1 and not sent[0].damped


def test_reconfigure_keeps_penalties() -> None:
    p = AlertPolicy(D)
    flap(p, "a", 20, 0.0, 1.0)
    before = p.penalty("a", 40.0)
    p.reconfigure(DampingSettings(half_life=30.0))
    assert p.penalty("a", 40.0) == before and p.suppressed() == ["a"]


# -- every route degraded ------------------------------------------------------------------


def test_every_route_degraded_and_recovered() -> None:
    p = AlertPolicy(D)
    assert p.routes({"a": S.UP, "b": S.UP}, 0.0) == []
    assert p.routes({"a": S.DOWN, "b": S.UP}, 1.0) == []
    sent = p.routes({"a": S.DOWN, "b": S.FORCED_DOWN}, 2.0)
    assert [(a.event, a.kind, a.target, a.new) for a in sent] == [
        ("degraded", "degraded", None, "DEGRADED")
    ]
    assert sent[0].reason == "no route is UP: a DOWN, b FORCED_DOWN"
    assert sent[0].counts == {"routes_up": 0, "routes": 2}
    assert p.degraded
    assert p.routes({"a": S.PROBING, "b": S.FORCED_DOWN}, 3.0) == []  # PROBING is not UP
    back = p.routes({"a": S.UP, "b": S.FORCED_DOWN}, 4.0)
    assert [(a.event, a.new, a.reason) for a in back] == [("recovered", "OK", "a UP again")]
    assert not p.degraded


def test_every_not_up_state_counts_as_degraded() -> None:
    for state in (S.SUSPECT, S.DOWN, S.PROBING, S.DRAINED, S.FORCED_DOWN):
        p = AlertPolicy(D)
        p.routes({"a": S.UP}, 0.0)
        assert [a.event for a in p.routes({"a": state}, 1.0)] == ["degraded"], state


def test_no_routes_is_not_degraded_and_a_degraded_start_is_told() -> None:
    assert AlertPolicy(D).routes({}, 0.0) == []
    p = AlertPolicy(D)
    assert [a.event for a in p.routes({"a": S.DOWN}, 0.0)] == ["degraded"]


def test_degraded_flapping_is_damped_too() -> None:
    p = AlertPolicy(D)
    sent = []
    for i in range(50):
        sent += p.routes({"a": S.DOWN}, float(i))
        sent += p.routes({"a": S.UP}, i + 0.5)
    assert 3 <= len(sent) <= 6 and sent[-1].damped
    assert ROUTES in p.suppressed()
    (_, summary), = drain(p)
    assert summary.kind == "degraded" and summary.target is None
    assert summary.reason.startswith("every route flapped: 48 times degraded, 96 changes")


def test_degraded_alerts_do_not_wait_for_the_rate_limit() -> None:
    p = AlertPolicy(DampingSettings(burst=3, per_minute=1))
    p.routes({"a": S.UP, "b": S.UP}, 0.0)
    for name in "cdefg":
        p.state_change(change(name, S.UP, S.DOWN, 0.0))
    assert p.counts["alerts_rate_limited"] == 2
    sent = p.routes({"a": S.DOWN, "b": S.DOWN}, 0.0)
    assert [a.event for a in sent] == ["degraded"]


# -- the rate limit ------------------------------------------------------------------------


def test_the_bucket_holds_the_latest_alert_per_subject_and_releases_it() -> None:
    p = AlertPolicy(DampingSettings(burst=2, per_minute=6))  # a token every 10 s
    assert len(p.state_change(change("a", S.UP, S.DOWN, 0.0))) == 1
    assert len(p.state_change(change("b", S.UP, S.DOWN, 0.0))) == 1
    assert p.state_change(change("c", S.UP, S.DOWN, 0.0)) == []
    assert p.state_change(change("c", S.DOWN, S.PROBING, 1.0)) == []  # replaces the one waiting
    assert p.state_change(change("d", S.UP, S.DOWN, 2.0)) == []
    assert p.counts["alerts_rate_limited"] == 3 and p.counts["alerts_replaced"] == 1
    out = drain(p)
    assert [(w, a.target, a.new, a.replaced) for w, a in out] == [
        (10.0, "c", "PROBING", 1),
        (20.0, "d", "DOWN", 0),
    ]


def test_the_bucket_refills_at_its_rate() -> None:
    s = DampingSettings(penalty=0, penalty_other=0, burst=5, per_minute=60)  # no damping
    p = AlertPolicy(s)
    sent = 0
    for i in range(600):  # 20 targets, one new change every 0.1 s for 60 s
        sent += len(p.state_change(change(f"t{i % 20}", S.UP, S.DOWN, i * 0.1)))
    sent += len(drain(p, until=60.0))
    assert 5 + 59 <= sent <= 5 + 61  # the burst, then one a second


def test_overload_start_and_end() -> None:
    p = AlertPolicy(D)
    sent = p.overload("overloaded", "loop lag 120 ms", 1.0)
    assert p.overload("overloaded", "still", 1.5) == []  # the same state again: nothing
    sent += p.overload("recovered", "loop lag 2 ms", 9.0)
    assert [(a.event, a.kind, a.new, a.reason) for a in sent] == [
        ("overload", "overload", "OVERLOADED", "loop lag 120 ms"),
        ("overload_over", "overload", "OK", "loop lag 2 ms"),
    ]
    assert sent[0].subject == ROUTER


def test_a_target_named_like_a_router_subject_is_its_own() -> None:
    p = AlertPolicy(D)
    p.routes({"routes": S.UP}, 0.0)
    assert len(p.state_change(change("routes", S.UP, S.DOWN, 0.0))) == 1
    assert len(p.routes({"routes": S.DOWN}, 0.0)) == 1


# -- invariants over any sequence ----------------------------------------------------------

_STATES = list(State)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(_STATES),
            st.floats(min_value=0.0, max_value=30.0),
        ),
        max_size=200,
    ),
    st.integers(min_value=1, max_value=30),
    st.floats(min_value=1.0, max_value=120.0),
)
def test_every_alert_is_sent_held_or_replaced_and_the_policy_calms(
    steps: list[tuple[str, State, float]], burst: int, half_life: float
) -> None:
    s = DampingSettings(half_life=half_life, max_suppress=10 * half_life, burst=burst)
    counts: Counter[str] = Counter()
    p = AlertPolicy(s, counts)
    states = {"a": S.UP, "b": S.UP, "c": S.UP}
    now = 0.0
    made = 0
    sent: list[Alert] = []
    sent += p.routes(states, now)
    for target, new, dt in steps:
        sent += [a for _, a in drain(p, until=now + dt)]
        now += dt
        if new is states[target]:
            continue
        old, states[target] = states[target], new
        sent += p.state_change(change(target, old, new, now))
        made += 1
        before = p.degraded
        sent += p.routes(states, now)
        made += before != p.degraded
        assert all(a.at <= now for a in sent)
    sent += [a for _, a in drain(p)]
    direct = [a for a in sent if a.event != "flapping"]
    assert len(direct) + counts["alerts_suppressed"] + counts["alerts_replaced"] == made
    assert p.suppressed() == [] and p.next_deadline() is None
    # A summary only ever follows held alerts, at most one per period.
    assert sum(a.event == "flapping" for a in sent) <= counts["alerts_suppressed"]
