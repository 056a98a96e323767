"""The asyncio adapter: sockets in, sockets out, one timer for the core.

Thin on purpose: every datagram or stream frame goes to :class:`Proxy`, what
it puts in its outbox is sent, and one ``call_at`` stays armed for its next
deadline. The only thing decided here is which socket carries a message:

- UDP to a carrier leaves from a socket *connected* to that carrier, so the
  kernel's ICMP "port unreachable" comes back to us as an error on that
  socket (an unconnected socket cannot tell which destination failed), and
  the call moves to the next carrier at once instead of after a timeout;
- TCP reuses the connection to or from a peer, and opens one on demand; a
  refused or reset connection is a transport error for the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import cast

from ..sip import ParseError, StreamFramer
from ._core import Proxy
from ._types import Addr, Flow

log = logging.getLogger("trunkguard.proxy")

HEARTBEAT = 0.1  # seconds between checks of the event loop's lag
STALL = 0.25  # a heartbeat this late means the loop was stalled


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, router: Router) -> None:
        self.router = router

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.router.receive(data, Flow("udp", (str(addr[0]), int(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        # An unconnected socket cannot say which peer failed; count it only.
        self.router.proxy.counters["udp_errors_unattributed"] += 1


class _CarrierSocket(asyncio.DatagramProtocol):
    """A UDP socket connected to one carrier: its ICMP errors name that carrier."""

    def __init__(self, router: Router, flow: Flow) -> None:
        self.router = router
        self.flow = flow
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.router.receive(data, self.flow)

    def error_received(self, exc: Exception) -> None:
        log.info("carrier %s unreachable: %s", self.flow, exc)
        self.router.transport_error(self.flow)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, router: Router, remote: Addr | None = None) -> None:
        self.router = router
        self.remote = remote
        self.framer = StreamFramer(router.proxy.settings.limits)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = (str(peer[0]), int(peer[1]))
        self.router.tcp[self.remote] = self

    def data_received(self, data: bytes) -> None:
        assert self.remote is not None
        try:
            frames = self.framer.feed(data)
        except ParseError as exc:
            self.router.proxy.counters["tcp_framing_errors"] += 1
            log.warning("closing TCP connection from %s: %s", self.remote, exc)
            if self.transport is not None:
                self.transport.close()
            return
        flow = Flow("tcp", self.remote)
        for frame in frames:
            self.router.receive(frame, flow)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.remote is not None and self.router.tcp.get(self.remote) is self:
            del self.router.tcp[self.remote]
            if exc is not None:
                self.router.transport_error(Flow("tcp", self.remote))

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class Router:
    """Owns the sockets and the loop timer of one :class:`Proxy`."""

    def __init__(self, proxy: Proxy, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.proxy = proxy
        self.loop = loop or asyncio.get_running_loop()
        self.udp: asyncio.DatagramTransport | None = None
        self.carriers: dict[Addr, _CarrierSocket] = {}
        self.tcp: dict[Addr, _TcpConnection] = {}
        self._pending_tcp: dict[Addr, list[bytes]] = {}
        self._servers: list[asyncio.Server] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.bound: list[tuple[str, str, int]] = []
        self._beat_at = 0.0
        self._heartbeat_handle: asyncio.TimerHandle | None = None

    # -- set-up -----------------------------------------------------------------------------
    async def start(self, listeners: list[tuple[str, str, int]]) -> None:
        """Bind every ``(transport, host, port)``; port 0 picks a free one (see ``bound``)."""
        for transport, host, port in listeners:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            if transport == "udp":
                udp, _ = await self.loop.create_datagram_endpoint(
                    lambda: _UdpListener(self), local_addr=(host, port), family=family
                )
                self.udp = udp
                sock = udp.get_extra_info("socket")
                self._grow_buffers(sock)
                self.bound.append(("udp", host, sock.getsockname()[1]))
            else:
                server = await self.loop.create_server(
                    lambda: _TcpConnection(self), host=host, port=port, family=family
                )
                self._servers.append(server)
                self.bound.append(("tcp", host, server.sockets[0].getsockname()[1]))
        host, port = self.proxy.settings.advertise
        if port == 0:
            # Listening on port 0 (tests): advertise the port the kernel picked.
            self.proxy.set_advertise((host, self.bound[0][2]))
        for target in self.proxy.targets:
            if target.flow.transport == "udp" and target.flow.addr not in self.carriers:
                await self._connect_carrier(target.flow)
        self._rearm()
        self._beat_at = self.loop.time() + HEARTBEAT
        self._heartbeat_handle = self.loop.call_at(self._beat_at, self._heartbeat)

    def _heartbeat(self) -> None:
        # A timer that fires late means the loop was busy (or the process paused): the
        # core must not take the backlog's late answers for silent carriers.
        now = self.loop.time()
        lag = now - self._beat_at
        if lag > STALL:
            self.proxy.note_stall(lag, now)
            self.flush()
        self._beat_at = now + HEARTBEAT
        self._heartbeat_handle = self.loop.call_at(self._beat_at, self._heartbeat)

    @staticmethod
    def _grow_buffers(sock: socket.socket) -> None:
        # Bursts of hundreds of calls per second overflow the default receive buffer.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)

    async def _connect_carrier(self, flow: Flow) -> None:
        host, port = flow.addr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        _, proto = await self.loop.create_datagram_endpoint(
            lambda: _CarrierSocket(self, flow), remote_addr=(host, port), family=family
        )
        if proto.transport is not None:
            self._grow_buffers(proto.transport.get_extra_info("socket"))
        self.carriers[flow.addr] = proto

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._heartbeat_handle is not None:
            self._heartbeat_handle.cancel()
        for server in self._servers:
            server.close()
        for conn in list(self.tcp.values()):
            if conn.transport is not None:
                conn.transport.close()
        for carrier in self.carriers.values():
            if carrier.transport is not None:
                carrier.transport.close()
        if self.udp is not None:
            self.udp.close()
        for server in self._servers:
            await server.wait_closed()

    # -- the loop -------------------------------------------------------------------------
    def receive(self, data: bytes, flow: Flow) -> None:
        self.proxy.receive(data, flow, self.loop.time())
        self.flush()

    def transport_error(self, flow: Flow) -> None:
        self.proxy.transport_error(flow, self.loop.time())
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.proxy.run_timers(self.loop.time())
        self.flush()

    def _rearm(self) -> None:
        deadline = self.proxy.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)
        self._timer_at = deadline

    def flush(self) -> None:
        outbox = self.proxy.outbox
        if outbox:
            self.proxy.outbox = []
            for flow, data in outbox:
                self._send(flow, data)
        self._rearm()

    def _send(self, flow: Flow, data: bytes) -> None:
        if flow.transport == "udp":
            carrier = self.carriers.get(flow.addr)
            if carrier is not None and carrier.transport is not None:
                carrier.transport.sendto(data)
            elif self.udp is not None:
                self.udp.sendto(data, flow.addr)
            return
        conn = self.tcp.get(flow.addr)
        if conn is not None:
            conn.send(data)
            return
        pending = self._pending_tcp.get(flow.addr)
        if pending is not None:
            pending.append(data)
            return
        self._pending_tcp[flow.addr] = [data]
        self.loop.create_task(self._open_tcp(flow))

    async def _open_tcp(self, flow: Flow) -> None:
        host, port = flow.addr
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _TcpConnection(self, flow.addr), host, port),
                timeout=self.proxy.settings.invite_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._pending_tcp.pop(flow.addr, None)
            log.info("TCP connection to %s failed: %s", flow, exc or "timeout")
            self.transport_error(flow)
            return
        for data in self._pending_tcp.pop(flow.addr, []):
            conn.send(data)


async def serve(
    proxy: Proxy,
    listeners: list[tuple[str, str, int]],
    stop: asyncio.Event,
    on_ready: Callable[[Router], None] | None = None,
) -> Router:
    """Run the router until ``stop`` is set; return it (stopped) for its counters."""
    router = Router(proxy)
    await router.start(listeners)
    if on_ready is not None:
        on_ready(router)
    try:
        await stop.wait()
    finally:
        await router.stop()
    return router
