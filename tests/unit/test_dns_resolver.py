"""How trunkguard.dns.Resolver turns dnspython's outcomes into Resolutions, with dnspython's
network side replaced by scripted outcomes (the real server is in tests/e2e/test_dns_e2e.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import dns.asyncresolver
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from trunkguard.dns import DnsSettings, Query, Resolver

Outcome = Callable[[str, str], Any]


def answer(name: str, rdtype: str, *texts: str, ttl: int = 60) -> dns.resolver.Answer:
    query = dns.message.make_query(name, rdtype)
    response = dns.message.make_response(query)
    qname = dns.name.from_text(name)
    if texts:
        # Through find_rrset, so that the message's index knows the new rrset.
        rrset = response.find_rrset(
            response.answer, qname, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), create=True
        )
        for rdata in dns.rrset.from_text(qname, ttl, "IN", rdtype, *texts):
            rrset.add(rdata, ttl)
    return dns.resolver.Answer(qname, dns.rdatatype.from_text(rdtype), dns.rdataclass.IN, response)


def nxdomain(name: str, soa: tuple[int, int] | None = None) -> dns.resolver.NXDOMAIN:
    query = dns.message.make_query(name, "A")
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.NXDOMAIN)
    if soa is not None:
        ttl, minimum = soa
        record = f"ns.test. admin.test. 1 3600 600 86400 {minimum}"
        zone = dns.name.from_text("test")
        rrset = response.find_rrset(
            response.authority, zone, dns.rdataclass.IN, dns.rdatatype.SOA, create=True
        )
        for rdata in dns.rrset.from_text(zone, ttl, "IN", "SOA", record):
            rrset.add(rdata, ttl)
    qname = dns.name.from_text(name)
    return dns.resolver.NXDOMAIN(qnames=[qname], responses={qname: response})


def no_nameservers(name: str, *problems: object) -> dns.resolver.NoNameservers:
    request = dns.message.make_query(name, "A")
    errors = [("127.0.0.1", False, 53, problem, None) for problem in problems]
    return dns.resolver.NoNameservers(request=request, errors=errors)


class ScriptedDns:
    """Stands in for dnspython's resolver: ``outcome(name, rdtype)`` returns an Answer or
    an exception to raise; every call is recorded."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, str]] = []
        self.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", 53)]

    async def resolve(self, qname: dns.name.Name, rdtype: str, **kwargs: Any) -> Any:
        name = qname.to_text(omit_final_dot=True)
        self.calls.append((name, rdtype))
        await asyncio.sleep(0)
        result = self.outcome(name, rdtype)
        if isinstance(result, BaseException):
            raise result
        return result


def resolver_with(outcome: Outcome, **settings: Any) -> tuple[Resolver, ScriptedDns]:
    resolver = Resolver(DnsSettings(servers=(("127.0.0.1", 53),), **settings))
    scripted = ScriptedDns(outcome)
    resolver._dns = scripted  # type: ignore[assignment]
    return resolver, scripted


def zone(name: str, rdtype: str) -> Any:
    """trunk.test: SRV for UDP to sbc1 (127.0.0.2); nothing else exists."""
    if (name, rdtype) == ("_sip._udp.trunk.test", "SRV"):
        return answer(name, "SRV", "10 60 5060 sbc1.test.", ttl=40)
    if (name, rdtype) == ("sbc1.test", "A"):
        return answer(name, "A", "127.0.0.2", ttl=20)
    if name in ("trunk.test", "sbc1.test"):
        return answer(name, rdtype)  # the name exists, not with this type
    return nxdomain(name)


async def test_chain_of_answers_gives_destinations_and_minimum_ttl() -> None:
    resolver, scripted = resolver_with(zone)
    result = await resolver.resolve(Query("trunk.test"))
    assert [str(d) for d in result.destinations] == ["udp:127.0.0.2:5060"]
    assert result.ttl == 20 and result.error is None
    # Round 1 NAPTR; round 2 the three SRV names at once; round 3 the SRV target.
    assert scripted.calls[0] == ("trunk.test", "NAPTR")
    assert set(scripted.calls[1:4]) == {
        ("_sip._udp.trunk.test", "SRV"),
        ("_sip._tcp.trunk.test", "SRV"),
        ("_sips._tcp.trunk.test", "SRV"),
    }
    assert set(scripted.calls[4:]) == {("sbc1.test", "A"), ("sbc1.test", "AAAA")}


async def test_negative_ttl_from_the_soa_else_the_setting() -> None:
    def outcome(name: str, rdtype: str) -> Any:
        return nxdomain(name, soa=(300, 45) if rdtype == "A" else None)

    resolver, _ = resolver_with(outcome, negative_ttl=90.0)
    result = await resolver.resolve(Query("gone.test", port=5060))
    assert result.error == "gone.test: no such name (NXDOMAIN)"
    assert result.ttl == 45  # min(SOA TTL 300, MINIMUM 45) for A; 90 for AAAA
    assert not result.transient


