"""The admin API against a real Runtime: token, listing, operator moves, events, counters.

The app is served by aiohttp's TestServer on the test's event loop, which is
also the health engine's clock. The carriers are loopback ports nobody listens
on and probes are disabled, so nothing but the operator moves a target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from trunkguard.admin import AdminSettings, build_app, start_admin
from trunkguard.config import parse_config
from trunkguard.health import State
from trunkguard.runtime import Runtime

TOKEN = "test-token-4f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """\
listen: udp:127.0.0.1:0
allow: [127.0.0.0/8]
carriers:
  - {name: a, uri: "sip:127.0.0.1:5991"}
  - {name: b, uri: "sip:127.0.0.1:5992"}
probe: {enabled: false}
store: {path: state/events.db}
"""

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = parse_config(CONFIG, "test.yaml")
    config._base = tmp_path
    rt = Runtime(config)
    rt.start(asyncio.get_running_loop().time())
    yield rt
    rt.close()


class Rearms:
    """Stands in for the router's timer re-arm that the API calls after each move."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def rearms() -> Rearms:
    return Rearms()


@pytest.fixture
async def client(runtime: Runtime, rearms: Rearms) -> AsyncIterator[Client]:
    app = build_app(runtime, TOKEN, on_change=rearms)
    async with TestClient(TestServer(app)) as c:
        yield c


async def call(
    client: Client, method: str, path: str, body: object = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    headers = kwargs.pop("headers", AUTH)
    async with client.request(method, path, json=body, headers=headers, **kwargs) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


def wall(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


ENDPOINTS = [
    ("GET", "/api/health"),
    ("GET", "/api/targets"),
    ("GET", "/api/targets/a"),
    ("POST", "/api/targets/a/force-down"),
    ("POST", "/api/targets/a/drain"),
    ("POST", "/api/targets/a/restore"),
    ("GET", "/api/events"),
    ("GET", "/api/counters"),
    ("GET", "/api/no-such-thing"),
]


# -- the token ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_refuses_without_a_token(
    client: Client, runtime: Runtime, method: str, path: str
) -> None:
    async with client.request(method, path, json={"seconds": 60}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in (await resp.json())["error"]
    assert runtime.health.state("a") is State.UP
    assert runtime.store.events() == []


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer wrong",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer ",
        "Bearer t\u00e9st",
    ],
)
async def test_a_wrong_token_is_refused(client: Client, runtime: Runtime, header: str) -> None:
    status, body = await call(
        client, "POST", "/api/targets/a/drain", headers={"Authorization": header}
    )
    assert status == 401
    assert "token" in body["error"]
    assert runtime.health.state("a") is State.UP


async def test_health_with_the_token(client: Client) -> None:
    assert await call(client, "GET", "/api/health") == (200, {"ok": True})


def test_settings_refuse_an_empty_token() -> None:
    for token in ("", "   "):
        with pytest.raises(ValueError, match="token"):
            AdminSettings(token=token)
    assert "secret" not in repr(AdminSettings(token="secret"))
    assert AdminSettings(token="x").host == "127.0.0.1"


# -- reading --------------------------------------------------------------------------------------
async def test_targets_lists_every_target_with_its_state_and_counts(client: Client) -> None:
    before = time.time()
    status, body = await call(client, "GET", "/api/targets")
    assert status == 200
    assert [t["name"] for t in body["targets"]] == ["a", "b"]
    a = body["targets"][0]
    assert a["state"] == "UP"
    assert a["reason"] == "start"
    assert a["consecutive_faults"] == 0
    assert a["window"] == {"failures": 0, "size": 0}
    assert a["trips"] == 0
    assert a["hold_down_until"] is None and a["forced_until"] is None
    assert a["calls_up"] == 0
    assert a["response_timeout_ms"] == 2000  # no samples yet: invite_timeout
    assert a["attempts"] == 0 and a["faults"] == 0
    # Never moved: in its state since the router started, on the wall clock.
    assert before - 60 < wall(a["since"]) <= wall(body["now"]) + 0.01
    assert 0 <= a["for_seconds"] < 60
    assert abs(wall(body["now"]) - time.time()) < 5


