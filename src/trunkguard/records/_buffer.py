"""The bounded buffer between the event loop, which fills it, and the writer thread.

The loop appends (one call record at a time, a few hundred nanoseconds); one writer
thread reads a batch from the front, writes it, and only then removes it
(:meth:`peek` then :meth:`commit`), so a batch the database refused is still at the
front for the next try. A database that is down or slow therefore fills the buffer;
at ``cap`` the *newest* record is dropped and counted: what is kept is everything
up to the moment the buffer filled, and the gap in the records is one span of time.

One producer (the loop) only ever touches the back and one consumer (the writer)
only the front: ``deque.append``, ``popleft``, indexing and ``len`` are each atomic
under the GIL, so no lock is taken on the loop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ._rows import CallRow


class RecordBuffer:
    def __init__(self, cap: int, batch: int) -> None:
        if cap < 1 or batch < 1:
            raise ValueError("cap and batch must be positive")
        self.cap = cap
        self.batch = batch
        self._rows: deque[CallRow] = deque()
        self.wake = threading.Event()  # set when a batch is ready, or to stop
        self.dropped = 0  # records refused because the buffer was full (written by the loop)
        self.burst = 0  # drops since the buffer last took a record
        # Told once per burst, so that a long outage is two log lines, not one per call:
        self.on_full: Callable[[int], None] | None = None  # first drop (with the cap)
        self.on_resumed: Callable[[int], None] | None = None  # taken again (drops in the burst)

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, row: CallRow) -> int:
        """Keep ``row`` for the writer: how many wait now, or -1 (counted) if the buffer is full."""
        rows = self._rows
        n = len(rows)
        if n >= self.cap:
            self.dropped += 1
            self.burst += 1
            if self.burst == 1 and self.on_full is not None:
                self.on_full(self.cap)
            return -1
        rows.append(row)
        if self.burst:
            burst, self.burst = self.burst, 0
            if self.on_resumed is not None:
                self.on_resumed(burst)
        n += 1
        if n == self.batch:
            self.wake.set()
        return n

    def peek(self, limit: int) -> list[CallRow]:
        """The first ``limit`` records (fewer if there are fewer), left in place."""
        rows = self._rows
        return [rows[i] for i in range(min(limit, len(rows)))]

    def commit(self, count: int) -> None:
        """The first ``count`` records were written: remove them."""
        popleft = self._rows.popleft
        for _ in range(count):
            popleft()
