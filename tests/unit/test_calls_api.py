"""``GET /api/calls``: the calls in progress through the admin API, against a real Runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_admin_api import AUTH, CONFIG, TOKEN, Client
from test_proxy_core import CALLER, invite

from trunkguard.admin import build_app
from trunkguard.config import parse_config
from trunkguard.runtime import Runtime


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = parse_config(CONFIG, "test.yaml")
    config._base = tmp_path
    rt = Runtime(config)
    rt.start(asyncio.get_running_loop().time())
    yield rt
    rt.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(runtime, TOKEN))) as c:
        yield c


async def test_calls_in_progress_are_listed_with_wall_clock_times(
    runtime: Runtime, client: Client
) -> None:
    now = asyncio.get_running_loop().time()
    for i in range(3):
        runtime.proxy.receive(invite(f"live-{i}"), CALLER, now)
    runtime.pump()
    async with client.get("/api/calls", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["count"] == 3 and body["truncated"] is False
    assert [c["call_id"] for c in body["calls"]] == ["live-0", "live-1", "live-2"]
    first = body["calls"][0]
    assert first["number"] == "15551234567" and first["target"] == "a" and first["attempt"] == 1
    assert first["answered"] is None and first["source"] == "127.0.0.1"
    started = datetime.fromisoformat(first["started"])
    assert abs(started.timestamp() - runtime._wall(now)) < 0.01
    async with client.get("/api/calls?limit=2", headers=AUTH) as resp:
        body = await resp.json()
    assert body["count"] == 2 and body["truncated"] is True


@pytest.mark.parametrize("query", ["limit=0", "limit=10001", "limit=x", "state=ANSWERED"])
async def test_bad_calls_queries_get_400_naming_the_field(client: Client, query: str) -> None:
    async with client.get(f"/api/calls?{query}", headers=AUTH) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error"].split(":")[0] in ("limit", "state")


async def test_calls_need_the_token(client: Client) -> None:
    async with client.get("/api/calls") as resp:
        assert resp.status == 401
