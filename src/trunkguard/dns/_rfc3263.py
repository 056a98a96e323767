"""Locating a carrier's SIP servers (RFC 3263 §4, RFC 2782), as pure functions of DNS answers.

No I/O here. The resolver asks :func:`next_lookups` which DNS questions the chain needs next,
asks them, stores the answers in :class:`Answers`, and repeats until nothing is missing; then
:func:`resolution` turns the answers into the ordered list of destinations.

The rules, for a query made from a SIP URI (host, explicit port, ``transport`` parameter,
``sips`` scheme):

* **IP literal**: the address itself; port from the URI, else 5060 (5061 for TLS); transport
  from the parameter, else UDP (TLS for ``sips``). No DNS at all (§4.1, §4.2).
* **Explicit port**: A/AAAA of the host, on that port; transport from the parameter, else UDP
  (TLS for ``sips``). No NAPTR, no SRV (§4.2).
* **Explicit transport, no port**: SRV for that transport only (``_sip._udp``, ``_sip._tcp``,
  ``_sips._tcp`` for TLS; ``sips`` with ``transport=tcp`` is TLS), then, if that name has no
  SRV records at all, A/AAAA of the host on the transport's default port.
* **Nothing explicit**: NAPTR of the host. Usable records are those with flag ``s`` and service
  ``SIP+D2U``, ``SIP+D2T`` or ``SIPS+D2T`` (only ``SIPS+D2T`` for ``sips``), restricted to
  the transports this client supports, in ``order`` then ``preference``. Every usable record
  is followed, not only the first: each SRV name it points to contributes its destinations,
  in NAPTR order, so a carrier that publishes UDP and TCP gives the router both to fail over
  between. If none of those SRV names has records, A/AAAA of the host on the default port of
  the most preferred NAPTR transport (§4.2).
* **No usable NAPTR**: SRV queries for every supported transport, ``_sips._tcp`` only for
  ``sips``, otherwise ``_sip._udp``, ``_sip._tcp``, ``_sips._tcp`` in that order. §4.1 lets a
  client use any transport whose SRV query succeeded; this module uses all of them, in that
  preference order (UDP first), for the same reason as above. If none has records: A/AAAA of
  the host on the default port, UDP (TLS for ``sips``).

Within one SRV name (RFC 2782): lower priority first; within a priority, the weighted random
order of RFC 2782 (weight-0 records first in the running sum, so they are picked rarely while
others remain and in turn once only they remain), drawn from an injectable
:class:`random.Random`. A target of ``"."`` means the service is decidedly not available: it
gives no destination, and a name whose only record is ``"."`` has records (no A/AAAA fallback).
Each target gives one destination per address, IPv4 before IPv6 unless configured otherwise.
A destination ``(transport, addr, port)`` appears once, where it is first reached.

The TTL of a resolution is the smallest TTL of every answer it used, negative ones included
(a NAPTR that does not exist yet may appear once its negative TTL runs out).
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from ..sip import ParseError, parse_uri

TRANSPORTS = ("udp", "tcp", "tls")
ADDRESS_TYPES = ("A", "AAAA")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

# RFC 3263 §4.1: NAPTR service -> transport, and transport -> SRV label.
_NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
_SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


@dataclass(frozen=True, slots=True)
class Destination:
    """One place to send a carrier's requests to: health-tracked on its own by the router."""

    host: str  # the SRV target, or the URI host for an A/AAAA fallback or an IP literal
    addr: str  # IP address text
    port: int
    transport: str  # "udp" | "tcp" | "tls"
    priority: int = 0
    weight: int = 0

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.transport, self.addr, self.port)

    def __str__(self) -> str:
        addr = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{self.transport}:{addr}:{self.port}"


