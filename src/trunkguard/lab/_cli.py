"""`trunkguard lab SCENARIO|all`: run scenarios, show them live, write JSON and HTML reports."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ._dashboard import LabDashboard
from ._live import LiveView
from ._quality import describe_quality
from ._registration import describe
from ._report import write_html, write_json
from ._run import LabResult, run_scenario
from ._scenarios import SCENARIOS, Scenario


async def _one(
    scenario: Scenario, out: Path, console: Console, live: bool, dashboard_wait: float | None
) -> LabResult:
    workdir = out / scenario.name
    console.print(f"[bold]{scenario.name}[/bold]: {scenario.description}")
    dashboard = None if dashboard_wait is None else LabDashboard(dashboard_wait)
    extra: dict[str, Any] = {}
    if dashboard is not None:
        extra = {"admin": dashboard.admin_config(), "on_ready": lambda: dashboard.announce(console)}
    if live and console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as screen:
            view = LiveView(scenario, screen)
            result = await run_scenario(scenario, workdir, on_tick=view.tick, **extra)
    else:
        result = await run_scenario(scenario, workdir, **extra)
    write_json(result, workdir / "result.json")
    write_html(result, workdir / "report.html")
    _print_result(result, console)
    console.print(f"  report: {workdir / 'report.html'}  (JSON: {workdir / 'result.json'})")
    return result


def _print_result(result: LabResult, console: Console) -> None:
    m = result.metrics
    if m["detection_s"] is None:
        detection = "not detected by health"
        if m.get("quality_demoted_s") is not None:
            detection += f"; demoted by quality after {m['quality_demoted_s']} s"
    else:
        detection = f"detection {m['detection_s']} s ({m['detection_reason']})"
    console.print(
        f"  calls {m['attempted']}, failed {m['failed']}, hung {m['hung']}, answered then cut "
        f"with the dead carrier {m['cut_after_answer']}; {detection}; last new INVITE to the "
        f"faulted carrier {m['last_invite_to_faulted_s']} s after the fault; route flips "
        f"{m['route_flips']}"
    )
    if "invites_during_fault" in m:
        console.print(
            f"  new INVITEs to the faulted carrier during the fault "
            f"{m['invites_during_fault']}; held back as silent {m['silences']} times"
        )
    for phase in ("before", "during", "after"):
        p = m[f"pdd_{phase}"]
        console.print(
            f"  post-dial delay {phase:<6}: p50 {p['p50_ms']} ms, p95 {p['p95_ms']} ms, "
            f"max {p['max_ms']} ms over {p['calls']} calls"
        )
    if m.get("router_loop_stalls"):
        console.print(
            f"  [yellow]the router's event loop stalled {m['router_loop_stalls']} times: the "
            "machine was too busy, and these figures are partly the machine's[/yellow]"
        )
    for line in [*describe(m), *describe_quality(m)]:
        console.print(f"  {line}")
    for name, ok, detail in result.checks:
        mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
        console.print(f"  {mark} {name}: {detail}")


def summary_table(results: list[LabResult]) -> Table:
    table = Table(title="trunkguard lab")
    for col in (
        "scenario",
        "calls",
        "failed",
        "detect (s)",
        "last INVITE to a (s)",
        "PDD p95 during (ms)",
        "flips",
        "INVITEs to a in fault",
        "silences",
        "returns (s)",
        "result",
    ):
        table.add_column(col)
    for r in results:
        m = r.metrics
        table.add_row(
            r.scenario,
            str(m["attempted"]),
            str(m["failed"]),
            str(m["detection_s"])
            if "quality_demoted_s" not in m
            else f"health {m['detection_s']}, quality {m['quality_demoted_s']}",
            str(m["last_invite_to_faulted_s"]),
            str(m["pdd_during"]["p95_ms"]),
            f"{m['route_flips']}" + (f" (bound {m['flip_bound']})" if "flip_bound" in m else ""),
            str(m.get("invites_during_fault", "—")),
            str(m.get("silences", "—")),
            str(m.get("traffic_returns_s", "—")),
            "PASS" if r.passed else "FAIL",
        )
    return table


def main(
    names: list[str], out: Path, live: bool = True, dashboard_wait: float | None = None
) -> int:
    """Run the scenarios ``names``; with ``dashboard_wait``, each router serves the dashboard
    (its link printed that many seconds before the calls start)."""
    console = Console()
    if names == ["all"]:
        names = list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        console.print(f"unknown scenario {', '.join(unknown)}; known: all, {', '.join(SCENARIOS)}")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = []
    for name in names:
        results.append(asyncio.run(_one(SCENARIOS[name], out, console, live, dashboard_wait)))
    if len(results) > 1:
        console.print(summary_table(results))
        console.print(f"{len(results)} scenarios in {time.monotonic() - started:.0f} s")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["kill-primary"], Path("lab-results")))
