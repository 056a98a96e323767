"""The dashboard through HTTP, against a real Runtime: login, cookie, CSRF, Origin, the stream.

Served by aiohttp's TestServer on the test's loop (also the health engine's clock), like
test_admin_api.py. Cookies are read from Set-Cookie and sent by hand, so every test says
exactly what the browser would hold.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from trunkguard.admin import build_app
from trunkguard.admin._dashboard import COOKIE, DASHBOARD_KEY, STATIC
from trunkguard.config import parse_config
from trunkguard.health import OutcomeClass, State, Verdict
from trunkguard.proxy import AttemptRecord, CallRecord
from trunkguard.runtime import Runtime

TOKEN = "dashboard-token-7c2e9"
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


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[Client]:
    app = build_app(runtime, TOKEN)
    # No cookie jar of its own: each test sends the cookie it means to.
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as c:
        yield c


def origin(client: Client) -> str:
    return f"http://{client.host}:{client.port}"


async def login(client: Client, token: str = TOKEN) -> tuple[str, str, str]:
    """Log in; returns the session cookie, its Set-Cookie line and the page's CSRF token."""
    async with client.post(
        "/login", data={"token": token}, allow_redirects=False, headers={"Origin": origin(client)}
    ) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/"
        line = resp.headers["Set-Cookie"]
        sid = resp.cookies[COOKIE].value
    async with client.get("/", headers={"Cookie": f"{COOKIE}={sid}"}) as resp:
        assert resp.status == 200
        page = await resp.text()
    marker = '<meta name="csrf-token" content="'
    csrf = page.split(marker, 1)[1].split('"', 1)[0]
    return sid, line, csrf


def counters(runtime: Runtime) -> dict[str, int]:
    return dict(runtime.proxy.counters)


