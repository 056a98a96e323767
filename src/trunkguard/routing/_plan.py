"""Least-cost ranking of carriers for one number, each choice with the reason for it.

For each carrier, its own longest matching prefix gives its rate; carriers
are ordered by the cost of a typical call (rate, connection fee and billing
increments), then by configured priority; equal ones are spread by weight.
Route rules pin or exclude carriers per destination prefix (the longest
matching rule applies). Blocked prefixes refuse the number outright.

The order comes from the compiled index (``_index``): one lookup, already
costed and ranked; reasons are written only when asked for (:meth:`choices`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from ._deck import Rate, RateDeck
from ._index import Node, RouteIndex
from ._pool import ServerPool
from ._weights import weighted_order

PRICED_SIZE = 1 << 14  # per carrier: rates whose typical cost and reason are kept worked out


@dataclass(frozen=True, slots=True)
class CarrierRoute:
    name: str
    deck: RateDeck | None = None
    priority: int = 0  # lower first, among equal costs
    weight: int = 1  # share of calls among carriers of equal cost and priority


@dataclass(frozen=True, slots=True)
class RouteRule:
    prefix: str
    pin: tuple[str, ...] = ()  # only these carriers, in this order
    exclude: tuple[str, ...] = ()  # never these


@dataclass(frozen=True, slots=True)
class Choice:
    """One carrier's place in a plan: used (in order) or skipped, and why."""

    name: str
    used: bool
    why: str
    cost: Decimal | None = None
    rate: Rate | None = None


