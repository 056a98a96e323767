"""The asyncio adapter: sockets in, sockets out, one timer for the core.

Thin on purpose: every datagram or stream frame goes to :class:`Proxy`; after
each input, what it put in its outbox is sent, its events (attempts, state
changes) go to ``on_events``, and one ``call_at`` stays armed for its next
deadline. The only thing decided here is which socket carries a message:

- UDP to a target leaves from a socket *connected* to that target, so the
  kernel's ICMP "port unreachable" comes back to us as an error on that
  socket (an unconnected socket cannot tell which destination failed), and
  the call moves to the next carrier at once instead of after a timeout;
- an answer to a peer leaves from the listening socket its request arrived
  on (the flow's ``local``), so a router on two addresses answers from each;
- TCP reuses the connection to or from a peer, and opens one on demand; a
  refused or reset connection is a transport error for the core;
- a send that fails (any OSError, an address the socket's family cannot
  reach) is a transport error for that flow too: its branch fails over, and
  the rest of the batch, and the timers, go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

from ..routing import TlsClient
from ..sip import ParseError, StreamFramer
from ._core import Proxy
from ._overload import Load
from ._tls import client_context, describe
from ._types import Addr, Flow

log = logging.getLogger("trunkguard.proxy")

HEARTBEAT = 0.05  # seconds between samples of the router's load (loop lag, socket queues)
STALL = 0.25  # a heartbeat this late means the loop was stalled
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux: a socket's memory, and its drops
_MEMINFO = struct.Struct("9I")  # rmem_alloc, rcvbuf, ..., drops (SK_MEMINFO_DROPS = 8)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


MAX_FLUSH_ROUNDS = 1000  # sends that fail make more work; this bounds one flush
FLOW_CACHE = 4096  # peers whose Flow a listener keeps made
MAX_CONNECTIONS = 10_000  # TCP/TLS connections open at once; more are closed at connect
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux: bind an address not (yet) on the host
IPV6_FREEBIND = 78


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, router: Router) -> None:
        self.router = router
        self.local: Addr | None = None
        self.family = socket.AF_INET
        self._flows: dict[tuple[str | int, ...], Flow] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        name = transport.get_extra_info("sockname")
        self.local = (str(name[0]), int(name[1]))
        self.family = transport.get_extra_info("socket").family

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        # One Flow per peer, made once: a busy dialer sends from a handful of addresses.
        flow = self._flows.get(addr)
        if flow is None:
            if len(self._flows) >= FLOW_CACHE:
                self._flows.clear()
            flow = Flow("udp", (str(addr[0]), int(addr[1])), self.local)
            self._flows[addr] = flow
        self.router.receive(data, flow)

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
    """One TCP or TLS connection, from a peer or opened toward one; frames go to the core."""

    def __init__(self, router: Router, transport: str = "tcp", remote: Addr | None = None) -> None:
        self.router = router
        self.kind = transport  # "tcp" or "tls"
        self.remote = remote
        self.framer = StreamFramer(router.proxy.settings.limits)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = (str(peer[0]), int(peer[1]))
        router = self.router
        if not router.accepts(Flow(self.kind, self.remote), len(router.tcp)):
            self.remote = None  # never in the table, so its loss is no transport error
            transport.close()
            return
        router.tcp[(self.kind, self.remote)] = self

    def data_received(self, data: bytes) -> None:
        if self.remote is None:
            return  # refused at connect; closing
        try:
            frames = self.framer.feed(data)
        except ParseError as exc:
            self.router.proxy.counters["tcp_framing_errors"] += 1
            log.warning("closing %s connection from %s: %s", self.kind.upper(), self.remote, exc)
            if self.transport is not None:
                self.transport.close()
            return
        flow = Flow(self.kind, self.remote)
        for frame in frames:
            self.router.receive(frame, flow)

    def connection_lost(self, exc: Exception | None) -> None:
        remote = self.remote
        if remote is not None and self.router.tcp.get((self.kind, remote)) is self:
            del self.router.tcp[(self.kind, remote)]
            if exc is not None:
                why = describe(exc) if self.kind == "tls" else "connection reset"
                self.router.transport_error(Flow(self.kind, remote), why)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class Router:
    """Owns the sockets and the loop timer of one :class:`Proxy`."""

    def __init__(self, proxy: Proxy, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.proxy = proxy
        self.loop = loop or asyncio.get_running_loop()
        self.udp: dict[Addr, _UdpListener] = {}  # by local address
        self.on_events: Callable[[], None] | None = None  # drains proxy.take_events()
        self.carriers: dict[Addr, _CarrierSocket] = {}
        # Stream connections by (transport, peer): reused for every message to that peer.
        self.tcp: dict[tuple[str, Addr], _TcpConnection] = {}
        self._pending_tcp: dict[tuple[str, Addr], list[bytes]] = {}
        self.tls_server: ssl.SSLContext | None = None  # for tls: listeners
        self._tls_clients: dict[TlsClient, ssl.SSLContext] = {}
        self._servers: list[asyncio.Server] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.bound: list[tuple[str, str, int]] = []
        self._beat_at = 0.0
        self._heartbeat_handle: asyncio.TimerHandle | None = None
        self._busy = 0.0  # seconds spent handling input since the last sample
        self._inputs = 0
        self._drops: dict[int, int] = {}  # kernel drops so far, by socket
        self._meminfo = True  # SO_MEMINFO works here
        # HA: while this returns False (a standby, a fenced node) every datagram and frame
        # in and out is dropped and counted; the sockets stay bound, so serving resumes
        # with the next packet. freebind: listeners bind the service address before the
        # host holds it (IP_FREEBIND), so the standby is ready the moment it moves here.
        self.gate: Callable[[], bool] | None = None
        self.freebind = False

    # -- set-up -----------------------------------------------------------------------------
    async def start(self, listeners: list[tuple[str, str, int]]) -> None:
        """Bind every ``(transport, host, port)``; port 0 picks a free one (see ``bound``)."""
        for transport, host, port in listeners:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            if transport == "udp":
                if self.freebind:
                    udp, listener = await self.loop.create_datagram_endpoint(
                        lambda: _UdpListener(self),
                        sock=_freebind_socket(family, socket.SOCK_DGRAM, host, port),
                    )
                else:
                    udp, listener = await self.loop.create_datagram_endpoint(
                        lambda: _UdpListener(self), local_addr=(host, port), family=family
                    )
                assert listener.local is not None
                self.udp[listener.local] = listener
                self._grow_buffers(udp.get_extra_info("socket"))
                self.bound.append(("udp", host, listener.local[1]))
            else:
                if transport == "tls" and self.tls_server is None:
                    raise ValueError("a tls: listener needs a certificate (the tls: section)")
                tls = self.tls_server if transport == "tls" else None
                if self.freebind:
                    sock = _freebind_socket(family, socket.SOCK_STREAM, host, port)
                    server = await self.loop.create_server(
                        partial(_TcpConnection, self, transport), sock=sock, ssl=tls
                    )
                else:
                    server = await self.loop.create_server(
                        partial(_TcpConnection, self, transport),
                        host=host,
                        port=port,
                        family=family,
                        ssl=tls,
                    )
                self._servers.append(server)
                self.bound.append((transport, host, server.sockets[0].getsockname()[1]))
        host, port = self.proxy.settings.advertise
        if port == 0:
            # Listening on port 0 (tests): advertise the port the kernel picked.
            self.proxy.set_advertise((host, self.bound[0][2]))
        self.proxy.set_own_addresses([(h, p) for _, h, p in self.bound])
        await self.sync_targets()
        self._rearm()
        self._beat_at = self.loop.time() + HEARTBEAT
        self._heartbeat_handle = self.loop.call_at(self._beat_at, self._heartbeat)

    def _heartbeat(self) -> None:
        # A timer that fires late means the loop was busy (or the process paused): the
        # core must not take the backlog's late answers for silent carriers.
        now = self.loop.time()
        lag = max(0.0, now - self._beat_at)  # never below 0: the loop fires on time or late
        try:
            if lag > STALL:
                self.proxy.note_stall(lag, now)
            queued, drops, limit = self._socket_load()
            busy = self._busy / max(HEARTBEAT + lag, 1e-6)
            load = Load(queued, drops, lag, min(1.0, busy), _resident(), self._inputs, limit)
            self._busy, self._inputs = 0.0, 0
            self.proxy.note_load(load, now)
            self.flush()
        except Exception:  # the sampling must never stop: it is what sees overload
            self.proxy.counters["load_sample_errors"] += 1
            log.exception("load sample failed")
        finally:
            self._beat_at = now + HEARTBEAT
            self._heartbeat_handle = self.loop.call_at(self._beat_at, self._heartbeat)

    def _sockets(self) -> list[socket.socket]:
        out = []
        transports = [u.transport for u in self.udp.values()]
        transports += [c.transport for c in self.carriers.values()]
        for transport in transports:
            if transport is not None and not transport.is_closing():
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    out.append(sock)
        return out

    def _socket_load(self) -> tuple[int, int, int]:
        """Bytes waiting in the fullest UDP receive queue, the kernel's drops since the last
        sample over all of them (what SO_RXQ_OVFL would report datagram by datagram), and
        half the smallest receive buffer the kernel granted (0: unknown)."""
        if not self._meminfo:
            return 0, 0, 0
        queued = dropped = 0
        limit = 0
        seen: dict[int, int] = {}
        for sock in self._sockets():
            try:
                raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
                info = _MEMINFO.unpack(raw[: _MEMINFO.size])
            except (OSError, struct.error) as exc:
                log.info("no socket queue figures on this system (SO_MEMINFO): %s", exc)
                self._meminfo = False
                return 0, 0, 0
            fd = sock.fileno()
            queued = max(queued, info[0])
            if info[1]:
                limit = info[1] // 2 if not limit else min(limit, info[1] // 2)
            before = self._drops.get(fd)
            if before is not None and info[8] > before:
                dropped += info[8] - before
            seen[fd] = info[8]
        self._drops = seen
        return queued, dropped, limit

    @staticmethod
    def _grow_buffers(sock: socket.socket) -> None:
        # Bursts of hundreds of calls per second overflow the default receive buffer.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)

    async def sync_targets(self) -> None:
        """A connected UDP socket per target (at start, and after a reload); close the rest."""
        wanted = {t.flow.addr: t.flow for t in self.proxy.targets if t.flow.transport == "udp"}
        for addr in [a for a in self.carriers if a not in wanted]:
            carrier = self.carriers.pop(addr)
            if carrier.transport is not None:
                carrier.transport.close()
        for addr, flow in wanted.items():
            if addr not in self.carriers:
                try:
                    await self._connect_carrier(flow)
                except OSError as exc:
                    # Its sends fall back to a listener; ICMP errors are then only counted.
                    log.warning("cannot open a socket toward %s: %s", flow, exc)

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
        for listener in self.udp.values():
            if listener.transport is not None:
                listener.transport.close()
        for server in self._servers:
            await server.wait_closed()

    def accepts(self, flow: Flow, open_now: int) -> bool:
        """May a stream connection from ``flow`` stay open? Not from a source that may send
        nothing (outside ``allow``, or banned), nor past ``MAX_CONNECTIONS``."""
        proxy = self.proxy
        counters = proxy.counters
        if open_now >= MAX_CONNECTIONS:
            counters["connections_refused_full"] += 1
            return False
        registrar = (flow.transport, flow.addr) in proxy.registrars
        if not registrar and not proxy.admission.allowed(flow):
            counters["connections_refused_source"] += 1
            return False
        if proxy.sources.banned(flow.addr[0]):
            counters["connections_refused_banned"] += 1
            return False
        return True

    # -- the loop -------------------------------------------------------------------------
    def receive(self, data: bytes, flow: Flow) -> None:
        if self.gate is not None and not self.gate():
            self.proxy.counters["ha_dropped_in"] += 1
            return
        started = time.perf_counter()
        self.proxy.receive(data, flow, self.loop.time())
        self.flush()
        self._busy += time.perf_counter() - started
        self._inputs += 1

    def transport_error(self, flow: Flow, why: str | None = None) -> None:
        self.proxy.transport_error(flow, self.loop.time(), why)
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.proxy.run_timers(self.loop.time())
        finally:
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
        """Do what the core queued: events to ``on_events``, datagrams out, the timer re-armed."""
        proxy = self.proxy
        try:
            for _ in range(MAX_FLUSH_ROUNDS):
                if proxy.events and self.on_events is not None:
                    self.on_events()  # may queue more (a probe after a state change)
                if not proxy.outbox:
                    break
                outbox, proxy.outbox = proxy.outbox, []
                if self.gate is not None and not self.gate():
                    proxy.counters["ha_dropped_out"] += len(outbox)
                    continue
                failed = [flow for flow, data in outbox if not self._send(flow, data)]
                if failed:
                    now = self.loop.time()
                    for flow in dict.fromkeys(failed):
                        proxy.transport_error(flow, now)
            else:
                proxy.counters["flush_rounds_exceeded"] += 1
        finally:
            self._rearm()

    def _send(self, flow: Flow, data: bytes) -> bool:
        """Send one message; False when it could not be sent (counted and logged)."""
        try:
            self._send_or_raise(flow, data)
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            counters = self.proxy.counters
            counters["send_errors"] += 1
            if counters["send_errors"] in (1, 10, 100) or counters["send_errors"] % 1000 == 0:
                log.warning(
                    "cannot send to %s: %s (%d send errors so far)",
                    flow,
                    exc,
                    counters["send_errors"],
                )
            return False
        return True

    def _listener(self, flow: Flow) -> asyncio.DatagramTransport:
        """The listening socket to send ``flow`` from: the one it came in on, else one that
        can reach its address family. An IPv6 peer and IPv4 listeners only: no socket."""
        family = socket.AF_INET6 if ":" in flow.addr[0] else socket.AF_INET
        listener = self.udp.get(flow.local) if flow.local is not None else None
        if listener is None or listener.family != family:
            listener = next((u for u in self.udp.values() if u.family == family), None)
        if listener is None or listener.transport is None:
            kind = "IPv6" if family == socket.AF_INET6 else "IPv4"
            raise OSError(f"no {kind} UDP listener to reach {flow} from")
        return listener.transport

    def _send_or_raise(self, flow: Flow, data: bytes) -> None:
        if flow.transport == "udp":
            carrier = self.carriers.get(flow.addr) if flow.local is None else None
            if carrier is not None and carrier.transport is not None:
                carrier.transport.sendto(data)
                return
            self._listener(flow).sendto(data, flow.addr)
            return
        key = (flow.transport, flow.addr)
        conn = self.tcp.get(key)
        if conn is not None:
            conn.send(data)
            return
        pending = self._pending_tcp.get(key)
        if pending is not None:
            pending.append(data)
            return
        self._pending_tcp[key] = [data]
        self.loop.create_task(self._open_stream(flow))

    def _client_tls(self, flow: Flow) -> tuple[ssl.SSLContext, str]:
        """The TLS context and server name toward ``flow``'s target (OSError if none)."""
        target = next((t for t in self.proxy.targets if t.flow == flow and t.tls), None)
        tls = target.tls if target is not None else None
        if tls is None:
            tls = self.proxy.registrars.get((flow.transport, flow.addr))
        if tls is None:
            # A peer that is not a carrier (a caller's new connection, say): nothing to check
            # its certificate against, so the router does not open one.
            raise OSError(f"no TLS settings for {flow}: it is not a carrier")
        ctx = self._tls_clients.get(tls)
        if ctx is None:
            ctx = self._tls_clients[tls] = client_context(tls)
        return ctx, tls.server_name

    async def _open_stream(self, flow: Flow) -> None:
        host, port = flow.addr
        key = (flow.transport, flow.addr)
        tls = flow.transport == "tls"
        try:
            ctx, name = self._client_tls(flow) if tls else (None, None)
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _TcpConnection(self, flow.transport, flow.addr),
                    host,
                    port,
                    ssl=ctx,
                    server_hostname=name,
                ),
                timeout=self.proxy.settings.invite_timeout,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            self._pending_tcp.pop(key, None)
            why = describe(exc) if tls else f"connection failed: {exc or type(exc).__name__}"
            if isinstance(exc, TimeoutError):
                why = "connection timed out"
            refused = not tls and isinstance(exc, ConnectionRefusedError)
            if refused:
                why = "port unreachable"
            log.info("%s connection to %s failed: %s", flow.transport.upper(), flow, why)
            # A refused connection is a closed port: the request that found it says so.
            self.transport_error(flow, None if refused else why)
            return
        for data in self._pending_tcp.pop(key, []):
            conn.send(data)


async def serve(
    proxy: Proxy,
    listeners: list[tuple[str, str, int]],
    stop: asyncio.Event,
    on_ready: Callable[[Router], Awaitable[None] | None] | None = None,
    before_stop: Callable[[Router], Awaitable[None]] | None = None,
    tls_server: ssl.SSLContext | None = None,
    *,
    gate: Callable[[], bool] | None = None,
    freebind: bool = False,
) -> Router:
    """Run the router until ``stop`` is set; return it (stopped) for its counters.

    ``before_stop`` runs while the sockets are still open (to unregister, say).
    ``gate`` and ``freebind``: see :class:`Router` (an HA node's).
    """
    router = Router(proxy)
    router.tls_server = tls_server
    router.gate = gate
    router.freebind = freebind
    await router.start(listeners)
    if on_ready is not None:
        started = on_ready(router)
        if started is not None:
            await started
    try:
        await stop.wait()
        if before_stop is not None:
            await before_stop(router)
    finally:
        await router.stop()
    return router


def _freebind_socket(family: int, kind: int, host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` even if the host does not hold the address yet."""
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's own
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((host, port))
        sock.setblocking(False)
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def _resident() -> int:
    """The process's resident memory in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0
