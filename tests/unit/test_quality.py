"""Quality per carrier and destination group: the tracker, its verdicts and the plans they make.

Every input carries its time (a fake clock): no sockets, no sleeps.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from trunkguard.health import FailureTable, HealthEngine, State
from trunkguard.proxy import AttemptRecord, CallRecord, Flow, Target
from trunkguard.quality import (
    ALL,
    QualityChange,
    QualitySettings,
    QualityTracker,
    RecordedQuality,
)
from trunkguard.routing import CarrierRoute, DeckColumns, RoutingTable, build_plan, load_deck
from trunkguard.sip import parse_uri

TABLE = FailureTable()


def S(**kw: object) -> QualitySettings:
    """Settings that work the verdicts out on every record, so counts in reasons are exact."""
    return QualitySettings(evaluate_every=0.0, **kw)  # type: ignore[arg-type]
US = "15551234567"
UK = "447700900123"


def attempt(
    carrier: str, status: int | None, at: float, *, pdd: float | None = 0.1, kind: str = "response"
) -> AttemptRecord:
    return AttemptRecord(
        call_id=f"c{at}",
        target=carrier,
        attempt=1,
        status=status,
        kind=kind,
        verdict=None if status is None else TABLE.classify(status),
        started=at,
        ended=at + 0.5,
        first_response=None if pdd is None else at + pdd,
        carrier=carrier,
    )


def record(
    carrier: str,
    status: int,
    at: float,
    *,
    number: str = US,
    seconds: float = 60.0,
    pdd: float | None = 0.1,
    before: tuple[AttemptRecord, ...] = (),
) -> CallRecord:
    """One call to ``carrier`` at ``at``; answered ones last ``seconds``."""
    a = attempt(carrier, status, at, pdd=pdd)
    answered = at + 1.0 if 200 <= status < 300 else None
    return CallRecord(
        call_id=f"call{at}{carrier}",
        number=number,
        source="127.0.0.1",
        plan=(carrier,),
        explain=(),
        attempts=(*before, a),
        status=status,
        started=at,
        answered=answered,
        ended=(answered + seconds) if answered is not None else at + 0.5,
        end="bye" if answered is not None else "failed",
    )


def fill(
    q: QualityTracker,
    carrier: str,
    n: int,
    t0: float,
    *,
    every: float = 0.1,
    status: int = 200,
    busy_every: int = 0,
    number: str = US,
    seconds: float = 60.0,
    pdd: float | None = 0.1,
) -> list[QualityChange]:
    """``n`` calls to ``carrier`` from ``t0``; with ``busy_every``, only 1 in that many is
    answered, the rest get 486."""
    changes: list[QualityChange] = []
    for i in range(n):
        code = 486 if busy_every and i % busy_every != 0 else status
        r = record(carrier, code, t0 + i * every, number=number, seconds=seconds, pdd=pdd)
        changes += q.feed(r)
    return changes


# -- groups ------------------------------------------------------------------------------


def test_groups_longest_prefix_then_digits_then_all() -> None:
    q = QualityTracker(S(groups=("44", "447", "1")))
    assert q.group_of(UK) == "447"
    assert q.group_of("442079460000") == "44"
    assert q.group_of(US) == "1"
    assert q.group_of("33123456789") == ALL
    digits = QualityTracker(S(groups=("447",), group_digits=2))
    assert digits.group_of(UK) == "447"
    assert digits.group_of("33123456789") == "33"
    assert digits.group_of("9") == ALL  # shorter than the digits asked for
    assert digits.group_of("ab123") == ALL  # a raw user part that is not digits


# -- figures -----------------------------------------------------------------------------


def test_figures_need_their_minimum_samples() -> None:
    q = QualityTracker(S(min_asr_samples=30, min_pdd_samples=30, min_acd_samples=10))
    fill(q, "a", 9, 0.0, seconds=30.0)
    f = q.figures("a", ALL, 100.0)
    assert (f.seizures, f.answered, f.ended) == (9, 9, 9)
    assert f.asr is None and f.pdd is None and f.acd is None and f.short_share is None
    fill(q, "a", 1, 10.0, seconds=30.0)
    f = q.figures("a", ALL, 100.0)
    assert f.acd == pytest.approx(30.0) and f.short_share == 0.0 and f.asr is None
    fill(q, "a", 20, 20.0, status=486)
    f = q.figures("a", ALL, 100.0)
    assert f.seizures == 30 and f.asr == pytest.approx(10 / 30)
    assert f.pdd == pytest.approx(0.1)


def test_only_attempts_health_does_not_count_as_faults_feed_quality() -> None:
    q = QualityTracker(S(min_asr_samples=1))
    faults = (
        attempt("a", 503, 1.0),
        attempt("a", 403, 2.0),
        attempt("a", None, 3.0, kind="timeout"),
        attempt("a", None, 4.0, kind="unreachable"),
        attempt("a", 487, 5.0),  # the caller cancelled
        attempt("a", None, 6.0, kind="budget"),
    )
    q.feed(record("b", 200, 7.0, before=faults))
    assert q.figures("a", ALL, 10.0).seizures == 0
    b = q.figures("b", ALL, 10.0)
    assert (b.seizures, b.answered, b.ended) == (1, 1, 1)
    q.feed(record("a", 404, 8.0))  # the destination's answer counts
    assert q.figures("a", ALL, 10.0).asr == 0.0


def test_the_window_slides_and_the_cap_bounds_memory() -> None:
    q = QualityTracker(S(window=60.0, min_asr_samples=1, cap=50))
    fill(q, "a", 100, 0.0, every=0.1, status=486)
    f = q.figures("a", ALL, 20.0)
    assert f.seizures == 50  # capped
    fill(q, "a", 10, 30.0, status=200, seconds=5.0)  # they end at 36 s
    assert q.figures("a", ALL, 75.0).seizures == 10  # the 486s left the window
    assert q.figures("a", ALL, 75.0).asr == 1.0
    assert q.figures("a", ALL, 200.0).seizures == 0


def test_feed_ignores_other_events() -> None:
    q = QualityTracker(S())
    assert q.feed(attempt("a", 200, 1.0)) == [] and q.feed("x") == []


# -- verdicts ------------------------------------------------------------------------------


def test_a_fake_busy_carrier_is_demoted_for_its_group_only() -> None:
    q = QualityTracker(S(groups=("1", "44")))
    fill(q, "b", 40, 0.0)  # b answers everything to 1...
    changes = fill(q, "a", 40, 0.0, busy_every=5)  # ...a answers 1 in 5
    assert [(c.carrier, c.group, c.demoted) for c in changes] == [("a", "1", True)]
    assert changes[0].reason.startswith("ASR 20 % over 30 calls (peers 100 %)")
    assert q.judge("a", "1", 5.0)[0] is True
    assert q.judge("b", "1", 5.0) == (False, "ASR 100 % over 40 calls")
    # To 44, a is as good as b: not demoted there (health is global, quality is not).
    fill(q, "a", 40, 0.0, number=UK)
    fill(q, "b", 40, 0.0, number=UK)
    assert q.judge("a", "44", 5.0)[0] is False
    assert q.demoted() == [("a", "1", "ASR 20 % over 40 calls (peers 100 %)")]


def test_no_peers_no_demotion_unless_an_absolute_floor_is_set() -> None:
    q = QualityTracker(S())
    assert fill(q, "a", 40, 0.0, busy_every=5) == []
    floored = QualityTracker(S(min_asr=0.3))
    changes = fill(floored, "a", 40, 0.0, busy_every=5)
    assert [c.demoted for c in changes] == [True]
    assert "ASR 20 % over 30 calls (floor 30 %)" in changes[0].reason


def test_peers_below_their_minimum_do_not_count() -> None:
    q = QualityTracker(S())
    fill(q, "b", 29, 0.0)
    assert fill(q, "a", 40, 0.0, busy_every=5) == []
    assert [c.demoted for c in fill(q, "b", 1, 10.0)] == [True]  # b reaches 30: a is judged


def test_false_answers_are_caught_by_the_short_calls_and_acd() -> None:
    q = QualityTracker(S(short_call=6.0))
    fill(q, "b", 40, 0.0, seconds=60.0)
    changes = fill(q, "a", 40, 0.0, seconds=2.0)
    assert [c.demoted for c in changes] == [True]
    why = changes[0].reason
    assert "100 % of 10 answered calls under 6 s (peers 0 %)" in why
    assert "ACD 2.0 s over 10 answered calls (peers 60.0 s)" in why
    assert "ASR" not in why  # its ASR is perfect: the answers are what is false


def test_a_long_pdd_demotes_only_past_the_margin() -> None:
    q = QualityTracker(S(pdd_margin=1.0))
    fill(q, "b", 40, 0.0, pdd=0.1)
    assert fill(q, "a", 40, 0.0, pdd=0.6) == []  # six times longer, but 0.5 s: noise
    q2 = QualityTracker(S(pdd_margin=1.0))
    fill(q2, "b", 40, 0.0, pdd=0.5)
    changes = fill(q2, "a", 40, 0.0, pdd=3.0)
    assert changes and "PDD 3.00 s over 30 calls (peers 0.50 s)" in changes[0].reason


def test_a_demoted_carrier_comes_back_when_its_samples_age_out() -> None:
    q = QualityTracker(S(window=60.0))
    fill(q, "b", 40, 0.0, seconds=5.0)
    assert [c.demoted for c in fill(q, "a", 40, 0.0, busy_every=5, seconds=5.0)] == [True]
    # Only b's calls from now on (a is demoted): a's samples leave the window.
    changes = fill(q, "b", 40, 70.0, seconds=5.0)
    assert [(c.carrier, c.demoted) for c in changes] == [("a", False)]
    assert q.judge("a", ALL, 75.0)[0] is False


def test_a_carrier_that_improves_is_restored() -> None:
    q = QualityTracker(S())
    fill(q, "b", 40, 0.0)
    fill(q, "a", 30, 0.0, busy_every=5)
    assert q.judge("a", ALL, 4.0)[0] is True
    changes = fill(q, "a", 200, 10.0)
    assert [c.demoted for c in changes] == [False]


def test_a_figure_at_the_threshold_does_not_flip_the_verdict() -> None:
    q = QualityTracker(S(window=1e6))
    fill(q, "b", 100, 0.0)  # peers: 100 %
    assert [c.demoted for c in fill(q, "a", 60, 0.0, busy_every=3)] == [True]  # 33 %
    # Back over the threshold (60 of 100, 60 %) but not halfway to the peers: still demoted.
    assert fill(q, "a", 40, 10.0) == []
    assert q.judge("a", ALL, 20.0)[0] is True
    assert q.judge("a", ALL, 20.0)[1] == "ASR 60 % over 100 calls (peers 100 %)"
    changes = fill(q, "a", 80, 20.0)  # 140 of 180: 78 %
    assert [c.demoted for c in changes] == [False]
    assert q.judge("a", ALL, 40.0) == (False, "ASR 78 % over 180 calls")


def test_forget_drops_a_carrier() -> None:
    q = QualityTracker(S())
    fill(q, "b", 40, 0.0)
    fill(q, "a", 40, 0.0, busy_every=5)
    q.forget("a")
    assert q.judge("a", ALL, 5.0) == (False, None) and q.figures("a", ALL, 5.0).seizures == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        QualityTracker(S(well_below=1.0))
    with pytest.raises(ValueError):
        QualityTracker(S(window=0))


# -- the plan: cost, quality and health in one ranking -----------------------------------------


def target(name: str, port: int) -> Target:
    return Target(name, parse_uri(f"sip:127.0.0.1:{port}"), Flow("udp", ("127.0.0.1", port)))


TARGETS = [target("a", 5071), target("b", 5072), target("c", 5073)]


@pytest.fixture
def routing(tmp_path: Path) -> RoutingTable:
    carriers = []
    for name, rate in (("a", "0.002"), ("b", "0.004"), ("c", "0.006")):
        path = tmp_path / f"{name}.csv"
        path.write_text(f"prefix,rate\n1,{rate}\n44,{rate}\n")
        carriers.append(CarrierRoute(name, load_deck(path, DeckColumns(), name)))
    return RoutingTable(carriers, rng=random.Random(3))


def demoted_a() -> QualityTracker:
    q = QualityTracker(S(groups=("1", "44")))
    fill(q, "b", 200, 0.0)
    fill(q, "c", 40, 0.0)
    fill(q, "a", 240, 0.0, busy_every=8)
    return q


def names(plan: list[Target]) -> list[str]:
    return [t.name for t in plan]


def test_a_demoted_carrier_goes_after_its_peers_with_the_figures_in_explain(
    routing: RoutingTable,
) -> None:
    q = demoted_a()
    counters: Counter[str] = Counter()
    plan = build_plan(US, TARGETS, 30.0, routing=routing, quality=q, counters=counters)
    assert names(plan.targets) == ["b", "c", "a"]  # cost order, a demoted behind
    line = next(x for x in plan.explain if x.startswith("a:"))
    assert line.startswith("a: 0.002/min")
    assert line.endswith("ASR 12 % over 240 calls (peers 100 %) \u2192 demoted for 1")
    b_line = next(x for x in plan.explain if x.startswith("b:"))
    assert b_line.startswith("b: 0.004/min") and b_line.endswith(", ASR 100 % over 200 calls")
    assert counters["plans_quality_demoted"] == 1
    # The same carrier to another group keeps its cost rank.
    uk = build_plan(UK, TARGETS, 30.0, routing=routing, quality=q)
    assert names(uk.targets) == ["a", "b", "c"]


def test_health_still_takes_out_and_quality_never_brings_back(routing: RoutingTable) -> None:
    q = demoted_a()
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1))
    health.unreachable("b", 10.0, "refused")
    plan = build_plan(US, TARGETS, 12.0, routing=routing, quality=q, health=health)
    assert names(plan.targets) == ["c", "a"]  # b out for health; a demoted, still a failover
    assert health.targets["a"].state is State.UP  # quality left health alone
    assert any(x.startswith("b: skipped") for x in plan.explain)


def test_every_carrier_demoted_keeps_cost_order(routing: RoutingTable) -> None:
    q = QualityTracker(S(min_asr=0.9))
    for name in ("c", "b", "a"):
        fill(q, name, 40, 0.0, busy_every=2)
    plan = build_plan(US, TARGETS, 10.0, routing=routing, quality=q)
    assert names(plan.targets) == ["a", "b", "c"]


def test_config_order_without_routing_is_reordered_too() -> None:
    q = QualityTracker(S())
    fill(q, "b", 40, 0.0)
    fill(q, "a", 40, 0.0, busy_every=5)
    plan = build_plan("15551234567", TARGETS, 10.0, quality=q)
    assert names(plan.targets) == ["b", "c", "a"]
    assert plan.explain[0].startswith("a: config order, ASR 20 % over 40 calls (peers 100 %)")


def test_recorded_quality_reads_the_logged_demotions() -> None:
    tracker = QualityTracker(S(groups=("1",)))
    view = RecordedQuality(
        tracker,
        [
            ("a", "demoted", "for 1: ASR 12 % over 240 calls (peers 41 %)", "10:00:00"),
            ("b", "demoted", "for 1: ASR 1 % over 99 calls (peers 50 %)", "10:00:01"),
            ("b", "restored", "for 1: ASR 45 % over 300 calls", "10:05:00"),
            ("c", "demoted", "not a detail this reads", "10:06:00"),
        ],
    )
    assert view.group_of(US) == "1"
    assert view.judge("a", "1", 0.0) == (
        True,
        "ASR 12 % over 240 calls (peers 41 %) (as of 10:00:00)",
    )
    assert view.judge("b", "1", 0.0) == (False, None)
    assert view.judge("c", "1", 0.0) == (False, None)


def test_verdicts_are_worked_out_at_most_once_per_evaluate_every() -> None:
    q = QualityTracker(QualitySettings(evaluate_every=1.0))
    fill(q, "b", 40, 0.0, every=0.1, seconds=1.0)
    # 40 busies in 0.4 s: judged on the first (too few samples then), not on the others.
    assert fill(q, "a", 40, 7.0, every=0.01, status=486) == []
    assert q.figures("a", ALL, 8.0).seizures == 40 and q.judge("a", ALL, 8.0)[0] is False
    later = q.feed(record("a", 486, 10.0))
    assert [c.demoted for c in later] == [True]
    assert later[0].reason.startswith("ASR 0 % over 41 calls (peers 100 %)")
