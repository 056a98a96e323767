"""The compiled routing index ranks exactly as the carrier-by-carrier planner did.

``reference_rank`` is the planner before the index (each carrier's deck looked up
in turn, Decimal costs, groups of equal cost and priority drawn by weight): on
random decks, rules, blocks and numbers, the index must give the same choices, in
the same order, with the same reasons, drawing the same random numbers for ties.
"""

from __future__ import annotations

import copy
import pickle
import random
from collections import Counter
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from trunkguard.health import HealthEngine
from trunkguard.proxy import Flow, Target
from trunkguard.routing import (
    CarrierRoute,
    Choice,
    Explain,
    Rate,
    RateDeck,
    RouteRule,
    RoutingTable,
    build_plan,
)
from trunkguard.routing._weights import weighted_order
from trunkguard.sip import parse_uri

# -- the planner before the index ------------------------------------------------------------


def reference_rank(
    carriers: list[CarrierRoute],
    rules: list[RouteRule],
    seconds: float,
    rng: random.Random,
    number: str,
) -> list[Choice]:
    by_prefix = {r.prefix: r for r in rules}
    rule = next(
        (by_prefix[number[:end]] for end in range(len(number), 0, -1) if number[:end] in by_prefix),
        None,
    )

    def choice(carrier: CarrierRoute, rate: Rate | None, how: str) -> Choice:
        if rate is None:
            return Choice(carrier.name, True, how)
        cost = rate.cost(seconds)
        typical = f"{cost.quantize(Decimal('0.0001'))} for a {seconds:g}s call"
        return Choice(carrier.name, True, f"{rate.explain()} ({typical}; {how})", cost, rate)

    skipped: list[Choice] = []
    candidates: list[tuple[CarrierRoute, Rate | None, Decimal | None]] = []
    for carrier in carriers:
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
        candidates.append((carrier, rate, rate.cost(seconds)))
    if rule is not None and rule.pin:
        order = {name: i for i, name in enumerate(rule.pin)}
        candidates.sort(key=lambda c: order[c[0].name])
        return [choice(c, r, f"pinned for {rule.prefix}") for c, r, _ in candidates] + skipped
    priced = [c for c in candidates if c[2] is not None]
    unpriced = [c for c in candidates if c[2] is None]
    groups: dict[tuple[Decimal, int], list[tuple[CarrierRoute, Rate | None, Decimal | None]]]
    groups = {}
    for c in priced:
        assert c[2] is not None
        groups.setdefault((c[2], c[0].priority), []).append(c)
    out: list[Choice] = []
    for key in sorted(groups):
        members = weighted_order(groups[key], lambda m: m[0].weight, rng)
        note = f", tie of {len(members)} spread by weight" if len(members) > 1 else ""
        out += [choice(c, r, f"cost rank{note}") for c, r, _ in members]
    how = "no rate deck: after priced carriers" if priced else "config order"
    out += [choice(c, None, how) for c, _, _ in unpriced]
    return out + skipped


# -- random routing setups -------------------------------------------------------------------

DIGITS = "0123"  # a small alphabet: prefixes nest and numbers hit them often
prefixes = st.text(DIGITS, min_size=1, max_size=4)
rows = st.tuples(
    st.sampled_from([1, 2, 5, 100, 101, 2_500_000, 10**8]),  # rate, 1e-8 units: ties are likely
    st.sampled_from([0, 0, 1, 10**6]),  # connection fee
    st.sampled_from([(60, 60), (6, 6), (1, 1), (30, 6), (0, 1)]),
)
decks = st.dictionaries(prefixes, rows, max_size=12)
carrier_specs = st.lists(
    st.tuples(st.one_of(st.none(), decks), st.integers(0, 2), st.integers(0, 3)),
    min_size=1,
    max_size=5,
)


def make_deck(name: str, spec: dict[str, tuple[int, int, tuple[int, int]]]) -> RateDeck | None:
    deck = RateDeck(name, f"{name}.csv")
    for prefix, (units, fee, (initial, step)) in spec.items():
        deck._add(prefix, units, fee, initial, step, "")
    return deck if len(deck) else None


@st.composite
def setups(draw: st.DrawFn) -> tuple[list[CarrierRoute], list[RouteRule], list[str], float]:
    specs = draw(carrier_specs)
    carriers = [
        CarrierRoute(f"c{i}", make_deck(f"c{i}", spec) if spec is not None else None, prio, weight)
        for i, (spec, prio, weight) in enumerate(specs)
    ]
    names = [c.name for c in carriers] + ["gone"]
    rules = [
        RouteRule(prefix, tuple(pin), tuple(exclude))
        for prefix, pin, exclude in draw(
            st.lists(
                st.tuples(
                    prefixes,
                    st.lists(st.sampled_from(names), max_size=3, unique=True),
                    st.lists(st.sampled_from(names), max_size=2, unique=True),
                ),
                max_size=3,
                unique_by=lambda r: r[0],
            )
        )
    ]
    blocked = draw(st.lists(prefixes, max_size=2))
    seconds = draw(st.sampled_from([90.0, 30.0, 1.0, 0.0, 45.5]))
    return carriers, rules, blocked, seconds


