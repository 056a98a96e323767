"""The plan of one call: which targets, in which order, and why each is there or not.

Routing (cost, pins, blocks, pools) ranks the targets for the number; health,
seen through a read-only view, takes out those out of rotation or full; the
panic rule puts them all back when none is left. Every candidate gets a line
saying why, which the log and ``trunkguard route`` show.

A call that came in *from* a carrier (an inbound DID) may go to pools only:
sending it back out to a carrier would let anyone who can reach us as that
carrier place calls on our account. A carrier marked ``transit`` is exempt.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from functools import partial
from typing import Protocol

from ._explain import Explain
from ._number import NumberError, NumberRules, normalize
from ._plan import RoutingTable
from ._target import POOL_MEMBER, Plan, Target

log = logging.getLogger("trunkguard.routing")


class HealthView(Protocol):
    """What a plan reads of the targets' health; it changes nothing."""

    def admits(self, name: str) -> bool: ...

    def overflow(self, name: str, now: float) -> str | None: ...

    def describe(self, name: str, now: float) -> str: ...


class QualityView(Protocol):
    """What a plan reads of the carriers' quality per destination group; it changes nothing."""

    def group_of(self, number: str) -> str: ...

    def judge(self, carrier: str, group: str, now: float) -> tuple[bool, str | None]: ...


_rng = random.Random()
_NO_RULES = NumberRules()


def group_by_carrier(targets: list[Target]) -> dict[str, list[Target]]:
    """Each carrier's targets, in the order a call tries them.

    A carrier is one target, or (a DNS name) one per SRV/A record: those go
    by SRV priority, and within a priority in a weighted random order (RFC
    2782), drawn again for each call so the load spreads as the weights say.
    A carrier whose name has not resolved (port 0) has nothing to try.
    """
    groups: dict[str, list[Target]] = {}
    for t in targets:
        if t.flow.addr[1]:
            groups.setdefault(t.carrier, []).append(t)
    for name, group in groups.items():
        if len(group) > 1 and any(t.weight for t in group):
            groups[name] = _weighted(group)
    return groups


class _Grouped:
    """The last targets list grouped by carrier, kept while the list stays the same.

    A plan needs the targets of a carrier by name; grouping the list is most of a
    plan's time once the ranking is one lookup. The list is compared (by its items'
    identity, cheap) with a copy at each plan, so a list changed in place is grouped
    again. Carriers of several weighted destinations get their draw at every plan.
    """

    __slots__ = ("drawn", "groups", "seen")

    def __init__(self) -> None:
        self.seen: list[Target] = []
        self.groups: dict[str, list[Target]] = {}
        self.drawn: list[str] = []  # carriers whose destinations are drawn by weight

    def of(self, targets: list[Target]) -> dict[str, list[Target]]:
        if targets != self.seen or not targets:
            groups: dict[str, list[Target]] = {}
            for t in targets:
                if t.flow.addr[1]:
                    groups.setdefault(t.carrier, []).append(t)
            self.drawn = [n for n, g in groups.items() if len(g) > 1 and any(t.weight for t in g)]
            self.groups, self.seen = groups, list(targets)
        if not self.drawn:
            return self.groups
        groups = dict(self.groups)
        for name in self.drawn:
            groups[name] = _weighted(groups[name])
        return groups


_grouped = _Grouped()


def _weighted(group: list[Target]) -> list[Target]:
    out: list[Target] = []
    for priority in sorted({t.priority for t in group}):
        left = [t for t in group if t.priority == priority]
        while left:
            total = sum(t.weight for t in left)
            if total == 0:
                out += left
                break
            pick = _rng.uniform(0, total)
            for i, t in enumerate(left):
                pick -= t.weight
                if pick <= 0 or i == len(left) - 1:
                    out.append(left.pop(i))
                    break
    return out