# -- login ----------------------------------------------------------------------------------------
async def test_the_page_without_a_session_sends_to_the_login_form(client: Client) -> None:
    async with client.get("/", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    async with client.get("/login") as resp:
        assert resp.status == 200
        text = await resp.text()
        assert 'name="token"' in text and TOKEN not in text
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
    async with client.get("/", headers={"Cookie": f"{COOKIE}=made-up"}, allow_redirects=False) as r:
        assert r.status == 303


async def test_a_wrong_token_is_refused_counted_and_sets_no_cookie(
    client: Client, runtime: Runtime
) -> None:
    for token in ("wrong-token", TOKEN + "x", ""):
        async with client.post("/login", data={"token": token}, allow_redirects=False) as resp:
            assert resp.status == 401
            assert "Set-Cookie" not in resp.headers
            text = await resp.text()
            assert TOKEN not in text and "wrong-token" not in text
    assert counters(runtime)["admin_logins_failed"] == 3
    assert "admin_logins" not in counters(runtime)


async def test_login_sets_an_httponly_strict_cookie_that_is_not_the_token(
    client: Client, runtime: Runtime
) -> None:
    sid, line, csrf = await login(client)
    attrs = [part.strip().lower() for part in line.split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert "secure" not in attrs  # plain http here; over https the cookie is Secure
    assert TOKEN not in line and sid != TOKEN and csrf != sid and len(sid) >= 40
    assert counters(runtime)["admin_logins"] == 1


async def test_the_cookie_is_secure_behind_a_tls_proxy(client: Client) -> None:
    headers = {"X-Forwarded-Proto": "https"}
    async with client.post(
        "/login", data={"token": TOKEN}, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        attrs = [p.strip().lower() for p in resp.headers["Set-Cookie"].split(";")]
        assert "secure" in attrs and "httponly" in attrs


async def test_the_page_holds_the_csrf_token_and_never_the_admin_token(client: Client) -> None:
    sid, _, csrf = await login(client)
    cookie = {"Cookie": f"{COOKIE}={sid}"}
    for path in ("/", "/api/dashboard", "/api/targets", "/static/dashboard.js"):
        async with client.get(path, headers=cookie) as resp:
            assert resp.status == 200, path
            assert TOKEN not in await resp.text()
            assert all(TOKEN not in v for v in resp.headers.values())
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
    async with client.get("/", headers=cookie) as resp:
        assert csrf in await resp.text()


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for f in STATIC.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


async def test_failed_logins_are_throttled_per_address_and_logged_once(
    client: Client, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trunkguard.admin")
    for _ in range(5):
        async with client.post("/login", data={"token": "nope-nope"}) as resp:
            assert resp.status == 401
    # Now even the right token waits: the throttle answers before the token is looked at.
    async with client.post("/login", data={"token": TOKEN}, allow_redirects=False) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert "Set-Cookie" not in resp.headers
    c = counters(runtime)
    assert c["admin_logins_failed"] == 5 and c["admin_logins_throttled"] == 1
    warnings = [r for r in caplog.records if "failed login" in r.getMessage()]
    assert len(warnings) == 1
    assert all(TOKEN not in r.getMessage() and "nope-nope" not in r.getMessage()
               for r in caplog.records)  # fmt: skip
    client.app[DASHBOARD_KEY].throttle.succeeded("127.0.0.1")  # as if the wait were over
    await login(client)


async def test_logins_whose_bodies_arrive_together_are_throttled_too(
    client: Client, runtime: Runtime
) -> None:
    """Guesses sent at once, each holding back its body until all are in: the throttle
    still lets only its free tries through (the wait is looked at once the form is read)."""
    guesses = 30
    body = b"token=nope-nope"
    head = (
        "POST /login HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: {n}\r\nConnection: close\r\n\r\n"
    ).format(host=f"{client.host}:{client.port}", n=len(body))
    go = asyncio.Event()
    waiting = 0

    async def guess() -> int:
        nonlocal waiting
        reader, writer = await asyncio.open_connection(client.host, client.port)
        try:
            writer.write(head.encode())
            await writer.drain()
            waiting += 1
            await go.wait()
            writer.write(body)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            return int(status_line.split()[1])
        finally:
            writer.close()

    tasks = [asyncio.create_task(guess()) for _ in range(guesses)]
    deadline = time.monotonic() + 10
    while waiting < guesses and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # every handler is now waiting for its body
    go.set()
    statuses = await asyncio.gather(*tasks)
    dashboard = client.app[DASHBOARD_KEY]
    assert statuses.count(401) == dashboard.throttle.free, statuses
    assert statuses.count(429) == guesses - dashboard.throttle.free, statuses
    assert counters(runtime)["admin_logins_failed"] == dashboard.throttle.free


async def test_a_cross_origin_login_is_refused(client: Client) -> None:
    headers = {"Origin": "http://evil.example"}
    async with client.post("/login", data={"token": TOKEN}, headers=headers) as resp:
        assert resp.status == 403
        assert "Set-Cookie" not in resp.headers


# -- CSRF and Origin ------------------------------------------------------------------------------
async def test_a_post_with_the_cookie_but_without_the_csrf_token_is_403(
    client: Client, runtime: Runtime
) -> None:
    sid, _, csrf = await login(client)
    for extra in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf[:-1]}):
        headers = {"Cookie": f"{COOKIE}={sid}", **extra}
        async with client.post("/api/targets/a/drain", headers=headers) as resp:
            assert resp.status == 403
            assert "X-CSRF-Token" in (await resp.json())["error"]
    assert runtime.health.state("a") is State.UP
    assert counters(runtime)["admin_csrf_refused"] == 3


@pytest.mark.parametrize("bad", ["http://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_post_from_another_origin_is_403_even_with_the_csrf_token(
    client: Client, runtime: Runtime, bad: str
) -> None:
    sid, _, csrf = await login(client)
    headers = {"Cookie": f"{COOKIE}={sid}", "X-CSRF-Token": csrf, "Origin": bad}
    async with client.post("/api/targets/a/drain", headers=headers) as resp:
        assert resp.status == 403
        assert "cross-origin" in (await resp.json())["error"]
    assert runtime.health.state("a") is State.UP


async def test_a_post_with_cookie_csrf_and_own_origin_moves_the_target(
    client: Client, runtime: Runtime
) -> None:
    sid, _, csrf = await login(client)
    headers = {"Cookie": f"{COOKIE}={sid}", "X-CSRF-Token": csrf, "Origin": origin(client)}
    async with client.post("/api/targets/a/drain", headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["target"]["state"] == "DRAINED"
    # No Origin at all (a browser may leave it out): the CSRF token suffices.
    del headers["Origin"]
    async with client.post("/api/targets/a/drain", headers=headers) as resp:
        assert resp.status == 409  # the state table's answer, as for the CLI
        assert "already DRAINED" in (await resp.json())["error"]
    body = {"seconds": 30}
    async with client.post("/api/targets/b/force-down", headers=headers, json=body) as resp:
        assert resp.status == 200
        assert (await resp.json())["target"]["forced_until"] is not None


async def test_the_bearer_token_still_needs_no_csrf(client: Client, runtime: Runtime) -> None:
    async with client.post("/api/targets/a/drain", headers=AUTH) as resp:
        assert resp.status == 200
    assert runtime.health.state("a") is State.DRAINED


async def test_logout_ends_the_session(client: Client) -> None:
    sid, _, csrf = await login(client)
    headers = {"Cookie": f"{COOKIE}={sid}", "X-CSRF-Token": csrf}
    async with client.post("/logout", headers=headers) as resp:
        assert resp.status == 200
        assert f"{COOKIE}=" in resp.headers["Set-Cookie"]  # cleared
    async with client.get("/api/targets", headers={"Cookie": f"{COOKIE}={sid}"}) as resp:
        assert resp.status == 401


# -- one-time links -------------------------------------------------------------------------------
async def test_a_login_link_opens_one_session_once(client: Client) -> None:
    async with client.post("/api/login-links", headers=AUTH) as resp:
        assert resp.status == 200
        path = (await resp.json())["path"]
    assert path.startswith("/login#once=") and TOKEN not in path
    code = path.split("=", 1)[1]
    async with client.post("/login", data={"once": code}, allow_redirects=False) as resp:
        assert resp.status == 303 and COOKIE in resp.cookies
        sid = resp.cookies[COOKIE].value
    async with client.post("/login", data={"once": code}, allow_redirects=False) as resp:
        assert resp.status == 401
    # A session may not mint links: only the bearer token can.
    async with client.get("/", headers={"Cookie": f"{COOKIE}={sid}"}) as resp:
        page = await resp.text()
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    headers = {"Cookie": f"{COOKIE}={sid}", "X-CSRF-Token": csrf}
    async with client.post("/api/login-links", headers=headers) as resp:
        assert resp.status == 403


# -- the stream -----------------------------------------------------------------------------------
async def test_the_stream_without_auth_is_401(client: Client) -> None:
    async with client.get("/api/stream") as resp:
        assert resp.status == 401
    async with client.get("/api/stream", headers={"Cookie": f"{COOKIE}=made-up"}) as resp:
        assert resp.status == 401


async def read_events(
    resp: aiohttp.ClientResponse, want: set[str], timeout: float = 10.0
) -> dict[str, Any]:
    """Read SSE messages until one of each kind in ``want`` came; returns the last of each."""
    got: dict[str, Any] = {}
    event = None

    async def read() -> None:
        nonlocal event
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event is not None:
                got[event] = json.loads(line[6:])
                if want <= set(got):
                    return

    await asyncio.wait_for(read(), timeout)
    return got


async def test_the_stream_sends_a_snapshot_then_changes_failovers_and_the_cards(
    client: Client, runtime: Runtime
) -> None:
    sid, _, _ = await login(client)
    async with client.get("/api/stream", headers={"Cookie": f"{COOKIE}={sid}"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await read_events(resp, {"snapshot"})
        snap = first["snapshot"]
        assert [t["name"] for t in snap["targets"]] == ["a", "b"]
        card = snap["targets"][0]
        assert card["state"] == "UP" and "calls_per_s" in card["figures"]
        assert snap["failovers"] == [] and snap["timeline"] == []
        # A move by the CLI (bearer token) reaches the browser by itself.
        async with client.post("/api/targets/a/drain", headers=AUTH) as moved:
            assert moved.status == 200
        record = CallRecord(
            call_id="moved-1", number="100", source="127.0.0.1:5060", plan=("a", "b"),
            explain=("a: first", "b: second"), attempts=(
                AttemptRecord("moved-1", "a", 1, 503, "response",
                              Verdict(OutcomeClass.TRUNK_FAULT, True, True), 1.0, 1.1, 1.05),
                AttemptRecord("moved-1", "b", 2, 486, "response",
                              Verdict(OutcomeClass.DESTINATION_FINAL, False, False),
                              1.1, 1.2, None),
            ), status=486, started=1.0, answered=None, ended=1.2, end="failed",
        )  # fmt: skip
        for listener in runtime.listeners:
            listener(record)
        got = await read_events(resp, {"changes", "failovers", "targets"})
        assert [(c["target"], c["new"]) for c in got["changes"]] == [("a", "DRAINED")]
        assert [f["call_id"] for f in got["failovers"]] == ["moved-1"]
        assert [s["target"] for s in got["failovers"][0]["steps"]] == ["a", "b"]
        states = {t["name"]: t["state"] for t in got["targets"]["targets"]}
        assert states == {"a": "DRAINED", "b": "UP"}
    async with client.get("/api/failovers", headers=AUTH) as resp:
        assert [f["call_id"] for f in (await resp.json())["failovers"]] == ["moved-1"]
    async with client.get("/api/dashboard", headers=AUTH) as resp:
        assert (await resp.json())["timeline"][-1]["new"] == "DRAINED"


def _moved(i: int) -> CallRecord:
    fault = Verdict(OutcomeClass.TRUNK_FAULT, True, True)
    ok = Verdict(OutcomeClass.SUCCESS, False, False)
    return CallRecord(
        call_id=f"storm-{i}", number="100", source="127.0.0.1:5060", plan=("a", "b"),
        explain=(), attempts=(
            AttemptRecord(f"storm-{i}", "a", 1, None, "unreachable", fault, 1.0, 1.001, None),
            AttemptRecord(f"storm-{i}", "b", 2, 200, "response", ok, 1.001, 1.01, 1.005),
        ), status=200, started=1.0, answered=1.01, ended=3.0, end="bye",
    )  # fmt: skip


async def test_a_storm_of_failovers_is_a_few_messages_and_drops_no_client(
    client: Client, runtime: Runtime
) -> None:
    async with client.get("/api/stream", headers=AUTH) as resp:
        await read_events(resp, {"snapshot"})
        for i in range(2000):  # a carrier dying under 1,000 calls/s, for two seconds
            for listener in runtime.listeners:
                listener(_moved(i))
        batches = []
        while sum(len(b) for b in batches) < 50:
            got = await read_events(resp, {"failovers"})
            batches.append(got["failovers"])
        assert len(batches) == 1 and len(batches[0]) == 50  # one message, the last 50
        assert batches[0][0]["call_id"] == "storm-1999"  # newest first
    assert "dashboard_stream_dropped" not in counters(runtime)
    async with client.get("/api/failovers", headers=AUTH) as resp:
        assert len((await resp.json())["failovers"]) == 50  # bounded


async def test_the_number_of_streams_is_bounded(client: Client, runtime: Runtime) -> None:
    hub = client.app[DASHBOARD_KEY].hub
    hub.max_clients = 2
    opened = []
    try:
        for _ in range(2):
            resp = await client.get("/api/stream", headers=AUTH)
            await read_events(resp, {"snapshot"})
            opened.append(resp)
        async with client.get("/api/stream", headers=AUTH) as resp:
            assert resp.status == 503
            assert "too many" in (await resp.json())["error"]
    finally:
        for resp in opened:
            resp.close()
    assert counters(runtime)["dashboard_stream_refused"] == 1


async def test_logout_closes_that_sessions_stream(client: Client) -> None:
    sid, _, csrf = await login(client)
    cookie = {"Cookie": f"{COOKIE}={sid}"}
    async with client.get("/api/stream", headers=cookie) as resp:
        await read_events(resp, {"snapshot"})
        async with client.post("/logout", headers={**cookie, "X-CSRF-Token": csrf}) as out:
            assert out.status == 200
        rest = await asyncio.wait_for(resp.content.read(), 10.0)  # ends: EOF, not a hang
        assert b"event: snapshot" not in rest


async def test_an_open_stream_does_not_hold_up_the_servers_close(runtime: Runtime) -> None:
    # aiohttp would cancel a handler still running after shutdown_timeout: with 60 s here,
    # a close that comes much sooner is the dashboard ending its streams by itself.
    runner = web.AppRunner(build_app(runtime, TOKEN), shutdown_timeout=60.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"http://127.0.0.1:{port}/api/stream", headers=AUTH)
            await read_events(resp, {"snapshot"})
            started = time.monotonic()
            await runner.cleanup()
            took = time.monotonic() - started
            rest = await asyncio.wait_for(resp.content.read(), 10.0)
            assert b"event:" not in rest
            resp.close()
    finally:
        await runner.cleanup()
    assert took < 30.0, took
