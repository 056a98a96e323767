"""Talking to systemd: readiness, status, reload, stop and the watchdog over ``$NOTIFY_SOCKET``.

The protocol is sd_notify(3): newline-separated ``KEY=value`` assignments in one
datagram to an AF_UNIX socket whose path is in ``$NOTIFY_SOCKET`` (a leading ``@``
names the abstract namespace). No library is needed for that, and none is used.

Without ``$NOTIFY_SOCKET`` (not run by systemd, or ``Type=`` is not ``notify``)
every call here does nothing. A send that fails (systemd gone, its queue full) is
counted and dropped: the router never waits on its supervisor, and never stops
because of it.

The watchdog is a timer on the event loop itself: a ping goes out only when the
loop runs its callbacks, so a loop that is stuck (a blocking call, a runaway
computation) stops the pings, and systemd kills and restarts the router after
``WatchdogSec=``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .health import State

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("trunkguard.service")

STATUS_EVERY = 5.0  # seconds between STATUS= updates, beside the watchdog's pings


def message(**fields: str | int) -> bytes:
    """One sd_notify datagram: ``KEY=value`` lines, in the order given.

    Values are single lines: a newline inside one would start a new assignment,
    so it is replaced by a space.
    """
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ").replace("\r", " ")
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode("utf-8", errors="replace")


def socket_address(value: str) -> str | bytes | None:
    """The address in ``$NOTIFY_SOCKET``: a path, or ``@name`` in the abstract namespace.

    None for what is not an AF_UNIX address (systemd also knows ``vsock:``, for
    virtual machines; the router does not run as one's init).
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None if there is no watchdog.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is for: another
    process (a child that inherited the environment) must not ping.
    """
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1e6 / 2


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``MONOTONIC_USEC=`` wants it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """The sd_notify messages of one process; inert without ``$NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        self.sent = 0
        self.failed = 0  # datagrams systemd did not take (gone, queue full)
        self._sock: socket.socket | None = None
        self._addr: str | bytes | None = None
        self.interval: float | None = None  # seconds between watchdog pings
        raw = env.get("NOTIFY_SOCKET", "")
        if not raw:
            return
        addr = socket_address(raw)
        if addr is None:
            log.warning("NOTIFY_SOCKET %r: not an AF_UNIX socket; not notifying systemd", raw)
            return
        self._addr = addr
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError as exc:
            log.warning("cannot make the socket to notify systemd: %s", exc)
            return
        sock.setblocking(False)
        self._sock = sock
        self.interval = watchdog_interval(env, pid)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram; False if there is no socket or systemd did not take it."""
        if self._sock is None or self._addr is None:
            return False
        data = message(**fields)
        try:
            self._sock.sendto(data, self._addr)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 1000 == 0:
                log.warning("notifying systemd failed (%d so far): %s", self.failed, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def reloading(self) -> None:
        # systemd 253+ (Type=notify-reload) matches the reload by this timestamp.
        self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading the config")

    def stopping(self, status: str) -> None:
        self.send(STOPPING=1, STATUS=status)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Heartbeat:
    """Watchdog pings, and a fresh ``STATUS=`` now and then, from a timer on the event loop.

    ``status`` is called on the loop to say what the router is doing (calls,
    targets up); it must be quick.
    """

    def __init__(
        self,
        notifier: Notifier,
        loop: asyncio.AbstractEventLoop,
        status: Callable[[], str],
        status_every: float = STATUS_EVERY,
    ) -> None:
        self.notifier = notifier
        self.loop = loop
        self.status = status
        self.status_every = status_every
        self.quiet = False  # once stopping, the status says so and is not replaced
        self._handle: asyncio.TimerHandle | None = None
        self._next_status = 0.0

    def start(self) -> None:
        if not self.notifier.enabled:
            return
        if self.notifier.interval is not None:
            log.info("systemd watchdog: a ping every %gs", self.notifier.interval)
        self._next_status = self.loop.time() + self.status_every
        self._tick()

    def _period(self) -> float:
        if self.notifier.interval is None:
            return self.status_every
        return min(self.notifier.interval, self.status_every)

    def _tick(self) -> None:
        now = self.loop.time()
        if self.notifier.interval is not None:
            self.notifier.watchdog()
        if now >= self._next_status and not self.quiet:
            self._next_status = now + self.status_every
            try:
                self.notifier.status(self.status())
            except Exception:  # a status is nice to have; the pings must go on
                log.exception("service status failed")
        self._handle = self.loop.call_later(self._period(), self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def router_status(runtime: Runtime) -> str:
    """One line for ``systemctl status``: calls now, and how many targets are UP."""
    proxy = runtime.proxy
    states = [h.state for h in runtime.health.targets.values()]
    up = sum(1 for s in states if s is State.UP)
    setup = proxy.open_work()["calls_unanswered"]
    answered = proxy.active()["dialogs"]
    head = "draining: " if proxy.draining else ""
    return f"{head}{setup} calls in setup, {answered} answered; {up}/{len(states)} targets UP"
