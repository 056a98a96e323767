"""The router's log: text or JSON lines on stderr, written by a thread of its own.

``log.format: json`` writes one JSON object per line: ``ts`` (ISO 8601, UTC),
``level``, ``logger``, ``message``, then the structured fields the code attached
(``extra=``), such as the call summary's. ``text`` is the classic one-line form.

The event loop never writes to stderr itself: a record goes into a bounded queue
and a thread writes it, so a slow reader (journald under load, a full pipe)
cannot stall calls. When the queue is full, records are dropped and counted,
and the count is written as soon as there is room again.

``log.calls: true`` adds one info line per call, from the core's CallRecord:
call id, number, final status, carrier, the attempts compactly
(``a:503 b:200``), post-dial delay, duration and how it ended. Nothing in a
CallRecord is a credential.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

from .proxy import CallRecord, CoreEvent

QUEUE_SIZE = 10_000  # records waiting for the writer thread, at most
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a log call attached with ``extra=``."""
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields that are not JSON become their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


class _BoundedQueueHandler(logging.handlers.QueueHandler):
    """Never blocks: a record that finds the queue full is dropped and counted."""

    def __init__(self, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.dropped = 0
        self._lock_drops = threading.Lock()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message and traceback as text now (the arguments may change later), but
        # the fields kept as they are, for the JSON formatter in the writer thread.
        record.message = record.getMessage()
        record.msg = record.message
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.dropped:
            with self._lock_drops:
                dropped, self.dropped = self.dropped, 0
            note = logging.LogRecord(
                "trunkguard", logging.WARNING, __file__, 0,
                "%d log line(s) dropped: the log could not keep up", (dropped,), None,
            )
            note.dropped = dropped
            try:
                self.queue.put_nowait(self.prepare(note))
            except queue.Full:
                with self._lock_drops:
                    self.dropped += dropped
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._lock_drops:
                self.dropped += 1


class LogPipe:
    """The root logger's handler: a bounded queue, drained to ``stream`` by a thread."""

    def __init__(self, level: str, fmt: str, stream: IO[str] | None = None) -> None:
        q: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        out = logging.StreamHandler(sys.stderr if stream is None else stream)
        out.setFormatter(formatter(fmt))
        self.handler = _BoundedQueueHandler(q)
        self.listener = logging.handlers.QueueListener(q, out, respect_handler_level=False)
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(self.handler)
        root.setLevel(level.upper())
        self.listener.start()

    @property
    def dropped(self) -> int:
        return self.handler.dropped

    def stop(self) -> None:
        """Write what is queued, then stop the thread (the process is about to leave)."""
        logging.getLogger().removeHandler(self.handler)
        self.listener.stop()


def attempts_text(record: CallRecord) -> str:
    """``a:503 b:timeout c:200``: each attempt's target and what it gave."""
    return " ".join(
        f"{a.target}:{a.status if a.status is not None else a.kind}" for a in record.attempts
    )


def call_pdd(record: CallRecord) -> float | None:
    """What the caller waited for the first ringing: from its INVITE to the first 100/18x
    of the attempt that got one last (failover time included)."""
    for a in reversed(record.attempts):
        if a.first_response is not None:
            return a.first_response - record.started
    return None


class CallLog:
    """A runtime listener: one info line per call (``log.calls: true``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("trunkguard.calls")

    def __call__(self, event: CoreEvent) -> None:
        if not isinstance(event, CallRecord) or not self.log.isEnabledFor(logging.INFO):
            return
        pdd = call_pdd(event)
        duration = None if event.answered is None else max(0.0, event.ended - event.answered)
        carrier = event.carrier
        attempts = attempts_text(event)
        fields = {
            "call_id": event.call_id,
            "number": event.number,
            "source": event.source,
            "status": event.status,
            "carrier": carrier,
            "attempts": attempts,
            "pdd_ms": None if pdd is None else round(pdd * 1000),
            "duration_s": None if duration is None else round(duration, 3),
            "end": event.end,
        }
        self.log.info(
            "call %s: %s from %s: %d%s; attempts %s; pdd %s; duration %s; end %s",
            event.call_id,
            event.number or "-",
            event.source,
            event.status,
            f" via {carrier}" if carrier else "",
            attempts or "none",
            "-" if pdd is None else f"{pdd * 1000:.0f} ms",
            "-" if duration is None else f"{duration:.1f}s",
            event.end,
            extra=fields,
        )
