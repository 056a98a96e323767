"""A lab or drill result as JSON and as one self-contained HTML page with SVG charts.

No script and no external file: the page opens anywhere, from a mail
attachment included. Two charts share the time axis: answered calls per
second per carrier with the fault and every state change marked, and the
post-dial delay of every call (failed calls marked on top).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._run import LabResult

COLORS = {"a": "#1f77b4", "b": "#2ca02c", "c": "#9467bd"}
STATE_COLORS = {
    "DOWN": "#d62728", "SUSPECT": "#ff7f0e", "PROBING": "#bcbd22", "UP": "#2ca02c",
    "DRAINED": "#7f7f7f", "FORCED_DOWN": "#8c564b",
}  # fmt: skip
W, H, PAD = 900, 260, 48


def write_json(result: LabResult, path: Path) -> None:
    data = asdict(result)
    data["passed"] = result.passed
    path.write_text(json.dumps(data, indent=1, default=str))


def _x(t: float, duration: float) -> float:
    return PAD + (W - 2 * PAD) * max(0.0, min(t, duration)) / duration


def _markers(result: LabResult, top: float, bottom: float) -> list[str]:
    d = result.duration
    out = []
    x = _x(result.fault_at, d)
    out.append(
        f'<line class="fault" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" '
        f'stroke="#d62728" stroke-dasharray="6 3"/>'
        f'<text x="{x + 3:.1f}" y="{top + 10}" font-size="11" fill="#d62728">fault</text>'
    )
    if result.recover_at is not None:
        x = _x(result.recover_at, d)
        out.append(
            f'<line class="recover" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" '
            f'stroke="#2ca02c" stroke-dasharray="6 3"/>'
            f'<text x="{x + 3:.1f}" y="{top + 10}" font-size="11" fill="#2ca02c">recovery</text>'
        )
    for i, e in enumerate(result.events):
        if e["t"] < 0:
            continue
        x = _x(e["t"], d)
        color = STATE_COLORS.get(e["new"], "#333")
        label = html.escape(f"{e['target']} {e['new']}")
        title = html.escape(f"{e['t']:.2f}s {e['target']}: {e['old']} -> {e['new']}: {e['reason']}")
        y = top + 22 + 11 * (i % 4)
        out.append(
            f'<g class="state-change"><title>{title}</title>'
            f'<line x1="{x:.1f}" y1="{top + 14}" x2="{x:.1f}" y2="{bottom}" stroke="{color}" '
            f'stroke-width="1" opacity="0.6"/>'
            f'<text x="{x + 2:.1f}" y="{y}" font-size="10" fill="{color}">{label}</text></g>'
        )
    return out


def _axes(duration: float, ymax: float, ylabel: str) -> list[str]:
    out = [
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="{PAD / 2}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
        f'<text x="{W / 2}" y="{H - 10}" font-size="12" text-anchor="middle">seconds</text>',
        f'<text x="12" y="{H / 2}" font-size="12" transform="rotate(-90 12 {H / 2})" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>',
    ]
    step = max(1, round(duration / 10))
    for s in range(0, int(duration) + 1, step):
        x = _x(s, duration)
        out.append(
            f'<text x="{x:.1f}" y="{H - PAD + 14}" font-size="10" text-anchor="middle">{s}</text>'
        )
    for frac in (0.0, 0.5, 1.0):
        y = (H - PAD) - frac * (H - 1.5 * PAD)
        out.append(
            f'<text x="{PAD - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">'
            f"{ymax * frac:.0f}</text>"
        )
    return out


def rate_chart(result: LabResult) -> str:
    d = result.duration
    seconds = int(d) + 1
    series: dict[str, list[int]] = {n: [0] * seconds for n in COLORS}
    for c in result.calls:
        who = c["answered_by"]
        if who in series and c["ok"] and 0 <= c["t"] < seconds:
            series[who][int(c["t"])] += 1
    ymax = max([1, *(max(v) for v in series.values())])
    parts = _axes(d, ymax, "answered calls/s")
    for name, values in series.items():
        pts = " ".join(
            f"{_x(i + 0.5, d):.1f},{(H - PAD) - v / ymax * (H - 1.5 * PAD):.1f}"
            for i, v in enumerate(values)
        )
        parts.append(
            f'<polyline class="series" data-carrier="{name}" fill="none" '
            f'stroke="{COLORS[name]}" stroke-width="2" points="{pts}"/>'
        )
    parts += _markers(result, PAD / 2, H - PAD)
    legend = "".join(
        f'<text x="{W - PAD - 120 + 40 * i}" y="14" font-size="12" fill="{COLORS[n]}">'
        f"&#9632; {n}</text>"
        for i, n in enumerate(COLORS)
    )
    return (
        f'<svg id="rate-chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}">'
        + "".join(parts)
        + legend
        + "</svg>"
    )


def pdd_chart(result: LabResult) -> str:
    d = result.duration
    pdds = [c["pdd"] * 1000 for c in result.calls if c["pdd"] is not None]
    ymax = max([10.0, *pdds])
    parts = _axes(d, ymax, "post-dial delay (ms)")
    for c in result.calls:
        x = _x(c["t"], d)
        if c["pdd"] is not None:
            y = (H - PAD) - (c["pdd"] * 1000) / ymax * (H - 1.5 * PAD)
            color = COLORS.get(c["answered_by"] or "", "#555")
            parts.append(f'<circle class="call" cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}"/>')
        if not c["ok"]:
            parts.append(
                f'<text class="failed" x="{x:.1f}" y="{PAD / 2 + 8}" font-size="10" '
                f'fill="#d62728" text-anchor="middle">&#215;</text>'
            )
    parts += _markers(result, PAD / 2, H - PAD)
    return (
        f'<svg id="pdd-chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}">'
        + "".join(parts)
        + "</svg>"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "—" if value is None else str(value)


def write_html(result: LabResult, path: Path, title: str | None = None) -> None:
    title = title or f"trunkguard lab: {result.scenario}"
    metrics = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in result.metrics.items()
    )
    checks = "".join(
        f'<tr class="{"pass" if ok else "fail"}"><td>{"PASS" if ok else "FAIL"}</td>'
        f"<td>{html.escape(name)}</td><td>{html.escape(detail)}</td></tr>"
        for name, ok, detail in result.checks
    )
    events = "".join(
        f"<tr><td>{e['t']:.2f}</td><td>{html.escape(e['target'])}</td>"
        f"<td>{html.escape(e['old'])} &#8594; {html.escape(e['new'])}</td>"
        f"<td>{html.escape(e['reason'])}</td></tr>"
        for e in result.events
    )
    notices = "".join(
        f"<tr><td>{n['t']:.2f}</td><td>{html.escape(n['target'])}</td>"
        f"<td>{html.escape(n['kind'])} {html.escape(n['state'])}</td>"
        f"<td>{html.escape(n['detail'])}</td></tr>"
        for n in result.notices
    )
    registers = "".join(
        f"<tr><td>{html.escape(name)}</td><td>"
        + html.escape(", ".join(f"{e['t']:.2f} {e['event']}" for e in log))
        + "</td></tr>"
        for name, log in result.registrar_log.items()
    )
    extra = ""
    if notices:
        extra += (
            "<h2>Registration changes and alarms (seconds from the start)</h2>"
            "<table><tr><th>t</th><th>carrier</th><th>notice</th><th>detail</th></tr>"
            f"{notices}</table>"
        )
    if registers:
        extra += (
            "<h2>REGISTERs at the carrier (seconds from the start, and what became of each)</h2>"
            f"<table>{registers}</table>"
        )
    verdict = "PASSED" if result.passed else "FAILED"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 13px; }}
tr.pass td:first-child {{ color: #2ca02c; font-weight: bold; }}
tr.fail td:first-child {{ color: #d62728; font-weight: bold; }}
.verdict {{ font-size: 20px; font-weight: bold; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(result.description)}. Fault at {result.fault_at:g} s
{f"recovery at {result.recover_at:g} s" if result.recover_at is not None else ""};
carriers faulted: {html.escape(", ".join(result.faulted))}.</p>
<p class="verdict">{verdict}</p>
<table>{checks}</table>
<h2>Answered calls per second, per carrier</h2>
{rate_chart(result)}
<h2>Post-dial delay of every call</h2>
{pdd_chart(result)}
<h2>Measurements</h2>
<table>{metrics}</table>
<h2>State changes (seconds from the start)</h2>
<table><tr><th>t</th><th>target</th><th>change</th><th>reason</th></tr>{events}</table>
{extra}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
