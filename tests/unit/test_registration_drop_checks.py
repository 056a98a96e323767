"""What the registration-drop scenario measures and checks, on made-up timelines.

A good run (the timeline of a real one) passes every check; a router that
hammers the silent registrar, one that brings the carrier back before it is
registered, and one that takes it out for another reason each fail the check
that names their fault.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from trunkguard.lab import SCENARIOS
from trunkguard.lab._registration import backoff_count, describe
from trunkguard.lab._run import LabResult, Sample, measure

SCENARIO = SCENARIOS["registration-drop"]
LOST = "registration lost: 3 REGISTER timeouts"
OUT, BACK, PROBING, UP = 15.0, 23.6, 23.61, 24.2


def _log(unanswered: list[float], accepted: list[float]) -> list[dict[str, Any]]:
    out = []
    for t in unanswered:
        out += [{"t": t, "event": "received"}, {"t": t, "event": "unanswered"}]
    for t in accepted:
        out += [
            {"t": t - 0.002, "event": "received"},
            {"t": t - 0.002, "event": "challenged"},
            {"t": t, "event": "received"},
            {"t": t, "event": "accepted"},
        ]
    return sorted(out, key=lambda e: float(e["t"]))


def _calls() -> list[dict[str, Any]]:
    calls = []
    for k in range(int(SCENARIO.duration * SCENARIO.rate)):
        t = k / SCENARIO.rate
        who = "a" if t < OUT or t > UP else "b"
        calls.append(
            {"call_id": f"c{k}", "t": t, "pdd": 0.005, "final": 200, "answered_by": who,
             "ok": True, "cut": False}
        )  # fmt: skip
    trial = [c for c in calls if PROBING <= c["t"] <= UP]
    for c in trial[:3]:
        c["answered_by"] = "a"
    return calls


def result(**change: Any) -> LabResult:
    unanswered = change.pop("unanswered", [10.0, 12.0, 14.0, 16.0, 19.0])
    events = change.pop(
        "events",
        [
            {"t": OUT, "target": "a", "old": "UP", "new": "DOWN", "reason": LOST},
            {"t": PROBING, "target": "a", "old": "DOWN", "new": "PROBING",
             "reason": "registered, hold-down over"},
            {"t": UP, "target": "a", "old": "PROBING", "new": "UP",
             "reason": "3 trial calls answered"},
        ],
    )  # fmt: skip
    r = LabResult(
        scenario=SCENARIO.name,
        description=SCENARIO.description,
        started_wall=0.0,
        fault_at=SCENARIO.fault_at,
        recover_at=SCENARIO.recover_at,
        duration=SCENARIO.duration,
        faulted=list(SCENARIO.faulted),
        calls=_calls(),
        events=events,
        samples=[Sample(t / 10, {"a": 0, "b": 0}, {}) for t in range(320)],
        registrar_log={"a": _log(unanswered, change.pop("accepted", [0.0, 5.0, BACK, 28.6]))},
        carrier_counters={"a": {"registrar": {"invites_refused": 1}, "retransmissions": {}}},
    )
    assert not change
    measure(r, SCENARIO)
    return r


def failing(r: LabResult) -> list[str]:
    return [name for name, ok, _ in r.checks if not ok]


def test_backoff_count_follows_the_doubling_delays() -> None:
    # Retries 0.9, 1.8, 3.6 s (least jitter) after each timeout of 1 s.
    assert backoff_count(0.5, 1.0) == 0
    assert backoff_count(1.0, 1.0) == 1
    assert backoff_count(6.0, 1.0) == 2
    assert backoff_count(9.0, 1.0) == 3
    assert backoff_count(60.0, 1.0) == 5


def test_a_good_run_passes_and_is_measured() -> None:
    r = result()
    assert failing(r) == []
    m = r.metrics
    assert m["detection_s"] == pytest.approx(OUT - SCENARIO.fault_at)
    assert m["down_reason"] == LOST and m["detect_bound_s"] == 8.5  # 5 + 3 x 1 + 2 x 0.25
    assert m["binding_lapsed_after_fault_s"] == pytest.approx(9.0)
    assert m["out_after_binding_lapsed_s"] == pytest.approx(0.0)
    assert m["first_unanswered_register_to_out_s"] == pytest.approx(5.0)
    assert m["registers_during_outage"] == 5 and m["register_bound"] == 5
    assert m["register_gaps_s"] == [2.0, 2.0, 2.0, 3.0, 4.6]
    assert m["reregistered_after_recovery_s"] == pytest.approx(BACK - 21.0)
    assert m["up_after_recovery_s"] == pytest.approx(UP - 21.0)
    assert m["trial_calls"] == 3 and m["invites_refused_403"] == 1
    assert len(describe(m)) == 2 and describe({"detection_s": 1}) == []


def test_a_register_storm_fails_the_backoff_check() -> None:
    storm = [10.0 + 2 * k for k in range(6)]  # every 2 s, lost or not
    assert "REGISTER backs off, no storm" in failing(result(unanswered=storm))


def test_coming_back_before_registering_fails() -> None:
    early = [
        {"t": OUT, "target": "a", "old": "UP", "new": "DOWN", "reason": LOST},
        {"t": 19.0, "target": "a", "old": "DOWN", "new": "PROBING", "reason": "probes"},
        {"t": 20.0, "target": "a", "old": "PROBING", "new": "UP", "reason": "trials"},
    ]
    assert "a stays out until registered again" in failing(result(events=early))


def test_out_for_another_reason_fails() -> None:
    other = [{"t": OUT, "target": "a", "old": "UP", "new": "DOWN", "reason": "5 consecutive 403"}]
    names = failing(result(events=other))
    assert "a out for its lost registration" in names
    assert "a back UP through probes and trial calls" in names


def test_never_registered_again_fails() -> None:
    names = failing(result(accepted=[0.0, 5.0]))
    assert "a stays out until registered again" in names


def test_a_late_detection_fails_the_bound() -> None:
    late = [{"t": 17.5, "target": "a", "old": "UP", "new": "DOWN", "reason": LOST}]
    r = result(events=late)
    assert "out within one refresh interval and the timeouts" in failing(r)


def test_the_scenario_is_registration_drop_on_a_and_b() -> None:
    assert (SCENARIO.carriers, SCENARIO.registers, SCENARIO.faulted) == (("a", "b"), ("a",), ("a",))
    assert SCENARIO.fault.name == "registrar-silent"
    assert dataclasses.replace(SCENARIO).recover_at == 21.0
