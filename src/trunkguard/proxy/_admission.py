"""The edge: who may send us what, and where the router must never send.

A verdict, not a side effect: every function here answers a question about a
request and its source, and the core acts on the answer. The rules:

- a source is one of the router's targets, recognised by transport, address
  **and** port (a carrier, or a server of a pool), or a host in ``allow``;
  anything else is unknown and gets nothing (``reject: drop``) or a bare
  ``403`` (``reject: 403``), and is counted;
- Max-Forwards is enforced on every request, ACK included;
- a request that carries our own branch in a Via at our address has looped;
- the router never relays to one of its own addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ..sip import Request, Uri
from ._entries import BRANCH_PREFIX
from ._types import Addr, Flow, ProxySettings, Target

_WILDCARDS = ("0.0.0.0", "::", "[::]")
_CACHE_MAX = 65_536


def _host(text: str) -> str:
    return text.strip("[]").lower()


class Admission:
    """The edge rules for one configuration (rebuilt on reload)."""

    def __init__(self, settings: ProxySettings, targets: Iterable[Target]) -> None:
        self.settings = settings
        # One peer per (transport, address): responses and requests from a target
        # arrive on its flow, whichever of our sockets heard them.
        self.peers: dict[tuple[str, Addr], Target] = {}
        for target in targets:
            self.peers.setdefault((target.flow.transport, target.flow.addr), target)
        self._allowed: dict[str, bool] = {}
        self._own: list[Addr] = []
        self.set_own([settings.advertise])

    def set_own(self, addrs: Sequence[Addr]) -> None:
        """The router's own addresses: every bound listener, and the advertised one."""
        self._own = [(_host(h), p) for h, p in {*addrs, self.settings.advertise}]

    # -- sources ------------------------------------------------------------------------
    def peer(self, source: Flow) -> Target | None:
        """The target (carrier or pool member) that ``source`` is, by transport, address, port."""
        return self.peers.get((source.transport, source.addr))

    def allowed(self, source: Flow) -> bool:
        """May ``source`` send us anything at all? A target, or a host in ``allow``."""
        if (source.transport, source.addr) in self.peers:
            return True
        host = source.addr[0]
        cached = self._allowed.get(host)
        if cached is None:
            try:
                ip = ipaddress.ip_address(_host(host))
            except ValueError:
                cached = False
            else:
                cached = any(ip in net for net in self.settings.allow)
            if len(self._allowed) < _CACHE_MAX:
                self._allowed[host] = cached
        return cached

    # -- requests -----------------------------------------------------------------------
    @staticmethod
    def next_max_forwards(request: Request) -> int | None:
        """Max-Forwards for the forwarded copy, or None when the request may not go on."""
        mf = request.max_forwards
        if mf is None:
            return 69
        return None if mf <= 0 else mf - 1

    def looped(self, request: Request, via_host: str) -> bool:
        """Does a Via of ours (our branch prefix at our address) show it has been here?"""
        for via in request.vias:
            branch = via.branch or ""
            if branch.startswith(BRANCH_PREFIX) and via.sent_by == via_host:
                return True
        return False

    def is_us(self, uri: Uri) -> bool:
        """Does ``uri`` name this router (a Route or Request-URI aimed at us)?"""
        return self.is_own((uri.host, uri.port or 5060))

    def is_own(self, addr: Addr) -> bool:
        """Is ``addr`` one of the router's own addresses? Then it is never a next hop."""
        host, port = _host(addr[0]), addr[1]
        for own_host, own_port in self._own:
            if port != own_port:
                continue
            if host == own_host:
                return True
            if own_host in _WILDCARDS:
                try:
                    ip = ipaddress.ip_address(host)
                except ValueError:
                    continue
                if ip.is_loopback or ip.is_unspecified:
                    return True
        return False