async def test_timeout_is_a_transient_failure_naming_lookup_and_server() -> None:
    def outcome(name: str, rdtype: str) -> Any:
        return dns.resolver.LifetimeTimeout(timeout=4.0, errors=[])

    resolver, _ = resolver_with(outcome)
    result = await resolver.resolve(Query("trunk.test", transport="udp"))
    assert result.destinations == () and result.transient and result.ttl == 0
    assert result.error == (
        "trunk.test: DNS timeout after 4.0s via 127.0.0.1:53 (SRV _sip._udp.trunk.test)"
    )


async def test_servfail_fails_the_resolution_at_once() -> None:
    resolver, scripted = resolver_with(lambda n, t: no_nameservers(n, "SERVFAIL", "SERVFAIL"))
    result = await resolver.resolve(Query("trunk.test"))
    assert result.error == (
        "trunk.test: no nameserver answered NAPTR trunk.test (127.0.0.1:53 SERVFAIL)"
    )
    assert result.transient and len(scripted.calls) == 1


async def test_a_failure_in_a_round_fails_it_all_without_fallback() -> None:
    def outcome(name: str, rdtype: str) -> Any:
        if name == "_sip._tcp.trunk.test":
            return no_nameservers(name, "SERVFAIL")
        return zone(name, rdtype)

    resolver, scripted = resolver_with(outcome)
    result = await resolver.resolve(Query("trunk.test"))
    assert result.destinations == () and result.transient
    assert "SRV _sip._tcp.trunk.test" in (result.error or "")
    assert ("trunk.test", "A") not in scripted.calls


async def test_socket_errors_are_retried_until_an_answer() -> None:
    refusals = iter([ConnectionRefusedError(111, "refused")] * 3)

    def outcome(name: str, rdtype: str) -> Any:
        refused = next(refusals, None)
        if refused is not None:
            return no_nameservers(name, refused)
        return answer(name, rdtype, "127.0.0.7", ttl=30) if rdtype == "A" else answer(name, rdtype)

    resolver, scripted = resolver_with(outcome, timeout=2.0, lifetime=4.0)
    result = await resolver.resolve(Query("sbc.test", port=5060, transport="udp"))
    assert [str(d) for d in result.destinations] == ["udp:127.0.0.7:5060"]
    assert len(scripted.calls) == 5  # A and AAAA, three of the tries refused


async def test_socket_errors_until_the_lifetime_are_a_timeout() -> None:
    refused = ConnectionRefusedError(111, "refused")
    resolver, scripted = resolver_with(
        lambda n, t: no_nameservers(n, refused), timeout=0.3, lifetime=0.3
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    result = await resolver.resolve(Query("sbc.test", port=5060))
    took = loop.time() - began
    print(f"refused until the lifetime: {took:.2f}s, {len(scripted.calls)} tries")
    assert result.error is not None
    assert "DNS timeout after 0.3s via 127.0.0.1:53" in result.error
    assert "connection refused" in result.error
    assert len(scripted.calls) >= 4  # A and AAAA, each asked again
    assert 0.3 <= took < 10.0


async def test_other_dns_errors_are_failures_not_exceptions() -> None:
    resolver, _ = resolver_with(lambda n, t: dns.resolver.YXDOMAIN())
    result = await resolver.resolve(Query("trunk.test"))
    assert result.transient and "NAPTR trunk.test" in (result.error or "")


async def test_without_servers_and_without_resolv_conf_every_resolution_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(self: object, path: str) -> None:
        raise dns.resolver.NoResolverConfiguration("no /etc/resolv.conf")

    monkeypatch.setattr(dns.asyncresolver.Resolver, "read_resolv_conf", missing)
    result = await Resolver(DnsSettings()).resolve(Query("trunk.test"))
    assert result.transient
    assert result.error is not None and result.error.startswith(
        "trunk.test: no nameservers configured"
    )


def test_given_servers_are_the_only_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(self: object, path: str) -> None:
        raise AssertionError("resolv.conf read although servers were given")

    monkeypatch.setattr(dns.asyncresolver.Resolver, "read_resolv_conf", forbidden)
    resolver = Resolver(DnsSettings(servers=(("127.0.0.1", 5353), ("::1", 53))))
    assert resolver.servers == "127.0.0.1:5353, [::1]:53"


def test_system_configuration_is_used_without_servers() -> None:
    resolver = Resolver(DnsSettings())
    assert resolver.servers  # whatever /etc/resolv.conf names, or says there are none
