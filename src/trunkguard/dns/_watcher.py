"""Carrier names kept resolved in the background on the running asyncio loop.

One task per watched name: resolve, hand the result to :func:`refresh_step` (the rules live
there), report a change, sleep until the next refresh. The router reads :meth:`current`,
which never awaits and never touches the network; the call path does no DNS.
``on_change`` is a plain callback run on the loop, including for each name's first result;
an exception in it is logged and does not stop the watching.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from ._refresh import Refresh, refresh_step
from ._resolver import Resolver
from ._rfc3263 import Query, Resolution
from ._settings import DnsSettings

logger = logging.getLogger("trunkguard.dns")

OnChange = Callable[[str, Resolution], None]


class _Entry:
    __slots__ = ("first", "name", "query", "resolving", "state", "stopping", "task")

    def __init__(self, name: str, query: Query) -> None:
        self.name = name
        self.query = query
        self.state = Refresh()
        self.task: asyncio.Task[None] | None = None
        self.first = asyncio.Event()
        self.resolving = False  # a query is out (else the task sleeps until the next)
        self.stopping = False  # retired or stopped: end after the query that is out


class DnsWatcher:
    """Keeps a set of named queries resolved and fresh; see the module docstring.

    ``add``/``remove`` may be called before ``start`` or, on the loop, while running.
    """

    def __init__(
        self,
        settings: DnsSettings | None = None,
        on_change: OnChange | None = None,
        *,
        resolver: Resolver | None = None,
    ) -> None:
        self.settings = settings if settings is not None else DnsSettings()
        self.resolver = resolver if resolver is not None else Resolver(self.settings)
        self.on_change = on_change
        self._entries: dict[str, _Entry] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._running = False

    def add(self, name: str, query: Query) -> None:
        """Watch ``query`` under ``name`` (the carrier's name). The same query again is a
        no-op; a different one replaces the old, which is then forgotten."""
        old = self._entries.get(name)
        if old is not None:
            if old.query == query:
                return
            self._retire(old)
        entry = self._entries[name] = _Entry(name, query)
        if self._running:
            self._launch(entry)

    def remove(self, name: str) -> None:
        """Stop watching ``name``; unknown names are ignored."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._retire(entry)

    def current(self, name: str) -> Resolution | None:
        """The latest resolution of ``name``, or None before its first one."""
        entry = self._entries.get(name)
        return entry.state.current if entry is not None else None

    def names(self) -> list[str]:
        return list(self._entries)

    async def start(self) -> None:
        """Resolve every query at once, wait for the results up to ``initial_timeout``,
        and keep refreshing them in the background."""
        if self._running:
            return
        self._running = True
        for entry in self._entries.values():
            self._launch(entry)
        waits = [asyncio.ensure_future(e.first.wait()) for e in self._entries.values()]
        if not waits:
            return
        try:
            await asyncio.wait(waits, timeout=self.settings.initial_timeout)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        late = [e.name for e in self._entries.values() if e.state.current is None]
        if late:
            logger.warning(
                "not resolved within %gs, still trying: %s",
                self.settings.initial_timeout,
                ", ".join(late),
            )

    async def stop(self) -> None:
        """End every watch, and wait until they have all ended.

        A task asleep until its next refresh is cancelled at once. A query that
        is out may finish, up to ``lifetime``, and is cancelled only then:
        cancelled in the middle of opening its socket, it could leave the socket
        open.
        """
        self._running = False
        tasks = list(self._retiring)
        for entry in self._entries.values():
            if entry.task is not None:
                tasks.append(entry.task)
                self._end(entry, entry.task)
            entry.task = None
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.lifetime)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._retiring.clear()

    @staticmethod
    def _end(entry: _Entry, task: asyncio.Task[None]) -> None:
        entry.stopping = True
        if not entry.resolving:
            task.cancel()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _launch(self, entry: _Entry) -> None:
        entry.task = asyncio.get_running_loop().create_task(
            self._watch(entry), name=f"dns {entry.name}"
        )

    def _retire(self, entry: _Entry) -> None:
        task, entry.task = entry.task, None
        if task is not None and not task.done():
            self._end(entry, task)
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _watch(self, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()
        while not entry.stopping:
            entry.resolving = True
            try:
                result = await self.resolver.resolve(entry.query)
            except Exception as exc:
                logger.exception("%s: resolving %s failed", entry.name, entry.query)
                error = f"{entry.query.host}: resolver error: {type(exc).__name__}"
                result = Resolution((), 0.0, error, transient=True)
            finally:
                entry.resolving = False
            if entry.stopping:
                return
            step = refresh_step(entry.state, result, loop.time(), self.settings)
            entry.state = step.state
            if step.changed:
                level = logging.INFO if result.error is None else logging.WARNING
                logger.log(level, "%s (%s): %s", entry.name, entry.query, step.message)
                self._notify(entry.name, step.state.current)
            entry.first.set()
            await asyncio.sleep(step.delay)

    def _notify(self, name: str, resolution: Resolution | None) -> None:
        if self.on_change is None or resolution is None:
            return
        try:
            self.on_change(name, resolution)
        except Exception:
            logger.exception("%s: on_change callback failed", name)
