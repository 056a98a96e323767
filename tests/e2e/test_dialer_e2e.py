"""Feedback to the dialer end to end: a real router, three SIPp carriers, a campaign's
SIPp traffic, and the VICIdial stand-in (``vicidial.py``) the router calls over HTTP.

The carriers are killed one by one (their port closes: the next INVITE or OPTIONS meets
ICMP unreachable and the carrier goes DOWN); after each, the campaign's level must go one
step down at the stand-in. Then they are started again on their ports, one by one; the
probes bring each back UP, and the level must climb back step by step to the normal one.
Each wait is for a condition, with a generous deadline; the timeline (what was done, the
router's state changes, what VICIdial was told) is printed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import Uas, free_udp_ports, start_uac, start_uas
from vicidial import VicidialStandIn

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-vici-pass-5150"
STEP_TIMEOUT = 20.0


def wait(predicate: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def rows(db: Path, query: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        return list(conn.execute(query).fetchall())


def test_carriers_fail_one_by_one_then_return(tmp_path: Path) -> None:
    ports = dict(zip("abc", free_udp_ports(3), strict=True))
    (tmp_path / "vici.pass").write_text(PASSWORD + "\n")
    with VicidialStandIn(user="6666", password=PASSWORD) as vici:
        extra: dict[str, object] = {
            "health": {
                "hold_down": 1,
                "hold_down_max": 2,
                "hold_down_jitter": 0,
                "probe_successes": 1,
                "trial_calls": 0,
            },
            "probe": {"interval": 1, "interval_out": 0.3, "timeout": 0.3},
            "dialer": {
                "vicidial": {
                    "url": vici.url,
                    "user": "6666",
                    "pass_file": str(tmp_path / "vici.pass"),
                    "source": "trunkguard",
                    "timeout": 2,
                },
                "campaigns": [
                    {
                        "id": "TESTOUT",
                        "carriers": ["a", "b", "c"],
                        "normal": 3.0,
                        "levels": [
                            {"below": 0.9, "level": 2.0},
                            {"below": 0.5, "level": 1.0},
                            {"below": 0.2, "level": 0},
                        ],
                        "hysteresis": 0.1,
                        "min_interval": 1,
                    }
                ],
            },
        }
        carriers: dict[str, Uas] = {}
        done: list[tuple[float, str]] = []
        try:
            for name, port in ports.items():
                carriers[name] = start_uas("uas_answer", port=port, tmp_root=tmp_path / name)
            with (
                RouterProcess(tmp_path / "router", list(ports.items()), extra=extra) as router,
                start_uac(
                    "uac_call",
                    router.address,
                    calls=2000,
                    rate=10,
                    pause_ms=500,
                    timeout=120,
                    tmp_root=tmp_path / "caller",
                ) as caller,
            ):
                origin = time.time()
                db = router.workdir / "events.db"
                assert wait(lambda: sum(c.responses_sent(200) for c in carriers.values()) >= 10)
                assert vici.calls == []  # every carrier up: nothing to tell the dialer
                expected: list[str] = []
                for name, level in (("a", "2.0"), ("b", "1.0"), ("c", "0.0")):
                    carriers.pop(name).kill()
                    done.append((time.time(), f"killed {name}"))
                    expected.append(level)
                    assert wait(lambda: vici.levels("TESTOUT") == expected), (
                        vici.levels("TESTOUT"),
                        router.log(),
                    )
                # Back in reverse order: a PROBING carrier is proven by trial calls, which
                # reach it only when no UP carrier comes before it in the plan.
                for name, level in (("c", "1.0"), ("b", "2.0"), ("a", "3.0")):
                    carriers[name] = start_uas(
                        "uas_answer", port=ports[name], tmp_root=tmp_path / f"{name}2"
                    )
                    done.append((time.time(), f"restarted {name}"))
                    expected.append(level)
                    assert wait(lambda: vici.levels("TESTOUT") == expected), (
                        vici.levels("TESTOUT"),
                        router.log(),
                    )
                answered_before_stop = sum(c.responses_sent(200) for c in carriers.values())
                invites_sent = caller.sent("INVITE")
                counters = router.stop()
                events = rows(db, "SELECT at, target, old, new, reason FROM events ORDER BY id")
                notices = rows(
                    db,
                    "SELECT at, state, detail FROM notices WHERE kind = 'dialer' ORDER BY id",
                )
        finally:
            for uas in carriers.values():
                uas.close()

        timeline = sorted(
            [(t, f"test: {what}") for t, what in done]
            + [(float(str(e[0])), f"router: {e[1]} {e[2]} -> {e[3]} ({e[4]})") for e in events]
            + [(at, f"VICIdial: TESTOUT auto_dial_level={lvl}") for at, _, lvl in vici.history]
        )
        print("\ndialer feedback timeline (seconds from the first kill):")
        first_kill = done[0][0]
        for at, what in timeline:
            print(f"  {at - first_kill:+7.2f}  {what}")
        print(
            f"caller INVITEs {invites_sent}; answered on the restarted carriers "
            f"{answered_before_stop}; dialer changes sent {counters.get('dialer_sent', 0)}, "
            f"failed {counters.get('dialer_failed', 0)}; took {time.time() - origin:.1f} s"
        )

    assert vici.violations == []
    assert vici.levels("TESTOUT") == ["2.0", "1.0", "0.0", "1.0", "2.0", "3.0"]
    # each change came after the action that caused it, in order
    changes = [at for at, _, _ in vici.history]
    actions = [t for t, _ in done]
    assert all(a <= c for a, c in zip(actions, changes, strict=True)), (actions, changes)
    assert counters.get("dialer_sent") == 6 and counters.get("dialer_failed", 0) == 0
    assert invites_sent > 30  # the campaign's traffic went on throughout
    states = [str(n[1]) for n in notices]
    assert "(a DOWN, b DOWN, c UP), back above 20% + 10% hysteresis" in str(notices[3][2])
    assert states == ["lowered", "lowered", "lowered", "raised", "raised", "restored"]
    assert "(a DOWN, b UP, c UP), below 90%: auto_dial_level 3.0 -> 2.0" in str(notices[0][2])
    assert PASSWORD not in router.log_path.read_text(errors="replace")
