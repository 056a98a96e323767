"""The asyncio side of RFC 3263: ask DNS what ``_rfc3263`` needs, with dnspython.

A resolution is at most three rounds (NAPTR, then SRV, then A/AAAA); the lookups of one
round are asked at once. Each lookup ends in one of three ways:

* records;
* an answer that there are none (NXDOMAIN, or the name exists without that type), with the
  negative-caching TTL of RFC 2308 (the SOA's, else ``negative_ttl``): the chain goes on
  to its next step (SRV, then A/AAAA);
* a failure to get an answer (timeout, SERVFAIL, REFUSED, no server reachable). The whole
  resolution then fails: falling back past a step whose answer is unknown could send calls
  to the wrong place (the A record of a domain whose SRV records point elsewhere).

A server that does not answer is asked again by dnspython (``timeout`` per try, until
``lifetime``). A lookup whose every server failed with a socket error (network unreachable,
connection refused) is asked again after a short pause until the lifetime runs out, where
dnspython alone would give up at once. :meth:`Resolver.resolve` never raises for a DNS
failure: it returns a Resolution with the reason.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.NAPTR
import dns.rdtypes.IN.SRV
import dns.resolver
import dns.rrset

from ._rfc3263 import (
    Answers,
    Lookup,
    Naptr,
    Query,
    Records,
    Resolution,
    Srv,
    next_lookups,
    resolution,
)
from ._settings import DnsSettings

# NAPTR, SRV, A/AAAA; a chain longer than this is a bug in the walk, not a deep zone.
_MAX_ROUNDS = 6
_REFUSED_PAUSE_MIN = 0.05
_REFUSED_PAUSE_MAX = 0.5


@dataclass(frozen=True, slots=True)
class _Failure:
    """A lookup that got no answer: which one and why."""

    reason: str

    def __str__(self) -> str:
        return self.reason


class Resolver:
    """Resolves carrier queries against the configured nameservers (or the system's)."""

    def __init__(
        self, settings: DnsSettings | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.settings = settings if settings is not None else DnsSettings()
        self.rng = rng if rng is not None else random.Random()
        self._config_error: str | None = None
        self._dns = dns.asyncresolver.Resolver(configure=False)
        if self.settings.servers:
            self._dns.nameservers = [
                dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.settings.servers
            ]
        else:
            try:
                self._dns.read_resolv_conf("/etc/resolv.conf")
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                self._config_error = f"no nameservers configured ({exc})"
        self._dns.timeout = self.settings.timeout
        self._dns.lifetime = self.settings.lifetime
        self._dns.cache = None
        self._dns.retry_servfail = False

    @property
    def servers(self) -> str:
        """The nameservers as ``ip:port, ...`` for messages."""
        out = []
        for server in self._dns.nameservers:
            if isinstance(server, dns.nameserver.AddressAndPortNameserver):
                address, port = server.address, server.port
                out.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
            else:
                out.append(str(server))
        return ", ".join(out) or "no nameservers"

    async def resolve(self, query: Query) -> Resolution:
        """The destinations of ``query``, or why there are none. Never raises for DNS."""
        if self._config_error is not None:
            return Resolution((), 0.0, f"{query.host}: {self._config_error}", transient=True)
        answers = Answers()
        options = self.settings.options
        for _ in range(_MAX_ROUNDS):
            needed = next_lookups(query, answers, options)
            if not needed:
                return resolution(query, answers, self.rng, options)
            results = await asyncio.gather(*(self._lookup(lookup) for lookup in needed))
            for lookup, result in zip(needed, results, strict=True):
                if isinstance(result, _Failure):
                    return Resolution((), 0.0, f"{query.host}: {result}", transient=True)
                _store(answers, lookup, result)
        return Resolution((), 0.0, f"{query.host}: DNS chain too long", transient=True)

    async def _lookup(self, lookup: Lookup) -> _Failure | Records[Naptr | Srv | str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.lifetime
        pause = _REFUSED_PAUSE_MIN
        qname = dns.name.from_text(lookup.name)
        while True:
            try:
                answer = await self._dns.resolve(
                    qname,
                    lookup.rdtype,
                    search=False,
                    raise_on_no_answer=False,
                    lifetime=max(0.001, deadline - loop.time()),
                )
            except dns.resolver.NXDOMAIN as exc:
                responses = list(exc.kwargs.get("responses", {}).values())
                last = responses[-1] if responses else None
                return Records((), self._negative_ttl(last), nxdomain=True)
            except dns.resolver.LifetimeTimeout:
                return self._timeout(lookup)
            except dns.resolver.NoNameservers as exc:
                errors = exc.kwargs.get("errors", [])
                refused = bool(errors) and all(isinstance(e[3], OSError) for e in errors)
                if refused:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return self._timeout(lookup, "connection refused")
                    await asyncio.sleep(min(pause, remaining))
                    pause = min(pause * 2, _REFUSED_PAUSE_MAX)
                    continue
                return _Failure(f"no nameserver answered {lookup} ({_errors_text(errors)})")
            except dns.exception.DNSException as exc:
                return _Failure(f"{lookup}: {exc}")
            if answer.rrset is None:
                return Records((), self._negative_ttl(answer.response))
            ttl = float(answer.chaining_result.minimum_ttl)
            return Records(_records(answer.rrset), ttl)

    def _timeout(self, lookup: Lookup, why: str = "") -> _Failure:
        detail = f", {why}" if why else ""
        return _Failure(
            f"DNS timeout after {self.settings.lifetime}s via {self.servers} ({lookup}{detail})"
        )

    def _negative_ttl(self, response: dns.message.Message | None) -> float:
        """RFC 2308 §5: the smaller of the SOA's TTL and its MINIMUM field."""
        if response is not None:
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                    soa = rrset[0]
                    assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
                    return float(min(rrset.ttl, soa.minimum))
        return self.settings.negative_ttl


def _records(rrset: dns.rrset.RRset) -> tuple[Naptr | Srv | str, ...]:
    out: list[Naptr | Srv | str] = []
    for rdata in rrset:
        if isinstance(rdata, dns.rdtypes.IN.NAPTR.NAPTR):
            out.append(
                Naptr(
                    order=rdata.order,
                    preference=rdata.preference,
                    flags=rdata.flags.decode(errors="replace"),
                    service=rdata.service.decode(errors="replace"),
                    replacement=rdata.replacement.to_text(),
                    regexp=rdata.regexp.decode(errors="replace"),
                )
            )
        elif isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
            out.append(Srv(rdata.priority, rdata.weight, rdata.port, rdata.target.to_text()))
        elif isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
            out.append(str(rdata.address))
    return tuple(out)


def _store(answers: Answers, lookup: Lookup, result: Records[Naptr | Srv | str]) -> None:
    if lookup.rdtype == "NAPTR":
        naptr = tuple(r for r in result.records if isinstance(r, Naptr))
        answers.add_naptr(lookup.name, Records(naptr, result.ttl, result.nxdomain))
    elif lookup.rdtype == "SRV":
        srv = tuple(r for r in result.records if isinstance(r, Srv))
        answers.add_srv(lookup.name, Records(srv, result.ttl, result.nxdomain))
    else:
        addresses = tuple(r for r in result.records if isinstance(r, str))
        answers.add_addresses(
            lookup.name, lookup.rdtype, Records(addresses, result.ttl, result.nxdomain)
        )


def _errors_text(errors: Sequence[tuple[object, ...]]) -> str:
    """One stable phrase per server: ``127.0.0.1:53 SERVFAIL``; repeated tries merged."""
    phrases: dict[str, None] = {}
    for error in errors:
        server, _tcp, port, problem = error[0], error[1], error[2], error[3]
        if isinstance(problem, ConnectionRefusedError):
            what = "connection refused"
        elif isinstance(problem, BaseException):
            what = type(problem).__name__
        else:
            what = str(problem)
        phrases[f"{server}:{port} {what}"] = None
    return "; ".join(phrases) or "no nameservers"
