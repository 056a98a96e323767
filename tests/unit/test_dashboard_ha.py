"""The dashboard's HA line through HTTP: in the snapshot, and pushed on the stream when the
node's role or etcd's reachability changes.

A real Runtime and a real HA node (never started: no etcd is asked), its role machine
driven by hand through the node's own ``_apply``, as its lease loop and watches would;
the admin app on aiohttp's TestServer, the stream read as a browser would.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from trunkguard.admin import build_app
from trunkguard.config import parse_config
from trunkguard.ha import Leader
from trunkguard.ha._node import HaNode
from trunkguard.runtime import Runtime

TOKEN = "dashboard-ha-token-51d0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(ha: bool) -> str:
    text = """\
listen: udp:127.0.0.1:0
carriers:
  - {name: a, uri: "sip:127.0.0.1:5991"}
probe: {enabled: false}
store: {path: state/events.db}
"""
    if ha:
        # Nobody listens there: the node is never started, and stop()'s revoke fails fast.
        text += f"ha: {{node: r1, etcd: ['http://127.0.0.1:{_closed_port()}']}}\n"
    return text


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = parse_config(_config(ha=True), "test.yaml")
    config._base = tmp_path
    rt = Runtime(config)
    rt.start(asyncio.get_running_loop().time())
    settings = config.ha_settings()
    assert settings is not None
    node = HaNode(rt, settings)
    yield rt
    await node.stop()
    rt.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[Client]:
    app = build_app(runtime, TOKEN)
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as c:
        yield c


async def read_until(
    resp: aiohttp.ClientResponse, event: str, check: Any, timeout: float = 10.0
) -> dict[str, Any]:
    """Read SSE messages until an ``event`` one whose data passes ``check``; that data."""
    kind = None

    async def read() -> dict[str, Any]:
        nonlocal kind
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == event:
                data: dict[str, Any] = json.loads(line[6:])
                if check(data):
                    return data
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(read(), timeout)


def _node(runtime: Runtime) -> HaNode:
    assert runtime.ha is not None
    return runtime.ha


async def test_the_snapshot_has_the_ha_line(client: Client, runtime: Runtime) -> None:
    async with client.get("/api/dashboard", headers=AUTH) as resp:
        ha = (await resp.json())["ha"]
    # Not a word from etcd yet: a node that starts says so, and does not serve.
    assert ha["node"] == "r1" and ha["mode"] == "active-standby"
    assert ha["role"] == "standby" and ha["serving"] is False and ha["leader"] is None
    assert ha["etcd"] == "lost"
    assert "etcd_endpoint" not in ha and "counters" not in ha  # the line, not the whole block


async def test_the_stream_pushes_role_and_etcd_changes(client: Client, runtime: Runtime) -> None:
    node = _node(runtime)
    loop = asyncio.get_running_loop()
    async with client.get("/api/stream", headers=AUTH) as resp:
        snap = await read_until(resp, "snapshot", lambda d: True)
        assert snap["ha"]["role"] == "standby"
        # The node wins the leader key: the page hears it without asking.
        now = loop.time()
        node._apply(node.role.lease_granted(7, now, now))
        node._apply(node.role.campaign_result(True, Leader("r1", 42), now, now))
        # (An "ha" message goes out only when the line changed: the cards' tick sends none.)
        ha = await read_until(resp, "ha", lambda d: d["role"] == "active")
        assert (ha["epoch"], ha["leader"], ha["etcd"]) == (42, "r1", "connected")
        assert ha["serving"] is True
        assert ha["etcd_lost_since"] is None and ha["takeovers"] == 1
        # etcd stops answering: "lost since", while the node still serves on its fence timer.
        node._apply(node.role.renew_failed(loop.time()))
        ha = await read_until(resp, "ha", lambda d: d["etcd"] == "lost")
        assert ha["role"] == "active" and ha["etcd_lost_since"] is not None
        lost_since = ha["etcd_lost_since"]
        # The fence timer alone (no input from anyone) stops it serving: pushed too.
        ha = await read_until(resp, "ha", lambda d: d["role"] == "fenced", timeout=15)
        assert ha["serving"] is False and ha["etcd_lost_since"] == lost_since
        # etcd back, its lease alive, the key still its own: active again, etcd connected.
        now = loop.time()
        node._apply(node.role.renewed_lease(2, now, now))
        node._apply(node.role.leader_seen(Leader("r1", 42), loop.time()))
        ha = await read_until(resp, "ha", lambda d: d["role"] == "active")
        assert ha["etcd"] == "connected" and ha["etcd_lost_since"] is None
    async with client.get("/api/dashboard", headers=AUTH) as resp:
        assert (await resp.json())["ha"]["role"] == "active"


async def test_the_same_state_again_is_not_pushed_again(runtime: Runtime) -> None:
    node = _node(runtime)
    seen: list[str] = []
    node.watchers.append(lambda: seen.append(node.role.role.value))
    now = asyncio.get_running_loop().time()
    node._apply(node.role.lease_granted(7, now, now))  # etcd answered: a change
    node._apply(node.role.renewed_lease(2, now, now))  # nothing new
    node._apply(node.role.renewed_lease(2, now, now))
    assert seen == ["campaigning"]


async def test_a_failing_watcher_is_counted_not_raised(runtime: Runtime) -> None:
    node = _node(runtime)

    def broken() -> None:
        raise RuntimeError("a bug")

    node.watchers.append(broken)
    now = asyncio.get_running_loop().time()
    node._apply(node.role.lease_granted(7, now, now))
    assert node.counters["watcher_errors"] == 1


async def test_without_ha_the_line_is_absent(tmp_path: Path) -> None:
    config = parse_config(_config(ha=False), "test.yaml")
    config._base = tmp_path
    rt = Runtime(config)
    rt.start(asyncio.get_running_loop().time())
    try:
        app = build_app(rt, TOKEN)
        async with (
            TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as c,
            c.get("/api/dashboard", headers=AUTH) as resp,
        ):
            assert (await resp.json())["ha"] is None
    finally:
        rt.close()
