"""Two ``bench/proxy_rate.py --json`` reports side by side (before, after).

Prints the highest rate held, the post-dial delay added at the PDD rate (p50/p95/p99),
and for each ramp step both ran: PDD p50/p99 under that load, and the router's CPU per
1,000 calls (CPU seconds: its share of a core times the step's length, over its calls).

Run: ``.venv/bin/python bench/rate_compare.py BEFORE.json AFTER.json``
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _f(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def cpu_per_1000(step: dict[str, Any]) -> float:
    calls = step.get("calls") or 0
    if not calls:
        return math.nan
    return _num(step.get("router_cpu_pct")) / 100 * _num(step.get("wall_s")) / calls * 1000


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = (json.loads(Path(p).read_text()) for p in argv)
    names = ("before", "after")
    print(f"{'':<44} {'before':>16} {'after':>16}")
    row = [f"{r.get('highest_rate', 0)} calls/s" for r in (before, after)]
    print(f"{'highest rate with < 0.1 % failed':<44} {row[0]:>16} {row[1]:>16}")
    quals = [str(r.get("highest_rate_qualifier", "")) for r in (before, after)]
    for name, q in zip(names, quals, strict=True):
        print(f"  {name}: {q}")
    print(f"{'background load at the start (% of a core)':<44}", end="")
    print("".join(f" {_num(r.get('background_load_pct')):>16.0f}" for r in (before, after)))
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        cells = []
        for r in (before, after):
            pdd = r.get("pdd", {})
            routed = _num(pdd.get("through_router", {}).get(key))
            direct = _num(pdd.get("direct", {}).get(key))
            cells.append(f"{_f(routed - direct)} ms")
        rate = before.get("pdd", {}).get("rate", "?")
        label = f"PDD added at {rate} calls/s, {key[:3]}"
        print(f"{label:<44} {cells[0]:>16} {cells[1]:>16}")
    steps = [{s["rate"]: s for s in r.get("ramp", [])} for r in (before, after)]
    common = sorted(set(steps[0]) & set(steps[1]))
    if common:
        print("\nramp steps both ran: PDD p50 / p99 (ms) under load; router CPU s per 1,000 calls")
        head = ("rate", "before PDD", "after PDD", "before CPU", "after CPU")
        print(f"  {head[0]:>5} {head[1]:>14} {head[2]:>14} {head[3]:>11} {head[4]:>10}")
        for rate in common:
            b, a = steps[0][rate], steps[1][rate]
            pdd = [
                f"{_f(_num(s['pdd_p50_ms']), 1)} / {_f(_num(s['pdd_p99_ms']), 1)}" for s in (b, a)
            ]
            cpu = [_f(cpu_per_1000(s), 3) for s in (b, a)]
            print(f"  {rate:>5} {pdd[0]:>14} {pdd[1]:>14} {cpu[0]:>11} {cpu[1]:>10}")
    for r, name in zip((before, after), names, strict=True):
        for s in r.get("sustained", []):
            print(
                f"{name} sustained {s['rate']} calls/s: {s['failed_pct']:.2f} % failed, "
                f"CPU {_f(cpu_per_1000(s), 3)} s per 1,000 calls, "
                f"router {s['router_rss_mb']:.0f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
