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
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ._deck import RateDeck
from ._pool import ServerPool

if TYPE_CHECKING:
    from ._plan import CarrierRoute, RouteRule


BLOCK = 4  # digits of a number that pick the prefix lengths worth trying


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

    __slots__ = ("block", "empty", "lengths", "longest", "nodes", "short", "shortest", "unpriced")

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
        # A number's first BLOCK digits give the lengths of the union prefixes under
        # them, longest first: a lookup tries only those (then the shorter prefixes).
        self.block = BLOCK
        self.lengths: dict[str, tuple[int, ...]] = {}
        self.short: tuple[int, ...] = ()  # lengths under BLOCK digits in the union
        self._build(carriers, rules, blocked, pools, seconds)
        self._lengths()

    def node(self, number: str) -> Node:
        """The node of ``number``'s longest prefix in the union (the empty node if none)."""
        nodes = self.nodes
        size = len(number)
        for end in self.lengths.get(number[: self.block], ()):
            if end <= size:
                found = nodes.get(number[:end])
                if found is not None:
                    return found
        for end in self.short:
            if end <= size:
                found = nodes.get(number[:end])
                if found is not None:
                    return found
        return self.empty

    def _lengths(self) -> None:
        under: dict[str, set[int]] = {}
        short: set[int] = set()
        block = self.block
        for prefix in self.nodes:
            if len(prefix) >= block:
                found = under.get(prefix[:block])
                if found is None:
                    found = under[prefix[:block]] = set()
                found.add(len(prefix))
            else:
                short.add(len(prefix))
        same: dict[tuple[int, ...], tuple[int, ...]] = {}
        for head, sizes in under.items():
            ordered = tuple(sorted(sizes, reverse=True))
            self.lengths[head] = same.setdefault(ordered, ordered)
        self.short = tuple(sorted(short, reverse=True))

    def _build(
        self,
        carriers: Sequence[CarrierRoute],
        rules: dict[str, RouteRule],
        blocked: frozenset[str],
        pools: dict[str, ServerPool],
        seconds: float,
    ) -> None:
        priced = [(i, c.deck) for i, c in enumerate(carriers) if c.deck is not None]
        # The union, sorted, in buckets by the first digits: no single call sorts or
        # copies a million strings, so a build in a worker thread gives the event loop
        # its turn every few milliseconds (a long C call would hold the GIL throughout).
        buckets: dict[str, set[str]] = {}
        sources: list[Iterable[str]] = [deck._index for _, deck in priced]
        for source in (*sources, rules, blocked, pools):
            for prefix in source:
                bucket = buckets.get(prefix[:_HEAD])
                if bucket is None:
                    bucket = buckets[prefix[:_HEAD]] = set()
                bucket.add(prefix)
        if not buckets:
            return
        self.longest = max(len(p) for b in buckets.values() for p in b)
        self.shortest = min(len(p) for b in buckets.values() for p in b)
        # An ancestor sorts before every prefix under it; a bucket's name sorts before
        # the names of the buckets of longer prefixes under it ("4" < "40" < "400").
        keys = (p for head in sorted(buckets) for p in sorted(buckets.pop(head)))
        width = len(priced)
        # Priorities as ranks 0..width-1: a row's sort key is cost * width + rank, so
        # keys order as (cost, priority) do, and are equal exactly when both are.
        ranks = {p: r for r, p in enumerate(sorted({carriers[i].priority for i, _ in priced}))}
        columns = [
            (deck._index, sort_keys(deck, seconds, width, ranks[carriers[i].priority]))
            for i, deck in priced
        ]
        who = tuple(i for i, _ in priced)  # position in ``own`` -> carrier index
        positions = range(width)
        interned: dict[object, Node] = {}
        unpriced = self.unpriced
        nodes = self.nodes
        none = (_NONE,) * width
        extras = bool(rules or blocked or pools)
        # The union prefixes above the current one: (prefix, keys, blocked, pool, rule).
        stack: list[
            tuple[str, Sequence[int], str | None, ServerPool | None, RouteRule | None]
        ] = []
        block: str | None = None
        pool: ServerPool | None = None
        rule: RouteRule | None = None
        for prefix in keys:
            while stack and not prefix.startswith(stack[-1][0]):
                stack.pop()
            above = stack[-1][1] if stack else none
            own = [
                a if (row := index.get(prefix)) is None else sort_of[row]
                for (index, sort_of), a in zip(columns, above, strict=True)
            ]
            if extras:
                if stack:
                    _, _, block, pool, rule = stack[-1]
                else:
                    block, pool, rule = None, None, None
                if prefix in blocked:
                    block = prefix
                pool = pools.get(prefix, pool)
                rule = rules.get(prefix, rule)
            stack.append((prefix, own, block, pool, rule))
            order = sorted(positions, key=own.__getitem__)
            # The shape of the ranking: each place's carrier, negative when tied with
            # the place before; the carriers without a rate left out.
            shape: list[int] = []
            last = -1
            for at in order:
                key = own[at]
                if key == _NONE:
                    break
                shape.append(~at if key == last else at)
                last = key
            sig = (block, id(pool), id(rule), *shape) if extras else tuple(shape)
            node = interned.get(sig)
            if node is None:
                groups: list[tuple[int, ...]] = []
                for at in shape:
                    if at < 0:
                        groups[-1] += (who[~at],)
                    else:
                        groups.append((who[at],))
                node = interned[sig] = Node(block, pool, rule, tuple(groups), unpriced)
            nodes[prefix] = node


_HEAD = 3  # digits a union bucket is named by
_NONE = 1 << 512  # the sort key of "no rate": after every real one (costs are < 2**62 * 3600)


def sort_keys(deck: RateDeck, seconds: float, width: int, rank: int) -> Sequence[int]:
    """Per row of ``deck``: its typical call's cost (x 60, in 1e-8 units) * width + rank."""
    billed: dict[tuple[int, int], int] = {}
    out: list[int] = []
    for units, fee, initial, step in zip(
        deck._units, deck._fee, deck._initial, deck._step, strict=True
    ):
        pair = (initial, step)
        secs = billed.get(pair)
        if secs is None:
            secs = billed[pair] = billed_seconds(initial, step, seconds)
        out.append((fee * 60 + units * secs) * width + rank)
    if out and max(out) < 2**63:
        return array("q", out)
    return out
