"""A request forwarded statefully inside a dialog (BYE, re-INVITE, INFO...): its two transactions.

The server transaction toward the sender and the client transaction toward
the dialog's other side. Responses go back as they come (but 100, which is
hop by hop); a request that gets no answer, or cannot be sent, is answered
``408`` or ``502`` by the router itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..health import UNREACHABLE
from ..sip import Response, make_response

if TYPE_CHECKING:
    from ._entries import ClientEntry, ServerEntry

Respond = Callable[["ServerEntry", int, bytes, float], None]


# A 401/407 for the relayed request: True when the proxy resent it with credentials.
Challenged = Callable[["Relay", Response, float], bool]


class Relay:
    __slots__ = (
        "agent",
        "authorized",
        "challenged",
        "client",
        "cseq",
        "method",
        "respond",
        "server",
        "stale",
    )

    def __init__(
        self, server: ServerEntry, method: str, respond: Respond, agent: str | None
    ) -> None:
        self.server = server
        self.method = method
        self.respond = respond
        self.agent = agent
        self.client: ClientEntry | None = None
        self.cseq: int | None = None  # the sender's CSeq number, when ours differs
        self.challenged: Challenged | None = None
        self.authorized = False  # resent once with credentials already
        self.stale = False  # ...answering a stale challenge

    def on_response(self, response: Response, now: float) -> None:
        status = response.status
        if status == 100:
            return  # hop by hop: our own 100 already went up for INVITEs
        if (
            status in (401, 407)
            and self.challenged is not None
            and self.challenged(self, response, now)
        ):
            return
        self.respond(self.server, status, response.without_top_via(self.cseq), now)

    def on_failure(self, kind: str, now: float) -> None:
        txn = self.server.txn
        if txn.state in ("TRYING", "PROCEEDING"):
            status = 502 if kind == UNREACHABLE else 408
            data = make_response(txn.request, status, agent=self.agent)
            self.respond(self.server, status, data, now)
