"""The lab's HTML report, opened in headless Chromium: the charts really render.

The report itself has no script. The test appends one to a copy: it measures
the laid-out size of every chart element with getBBox() and writes the figures
into the page, which Chromium then dumps. A chart that did not render has no
size. A screenshot is kept next to the report for a person to look at.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from trunkguard.lab._report import write_html
from trunkguard.lab._run import LabResult, Sample

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

PROBE = """<script>
const out = {};
for (const id of ["rate-chart", "pdd-chart"]) {
  const svg = document.getElementById(id);
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  out[id] = {width: box.width, height: box.height};
}
out.series = [...document.querySelectorAll("polyline.series")].map(p => {
  const b = p.getBBox(); return {carrier: p.dataset.carrier, width: b.width, height: b.height};
});
out.calls = document.querySelectorAll("circle.call").length;
out.markers = document.querySelectorAll("line.fault, g.state-change").length;
document.body.setAttribute("data-probe", JSON.stringify(out));
</script>"""


def _result() -> LabResult:
    calls = []
    for i in range(400):
        t = i / 20
        who = "a" if t < 10 else "b"
        calls.append(
            {
                "call_id": f"c{i}",
                "t": t,
                "pdd": 0.002 + (0.3 if 10 <= t < 10.4 else 0.0),
                "final": 200,
                "answered_by": who,
                "ok": True,
            }
        )
    events = [
        {"t": 10.05, "target": "a", "old": "UP", "new": "DOWN", "reason": "a unreachable"},
        {"t": 13.1, "target": "a", "old": "DOWN", "new": "PROBING", "reason": "hold-down over"},
    ]
    return LabResult(
        scenario="kill-primary",
        description="carrier a's process dies",
        started_wall=0.0,
        fault_at=10.0,
        recover_at=None,
        duration=20.0,
        faulted=["a"],
        calls=calls,
        events=events,
        samples=[Sample(0.0, {"a": 0}, {})],
        metrics={"attempted": 400, "failed": 0},
        checks=[("zero failed", True, "0 of 400")],
    )


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)
def test_report_charts_render_in_chromium(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    report = tmp_path / "report.html"
    write_html(_result(), report)
    assert "<script" not in report.read_text()  # the report itself is script-free
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert match, dom.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    print(f"chromium laid out: {probe}")
    for chart in ("rate-chart", "pdd-chart"):
        assert probe[chart]["width"] > 500 and probe[chart]["height"] > 150
    widths = {s["carrier"]: s["width"] for s in probe["series"]}
    assert widths["a"] > 500 and widths["b"] > 500  # every carrier's line spans the run
    assert probe["calls"] == 400
    assert probe["markers"] >= 3  # the fault and two state changes
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=1000,900",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
