"""The hooks against real peers: an aiohttp server on 127.0.0.1 and real commands.

A hook that hangs, fails or is missing must cost its own worker only: the event loop
keeps ticking (a ticker measures its lag), the queue stays bounded, what is dropped is
counted and logged once, and no secret reaches the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from trunkguard.alerts import Alert, AlertSettings, HookSettings, alert_body
from trunkguard.alerts._hooks import Hook, webhook_origin
from trunkguard.alerts._service import AlertService
from trunkguard.config import parse_config
from trunkguard.health import State
from trunkguard.runtime import Runtime

SECRET = "s3cr3t-token-value-42"
ALERT = Alert("state", "state", "a", "UP", "DOWN", "5 consecutive 503 from a", 0.0, {"trips": 1})


def body() -> dict[str, Any]:
    return alert_body(ALERT, 1_700_000_000.25, "edge-1", "host-1")


class Receiver:
    """A webhook receiver: records each request; ``mode`` says how it answers."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.mode = "ok"  # ok, fail (500), reject (404), hang
        self.got = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        self.got.set()
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "fail":
            return web.Response(status=500)
        if self.mode == "reject":
            return web.Response(status=404)
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{secret_path}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield rec, f"http://127.0.0.1:{port}/hook/PATHSECRET"
    finally:
        await runner.cleanup()


def webhook(url: str, **kw: Any) -> HookSettings:
    return HookSettings(name="w", type="webhook", url=url, **kw)


