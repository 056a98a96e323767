"""The asyncio adapter of a simulated carrier: one UDP socket, one timer, nothing decided here.

The socket is a plain non-blocking one watched with ``add_reader`` rather than
an asyncio datagram transport, so that opening and closing it happen at once,
inside :meth:`SimCarrier.set_mode`: when ``killed`` returns, the port is
closed and the kernel already answers ICMP port unreachable; when it is left,
the port is bound again before ``set_mode`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from ._carrier_core import CarrierCore, Datagram, check_name
from ._carrier_mode import Mode
from ._carrier_registrar import RegistrarConfig

_BATCH = 64  # datagrams read per wake-up, so one busy carrier cannot starve the loop


class SimCarrier:
    """A carrier simulator on ``host:port`` (UDP). Its methods run on the event loop's thread."""

    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: Mode | None = None,
        *,
        registrar: RegistrarConfig | None = None,
    ) -> None:
        self.name = check_name(name)
        self.host = host
        self.port = port
        self.registrar = registrar
        #: Called after every mode change (the command prints a line).
        self.on_mode_change: Callable[[SimCarrier, Mode], None] | None = None
        self._mode = mode if mode is not None else Mode("healthy")
        self._core: CarrierCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def listening(self) -> bool:
        return self._sock is not None

    async def start(self) -> None:
        """Bind ``host:port`` (port 0: a free one, then kept in ``self.port``).

        Raises OSError if the port cannot be bound. Started ``killed``, the port
        is bound once (to fix it) and closed at once.
        """
        self._loop = asyncio.get_running_loop()
        self._core = CarrierCore(self.name, self._mode, self._loop.time(), registrar=self.registrar)
        self._open()
        if self._mode.name == "killed":
            self._close()

    def set_mode(self, mode: Mode) -> None:
        """Switch to ``mode`` now. Leaving ``killed`` re-binds the same port (OSError if taken)."""
        self._mode = mode
        if self._core is None or self._loop is None:
            return  # not started: start() applies it
        self._core.set_mode(mode, self._loop.time())
        if mode.name == "killed":
            self._close()
        elif self._sock is None:
            self._open()
        self._rearm()
        if self.on_mode_change is not None:
            self.on_mode_change(self, mode)

    def counters(self) -> dict[str, object]:
        """Mode and counters (see ``_carrier_counters``), JSON-able."""
        out: dict[str, object] = {"name": self.name, "listen": f"{self.host}:{self.port}"}
        if self._core is None or self._loop is None:
            out["mode"] = self._mode.name
            return out
        out.update(self._core.snapshot(self._loop.time()))
        out["listening"] = self.listening
        return out

    def registered(self) -> bool:
        """Whether its registrar holds a live binding (False without a registrar)."""
        core, loop = self._core, self._loop
        if core is None or loop is None or core.registrar is None:
            return False
        return core.registrar.registered(loop.time())

    def register_log(self) -> list[tuple[float, str]]:
        """Every new REGISTER and its outcome, as (event-loop time, what); see the core."""
        return [] if self._core is None else list(self._core.register_log)

    async def stop(self) -> None:
        self._close()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    # -- socket ----------------------------------------------------------------------
    def _open(self) -> None:
        assert self._loop is not None and self._core is not None
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._core.local = (self.host, self.port)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._readable)

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    def _readable(self) -> None:
        sock, core, loop = self._sock, self._core, self._loop
        assert core is not None and loop is not None
        for _ in range(_BATCH):
            if sock is None or sock is not self._sock:
                break
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error reported on the socket: nothing to read
            self._send(core.receive(data, (str(addr[0]), int(addr[1])), loop.time()))
        self._rearm()

    def _send(self, datagrams: list[Datagram]) -> None:
        for d in datagrams:
            if self._sock is None:
                return
            try:
                self._sock.sendto(d.data, d.addr)
            except OSError:
                assert self._core is not None
                self._core.counters.send_errors += 1

    # -- the core's one timer ------------------------------------------------------------
    def _rearm(self) -> None:
        if self._core is None or self._loop is None:
            return
        deadline = self._core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)
        self._timer_at = deadline

    def _on_timer(self) -> None:
        assert self._core is not None and self._loop is not None
        at = self._timer_at or 0.0
        self._timer = self._timer_at = None
        # The loop may run a timer a clock tick early: it is due all the same.
        self._send(self._core.handle_timer(max(self._loop.time(), at)))
        self._rearm()
