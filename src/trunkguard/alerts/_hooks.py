"""The hooks, on asyncio: each one a bounded queue and a worker task of its own.

Nothing here runs on the caller's path: :meth:`Hook.offer` appends to a deque
and returns. A hook that hangs holds up only its own worker, and only for its
timeout; a hook whose queue is full loses its oldest alerts (counted, logged
once per burst). No secret (a header's value, the URL's path, which for Slack
is the secret) is ever logged: a webhook is named by its scheme and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections import Counter, deque
from typing import Any

import aiohttp

from ._payload import command_args, command_env, pagerduty_body, slack_body, webhook_origin
from ._settings import COMMAND, HookSettings

log = logging.getLogger("trunkguard.alerts")

STDERR_TAIL = 400  # characters of a command's stderr kept for the log
_STDERR_MAX = 64 * 1024  # bytes read from it at most (the rest is discarded)
_BACKOFF_MAX = 30.0
_KILL_WAIT = 5.0


class HookFailed(Exception):
    """A delivery that did not succeed; the message is safe to log (no secret in it)."""


def _why(exc: BaseException) -> str:
    """A reason for a failed request without the URL (aiohttp's messages may quote it)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return type(exc).__name__


class Hook:
    def __init__(self, settings: HookSettings, counters: Counter[str]) -> None:
        self.settings = settings
        self.counters = counters
        self.queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._overflowed = 0  # dropped in the current burst
        self._busy = False
        self._proc: asyncio.subprocess.Process | None = None
        self.what = (
            f"{settings.name} ({settings.argv[0]})"
            if settings.type == COMMAND
            else f"{settings.name} ({webhook_origin(settings.url)})"
        )

    # -- on the event loop, from the router: never waits -------------------------------------
    def offer(self, body: dict[str, Any]) -> None:
        if len(self.queue) >= self.settings.queue:
            self.queue.popleft()
            self.counters["alerts_dropped"] += 1
            if not self._overflowed:
                log.warning(
                    "alert hook %s: %d alerts waiting, dropping the oldest (it is slow or hangs)",
                    self.what,
                    self.settings.queue,
                )
            self._overflowed += 1
        self.queue.append(body)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self.queue) + self._busy

    # -- the worker ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.what)

    async def _run(self) -> None:
        while True:
            if not self.queue:
                if self._overflowed:
                    log.warning(
                        "alert hook %s: caught up; %d alerts were dropped",
                        self.what,
                        self._overflowed,
                    )
                    self._overflowed = 0
                self._wake.clear()
                await self._wake.wait()
                continue
            body = self.queue.popleft()
            self._busy = True
            try:
                await self.deliver(body)
            except HookFailed as exc:
                self.counters["alerts_failed"] += 1
                log.warning("alert hook %s failed on %s: %s", self.what, _about(body), exc)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the worker
                self.counters["alerts_failed"] += 1
                log.exception("alert hook %s: unexpected error", self.what)
            else:
                self.counters["alerts_sent"] += 1
                log.info("alert hook %s: sent %s", self.what, _about(body))
            finally:
                self._busy = False

    async def stop(self, timeout: float) -> None:
        """Let the queue drain for up to ``timeout`` seconds, then stop (and kill a command)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending and loop.time() < deadline and self._task and not self._task.done():
            await asyncio.sleep(0.02)
        if self.pending:
            log.warning("alert hook %s: stopping with %d alerts unsent", self.what, self.pending)
            self.counters["alerts_dropped"] += len(self.queue)
            self.queue.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._kill()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- delivery ----------------------------------------------------------------------------
    async def deliver(self, body: dict[str, Any]) -> None:
        if self.settings.type == COMMAND:
            await self._command(body)
        else:
            await self._webhook(body)

    def _webhook_data(self, body: dict[str, Any]) -> bytes:
        s = self.settings
        if s.format == "slack":
            doc = slack_body(body)
        elif s.format == "pagerduty":
            doc = pagerduty_body(body, s.secret or "")
        else:
            doc = body
        return json.dumps(doc, separators=(",", ":")).encode()

    def _headers(self) -> dict[str, str]:
        s = self.settings
        headers = {"Content-Type": "application/json", "User-Agent": "trunkguard-alerts"}
        headers.update(s.headers)
        if s.secret is not None and s.secret_header is not None:
            headers[s.secret_header] = s.secret_prefix + s.secret
        return headers

    async def _webhook(self, body: dict[str, Any]) -> None:
        s = self.settings
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2), raise_for_status=False
            )
        data = self._webhook_data(body)
        headers = self._headers()
        timeout = aiohttp.ClientTimeout(total=s.timeout)
        why = ""
        for attempt in range(s.retries + 1):
            if attempt:
                self.counters["alerts_retries"] += 1
                await asyncio.sleep(min(s.backoff * 2 ** (attempt - 1), _BACKOFF_MAX))
            try:
                async with self._session.post(
                    s.url, data=data, headers=headers, timeout=timeout, allow_redirects=False
                ) as resp:
                    await resp.content.read(4096)
                    if 200 <= resp.status < 300:
                        return
                    why = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        raise HookFailed(f"{why} (not retried)")
            except TimeoutError:
                why = f"no answer in {s.timeout:g}s"
            except aiohttp.ClientError as exc:
                why = _why(exc)
            except OSError as exc:
                why = exc.strerror or type(exc).__name__
        raise HookFailed(f"{why}, after {s.retries + 1} attempts")

    async def _command(self, body: dict[str, Any]) -> None:
        s = self.settings
        try:
            proc = await asyncio.create_subprocess_exec(
                *s.argv,
                *command_args(body),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=command_env(body, s.env, s.secret),
                start_new_session=True,  # its own process group: a timeout kills its children too
            )
        except OSError as exc:
            raise HookFailed(f"cannot run it: {exc.strerror or type(exc).__name__}") from None
        self._proc = proc
        try:
            code, tail = await asyncio.wait_for(_finish(proc), s.timeout)
        except TimeoutError:
            self._kill()
            raise HookFailed(f"still running after {s.timeout:g}s: killed") from None
        finally:
            self._kill()  # cancelled (shutdown): it does not outlive the router
            self._proc = None
        if code != 0:
            what = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
            raise HookFailed(f"{what}; stderr: {tail!r}" if tail else what)
        if tail:
            log.info("alert hook %s: stderr: %r", self.what, tail)

    def _kill(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        loop = asyncio.get_running_loop()
        # Reaped in the background: a process killed with SIGKILL goes within moments.
        waiter = loop.create_task(asyncio.wait_for(proc.wait(), _KILL_WAIT))
        waiter.add_done_callback(_ignore)


def _ignore(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait for ``proc`` to exit, reading its stderr; (exit status, the end of stderr)."""
    tail = b""
    read = 0
    assert proc.stderr is not None
    while chunk := await proc.stderr.read(4096):
        read += len(chunk)
        if read <= _STDERR_MAX:
            tail = (tail + chunk)[-STDERR_TAIL * 4 :]
    code = await proc.wait()
    text = tail.decode("utf-8", errors="replace").strip()[-STDERR_TAIL:]
    return code, text


def _about(body: dict[str, Any]) -> str:
    subject = body.get("target") or "routes"
    return f"{body.get('event')} {subject} {body.get('old')} -> {body.get('new')}"
