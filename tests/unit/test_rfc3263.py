"""RFC 3263 / RFC 2782 rules of trunkguard.dns._rfc3263, with no DNS server.

A ``Zone`` stands in for DNS: it answers every Lookup the chain asks for, and records
which ones were asked, so each test checks both the destinations and the questions.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkguard.dns import (
    Answers,
    Destination,
    Lookup,
    Naptr,
    Options,
    Query,
    Records,
    Resolution,
    Srv,
    describe,
    next_lookups,
    resolution,
    srv_order,
)

HOST = "trunk.carrier.test"


@dataclass
class Zone:
    """DNS data by name; a name absent from every table is NXDOMAIN."""

    naptr: dict[str, list[Naptr]] = field(default_factory=dict)
    srv: dict[str, list[Srv]] = field(default_factory=dict)
    a: dict[str, list[str]] = field(default_factory=dict)
    aaaa: dict[str, list[str]] = field(default_factory=dict)
    ttls: dict[Lookup, float] = field(default_factory=dict)
    default_ttl: float = 300.0
    negative_ttl: float | None = 30.0
    asked: list[Lookup] = field(default_factory=list)

    def exists(self, name: str) -> bool:
        return any(name in table for table in (self.naptr, self.srv, self.a, self.aaaa))

    def answer(self, lookup: Lookup) -> Records[object]:
        self.asked.append(lookup)
        table: dict[str, list[object]] = {  # type: ignore[assignment]
            "NAPTR": self.naptr,
            "SRV": self.srv,
            "A": self.a,
            "AAAA": self.aaaa,
        }[lookup.rdtype]
        records = table.get(lookup.name, [])
        if records:
            return Records(tuple(records), self.ttls.get(lookup, self.default_ttl))
        ttl = self.ttls.get(lookup, self.negative_ttl)
        return Records((), ttl, nxdomain=not self.exists(lookup.name))


def resolve(
    query: Query | str,
    zone: Zone,
    rng: random.Random | None = None,
    options: Options | None = None,
) -> Resolution:
    """What the resolver does: ask what is missing, round after round, then resolve."""
    q = Query.from_uri(query) if isinstance(query, str) else query
    options = options or Options()
    answers = Answers()
    for _ in range(5):
        needed = next_lookups(q, answers, options)
        if not needed:
            return resolution(q, answers, rng or random.Random(1), options)
        for lookup in needed:
            records = zone.answer(lookup)
            if lookup.rdtype == "NAPTR":
                answers.add_naptr(lookup.name, records)  # type: ignore[arg-type]
            elif lookup.rdtype == "SRV":
                answers.add_srv(lookup.name, records)  # type: ignore[arg-type]
            else:
                answers.add_addresses(lookup.name, lookup.rdtype, records)  # type: ignore[arg-type]
    raise AssertionError("the chain did not end")


def strs(result: Resolution) -> list[str]:
    return [str(d) for d in result.destinations]


def asked(zone: Zone) -> set[str]:
    return {str(lookup) for lookup in zone.asked}


def sbc_zone() -> Zone:
    """A carrier with NAPTR (UDP then TCP), SRV for UDP, TCP and TLS, three SBCs."""
    return Zone(
        naptr={
            HOST: [
                Naptr(20, 10, "s", "SIP+D2T", f"_sip._tcp.{HOST}"),
                Naptr(10, 10, "s", "SIP+D2U", f"_sip._udp.{HOST}"),
                Naptr(30, 10, "s", "SIPS+D2T", f"_sips._tcp.{HOST}"),
            ]
        },
        srv={
            f"_sip._udp.{HOST}": [Srv(10, 0, 5060, "sbc1.carrier.test")],
            f"_sip._tcp.{HOST}": [Srv(10, 0, 5060, "sbc2.carrier.test")],
            f"_sips._tcp.{HOST}": [Srv(10, 0, 5061, "sbc3.carrier.test")],
        },
        a={
            HOST: ["127.0.0.9"],
            "sbc1.carrier.test": ["127.0.0.2"],
            "sbc2.carrier.test": ["127.0.0.3"],
            "sbc3.carrier.test": ["127.0.0.4"],
        },
    )


# --------------------------------------------------------------------------- Query


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:trunk.carrier.test", Query(HOST)),
        ("sip:trunk.carrier.test;transport=udp", Query(HOST, transport="udp")),
        ("sip:trunk.carrier.test;transport=TCP", Query(HOST, transport="tcp")),
        ("sips:carrier.test", Query("carrier.test", secure=True)),
        ("sips:carrier.test;transport=tcp", Query("carrier.test", None, "tcp", True)),
        ("sip:gw@trunk.carrier.test:5080;lr", Query(HOST, 5080)),
        ("sip:[::1]:5070", Query("::1", 5070)),
        ("SIP:127.0.0.1", Query("127.0.0.1")),
    ],
)
def test_query_from_uri(uri: str, expected: Query) -> None:
    assert Query.from_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("tel:+15551234", "not a sip or sips URI"),
        ("sips:carrier.test;transport=udp", "cannot use transport=udp"),
        ("sip:carrier.test;transport=sctp", "unsupported transport 'sctp'"),
        ("sip:carrier test", "whitespace"),
        ("carrier.test", "no scheme"),
        ("sip:carrier.test:99999", "bad port"),
    ],
)
def test_query_from_bad_uri_says_why(uri: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Query.from_uri(uri)


def test_query_prints_as_a_uri() -> None:
    assert (
        str(Query.from_uri("sips:carrier.test;transport=tcp")) == "sips:carrier.test;transport=tcp"
    )
    assert str(Query("::1", 5070)) == "sip:[::1]:5070"


def test_destination_key_and_text() -> None:
    d = Destination("sbc1.carrier.test", "127.0.0.2", 5060, "udp", 10, 60)
    assert d.key == ("udp", "127.0.0.2", 5060)
    assert str(d) == "udp:127.0.0.2:5060"
    assert str(Destination("h", "::1", 5061, "tls")) == "tls:[::1]:5061"
    assert describe([d]) == "udp:127.0.0.2:5060 p10 w60"


# --------------------------------------------------------------------------- §4: IP literal


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:127.0.0.5", "udp:127.0.0.5:5060"),
        ("sips:127.0.0.5", "tls:127.0.0.5:5061"),
        ("sip:127.0.0.5:5099", "udp:127.0.0.5:5099"),
        ("sip:127.0.0.5;transport=tcp", "tcp:127.0.0.5:5060"),
        ("sip:127.0.0.5;transport=tls", "tls:127.0.0.5:5061"),
        ("sips:127.0.0.5;transport=tcp", "tls:127.0.0.5:5061"),
        ("sip:[::1]", "udp:[::1]:5060"),
        ("sip:[0:0::1]:5070;transport=tcp", "tcp:[::1]:5070"),
    ],
)
def test_ip_literal_is_itself_without_dns(uri: str, expected: str) -> None:
    zone = sbc_zone()
    result = resolve(uri, zone)
    assert strs(result) == [expected]
    assert zone.asked == []
    assert result.ttl == math.inf and result.error is None


# --------------------------------------------------------------------------- §4.2: explicit port


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:trunk.carrier.test:5080", "udp:127.0.0.9:5080"),
        ("sips:trunk.carrier.test:5081", "tls:127.0.0.9:5081"),
        ("sip:trunk.carrier.test:5080;transport=tcp", "tcp:127.0.0.9:5080"),
    ],
)
def test_explicit_port_asks_only_addresses(uri: str, expected: str) -> None:
    zone = sbc_zone()
    zone.aaaa[HOST] = ["::9"]
    result = resolve(uri, zone)
    assert strs(result) == [expected, expected.replace("127.0.0.9", "[::9]")]
    assert asked(zone) == {f"A {HOST}", f"AAAA {HOST}"}
    assert all(d.host == HOST and d.priority == 0 for d in result.destinations)


# --------------------------------------------------------------------------- explicit transport


@pytest.mark.parametrize(
    ("uri", "srv_name", "expected"),
    [
        ("sip:trunk.carrier.test;transport=udp", f"_sip._udp.{HOST}", "udp:127.0.0.2:5060"),
        ("sip:trunk.carrier.test;transport=tcp", f"_sip._tcp.{HOST}", "tcp:127.0.0.3:5060"),
        ("sip:trunk.carrier.test;transport=tls", f"_sips._tcp.{HOST}", "tls:127.0.0.4:5061"),
        ("sips:trunk.carrier.test;transport=tcp", f"_sips._tcp.{HOST}", "tls:127.0.0.4:5061"),
    ],
)
def test_explicit_transport_asks_that_srv_only(uri: str, srv_name: str, expected: str) -> None:
    zone = sbc_zone()
    result = resolve(uri, zone)
    assert strs(result) == [expected]
    srv_asked = {str(x) for x in zone.asked if x.rdtype in ("SRV", "NAPTR")}
    assert srv_asked == {f"SRV {srv_name}"}


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:trunk.carrier.test;transport=udp", "udp:127.0.0.9:5060"),
        ("sip:trunk.carrier.test;transport=tcp", "tcp:127.0.0.9:5060"),
        ("sips:trunk.carrier.test;transport=tcp", "tls:127.0.0.9:5061"),
    ],
)
def test_explicit_transport_without_srv_falls_back_to_addresses(uri: str, expected: str) -> None:
    zone = sbc_zone()
    zone.srv.clear()
    result = resolve(uri, zone)
    assert strs(result) == [expected]
    assert result.destinations[0].host == HOST


# --------------------------------------------------------------------------- NAPTR


def test_naptr_in_order_then_preference_each_to_its_srv() -> None:
    zone = sbc_zone()
    result = resolve("sip:trunk.carrier.test", zone)
    assert strs(result) == ["udp:127.0.0.2:5060", "tcp:127.0.0.3:5060", "tls:127.0.0.4:5061"]
    assert f"SRV _sip._udp.{HOST}" in asked(zone)
    # The host's own A record is never needed when NAPTR leads somewhere.
    assert f"A {HOST}" not in asked(zone)


def test_naptr_preference_breaks_ties_of_order() -> None:
    zone = sbc_zone()
    zone.naptr[HOST] = [
        Naptr(10, 20, "s", "SIP+D2U", f"_sip._udp.{HOST}"),
        Naptr(10, 10, "s", "SIP+D2T", f"_sip._tcp.{HOST}"),
    ]
    assert strs(resolve("sip:trunk.carrier.test", zone)) == [
        "tcp:127.0.0.3:5060",
        "udp:127.0.0.2:5060",
    ]


def test_sips_follows_only_sips_naptr() -> None:
    zone = sbc_zone()
    result = resolve("sips:trunk.carrier.test", zone)
    assert strs(result) == ["tls:127.0.0.4:5061"]
    assert f"SRV _sip._udp.{HOST}" not in asked(zone)


def test_naptr_replacement_may_name_any_srv_owner() -> None:
    zone = sbc_zone()
    zone.naptr[HOST] = [Naptr(10, 10, "S", "sip+d2u", "_sip._udp.pool.other.test.")]
    zone.srv["_sip._udp.pool.other.test"] = [Srv(5, 0, 5070, "sbc2.carrier.test")]
    assert strs(resolve("sip:trunk.carrier.test", zone)) == ["udp:127.0.0.3:5070"]


def test_unusable_naptr_records_are_skipped() -> None:
    zone = sbc_zone()
    zone.naptr[HOST] = [
        Naptr(1, 1, "s", "E2U+sip", f"_sip._tcp.{HOST}"),  # not a SIP service
        Naptr(2, 1, "s", "SIP+D2S", f"_sip._tcp.{HOST}"),  # SCTP: not supported
        Naptr(3, 1, "a", "SIP+D2T", "sbc2.carrier.test"),  # "a" flag: not for SIP
        Naptr(4, 1, "", "SIP+D2T", f"_sip._tcp.{HOST}"),  # non-terminal
        Naptr(5, 1, "s", "SIP+D2T", "."),
        Naptr(6, 1, "u", "SIP+D2T", "", regexp="!^.*$!sip:x@y!"),
        Naptr(7, 1, "s", "SIP+D2U", f"_sip._udp.{HOST}"),
    ]
    assert strs(resolve("sip:trunk.carrier.test", zone)) == ["udp:127.0.0.2:5060"]


def test_naptr_without_usable_records_counts_as_no_naptr() -> None:
    zone = sbc_zone()
    zone.naptr[HOST] = [Naptr(1, 1, "s", "E2U+sip", f"_sip._udp.{HOST}")]
    result = resolve("sip:trunk.carrier.test", zone)
    assert strs(result) == ["udp:127.0.0.2:5060", "tcp:127.0.0.3:5060", "tls:127.0.0.4:5061"]


def test_naptr_whose_srv_names_are_empty_falls_back_with_its_transport() -> None:
    zone = sbc_zone()
    zone.srv.clear()
    zone.naptr[HOST] = [
        Naptr(10, 10, "s", "SIP+D2T", f"_sip._tcp.{HOST}"),
        Naptr(20, 10, "s", "SIP+D2U", f"_sip._udp.{HOST}"),
    ]
    # §4.2: the transport NAPTR selected, on its default port, at the host's addresses.
    assert strs(resolve("sip:trunk.carrier.test", zone)) == ["tcp:127.0.0.9:5060"]


def test_naptr_some_srv_names_empty_uses_the_others_only() -> None:
    zone = sbc_zone()
    del zone.srv[f"_sip._udp.{HOST}"]
    assert strs(resolve("sip:trunk.carrier.test", zone)) == [
        "tcp:127.0.0.3:5060",
        "tls:127.0.0.4:5061",
    ]


def test_naptr_services_limited_to_enabled_transports() -> None:
    zone = sbc_zone()
    result = resolve("sip:trunk.carrier.test", zone, options=Options(transports=("udp",)))
    assert strs(result) == ["udp:127.0.0.2:5060"]
    assert f"SRV _sip._tcp.{HOST}" not in asked(zone)


# --------------------------------------------------------------------------- no NAPTR


def test_without_naptr_every_transport_in_preference_order() -> None:
    zone = sbc_zone()
    zone.naptr.clear()
    result = resolve("sip:trunk.carrier.test", zone)
    assert strs(result) == ["udp:127.0.0.2:5060", "tcp:127.0.0.3:5060", "tls:127.0.0.4:5061"]
    srv_asked = [str(x) for x in zone.asked if x.rdtype == "SRV"]
    assert srv_asked == [f"SRV _sip._udp.{HOST}", f"SRV _sip._tcp.{HOST}", f"SRV _sips._tcp.{HOST}"]


def test_without_naptr_only_the_transports_with_srv() -> None:
    zone = sbc_zone()
    zone.naptr.clear()
    del zone.srv[f"_sip._udp.{HOST}"]
    del zone.srv[f"_sips._tcp.{HOST}"]
    assert strs(resolve("sip:trunk.carrier.test", zone)) == ["tcp:127.0.0.3:5060"]


def test_without_naptr_sips_asks_sips_srv_only() -> None:
    zone = sbc_zone()
    zone.naptr.clear()
    result = resolve("sips:trunk.carrier.test", zone)
    assert strs(result) == ["tls:127.0.0.4:5061"]
    assert [str(x) for x in zone.asked if x.rdtype == "SRV"] == [f"SRV _sips._tcp.{HOST}"]


def test_without_naptr_or_srv_addresses_on_default_port_udp() -> None:
    zone = sbc_zone()
    zone.naptr.clear()
    zone.srv.clear()
    zone.aaaa[HOST] = ["::9"]
    result = resolve("sip:trunk.carrier.test", zone)
    assert strs(result) == ["udp:127.0.0.9:5060", "udp:[::9]:5060"]


def test_without_naptr_or_srv_sips_uses_tls_5061() -> None:
    zone = sbc_zone()
    zone.naptr.clear()
    zone.srv.clear()
    assert strs(resolve("sips:trunk.carrier.test", zone)) == ["tls:127.0.0.9:5061"]


def test_default_transport_when_udp_is_not_enabled() -> None:
    zone = sbc_zone()
    zone.naptr.clear()
    zone.srv.clear()
    result = resolve("sip:trunk.carrier.test", zone, options=Options(transports=("tcp",)))
    assert strs(result) == ["tcp:127.0.0.9:5060"]


@pytest.mark.parametrize(
    ("uri", "transports"),
    [("sips:trunk.carrier.test", ("udp", "tcp")), ("sip:x.test;transport=tcp", ("udp",))],
)
def test_a_transport_that_is_not_enabled_is_an_error_without_dns(
    uri: str, transports: tuple[str, ...]
) -> None:
    zone = sbc_zone()
    result = resolve(uri, zone, options=Options(transports=transports))
    assert result.destinations == ()
    assert result.error is not None and "is not enabled" in result.error
    assert zone.asked == []


# --------------------------------------------------------------------------- SRV records


def test_srv_priorities_ascending_and_one_destination_per_address() -> None:
    zone = Zone(
        srv={
            f"_sip._udp.{HOST}": [
                Srv(30, 0, 5062, "sbc3.carrier.test"),
                Srv(10, 0, 5060, "sbc1.carrier.test"),
                Srv(20, 0, 5061, "sbc2.carrier.test"),
            ]
        },
        a={
            "sbc1.carrier.test": ["127.0.0.2", "127.0.0.12"],
            "sbc2.carrier.test": ["127.0.0.3"],
            "sbc3.carrier.test": ["127.0.0.4"],
        },
        aaaa={"sbc1.carrier.test": ["::2"]},
    )
    result = resolve("sip:trunk.carrier.test;transport=udp", zone)
    assert strs(result) == [
        "udp:127.0.0.2:5060",
        "udp:127.0.0.12:5060",
        "udp:[::2]:5060",
        "udp:127.0.0.3:5061",
        "udp:127.0.0.4:5062",
    ]
    assert [d.priority for d in result.destinations] == [10, 10, 10, 20, 30]
    assert result.destinations[0].host == "sbc1.carrier.test"


def test_ipv6_first_or_ipv4_only_when_configured() -> None:
    zone = Zone(
        srv={f"_sip._udp.{HOST}": [Srv(10, 0, 5060, "sbc1.carrier.test")]},
        a={"sbc1.carrier.test": ["127.0.0.2"]},
        aaaa={"sbc1.carrier.test": ["::2"]},
    )
    uri = "sip:trunk.carrier.test;transport=udp"
    six_first = resolve(uri, zone, options=Options(address_types=("AAAA", "A")))
    assert strs(six_first) == ["udp:[::2]:5060", "udp:127.0.0.2:5060"]
    zone.asked.clear()
    four_only = resolve(uri, zone, options=Options(address_types=("A",)))
    assert strs(four_only) == ["udp:127.0.0.2:5060"]
    assert "AAAA sbc1.carrier.test" not in asked(zone)


def test_same_address_reached_twice_is_one_destination_where_first_reached() -> None:
    zone = Zone(
        srv={
            f"_sip._udp.{HOST}": [
                Srv(10, 0, 5060, "a.carrier.test"),
                Srv(20, 0, 5060, "b.carrier.test"),  # same address and port as a
                Srv(20, 0, 5070, "b.carrier.test"),
            ]
        },
        a={"a.carrier.test": ["127.0.0.2"], "b.carrier.test": ["127.0.0.2"]},
    )
    result = resolve("sip:trunk.carrier.test;transport=udp", zone)
    assert strs(result) == ["udp:127.0.0.2:5060", "udp:127.0.0.2:5070"]
    assert result.destinations[0].host == "a.carrier.test"


def test_names_compare_without_case_or_trailing_dot() -> None:
    zone = Zone(
        srv={f"_sip._udp.{HOST}": [Srv(10, 0, 5060, "SBC1.Carrier.Test.")]},
        a={"sbc1.carrier.test": ["127.0.0.2"]},
    )
    result = resolve(Query("Trunk.Carrier.TEST.", transport="udp"), zone)
    assert strs(result) == ["udp:127.0.0.2:5060"]
    assert result.destinations[0].host == "sbc1.carrier.test"


def test_srv_target_dot_means_not_available_and_no_fallback() -> None:
    zone = Zone(srv={f"_sip._udp.{HOST}": [Srv(0, 0, 0, ".")]}, a={HOST: ["127.0.0.9"]})
    result = resolve("sip:trunk.carrier.test;transport=udp", zone)
    assert result.destinations == ()
    assert result.error == (f'{HOST}: service not available (SRV target "." at _sip._udp.{HOST})')
    assert f"A {HOST}" not in asked(zone)


def test_srv_target_dot_beside_others_is_skipped() -> None:
    zone = Zone(
        srv={f"_sip._udp.{HOST}": [Srv(0, 0, 0, "."), Srv(10, 0, 5060, "sbc1.carrier.test")]},
        a={"sbc1.carrier.test": ["127.0.0.2"]},
    )
    assert strs(resolve("sip:trunk.carrier.test;transport=udp", zone)) == ["udp:127.0.0.2:5060"]


def test_dot_for_udp_does_not_hide_tcp() -> None:
    zone = Zone(
        srv={
            f"_sip._udp.{HOST}": [Srv(0, 0, 0, ".")],
            f"_sip._tcp.{HOST}": [Srv(10, 0, 5060, "sbc1.carrier.test")],
        },
        a={"sbc1.carrier.test": ["127.0.0.2"]},
    )
    assert strs(resolve("sip:trunk.carrier.test", zone)) == ["tcp:127.0.0.2:5060"]


def test_weighted_first_pick_in_proportion() -> None:
    records = [Srv(10, 60, 5060, "a"), Srv(10, 30, 5060, "b"), Srv(10, 10, 5060, "c")]
    rng = random.Random(3263)
    draws = 10_000
    first = Counter(srv_order(records, rng)[0].target for _ in range(draws))
    # RFC 2782 draws from 0..sum inclusive: 61/101, 30/101, 10/101.
    shares = {t: n / draws for t, n in first.items()}
    print(f"first picks over {draws}: {dict(first)}")
    assert shares["a"] == pytest.approx(61 / 101, abs=0.02)
    assert shares["b"] == pytest.approx(30 / 101, abs=0.02)
    assert shares["c"] == pytest.approx(10 / 101, abs=0.015)


def test_weighted_second_pick_follows_the_remaining_weights() -> None:
    records = [Srv(10, 60, 5060, "a"), Srv(10, 30, 5060, "b"), Srv(10, 10, 5060, "c")]
    rng = random.Random(2782)
    orders = Counter(tuple(r.target for r in srv_order(records, rng)) for _ in range(10_000))
    after_a = orders[("a", "b", "c")] / (orders[("a", "b", "c")] + orders[("a", "c", "b")])
    print(f"orders: {dict(orders)}")
    assert after_a == pytest.approx(31 / 41, abs=0.03)  # b: 0..30 of 0..40


def test_weight_zero_is_picked_rarely_among_weighted_records() -> None:
    records = [Srv(10, 0, 5060, "zero"), Srv(10, 50, 5060, "x"), Srv(10, 50, 5060, "y")]
    rng = random.Random(7)
    draws = 10_000
    first = Counter(srv_order(records, rng)[0].target for _ in range(draws))
    print(f"first picks: {dict(first)}")
    assert first["zero"] / draws == pytest.approx(1 / 101, abs=0.006)
    # ...and it is always in the order somewhere: nothing is dropped.
    assert all(len(srv_order(records, rng)) == 3 for _ in range(100))


def test_all_weight_zero_is_a_stable_order() -> None:
    records = [Srv(10, 0, 5060, "c"), Srv(10, 0, 5060, "a"), Srv(10, 0, 5060, "b")]
    orders = {tuple(r.target for r in srv_order(records, random.Random(s))) for s in range(50)}
    assert orders == {("a", "b", "c")}


def test_order_does_not_depend_on_the_order_dns_returned() -> None:
    records = [Srv(10, 60, 5060, "a"), Srv(10, 30, 5061, "b"), Srv(20, 10, 5060, "c")]
    for seed in range(20):
        one = srv_order(records, random.Random(seed))
        other = srv_order(list(reversed(records)), random.Random(seed))
        assert one == other


# --------------------------------------------------------------------------- TTL


def test_ttl_is_the_minimum_along_the_chain() -> None:
    zone = sbc_zone()
    zone.ttls = {
        Lookup(HOST, "NAPTR"): 300,
        Lookup(f"_sip._udp.{HOST}", "SRV"): 60,
        Lookup("sbc2.carrier.test", "A"): 20,
        Lookup("sbc2.carrier.test", "AAAA"): 45,
    }
    assert resolve("sip:trunk.carrier.test", zone).ttl == 20


def test_negative_answers_bound_the_ttl_when_known() -> None:
    zone = sbc_zone()
    zone.naptr.clear()
    zone.ttls = {Lookup(HOST, "NAPTR"): 5}
    assert resolve("sip:trunk.carrier.test", zone).ttl == 5
    zone.negative_ttl = None
    zone.ttls = {}
    assert resolve("sip:trunk.carrier.test", zone).ttl == 300


def test_explicit_port_ttl_is_the_address_ttl() -> None:
    zone = sbc_zone()
    zone.ttls = {Lookup(HOST, "A"): 7}
    zone.negative_ttl = 30
    assert resolve("sip:trunk.carrier.test:5080", zone).ttl == 7


# --------------------------------------------------------------------------- no destinations


def test_nxdomain_says_so_with_the_negative_ttl() -> None:
    zone = Zone(negative_ttl=15)
    result = resolve("sip:trunk.carrier.test", zone)
    assert result == Resolution((), 15, f"{HOST}: no such name (NXDOMAIN)")
    assert len(zone.asked) == 6  # NAPTR, 3 SRV, A, AAAA: nothing is assumed


def test_name_without_addresses_says_which() -> None:
    zone = Zone(
        srv={f"_sip._udp.{HOST}": [Srv(10, 0, 5060, "gone.carrier.test")]},
        a={HOST: ["127.0.0.9"]},  # not used: SRV records exist
    )
    result = resolve("sip:trunk.carrier.test;transport=udp", zone)
    assert result.error == f"{HOST}: no A/AAAA records for gone.carrier.test"


def test_resolution_before_all_answers_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"answers missing for NAPTR trunk\.carrier\.test"):
        resolution(Query(HOST), Answers(), random.Random())


# --------------------------------------------------------------------------- properties

targets = st.sampled_from(["a.test", "b.test", "c.test", "."])
srv_records = st.builds(
    Srv,
    priority=st.integers(0, 3),
    weight=st.integers(0, 100),
    port=st.sampled_from([5060, 5070]),
    target=targets,
)
address_pool = st.lists(st.sampled_from(["127.0.0.2", "127.0.0.3", "::2"]), unique=True)


@given(
    records=st.lists(srv_records, min_size=1, max_size=8),
    addrs=st.fixed_dictionaries({t: address_pool for t in ["a.test", "b.test", "c.test"]}),
    seed=st.integers(0, 2**32),
)
def test_srv_destinations_sorted_by_priority_each_once(
    records: list[Srv], addrs: dict[str, list[str]], seed: int
) -> None:
    zone = Zone(
        srv={f"_sip._udp.{HOST}": records},
        a={t: [a for a in v if ":" not in a] for t, v in addrs.items()},
        aaaa={t: [a for a in v if ":" in a] for t, v in addrs.items()},
    )
    result = resolve("sip:trunk.carrier.test;transport=udp", zone, random.Random(seed))
    priorities = [d.priority for d in result.destinations]
    assert priorities == sorted(priorities)
    keys = [d.key for d in result.destinations]
    assert len(keys) == len(set(keys))
    reachable = {("udp", a, r.port) for r in records if r.target != "." for a in addrs[r.target]}
    assert set(keys) == reachable
    assert (result.error is None) == bool(reachable)


@given(records=st.lists(srv_records, max_size=10), seed=st.integers(0, 2**32))
def test_srv_order_is_a_permutation_by_priority(records: list[Srv], seed: int) -> None:
    ordered = srv_order(records, random.Random(seed))
    assert sorted(ordered, key=repr) == sorted(records, key=repr)
    assert [r.priority for r in ordered] == sorted(r.priority for r in records)


@given(
    present=st.sets(st.sampled_from(["udp", "tcp", "tls"])),
    secure=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_every_chain_gives_each_key_once_sorted_within_a_transport(
    present: set[str], secure: bool, seed: int
) -> None:
    zone = sbc_zone()
    zone.naptr.clear()
    prefixes = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
    zone.srv = {
        f"{prefixes[t]}.{HOST}": [
            Srv(20, 5, 5070, "sbc2.carrier.test"),
            Srv(10, 5, 5060, "sbc1.carrier.test"),
        ]
        for t in present
    }
    result = resolve(Query(HOST, secure=secure), zone, random.Random(seed))
    keys = [d.key for d in result.destinations]
    assert len(keys) == len(set(keys))
    for transport in ("udp", "tcp", "tls"):
        ranks = [d.priority for d in result.destinations if d.transport == transport]
        assert ranks == sorted(ranks)
    used = {d.transport for d in result.destinations}
    if secure:
        assert used == {"tls"}
    elif present:
        assert used == present
    else:
        assert used == {"udp"}
