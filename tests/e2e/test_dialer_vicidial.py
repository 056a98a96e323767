"""Dialer feedback against a VICIdial stand-in (``vicidial.py``) on 127.0.0.1, port 0.

The stand-in accepts exactly update_campaign's documented parameters and answers as
VICIdial does; what it refuses is a test failure (``violations``). The sinks are driven
directly (success, an ``ERROR:`` answer, a bad password, a timeout, HTTP 500), then the
whole service inside a real Runtime whose carriers are forced down and restored, so
the path from a state change to VICIdial's campaign is the router's own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from vicidial import VicidialStandIn

from trunkguard.cli import main
from trunkguard.config import ConfigError, parse_config
from trunkguard.dialer import (
    CampaignSettings,
    DialerSettings,
    LevelChange,
    Step,
    VicidialSettings,
    WebhookSettings,
)
from trunkguard.dialer._service import DialerService
from trunkguard.dialer._sinks import DeliveryFailed, Vicidial
from trunkguard.runtime import Runtime

pytestmark = pytest.mark.e2e
PASSWORD = "s3cr3t-api-pass"


def change(level: float = 2.0, campaign: str = "TESTOUT") -> LevelChange:
    return LevelChange(campaign, 3.0, level, 0.66, "capacity 66%", 0.0)


def vici(url: str, password: str = PASSWORD, **kw: Any) -> VicidialSettings:
    return VicidialSettings(url=url, user="6666", password=password, **kw)


@pytest.fixture
def standin() -> Any:
    with VicidialStandIn(password=PASSWORD) as s:
        yield s
    assert s.violations == [], s.violations


async def test_update_campaign_as_documented(standin: VicidialStandIn) -> None:
    sink = Vicidial(vici(standin.url, source="trunkguard"))
    try:
        assert await sink.send(change(2.0)) == 0
        assert await sink.send(change(0.0)) == 0
        assert await sink.send(change(1.25)) == 0
    finally:
        await sink.close()
    assert standin.levels("TESTOUT") == ["2.0", "0.0", "1.25"]
    first = standin.calls[0]
    assert first.params == {
        "source": "trunkguard",
        "user": "6666",
        "pass": PASSWORD,
        "function": "update_campaign",
        "campaign_id": "TESTOUT",
        "auto_dial_level": "2.0",
    }
    assert first.answer == "SUCCESS: update_campaign CAMPAIGN HAS BEEN UPDATED - 6666|TESTOUT"


async def test_an_error_answer_is_not_retried_and_is_quoted(standin: VicidialStandIn) -> None:
    standin.set_mode("error")
    sink = Vicidial(vici(standin.url, retries=3))
    try:
        with pytest.raises(DeliveryFailed) as got:
            await sink.send(change())
    finally:
        await sink.close()
    assert got.value.definitive
    assert "USER DOES NOT HAVE PERMISSION TO UPDATE CAMPAIGNS" in str(got.value)
    assert len(standin.calls) == 1  # VICIdial said no: asking again at once would not help
    assert standin.levels("TESTOUT") == []


async def test_unknown_campaign_is_an_error(standin: VicidialStandIn) -> None:
    sink = Vicidial(vici(standin.url))
    try:
        with pytest.raises(DeliveryFailed) as got:
            await sink.send(change(campaign="NOPE"))
    finally:
        await sink.close()
    assert "CAMPAIGN DOES NOT EXIST - 6666|NOPE" in str(got.value)


async def test_a_bad_password_answer_never_shows_the_password(standin: VicidialStandIn) -> None:
    wrong = "wrong-pass-77"
    sink = Vicidial(vici(standin.url, password=wrong))
    try:
        with pytest.raises(DeliveryFailed) as got:
            await sink.send(change())
    finally:
        await sink.close()
    # VICIdial's own answer quotes it: |user|pass|0|
    assert wrong in standin.calls[0].answer
    assert wrong not in str(got.value)
    assert "Invalid Username/Password: |6666|********|0|" in str(got.value)


async def test_a_timeout_is_bounded_and_the_loop_keeps_running(
    standin: VicidialStandIn,
) -> None:
    standin.set_mode("hang")
    sink = Vicidial(vici(standin.url, timeout=0.3, retries=1, backoff=0.1))
    loop = asyncio.get_running_loop()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = loop.create_task(ticker())
    start = loop.time()
    try:
        with pytest.raises(DeliveryFailed) as got:
            await sink.send(change())
    finally:
        task.cancel()
        await sink.close()
    took = loop.time() - start
    assert str(got.value) == "no answer in 0.3s, after 2 attempts"
    assert not got.value.definitive
    assert took < 10  # 2 x 0.3 s + 0.1 s, with room for a busy machine
    assert ticks > 5  # the loop was free while the dialer hung


async def test_http_500_is_retried_then_fails(standin: VicidialStandIn) -> None:
    standin.set_mode("http500")
    sink = Vicidial(vici(standin.url, retries=2, backoff=0.01))
    try:
        with pytest.raises(DeliveryFailed) as got:
            await sink.send(change())
    finally:
        await sink.close()
    assert str(got.value) == "HTTP 500, after 3 attempts"
    assert sink.attempts == 3


# -- the service in a Runtime ------------------------------------------------------------------

CONFIG = """
listen: "udp:127.0.0.1:0"
carriers:
  - {name: a, uri: "sip:127.0.0.1:9"}
  - {name: b, uri: "sip:127.0.0.1:10"}
  - {name: c, uri: "sip:127.0.0.1:11"}