async def test_one_target_and_an_unknown_one(client: Client) -> None:
    status, body = await call(client, "GET", "/api/targets/b")
    assert status == 200 and body["name"] == "b" and body["state"] == "UP"
    for method, path in [
        ("GET", "/api/targets/zz"),
        ("POST", "/api/targets/zz/drain"),
        ("POST", "/api/targets/zz/restore"),
    ]:
        status, body = await call(client, method, path)
        assert status == 404
        assert "zz" in body["error"]
    status, body = await call(client, "POST", "/api/targets/zz/force-down", {"seconds": 60})
    assert status == 404


async def test_targets_show_faults_hold_down_and_the_adaptive_timer(
    client: Client, runtime: Runtime
) -> None:
    now = asyncio.get_running_loop().time()
    changes = runtime.health.unreachable("a", now, "connection refused")
    runtime.proxy.apply_health_changes(changes)
    runtime.health.targets["b"].timer.sample(0.1)
    _, body = await call(client, "GET", "/api/targets")
    a, b = body["targets"]
    assert a["state"] == "DOWN"
    assert "connection refused" in a["reason"]
    assert a["trips"] == 1
    assert a["hold_down_until"] is not None
    assert wall(a["hold_down_until"]) > wall(body["now"])
    assert b["response_timeout_ms"] < 2000


# -- moves ----------------------------------------------------------------------------------------
async def test_force_down_stores_the_reason_and_reverts_on_the_engine_clock(
    client: Client, runtime: Runtime, rearms: Rearms
) -> None:
    status, body = await call(
        client, "POST", "/api/targets/a/force-down", {"seconds": 60, "reason": "drill"}
    )
    assert status == 200
    [change] = body["changes"]
    assert (change["target"], change["old"], change["new"]) == ("a", "UP", "FORCED_DOWN")
    assert "drill" in change["reason"]
    assert body["target"]["state"] == "FORCED_DOWN"
    left = wall(body["target"]["forced_until"]) - wall(change["at"])
    assert left == pytest.approx(60, abs=0.01)
    assert runtime.health.state("a") is State.FORCED_DOWN
    assert runtime.health.state("b") is State.UP
    assert rearms.count == 1
    [event] = runtime.store.events("a")
    assert (event.old, event.new) == ("UP", "FORCED_DOWN")
    assert "drill" in event.reason
    assert event.until == pytest.approx(event.at + 60, abs=0.01)
    # The revert is armed on the proxy's timers, which the router's loop runs.
    runtime.proxy.run_timers(asyncio.get_running_loop().time() + 61)
    runtime.pump()  # which the loop follows by taking the core's events to the store
    _, body = await call(client, "GET", "/api/targets/a")
    assert body["state"] == "UP"
    assert body["reason"] == "forced-down period over"
    assert [e.new for e in runtime.store.events("a")] == ["FORCED_DOWN", "UP"]


async def test_force_down_without_a_reason(client: Client, runtime: Runtime) -> None:
    status, body = await call(client, "POST", "/api/targets/b/force-down", {"seconds": 1.5})
    assert status == 200
    assert body["target"]["reason"] == "forced down by operator for 1.5s"
    assert runtime.store.events("b")[-1].reason == "forced down by operator for 1.5s"


async def test_drain_then_restore(client: Client, runtime: Runtime, rearms: Rearms) -> None:
    status, body = await call(client, "POST", "/api/targets/b/drain")
    assert status == 200
    assert [(c["old"], c["new"]) for c in body["changes"]] == [("UP", "DRAINED")]
    assert body["target"]["state"] == "DRAINED"
    assert runtime.health.state("b") is State.DRAINED
    status, body = await call(client, "POST", "/api/targets/b/restore")
    assert status == 200
    assert [(c["old"], c["new"]) for c in body["changes"]] == [("DRAINED", "UP")]
    assert body["target"]["state"] == "UP"
    assert rearms.count == 2
    events = runtime.store.events("b")
    assert [(e.old, e.new, e.reason) for e in events] == [
        ("UP", "DRAINED", "drained by operator"),
        ("DRAINED", "UP", "restored by operator"),
    ]


