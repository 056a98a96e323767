"""Per-target figures over a window (trunkguard.stats), on a fake clock."""

from __future__ import annotations

import pytest

from trunkguard.proxy import AttemptRecord, CallRecord
from trunkguard.stats import TargetStats


def attempt(target: str, status: int | None, started: float, pdd: float | None = 0.1,
            kind: str = "response") -> AttemptRecord:
    return AttemptRecord(
        call_id=f"c{started}", target=target, attempt=1, status=status, kind=kind,
        verdict=None, started=started, ended=started + 0.5,
        first_response=None if pdd is None else started + pdd,
    )


def call(target: str, answered: float, ended: float) -> CallRecord:
    a = attempt(target, 200, answered - 1.0)
    return CallRecord(
        call_id="x", number="1", source="127.0.0.1", plan=(target,), explain=(),
        attempts=(a,), status=200, started=answered - 1.0, answered=answered, ended=ended,
        end="bye from caller",
    )


def test_asr_pdd_and_rate_over_the_window() -> None:
    stats = TargetStats(window=60.0)
    for i in range(10):  # 10 seizures over 10 s: 4 answered, PDD 0.1 s .. 1.0 s
        status = 200 if i < 4 else 503
        stats.feed(attempt("a", status, 100.0 + i, pdd=0.1 * (i + 1)))
    f = stats.figures("a", 110.0)
    assert (f.seizures, f.answered) == (10, 4)
    assert f.asr == pytest.approx(0.4)
    assert f.calls_per_s == pytest.approx(1.0)  # since the first sample, not the whole window
    assert f.pdd_p50 == pytest.approx(0.6)
    assert f.pdd_p95 == pytest.approx(1.0)
    assert stats.figures("a", 171.0).seizures == 0  # all older than the window
    assert stats.figures("a", 171.0).asr is None


def test_acd_counts_answered_calls_on_the_target_that_answered() -> None:
    stats = TargetStats(window=60.0)
    stats.feed(call("b", answered=10.0, ended=40.0))
    stats.feed(call("b", answered=20.0, ended=30.0))
    assert stats.figures("b", 50.0).acd == pytest.approx(20.0)
    assert stats.figures("a", 50.0).acd is None


def test_budget_attempts_are_no_seizure_and_the_cap_bounds_memory() -> None:
    stats = TargetStats(window=1000.0, cap=100)
    stats.feed(attempt("a", None, 1.0, kind="budget"))
    assert stats.figures("a", 2.0).seizures == 0
    for i in range(1000):  # 10 a second for 100 s
        stats.feed(attempt("a", 200, 10.0 + i / 10))
    f = stats.figures("a", 110.4)  # the last ended at 110.4
    assert f.seizures == 100
    assert f.calls_per_s == pytest.approx(10.0, rel=0.05)  # over the span the cap kept


def test_bad_window_refused() -> None:
    with pytest.raises(ValueError):
        TargetStats(window=0)


def test_the_running_totals_agree_with_a_pass_over_the_samples() -> None:
    import random

    rng = random.Random(7)
    stats = TargetStats(window=60.0, cap=50)
    now = 0.0
    for _ in range(2000):
        now += rng.uniform(0.0, 0.5)
        status = rng.choice([200, 200, 486, 503, None])
        stats.feed(attempt("a", status, now, pdd=rng.choice([None, 0.2])))
        if status == 200 and rng.random() < 0.7:
            stats.feed(call("a", now, now + rng.uniform(0.0, 90.0)))
        if rng.random() < 0.1:
            now += rng.uniform(0.0, 80.0)  # a quiet spell: the window empties
        t = stats._targets["a"]
        fast = stats.rates("a", now)
        assert fast.answered == sum(1 for _, ok, _ in t.calls if ok)
        if t.durations:
            mean = sum(d for _, d in t.durations) / len(t.durations)
            assert fast.acd == pytest.approx(mean)
        else:
            assert fast.acd is None
        full = stats.figures("a", now)
        assert (full.seizures, full.answered, full.asr, full.calls_per_s) == (
            fast.seizures, fast.answered, fast.asr, fast.calls_per_s,
        )


def test_pdd_quantiles_are_those_of_the_latest_attempts() -> None:
    from trunkguard.stats import PDD_SAMPLES

    stats = TargetStats(window=10_000.0)
    for i in range(PDD_SAMPLES):  # an older, slow stretch: 2 s
        stats.feed(attempt("a", 200, float(i), pdd=2.0))
    for i in range(PDD_SAMPLES):  # then fast: 0.05 s
        stats.feed(attempt("a", 200, float(PDD_SAMPLES + i), pdd=0.05))
    f = stats.figures("a", 2.0 * PDD_SAMPLES + 1)
    assert f.seizures == 2 * PDD_SAMPLES  # the rates cover the window
    assert f.pdd_p50 == f.pdd_p95 == pytest.approx(0.05)  # the quantiles, the latest
