"""The proxy's transaction table: entries, keys and branch ids."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..sip import (
    MAGIC_COOKIE,
    ClientInvite,
    ClientNonInvite,
    Request,
    Response,
    ServerInvite,
    ServerNonInvite,
    make_ack,
)
from ._timers import TimerHandle
from ._types import Flow

if TYPE_CHECKING:
    from ._call import Branch, Call

# Our branches carry this after the magic cookie: a request that arrives with
# one of them in a Via at our address has looped back to us.
BRANCH_PREFIX = MAGIC_COOKIE + "tg"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, NOTIFY, REFER, MESSAGE"


def derived_branch(seed: str) -> str:
    # Stateless forwarding (ACK for 2xx) needs the same branch for a retransmission.
    return BRANCH_PREFIX + hashlib.sha1(seed.encode("utf-8", "surrogateescape")).hexdigest()[:20]


class TxnOwner(Protocol):
    """Who is told how a client transaction of its own ended (relays, probes)."""

    def on_response(self, response: Response, now: float) -> None: ...

    def on_failure(self, kind: str, now: float) -> None: ...


@dataclass(slots=True)
class ClientEntry:
    txn: ClientInvite | ClientNonInvite
    flow: Flow
    owner: Branch | TxnOwner | None
    key: str
    handle: TimerHandle | None = None
    call: Call | None = None  # for a branch: the call it belongs to


@dataclass(slots=True)
class ServerEntry:
    txn: ServerInvite | ServerNonInvite
    flow: Flow
    key: tuple[object, ...]
    owner: Call | TxnOwner | None = None
    handle: TimerHandle | None = None


def ack_for(
    request: Request,
    uri: str,
    via: str,
    routes: list[str],
    response: Response,
    cseq: int | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    return make_ack(request, response, uri=uri, via=via, routes=routes, cseq=cseq, extra=extra)


def server_key(request: Request, method: str) -> tuple[object, ...]:
    """Server transaction key (RFC 3261 §17.2.3; RFC 2543 rules when the branch is old-style)."""
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return (branch, via.sent_by.lower(), method)
    return (
        request.call_id,
        request.cseq.number,
        request.from_.tag,
        via.sent_by,
        branch,
        request.uri,
        method,
    )
