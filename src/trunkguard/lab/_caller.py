"""The call generator: drives calls into the router at a steady rate for a bounded time.

Our own UAC, layered like the router: the sans-IO :class:`Dialer` starts the
calls, runs them and records what the caller saw (outcome, post-dial delay,
which carrier answered); this adapter is one UDP socket bound to
``settings.bind`` port 0, datagrams in and out, and one ``call_at`` armed for
the dialer's next deadline. A run ends when every call has its outcome, and
at the latest ``window + hold + timeout`` after it began.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from ._caller_dialer import Dialer
from ._caller_record import CallRecord
from ._caller_settings import GeneratorSettings

__all__ = ["CallGenerator", "CallRecord", "GeneratorSettings"]


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, generator: CallGenerator) -> None:
        self.generator = generator

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.generator._receive(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # An unconnected socket cannot say which peer failed: a dead target shows as hung calls.
        self.generator.socket_errors += 1


class CallGenerator:
    def __init__(self, settings: GeneratorSettings) -> None:
        self.settings = settings
        self.on_call_end: Callable[[CallRecord], None] | None = None
        self.local: tuple[str, int] | None = None  # known once run() has bound its socket
        self.socket_errors = 0
        self._dialer: Dialer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._finished: asyncio.Future[None] | None = None

    async def run(self) -> list[CallRecord]:
        """Start the calls, wait until each has its outcome; the records in start order."""
        if self._dialer is not None:
            raise RuntimeError("a CallGenerator runs once")
        loop = self._loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(self), local_addr=(self.settings.bind, 0)
        )
        self._transport = transport
        sock = transport.get_extra_info("socket")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        name = transport.get_extra_info("sockname")
        self.local = (str(name[0]), int(name[1]))
        dialer = self._dialer = Dialer(self.settings, self.local, loop.time())
        self._finished = loop.create_future()
        bound = loop.call_at(dialer.end, self._finish)
        try:
            self._on_timer()
            await self._finished
        finally:
            bound.cancel()
            if self._timer is not None:
                self._timer.cancel()
            self._transport.close()
        return dialer.results()

    def snapshot(self) -> dict[str, object]:
        """Counters for a live view: started, answered, failed, in progress, by carrier..."""
        if self._dialer is None:
            return Dialer(self.settings, ("", 0), 0.0).snapshot()
        return self._dialer.snapshot()

    # -- the loop ------------------------------------------------------------------------------
    def _receive(self, data: bytes, source: tuple[str, int]) -> None:
        if self._dialer is None or self._loop is None:
            return
        self._dialer.receive(data, source, self._loop.time())
        self._flush()

    def _on_timer(self) -> None:
        assert self._dialer is not None and self._loop is not None
        self._timer = self._timer_at = None
        self._dialer.handle_timer(self._loop.time())
        self._flush()

    def _flush(self) -> None:
        dialer, transport, loop = self._dialer, self._transport, self._loop
        assert dialer is not None and transport is not None and loop is not None
        for data, addr in dialer.datagrams_to_send():
            transport.sendto(data, addr)
        deadline = dialer.deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if deadline is None else loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
        while (record := dialer.next_record()) is not None:
            if self.on_call_end is not None:
                try:
                    self.on_call_end(record)
                except Exception as exc:  # the hook's bug: run() raises it
                    if self._finished is not None and not self._finished.done():
                        self._finished.set_exception(exc)
        if dialer.done:
            self._finish()

    def _finish(self) -> None:
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)