async def test_restore_of_a_target_that_was_down_goes_through_probing(
    client: Client, runtime: Runtime
) -> None:
    now = asyncio.get_running_loop().time()
    runtime.proxy.apply_health_changes(runtime.health.unreachable("a", now, "refused"))
    assert (await call(client, "POST", "/api/targets/a/drain"))[0] == 200
    status, body = await call(client, "POST", "/api/targets/a/restore")
    assert status == 200
    assert body["target"]["state"] == "PROBING"


async def test_impossible_moves_are_409_with_the_reason(
    client: Client, runtime: Runtime, rearms: Rearms
) -> None:
    status, body = await call(client, "POST", "/api/targets/a/restore")
    assert status == 409
    assert "a is already UP" in body["error"]
    assert "DRAINED" in body["error"]  # where restore is allowed from
    assert (await call(client, "POST", "/api/targets/a/drain"))[0] == 200
    status, body = await call(
        client, "POST", "/api/targets/a/force-down", {"seconds": 60, "reason": "drill"}
    )
    assert status == 409
    assert body["error"].startswith("a is DRAINED: force-down is allowed only from UP")
    assert "restore it first" in body["error"]
    status, body = await call(client, "POST", "/api/targets/a/drain")
    assert status == 409
    assert "already DRAINED" in body["error"]
    assert runtime.health.state("a") is State.DRAINED
    assert [e.new for e in runtime.store.events("a")] == ["DRAINED"]
    assert rearms.count == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "seconds"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": 0.5}, "seconds"),
        ({"seconds": -5}, "seconds"),
        ({"seconds": 86_401}, "seconds"),
        ({"seconds": "60"}, "seconds"),
        ({"seconds": True}, "seconds"),
        ({"seconds": None}, "seconds"),
        ({"seconds": [60]}, "seconds"),
        ({"seconds": 60, "reason": 5}, "reason"),
        ({"seconds": 60, "reason": "x" * 201}, "reason"),
        ({"seconds": 60, "reason": "drill\nb: UP -> DOWN"}, "reason"),
        ({"seconds": 60, "why": "drill"}, "why"),
        ([60], "body"),
        ("60", "body"),
        (None, "body"),
    ],
)
async def test_bad_force_down_input_is_400_naming_the_field(
    client: Client, runtime: Runtime, body: object, field: str
) -> None:
    status, answer = await call(client, "POST", "/api/targets/a/force-down", body)
    assert status == 400
    assert answer["error"].startswith(f"{field}:")
    assert runtime.health.state("a") is State.UP
    assert runtime.store.events() == []