numbers = st.lists(st.text(DIGITS, min_size=3, max_size=8), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(setup=setups(), dialled=numbers, seed=st.integers(0, 2**32))
def test_the_index_ranks_as_the_carrier_by_carrier_planner(
    setup: tuple[list[CarrierRoute], list[RouteRule], list[str], float],
    dialled: list[str],
    seed: int,
) -> None:
    carriers, rules, blocked, seconds = setup
    table = RoutingTable(carriers, rules, blocked, seconds, rng=random.Random(seed))
    old_rng = random.Random(seed)
    for number in dialled * 2:  # twice: ties drawn again, memos in use
        assert table.rank(number) == reference_rank(carriers, rules, seconds, old_rng, number)
        blocked_at = next(
            (number[:e] for e in range(len(number), 0, -1) if number[:e] in blocked), None
        )
        assert table.node(number).blocked == blocked_at == table.blocked(number)
        assert table.node(number).rule is table.rule(number)


def target(name: str, port: int) -> Target:
    return Target(name, parse_uri(f"sip:127.0.0.1:{port}"), Flow("udp", ("127.0.0.1", port)))


@settings(max_examples=150, deadline=None)
@given(setup=setups(), dialled=numbers, seed=st.integers(0, 2**32), down=st.sets(st.integers(0, 4)))
def test_plans_follow_the_old_order_with_health_as_a_filter(
    setup: tuple[list[CarrierRoute], list[RouteRule], list[str], float],
    dialled: list[str],
    seed: int,
    down: set[int],
) -> None:
    carriers, rules, _, seconds = setup
    targets = [target(c.name, 5060 + i) for i, c in enumerate(carriers)]
    health = HealthEngine([t.name for t in targets], rng=random.Random(1))
    for i in down:
        if i < len(targets):
            health.force_down(targets[i].name, 1000.0, 0.0, "drill")
    table = RoutingTable(carriers, rules, None, seconds, rng=random.Random(seed))
    old_rng = random.Random(seed)
    counters: Counter[str] = Counter({"panic_plans": 1})  # no panic warning logged per plan
    for number in dialled:
        plan = build_plan(
            "+" + number, targets, 1.0, routing=table, health=health, counters=counters
        )
        old = reference_rank(carriers, rules, seconds, old_rng, number)
        ranked = [c.name for c in old if c.used]
        if not ranked:
            assert plan.rejected is not None and plan.rejected[0] == 404
            continue
        up = [n for n in ranked if health.admits(n)]
        assert [t.name for t in plan.targets] == (up or ranked)
        assert plan.panic == (not up)
        assert isinstance(plan.explain, Explain) and not plan.explain.built
        lines = [f"{c.name}: {c.why}" for c in old]
        assert list(plan.explain)[: len(lines)] == lines  # then the health skips, as before


# -- examples --------------------------------------------------------------------------------


def deck(name: str, rates: dict[str, int]) -> RateDeck:
    found = make_deck(name, {p: (units, 0, (60, 60)) for p, units in rates.items()})
    assert found is not None
    return found


def test_a_carrier_with_only_the_short_prefix_is_offered_under_longer_ones() -> None:
    table = RoutingTable(
        [
            CarrierRoute("short", deck("short", {"44": 1_000_000})),
            CarrierRoute("long", deck("long", {"4420": 2_000_000, "44": 500_000})),
        ]
    )
    choices = table.rank("442079460000")
    assert [(c.name, c.used) for c in choices] == [("short", True), ("long", True)]
    assert "via prefix 44 " in choices[0].why and "via prefix 4420 " in choices[1].why
    # The union's longest prefix for the number is 4420: its node holds both carriers.
    assert table.node("442079460000") is table.index.nodes["4420"]


def test_prefixes_that_rank_alike_share_one_node() -> None:
    rates = {f"4{i:03d}": 100 + i for i in range(500)}
    table = RoutingTable(
        [
            CarrierRoute("a", deck("a", rates)),
            CarrierRoute("b", deck("b", {p: 2 * u for p, u in rates.items()})),
        ]
    )
    assert len(table.index.nodes) == 500
    assert len({id(n) for n in table.index.nodes.values()}) == 1


def test_reasons_are_written_only_when_read() -> None:
    table = RoutingTable([CarrierRoute("a", deck("a", {"44": 1_000_000}))])
    plan = build_plan("447700900123", [target("a", 5071)], 0.0, routing=table)
    assert isinstance(plan.explain, Explain) and not plan.explain.built
    assert plan.explain[0].startswith("a: 0.01/min, 60/60 via prefix 44 (0.0200 for a 90s call")
    assert plan.explain.built
    assert plan.explain == [plan.explain[0]] and len(plan.explain) == 1


def test_copies_of_the_reasons_are_of_the_lines_not_of_the_table() -> None:
    table = RoutingTable([CarrierRoute("a", deck("a", {"44": 1_000_000}))])
    plan = build_plan("447700900123", [target("a", 5071)], 0.0, routing=table)
    copied = copy.deepcopy(plan.explain)
    assert isinstance(copied, Explain) and copied == plan.explain
    assert pickle.loads(pickle.dumps(plan.explain)) == list(plan.explain)
    assert copied._build is None  # nothing left that reads the table


def test_a_change_of_typical_call_compiles_the_index_again() -> None:
    table = RoutingTable(
        [
            CarrierRoute("fee", make_deck("fee", {"44": (100_000, 3_000_000, (1, 1))})),
            CarrierRoute("rate", deck("rate", {"44": 2_000_000})),
        ],
        typical_seconds=10,
    )
    assert [c.name for c in table.rank("447700900123")] == ["rate", "fee"]
    table.typical_seconds = 600  # a long call: the per-call fee matters less
    assert [c.name for c in table.rank("447700900123")] == ["fee", "rate"]
