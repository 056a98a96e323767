"""Least-cost plans: cost order, priority, weights, pins, blocks; with health and from config."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from trunkguard.config import ConfigError, load_config, parse_config
from trunkguard.health import HealthEngine
from trunkguard.proxy import Flow, Target
from trunkguard.routing import (
    CarrierRoute,
    Choice,
    DeckColumns,
    NumberRules,
    RateDeck,
    RouteRule,
    RoutingTable,
    build_plan,
    load_deck,
    normalize,
)
from trunkguard.routing import _plan as routing_plan
from trunkguard.sip import parse_uri

COLUMNS = DeckColumns(connection_fee="fee", increment="increment")
UK_MOBILE = "447700900123"
LONDON = "442079460000"


class Decks:
    """Decks written to a temp dir: ``decks("a", {"44": "0.01"})``, rate[,fee[,increment]]."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def __call__(self, carrier: str, rows: dict[str, str]) -> RateDeck:
        lines = ["prefix,rate,fee,increment"]
        for prefix, spec in rows.items():
            given = spec.split(",")
            rate, fee, increment = given + ["", "0", "60/60"][len(given) :]
            lines.append(f"{prefix},{rate},{fee},{increment}")
        path = self.dir / f"{carrier}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return load_deck(path, COLUMNS, carrier, today=date(2024, 6, 1))


@pytest.fixture
def decks(tmp_path: Path) -> Decks:
    return Decks(tmp_path)


def table(
    carriers: list[CarrierRoute],
    seed: int = 7,
    *,
    rules: list[RouteRule] | None = None,
    blocked: list[str] | None = None,
    typical_seconds: float = 90.0,
) -> RoutingTable:
    return RoutingTable(carriers, rules, blocked, typical_seconds, rng=random.Random(seed))


def used(choices: list[Choice]) -> list[str]:
    return [c.name for c in choices if c.used]


def skipped(choices: list[Choice]) -> dict[str, str]:
    return {c.name: c.why for c in choices if not c.used}


# -- cost order ----------------------------------------------------------------------------


def test_cheapest_typical_call_first(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.010"})),
            CarrierRoute("b", decks("b", {"44": "0.008"})),
            CarrierRoute("c", decks("c", {"44": "0.012"})),
        ]
    )
    plan = routing.rank(UK_MOBILE)
    assert used(plan) == ["b", "a", "c"]
    # 90 s at 60/60 bills two minutes
    assert [c.cost for c in plan] == [Decimal("0.016"), Decimal("0.020"), Decimal("0.024")]
    assert all(c.rate is not None and c.rate.prefix == "44" for c in plan)


def test_each_carrier_uses_its_own_longest_prefix(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.010", "447": "0.090"})),
            CarrierRoute("b", decks("b", {"44": "0.050", "4420": "0.005"})),
        ]
    )
    mobile, london = routing.rank(UK_MOBILE), routing.rank(LONDON)
    assert used(mobile) == ["b", "a"]
    assert [c.rate.prefix for c in mobile if c.rate] == ["44", "447"]
    assert used(london) == ["b", "a"]
    assert [c.rate.prefix for c in london if c.rate] == ["4420", "44"]


def test_increments_can_change_the_order(decks: Decks) -> None:
    # a: 0.0100/min billed 60/60 -> a 90 s call bills 120 s: 0.0200
    # b: 0.0110/min billed 1/1   -> a 90 s call bills  90 s: 0.0165
    carriers = [
        CarrierRoute("a", decks("a", {"44": "0.0100,0,60/60"})),
        CarrierRoute("b", decks("b", {"44": "0.0110,0,1/1"})),
    ]
    plan = table(carriers).rank(UK_MOBILE)
    assert used(plan) == ["b", "a"]
    assert [c.cost for c in plan] == [Decimal("0.0165"), Decimal("0.0200")]
    # For a 120 s typical call both bill 120 s, and the lower rate wins: 0.0200 < 0.0220.
    longer = table(carriers, typical_seconds=120).rank(UK_MOBILE)
    assert used(longer) == ["a", "b"]
    assert [c.cost for c in longer] == [Decimal("0.0200"), Decimal("0.0220")]


def test_connection_fee_counts(decks: Decks) -> None:
    # a: 0.0100 + 0.0200 fee = 0.0300 for 90 s; b: 0.0120 * 2 minutes = 0.0240
    plan = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.0100,0.0200,1/1"})),
            CarrierRoute("b", decks("b", {"44": "0.0120"})),
        ],
        typical_seconds=60,
    ).rank(UK_MOBILE)
    assert used(plan) == ["b", "a"]
    assert [c.cost for c in plan] == [Decimal("0.0120"), Decimal("0.0300")]


