"""A stand-in for VICIdial's ``non_agent_api.php``, ``function=update_campaign`` only.

It follows VICIdial's NON-AGENT_API.txt: a GET with ``function``, ``user``, ``pass``,
``source`` (at most 20 characters) and ``campaign_id`` (2-8 characters), and among the
editable fields ``auto_dial_level`` (2-5 characters, 0 to 18). It answers one line of
text as VICIdial does:

    SUCCESS: update_campaign CAMPAIGN HAS BEEN UPDATED - 6666|TESTOUT
    NOTICE: update_campaign NO UPDATES DEFINED - 6666|
    ERROR: update_campaign CAMPAIGN DOES NOT EXIST - 6666|NOPE
    ERROR: update_campaign AUTO DIAL LEVEL MUST BE FROM 0 TO 18, THIS IS AN OPTIONAL FIELD - 6666|19
    ERROR: update_campaign YOU MUST USE ALL REQUIRED FIELDS - 6666|
    ERROR: Invalid Username/Password: |user|pass|0|     (VICIdial quotes the password given)

Anything outside the documented interface (another method or path, a parameter that is
not documented for update_campaign, one given twice) is refused with HTTP 400 and kept
in ``violations``, which the tests require to be empty. ``mode`` makes it misbehave:
``error`` (VICIdial refuses: no permission), ``hang`` (never answers), ``http500``.
It runs in a thread of its own with its own loop, so a router process or the test's
own loop can both call it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

PATH = "/vicidial/non_agent_api.php"
REQUIRED = ("function", "user", "pass", "source", "campaign_id")
# update_campaign's editable fields, as NON-AGENT_API.txt lists them.
EDITABLE = (
    "campaign_name", "active", "auto_dial_level", "adaptive_maximum_level",
    "campaign_vdad_exten", "hopper_level", "reset_hopper", "dial_method", "dial_timeout",
    "list_order", "list_order_randomize", "list_order_secondary", "outbound_cid",
    "dial_status_add", "dial_status_remove", "lead_filter_id", "xferconf_one",
    "xferconf_two", "xferconf_three", "xferconf_four", "xferconf_five", "dispo_call_url",
    "webform_one", "webform_two", "webform_three",
)
_LEVEL = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,2})?$")


@dataclass
class Call:
    at: float  # wall clock
    params: dict[str, str]
    answer: str


@dataclass
class VicidialStandIn:
    user: str = "6666"
    password: str = "1234"
    campaigns: dict[str, str] = field(default_factory=lambda: {"TESTOUT": "3.0"})
    mode: str = "ok"  # ok, error, hang, http500
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    history: list[tuple[float, str, str]] = field(default_factory=list)  # (at, campaign, level)
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def levels(self, campaign: str) -> list[str]:
        with self._lock:
            return [level for _, c, level in self.history if c == campaign]

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self.mode = mode

    # -- the API -------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        if request.method != "GET" or request.path != PATH:
            return self._refuse(f"{request.method} {request.path}: not the documented call")
        names = list(request.query.keys())
        if len(set(names)) != len(names):
            return self._refuse(f"a parameter given twice: {sorted(names)}")
        unknown = [n for n in names if n not in REQUIRED and n not in EDITABLE]
        if unknown:
            return self._refuse(f"parameters not documented for update_campaign: {unknown}")
        q = dict(request.query)
        with self._lock:
            mode = self.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "http500":
            return web.Response(status=500, text="Internal Server Error")
        text = self._answer(q, mode)
        with self._lock:
            self.calls.append(Call(time.time(), q, text))
        return web.Response(text=text + "\n", content_type="text/html")

    def _answer(self, q: dict[str, str], mode: str) -> str:
        user, password = q.get("user", ""), q.get("pass", "")
        if q.get("function") != "update_campaign":
            self.violations.append(f"function {q.get('function')!r}")
            return f"ERROR: {q.get('function')} NOT A VALID FUNCTION"
        if len(user) < 2 or len(password) < 2 or (user, password) != (self.user, self.password):
            return f"ERROR: Invalid Username/Password: |{user}|{password}|0|"
        if mode == "error":
            return (
                f"ERROR: update_campaign USER DOES NOT HAVE PERMISSION TO UPDATE CAMPAIGNS - {user}"
            )
        campaign = q.get("campaign_id", "")
        source = q.get("source", "")
        if not 2 <= len(campaign) <= 8 or not 1 <= len(source) <= 20:
            return f"ERROR: update_campaign YOU MUST USE ALL REQUIRED FIELDS - {user}|{campaign}"
        if campaign not in self.campaigns:
            return f"ERROR: update_campaign CAMPAIGN DOES NOT EXIST - {user}|{campaign}"
        level = q.get("auto_dial_level")
        if level is None:
            return f"NOTICE: update_campaign NO UPDATES DEFINED - {user}|"
        if not (2 <= len(level) <= 5 and _LEVEL.match(level) and 0 <= float(level) <= 18):
            return (
                "ERROR: update_campaign AUTO DIAL LEVEL MUST BE FROM 0 TO 18, "
                f"THIS IS AN OPTIONAL FIELD - {user}|{level}"
            )
        with self._lock:
            self.campaigns[campaign] = level
            self.history.append((time.time(), campaign, level))
        return f"SUCCESS: update_campaign CAMPAIGN HAS BEEN UPDATED - {user}|{campaign}"

    def _refuse(self, why: str) -> web.Response:
        with self._lock:
            self.violations.append(why)
        return web.Response(status=400, text=f"stand-in refuses: {why}")

    # -- life ------------------------------------------------------------------------------
    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:  # handlers of the hang mode
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __enter__(self) -> VicidialStandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
