"""The caller's side of a dialog, and the requests sent inside it (RFC 3261 §12).

A 2xx to our INVITE sets the dialog up (§12.1.2): the remote target is its
Contact, the route set its Record-Route in reverse order, the remote tag its
To tag. The ACK for that 2xx and the BYE go where the route set says
(§12.2.1.1): with a loose router (``lr``) first, the Request-URI is the remote
target and the Route headers are the route set; with a strict router first,
the Request-URI is that router and the remote target goes last in Route.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..sip import ParseError, Response, Uri, make_request, parse_name_addr, parse_uri

Addr = tuple[str, int]


def hop_of(uri: Uri) -> Addr:
    """Where a request for ``uri`` is sent (no DNS: hosts are literal addresses in the lab)."""
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    return host, uri.port if uri.port is not None else 5060


@dataclass(frozen=True, slots=True)
class Dialog:
    call_id: str
    local: str  # our From value, with our tag
    remote: str  # the To value of the 2xx, with the callee's tag
    remote_tag: str | None
    remote_target: str
    route_set: tuple[str, ...]

    @classmethod
    def from_2xx(cls, response: Response, *, local: str, fallback_target: str) -> Dialog:
        """The dialog a 2xx sets up; a 2xx without a usable Contact falls back to our R-URI."""
        try:
            contacts = response.contacts
        except ParseError:
            contacts = []
        target = str(contacts[0].uri) if contacts else fallback_target
        routes = tuple(reversed(response.values("record-route")))
        dialog = cls(
            call_id=response.call_id,
            local=local,
            remote=response.get("to") or "",
            remote_tag=response.to.tag,
            remote_target=target,
            route_set=routes,
        )
        try:
            dialog.next_hop()
        except ParseError:
            # Unusable Contact or Record-Route: ACK and BYE still go somewhere sensible.
            return cls(dialog.call_id, local, dialog.remote, dialog.remote_tag, fallback_target, ())
        return dialog

    def _addressing(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0], "Route")
        if "lr" in first.uri.params:
            return self.remote_target, list(self.route_set)
        return str(first.uri), [*self.route_set[1:], f"<{self.remote_target}>"]

    def next_hop(self) -> Addr:
        """The first router of the route set (loose or strict), else the remote target."""
        if self.route_set:
            return hop_of(parse_name_addr(self.route_set[0], "Route").uri)
        return hop_of(parse_uri(self.remote_target))

    def request(
        self, method: str, cseq: int, *, via: str, extra: Sequence[tuple[str, str]] = ()
    ) -> bytes:
        uri, routes = self._addressing()
        return make_request(
            method,
            uri,
            via=via,
            from_=self.local,
            to=self.remote,
            call_id=self.call_id,
            cseq=cseq,
            routes=routes,
            extra=extra,
        )
