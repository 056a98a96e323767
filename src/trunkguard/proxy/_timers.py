"""One heap of deadlines for everything the proxy waits on.

The asyncio layer keeps a single ``call_at`` armed for :meth:`next_deadline`.
Cancelling only marks an entry; marked entries are skipped when they come up,
and the heap is rebuilt without them once they are the majority, so a ring
timer cancelled 3 minutes early does not hold memory for those 3 minutes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable

log = logging.getLogger("trunkguard.proxy")

_COMPACT_MIN = 4096


def _cancelled(now: float) -> None:
    del now


class TimerHandle:
    __slots__ = ("callback", "cancelled", "queue", "when")

    def __init__(self, queue: TimerQueue, when: float, callback: Callable[[float], object]) -> None:
        self.queue = queue
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.queue.cancelled += 1
        # A cancelled entry waits in the heap until its time: it must not keep what its
        # callback refers to (a call's, a transaction's state) alive that long.
        self.callback = _cancelled


class TimerQueue:
    __slots__ = ("_count", "_heap", "cancelled", "failed")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._count = itertools.count()
        self.cancelled = 0  # cancelled entries still in the heap
        self.failed = 0  # callbacks that raised

    def schedule(self, when: float, callback: Callable[[float], object]) -> TimerHandle:
        handle = TimerHandle(self, when, callback)
        heap = self._heap
        heapq.heappush(heap, (when, next(self._count), handle))
        if self.cancelled > _COMPACT_MIN and self.cancelled * 2 > len(heap):
            self._heap = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self.cancelled = 0
        return handle

    def rearm(
        self,
        handle: TimerHandle | None,
        when: float | None,
        callback: Callable[[float], object],
    ) -> TimerHandle | None:
        """Move a timer to ``when`` (None: no timer); keeps ``handle`` if it is already there."""
        if handle is not None and not handle.cancelled:
            if handle.when == when:
                return handle
            handle.cancel()
        return None if when is None else self.schedule(when, callback)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self.cancelled -= 1
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Run every callback due at ``now``; return how many ran."""
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            _, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                self.cancelled -= 1
                continue
            handle.cancelled = True  # fired: a later cancel() is a no-op
            callback, handle.callback = handle.callback, _cancelled
            try:
                callback(now)
            except Exception:
                # A fault in one timer's work must not stop the clock for all the others.
                self.failed += 1
                log.exception("timer callback failed; the other timers go on")
            ran += 1
            heap = self._heap  # a callback may have compacted the heap
        return ran

    def __len__(self) -> int:
        return len(self._heap) - self.cancelled