async def test_a_body_that_is_not_json_is_400(client: Client) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    async with client.post(
        "/api/targets/a/force-down", data=b"{seconds: 60", headers=headers
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "body: not valid JSON"


async def test_seconds_at_the_limits_are_accepted(client: Client) -> None:
    assert (await call(client, "POST", "/api/targets/a/force-down", {"seconds": 1}))[0] == 200
    assert (await call(client, "POST", "/api/targets/b/force-down", {"seconds": 86_400}))[0] == 200


# -- events and counters --------------------------------------------------------------------------
async def test_events_filtered_by_target_time_and_limit(client: Client, runtime: Runtime) -> None:
    start = time.time()
    await call(client, "POST", "/api/targets/a/force-down", {"seconds": 60, "reason": "drill"})
    await call(client, "POST", "/api/targets/b/drain")
    await call(client, "POST", "/api/targets/a/restore")
    status, body = await call(client, "GET", "/api/events")
    assert status == 200
    assert [(e["target"], e["new"]) for e in body["events"]] == [
        ("a", "FORCED_DOWN"),
        ("b", "DRAINED"),
        ("a", "UP"),
    ]
    first = body["events"][0]
    assert "drill" in first["reason"]
    assert first["until"] is not None
    assert wall(first["at"]) == pytest.approx(first["at_unix"], abs=0.001)
    _, body = await call(client, "GET", "/api/events", params={"target": "a"})
    assert [e["new"] for e in body["events"]] == ["FORCED_DOWN", "UP"]
    _, body = await call(client, "GET", "/api/events", params={"limit": "1"})
    assert [e["new"] for e in body["events"]] == ["UP"]  # the most recent
    _, body = await call(client, "GET", "/api/events", params={"since": str(time.time() + 60)})
    assert body["events"] == []
    past = datetime.fromtimestamp(start - 60).isoformat()
    _, body = await call(client, "GET", "/api/events", params={"since": past, "target": "b"})
    assert [e["new"] for e in body["events"]] == ["DRAINED"]
    _, body = await call(client, "GET", "/api/events", params={"target": "nobody"})
    assert body["events"] == []


async def test_events_default_to_the_last_100(client: Client, runtime: Runtime) -> None:
    for _ in range(60):
        await call(client, "POST", "/api/targets/a/drain")
        await call(client, "POST", "/api/targets/a/restore")
    _, body = await call(client, "GET", "/api/events")
    assert len(body["events"]) == 100
    assert body["events"][-1]["new"] == "UP"
    _, body = await call(client, "GET", "/api/events", params={"limit": "1000"})
    assert len(body["events"]) == 120


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"since": "nan"}, "since"),
        ({"until": "2024-13-01"}, "until"),
        ({"targets": "a"}, "targets"),
    ],
)
async def test_bad_event_queries_are_400_naming_the_field(
    client: Client, params: dict[str, str], field: str
) -> None:
    status, body = await call(client, "GET", "/api/events", params=params)
    assert status == 400
    assert body["error"].startswith(f"{field}:")


async def test_counters_and_open_work(client: Client, runtime: Runtime) -> None:
    runtime.proxy.counters["calls"] += 3
    runtime.proxy.counters["invites_to:a"] += 2
    status, body = await call(client, "GET", "/api/counters")
    assert status == 200
    assert body["counters"]["calls"] == 3
    assert body["counters"]["invites_to:a"] == 2
    assert body["open"] == {"calls_unanswered": 0, "branches_pending": 0, "dialogs": 0}
    assert set(body["active"]) == {
        "client_transactions",
        "server_transactions",
        "finished_transactions",
        "dialogs",
    }


# -- errors never leak a traceback ----------------------------------------------------------------
async def test_unknown_endpoint_and_method_answer_json(client: Client) -> None:
    status, body = await call(client, "GET", "/api/nothing")
    assert status == 404 and "GET /api/nothing" in body["error"]
    status, body = await call(client, "DELETE", "/api/targets/a")
    assert status == 405 and "only GET" in body["error"]


async def test_an_internal_error_is_500_without_a_traceback(
    client: Client, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runtime.store, "events", broken)
    async with client.get("/api/events", headers=AUTH) as resp:
        assert resp.status == 500
        text = await resp.text()
    assert "Traceback" not in text and "disk on fire" not in text
    assert "internal error" in text


async def test_an_oversized_body_is_refused(client: Client) -> None:
    big = {"seconds": 60, "reason": "x" * 100_000}
    status, body = await call(client, "POST", "/api/targets/a/force-down", big)
    assert status == 413 and body["error"]


# -- the server -----------------------------------------------------------------------------------
async def test_start_admin_binds_a_free_port_and_closes(runtime: Runtime) -> None:
    server = await start_admin(runtime, AdminSettings(port=0, token=TOKEN))
    try:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"GET /api/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b'{"ok": true}')
    finally:
        await server.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_start_admin_on_a_busy_port_raises_oserror(runtime: Runtime) -> None:
    first = await start_admin(runtime, AdminSettings(port=0, token=TOKEN))
    try:
        with pytest.raises(OSError):
            await start_admin(runtime, AdminSettings(port=first.port, token=TOKEN))
    finally:
        await first.close()
