"""A stand-in for systemd's notify socket: an AF_UNIX datagram socket the router sends to.

Bound in the abstract namespace (``NOTIFY_SOCKET=@name``), so no path length or
file is involved; each datagram is kept with the time it was read.
"""

from __future__ import annotations

import socket
import time
import uuid
from types import TracebackType
from typing import Self


class NotifySocket:
    def __init__(self) -> None:
        self.name = f"trunkguard-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name.encode())
        self.sock.setblocking(False)
        self.received: list[tuple[float, dict[str, str]]] = []
        self._cursor = 0  # received[:_cursor] were looked at

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": "@" + self.name}

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            fields = dict(
                line.split("=", 1) for line in data.decode().splitlines() if "=" in line
            )
            self.received.append((time.monotonic(), fields))

    def drain(self) -> list[dict[str, str]]:
        """The datagrams not looked at yet (read now), in order; they count as looked at."""
        self._read()
        out = [f for _, f in self.received[self._cursor :]]
        self._cursor = len(self.received)
        return out

    def wait_for(self, key: str, value: str = "1", timeout: float = 15.0) -> dict[str, str]:
        """The next datagram not looked at yet with ``key=value`` (polled, bounded); those
        before it count as looked at."""
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            while self._cursor < len(self.received):
                fields = self.received[self._cursor][1]
                self._cursor += 1
                if fields.get(key) == value:
                    return fields
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        seen = [f for _, f in self.received[-20:]]
        raise AssertionError(f"no {key}={value} within {timeout}s; last seen: {seen}")

    def count(self, key: str, timeout: float, at_least: int) -> int:
        """Datagrams with ``key=1`` read until ``at_least`` came or ``timeout`` passed."""
        n = 0
        deadline = time.monotonic() + timeout
        while n < at_least and time.monotonic() < deadline:
            n += sum(1 for f in self.drain() if f.get(key) == "1")
            time.sleep(0.01)
        return n

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
