"""A plan's silent carriers go last: no new call starts on a carrier that has gone quiet.

The health engine says which targets are silent (``HealthEngine.silenced``:
an INVITE waiting on them far longer than they usually take to answer). A
new call's plan keeps them, after every other route, so a call whose other
routes all fail may still reach them; and when every route of the plan is
silent, it still tries them all. Silent ones go by how long they have been
silent, shortest first (a carrier 25 ms late is likelier to answer than one
silent for 250 ms), then in the plan's order.
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
    held = sorted(
        (t for t in plan.targets if t.name in quiet),
        key=lambda t: health.silent_for(t.name, now) or 0.0,  # stable: plan order on ties
    )
    if not loud:
        counters["plans_all_silent"] += 1
        explain.append(
            "every route is silent ("
            + "; ".join(f"{t.name} {quiet[t.name]}" for t in held)
            + "): trying them anyway, the shortest silence first"
        )
        return dataclasses.replace(plan, targets=held, explain=explain)
    counters["plans_silence_held_back"] += 1
    explain += [f"{t.name}: held back to the end, {quiet[t.name]}" for t in held]
    return dataclasses.replace(plan, targets=loud + held, explain=explain)
