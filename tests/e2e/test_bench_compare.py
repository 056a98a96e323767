"""bench/compare.py end to end, short: SIPp calls through Kamailio's dispatcher, then
through trunkguard, and the figures of each come from the calls they really carried.

``--quick`` runs every phase of the benchmark (direct PDD baseline, PDD run, ramp step,
hold) at 30 calls/s for a second or so each. What is checked is causality, not speed:
every call SIPp sent reached the primary carrier through the SUT under test and ended
well, each SUT's figures are computed from those runs, and both SUTs were measured by
their own processes (Kamailio's workers, trunkguard's one process).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "compare.py"
# The quick run takes about 15 s; the bound is for a machine that is very busy.
RUN_TIMEOUT = 180.0


def test_quick_compare_measures_real_calls_through_both(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out), "--workdir",
         str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "Side by side" in done.stdout
    assert "tg/Kamailio" in done.stdout

    suts = report["suts"]
    assert list(suts) == ["kamailio", "trunkguard"]
    for kind, sut in suts.items():
        runs = sut["runs"]
        # The baseline, caller -> carrier, just before the SUT's PDD run.
        direct = sut["direct"]
        assert [(r["sut"], r["phase"], r["sut_processes"]) for r in direct] == [
            ("direct", "pdd", 0)
        ]
        assert [r["phase"] for r in runs] == ["pdd", "ramp", "hold"], kind
        for run in [*runs, *direct]:
            step = run["step"]
            where = f"{kind} {run['phase']}"
            # Calls counted are the calls sent: SIPp's count, its trace, and the carriers'.
            assert run["sent"] == step["calls"], where
            assert run["carried"] == run["sent"], where
            assert run["by_carrier"] == {"primary": run["sent"], "backup": 0}, where
            assert step["successful"] == step["calls"], where
            assert step["pdd_p50_ms"] is not None and step["pdd_p50_ms"] > 0, where
        for run in runs:
            assert run["sut"] == kind
            assert run["sut_cpu_s"] >= 0, f"{kind} {run['phase']}"
        # /proc counts CPU in 10 ms ticks per process: Kamailio's few dozen calls here,
        # spread over its workers, may stay under a tick; trunkguard's use several.
        if kind == "trunkguard":
            assert all(r["sut_cpu_s"] > 0 for r in runs), runs
        # Kamailio is a main process and its workers; trunkguard is one process.
        processes = {r["sut_processes"] for r in runs}
        assert processes == {1} if kind == "trunkguard" else min(processes) > 4, processes

        assert sut["ramp_best"] == 30, kind
        assert sut["held_rate"] == 30, kind
        hold = runs[-1]
        assert sut["cpu_s_per_1000_held"] == pytest.approx(
            1000 * hold["sut_cpu_s"] / hold["sent"]
        )
        added = sut["added_pdd_ms"]["30"]
        assert added["p50"] == pytest.approx(
            runs[0]["step"]["pdd_p50_ms"] - direct[0]["step"]["pdd_p50_ms"]
        )
        assert math.isfinite(added["p99"])
        assert sut["pdd_p95_ms"] == runs[0]["pdd_p95_ms"] > 0

    ratio_row = next(line for line in report["table"] if line.strip().startswith("highest rate"))
    assert ratio_row.split()[-3:] == ["30", "30", "1.00"]
