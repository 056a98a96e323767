"""Carrier host names resolved per RFC 3263 (NAPTR, SRV, A/AAAA), in the background.

``_rfc3263`` holds the rules as pure functions of DNS answers; ``_resolver`` asks a DNS
server for them with dnspython; ``_watcher`` keeps each carrier's destinations fresh at its
TTL on the running loop and reports changes. Nothing here runs on the call path.
"""

from ._refresh import Refresh, Step, refresh_step, retry_delay
from ._resolver import Resolver
from ._rfc3263 import (
    ADDRESS_TYPES,
    DEFAULT_PORTS,
    TRANSPORTS,
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
from ._settings import DnsSettings
from ._watcher import DnsWatcher, OnChange

__all__ = [
    "ADDRESS_TYPES",
    "DEFAULT_PORTS",
    "TRANSPORTS",
    "Answers",
    "Destination",
    "DnsSettings",
    "DnsWatcher",
    "Lookup",
    "Naptr",
    "OnChange",
    "Options",
    "Query",
    "Records",
    "Refresh",
    "Resolution",
    "Resolver",
    "Srv",
    "Step",
    "describe",
    "next_lookups",
    "refresh_step",
    "resolution",
    "retry_delay",
    "srv_order",
]