probe: {enabled: false}
store: {path: events.db}
"""

CAMPAIGN = CampaignSettings(
    "TESTOUT",
    normal=3.0,
    steps=(Step(0.8, 2.0), Step(0.5, 1.0), Step(0.2, 0.0)),
    hysteresis=0.1,
    min_interval=0.0,
)


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = parse_config(CONFIG)
    config._base = tmp_path
    rt = Runtime(config)
    rt.start(asyncio.get_running_loop().time())
    yield rt
    rt.close()


async def test_the_service_lowers_step_by_step_and_restores(
    runtime: Runtime,
    standin: VicidialStandIn,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = DialerSettings(campaigns=(CAMPAIGN,), vicidial=vici(standin.url))
    service = DialerService(runtime, settings)
    service.start()
    loop = asyncio.get_running_loop()
    try:
        assert standin.calls == []  # full capacity at start: nothing to say
        runtime.force_down("a", 600, loop.time(), "test")
        assert await wait_for(lambda: standin.levels("TESTOUT") == ["2.0"])
        runtime.force_down("b", 600, loop.time(), "test")
        assert await wait_for(lambda: standin.levels("TESTOUT") == ["2.0", "1.0"])
        runtime.force_down("c", 600, loop.time(), "test")
        assert await wait_for(lambda: standin.levels("TESTOUT") == ["2.0", "1.0", "0.0"])
        for name in ("a", "b", "c"):
            runtime.restore(name, loop.time())
        # restored targets come back UP (or through PROBING, which counts for nothing)
        assert await wait_for(lambda: standin.levels("TESTOUT")[-1:] == ["3.0"])
    finally:
        await service.stop()
    counters = runtime.proxy.counters
    assert counters["dialer_sent"] == len(standin.levels("TESTOUT"))
    assert counters["dialer_failed"] == 0
    notices = [n for n in runtime.store.notices("TESTOUT") if n.kind == "dialer"]
    assert [n.state for n in notices][:3] == ["lowered", "lowered", "lowered"]
    assert notices[-1].state == "restored"
    assert "capacity 67% (a FORCED_DOWN, b UP, c UP), below 80%" in notices[0].detail
    assert PASSWORD not in caplog.text
    capsys.readouterr()
    assert main(["events", "--db", str(runtime.store.path)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if " dialer " in x]
    assert len(lines) == len(notices)
    assert "TESTOUT" in lines[0] and "lowered" in lines[0] and "3.0 -> 2.0" in lines[0]


async def test_a_failing_dialer_is_logged_once_per_burst_and_caught_up(
    runtime: Runtime, standin: VicidialStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trunkguard.dialer")
    standin.set_mode("error")
    settings = DialerSettings(
        campaigns=(CAMPAIGN,), vicidial=vici(standin.url, retries=0), retry_after=0.5
    )
    service = DialerService(runtime, settings)
    service.start()
    loop = asyncio.get_running_loop()
    counters = runtime.proxy.counters
    try:
        runtime.force_down("a", 600, loop.time(), "test")
        assert await wait_for(lambda: counters["dialer_failed"] >= 1)
        runtime.force_down("b", 600, loop.time(), "test")
        # the first failure, then resends every retry_after, each failing
        assert await wait_for(lambda: counters["dialer_failed"] >= 4)
        standin.set_mode("ok")
        assert await wait_for(lambda: standin.levels("TESTOUT") == ["1.0"])
    finally:
        await service.stop()
    failed_lines = [r for r in caplog.records if "failed on campaign" in r.getMessage()]
    assert len(failed_lines) == 1  # once per burst
    assert "PERMISSION TO UPDATE CAMPAIGNS" in failed_lines[0].getMessage()
    assert any("answers again, after" in r.getMessage() for r in caplog.records)
    notices = [n.state for n in runtime.store.notices("TESTOUT") if n.kind == "dialer"]
    assert notices.count("failed") == 1 and "resend" in notices
    assert PASSWORD not in caplog.text


async def test_dry_run_only_logs(
    runtime: Runtime, standin: VicidialStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trunkguard.dialer")
    dry = CampaignSettings("TESTOUT", 3.0, CAMPAIGN.steps, min_interval=0.0, dry_run=True)
    service = DialerService(runtime, DialerSettings(campaigns=(dry,), vicidial=vici(standin.url)))
    service.start()
    loop = asyncio.get_running_loop()
    try:
        runtime.force_down("a", 600, loop.time(), "test")
        runtime.force_down("b", 600, loop.time(), "test")
        await asyncio.sleep(0.3)  # nothing may arrive; give it the time it would take
    finally:
        await service.stop()
    assert standin.calls == []
    notices = [n.state for n in runtime.store.notices("TESTOUT") if n.kind == "dialer"]
    assert notices == ["dry run: lowered", "dry run: lowered"]
    assert runtime.proxy.counters["dialer_dry_run"] == 2
    assert "(dry run)" in caplog.text and "auto_dial_level 2.0 -> 1.0" in caplog.text


async def test_the_webhook_gets_each_change(runtime: Runtime) -> None:
    got: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append((dict(request.headers), json.loads(await request.read())))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/dial", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    hook = WebhookSettings(
        url=f"http://127.0.0.1:{port}/dial", secret="tok-1", secret_header="X-Token"
    )
    service = DialerService(
        runtime, DialerSettings(campaigns=(CAMPAIGN,), webhook=hook, router="edge-1")
    )
    service.start()
    loop = asyncio.get_running_loop()
    try:
        runtime.drain("a", loop.time())
        assert await wait_for(lambda: len(got) == 1)
        runtime.restore("a", loop.time())
        assert await wait_for(lambda: len(got) == 2)
    finally:
        await service.stop()
        await runner.cleanup()
    headers, body = got[0]
    assert headers["X-Token"] == "tok-1"
    assert body["event"] == "dial_level" and body["router"] == "edge-1"
    assert (body["campaign"], body["old"], body["new"], body["level"]) == (
        "TESTOUT", "3.0", "2.0", 2.0
    )
    assert body["capacity"] == pytest.approx(2 / 3, abs=1e-3)
    assert "a DRAINED" in body["reason"]
    assert abs(body["at"] - time.time()) < 60  # wall clock
    assert got[1][1]["new"] == "3.0"


def test_config_reads_the_password_and_never_shows_it(tmp_path: Path) -> None:
    (tmp_path / "vici.pass").write_text(PASSWORD + "\n")
    text = CONFIG + """
