"""The plan of one call: which targets, in which order, and why each is there or not.

Routing (cost, pins, blocks) ranks the carriers for the number; health takes
out those out of rotation or full; the panic rule puts them all back when
none is left. Every candidate gets a line saying why, which the log and
``trunkguard route`` show.
"""

from __future__ import annotations

import logging
from collections import Counter

from ..health import HealthEngine, State
from ..routing import NumberError, NumberRules, RoutingTable, normalize
from ._types import Plan, Target

log = logging.getLogger("trunkguard.proxy")


def build_plan(
    user: str,
    targets: list[Target],
    now: float,
    *,
    routing: RoutingTable | None = None,
    numbers: NumberRules | None = None,
    health: HealthEngine | None = None,
    counters: Counter[str] | None = None,
) -> Plan:
    counters = counters if counters is not None else Counter()
    explain: list[str] = []
    number: str | None = None
    ordered = targets
    if routing is not None:
        try:
            number = normalize(user, numbers or NumberRules())
        except NumberError as exc:
            counters["calls_undialable"] += 1
            return Plan([], rejected=(484, str(exc)))
        blocked = routing.blocked(number)
        if blocked is not None:
            counters["calls_blocked"] += 1
            why = f"{number} is in blocked prefix {blocked}"
            return Plan([], number=number, rejected=(403, why), explain=[why])
        by_name = {t.name: t for t in targets}
        ordered = []
        pool = routing.pool_for(number)
        if pool is not None:
            names, explain, change = pool.order(
                (lambda name: health.admits(name)) if health is not None else (lambda name: True),
                now,
            )
            if change is not None:
                counters[f"pool_changes:{pool.name}"] += 1
                log.warning("%s", change)
            ordered = [by_name[n] for n in names if n in by_name]
        else:
            for choice in routing.rank(number):
                explain.append(f"{choice.name}: {choice.why}")
                if choice.used and choice.name in by_name:
                    ordered.append(by_name[choice.name])
        if not ordered:
            counters["calls_unroutable"] += 1
            return Plan(
                [],
                number=number,
                rejected=(404, f"no carrier has a rate for {number}"),
                explain=explain,
            )
    else:
        explain = [f"{t.name}: config order" for t in targets]
    if health is None:
        return Plan(ordered, number=number, explain=explain)
    room: list[Target] = []
    full: list[str] = []
    healthy = 0
    for t in ordered:
        h = health.targets[t.name]
        if not health.admits(t.name):
            what = "one trial at a time" if h.state is State.PROBING else h.reason
            explain.append(f"{t.name}: skipped, {h.state} for {now - h.since:.0f}s ({what})")
            continue
        healthy += 1
        busy = health.overflow(t.name, now)
        if busy is None:
            room.append(t)
        else:
            full.append(f"{t.name}: {busy}")
            explain.append(f"{t.name}: skipped as overflow ({busy})")
            counters[f"overflow:{t.name}"] += 1
    if healthy:
        return Plan(room, overflow=full, number=number, explain=explain)
    counters["panic_plans"] += 1
    if counters["panic_plans"] == 1 or counters["panic_plans"] % 1000 == 0:
        log.warning(
            "panic: every target of the route%s is out of rotation (%s); trying them all in order",
            f" for {number}" if number else "",
            ", ".join(f"{t.name} {health.state(t.name)}" for t in ordered),
        )
    explain.append("panic: every target of this route is out of rotation; trying them all in order")
    return Plan(list(ordered), panic=True, number=number, explain=explain)
