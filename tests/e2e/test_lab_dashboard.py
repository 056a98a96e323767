"""``make demo``'s dashboard: the lab router serves it, the printed one-time link logs in,
and the page's stream carries the failover while the scenario runs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from rich.console import Console

from trunkguard.lab import SCENARIOS
from trunkguard.lab._dashboard import LabDashboard
from trunkguard.lab._run import run_scenario

pytestmark = pytest.mark.e2e


async def _watch(session: aiohttp.ClientSession, url: str, into: list[tuple[str, Any]]) -> None:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        event = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event is not None:
                into.append((event, json.loads(line[6:])))


async def test_the_demo_prints_a_login_link_and_its_page_streams_the_failover(
    tmp_path: Path,
) -> None:
    scenario = dataclasses.replace(SCENARIOS["kill-primary"], duration=8.0, fault_at=3.0, rate=10.0)
    dashboard = LabDashboard(wait=0.0)
    out = io.StringIO()
    console = Console(file=out, width=300)
    seen: list[tuple[str, Any]] = []
    tasks: list[asyncio.Task[None]] = []
    jar = aiohttp.CookieJar(unsafe=True)  # the router is 127.0.0.1: a cookie for an IP
    async with aiohttp.ClientSession(cookie_jar=jar) as session:

        async def ready() -> None:
            await dashboard.announce(console)
            link = re.search(r"one-time link: (\S+)", out.getvalue())
            assert link, out.getvalue()
            code = link.group(1).split("#once=", 1)[1]
            login = f"{dashboard.url}/login"
            async with session.post(login, data={"once": code}, allow_redirects=False) as resp:
                assert resp.status == 303, await resp.text()
            tasks.append(asyncio.create_task(_watch(session, f"{dashboard.url}/api/stream", seen)))
            deadline = asyncio.get_running_loop().time() + 20
            while not seen and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)  # the snapshot came: the page is live
            assert seen and seen[0][0] == "snapshot"

        result = await run_scenario(
            scenario, tmp_path, admin=dashboard.admin_config(), on_ready=ready
        )
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
    printed = out.getvalue()
    assert f"{dashboard.url}/" in printed and dashboard.token in printed
    changes = [c for kind, batch in seen if kind == "changes" for c in batch]
    failovers = [f for kind, batch in seen if kind == "failovers" for f in batch]
    print(
        f"lab dashboard: {len(seen)} stream messages; changes "
        f"{[(c['target'], c['new']) for c in changes]}; {len(failovers)} failovers"
    )
    assert ("a", "DOWN") in [(c["target"], c["new"]) for c in changes]
    assert any(f["steps"][0]["target"] == "a" for f in failovers)
    assert sum(1 for kind, _ in seen if kind == "targets") >= 3  # the figures, every second
    # The numbers of the run are the lab's as ever: the dashboard came before its clock.
    assert result.passed, result.checks
    # As many calls as the pacer fitted in the run (a loaded machine fits a few less).
    assert result.metrics["failed"] == 0 and 72 <= result.metrics["attempted"] <= 80
    log = (tmp_path / "router.log").read_text()
    assert dashboard.token not in log and code_not_in(log, printed)


def code_not_in(log: str, printed: str) -> bool:
    code = printed.split("#once=", 1)[1].split()[0]
    return code not in log