def test_priority_breaks_equal_costs(decks: Decks) -> None:
    for seed in range(20):
        plan = table(
            [
                CarrierRoute("a", decks("a", {"44": "0.01"}), priority=2),
                CarrierRoute("b", decks("b", {"44": "0.01"}), priority=1),
                CarrierRoute("c", decks("c", {"44": "0.02"}), priority=0),
            ],
            seed=seed,
        ).rank(UK_MOBILE)
        assert used(plan) == ["b", "a", "c"]  # cost first, priority only among equals
        assert "tie" not in plan[0].why


def test_ties_are_spread_by_weight(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.01"}), weight=3),
            CarrierRoute("b", decks("b", {"44": "0.01"}), weight=1),
            CarrierRoute("c", decks("c", {"44": "0.05"}), weight=100),
        ],
        seed=2024,
    )
    runs = 4000
    first = Counter(routing.rank(UK_MOBILE)[0].name for _ in range(runs))
    assert set(first) == {"a", "b"}  # c is dearer: never first whatever its weight
    assert 0.72 < first["a"] / runs < 0.78  # 3:1
    plan = routing.rank(UK_MOBILE)
    assert sorted(used(plan)[:2]) == ["a", "b"]
    assert used(plan)[2] == "c"
    assert "tie of 2 spread by weight" in plan[0].why
    assert "tie" not in plan[2].why


def test_same_seed_same_order(decks: Decks) -> None:
    carriers = [CarrierRoute(n, decks(n, {"44": "0.01"})) for n in "abcd"]
    first = [used(table(carriers, seed=5).rank(UK_MOBILE)) for _ in range(3)]
    second = [used(table(carriers, seed=5).rank(UK_MOBILE)) for _ in range(3)]
    assert first == second


def test_weight_zero_is_never_first_while_others_exist(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.01"}), weight=0),
            CarrierRoute("b", decks("b", {"44": "0.01"}), weight=1),
            CarrierRoute("c", decks("c", {"44": "0.01"}), weight=2),
        ],
        seed=99,
    )
    orders = Counter(tuple(used(routing.rank(UK_MOBILE))) for _ in range(2000))
    assert all(order[-1] == "a" for order in orders)  # still in the plan, as the last resort
    assert set(orders) == {("b", "c", "a"), ("c", "b", "a")}


def test_all_weights_zero_keeps_config_order(decks: Decks) -> None:
    routing = table([CarrierRoute(n, decks(n, {"44": "0.01"}), weight=0) for n in "abc"], seed=3)
    for _ in range(50):
        assert used(routing.rank(UK_MOBILE)) == ["a", "b", "c"]


# -- rules, blocks, carriers without a deck or a rate --------------------------------------


def test_pins_use_only_the_pinned_in_pin_order(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.01"})),
            CarrierRoute("b", decks("b", {"44": "0.02"})),
            CarrierRoute("c", decks("c", {"44": "0.03"})),
        ],
        rules=[RouteRule("447", pin=("c", "a"))],
    )
    plan = routing.rank(UK_MOBILE)
    assert used(plan) == ["c", "a"]  # not cost order: pin order
    assert skipped(plan) == {"b": "not pinned for 447"}
    assert plan[0].why.endswith("pinned for 447)")
    assert plan[0].cost == Decimal("0.06")  # still priced, for the record
    assert used(routing.rank(LONDON)) == ["a", "b", "c"]  # the rule is for 447 only


def test_a_pinned_carrier_without_a_rate_is_skipped(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.01"})),
            CarrierRoute("b", decks("b", {"33": "0.02"})),
        ],
        rules=[RouteRule("44", pin=("b", "a"))],
    )
    plan = routing.rank(UK_MOBILE)
    assert used(plan) == ["a"]
    assert skipped(plan) == {"b": f"no rate for {UK_MOBILE}"}


def test_excludes_and_the_longest_rule_applies(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.01"})),
            CarrierRoute("b", decks("b", {"44": "0.02"})),
            CarrierRoute("c", decks("c", {"44": "0.03"})),
        ],
        rules=[
            RouteRule("44", pin=("c",)),
            RouteRule("4477", exclude=("a",)),
            RouteRule("447700", exclude=("b",)),
        ],
    )
    assert used(routing.rank("447712345678")) == ["b", "c"]  # 4477: no pin, a excluded
    assert skipped(routing.rank("447712345678")) == {"a": "excluded for 4477"}
    assert used(routing.rank(UK_MOBILE)) == ["a", "c"]  # 447700: only b excluded
    assert skipped(routing.rank(UK_MOBILE)) == {"b": "excluded for 447700"}
    assert used(routing.rank(LONDON)) == ["c"]  # 44: pinned to c
    assert routing.rule(LONDON) == RouteRule("44", pin=("c",))
    assert routing.rule("33123456789") is None


