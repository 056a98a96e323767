"""The recorder: the loop's listener fills the buffer, a thread of its own drains it.

On the loop, per call: a type check, :func:`call_row`, an append (a few µs; see
``bench/records.py``). In the thread: a batch whenever ``batch`` records wait or
``flush_interval`` has passed, one transaction each; retention pruning every so
often. A write that fails leaves its batch at the front of the buffer; the thread
retries with a backoff (0.2 s doubling to 5 s) and reconnects. Meanwhile the
buffer fills up to ``max_queue``, then drops the newest records, counted.

Counters (in ``runtime.proxy.counters``, so ``/api/counters`` shows them), all
set on the loop (the thread asks the loop to copy its figures over):
``records_written``, ``records_queued`` (waiting in the buffer now),
``records_dropped`` (never written: buffer full, refused by the database, or
still waiting when a shutdown's flush ran out of time), ``records_write_errors``
(failed tries), ``records_pruned`` (deleted by retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..proxy import CallRecord
from ._buffer import RecordBuffer
from ._rows import CallRow, call_row

log = logging.getLogger("trunkguard.records")

BACKOFF_FIRST = 0.2  # seconds before the first retry of a failed write
BACKOFF_MAX = 5.0
PRUNE_EVERY = 3600.0  # seconds between retention runs (and one soon after the start)
PRUNE_FIRST = 5.0
COUNTERS = (
    "records_written",
    "records_queued",
    "records_dropped",
    "records_write_errors",
    "records_pruned",
)


class RecordWriter(Protocol):
    """A backend, used from the recorder's thread only."""

    name: str  # for the logs: never a password

    def open(self) -> None: ...
    def write(self, rows: Sequence[CallRow]) -> None: ...
    def prune(self, before: float) -> int: ...
    def refused(self, exc: BaseException) -> bool: ...
    def describe(self, exc: BaseException) -> str: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    batch: int = 500
    flush_interval: float = 1.0  # seconds a record may wait for its batch to fill
    max_queue: int = 100_000
    retention: float | None = 30 * 86400.0  # seconds; None: keep everything