def _by_quality(
    ordered: list[Target],
    number: str,
    explain: Explain,
    quality: QualityView,
    now: float,
    counters: Counter[str],
) -> list[Target]:
    """Carriers demoted for the number's group go after the others (each side in cost order).

    Their explain lines get the figures: "..., ASR 12 % over 240 calls (peers 41 %) ->
    demoted for 1". Pool members are not carriers: quality leaves them where they are.
    """
    group = quality.group_of(number)
    demoted: set[str] = set()
    notes: dict[str, str] = {}
    for t in ordered:
        if t.kind == POOL_MEMBER or t.carrier in notes:
            continue
        down, text = quality.judge(t.carrier, group, now)
        notes[t.carrier] = ""
        if down:
            demoted.add(t.carrier)
            notes[t.carrier] = f", {text} \u2192 demoted for {group}"
        elif text:
            notes[t.carrier] = f", {text}"
    explain.annotate({name: note for name, note in notes.items() if note})
    if not demoted:
        return ordered
    counters["plans_quality_demoted"] += 1
    return [t for t in ordered if t.carrier not in demoted] + [
        t for t in ordered if t.carrier in demoted
    ]


def _config_order(ordered: tuple[Target, ...]) -> list[str]:
    return [f"{t.name}: config order" for t in ordered]


def build_plan(
    user: str,
    targets: list[Target],
    now: float,
    *,
    routing: RoutingTable | None = None,
    numbers: NumberRules | None = None,
    health: HealthView | None = None,
    counters: Counter[str] | None = None,
    inbound_from: Target | None = None,
    quality: QualityView | None = None,
) -> Plan:
    """The plan for dialled ``user``; ``inbound_from``: the carrier the call came from."""
    counters = counters if counters is not None else Counter()
    explain: Explain
    number: str | None = None
    if routing is not None:
        try:
            number = normalize(user, numbers or _NO_RULES)
        except NumberError as exc:
            counters["calls_undialable"] += 1
            return Plan([], rejected=(484, str(exc)))
        node = routing.node(number)  # blocked, pool, rule and ranked carriers: one lookup
        blocked = node.blocked
        if blocked is not None:
            counters["calls_blocked"] += 1
            why = f"{number} is in blocked prefix {blocked}"
            return Plan([], number=number, rejected=(403, why), explain=[why])
        by_name = _grouped.of(targets)
        pool = node.pool
        if pool is not None:
            names, lines = pool.order(now)
            ordered = [t for n in names for t in by_name.get(n, ())]
            explain = Explain(lines=lines)
        else:
            order = routing.order_of(node)
            carriers = routing.carriers
            ordered = []
            for i in order:
                found = by_name.get(carriers[i].name)
                if found is not None:
                    ordered += found
            explain = Explain(partial(routing.explain_lines, number, node, order))
            if quality is not None:
                ordered = _by_quality(ordered, number, explain, quality, now, counters)
        if not ordered:
            counters["calls_unroutable"] += 1
            return Plan(
                [],
                number=number,
                rejected=(404, f"no carrier has a rate for {number}"),
                explain=explain,
            )
    else:
        ordered = [t for group in group_by_carrier(targets).values() for t in group]
        explain = Explain(partial(_config_order, tuple(ordered)))
        if quality is not None:
            ordered = _by_quality(ordered, user, explain, quality, now, counters)
    if inbound_from is not None and not inbound_from.transit:
        ordered = [t for t in ordered if t.kind == POOL_MEMBER]
        if not ordered:
            counters["calls_hairpin_refused"] += 1
            why = (
                f"a call from carrier {inbound_from.name} goes to pools only, "
                f"and {number or user} is not a pool's"
            )
            return Plan([], number=number, rejected=(403, why), explain=[*explain, why])
    if health is None:
        return Plan(ordered, number=number, explain=explain)
    room: list[Target] = []
    full: list[str] = []
    healthy = 0
    for t in ordered:
        if not health.admits(t.name):
            explain.append(f"{t.name}: skipped, {health.describe(t.name, now)}")
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
            ", ".join(f"{t.name} {health.describe(t.name, now)}" for t in ordered),
        )
    explain.append("panic: every target of this route is out of rotation; trying them all in order")
    return Plan(list(ordered), panic=True, number=number, explain=explain)

