"""The lab's quality scenarios end to end, shortened and run side by side.

A router process in front of simulated carriers a, b, c; a and b share the
traffic. At 3 s, a turns into a false answerer (200, then its own BYE 2 s later)
in one run and into a fake busy (486 to 80 % of calls) in the other. Health
must leave a UP; quality must demote it for the destination and the calls must
move to b.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from trunkguard.lab import SCENARIOS
from trunkguard.lab._run import run_scenario

pytestmark = pytest.mark.e2e


async def test_quality_scenarios_demote_a_carrier_health_keeps_up(tmp_path: Path) -> None:
    short = {"duration": 14.0, "fault_at": 3.0, "rate": 10.0}
    names = ("false-answer", "fake-busy")
    results = await asyncio.gather(
        *(
            run_scenario(dataclasses.replace(SCENARIOS[n], **short), tmp_path / n)  # type: ignore[arg-type]
            for n in names
        )
    )
    for name, result in zip(names, results, strict=True):
        m = result.metrics
        print(
            f"lab {name} (14 s at 10 calls/s): calls {m['attempted']}, failed {m['failed']}, "
            f"demoted {m['quality_demoted_s']} s after the fault ({m['quality_reason']}), "
            f"health outs {m['health_outs']}, then {m['invites_to_faulted_after_demotion']} "
            f"INVITEs to a for {m['calls_after_demotion']} calls"
        )
        checks = {check: (ok, detail) for check, ok, detail in result.checks}
        for check in (
            "the faulted carrier stays UP in health",
            "quality demotes the faulted carrier",
            "traffic moves off the demoted carrier",
        ):
            assert checks[check][0], (check, checks[check][1])
        # A call may fail only as the carrier meant it (486) or as the router shed it while
        # its event loop stalled (a busy machine): never through quality.
        for c in result.calls:
            if not c["ok"]:
                assert c["final"] == 486 or (c["final"] == 503 and m["router_loop_stalls"]), c
        assert m["health_outs"] == 0 and m["hung"] == 0
        assert m["quality_demoted_s"] is not None and m["quality_demoted_s"] > 0
        assert m["calls_after_demotion"] > 0
        assert m["invites_to_faulted_after_demotion"] <= 0.1 * m["calls_after_demotion"]
        # Before the fault a and b both carried calls: a tie on cost, spread by weight.
        before = {c["answered_by"] for c in result.calls if c["t"] < 3.0}
        assert before == {"a", "b"}
        after = [c for c in result.calls if c["t"] > 3.0 + m["quality_demoted_s"] + 1.0]
        assert {c["answered_by"] for c in after} <= {"a", "b", "c", None}
        assert sum(c["answered_by"] == "b" for c in after) >= 0.9 * sum(
            c["answered_by"] is not None for c in after
        )
    false_answer, fake_busy = (r.metrics for r in results)
    assert "under 6 s" in false_answer["quality_reason"]
    assert false_answer["short_calls_by_faulted"] > 0
    assert "ASR" in fake_busy["quality_reason"]
    assert fake_busy["busy_before_demotion"] > 0
    assert fake_busy["busy_after_demotion"] <= 0.1 * fake_busy["calls_after_demotion"]
