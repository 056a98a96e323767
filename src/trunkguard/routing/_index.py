"""The compiled routing index: one longest-prefix lookup gives a number's whole ranking.

Built once per routing table (at load, off the event loop on a reload), over the
union of every carrier's deck prefixes, route rule prefixes, blocked prefixes and
pool prefixes. Each union prefix maps to a :class:`Node`: the carriers that have a
rate for numbers under it (each carrier's *own* longest match, so a carrier whose
deck has only ``44`` is still offered for ``4420...``), already costed for a
typical call and ordered by (cost, priority), plus the blocked prefix, pool and
route rule that apply there. The longest union prefix of a number is enough: any
carrier's longest matching prefix is a prefix of it (every deck prefix is in the
union), so the node of that prefix carries the right rate for every carrier.

Nodes are shared: prefixes whose carriers rank the same (the common case with a
few carriers) point at one node, so the index costs about one dict slot per
prefix, its keys the decks' own strings. Costs are compared as exact integers
(60 x the cost, in 1e-8 units), so the order is the one the Decimal costs give.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._pool import ServerPool

if TYPE_CHECKING:
    from ._plan import CarrierRoute, RouteRule


# A priced carrier's deck as the build reads it: prefix -> row, rate and fee units,
# initial and step seconds, seconds billed per (initial, step), priority, carrier index.
_Columns = tuple[
    dict[str, int],
    "array[int]",
    "array[int]",
    "array[int]",
    "array[int]",
    dict[tuple[int, int], int],
    int,
    int,
]


class Node:
    """What applies to numbers under one prefix; shared between prefixes that agree."""

    __slots__ = ("blocked", "flat", "groups", "pool", "rule")

    def __init__(
        self,
        blocked: str | None,
        pool: ServerPool | None,
        rule: RouteRule | None,
        groups: tuple[tuple[int, ...], ...],
        unpriced: tuple[int, ...],
    ) -> None:
        self.blocked = blocked
        self.pool = pool
        self.rule = rule
        # Carriers with a rate (indices into the table's carriers), grouped by equal
        # (cost, priority), cheapest first; config order within a group.
        self.groups = groups
        # The final order when no draw and no rule is needed: every group of one.
        self.flat: tuple[int, ...] | None = None
        if rule is None and all(len(g) == 1 for g in groups):
            self.flat = tuple(g[0] for g in groups) + unpriced


def billed_seconds(initial: int, increment: int, seconds: float) -> int:
    """Seconds billed for a call of ``seconds`` (as :meth:`Rate.cost` counts them)."""
    if seconds <= 0:
        return 0
    billed = max(initial, 0)
    if seconds > billed:
        extra = seconds - billed
        steps = -(-int(extra * 1000) // (increment * 1000))
        billed += steps * increment
    return billed


class RouteIndex:
    """Longest-prefix lookup over the union of the table's prefixes."""

    __slots__ = ("empty", "longest", "nodes", "shortest", "unpriced")

    def __init__(
        self,
        carriers: Sequence[CarrierRoute],
        rules: dict[str, RouteRule],
        blocked: frozenset[str],
        pools: dict[str, ServerPool],
        seconds: float,
    ) -> None:
        self.unpriced = tuple(i for i, c in enumerate(carriers) if c.deck is None)
        self.empty = Node(None, None, None, (), self.unpriced)
        self.nodes: dict[str, Node] = {}
        self.longest = 0
        self.shortest = 1
        self._build(carriers, rules, blocked, pools, seconds)

    def node(self, number: str) -> Node:
        """The node of ``number``'s longest prefix in the union (the empty node if none)."""
        nodes = self.nodes
        for end in range(min(len(number), self.longest), self.shortest - 1, -1):
            found = nodes.get(number[:end])
            if found is not None:
                return found
        return self.empty

    def _build(
        self,
        carriers: Sequence[CarrierRoute],
        rules: dict[str, RouteRule],
        blocked: frozenset[str],
        pools: dict[str, ServerPool],
        seconds: float,
    ) -> None:
        priced = [(i, c) for i, c in enumerate(carriers) if c.deck is not None]
        union: set[str] = set()
        for _, c in priced:
            assert c.deck is not None
            union.update(c.deck._index)
        union.update(rules)
        union.update(blocked)
        union.update(pools)
        if not union:
            return
        self.longest = max(map(len, union))
        self.shortest = min(map(len, union))
        keys = sorted(union)  # an ancestor sorts before every prefix under it
        del union
        # Per priced carrier: its deck's columns and the seconds billed per increment pair.
        decks: list[_Columns] = []
        for i, c in priced:
            deck = c.deck
            assert deck is not None
            decks.append(
                (deck._index, deck._units, deck._fee, deck._initial, deck._step, {}, c.priority, i)
            )
        width = len(decks)
        interned: dict[object, Node] = {}
        unpriced = self.unpriced
        nodes = self.nodes
        none: tuple[int | None, ...] = (None,) * width
        # The chain of union prefixes above the current one: (prefix, costs, blocked, pool, rule).
        stack: list[
            tuple[str, tuple[int | None, ...], str | None, ServerPool | None, RouteRule | None]
        ] = []
        block: str | None
        pool: ServerPool | None
        rule: RouteRule | None
        for prefix in keys:
            while stack and not prefix.startswith(stack[-1][0]):
                stack.pop()
            if stack:
                _, above, block, pool, rule = stack[-1]
            else:
                above, block, pool, rule = none, None, None, None
            costs: list[int | None] = []
            changed = False
            for j, (index, units, fee, initial, step, billed, _, _) in enumerate(decks):
                row = index.get(prefix)
                if row is None:
                    costs.append(above[j])
                    continue
                changed = True
                pair = (initial[row], step[row])
                secs = billed.get(pair)
                if secs is None:
                    secs = billed[pair] = billed_seconds(pair[0], pair[1], seconds)
                costs.append(fee[row] * 60 + units[row] * secs)
            own = tuple(costs) if changed else above
            if prefix in blocked:
                block = prefix
            found_pool = pools.get(prefix)
            if found_pool is not None:
                pool = found_pool
            found_rule = rules.get(prefix)
            if found_rule is not None:
                rule = found_rule
            stack.append((prefix, own, block, pool, rule))
            ranked = sorted(
                (cost, decks[j][6], decks[j][7]) for j, cost in enumerate(own) if cost is not None
            )
            groups: list[tuple[int, ...]] = []
            last: tuple[int, int] | None = None
            for cost, prio, i in ranked:
                if (cost, prio) == last:
                    groups[-1] += (i,)
                else:
                    groups.append((i,))
                    last = (cost, prio)
            shape = (block, id(pool), id(rule), tuple(groups))
            node = interned.get(shape)
            if node is None:
                node = interned[shape] = Node(block, pool, rule, shape[3], unpriced)
            nodes[prefix] = node
