"""DNS settings for carrier resolution: which servers, how long to wait, how often to refresh."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from ._rfc3263 import ADDRESS_TYPES, TRANSPORTS, Options


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """How carrier names are resolved and kept fresh. Times are in seconds.

    ``servers``: nameservers as ``(ip, port)``; empty means the system's resolver
    configuration (/etc/resolv.conf), which is not read at all when servers are given.
    ``timeout``: one query to one server; ``lifetime``: one lookup in all, retries and
    servers included. A resolution is at most three rounds of lookups (NAPTR, SRV, A/AAAA),
    each round's lookups asked at once.
    ``min_ttl``/``max_ttl`` clamp the refresh interval taken from the records' TTL.
    ``retry_min``/``retry_max``: after a failure or an answer with no destinations, the next
    try comes after ``retry_min``, doubling up to ``retry_max``.
    ``negative_ttl``: how long "no such record" holds when the answer carries no SOA.
    ``serve_stale``: while DNS cannot be reached (timeout, SERVFAIL, no server answering),
    the last destinations are kept for this long after their TTL ran out (RFC 8767); 0 drops
    them at the first failure. An answer saying there are none always drops them.
    ``initial_timeout``: how long the watcher's start() waits for the first resolutions.
    ``transports``: the transports the router can use, in preference order;
    ``address_types``: which address records to ask for, in order (IPv4 first by default).
    """

    servers: tuple[tuple[str, int], ...] = ()
    timeout: float = 2.0
    lifetime: float = 4.0
    min_ttl: float = 1.0
    max_ttl: float = 3600.0
    retry_min: float = 1.0
    retry_max: float = 60.0
    negative_ttl: float = 30.0
    serve_stale: float = 86400.0
    initial_timeout: float = 5.0
    transports: tuple[str, ...] = TRANSPORTS
    address_types: tuple[str, ...] = ADDRESS_TYPES

    def __post_init__(self) -> None:
        for ip, port in self.servers:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"dns servers: {ip!r} is not an IP address") from None
            if not 0 < port < 65536:
                raise ValueError(f"dns servers: bad port {port} for {ip}")
        for name in ("timeout", "lifetime", "min_ttl", "retry_min", "initial_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"dns {name}: must be a positive number of seconds, not {value}")
        for name in ("negative_ttl", "serve_stale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"dns {name}: must not be negative")
        if self.max_ttl < self.min_ttl:
            raise ValueError(f"dns max_ttl ({self.max_ttl}) is below min_ttl ({self.min_ttl})")
        if self.retry_max < self.retry_min:
            raise ValueError(
                f"dns retry_max ({self.retry_max}) is below retry_min ({self.retry_min})"
            )
        if self.lifetime < self.timeout:
            raise ValueError(f"dns lifetime ({self.lifetime}) is below timeout ({self.timeout})")
        Options(self.transports, self.address_types)  # raises on an unknown name

    @property
    def options(self) -> Options:
        return Options(self.transports, self.address_types)