dialer:
  vicidial: {url: "http://vici.example/vicidial/non_agent_api.php", user: "6666",
             pass_file: vici.pass}
  campaigns:
    - id: TESTOUT
      carriers: [a, b, c]
      normal: 3.0
      levels: [{below: 0.5, level: 1.0}, {below: 0.8, level: 2.0}]
"""
    config = parse_config(text)
    config._base = tmp_path
    settings = config.dialer_settings()
    assert settings.vicidial is not None and settings.vicidial.password == PASSWORD
    assert PASSWORD not in repr(settings)
    assert settings.campaigns[0].steps == (Step(0.8, 2.0), Step(0.5, 1.0))
    (tmp_path / "vici.pass").unlink()
    with pytest.raises(ConfigError) as got:
        config.dialer_settings()
    assert "dialer vicidial password" in str(got.value.problems)


async def test_a_reload_keeps_the_level_and_uses_the_new_table(
    runtime: Runtime, standin: VicidialStandIn
) -> None:
    settings = DialerSettings(campaigns=(CAMPAIGN,), vicidial=vici(standin.url))
    service = DialerService(runtime, settings)
    service.start()
    loop = asyncio.get_running_loop()
    try:
        runtime.force_down("a", 600, loop.time(), "test")
        assert await wait_for(lambda: standin.levels("TESTOUT") == ["2.0"])
        # a new table: 2 of 3 carriers is now below 70 % -> 1.5; the level in force is kept
        steps = (Step(0.7, 1.5), Step(0.2, 0.0))
        new = CampaignSettings("TESTOUT", 2.5, steps, min_interval=0.0)
        await service.reload(DialerSettings(campaigns=(new,), vicidial=vici(standin.url)))
        assert await wait_for(lambda: standin.levels("TESTOUT") == ["2.0", "1.5"])
        runtime.restore("a", loop.time())
        assert await wait_for(lambda: standin.levels("TESTOUT") == ["2.0", "1.5", "2.5"])
    finally:
        await service.stop()


async def test_prefixes_take_the_carriers_routing_would_use(tmp_path: Path) -> None:
    text = CONFIG + """
