"""Where a level change goes: VICIdial's non-agent API, or a webhook. On asyncio.

Each delivery is bounded: a timeout per attempt, a few retries with backoff. No secret
is ever logged: not the password (in VICIdial's query string), not a webhook's secret
header, not a URL (only its scheme and host).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from ._policy import LevelChange, shown
from ._settings import VicidialSettings, WebhookSettings, origin
from ._vicidial import answer, query

_BACKOFF_MAX = 30.0
_BODY_MAX = 64 * 1024  # bytes of an answer read at most


class DeliveryFailed(Exception):
    """A change the dialer did not take; the message is safe to log (no secret in it)."""

    def __init__(self, why: str, definitive: bool = False) -> None:
        super().__init__(why)
        self.definitive = definitive  # the dialer said no: retrying now would not help


def _why(exc: BaseException) -> str:
    """A reason for a failed request without the URL (aiohttp's messages may quote it)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


class Sink:
    """One place changes go to, with its own HTTP session."""

    name = ""
    timeout = 5.0
    retries = 2
    backoff = 1.0

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.attempts = 0  # requests made, retries included

    @property
    def what(self) -> str:
        raise NotImplementedError

    async def once(self, session: aiohttp.ClientSession, change: LevelChange) -> None:
        raise NotImplementedError

    async def send(self, change: LevelChange) -> int:
        """Deliver ``change``; returns the retries it took. Raises DeliveryFailed."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2), raise_for_status=False
            )
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), _BACKOFF_MAX))
            self.attempts += 1
            try:
                await asyncio.wait_for(self.once(self._session, change), self.timeout)
                return attempt
            except DeliveryFailed as exc:
                if exc.definitive:
                    raise
                why = str(exc)
            except TimeoutError:
                why = f"no answer in {self.timeout:g}s"
            except (aiohttp.ClientError, OSError) as exc:
                why = _why(exc)
        raise DeliveryFailed(f"{why}, after {self.retries + 1} attempts")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Vicidial(Sink):
    name = "vicidial"

    def __init__(self, settings: VicidialSettings) -> None:
        super().__init__()
        self.settings = settings
        self.timeout = settings.timeout
        self.retries = settings.retries
        self.backoff = settings.backoff

    @property
    def what(self) -> str:
        return f"VICIdial at {origin(self.settings.url)}"

    async def once(self, session: aiohttp.ClientSession, change: LevelChange) -> None:
        s = self.settings
        params = query(s, change.campaign, change.new)
        async with session.get(s.url, params=params, allow_redirects=False) as resp:
            body = (await resp.content.read(_BODY_MAX)).decode("utf-8", errors="replace")
            if resp.status != 200:
                raise DeliveryFailed(f"HTTP {resp.status}", definitive=400 <= resp.status < 500)
        got = answer(body, s.password)
        if not got.ok:
            # VICIdial said why (ERROR: ..., or a NOTICE that nothing was updated).
            raise DeliveryFailed(f"VICIdial answered {got.text!r}", definitive=True)


class Webhook(Sink):
    name = "webhook"

    def __init__(self, settings: WebhookSettings, router: str) -> None:
        super().__init__()
        self.settings = settings
        self.router = router
        self.timeout = settings.timeout
        self.retries = settings.retries
        self.backoff = settings.backoff
        self.wall_offset = 0.0  # wall clock minus the loop's, set by the service

    @property
    def what(self) -> str:
        return f"webhook {origin(self.settings.url)}"

    def body(self, change: LevelChange) -> dict[str, Any]:
        return {
            "event": "dial_level",
            "router": self.router,
            "campaign": change.campaign,
            "old": None if change.old is None else shown(change.old),
            "new": shown(change.new),
            "level": change.new,
            "capacity": round(change.share, 4),
            "reason": change.reason,
            "at": change.at + self.wall_offset,
            "retry": change.retry,
        }

    async def once(self, session: aiohttp.ClientSession, change: LevelChange) -> None:
        s = self.settings
        headers = {"Content-Type": "application/json", "User-Agent": "trunkguard-dialer"}
        if s.secret is not None and s.secret_header is not None:
            headers[s.secret_header] = s.secret
        data = json.dumps(self.body(change), separators=(",", ":")).encode()
        async with session.post(s.url, data=data, headers=headers, allow_redirects=False) as resp:
            await resp.content.read(4096)
            if not 200 <= resp.status < 300:
                definitive = 400 <= resp.status < 500 and resp.status not in (408, 429)
                raise DeliveryFailed(f"HTTP {resp.status}", definitive=definitive)