class Recorder:
    def __init__(
        self,
        writer: RecordWriter,
        settings: RecorderSettings,
        counters: Counter[str] | None = None,
        offset: float = 0.0,
    ) -> None:
        self.writer = writer
        self.settings = settings
        self.buffer = RecordBuffer(settings.max_queue, settings.batch)
        self.buffer.on_full = self._full
        self.buffer.on_resumed = self._resumed
        self.counters: Counter[str] = counters if counters is not None else Counter()
        for name in COUNTERS:  # made here, on the loop: later updates never add a key
            self.counters[name] += 0
        self.offset = offset  # wall clock minus the core's clock
        # The thread's own figures; it alone writes them, the loop copies them over.
        self.written = 0
        self.errors = 0
        self.lost = 0  # refused by the database, or left at shutdown
        self.pruned = 0
        self._stop_at: float | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing_since: float | None = None
        self._opened = False

    # -- on the loop ---------------------------------------------------------------------
    def feed(self, event: object) -> None:
        """The runtime's listener: keep each call record for the writer."""
        if type(event) is not CallRecord:
            return
        waiting = self.buffer.append(call_row(event, self.offset))
        if waiting >= 0:
            self.counters["records_queued"] = waiting
        else:
            self.counters["records_dropped"] = self.buffer.dropped + self.lost

    def _full(self, cap: int) -> None:
        log.warning(
            "call records: the buffer is full (%d waiting for %s): dropping new records"
            " until it drains",
            cap,
            self.writer.name,
        )

    @staticmethod
    def _resumed(dropped: int) -> None:
        log.warning("call records: the buffer takes records again; %d were dropped", dropped)

    def _sync(self) -> None:
        c = self.counters
        c["records_written"] = self.written
        c["records_queued"] = len(self.buffer)
        c["records_dropped"] = self.buffer.dropped + self.lost
        c["records_write_errors"] = self.errors
        c["records_pruned"] = self.pruned

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the writer thread; ``loop``: where the counters live (None: set here)."""
        self._loop = loop
        self._thread = threading.Thread(target=self._main, name="call-records", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float) -> None:
        """Write what waits, for at most ``timeout`` seconds; then close the backend."""
        thread = self._thread
        if thread is None:
            return
        self._stop_at = time.monotonic() + timeout
        self.buffer.wake.set()
        # The thread gives up by itself at the deadline; a write stuck in the
        # database past it is left behind (a daemon thread: it does not hold the exit).
        await asyncio.to_thread(thread.join, timeout + 2.0)
        self._thread = None
        self._sync()

    def stop_blocking(self, timeout: float) -> None:
        """stop() for callers without a running loop (benchmarks, tests)."""
        thread = self._thread
        if thread is None:
            return
        self._stop_at = time.monotonic() + timeout
        self.buffer.wake.set()
        thread.join(timeout + 2.0)
        self._thread = None
        self._sync()

    # -- in the thread -------------------------------------------------------------------
    def _post_sync(self) -> None:
        loop = self._loop
        if loop is None:
            self._sync()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads them now
            loop.call_soon_threadsafe(self._sync)

    def _main(self) -> None:
        failures = 0
        retry_at = 0.0
        next_prune = time.monotonic() + PRUNE_FIRST
        wake = self.buffer.wake
        try:
            if not self._write_all():  # opens the backend (makes the tables) at once
                failures = 1
                retry_at = time.monotonic() + BACKOFF_FIRST
            while True:
                now = time.monotonic()
                stop_at = self._stop_at
                if stop_at is not None:
                    if not len(self.buffer) or now >= stop_at:
                        break
                    if failures and now < retry_at:
                        time.sleep(min(retry_at, stop_at) - now)
                        continue
                else:
                    wait = (retry_at - now) if failures else self.settings.flush_interval
                    if wait > 0:
                        wake.wait(wait)
                        wake.clear()
                    if self._stop_at is not None:
                        continue
                    if failures and time.monotonic() < retry_at:
                        continue  # woken by a full batch while backing off
                if self._write_all():
                    failures = 0
                else:
                    failures += 1
                    delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
                    retry_at = time.monotonic() + delay
                    continue
                retention = self.settings.retention
                if retention is not None and self._opened and time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    self._prune(retention)
        except Exception:  # a bug here must not take the router down; it is logged
            log.exception("call records: the writer thread failed; records are no longer written")
        finally:
            left = len(self.buffer)
            if left:
                self.lost += left
                log.error(
                    "call records: %d records not written to %s at shutdown", left, self.writer.name
                )
            self.writer.close()
            shutdown = getattr(self.writer, "shutdown", None)
            if shutdown is not None:
                shutdown()
            self._post_sync()

    def _write_all(self) -> bool:
        """Write batches until the buffer is empty; False when a write failed."""
        buffer = self.buffer
        batch = self.settings.batch
        while True:
            rows = buffer.peek(batch)
            if not rows and self._opened:
                return True
            stop_at = self._stop_at
            if stop_at is not None and time.monotonic() >= stop_at:
                return True
            try:
                if not self._opened:
                    self.writer.open()
                    self._opened = True
                    self._recovered()
                if not rows:
                    return True
                self.writer.write(rows)
            except Exception as exc:
                if not (self._opened and self.writer.refused(exc)):
                    self._failed(exc)
                    return False
                try:
                    self._one_by_one(rows)
                except Exception as link:
                    self._failed(link)
                    return False
                continue
            buffer.commit(len(rows))
            self.written += len(rows)
            self._post_sync()

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning(
                "call records: %s reachable again after %.1fs; %d records waiting",
                self.writer.name,
                time.monotonic() - self._failing_since,
                len(self.buffer),
            )
            self._failing_since = None

    def _one_by_one(self, rows: list[CallRow]) -> None:
        """A batch the database refused for its contents: write what it takes, drop the rest."""
        for row in rows:
            try:
                self.writer.write([row])
            except Exception as exc:
                if not self.writer.refused(exc):
                    raise  # the link went: the rest of the batch is retried as a batch
                self.lost += 1
                self.errors += 1
                log.error(
                    "call records: %s refused the record of call %r: %s",
                    self.writer.name,
                    row.call_id,
                    self.writer.describe(exc),
                )
            else:
                self.written += 1
            self.buffer.commit(1)
        self._post_sync()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "call records: cannot write to %s (%s): keeping records in the buffer"
                " (up to %d) and retrying",
                self.writer.name,
                self.writer.describe(exc),
                self.settings.max_queue,
            )
        else:
            log.debug("call records: still cannot write: %s", self.writer.describe(exc))
        self.writer.close()
        self._opened = False
        self._post_sync()

    def _prune(self, retention: float) -> None:
        try:
            n = self.writer.prune(time.time() - retention)
        except Exception as exc:
            log.warning("call records: retention: %s", self.writer.describe(exc))
            return
        if n:
            self.pruned += n
            log.info("call records: retention removed %d calls from %s", n, self.writer.name)
            self._post_sync()
