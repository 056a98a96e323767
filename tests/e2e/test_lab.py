"""The lab end to end, shortened: a router process, simulated carriers, a fault, a report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from trunkguard.lab import SCENARIOS
from trunkguard.lab._report import write_html, write_json
from trunkguard.lab._run import run_scenario

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", ["kill-primary", "reject-503"])
async def test_short_scenario(name: str, tmp_path: Path) -> None:
    scenario = dataclasses.replace(SCENARIOS[name], duration=10.0, fault_at=4.0, rate=10.0)
    result = await run_scenario(scenario, tmp_path)
    m = result.metrics
    print(
        f"lab {name} (10 s at 10 calls/s): calls {m['attempted']}, failed {m['failed']}, "
        f"detection {m['detection_s']} s ({m['detection_reason']})"
    )
    assert result.passed, result.checks
    # 10 s at 10 calls/s: the pacer starts what the loop lets it in the time (a loaded
    # machine fitted 99), and every call it started must complete.
    assert 90 <= m["attempted"] <= 100 and m["failed"] == 0 and m["hung"] == 0
    assert m["detection_s"] is not None and m["detection_s"] < 1.0
    assert {c["answered_by"] for c in result.calls if c["t"] < 4.0} == {"a"}
    assert {c["answered_by"] for c in result.calls if c["t"] > 5.0} == {"b"}
    write_json(result, tmp_path / "result.json")
    write_html(result, tmp_path / "report.html")
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["passed"] is True and data["scenario"] == name
    assert 'id="rate-chart"' in (tmp_path / "report.html").read_text()


async def test_lab_with_a_relative_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # make demo writes to lab-results/ relative to the checkout: the router's event log
    # must land where the lab reads it.
    monkeypatch.chdir(tmp_path)
    scenario = dataclasses.replace(SCENARIOS["kill-primary"], duration=6.0, fault_at=2.0, rate=10.0)
    result = await run_scenario(scenario, Path("lab-results") / "kill-primary")
    assert result.metrics["detection_s"] is not None, result.events
    assert (tmp_path / "lab-results" / "kill-primary" / "events.db").exists()
