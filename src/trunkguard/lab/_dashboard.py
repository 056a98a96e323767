"""The lab router's dashboard, for ``make demo``: watch the failover in a browser.

The lab's router then serves its admin API on a free loopback port, with a token
made for this run alone. Once it is up, a one-time login link is asked of it (with
the token, as the CLI would) and printed with the URL and the token; the calls
start ``wait`` seconds later, so there is time to open the page. The link's code
is in the URL's fragment (``#once=...``), which no browser sends in a request
line: it is in no log, and it opens one session only, within ten minutes.
"""

from __future__ import annotations

import asyncio
import secrets
import socket

import aiohttp
from rich.console import Console
from rich.markup import escape


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LabDashboard:
    def __init__(self, wait: float = 10.0, port: int | None = None) -> None:
        if wait < 0:
            raise ValueError("the dashboard's wait must not be negative")
        self.wait = wait
        self.port = port or _free_tcp_port()
        self.token = secrets.token_urlsafe(24)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin_config(self) -> dict[str, object]:
        return {"listen": f"127.0.0.1:{self.port}", "token": self.token}

    async def login_link(self) -> str:
        """A one-time login link from the running router (its admin API, with the token)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{self.url}/api/login-links", headers=headers) as resp,
        ):
            resp.raise_for_status()
            body = await resp.json()
        return self.url + str(body["path"])

    async def announce(self, console: Console) -> None:
        """Print where the dashboard is and how to log in, then give the reader ``wait`` s."""
        try:
            link = await self.login_link()
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            link = escape(f"(no one-time link: {exc}; log in with the token)")
        lines = [
            f"  [bold]dashboard[/bold]: {self.url}/  (the failover, live)",
            f"  log in with this one-time link: {link}",
            f"  or with the token of this run: {self.token}",
            "  (the page stays up while the scenario runs)",
        ]
        if self.wait:
            lines.append(f"  the calls start in {self.wait:g} s")
        for line in lines:
            # Never wrapped: a link cut in two cannot be pasted.
            console.print(line, soft_wrap=True, highlight=False)
        if self.wait:
            await asyncio.sleep(self.wait)
