"""Quality through the runtime and ``trunkguard route``: records in, a logged demotion, a plan.

The runtime gets call records the way the core hands them out (its event list, then
``pump``); nothing is sent. ``trunkguard route`` then reads the demotion from the event
log and explains the plan with it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path

import pytest

from trunkguard.admin import AdminSettings, start_admin
from trunkguard.cli import main
from trunkguard.config import ConfigError, load_config, parse_config
from trunkguard.health import FailureTable, State
from trunkguard.proxy import AttemptRecord, CallRecord
from trunkguard.runtime import Runtime

NUMBER = "15551234567"
TABLE = FailureTable()


def write_config(
    tmp_path: Path, quality: str = "{enabled: true, groups: ['1']}", extra: str = ""
) -> Path:
    for name, rate in (("a", "0.002"), ("b", "0.004"), ("c", "0.006")):
        (tmp_path / f"{name}.csv").write_text(f"prefix,rate\n1,{rate}\n44,{rate}\n")
    carriers = "\n".join(
        f'  - {{name: {n}, uri: "sip:127.0.0.1:{5991 + i}", deck: {{path: {n}.csv}}}}'
        for i, n in enumerate("abc")
    )
    path = tmp_path / "router.yaml"
    path.write_text(
        f"""\
listen: udp:127.0.0.1:0
allow: [127.0.0.0/8]
carriers:
{carriers}
probe: {{enabled: false}}
store: {{path: "{tmp_path / 'events.db'}"}}
quality: {quality}
{extra}"""
    )
    return path


def call(carrier: str, status: int, at: float) -> CallRecord:
    attempt = AttemptRecord(
        call_id=f"c{at}{carrier}",
        target=carrier,
        attempt=1,
        status=status,
        kind="response",
        verdict=TABLE.classify(status),
        started=at,
        ended=at + 0.3,
        first_response=at + 0.05,
        carrier=carrier,
    )
    answered = at + 1.0 if status == 200 else None
    return CallRecord(
        call_id=attempt.call_id,
        number=NUMBER,
        source="127.0.0.1",
        plan=(carrier,),
        explain=(),
        attempts=(attempt,),
        status=status,
        started=at,
        answered=answered,
        ended=at + 31.0 if answered is not None else at + 0.3,
        end="bye" if answered is not None else "failed",
    )


def test_demotion_is_logged_planned_and_explained_by_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    config, _ = load_config(path)
    rt = Runtime(config)
    try:
        assert rt.quality is not None and rt.proxy.quality is rt.quality
        for i in range(60):
            rt.proxy.events.append(call("b", 200, i * 0.5))
            rt.proxy.events.append(call("a", 200 if i % 8 == 0 else 486, i * 0.5))
        rt.pump()
        assert [(c, g) for c, g, _ in rt.quality.demoted()] == [("a", "1")]
        assert rt.health.targets["a"].state is State.UP  # quality is not health
        notices = [n for n in rt.store.notices() if n.kind == "quality"]
        assert [(n.target, n.state) for n in notices] == [("a", "demoted")]
        assert notices[0].detail.startswith("for 1: ASR ")
        assert "(peers 100 %)" in notices[0].detail
        assert rt.proxy.counters["plans_quality_demoted"] == 0  # no call planned yet
    finally:
        rt.close()
    assert main(["route", NUMBER, "-c", str(path)]) == 0
    out = capsys.readouterr().out
    config_part, live_part = out.split("with the live states in", 1)
    assert "try in order: a, b, c" in config_part  # cost alone
    assert "try in order: b, c, a" in live_part  # a demoted for 1
    line = next(x.strip() for x in live_part.splitlines() if x.strip().startswith("a: "))
    assert line.startswith("a: 0.002/min")
    assert "ASR " in line and "(peers 100 %)" in line and line.endswith("\u2192 demoted for 1")
    # Another destination group: a keeps its cost rank.
    assert main(["route", "447700900123", "-c", str(path)]) == 0
    assert "try in order: a, b, c" in capsys.readouterr().out.split("with the live states")[1]
    # trunkguard events shows the demotion as such.
    assert main(["events", "-c", str(path)]) == 0
    assert "quality    demoted" in capsys.readouterr().out


def test_quality_off_by_default_leaves_plans_alone(tmp_path: Path) -> None:
    config, _ = load_config(write_config(tmp_path, "{}"))
    assert config.quality_settings() is None
    rt = Runtime(config)
    try:
        assert rt.quality is None and rt.proxy.quality is None
        rt.proxy.events.append(call("a", 486, 1.0))
        rt.pump()  # the listener ignores records when quality is off
    finally:
        rt.close()


def test_route_prefixes_are_groups_and_bad_values_are_clear_errors() -> None:
    text = """\