@dataclass(frozen=True, slots=True)
class Query:
    """What a carrier URI asks to resolve: host, explicit port, transport parameter, scheme."""

    host: str
    port: int | None = None
    transport: str | None = None  # the URI's transport parameter, lower case
    secure: bool = False  # sips:

    def __post_init__(self) -> None:
        if self.transport is not None and self.transport not in TRANSPORTS:
            raise ValueError(f"{self.host}: unsupported transport {self.transport!r}")
        if self.secure and self.transport == "udp":
            raise ValueError(f"{self.host}: a sips URI cannot use transport=udp")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"{self.host}: bad port {self.port}")
        if not self.host:
            raise ValueError("empty host")

    @classmethod
    def from_uri(cls, text: str) -> Query:
        """The query for a ``sip:``/``sips:`` URI; ValueError saying why for anything else."""
        try:
            uri = parse_uri(text)
        except ParseError as exc:
            raise ValueError(str(exc)) from None
        if not uri.is_sip:
            raise ValueError(f"{text!r}: not a sip or sips URI")
        transport = uri.params.get("transport")
        return cls(
            host=uri.host[1:-1] if uri.host.startswith("[") else uri.host,
            port=uri.port,
            transport=transport.lower() if transport else None,
            secure=uri.scheme == "sips",
        )

    @property
    def effective_transport(self) -> str | None:
        """The explicit transport as used: TCP under ``sips`` is TLS (RFC 3263 §4.1)."""
        if self.transport is None:
            return None
        return "tls" if self.secure else self.transport

    def __str__(self) -> str:
        scheme = "sips" if self.secure else "sip"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        param = f";transport={self.transport}" if self.transport else ""
        return f"{scheme}:{host}{port}{param}"


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a query leads: the destinations in order, how long that holds, and what failed.

    ``error`` is None when DNS answered and the chain led to destinations. It is set, with
    no destinations, when DNS answered that there are none (NXDOMAIN, no records, SRV
    target "."), and then ``ttl`` is the negative-caching TTL; and when no answer could be
    had (timeout, SERVFAIL, unreachable nameserver), ``transient`` True and ``ttl`` 0.
    """

    destinations: tuple[Destination, ...]
    ttl: float
    error: str | None = None
    transient: bool = False

    @property
    def keys(self) -> frozenset[tuple[str, str, int]]:
        return frozenset(d.key for d in self.destinations)


class Lookup(NamedTuple):
    """One DNS question: a lower-case name without the trailing dot, and a record type."""

    name: str
    rdtype: str  # "NAPTR" | "SRV" | "A" | "AAAA"

    def __str__(self) -> str:
        return f"{self.rdtype} {self.name}"


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str
    regexp: str = ""


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Records(Generic[R]):
    """The answer to one Lookup. No records: the name or the type does not exist.

    ``ttl``: the records' TTL; for no records, the negative-caching TTL (RFC 2308), or None
    when unknown (then it does not bound the resolution's TTL).
    """

    records: tuple[R, ...] = ()
    ttl: float | None = None
    nxdomain: bool = False


@dataclass(slots=True)
class Answers:
    """The answers gathered so far for one resolution. Keys are normalized names."""

    naptr: dict[str, Records[Naptr]] = field(default_factory=dict)
    srv: dict[str, Records[Srv]] = field(default_factory=dict)
    addresses: dict[Lookup, Records[str]] = field(default_factory=dict)  # A and AAAA

    def add_naptr(self, name: str, answer: Records[Naptr]) -> None:
        self.naptr[normalize(name)] = answer

    def add_srv(self, name: str, answer: Records[Srv]) -> None:
        self.srv[normalize(name)] = answer

    def add_addresses(self, name: str, rdtype: str, answer: Records[str]) -> None:
        if rdtype not in ADDRESS_TYPES:
            raise ValueError(f"{rdtype} is not an address type")
        self.addresses[Lookup(normalize(name), rdtype)] = answer


def normalize(name: str) -> str:
    """DNS names compare case-insensitively, with or without the root's trailing dot."""
    return name.rstrip(".").lower() if name != "." else "."


def default_port(transport: str) -> int:
    return DEFAULT_PORTS[transport]


def srv_name(transport: str, host: str) -> str:
    return f"{_SRV_PREFIX[transport]}.{normalize(host)}"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def srv_order(records: Iterable[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782's order: ascending priority; within one, a weighted random permutation.

    Within a priority the unordered records are arranged weight-0 first (then by target and
    port, so that a seeded ``rng`` gives the same order whatever order DNS returned), a
    number is drawn uniformly from 0..sum of weights inclusive, and the first record whose
    running sum reaches it is next; repeated on the rest. A weight-0 record is picked only
    on a draw of 0 while weighted records remain.
    """
    by_priority: dict[int, list[Srv]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    out: list[Srv] = []
    for priority in sorted(by_priority):
        left = sorted(by_priority[priority], key=lambda r: (r.weight != 0, r.target, r.port))
        while left:
            draw = rng.randint(0, sum(r.weight for r in left))
            running = 0
            for index, record in enumerate(left):
                running += record.weight
                if running >= draw:
                    out.append(left.pop(index))
                    break
    return out


@dataclass(frozen=True, slots=True)
class Options:
    """What this client supports: transports in preference order, address families in order."""

    transports: tuple[str, ...] = TRANSPORTS
    address_types: tuple[str, ...] = ADDRESS_TYPES

    def __post_init__(self) -> None:
        if not self.transports or any(t not in TRANSPORTS for t in self.transports):
            raise ValueError(f"transports must be some of {TRANSPORTS}, not {self.transports}")
        if not self.address_types or any(a not in ADDRESS_TYPES for a in self.address_types):
            raise ValueError(f"address types must be some of {ADDRESS_TYPES}")


DEFAULT_OPTIONS = Options()


class _Walk:
    """One pass over the chain with the answers known so far.

    Whatever it needs and does not have goes to ``missing``; whatever it reaches goes to
    ``destinations``. With nothing missing, the destinations are the result.
    """

    def __init__(self, answers: Answers, options: Options, rng: random.Random | None) -> None:
        self.answers = answers
        self.options = options
        self.rng = rng
        self.missing: dict[Lookup, None] = {}
        self.destinations: dict[tuple[str, str, int], Destination] = {}
        self.ttl = math.inf
        self.unsupported: str | None = None
        self.unavailable: list[str] = []  # SRV names whose target is "."
        self.no_address: list[str] = []  # names whose A/AAAA lookups gave nothing
        self.nxdomain: set[str] = set()  # names an address lookup found not to exist

    def _used(self, answer: Records[R]) -> Records[R]:
        if answer.ttl is not None:
            self.ttl = min(self.ttl, answer.ttl)
        return answer

    def naptr(self, name: str) -> Records[Naptr] | None:
        answer = self.answers.naptr.get(name)
        if answer is None:
            self.missing[Lookup(name, "NAPTR")] = None
            return None
        return self._used(answer)

    def srv(self, name: str) -> Records[Srv] | None:
        answer = self.answers.srv.get(name)
        if answer is None:
            self.missing[Lookup(name, "SRV")] = None
            return None
        return self._used(answer)

    def addresses(self, host: str, port: int, transport: str, priority: int, weight: int) -> None:
        name = normalize(host)
        found, complete = False, True
        for rdtype in self.options.address_types:
            lookup = Lookup(name, rdtype)
            answer = self.answers.addresses.get(lookup)
            if answer is None:
                self.missing[lookup] = None
                complete = False
                continue
            self._used(answer)
            if answer.nxdomain:
                self.nxdomain.add(name)
            for addr in answer.records:
                found = True
                destination = Destination(name, addr, port, transport, priority, weight)
                self.destinations.setdefault(destination.key, destination)
        if complete and not found:
            self.no_address.append(name)

    def expand(self, name: str, records: Records[Srv], transport: str) -> None:
        """Destinations of one SRV name that has records."""
        ordered = (
            srv_order(records.records, self.rng)
            if self.rng is not None
            else sorted(records.records, key=lambda r: r.priority)
        )
        for record in ordered:
            if normalize(record.target) == ".":
                self.unavailable.append(name)
                continue
            self.addresses(record.target, record.port, transport, record.priority, record.weight)

    def srv_names(self, host: str, names: Sequence[tuple[str, str]], fallback: str) -> None:
        """Follow SRV names ``(transport, name)``; with none having records, A/AAAA of host."""
        answered = [(t, n, self.srv(n)) for t, n in names]
        known = [(t, n, a) for t, n, a in answered if a is not None]
        if len(known) < len(answered):
            return
        with_records = [(t, n, a) for t, n, a in known if a.records]
        for transport, name, answer in with_records:
            self.expand(name, answer, transport)
        if not with_records:
            self.addresses(host, default_port(fallback), fallback, 0, 0)


def _naptr_targets(
    records: Sequence[Naptr], query: Query, options: Options
) -> list[tuple[str, str]]:
    """Usable NAPTR records as ``(transport, SRV name)``, in order then preference."""
    out = []
    for record in sorted(records, key=lambda r: (r.order, r.preference)):
        transport = _NAPTR_SERVICES.get(record.service.upper())
        if transport is None or transport not in options.transports:
            continue
        if query.secure and transport != "tls":
            continue
        # RFC 3263 §4.1: SIP uses the replacement of an "s" record; the regexp stays empty.
        if record.flags.lower() != "s" or record.regexp or normalize(record.replacement) == ".":
            continue
        out.append((transport, normalize(record.replacement)))
    return out


def _walk(query: Query, answers: Answers, options: Options, rng: random.Random | None) -> _Walk:
    walk = _Walk(answers, options, rng)
    host = normalize(query.host)
    explicit = query.effective_transport
    # §4.1: without NAPTR and SRV, UDP for sip and TLS for sips.
    default = "tls" if query.secure else ("udp" if "udp" in options.transports else "")
    default = default or options.transports[0]
    if (explicit or default) not in options.transports:
        walk.unsupported = f"{query}: transport {explicit or default} is not enabled"
    elif is_ip(query.host):
        addr = str(ipaddress.ip_address(query.host))
        port = query.port if query.port is not None else default_port(explicit or default)
        destination = Destination(addr, addr, port, explicit or default)
        walk.destinations[destination.key] = destination
    elif query.port is not None:
        walk.addresses(host, query.port, explicit or default, 0, 0)
    elif explicit is not None:
        walk.srv_names(host, [(explicit, srv_name(explicit, host))], explicit)
    else:
        naptr = walk.naptr(host)
        if naptr is None:
            return walk
        targets = _naptr_targets(naptr.records, query, options)
        if targets:
            walk.srv_names(host, targets, targets[0][0])
        else:
            wanted = ("tls",) if query.secure else options.transports
            names = [(t, srv_name(t, host)) for t in TRANSPORTS if t in wanted]
            walk.srv_names(host, names, default)
    return walk


def next_lookups(
    query: Query, answers: Answers, options: Options = DEFAULT_OPTIONS
) -> tuple[Lookup, ...]:
    """The DNS questions the chain needs next (all of them can be asked at once); empty
    once ``answers`` holds everything :func:`resolution` needs."""
    return tuple(_walk(query, answers, options, None).missing)


def resolution(
    query: Query,
    answers: Answers,
    rng: random.Random,
    options: Options = DEFAULT_OPTIONS,
) -> Resolution:
    """The ordered destinations for ``query``; ValueError if :func:`next_lookups` is not empty.

    With no destinations, ``error`` says why, from DNS's answers (not a failure to get them).
    """
    walk = _walk(query, answers, options, rng)
    if walk.missing:
        raise ValueError(f"{query}: answers missing for {', '.join(map(str, walk.missing))}")
    destinations = tuple(walk.destinations.values())
    if destinations:
        return Resolution(destinations, walk.ttl)
    ttl = walk.ttl if walk.ttl != math.inf else 0.0
    return Resolution((), ttl, _why_empty(query, walk))


def _why_empty(query: Query, walk: _Walk) -> str:
    if walk.unsupported is not None:
        return walk.unsupported
    host = normalize(query.host)
    if walk.unavailable and not walk.no_address:
        names = ", ".join(dict.fromkeys(walk.unavailable))
        return f'{host}: service not available (SRV target "." at {names})'
    if walk.no_address == [host] and host in walk.nxdomain:
        return f"{host}: no such name (NXDOMAIN)"
    types = "/".join(walk.options.address_types)
    return f"{host}: no {types} records for {', '.join(dict.fromkeys(walk.no_address))}"


def describe(destinations: Sequence[Destination]) -> str:
    """``udp:127.0.0.2:5060 p10 w60, ...`` for logs."""
    return ", ".join(f"{d} p{d.priority} w{d.weight}" for d in destinations)
