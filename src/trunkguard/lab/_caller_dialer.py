"""Many calls from one local address at a steady rate, sans-IO.

The dialer starts calls when the :class:`Pacer` says, hands every datagram
to its call by Call-ID, keeps the calls' deadlines in one heap (so the asyncio
layer arms a single timer for ``deadline()``), and collects a record per call
as soon as its outcome is known. Calls are forgotten once idle; records are
kept. Counters for a live view are kept as calls move, never recomputed.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable

from ..sip import ParseError, Request, make_response, parse_message
from ._caller_call import Call
from ._caller_dialog import Addr
from ._caller_pacer import Pacer
from ._caller_record import CallRecord
from ._caller_settings import GeneratorSettings


class Dialer:
    def __init__(self, settings: GeneratorSettings, local: Addr, now: float) -> None:
        self.settings = settings
        self.local = local
        self.began = now
        self.pacer = Pacer(settings.rate, now, window=settings.window, limit=settings.planned)
        self.calls: dict[str, Call] = {}
        self.records: list[CallRecord] = []
        self.counters: Counter[str] = Counter()
        self.finals: Counter[int] = Counter()
        self.by_carrier: Counter[str] = Counter()
        self.last_pdd: float | None = None
        self._open: dict[str, Call] = {}  # started, outcome not known yet
        self._heap: list[tuple[float, int, str]] = []
        self._armed: dict[str, float] = {}
        self._seq = itertools.count()
        self._out: list[tuple[bytes, Addr]] = []
        self._ended: deque[CallRecord] = deque()

    @property
    def end(self) -> float:
        """No call is left open after this time (window + hold + timeout after the start)."""
        return self.began + self.settings.bound

    @property
    def done(self) -> bool:
        """Every call the schedule holds has started, and every one has its outcome."""
        return self.pacer.next_start() is None and not self._open

    # -- driving ------------------------------------------------------------------------------
    def deadline(self) -> float | None:
        heap = self._heap
        while heap and self._armed.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        times = [heap[0][0]] if heap else []
        start = self.pacer.next_start()
        if start is not None:
            times.append(start)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, call_id = heapq.heappop(heap)
            if self._armed.get(call_id) != when:
                continue  # superseded by a later deadline of the same call
            del self._armed[call_id]
            call = self.calls.get(call_id)
            if call is not None:
                self._touch(call, lambda c: c.handle_timer(now))
        while self.pacer.take(now):
            self._start(now)

    def receive(self, data: bytes, source: Addr, now: float) -> None:
        try:
            message = parse_message(data)
            message.check()
        except ParseError:
            self.counters["unparsable"] += 1
            return
        call = self.calls.get(message.call_id)
        if call is None:
            self.counters["stray"] += 1
            if isinstance(message, Request) and message.method != "ACK":
                self._out.append((make_response(message, 481), source))
            return
        self._touch(call, lambda c: c.receive(message, source, now))

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_record(self) -> CallRecord | None:
        """The record of a call that just ended, in the order they ended; None when none."""
        return self._ended.popleft() if self._ended else None

    def results(self) -> list[CallRecord]:
        """Every started call, in start order; calls still open are recorded as they stand."""
        records = self.records + [call.record() for call in self._open.values()]
        return sorted(records, key=lambda r: r.index)

    # -- calls ------------------------------------------------------------------------------
    def _start(self, now: float) -> None:
        index = self.pacer.started - 1
        call = Call(self.settings, index, self.local)
        self.calls[call.call_id] = call
        self._open[call.call_id] = call
        self.counters["started"] += 1
        self._touch(call, lambda c: c.start(now))

    def _touch(self, call: Call, act: Callable[[Call], None]) -> None:
        """Let ``act`` drive ``call``, then collect what it sent, measured and armed."""
        final, pdd = call.final, call.pdd
        act(call)
        self._out += call.datagrams_to_send()
        if pdd is None and call.pdd is not None:
            self.last_pdd = call.pdd
        if final is None and call.final is not None:
            self.finals[call.final] += 1
            if 200 <= call.final < 300:
                self.counters["answered"] += 1
                self.by_carrier[call.answered_by or "unknown"] += 1
        if call.finished and call.call_id in self._open:
            del self._open[call.call_id]
            record = call.record()
            self.records.append(record)
            self._ended.append(record)
            self.counters["ok" if record.ok else "failed"] += 1
            if record.hung:
                self.counters["hung"] += 1
        if call.idle:
            del self.calls[call.call_id]
            self._armed.pop(call.call_id, None)
            return
        when = call.deadline()
        if when is None:
            self._armed.pop(call.call_id, None)
        elif self._armed.get(call.call_id) != when:
            self._armed[call.call_id] = when
            heapq.heappush(self._heap, (when, next(self._seq), call.call_id))
        self._compact()

    def _compact(self) -> None:
        # Superseded entries stay in the heap until they come up; rebuild when they dominate.
        heap = self._heap
        if len(heap) > 1024 and len(heap) > 4 * len(self._armed):
            self._heap = [e for e in heap if self._armed.get(e[2]) == e[0]]
            heapq.heapify(self._heap)

    # -- live view -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        c = self.counters
        return {
            "planned": self.settings.planned,
            "started": c["started"],
            "answered": c["answered"],
            "ok": c["ok"],
            "failed": c["failed"],
            "hung": c["hung"],
            "in_progress": len(self._open),
            "by_carrier": dict(self.by_carrier),
            "finals": dict(self.finals),
            "last_pdd": self.last_pdd,
            "slips": self.pacer.slips,
            "stray": c["stray"],
            "unparsable": c["unparsable"],
        }