def test_blocked_prefixes_longest_first() -> None:
    routing = table([CarrierRoute("a")], blocked=["1", "1900", "4470"])
    assert routing.blocked("19005551234") == "1900"
    assert routing.blocked("12125551234") == "1"
    assert routing.blocked("447012345678") == "4470"
    assert routing.blocked(UK_MOBILE) is None
    assert table([CarrierRoute("a")]).blocked("19005551234") is None


def test_carriers_without_a_deck_come_after_priced_ones(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("flat"),
            CarrierRoute("a", decks("a", {"44": "0.02"})),
            CarrierRoute("b", decks("b", {"44": "0.01"})),
        ]
    )
    plan = routing.rank(UK_MOBILE)
    assert used(plan) == ["b", "a", "flat"]
    assert plan[2].why == "no rate deck: after priced carriers"
    assert plan[2].cost is None and plan[2].rate is None


def test_without_any_deck_the_order_is_the_config_order() -> None:
    plan = table([CarrierRoute("x"), CarrierRoute("y")]).rank(UK_MOBILE)
    assert used(plan) == ["x", "y"]
    assert [c.why for c in plan] == ["config order", "config order"]


def test_carriers_without_a_rate_for_the_number_are_skipped_with_a_reason(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"33": "0.01"})),
            CarrierRoute("b", decks("b", {"44": "0.02"})),
            CarrierRoute("c", decks("c", {"4420": "0.01"})),
        ]
    )
    plan = routing.rank(UK_MOBILE)
    assert used(plan) == ["b"]
    assert skipped(plan) == {"a": f"no rate for {UK_MOBILE}", "c": f"no rate for {UK_MOBILE}"}
    assert [c.used for c in plan] == [True, False, False]  # used ones first
    nobody = routing.rank("4912345678")
    assert used(nobody) == []
    assert len(nobody) == 3


def test_every_reason_names_the_prefix_and_the_rate(decks: Decks) -> None:
    routing = table(
        [
            CarrierRoute("a", decks("a", {"44": "0.0061,0,6/6", "4477": "0.00000001,0.01,1/1"})),
            CarrierRoute("b", decks("b", {"447": "0.0125,0.015,30/6"})),
        ]
    )
    plan = routing.rank("447912345678")
    a = next(c for c in plan if c.name == "a")
    b = next(c for c in plan if c.name == "b")
    assert a.why == "0.0061/min, 6/6 via prefix 44 (0.0092 for a 90s call; cost rank)"
    assert b.why == (
        "0.0125/min + 0.015 per call, 30/6 via prefix 447 (0.0338 for a 90s call; cost rank)"
    )
    tiny = next(c for c in routing.rank("447712345678") if c.name == "a")
    assert tiny.why.startswith("0.00000001/min + 0.01 per call, 1/1 via prefix 4477 (0.0100")
    for choice in [*plan, tiny]:
        assert isinstance(choice.why, str) and "E-" not in choice.why


def test_costs_follow_a_change_of_the_typical_call(decks: Decks) -> None:
    routing = table([CarrierRoute("a", decks("a", {"44": "0.06,0,1/1"}))])
    assert routing.rank(UK_MOBILE)[0].cost == Decimal("0.090")
    routing.typical_seconds = 30
    plan = routing.rank(UK_MOBILE)
    assert plan[0].cost == Decimal("0.030")
    assert "(0.0300 for a 30s call; cost rank)" in plan[0].why


def test_plans_stay_right_when_the_memo_of_costs_starts_over(
    decks: Decks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routing_plan, "PRICED_SIZE", 2)
    rows = {str(p): f"0.0{p}1" for p in range(20, 40)}
    cheap = {str(p): f"0.00{p}1" for p in range(20, 40)}
    routing = table([CarrierRoute("a", decks("a", rows)), CarrierRoute("b", decks("b", cheap))])
    for _ in range(3):
        for p in range(20, 40):
            plan = routing.rank(f"{p}123456789")
            assert used(plan) == ["b", "a"]
            # 90 s at 60/60: two minutes
            assert [c.cost for c in plan] == [Decimal(f"0.00{p}1") * 2, Decimal(f"0.0{p}1") * 2]
            assert plan[1].why.startswith(f"0.0{p}1/min, 60/60 via prefix {p} (")
    assert len(routing._priced) <= 4


