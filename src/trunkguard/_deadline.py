"""One event-loop timer kept on a pure policy's next deadline (the alerts', the dialer's).

The policies take ``now`` and say when they next need to be woken; this re-arms the
loop's timer only when that moment moved, and calls back once it comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    __slots__ = ("_armed", "_callback", "_handle")

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._armed: float | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, when: float | None) -> None:
        """Wake at ``when`` (loop time; None: not at all), unless already set for it."""
        if when == self._armed:
            return
        self.cancel()
        self._armed = when
        if when is not None:
            self._handle = loop.call_at(when, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed = None

    def _fire(self) -> None:
        self._handle = None
        self._armed = None
        self._callback()
