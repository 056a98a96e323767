"""A plan's silent carriers go last: no new call starts on a carrier that has gone quiet.

The health engine says which targets are silent (``HealthEngine.silenced``:
an INVITE waiting on them far longer than they usually take to answer). A
new call's plan keeps them, after every other route, so a call whose other
routes all fail may still reach them; and when every route of the plan is
silent, it tries them all in their usual order, as if nothing were said.
A silent carrier is healthy by every other rule: pools, capacity and the
failover of calls already in flight do not look at silence.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from ..health import HealthEngine
from ..routing import Plan


def hold_back_silent(plan: Plan, health: HealthEngine, now: float, counters: Counter[str]) -> Plan:
    """``plan`` with its silent targets moved last, each saying why."""
    if plan.panic or plan.rejected is not None or not plan.targets:
        return plan
    quiet = {t.name: why for t in plan.targets if (why := health.silenced(t.name, now))}
    if not quiet:
        return plan
    explain = list(plan.explain)
    loud = [t for t in plan.targets if t.name not in quiet]
    if not loud:
        counters["plans_all_silent"] += 1
        explain.append(
            "every route is silent ("
            + "; ".join(f"{name} {why}" for name, why in quiet.items())
            + "): trying them in order anyway"
        )
        return dataclasses.replace(plan, explain=explain)
    counters["plans_silence_held_back"] += 1
    explain += [f"{name}: held back to the end, {why}" for name, why in quiet.items()]
    held = [t for t in plan.targets if t.name in quiet]
    return dataclasses.replace(plan, targets=loud + held, explain=explain)