# -- build_plan: routing with health ---------------------------------------------------------


def target(name: str, port: int) -> Target:
    return Target(name, parse_uri(f"sip:127.0.0.1:{port}"), Flow("udp", ("127.0.0.1", port)))


TARGETS = [target("a", 5071), target("b", 5072), target("c", 5073)]


@pytest.fixture
def routing(decks: Decks) -> RoutingTable:
    return table(
        [
            CarrierRoute("a", decks("a", {"44": "0.010", "1": "0.002"})),
            CarrierRoute("b", decks("b", {"44": "0.008", "1": "0.003"})),
            CarrierRoute("c", decks("c", {"44": "0.012"})),
        ],
        blocked=["1900"],
    )


def names(targets: list[Target]) -> list[str]:
    return [t.name for t in targets]


def test_plan_follows_cost_with_every_carrier_healthy(routing: RoutingTable) -> None:
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1))
    plan = build_plan("+44 7700 900123", TARGETS, 10.0, routing=routing, health=health)
    assert plan.number == UK_MOBILE
    assert names(plan.targets) == ["b", "a", "c"]
    assert not plan.panic and plan.rejected is None
    assert [line.split(":")[0] for line in plan.explain] == ["b", "a", "c"]
    assert "via prefix 44" in plan.explain[0]


def test_cheapest_down_the_next_cheapest_goes_first(routing: RoutingTable) -> None:
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1))
    health.unreachable("b", 100.0, "ICMP port unreachable")
    plan = build_plan(UK_MOBILE, TARGETS, 112.0, routing=routing, health=health)
    assert names(plan.targets) == ["a", "c"]
    assert not plan.panic
    assert "b: skipped, DOWN for 12s (b unreachable: ICMP port unreachable)" in plan.explain
    assert plan.explain[0].startswith("b: 0.008/min")  # still listed with its rate, first


def test_a_forced_down_carrier_is_skipped_with_the_operators_reason(
    routing: RoutingTable,
) -> None:
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1))
    health.force_down("b", until=1000.0, now=50.0, reason="carrier maintenance")
    plan = build_plan(UK_MOBILE, TARGETS, 80.0, routing=routing, health=health)
    assert names(plan.targets) == ["a", "c"]
    assert "b: skipped, FORCED_DOWN for 30s (carrier maintenance)" in plan.explain


def test_panic_when_all_are_out_keeps_cost_order(routing: RoutingTable) -> None:
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1))
    for name in ("c", "a", "b"):
        health.unreachable(name, 100.0, "refused")
    counters: Counter[str] = Counter()
    plan = build_plan(UK_MOBILE, TARGETS, 101.0, routing=routing, health=health, counters=counters)
    assert plan.panic
    assert names(plan.targets) == ["b", "a", "c"]
    assert plan.explain[-1].startswith("panic:")
    assert counters["panic_plans"] == 1


def test_blocked_number_is_refused_with_403(routing: RoutingTable) -> None:
    counters: Counter[str] = Counter()
    plan = build_plan("1-900-555-1234", TARGETS, 0.0, routing=routing, counters=counters)
    assert plan.rejected == (403, "19005551234 is in blocked prefix 1900")
    assert plan.targets == []
    assert plan.number == "19005551234"
    assert counters["calls_blocked"] == 1


@pytest.mark.parametrize("user", ["alice", "12", "+44 77OO 900123", ""])
def test_undialable_number_is_refused_with_484(routing: RoutingTable, user: str) -> None:
    counters: Counter[str] = Counter()
    plan = build_plan(user, TARGETS, 0.0, routing=routing, counters=counters)
    assert plan.rejected is not None
    assert plan.rejected[0] == 484
    assert "not a dialable number" in plan.rejected[1]
    assert plan.targets == []
    assert counters["calls_undialable"] == 1


def test_number_rules_apply_before_routing(routing: RoutingTable) -> None:
    rules = NumberRules(country_code="44", national_prefix="0", tech_prefixes=("*31#",))
    plan = build_plan("*31#07700 900123", TARGETS, 0.0, routing=routing, numbers=rules)
    assert plan.number == UK_MOBILE
    assert names(plan.targets) == ["b", "a", "c"]


def test_a_number_no_carrier_prices_is_refused_with_404(routing: RoutingTable) -> None:
    plan = build_plan("+33123456789", TARGETS, 0.0, routing=routing)
    assert plan.rejected == (404, "no carrier has a rate for 33123456789")
    assert plan.targets == []
    assert len(plan.explain) == 3


