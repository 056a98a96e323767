"""POST /api/reload: the same reload as SIGHUP (cli._reload) on a real Runtime and config file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from trunkguard.admin import build_app
from trunkguard.cli import _reload
from trunkguard.config import ConfigError, load_config
from trunkguard.reloading import ReloadOutcome, Serialized
from trunkguard.runtime import Runtime

TOKEN = "reload-test-token-91c3"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = f"""\
listen: udp:127.0.0.1:0
allow: [127.0.0.0/8]
carriers:
  - {{name: a, uri: "sip:127.0.0.1:5991"}}
probe: {{enabled: false}}
store: {{path: events.db}}
admin: {{token: {TOKEN}}}
"""

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Client, Runtime, Path]]:
    path = tmp_path / "router.yaml"
    path.write_text(GOOD)
    config, source = load_config(path)
    runtime = Runtime(config)
    runtime.start(asyncio.get_running_loop().time())
    gate = Serialized(lambda trigger: _reload(runtime, source, None, trigger), source)
    app = build_app(runtime, TOKEN, reload=gate.now_or_busy)
    async with TestClient(TestServer(app)) as client:
        yield client, runtime, path
    runtime.close()


async def test_reload_reports_what_changed(setup: tuple[Client, Runtime, Path]) -> None:
    client, runtime, path = setup
    resp = await client.post("/api/reload", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "reloaded": True,
        "source": str(path),
        "changed": [],
        "notes": [],
        "carriers": 1,
    }
    added = '  - {name: b, uri: "sip:127.0.0.1:5992"}\nfailover: {max_attempts: 2}\n'
    path.write_text(GOOD.replace("probe:", added + "probe:"))
    resp = await client.post("/api/reload", headers=AUTH)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["changed"] == ["carriers: added b", "failover"]
    assert "b" in runtime.health.targets
    assert runtime.config.failover.max_attempts == 2
    assert runtime.proxy.counters["reloads"] == 2


async def test_a_refused_config_gives_422_with_the_problems_check_prints(
    setup: tuple[Client, Runtime, Path],
) -> None:
    client, runtime, path = setup
    before = runtime.config
    path.write_text(GOOD.replace("probe:", "failover: {invite_timeout: -1}\nbogus: 1\nprobe:"))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    resp = await client.post("/api/reload", headers=AUTH)
    assert resp.status == 422
    body = await resp.json()
    assert body == {"reloaded": False, "source": str(path), "problems": exc.value.shown()}
    assert len(body["problems"]) == 2
    assert TOKEN not in await resp.text()
    assert runtime.config is before
    assert runtime.proxy.counters["reloads_refused"] == 1


async def test_reload_needs_the_token_and_post(setup: tuple[Client, Runtime, Path]) -> None:
    client, _, _ = setup
    assert (await client.post("/api/reload")).status == 401
    assert (await client.get("/api/reload", headers=AUTH)).status == 405


async def test_a_second_reload_while_one_runs_is_409() -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    runs: list[str] = []

    async def slow(trigger: str) -> ReloadOutcome:
        runs.append(trigger)
        started.set()
        await release.wait()
        return ReloadOutcome(ok=True, source="x.yaml", carriers=1)

    gate = Serialized(slow, "x.yaml")
    first = asyncio.create_task(gate.now_or_busy("admin API"))
    await asyncio.wait_for(started.wait(), 5)
    assert gate.busy
    assert (await gate.now_or_busy("admin API")).busy
    queued = asyncio.create_task(gate.queued("SIGHUP"))  # SIGHUP waits its turn
    await asyncio.sleep(0)
    assert runs == ["admin API"]
    release.set()
    assert (await first).ok and (await queued).ok
    assert runs == ["admin API", "SIGHUP"]
    assert not gate.busy


async def test_the_api_maps_busy_to_409_and_no_reload_to_501(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(GOOD)
    config, _ = load_config(path)
    runtime = Runtime(config)
    try:

        async def busy(trigger: str) -> ReloadOutcome:
            return ReloadOutcome(ok=False, source="x", busy=True)

        async with TestClient(TestServer(build_app(runtime, TOKEN, reload=busy))) as client:
            resp = await client.post("/api/reload", headers=AUTH)
            assert resp.status == 409
            assert "under way" in (await resp.json())["error"]
        async with TestClient(TestServer(build_app(runtime, TOKEN))) as client:
            assert (await client.post("/api/reload", headers=AUTH)).status == 501
    finally:
        runtime.close()
