"""Call records in the default backend (SQLite beside the event log), read with the command.

SIPp callers dial two numbers through the router to two SIPp carriers, the first of
which refuses every other INVITE with 503 (so some calls fail over). ``trunkguard calls
--since 1h --number ... --carrier ...``, run as a command, must list exactly the calls
that match by the caller's and the carriers' own traces. While long calls are up,
``trunkguard calls --active`` lists them from the admin API; once they end, their records
show how long they lasted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import ShortMessage, free_udp_ports, run_uac, start_uac, start_uas

pytestmark = pytest.mark.e2e

TOKEN = "records-e2e-token-7a1c"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def calls(config: Path, *args: str, json_out: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "trunkguard", "calls", "-c", str(config), *args]
    if json_out:
        command.append("--json")
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def invited(messages: list[ShortMessage]) -> set[str]:
    return {m.call_id for m in messages if m.direction == "R" and m.method == "INVITE"}


def test_calls_reads_back_the_records_with_its_filters_and_lists_active_calls(
    tmp_path: Path,
) -> None:
    pa, pb = free_udp_ports(2)
    admin = free_tcp_port()
    extra = {
        "admin": {"listen": f"127.0.0.1:{admin}", "token": TOKEN},
        "records": {"flush_interval": 0.2},
        "probe": {"enabled": False},
        "health": {"window_ratio": 1.0},  # a stays in rotation: half its INVITEs fail over
    }
    with (
        start_uas("uas_half", port=pa, lifetime=60, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, lifetime=60, tmp_root=tmp_path) as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)], extra=extra) as router,
    ):
        config = router.config_path
        results = {}
        for number in ("12125550000", "56565550000"):
            results[number] = run_uac(
                "uac_call", router.address, calls=20, rate=10, pause_ms=100, timeout=30,
                service=number, tmp_root=tmp_path,
            )  # fmt: skip
            assert results[number].ok, results[number].describe()
        # Four long calls: listed while they are up.
        long_calls = start_uac(
            "uac_call", router.address, calls=4, rate=10, pause_ms=4000, timeout=30,
            service="99995550000", tmp_root=tmp_path,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            active: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                active = lines(calls(config, "--active"))
                if sum(c["state"] == "ANSWERED" for c in active) == 4:
                    break
                time.sleep(0.1)
            table = calls(config, "--active", json_out=False)
            held = long_calls.wait()
        finally:
            long_calls.close()
        assert held.ok, held.describe()
        assert [c["number"] for c in active] == ["99995550000"] * 4, active
        assert {c["state"] for c in active} == {"ANSWERED"}
        assert {c["target"] for c in active} <= {"a", "b"}
        assert table.returncode == 0 and "4 calls in progress" in table.stdout, table

        reached_b = invited(b.short_messages())
        reached_a = invited(a.short_messages())
        made = {
            m.call_id: number
            for number, result in results.items()
            for m in result.messages
            if m.direction == "S" and m.method == "INVITE"
        }
        made.update({m.call_id: "99995550000" for m in held.messages if m.method == "INVITE"})
        assert len(made) == 44
        deadline = time.monotonic() + 20
        everything = lines(calls(config, "--since", "1h"))
        while len(everything) < len(made) and time.monotonic() < deadline:
            time.sleep(0.2)
            everything = lines(calls(config, "--since", "1h"))
        assert {str(r["call_id"]) for r in everything} == set(made)

        wanted = {c for c, n in made.items() if n == "12125550000" and c in reached_b}
        got = lines(calls(config, "--since", "1h", "--number", "1212", "--carrier", "b"))
        assert {str(r["call_id"]) for r in got} == wanted
        assert wanted & reached_a, "no call of 1212 failed over from a to b"
        for r in got:
            attempts = r["attempts"]
            assert isinstance(attempts, list)
            if r["call_id"] in reached_a:
                assert [(x["carrier"], x["status"]) for x in attempts] == [("a", 503), ("b", 200)]
            else:
                assert [(x["carrier"], x["status"]) for x in attempts] == [("b", 200)]
        table = calls(config, "--since", "1h", "--number", "5656", "--carrier", "a", json_out=False)
        assert table.returncode == 0, table.stderr
        n = sum(1 for c, num in made.items() if num == "56565550000" and c in reached_a)
        assert f"{n} calls" in table.stdout and "1212" not in table.stdout

        held_records = lines(calls(config, "--number", "9999"))
        assert len(held_records) == 4
        for r in held_records:
            assert float(str(r["duration"])) >= 3.5, r  # held 4 s before the BYE
        counters = router.stop()
    assert counters.get("records_written") == 44 and counters.get("records_dropped", 0) == 0
    assert (tmp_path / "router" / "calls.db").exists()  # beside events.db, by default