def test_carrier_without_rate_is_left_out_of_the_plan(routing: RoutingTable) -> None:
    plan = build_plan("+12125551234", TARGETS, 0.0, routing=routing)
    assert names(plan.targets) == ["a", "b"]
    assert "c: no rate for 12125551234" in plan.explain


# -- from the config file --------------------------------------------------------------------

CONFIG = """\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - name: a
    uri: "sip:127.0.0.1:5071"
    deck: {path: decks/a.csv, prefix: Code, rate: Rate, increment: Billing}
  - name: b
    uri: "sip:127.0.0.1:5072"
    priority: 1
    deck: {path: decks/b.csv, prefix: Code, rate: Rate, increment: Billing}
  - {name: c, uri: "sip:127.0.0.1:5073"}
numbers: {country_code: "44", national_prefix: "0", international_prefixes: ["00"]}
routes:
  - {prefix: "4420", pin: [b]}
blocked: ["449"]
typical_call_seconds: 30
"""


def write_decks(base: Path, a: str, b: str) -> None:
    (base / "decks").mkdir(exist_ok=True)
    (base / "decks" / "a.csv").write_text(a, encoding="utf-8")
    (base / "decks" / "b.csv").write_text(b, encoding="utf-8")


def test_routing_from_config_with_base_dir(tmp_path: Path) -> None:
    # a: 0.012/min at 1/1 -> 30 s costs 0.006; b: 0.010/min at 60/60 -> bills 60 s: 0.010
    write_decks(
        tmp_path, "Code,Rate,Billing\n44,0.012,1/1\n", "Code,Rate,Billing\n44,0.010,60/60\n"
    )
    config = parse_config(CONFIG, "router.yaml")
    config._base = tmp_path
    routing, numbers = config.routing()
    assert routing is not None and numbers is not None
    assert routing.typical_seconds == 30
    number = normalize("07700 900123", numbers)
    assert used(routing.rank(number)) == ["a", "b", "c"]
    assert routing.rank(number)[2].why == "no rate deck: after priced carriers"
    assert used(routing.rank("442079460000")) == ["b"]  # pinned
    assert routing.blocked("449012345678") == "449"


def test_routing_from_a_config_file_resolves_decks_next_to_it(tmp_path: Path) -> None:
    write_decks(tmp_path, "Code,Rate,Billing\n44,0.02,1/1\n", "Code,Rate,Billing\n44,0.01,1/1\n")
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    config, _ = load_config(path)
    routing, _ = config.routing()
    assert routing is not None
    plan = build_plan("+447700900123", TARGETS, 0.0, routing=routing)
    assert names(plan.targets) == ["b", "a", "c"]


def test_deck_errors_surface_as_config_error_with_every_problem(tmp_path: Path) -> None:
    write_decks(
        tmp_path,
        "Code,Rate,Billing\n44,0.01,1/1\n44x,0.01,1/1\n33,-1,1/1\n",
        "Code,Price\n44,0.01\n",  # wrong header: no Rate, no Billing
    )
    config = parse_config(CONFIG, "router.yaml")
    config._base = tmp_path
    with pytest.raises(ConfigError) as caught:
        config.routing()
    a, b = tmp_path / "decks" / "a.csv", tmp_path / "decks" / "b.csv"
    found = caught.value.problems
    assert found[:2] == [
        f"{a}:3: prefix '44x' is not 1-20 digits",
        f"{a}:4: rate '-1' must be zero or more",
    ]
    assert len(found) == 4
    assert found[2].startswith(f"{b}:1: no column 'Rate' for the rate")
    assert found[3].startswith(f"{b}:1: no column 'Billing' for the increment")


def test_missing_deck_file_is_a_config_error(tmp_path: Path) -> None:
    config = parse_config(CONFIG, "router.yaml")
    config._base = tmp_path
    with pytest.raises(ConfigError) as caught:
        config.routing()
    assert caught.value.problems == [
        f"{tmp_path / 'decks' / 'a.csv'}: cannot read: No such file or directory",
        f"{tmp_path / 'decks' / 'b.csv'}: cannot read: No such file or directory",
    ]


def test_without_decks_routes_or_blocks_there_is_no_routing_table() -> None:
    config = parse_config(
        'listen: udp:127.0.0.1:5060\ncarriers:\n  - {name: a, uri: "sip:127.0.0.1:5071"}\n'
    )
    assert config.routing() == (None, None)
