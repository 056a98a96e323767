"""A drill on the live router: force one target down for a while and watch the calls move.

Through the admin API: the target goes FORCED_DOWN with its revert time (the
router reverts it by itself even if this command dies), and an aborted drill
restores it at once. Once a second the drill reads the router's own counters;
the report says how many calls were made meanwhile, how many failed, how many
INVITEs still reached the target, and which targets took the traffic.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


class DrillError(Exception):
    pass


@dataclass
class DrillResult:
    target: str
    seconds: float
    started_wall: float
    aborted: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)  # t, counters
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class AdminClient:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with self.session.request(
                method,
                self.url + path,
                json=body,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                data = await resp.json(content_type=None)
                if resp.status == 401:
                    raise DrillError("the admin API refused the token")
                if resp.status >= 400:
                    raise DrillError(f"{method} {path}: {resp.status} {data.get('error', data)}")
                return data
        except aiohttp.ClientConnectionError as exc:
            raise DrillError(f"no router answering at {self.url}: {exc}") from None


def _delta(now: dict[str, int], before: dict[str, int], key: str) -> int:
    return int(now.get(key, 0)) - int(before.get(key, 0))


async def run_drill(
    url: str,
    token: str,
    target: str,
    seconds: float,
    *,
    force: bool = False,
    progress: bool = True,
) -> DrillResult:
    async with aiohttp.ClientSession() as session:
        api = AdminClient(session, url, token)
        targets = (await api.call("GET", "/api/targets"))["targets"]
        names = {t["name"]: t for t in targets}
        if target not in names:
            raise DrillError(f"no target {target!r}; targets: {', '.join(names)}")
        others = [t for t in targets if t["name"] != target and t["state"] == "UP"]
        if not others and not force:
            raise DrillError(
                f"no other target is UP to take {target}'s traffic; use --force to drill anyway"
            )
        result = DrillResult(target, seconds, time.time())
        before = (await api.call("GET", "/api/counters"))["counters"]
        await api.call(
            "POST",
            f"/api/targets/{target}/force-down",
            {"seconds": seconds, "reason": f"drill for {seconds:g}s"},
        )
        t0 = time.monotonic()
        during = before
        try:
            # Sample until just before the router reverts the target by itself, so the
            # last sample covers the forced-down period and nothing after it.
            while (elapsed := time.monotonic() - t0) < seconds - 0.25:
                counters = (await api.call("GET", "/api/counters"))["counters"]
                during = counters
                result.samples.append({"t": round(elapsed, 2), "counters": counters})
                if progress:
                    print(
                        f"  {elapsed:5.1f}s  calls {_delta(counters, before, 'calls')}  "
                        f"answered {_delta(counters, before, 'calls_answered')}  failed "
                        f"{_delta(counters, before, 'calls_failed')}  INVITEs to {target} "
                        f"{_delta(counters, before, f'invites_to:{target}')}",
                        flush=True,
                    )
                await asyncio.sleep(min(1.0, max(0.0, seconds - 0.25 - elapsed)))
            during = (await api.call("GET", "/api/counters"))["counters"]
        except (asyncio.CancelledError, KeyboardInterrupt):
            result.aborted = True
            await api.call("POST", f"/api/targets/{target}/restore")
            raise
        finally:
            if not result.aborted:
                # The router reverts by itself at the end; give it a moment, then make sure.
                await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)) + 0.5)
                state = (await api.call("GET", f"/api/targets/{target}"))["state"]
                if state == "FORCED_DOWN":
                    await api.call("POST", f"/api/targets/{target}/restore")
            events = await api.call("GET", f"/api/events?since={result.started_wall}&limit=1000")
            result.events = events["events"]
            result.metrics = _metrics(before, during, target, [t["name"] for t in targets])
        return result


def _metrics(
    before: dict[str, int], after: dict[str, int], target: str, names: list[str]
) -> dict[str, Any]:
    return {
        "calls": _delta(after, before, "calls"),
        "answered": _delta(after, before, "calls_answered"),
        "failed": _delta(after, before, "calls_failed"),
        "invites_to_target": _delta(after, before, f"invites_to:{target}"),
        "invites_by_target": {n: _delta(after, before, f"invites_to:{n}") for n in names},
    }


def write_drill_report(result: DrillResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "drill.json").write_text(json.dumps(result.__dict__, indent=1, default=str))
    m = result.metrics
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in m.items()
    )
    events = "".join(
        f"<tr><td>{html.escape(str(e.get('at')))}</td><td>{html.escape(str(e.get('target')))}"
        f"</td><td>{html.escape(str(e.get('old')))} &#8594; {html.escape(str(e.get('new')))}"
        f"</td><td>{html.escape(str(e.get('reason')))}</td></tr>"
        for e in result.events
    )
    verdict = "aborted (target restored)" if result.aborted else "completed"
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>trunkguard drill: {html.escape(result.target)}</title>"
        "<style>body{font-family:sans-serif;margin:24px}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:13px;text-align:left}table{border-collapse:collapse}</style>"
        f"</head><body><h1>Drill: {html.escape(result.target)} forced down for "
        f"{result.seconds:g} s</h1><p>{verdict}; figures from the router's own counters.</p>"
        f"<table>{rows}</table><h2>State changes</h2><table>{events}</table></body></html>"
    )
    path = out / "drill.html"
    path.write_text(page, encoding="utf-8")
    return path