class RoutingTable:
    def __init__(
        self,
        carriers: list[CarrierRoute],
        rules: list[RouteRule] | None = None,
        blocked: list[str] | None = None,
        typical_seconds: float = 90.0,
        rng: random.Random | None = None,
        pools: list[ServerPool] | None = None,
    ) -> None:
        self.carriers = carriers
        self.pools = pools or []
        self._pool_prefixes = {p: pool for pool in self.pools for p in pool.prefixes}
        self._max_pool = max((len(p) for p in self._pool_prefixes), default=0)
        self.rules = {r.prefix: r for r in rules or []}
        self.blocked_prefixes = frozenset(blocked or [])
        self._seconds = typical_seconds
        self.rng = rng or random.Random()
        self.priced = any(c.deck is not None for c in carriers)
        self._max_rule = max((len(p) for p in self.rules), default=0)
        self._max_block = max((len(p) for p in self.blocked_prefixes), default=0)
        # id(rate) -> (rate, seconds, its cost, the start of its reason). The entry holds the
        # rate, so no other object can take its id while the entry is there.
        self._priced: dict[int, tuple[Rate, float, Decimal, str]] = {}
        self._index: RouteIndex | None = None
        self._index = self.index  # compiled here: a reload builds it off the event loop

    def blocked(self, number: str) -> str | None:
        """The blocked prefix ``number`` falls under, if any."""
        for end in range(min(len(number), self._max_block), 0, -1):
            if number[:end] in self.blocked_prefixes:
                return number[:end]
        return None

    def pool_for(self, number: str) -> ServerPool | None:
        """The server pool whose longest prefix ``number`` matches, if any."""
        for end in range(min(len(number), self._max_pool), 0, -1):
            found = self._pool_prefixes.get(number[:end])
            if found is not None:
                return found
        return None

    def rule(self, number: str) -> RouteRule | None:
        for end in range(min(len(number), self._max_rule), 0, -1):
            found = self.rules.get(number[:end])
            if found is not None:
                return found
        return None

    @property
    def typical_seconds(self) -> float:
        return self._seconds

    @typical_seconds.setter
    def typical_seconds(self, seconds: float) -> None:
        # The index is costed for a typical call: another one means another order.
        self._seconds = seconds
        self._index = None

    @property
    def index(self) -> RouteIndex:
        """The compiled index (built with the table; again after a change of typical call)."""
        index = self._index
        if index is None:
            index = self._index = RouteIndex(
                self.carriers, self.rules, self.blocked_prefixes, self._pool_prefixes, self._seconds
            )
        return index

    def node(self, number: str) -> Node:
        """What applies to ``number`` (blocked prefix, pool, rule, ranked carriers): one lookup."""
        index = self._index
        if index is None:
            index = self.index
        return index.node(number)

    def order(self, number: str) -> tuple[Node, tuple[int, ...]]:
        """The index node of ``number`` and the carriers to try, in order (indices into
        ``carriers``): ties drawn by weight, route rules applied. No reason is written."""
        node = self.index.node(number)
        return node, self.order_of(node)

    def order_of(self, node: Node) -> tuple[int, ...]:
        """The carriers to try for ``node``: its precomputed order, or one drawn now."""
        flat = node.flat
        if flat is not None:
            return flat
        return self._draw(node)

    def _draw(self, node: Node) -> tuple[int, ...]:
        carriers = self.carriers
        rule = node.rule
        unpriced = self.index.unpriced
        if rule is not None and rule.pin:
            place = {name: i for i, name in enumerate(rule.pin)}
            picked = [
                i
                for i in (*(i for g in node.groups for i in g), *unpriced)
                if carriers[i].name in place and carriers[i].name not in rule.exclude
            ]
            picked.sort(key=lambda i: place[carriers[i].name])
            return tuple(picked)
        excluded = rule.exclude if rule is not None else ()
        out: list[int] = []
        for group in node.groups:
            if excluded:
                group = tuple(i for i in group if carriers[i].name not in excluded)
            if len(group) == 1:
                out.append(group[0])
            elif group:
                out += weighted_order(group, lambda i: carriers[i].weight, self.rng)
        out += (i for i in unpriced if carriers[i].name not in excluded)
        return tuple(out)

    def rank(self, number: str) -> list[Choice]:
        """Every carrier, the used ones first in the order to try, with reasons."""
        node, order = self.order(number)
        return self.choices(number, node, order)

    def explain_lines(self, number: str, node: Node, order: tuple[int, ...]) -> list[str]:
        """The plan's reason lines for an order :meth:`order` gave: ``"carrier: why"``."""
        return [f"{c.name}: {c.why}" for c in self.choices(number, node, order)]

    def choices(self, number: str, node: Node, order: tuple[int, ...]) -> list[Choice]:
        """The :class:`Choice` of every carrier for an order :meth:`order` gave."""
        carriers = self.carriers
        rule = node.rule
        pin = rule.pin if rule is not None else ()
        size: dict[int, int] = {}  # a carrier's tie group, as drawn (excluded ones left out)
        if not pin:
            excluded = rule.exclude if rule is not None else ()
            for group in node.groups:
                members = [i for i in group if carriers[i].name not in excluded]
                for i in members:
                    size[i] = len(members)
        priced = any(carriers[i].deck is not None for i in order)
        out: list[Choice] = []
        for i in order:
            carrier = carriers[i]
            if pin:
                assert rule is not None
                how = f"pinned for {rule.prefix}"
            elif carrier.deck is None:
                how = "no rate deck: after priced carriers" if priced else "config order"
            else:
                tie = size.get(i, 1)
                how = f"cost rank, tie of {tie} spread by weight" if tie > 1 else "cost rank"
            rate = carrier.deck.lookup(number) if carrier.deck is not None else None
            out.append(self._choice(carrier, rate, how))
        used = set(order)
        for i, carrier in enumerate(carriers):
            if i in used:
                continue
            if rule is not None and rule.pin and carrier.name not in rule.pin:
                why = f"not pinned for {rule.prefix}"
            elif rule is not None and carrier.name in rule.exclude:
                why = f"excluded for {rule.prefix}"
            else:
                why = f"no rate for {number}"
            out.append(Choice(carrier.name, False, why))
        return out

    def _choice(self, carrier: CarrierRoute, rate: Rate | None, how: str) -> Choice:
        if rate is None:
            return Choice(carrier.name, True, how)
        cost, text = self._priced_text(rate)
        return Choice(carrier.name, True, f"{text}{how})", cost, rate)

    def _priced_text(self, rate: Rate) -> tuple[Decimal, str]:
        """The cost of a typical call on ``rate`` and the start of the reason that shows it.

        Worked out once per rate (decks hand out the same Rate for a prefix in use): the
        Decimal arithmetic and formatting are most of the time of a plan otherwise.
        """
        seconds = self.typical_seconds
        known = self._priced.get(id(rate))
        if known is not None and known[0] is rate and known[1] == seconds:
            return known[2], known[3]
        cost = rate.cost(seconds)
        typical = f"{cost.quantize(Decimal('0.0001'))} for a {seconds:g}s call"
        text = f"{rate.explain()} ({typical}; "
        if len(self._priced) >= PRICED_SIZE * max(len(self.carriers), 1):
            self._priced.clear()
        self._priced[id(rate)] = (rate, seconds, cost, text)
        return cost, text
