"""Dialogs: which in-dialog requests the router forwards, and where to.

The router forwards a request inside a dialog (ACK for a 2xx, BYE, re-INVITE,
INFO...) only when the dialog is one it set up:

- one in its table (answered through this process), matched by Call-ID and
  both tags; or
- one whose top Route is the Record-Route this router put in the INVITE. That
  Record-Route carries the dialog's two peers (the caller's flow and the
  target's) and a keyed MAC over them, the Call-ID and the caller's tag, so a
  dialog survives a restart, and a takeover by a standby with the same secret,
  without shared state. The destination comes from the signed peers, never
  from the Request-URI or a Route someone else wrote.

Anything else gets ``481`` (ACKs are absorbed), is counted, and goes nowhere.

The table has a cap (``max_dialogs``): past it the oldest dialog goes. Its
requests still go through when they carry the signed Route (they do, from
any peer that honours Record-Route); only the router's own requests inside it
(keepalives) stop.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..sip import Request, Uri
from ._types import CallRecord, Flow

MAC_BYTES = 16
SWEEP_EVERY = 60.0  # seconds between sweeps of dialogs older than dialog_max_age


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
    # For requests of the router's own inside the dialog (keepalives, and the BYEs that
    # end a dead dialog): each side's Contact header (parsed only when used) and
    # name-addr, and the highest CSeq each side has used, as the router saw them go by.
    caller_contact: str = ""
    callee_contact: str = ""
    caller_from: str = ""  # the caller's From (with its tag)
    callee_to: str = ""  # the callee's To (with its tag)
    caller_cseq: int = 0
    callee_cseq: int = 0
    # How far the callee's CSeq numbers for the caller's requests run ahead of the
    # caller's own: each INVITE or in-dialog request the router resent with credentials
    # (RFC 3261 §22.2) took one more number on the callee's side.
    cseq_offset: int = 0
    auth: tuple[str, str] | None = None  # the last INVITE's credentials, repeated in its ACK
    record: CallRecord | None = None  # the call's record, handed out when the dialog ends


class Hop(NamedTuple):
    """Where an in-dialog request goes, and whether it came from the caller's side."""

    dest: Flow
    from_caller: bool
    dialog: Dialog | None  # None: known only by the signed Record-Route
    cseq_offset: int = 0  # add to the CSeq of a request from the caller (see Dialog)


def _flow_fields(flow: Flow) -> list[str]:
    local = flow.local or ("", 0)
    return [flow.transport, flow.addr[0], str(flow.addr[1]), local[0], str(local[1])]


def _flow_from(fields: list[str]) -> Flow:
    transport, host, port, local_host, local_port = fields
    local = (local_host, int(local_port)) if local_host else None
    return Flow(transport, (host, int(port)), local)


class RouteSigner:
    """Writes and checks the router's signed Record-Route (HMAC-SHA256, truncated to 128 bits)."""

    def __init__(self, secret: bytes, hostport: str) -> None:
        if len(secret) < 16:
            raise ValueError("the Record-Route secret must be at least 16 bytes")
        self._key = secret
        self.hostport = hostport

    def _mac(self, call_id: str, caller_tag: str, peers: str, offset: str = "") -> str:
        parts = (call_id, caller_tag, peers, offset) if offset else (call_id, caller_tag, peers)
        text = "\x00".join(parts).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, text, hashlib.sha256).digest()[:MAC_BYTES].hex()

    def record_route(
        self, call_id: str, caller_tag: str, caller: Flow, callee: Flow, cseq_offset: int = 0
    ) -> str:
        """The Record-Route of one branch; ``tgo`` is its ``cseq_offset`` (credentials resent)."""
        peers = "\x00".join([*_flow_fields(caller), *_flow_fields(callee)])
        data = peers.encode("utf-8", "surrogateescape").hex()
        offset = str(cseq_offset) if cseq_offset else ""
        mac = self._mac(call_id, caller_tag, data, offset)
        extra = f";tgo={offset}" if offset else ""
        return f"<sip:{self.hostport};lr;tgd={data}{extra};tgm={mac}>"

    def verify(
        self, uri: Uri, call_id: str, caller_tag: str | None
    ) -> tuple[Flow, Flow, int] | None:
        """The (caller, callee, CSeq offset) signed into ``uri`` for this dialog, or None."""
        data, mac = uri.params.get("tgd"), uri.params.get("tgm")
        offset = uri.params.get("tgo") or ""
        if not data or not mac or caller_tag is None:
            return None
        if offset and not (offset.isascii() and offset.isdigit() and len(offset) <= 4):
            return None
        if not hmac.compare_digest(self._mac(call_id, caller_tag, data, offset), mac.lower()):
            return None
        try:
            fields = bytes.fromhex(data).decode("utf-8", "surrogateescape").split("\x00")
            if len(fields) != 10:
                return None
            return _flow_from(fields[:5]), _flow_from(fields[5:]), int(offset or 0)
        except ValueError:
            return None