listen: udp:127.0.0.1:0
carriers: [{name: a, uri: "sip:127.0.0.1:5991"}]
routes: [{prefix: "4420", pin: [a]}]
quality: {enabled: true, groups: ["44"], group_digits: 2}
"""
    settings = parse_config(text).quality_settings()
    assert settings is not None and settings.groups == ("44", "4420")
    assert settings.min_asr_samples == 30 and settings.min_acd_samples == 10
    for bad, field in (
        ("{well_below: 1.5}", "quality.well_below"),
        ("{groups: ['44x']}", "quality.groups"),
        ("{min_samples_asr: 0}", "quality.min_samples_asr"),
        ("{treshold: 3}", "quality.treshold"),
    ):
        with pytest.raises(ConfigError) as exc:
            parse_config(text.replace(text.splitlines()[-1], f"quality: {bad}"))
        assert field in str(exc.value), str(exc.value)


TOKEN = "quality-token-5b7e1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, token: str | None = TOKEN) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_live_figures_from_the_admin_api_in_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    path = write_config(tmp_path, extra=f'admin: {{listen: "127.0.0.1:{port}", token: {TOKEN}}}\n')
    config, _ = load_config(path)
    rt = Runtime(config)
    rt.start(asyncio.get_running_loop().time())
    admin = await start_admin(rt, AdminSettings(port=port, token=TOKEN))
    try:
        t0 = asyncio.get_running_loop().time() - 60.0  # on the router's clock: in its window
        for i in range(60):
            rt.proxy.events.append(call("b", 200, t0 + i * 0.5))
            rt.proxy.events.append(call("a", 200 if i % 8 == 0 else 486, t0 + i * 0.5))
            rt.proxy.events.append(call("c", 200, t0 + i * 0.5))
        rt.pump()
        base = f"http://127.0.0.1:{port}/api/quality"
        status, view = await asyncio.to_thread(get, f"{base}?number=%2B{NUMBER}")
        assert status == 200 and view["enabled"] is True and view["group"] == "1"
        groups = view["groups"]
        assert isinstance(groups, dict)
        a = groups["1"]["a"]
        assert a["demoted"] is True and a["seizures"] == 60 and a["asr"] == pytest.approx(8 / 60)
        assert groups["1"]["b"]["demoted"] is False and groups["1"]["b"]["asr"] == 1.0
        assert view["demoted"] == [{"carrier": "a", "group": "1", "why": a["why"]}]
        assert (await asyncio.to_thread(get, f"{base}?number=12ab"))[0] == 400
        assert (await asyncio.to_thread(get, base, None))[0] == 401
        assert await asyncio.to_thread(main, ["route", NUMBER, "-c", str(path)]) == 0
        out = capsys.readouterr().out
        live = out.split("with the live states in", 1)[1]
        assert f"and the quality figures of the router at http://127.0.0.1:{port}:" in live
        assert "try in order: b, c, a" in live
        lines = {x.strip()[:1]: x.strip() for x in live.splitlines() if x.strip()[1:3] == ": "}
        assert lines["a"].endswith("ASR 13 % over 60 calls (peers 100 %) \u2192 demoted for 1")
        assert lines["b"].endswith("; cost rank), ASR 100 % over 60 calls")  # live, not logged
    finally:
        await admin.close()
        rt.close()
    # The router gone: route says so and explains from the event log.
    assert await asyncio.to_thread(main, ["route", NUMBER, "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no live quality figures" in out and "try in order: b, c, a" in out


def test_a_reload_keeps_the_figures_unless_quality_changes(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    config, _ = load_config(path)
    rt = Runtime(config)
    try:
        tracker = rt.quality
        assert tracker is not None
        rt.reload(config, config.routing(), 1.0)
        assert rt.quality is tracker and rt.proxy.quality is tracker  # same settings: kept
        changed, _ = load_config(write_config(tmp_path, "{enabled: true, window: 120}"))
        rt.reload(changed, changed.routing(), 2.0)
        assert rt.quality is not tracker and rt.quality is not None
        assert rt.quality.settings.window == 120.0 and rt.proxy.quality is rt.quality
        off, _ = load_config(write_config(tmp_path, "{enabled: false}"))
        rt.reload(off, off.routing(), 3.0)
        assert rt.quality is None and rt.proxy.quality is None
    finally:
        rt.close()


def test_the_fastagi_advisor_ranks_with_quality_as_the_proxy_does(tmp_path: Path) -> None:
    """A dialplan that dials the carriers itself gets the same ranking as a proxied call:
    a carrier demoted for the number's group comes after its peers in TG_ROUTE_1..N."""
    from trunkguard.agi import AgiSettings
    from trunkguard.agi._advisor import advise
    from trunkguard.agi._server import AgiServer

    path = write_config(tmp_path)
    text = path.read_text()
    for n in "abc":
        text = text.replace(f"{n}.csv}}}}", f'{n}.csv}}, dial: "PJSIP/${{NUMBER}}@{n}"}}')
    path.write_text(text)
    config, _ = load_config(path)
    rt = Runtime(config)
    try:
        server = AgiServer(rt, AgiSettings())
        before = advise(NUMBER, lambda u: server._plan(u, 30.0), server.templates(), 10)
        assert [r.carrier for r in before.routes] == ["a", "b", "c"]  # cost alone
        for i in range(60):
            rt.proxy.events.append(call("b", 200, i * 0.5))
            rt.proxy.events.append(call("a", 200 if i % 8 == 0 else 486, i * 0.5))
        rt.pump()
        assert rt.quality is not None and rt.quality.demoted()
        advice = advise(NUMBER, lambda u: server._plan(u, 30.0), server.templates(), 10)
        assert [r.dial for r in advice.routes] == ["PJSIP/15551234567@b", "PJSIP/15551234567@c",
                                                   "PJSIP/15551234567@a"]
        assert any(x.endswith("\u2192 demoted for 1") for x in advice.explain)
        # Another group: a keeps its cost rank there too.
        uk = advise("447700900123", lambda u: server._plan(u, 30.0), server.templates(), 10)
        assert [r.carrier for r in uk.routes] == ["a", "b", "c"]
    finally:
        rt.close()