def script(tmp_path: Path, text: str, name: str = "notify.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.01)
    return True


class Ticker:
    """Measures the loop's lag: a 10 ms sleep that comes back late is the loop held up."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - t - 0.01)
            self.ticks += 1

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


# -- webhook -------------------------------------------------------------------------------


async def test_webhook_posts_the_json_body_with_the_secret_header(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rec, url = receiver
    counters: Counter[str] = Counter()
    hook = Hook(
        webhook(
            url,
            headers=(("X-Team", "noc"),),
            secret=SECRET,
            secret_header="Authorization",
            secret_prefix="Bearer ",
        ),
        counters,
    )
    hook.start()
    try:
        hook.offer(body())
        assert await wait_for(lambda: counters["alerts_sent"] == 1)
    finally:
        await hook.stop(1.0)
    headers, doc = rec.requests[0]
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["X-Team"] == "noc" and headers["Content-Type"] == "application/json"
    assert doc["event"] == "state" and doc["target"] == "a"
    assert (doc["old"], doc["new"]) == ("UP", "DOWN")
    assert doc["reason"] == "5 consecutive 503 from a"
    assert doc["at"] == "2023-11-14T22:13:20.250Z"
    assert doc["router"] == "edge-1" and doc["host"] == "host-1"
    assert doc["counts"] == {"trips": 1} and doc["severity"] == "error"
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("trunkguard"))
    assert SECRET not in ours and "PATHSECRET" not in ours
    assert "http://127.0.0.1:" in ours  # the hook is named by its origin only


async def test_webhook_formats(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    counters: Counter[str] = Counter()
    hooks = (webhook(url, format="slack"), webhook(url, format="pagerduty", secret="rk"))
    for i, settings in enumerate(hooks, 1):
        hook = Hook(settings, counters)
        hook.start()
        hook.offer(body())
        assert await wait_for(lambda n=i: len(rec.requests) == counters["alerts_sent"] == n)
        await hook.stop(1.0)
    slack, pagerduty = rec.requests[0][1], rec.requests[1][1]
    assert slack == {"text": "[edge-1] a: UP -> DOWN: 5 consecutive 503 from a"}
    assert pagerduty["routing_key"] == "rk" and pagerduty["event_action"] == "trigger"
    assert pagerduty["dedup_key"] == "trunkguard/edge-1/a"
    assert pagerduty["payload"]["severity"] == "error"


async def test_webhook_retries_a_500_with_backoff_then_gives_up(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    rec, url = receiver
    rec.mode = "fail"
    counters: Counter[str] = Counter()
    hook = Hook(webhook(url, retries=2, backoff=0.05), counters)
    hook.start()
    try:
        hook.offer(body())
        assert await wait_for(lambda: counters["alerts_failed"] == 1)
    finally:
        await hook.stop(1.0)
    assert len(rec.requests) == 3 and counters["alerts_retries"] == 2
    assert "HTTP 500, after 3 attempts" in caplog.text


async def test_webhook_does_not_retry_a_404(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.mode = "reject"
    counters: Counter[str] = Counter()
    hook = Hook(webhook(url, retries=3, backoff=0.01), counters)
    hook.start()
    try:
        hook.offer(body())
        assert await wait_for(lambda: counters["alerts_failed"] == 1)
    finally:
        await hook.stop(1.0)
    assert len(rec.requests) == 1 and counters["alerts_retries"] == 0


async def test_webhook_to_a_closed_port_fails_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    counters: Counter[str] = Counter()
    hook = Hook(webhook("http://127.0.0.1:9/x", retries=1, backoff=0.01), counters)
    hook.start()
    try:
        hook.offer(body())
        assert await wait_for(lambda: counters["alerts_failed"] == 1)
    finally:
        await hook.stop(1.0)
    assert "cannot connect" in caplog.text


async def test_a_webhook_that_never_answers_times_out_and_the_loop_keeps_ticking(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    rec, url = receiver
    rec.mode = "hang"
    counters: Counter[str] = Counter()
    hook = Hook(webhook(url, timeout=0.3, retries=1, backoff=0.01, queue=5), counters)
    hook.start()
    try:
        with Ticker() as ticker:
            started = time.monotonic()
            for _ in range(1_000):  # a burst while it hangs: offer() never waits
                hook.offer(body())
            offered = time.monotonic() - started
            assert len(hook.queue) == 5
            assert await wait_for(lambda: counters["alerts_failed"] >= 1)
        assert ticker.ticks > 10 and ticker.worst < 0.5
    finally:
        await hook.stop(0.0)
    assert offered < 0.5
    assert counters["alerts_dropped"] >= 995  # the burst, and what the stop left unsent
    assert caplog.text.count("dropping the oldest") == 1  # once per burst
    assert "no answer in 0.3s, after 2 attempts" in caplog.text


# -- command -------------------------------------------------------------------------------


async def test_command_gets_arguments_and_tg_variables(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    argv = script(
        tmp_path,
        f'printf "%s|" "$@" >> {out}; echo "$TG_TARGET $TG_NEW $TG_AT $TG_ROUTER '
        f'$EXTRA ${{TRUNKGUARD_TEST_SESSION:-none}}" >> {out}; echo "$TG_JSON" > {out}.json\n',
    )
    counters: Counter[str] = Counter()
    hook = Hook(
        HookSettings(name="c", type="command", argv=(argv, "fixed"), env=(("EXTRA", "x"),)),
        counters,
    )
    hook.start()
    try:
        hook.offer(body())
        assert await wait_for(lambda: counters["alerts_sent"] == 1)
    finally:
        await hook.stop(1.0)
    lines = out.read_text().splitlines()
    assert lines[0] == (
        "fixed|state|a|UP|DOWN|5 consecutive 503 from a|"
        "a DOWN 2023-11-14T22:13:20.250Z edge-1 x none"
    )
    # The router's own environment is not passed on (it may hold secrets).
    assert json.loads(Path(f"{out}.json").read_text())["reason"] == "5 consecutive 503 from a"


async def test_a_failing_command_is_logged_with_its_status_and_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = script(tmp_path, 'echo "carrier API said no" >&2; exit 3\n')
    counters: Counter[str] = Counter()
    hook = Hook(HookSettings(name="c", type="command", argv=(argv,)), counters)
    hook.start()
    try:
        hook.offer(body())
        assert await wait_for(lambda: counters["alerts_failed"] == 1)
    finally:
        await hook.stop(1.0)
    assert "exit status 3; stderr: 'carrier API said no'" in caplog.text


async def test_a_missing_command_fails_and_the_worker_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counters: Counter[str] = Counter()
    hook = Hook(HookSettings(name="c", type="command", argv=(str(tmp_path / "gone"),)), counters)
    hook.start()
    try:
        hook.offer(body())
        hook.offer(body())
        assert await wait_for(lambda: counters["alerts_failed"] == 2)
    finally:
        await hook.stop(1.0)
    assert "cannot run it: No such file or directory" in caplog.text


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_hanging_command_is_killed_with_its_children(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pids = tmp_path / "pids"
    argv = script(tmp_path, f"sleep 600 & echo $! > {pids}; echo $$ >> {pids}; wait\n")
    counters: Counter[str] = Counter()
    hook = Hook(HookSettings(name="c", type="command", argv=(argv,), timeout=0.5), counters)
    hook.start()
    try:
        with Ticker() as ticker:
            hook.offer(body())
            assert await wait_for(lambda: counters["alerts_failed"] == 1)
        assert ticker.worst < 0.5
    finally:
        await hook.stop(1.0)
    assert "still running after 0.5s: killed" in caplog.text
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    assert await wait_for(lambda: not any(_alive(p) for p in started), 10.0)


async def test_stop_kills_a_command_in_progress(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    argv = script(tmp_path, f"echo $$ > {pids}; exec sleep 600\n")
    counters: Counter[str] = Counter()
    hook = Hook(HookSettings(name="c", type="command", argv=(argv,), timeout=60), counters)
    hook.start()
    hook.offer(body())
    assert await wait_for(lambda: pids.exists() and pids.read_text().strip() != "")
    started = time.monotonic()
    await hook.stop(0.2)
    assert time.monotonic() - started < 5.0
    pid = int(pids.read_text())
    assert await wait_for(lambda: not _alive(pid), 10.0)


# -- the service on a real runtime ---------------------------------------------------------

CONFIG = """\
listen: udp:127.0.0.1:0
allow: [127.0.0.0/8]
probe: {enabled: false}
carriers:
  - {name: a, uri: "sip:127.0.0.1:9"}
  - {name: b, uri: "sip:127.0.0.1:11"}
store: {path: events.db}
"""


async def test_the_service_sends_operator_moves_and_every_route_degraded(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    config = parse_config(CONFIG)
    config._base = tmp_path
    runtime = Runtime(config)
    loop = asyncio.get_running_loop()
    runtime.start(loop.time())
    service = AlertService(runtime, AlertSettings(hooks=(webhook(url),), router="edge-1"))
    service.start()
    try:
        now = loop.time()
        assert runtime.force_down("a", 60, now, "drill")
        assert runtime.drain("b", now)
        assert await wait_for(lambda: runtime.proxy.counters["alerts_sent"] == 3)
        assert runtime.restore("b", loop.time())
        assert await wait_for(lambda: runtime.proxy.counters["alerts_sent"] == 5)
    finally:
        await service.stop()
        runtime.close()
    docs = [doc for _, doc in rec.requests]
    assert [(d["event"], d["target"], d["new"]) for d in docs] == [
        ("state", "a", "FORCED_DOWN"),
        ("state", "b", "DRAINED"),
        ("degraded", None, "DEGRADED"),
        ("state", "b", "UP"),
        ("recovered", None, "OK"),
    ]
    assert docs[2]["reason"] == "no route is UP: a FORCED_DOWN, b DRAINED"
    assert docs[2]["severity"] == "critical" and docs[2]["router"] == "edge-1"
    assert service.feed not in runtime.listeners
    assert runtime.health.targets["a"].state is State.FORCED_DOWN


def test_webhook_origin_never_shows_the_path() -> None:
    assert webhook_origin("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com"
    assert webhook_origin("http://u:pw@10.0.0.1:8080/p?q=1") == "http://10.0.0.1:8080"


def test_no_process_environment_leaks_to_commands() -> None:
    from trunkguard.alerts._payload import command_env

    os.environ["SOME_PASSWORD_ENV"] = "hunter2"
    try:
        env = command_env(body(), (), None)
    finally:
        del os.environ["SOME_PASSWORD_ENV"]
    assert "SOME_PASSWORD_ENV" not in env and set(env) >= {"PATH", "TG_EVENT", "TG_JSON"}


async def test_sighup_reload_puts_new_hooks_in_force_and_a_refused_one_keeps_the_old(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    from trunkguard.cli import _reload
    from trunkguard.config import load_config

    rec, url = receiver
    out = tmp_path / "out.txt"
    argv = script(tmp_path, f'echo "$1 $2 $4" >> {out}\n')
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG + f"alerts: {{hooks: [{{type: command, argv: [{argv}]}}]}}\n")
    config, source = load_config(path)
    runtime = Runtime(config)
    loop = asyncio.get_running_loop()
    runtime.start(loop.time())
    service = AlertService(runtime, config.alert_settings())
    service.start()
    try:
        runtime.force_down("a", 60, loop.time(), "drill")
        assert await wait_for(lambda: out.exists() and "state a FORCED_DOWN" in out.read_text())
        path.write_text(CONFIG + f"alerts: {{hooks: [{{type: webhook, url: '{url}'}}]}}\n")
        await _reload(runtime, source, None, alerts=service)
        assert [h.settings.type for h in service.hooks] == ["webhook"]
        runtime.restore("a", loop.time())
        assert await wait_for(lambda: len(rec.requests) == 1)
        assert rec.requests[0][1]["new"] == "UP"
        bad = "alerts: {hooks: [{type: webhook, url: 'http://h/', secret_header: X, %s}]}\n"
        path.write_text(CONFIG + bad % "secret_file: missing.key")
        await _reload(runtime, source, None, alerts=service)
        assert runtime.proxy.counters["reloads_refused"] == 1
        assert [h.settings.url for h in service.hooks] == [url]
    finally:
        await service.stop()
        runtime.close()
    assert out.read_text().splitlines() == ["state a FORCED_DOWN"]


async def test_a_reload_stops_the_old_hooks_together_not_one_after_the_other(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    """Six webhooks that hang: the reload that replaces them waits one stop_timeout for all
    of them (a POST /api/reload answers then), not one per hook."""
    rec, url = receiver
    rec.mode = "hang"
    config = parse_config(CONFIG)
    config._base = tmp_path
    runtime = Runtime(config)
    loop = asyncio.get_running_loop()
    runtime.start(loop.time())
    hooks = tuple(
        HookSettings(name=f"w{i}", type="webhook", url=url, timeout=60, retries=0)
        for i in range(6)
    )
    service = AlertService(runtime, AlertSettings(hooks=hooks))
    service.start()
    try:
        runtime.force_down("a", 60, loop.time(), "drill")
        assert await wait_for(lambda: len(rec.requests) == len(hooks))  # each one is stuck
        assert all(h.pending for h in service.hooks)
        started = time.monotonic()
        await service.reload(AlertSettings(stop_timeout=1.0))
        took = time.monotonic() - started
        assert service.hooks == []
    finally:
        await service.stop()
        runtime.close()
    # One after the other would be 6 s at least.
    assert took < 4.0, f"the reload took {took:.1f}s"
    assert runtime.proxy.counters["alerts_sent"] == 0


async def test_overload_alerts_and_each_hooks_events_filter(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    from trunkguard.proxy._overload import OverloadEvent

    rec, url = receiver
    out = tmp_path / "out.txt"
    argv = script(tmp_path, f'echo "$1 $4" >> {out}\n')
    config = parse_config(CONFIG)
    config._base = tmp_path
    runtime = Runtime(config)
    loop = asyncio.get_running_loop()
    runtime.start(loop.time())
    hooks = (
        webhook(url, events=frozenset({"overload"})),
        HookSettings(name="c", type="command", argv=(argv,), events=frozenset({"state"})),
    )
    service = AlertService(runtime, AlertSettings(hooks=hooks))
    service.start()
    try:
        runtime.proxy.events.append(OverloadEvent("overloaded", "loop lag 80 ms", loop.time()))
        runtime.pump()  # as the router does after each input: the listeners get it
        runtime.force_down("a", 60, loop.time(), "drill")
        runtime.proxy.events.append(OverloadEvent("recovered", "3 calls shed", loop.time()))
        runtime.pump()
        assert await wait_for(lambda: runtime.proxy.counters["alerts_sent"] == 3)
    finally:
        await service.stop()
        runtime.close()
    assert [(d["event"], d["new"], d["reason"]) for _, d in rec.requests] == [
        ("overload", "OVERLOADED", "loop lag 80 ms"),
        ("overload_over", "OK", "3 calls shed"),
    ]
    assert out.read_text().splitlines() == ["state FORCED_DOWN"]