class DialogTable:
    """Dialogs answered through this process, by Call-ID; the signer for the others."""

    def __init__(self, signer: RouteSigner, cap: int = 200_000) -> None:
        self.signer = signer
        self.cap = cap
        # In the order they were opened: the oldest is evicted first, in O(1).
        self.table: OrderedDict[str, Dialog] = OrderedDict()
        # Dialogs a BYE ended, kept a little for retransmissions: in order of their end.
        self._closing: deque[tuple[float, Dialog]] = deque()

    def __len__(self) -> int:
        return len(self.table)

    def open(self, dialog: Dialog) -> list[Dialog]:
        """Remember ``dialog``; return the oldest ones evicted to stay within the cap."""
        table = self.table
        evicted = []
        while len(table) >= self.cap and dialog.call_id not in table:
            evicted.append(table.popitem(last=False)[1])
        table[dialog.call_id] = dialog
        return evicted

    def hop(self, request: Request, is_us: Callable[[Uri], bool]) -> tuple[Hop | None, str]:
        """Where ``request`` goes inside its dialog, or (None, why) when it is not ours."""
        from_tag, to_tag = request.from_.tag, request.to.tag
        dialog = self.table.get(request.call_id)
        if dialog is not None:
            if from_tag == dialog.caller_tag and to_tag == dialog.callee_tag:
                return Hop(dialog.callee, True, dialog, dialog.cseq_offset), ""
            if to_tag == dialog.caller_tag and from_tag == dialog.callee_tag:
                return Hop(dialog.caller, False, dialog), ""
        routes = request.routes
        if not routes or not is_us(routes[0].uri):
            return None, "no dialog of ours and no Route of ours"
        route = routes[0].uri
        if "tgm" not in route.params:
            return None, "a Route of ours without a signature"
        peers = self.signer.verify(route, request.call_id, from_tag)
        if peers is not None:
            return Hop(peers[1], True, None, peers[2]), ""
        peers = self.signer.verify(route, request.call_id, to_tag)
        if peers is not None:
            return Hop(peers[0], False, None), ""
        return None, "a Route of ours whose signature does not verify"

    def expired(self, now: float, max_age: float) -> list[Dialog]:
        """Remove and return the dialogs older than ``max_age`` (their BYE never came)."""
        limit = now - max_age
        stale = [cid for cid, d in self.table.items() if d.created < limit]
        return [self.table.pop(cid) for cid in stale]

    def end(self, call_id: str) -> None:
        self.table.pop(call_id, None)

    def close(self, dialog: Dialog, until: float) -> None:
        """A BYE went through: the dialog still routes until ``until`` (for retransmissions).

        What only the router's own requests inside it use (keepalives, the BYEs that
        end a dead dialog) goes now: those are never sent in a dialog that is ending.
        """
        dialog.ending = True
        dialog.caller_contact = dialog.callee_contact = ""
        dialog.caller_from = dialog.callee_to = ""
        self._closing.append((until, dialog))

    def next_close(self) -> float | None:
        return self._closing[0][0] if self._closing else None

    def end_closed(self, now: float) -> None:
        """Forget the dialogs whose time after their BYE is over."""
        closing, table = self._closing, self.table
        while closing and closing[0][0] <= now:
            dialog = closing.popleft()[1]
            if table.get(dialog.call_id) is dialog:
                del table[dialog.call_id]
