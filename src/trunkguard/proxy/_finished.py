"""What is left of a transaction once it only absorbs retransmissions.

After its final response, a transaction waits out Timer D, H, I, J, K, L or M
(up to 64*T1, 32 s) only to answer retransmissions (RFC 3261 §17, RFC 6026).
Kept whole for that time (parsed request, call, closures), these transactions
are most of a busy router's memory: at 1,000 calls/s, 32 s of them. So the
proxy replaces each by a record of what it still has to do: its key, its
flow, the bytes a retransmission gets, and when it expires.

Invariants, in plain words:

- A record holds no parsed message, no call and no callback. The one
  exception is the Timer G handle of a server INVITE record in COMPLETED over
  UDP (it resends the final until the ACK); it is dropped on the ACK, at
  expiry and on eviction, so a record is never part of a reference cycle.
- Records expire at their transaction's timer. Records of one timer are made
  in order of their deadlines, so each timer has a FIFO and the sweep only
  looks at the heads: one timer in the queue for all of them.
- The table has a cap: the oldest record goes first (counted). Without its
  record a retransmission is taken as new, so the cap is set well above what
  the call rate fills.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from ..sip import Response
from ._stray import stray_request
from ._timers import TimerHandle
from ._types import Flow

# The transaction state a record stands for.
ACCEPTED = "ACCEPTED"  # a 2xx went (server) or came (client)
COMPLETED = "COMPLETED"  # a non-2xx final went (server) or came (client), or a non-INVITE's final
CONFIRMED = "CONFIRMED"  # a server INVITE's non-2xx final was ACKed


class StrayLeg(NamedTuple):
    """What the ACK for each retransmission of a 2xx nobody wanted is made of (see _stray)."""

    from_: str
    call_id: str
    uri: str
    via: str
    agent: str | None
    auth: tuple[str, str] | None

    def ack(self, response: Response) -> bytes:
        return stray_request(
            "ACK",
            self.from_,
            self.call_id,
            response,
            branch_uri=self.uri,
            via=self.via,
            agent=self.agent,
            auth=self.auth,
        )


class Finished:
    """A finished transaction: its key, its flow, and when it expires."""

    __slots__ = ("expires", "flow", "key", "state")

    def __init__(self, key: str | tuple[object, ...], flow: Flow, state: str, expires: float):
        self.key = key
        self.flow = flow
        self.state = state
        self.expires = expires


class ServerDone(Finished):
    """A server transaction whose final response went out.

    COMPLETED resends ``data`` (the final) for each retransmitted request, and
    a server INVITE also on Timer G until the ACK; ACCEPTED and CONFIRMED
    absorb them. ``call``: the INVITE of a new call (a CANCEL for it gets 200).
    """

    __slots__ = ("call", "data", "handle", "interval", "invite")

    def __init__(
        self,
        key: tuple[object, ...],
        flow: Flow,
        state: str,
        expires: float,
        *,
        invite: bool,
        call: bool = False,
        data: bytes | None = None,
    ) -> None:
        super().__init__(key, flow, state, expires)
        self.invite = invite
        self.call = call
        self.data = data
        self.interval = 0.0  # Timer G's, while it runs
        self.handle: TimerHandle | None = None  # Timer G

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class ClientDone(Finished):
    """A client transaction whose final response came.

    INVITE, COMPLETED: ``ack`` goes again for each retransmitted final. INVITE,
    ACCEPTED: each 2xx goes on to ``upstream`` (with the sender's CSeq number
    ``cseq`` put back, when the router renumbered the request), or, on a branch
    the call let go of, gets an ACK (``stray``). Anything else is absorbed.
    """

    __slots__ = ("ack", "cseq", "stray", "upstream")

    def __init__(
        self,
        key: str,
        flow: Flow,
        state: str,
        expires: float,
        *,
        ack: bytes | None = None,
        upstream: Flow | None = None,
        cseq: int | None = None,
        stray: StrayLeg | None = None,
    ) -> None:
        super().__init__(key, flow, state, expires)
        self.ack = ack
        self.upstream = upstream
        self.cseq = cseq
        self.stray = stray


Record = ServerDone | ClientDone


class FinishedTable:
    """Records by transaction key, a FIFO per timer, and the cap."""

    __slots__ = ("_fifos", "cap", "evicted", "table")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.table: dict[str | tuple[object, ...], Record] = {}
        # timer name -> (its duration, records in order of expiry); a record that was
        # replaced or evicted stays in its FIFO, dead, until its time comes.
        self._fifos: dict[str, tuple[float, deque[Record]]] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.table)

    def get(self, key: str | tuple[object, ...]) -> Record | None:
        return self.table.get(key)

    def add(self, record: Record, timer: str, now: float) -> bool:
        """Keep ``record`` until it expires; True when its timer's FIFO was empty (rearm)."""
        while len(self.table) >= self.cap and self._evict_oldest():
            pass
        old = self.table.get(record.key)
        if isinstance(old, ServerDone):
            old.stop()
        self.table[record.key] = record
        fifo = self._fifos.get(timer)
        if fifo is None:
            fifo = self._fifos[timer] = (record.expires - now, deque())
        fifo[1].append(record)
        return len(fifo[1]) == 1

    def remove(self, record: Record) -> None:
        if self.table.get(record.key) is record:
            del self.table[record.key]
        if isinstance(record, ServerDone):
            record.stop()
            record.data = None

    def next_deadline(self) -> float | None:
        heads = [fifo[0].expires for _, fifo in self._fifos.values() if fifo]
        return min(heads, default=None)

    def expire(self, now: float) -> list[Record]:
        """Remove and return the records whose time has come (dead ones are dropped quietly)."""
        out: list[Record] = []
        table = self.table
        for _, fifo in self._fifos.values():
            while fifo and fifo[0].expires <= now:
                record = fifo.popleft()
                if table.get(record.key) is record:
                    del table[record.key]
                    out.append(record)
        return out

    def _evict_oldest(self) -> bool:
        """Drop the oldest live record; False when there is none."""
        table = self.table
        while True:
            oldest: deque[Record] | None = None
            since = 0.0
            for duration, fifo in self._fifos.values():
                if fifo and (oldest is None or fifo[0].expires - duration < since):
                    oldest, since = fifo, fifo[0].expires - duration
            if oldest is None:
                return False
            record = oldest.popleft()
            if table.get(record.key) is record:
                self.remove(record)
                self.evicted += 1
                return True
