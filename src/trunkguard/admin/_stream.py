"""Server-Sent Events to the dashboards: every client gets the same messages, none waits.

Each client has a bounded queue of encoded messages. A broadcast only appends
to the queues (``put_nowait``), so the event loop never waits for a browser; a
client whose queue is full, or whose socket takes longer than ``write_timeout``
to take one message, is dropped and counted. Its page reconnects by itself
(EventSource does) and starts again from a snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("trunkguard.admin")

MAX_CLIENTS = 16
QUEUE = 64  # messages a client may lag behind
WRITE_TIMEOUT = 10.0


def encode(event: str, data: Any) -> bytes:
    # One line of JSON: SSE ends a message at a blank line, and JSON has no raw newline.
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Client:
    __slots__ = ("closed", "peer", "queue", "session")

    def __init__(self, session: str | None, peer: str | None, size: int) -> None:
        self.session = session  # the login session's key; None for a bearer-token client
        self.peer = peer
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Make room, then the end mark: the writer stops at once, whatever it had queued.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class StreamHub:
    def __init__(
        self,
        count: Callable[[str], None],
        *,
        max_clients: int = MAX_CLIENTS,
        queue: int = QUEUE,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.count = count  # bumps a named counter of the router's
        self.max_clients = max_clients
        self.queue = queue
        self.write_timeout = write_timeout
        self.clients: set[_Client] = set()
        self.closing = False

    def broadcast(self, event: str, data: Any) -> None:
        if not self.clients:
            return
        message = encode(event, data)
        for client in list(self.clients):
            if client.closed:
                continue
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._drop(client, "too slow (its queue is full)")

    def _drop(self, client: _Client, why: str) -> None:
        client.close()
        self.clients.discard(client)
        self.count("dashboard_stream_dropped")
        log.info("dashboard stream to %s dropped: %s", client.peer, why)

    def close_session(self, key: str) -> None:
        for client in [c for c in self.clients if c.session == key]:
            client.close()
            self.clients.discard(client)

    def close_all(self) -> None:
        """At shutdown: every stream ends now, so that stopping never waits on a browser."""
        self.closing = True
        for client in list(self.clients):
            client.close()
        self.clients.clear()

    def sessions(self) -> set[str]:
        return {c.session for c in self.clients if c.session is not None}

    async def serve(
        self, request: web.Request, session: str | None, snapshot: Callable[[], Any]
    ) -> web.StreamResponse:
        if self.closing:
            raise web.HTTPServiceUnavailable(reason="the router is stopping")
        if len(self.clients) >= self.max_clients:
            self.count("dashboard_stream_refused")
            raise web.HTTPServiceUnavailable(
                reason=f"too many dashboard streams (at most {self.max_clients})"
            )
        client = _Client(session, request.remote, self.queue)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        self.clients.add(client)
        self.count("dashboard_streams")
        try:
            # retry: how long EventSource waits before it reconnects (ms).
            await resp.write(b"retry: 2000\n\n" + encode("snapshot", snapshot()))
            while True:
                message = await client.queue.get()
                if message is None:
                    break
                try:
                    await asyncio.wait_for(resp.write(message), self.write_timeout)
                except TimeoutError:
                    self._drop(client, f"took over {self.write_timeout:g}s to take a message")
                    break
        except ConnectionError:
            pass  # the browser went away: nothing to tell it
        finally:
            client.close()
            self.clients.discard(client)
        return resp
