"""Dialogs: requests inside a call (ACK for 2xx, BYE, re-INVITE, INFO) between its two sides.

An answered call leaves a dialog record: the caller's flow and tag, the
carrier's flow and tag. In-dialog requests go along those flows, so they
reach a caller behind NAT or on a TCP connection; a dialog the router does
not know (after a restart, say) is routed loosely by Route, else Request-URI.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from ..sip import (
    ClientInvite,
    ClientNonInvite,
    Request,
    Response,
    ServerInvite,
    ServerNonInvite,
    make_response,
)
from ._entries import ClientEntry, ServerEntry, ack_for, derived_branch, server_key
from ._types import Flow

if TYPE_CHECKING:
    from ._call import Branch, Call
    from ._core import Proxy


@dataclass(slots=True)
class Dialog:
    call_id: str
    caller_tag: str | None
    callee_tag: str | None
    caller: Flow
    callee: Flow
    target: str
    created: float
    ending: bool = False


class Relay:
    """A request forwarded statefully outside the call logic (BYE, re-INVITE, INFO...)."""

    __slots__ = ("client", "method", "proxy", "server")

    def __init__(self, proxy: Proxy, server: ServerEntry, method: str) -> None:
        self.proxy = proxy
        self.server = server
        self.method = method
        self.client: ClientEntry | None = None

    def on_response(self, response: Response, now: float) -> None:
        if response.status == 100:
            return  # hop by hop: our own 100 already went up for INVITEs
        self.proxy.respond(self.server, response.status, response.without_top_via(), now)

    def on_failure(self, kind: str, now: float) -> None:
        del kind
        txn = self.server.txn
        if txn.state in ("TRYING", "PROCEEDING"):
            data = make_response(txn.request, 408)
            self.proxy.respond(self.server, 408, data, now)


class Dialogs:
    """The dialog table and the relaying of requests inside dialogs."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.table: dict[str, Dialog] = {}

    def __len__(self) -> int:
        return len(self.table)

    def ack(self, request: Request, now: float) -> None:
        p = self.proxy
        key = server_key(request, "INVITE")
        entry = p.servers.get(key)
        if (
            entry is not None
            and isinstance(entry.txn, ServerInvite)
            and entry.txn.state in ("COMPLETED", "CONFIRMED")
        ):
            p.drive(entry, entry.txn.receive_ack(now), now)
            return
        # ACK for a 2xx: its own transaction, forwarded statelessly along the dialog.
        dest = self.destination(request)
        if dest is None:
            p.counters["acks_absorbed"] += 1
            return
        self._forward(request, dest, derived_branch(request.top_via.branch or request.call_id))

    def destination(self, request: Request) -> Flow | None:
        p = self.proxy
        dialog = self.table.get(request.call_id)
        tag = request.from_.tag
        if dialog is not None:
            if tag == dialog.caller_tag:
                return dialog.callee
            if tag == dialog.callee_tag:
                return dialog.caller
        # Unknown dialog (e.g. after a restart): loose routing by Route, else Request-URI.
        routes = request.routes
        if routes and p.is_us(routes[0].uri):
            routes = routes[1:]
        uri = routes[0].uri if routes else request.request_uri
        if not uri.is_sip or p.is_us(uri):
            return None
        try:
            host = str(ipaddress.ip_address(uri.host.strip("[]")))
        except ValueError:
            return None  # no DNS on the call path
        transport = "tcp" if str(uri.params.get("transport", "udp")).lower() == "tcp" else "udp"
        return Flow(transport, (host, uri.port or 5060))

    def _forward(self, request: Request, dest: Flow, branch: str) -> None:
        p = self.proxy
        routes = request.routes
        pop = bool(routes) and p.is_us(routes[0].uri)
        mf = request.max_forwards
        data = request.forwarded(
            via=p.via(dest, branch),
            max_forwards=69 if mf is None else max(mf - 1, 0),
            pop_route=pop,
        )
        p.send(dest, data)

    def relay(self, request: Request, source: Flow, key: tuple[object, ...], now: float) -> None:
        p = self.proxy
        dest = self.destination(request)
        if dest is None:
            p.send(source, make_response(request, 481))
            return
        if p.max_forwards_or_reject(request, source) is None:
            return
        method = request.method
        kind = ServerInvite if method == "INVITE" else ServerNonInvite
        server = p.server_entry(request, source, key, kind)
        relay = Relay(p, server, method)
        server.owner = relay
        if method == "INVITE":
            p.respond(server, 100, make_response(request, 100), now)
        branch = p.new_branch()
        routes = request.routes
        pop = bool(routes) and p.is_us(routes[0].uri)
        mf = request.max_forwards
        via = p.via(dest, branch)
        data = request.forwarded(via=via, max_forwards=69 if mf is None else mf - 1, pop_route=pop)
        reliable = dest.transport != "udp"
        txn: ClientInvite | ClientNonInvite
        if method == "INVITE":
            remaining = request.values("route")[1 if pop else 0 :]
            txn = ClientInvite(
                data,
                partial(ack_for, request, request.uri, via, remaining),
                reliable=reliable,
                timers=p.settings.timers,
            )
        else:
            txn = ClientNonInvite(data, reliable=reliable, timers=p.settings.timers)
        entry = ClientEntry(txn, dest, relay, branch)
        relay.client = entry
        p.clients[branch] = entry
        if method == "BYE":
            dialog = self.table.get(request.call_id)
            if dialog is not None and not dialog.ending:
                # Keep the dialog a little for retransmitted BYEs and their responses.
                dialog.ending = True
                if p.health is not None:
                    p.health.call_ended(dialog.target)
                p.timers.schedule(
                    now + p.settings.timers.timeout, partial(self._end, request.call_id)
                )
        p.drive(entry, txn.start(now), now)

    def _end(self, call_id: str, now: float) -> None:
        del now
        self.table.pop(call_id, None)

    def open(self, call: Call, branch: Branch, response: Response, now: float) -> None:
        request = call.request
        self.table[request.call_id] = Dialog(
            call_id=request.call_id,
            caller_tag=request.from_.tag,
            callee_tag=response.to.tag,
            caller=call.source,
            callee=branch.flow,
            target=branch.target.name,
            created=now,
        )

    def sweep(self, now: float) -> None:
        p = self.proxy
        # Dialogs whose BYE never came through us must not pile up for ever.
        limit = now - p.settings.dialog_max_age
        stale = [cid for cid, d in self.table.items() if d.created < limit]
        for cid in stale:
            dialog = self.table.pop(cid)
            if p.health is not None and not dialog.ending:
                p.health.call_ended(dialog.target)
        p.counters["dialogs_expired"] += len(stale)
        p.timers.schedule(now + 60.0, self.sweep)
