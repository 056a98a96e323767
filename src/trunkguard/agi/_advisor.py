"""The route advisor's decisions, without sockets: a plan as dial strings, a report as a verdict.

``route`` turns the router's own plan for a number (health, capacity, cost:
the one ``trunkguard route`` prints and the proxy follows) into one dial
string per carrier, in order, and keeps it under a plan id. ``report`` finds
route N of that plan and classifies Asterisk's DIALSTATUS and HANGUPCAUSE
through the carrier's failure tables. The plan table is bounded and its
entries expire: a dialplan that never reports costs a slot for a while, no more.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from ..health import FailureTable, Verdict
from ..routing import Explain, Plan, Target
from ._dial import NUMBER_RE, dial_string

REPORT_DIALSTATUS = frozenset(
    {"ANSWER", "BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL", "DONTCALL", "TORTURE",
     "INVALIDARGS"}
)  # fmt: skip


_DEFAULT = FailureTable()


@dataclass(frozen=True, slots=True)
class Route:
    carrier: str
    target: Target  # the plan's first target of that carrier: the one health hears about
    dial: str


@dataclass(slots=True)
class PlanEntry:
    routes: tuple[Route, ...]
    made: float
    reported: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Advice:
    """What ``route`` sets: the routes (maybe none), the plan id, why none when none."""

    routes: tuple[Route, ...]
    plan_id: str = ""
    error: str = ""
    explain: Sequence[str] = ()  # the plan's reasons, written out when read


@dataclass(frozen=True, slots=True)
class Report:
    """A report checked against its plan: route, verdict and the name for the health reason."""

    route: Route | None
    verdict: Verdict | None
    what: str
    error: str = ""  # why it is not used; counted under ``counter``
    counter: str = ""
    failover: bool = False  # whether the dialplan should try the next route (TG_FAILOVER)


class PlanTable:
    """Plan id -> the routes it gave; at most ``size`` entries, each for ``ttl`` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._plans: OrderedDict[str, PlanEntry] = OrderedDict()
        self.evicted = 0  # taken out by size before their time

    def __len__(self) -> int:
        return len(self._plans)

    def add(self, routes: tuple[Route, ...], now: float) -> str:
        self.expire(now)
        while len(self._plans) >= self.size:
            self._plans.popitem(last=False)
            self.evicted += 1
        plan_id = secrets.token_hex(8)
        self._plans[plan_id] = PlanEntry(routes, now)
        return plan_id

    def get(self, plan_id: str, now: float) -> PlanEntry | None:
        self.expire(now)
        return self._plans.get(plan_id)

    def expire(self, now: float) -> None:
        # Entries are in the order they were made: the oldest first.
        while self._plans:
            first = next(iter(self._plans.values()))
            if first.made + self.ttl > now:
                break
            self._plans.popitem(last=False)


def advise(
    exten: str,
    plan_for: Callable[[str], Plan],
    templates: Mapping[str, str],
    max_routes: int,
) -> Advice:
    """The dial strings for ``exten``, one per carrier with a ``dial:``, in the plan's order."""
    if not NUMBER_RE.match(exten):
        return Advice((), error="not a number: digits, a leading +, * # and A-D only")
    plan = plan_for(exten)
    if plan.rejected is not None:
        status, why = plan.rejected
        return Advice((), error=f"refused ({status}): {why}", explain=plan.explain)
    number = plan.number or exten
    routes: list[Route] = []
    seen: set[str] = set()
    skipped: list[str] = []
    for target in plan.targets:
        if target.carrier in seen:
            continue  # a carrier's other destinations: Asterisk dials the carrier once
        seen.add(target.carrier)
        template = templates.get(target.carrier)
        if template is None:
            skipped.append(target.carrier)
            continue
        if len(routes) < max_routes:
            routes.append(Route(target.carrier, target, dial_string(template, number, exten)))
    notes: list[str] = []
    if plan.panic:
        notes.append("panic: every carrier is out of rotation; all given in order")
    if skipped:
        notes.append(f"no dial: in config for {', '.join(skipped)}: not given to Asterisk")
    explain = Explain(partial(_lines, plan.explain, notes))
    if not routes:
        why = "no carrier of the plan has a dial: string" if plan.targets else "no route"
        return Advice((), error=why, explain=explain)
    return Advice(tuple(routes), explain=explain)


def _lines(reasons: Sequence[str], notes: list[str]) -> list[str]:
    return [*reasons, *notes]


def check_report(args: tuple[str, ...], plans: PlanTable, now: float) -> Report:
    """``report``'s arguments (plan id, N, DIALSTATUS, HANGUPCAUSE) against the plan table."""
    if len(args) < 3:
        return Report(None, None, "", "usage: report,PLAN_ID,N,DIALSTATUS[,HANGUPCAUSE]",
                      "agi_report_bad")
    plan_id, n_text, status = args[0].strip(), args[1].strip(), args[2].strip().upper()
    cause_text = args[3].strip() if len(args) > 3 else ""
    if not n_text.isdigit() or len(n_text) > 3:
        return Report(None, None, "", f"route number {n_text[:10]!r} is not a number",
                      "agi_report_bad")
    if status not in REPORT_DIALSTATUS:
        return Report(None, None, "", f"DIALSTATUS {status[:20]!r} is not one Dial() sets",
                      "agi_report_bad")
    cause: int | None = None
    if cause_text:
        if not cause_text.isdigit() or int(cause_text) > 127:
            return Report(None, None, "", f"HANGUPCAUSE {cause_text[:10]!r} is not a Q.850 cause",
                          "agi_report_bad")
        cause = int(cause_text)
    # Without its plan, the default tables still say whether to try the next route.
    failover = _DEFAULT.classify_dial(status, cause).failover
    entry = plans.get(plan_id, now)
    if entry is None:
        return Report(None, None, "", "unknown or expired plan id", "agi_report_unknown_plan",
                      failover)
    n = int(n_text)
    if not 1 <= n <= len(entry.routes):
        return Report(None, None, "", f"plan has {len(entry.routes)} routes, not {n}",
                      "agi_report_bad", failover)
    route = entry.routes[n - 1]
    verdict = route.target.failures.classify_dial(status, cause)
    if n in entry.reported:
        return Report(None, None, "", f"route {n} of this plan already reported",
                      "agi_report_duplicate", verdict.failover)
    entry.reported.add(n)
    what = f"{status}/{cause}" if cause is not None else status
    return Report(route, verdict, what, failover=verdict.failover)