routes:
  - {prefix: "44", pin: [b, c]}
  - {prefix: "1212", exclude: [a]}
"""
    config = parse_config(text.replace("  - {name: c,", "  - {max_calls: 30, name: c,"))
    config._base = tmp_path
    rt = Runtime(config)
    rt.start(asyncio.get_running_loop().time())
    uk = CampaignSettings("UK", 3.0, CAMPAIGN.steps, prefixes=("44",))
    nyc = CampaignSettings("NYC", 3.0, CAMPAIGN.steps, prefixes=("1212",))
    rest = CampaignSettings("US", 3.0, CAMPAIGN.steps, prefixes=("1",))
    named = CampaignSettings("NAMED", 3.0, CAMPAIGN.steps, carriers=("a",))
    service = DialerService(rt, DialerSettings(campaigns=(uk, nyc, rest, named)))
    try:
        assert service.members(uk) == [("b", 1.0), ("c", 30.0)]
        assert service.members(nyc) == [("b", 1.0), ("c", 30.0)]
        assert service.members(rest) == [("a", 1.0), ("b", 1.0), ("c", 30.0)]
        assert service.members(named) == [("a", 1.0)]
        service.start()
        rt.force_down("b", 600, asyncio.get_running_loop().time(), "test")
        caps = service.capacities()
        assert caps["UK"].share == pytest.approx(30 / 31)  # weighed by max_calls
        assert caps["NAMED"].share == 1.0
    finally:
        await service.stop()
        rt.close()
