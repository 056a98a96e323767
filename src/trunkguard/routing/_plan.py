"""Least-cost ranking of carriers for one number, each choice with the reason for it.

For each carrier, its own longest matching prefix gives its rate; carriers
are ordered by the cost of a typical call (rate, connection fee and billing
increments), then by configured priority; equal ones are spread by weight.
Route rules pin or exclude carriers per destination prefix (the longest
matching rule applies). Blocked prefixes refuse the number outright.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from ._deck import Rate, RateDeck
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
        self.typical_seconds = typical_seconds
        self.rng = rng or random.Random()
        self.priced = any(c.deck is not None for c in carriers)
        self._max_rule = max((len(p) for p in self.rules), default=0)
        self._max_block = max((len(p) for p in self.blocked_prefixes), default=0)
        # id(rate) -> (rate, seconds, its cost, the start of its reason). The entry holds the
        # rate, so no other object can take its id while the entry is there.
        self._priced: dict[int, tuple[Rate, float, Decimal, str]] = {}

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

    def rank(self, number: str) -> list[Choice]:
        """Every carrier, the used ones first in the order to try, with reasons."""
        rule = self.rule(number)
        skipped: list[Choice] = []
        candidates: list[tuple[CarrierRoute, Rate | None, Decimal | None]] = []
        for carrier in self.carriers:
            if rule is not None and rule.pin and carrier.name not in rule.pin:
                skipped.append(Choice(carrier.name, False, f"not pinned for {rule.prefix}"))
                continue
            if rule is not None and carrier.name in rule.exclude:
                skipped.append(Choice(carrier.name, False, f"excluded for {rule.prefix}"))
                continue
            if carrier.deck is None:
                candidates.append((carrier, None, None))
                continue
            rate = carrier.deck.lookup(number)
            if rate is None:
                skipped.append(Choice(carrier.name, False, f"no rate for {number}"))
                continue
            candidates.append((carrier, rate, self._priced_text(rate)[0]))
        if rule is not None and rule.pin:
            order = {name: i for i, name in enumerate(rule.pin)}
            candidates.sort(key=lambda c: order[c[0].name])
            used = [
                self._choice(c, r, cost, f"pinned for {rule.prefix}") for c, r, cost in candidates
            ]
        else:
            used = self._by_cost(candidates)
        return used + skipped

    def _by_cost(
        self, candidates: list[tuple[CarrierRoute, Rate | None, Decimal | None]]
    ) -> list[Choice]:
        priced = [c for c in candidates if c[2] is not None]
        unpriced = [c for c in candidates if c[2] is None]
        # Group by (cost, priority); within a group, a weighted random order spreads calls.
        groups: dict[tuple[Decimal, int], list[tuple[CarrierRoute, Rate | None, Decimal | None]]]
        groups = {}
        for c in priced:
            assert c[2] is not None
            groups.setdefault((c[2], c[0].priority), []).append(c)
        out: list[Choice] = []
        for key in sorted(groups):
            members = weighted_order(groups[key], lambda m: m[0].weight, self.rng)
            note = f", tie of {len(members)} spread by weight" if len(members) > 1 else ""
            out += [self._choice(c, r, cost, f"cost rank{note}") for c, r, cost in members]
        out += (
            [
                self._choice(c, None, None, "no rate deck: after priced carriers")
                for c, _, _ in unpriced
            ]
            if priced
            else [self._choice(c, None, None, "config order") for c, _, _ in unpriced]
        )
        return out

    def _choice(
        self, carrier: CarrierRoute, rate: Rate | None, cost: Decimal | None, how: str
    ) -> Choice:
        if rate is None or cost is None:
            return Choice(carrier.name, True, how)
        return Choice(carrier.name, True, f"{self._priced_text(rate)[1]}{how})", cost, rate)

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
