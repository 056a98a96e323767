"""A drill on a live router: force the first carrier down for a while, calls keep completing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from trunkguard.lab import DrillError, run_drill, write_drill_report
from trunkguard.lab._caller import CallGenerator, GeneratorSettings
from trunkguard.lab._carrier import SimCarrier
from trunkguard.lab._router import LabRouter

pytestmark = pytest.mark.e2e
TOKEN = "drill-test-token-0123456789"


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _router(tmp_path: Path, names: list[str]) -> tuple[LabRouter, list[SimCarrier], str]:
    sims = [SimCarrier(n) for n in names]
    for sim in sims:
        await sim.start()
    port = _free_tcp_port()
    router = LabRouter(
        tmp_path,
        {
            "listen": "udp:127.0.0.1:0",
            "allow": ["127.0.0.0/8"],
            "carriers": [{"name": s.name, "uri": f"sip:127.0.0.1:{s.port}"} for s in sims],
            "admin": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
            "probe": {"interval": 1.0, "interval_out": 0.5, "timeout": 0.5},
        },
    )
    await router.start()
    return router, sims, f"http://127.0.0.1:{port}"


async def test_drill_moves_calls_and_reverts(tmp_path: Path) -> None:
    router, sims, url = await _router(tmp_path, ["a", "b"])
    try:
        generator = CallGenerator(
            GeneratorSettings(target=("127.0.0.1", router.port), rate=10, duration=9, hold=0.5)
        )
        calls = asyncio.create_task(generator.run())
        await asyncio.sleep(2.0)
        result = await run_drill(url, TOKEN, "a", 4.0, progress=False)
        records = await calls
    finally:
        await router.stop()
        for sim in sims:
            await sim.stop()
    m = result.metrics
    report = write_drill_report(result, tmp_path / "drill")
    print(f"drill: {m}; report {report}")
    assert m["calls"] >= 30 and m["failed"] == 0
    assert m["invites_to_target"] == 0  # nothing went to a while it was forced down
    assert m["invites_by_target"]["b"] >= m["calls"]
    moves = [(e["old"], e["new"]) for e in result.events if e["target"] == "a"]
    assert moves == [("UP", "FORCED_DOWN"), ("FORCED_DOWN", "UP")], result.events
    assert all(r.answered for r in records)
    after = [r for r in records if r.started > records[0].started + 7.0]
    assert any(r.answered_by == "a" for r in after)  # traffic came back to a
    assert "Drill: a forced down" in report.read_text()


async def test_drill_refused_without_another_route(tmp_path: Path) -> None:
    router, sims, url = await _router(tmp_path, ["a"])
    try:
        with pytest.raises(DrillError, match="no other target is UP"):
            await run_drill(url, TOKEN, "a", 2.0, progress=False)
        with pytest.raises(DrillError, match="refused the token"):
            await run_drill(url, "wrong-token-0123456789", "a", 2.0, progress=False)
        with pytest.raises(DrillError, match="no target 'zz'"):
            await run_drill(url, TOKEN, "zz", 2.0, progress=False)
    finally:
        await router.stop()
        for sim in sims:
            await sim.stop()
