"""A silent carrier found at the physical limit, end to end: a router process, the lab's
simulated carriers (real UDP peers), its call generator, 50 calls/s.

- blackhole: carrier a stops answering; it gets at most 3 new INVITEs, and no call
  fails because of it (the ones the router sheds for its own load are its, not a's);
- jitter: a's 100 Trying comes 1 to 50 ms late; it is never held back, never flips.

Shortened from the lab's ``blackhole-50`` and ``jitter`` scenarios (``make lab`` runs
them in full).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from trunkguard.lab import SCENARIOS
from trunkguard.lab._run import MAX_INVITES_TO_SILENT, LabResult, run_scenario

pytestmark = pytest.mark.e2e

# Today's figure without silence (SUSPECT after 3 INVITEs past the 300 ms timer).
WITHOUT_SILENCE = 18


def _overloaded_near(result: LabResult, at: float, margin: float = 1.0) -> list[dict[str, Any]]:
    """The router's own overload notices around ``at``: it then rightly judges no carrier."""
    return [
        n
        for n in result.notices
        if n["kind"] == "overload" and n["state"] == "overloaded" and abs(n["t"] - at) < margin
    ]


def _failed_by_the_router_itself(result: LabResult) -> int:
    """Calls the router refused with its own 503 (overload, stall): a busy machine's."""
    return int(result.router_counters.get("calls_shed", 0))


async def test_a_blackholed_carrier_gets_at_most_3_new_invites_at_50_calls_a_second(
    tmp_path: Path,
) -> None:
    scenario = dataclasses.replace(SCENARIOS["blackhole-50"], fault_at=3.0, duration=7.0)
    result = await run_scenario(scenario, tmp_path)
    m = result.metrics
    n = m["invites_during_fault"]
    print(
        f"blackhole at 50 calls/s: {n} new INVITEs to a, {m['failed']} of {m['attempted']} "
        f"failed, {m['silences']} silences, detection {m['detection_s']} s, "
        f"router shed {_failed_by_the_router_itself(result)}"
    )
    # The pacer starts what a loaded machine lets it: a loaded run fitted 208 of 350.
    assert m["attempted"] >= 100 and m["hung"] == 0
    # Every call that failed was one the router shed for its own load, none for a's silence.
    assert m["failed"] <= _failed_by_the_router_itself(result), m["finals"]
    assert m["silences"] >= 1, result.notices
    assert m["detection_s"] is not None  # the usual path took over: SUSPECT, then DOWN
    overload = _overloaded_near(result, scenario.fault_at)
    if overload:
        # A router late itself holds silence back on purpose (it proves nothing about a):
        # still better than without silence, but the strict figure is not this run's.
        print(f"the router was overloaded at the fault ({overload}): bound {WITHOUT_SILENCE}")
        assert n < WITHOUT_SILENCE
    else:
        assert 1 <= n <= MAX_INVITES_TO_SILENT, result.notices
    starts = [x for x in result.notices if x["kind"] == "silence" and x["state"] == "silent"]
    ends = [x for x in result.notices if x["kind"] == "silence" and x["state"] == "heard"]
    assert len(ends) == len(starts)  # one notice per episode's start and end, not per call
    assert all(x["target"] == "a" for x in starts)


async def test_a_carrier_whose_latency_varies_is_never_held_back(tmp_path: Path) -> None:
    scenario = dataclasses.replace(SCENARIOS["jitter"], duration=7.0)
    result = await run_scenario(scenario, tmp_path)
    m = result.metrics
    print(
        f"jitter at 50 calls/s: {m['silences']} silences, {m['route_flips']} flips, "
        f"{m['failed']} of {m['attempted']} failed, PDD p95 during "
        f"{m['pdd_during']['p95_ms']} ms"
    )
    assert m["attempted"] >= 100 and m["hung"] == 0
    assert m["failed"] <= _failed_by_the_router_itself(result), m["finals"]
    assert m["route_flips"] == 0, result.events
    assert m["silences"] == 0, result.notices
    # The calls stayed with a (the cheapest): it was never skipped.
    late = [c for c in result.calls if c["t"] > scenario.fault_at + 1 and c["ok"]]
    assert late and all(c["answered_by"] == "a" for c in late)
