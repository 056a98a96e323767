"""``trunkguard run`` as systemd runs it: the notify socket, the watchdog, JSON logs, reload.

The router is a real process; the notify socket is the test's own (what systemd
would give in ``$NOTIFY_SOCKET``). The router runs with MemoryDenyWriteExecute's
rule in force (the kernel's PR_SET_MDWE, where the kernel has it), as the unit
file asks of systemd: Python and uvloop must work without writable+executable
memory.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from notify import NotifySocket
from router import RouterProcess
from sipp import run_uac, start_uas

pytestmark = pytest.mark.e2e

TOKEN = "service-test-token-7d2e9a41"
WATCHDOG_USEC = 400_000  # a ping every 0.2 s

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _mdwe_supported() -> bool:
    """Whether this kernel has PR_SET_MDWE (Linux 6.3+): tried in a throwaway child."""
    probe = "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0


def _deny_write_execute() -> None:
    if _LIBC.prctl(_PR_SET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _hardening() -> Callable[[], None] | None:
    if _mdwe_supported():
        return _deny_write_execute
    print("kernel without PR_SET_MDWE: the router runs without MemoryDenyWriteExecute")
    return None


def _admin_url(router: RouterProcess) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = re.search(r"admin API listening on 127\.0\.0\.1:(\d+)", router.log())
        if found:
            return f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.05)
    raise AssertionError(f"no admin API in the log:\n{router.log()}")


def _api(url: str, method: str = "GET") -> tuple[int, Any]:
    req = urllib.request.Request(
        url, method=method, headers={"Authorization": f"Bearer {TOKEN}"}, data=None
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def _json_lines(router: RouterProcess) -> list[dict[str, Any]]:
    lines = router.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_ready_watchdog_stop_and_a_json_line_per_call(tmp_path: Path) -> None:
    with (
        NotifySocket() as notify,
        start_uas("uas_answer", tmp_root=tmp_path) as carrier,
        RouterProcess(
            tmp_path / "router",
            [("a", carrier.port)],
            extra={
                "probe": {"enabled": False},
                "log": {"format": "json", "calls": True},
                "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            },
            env={**notify.env, "WATCHDOG_USEC": str(WATCHDOG_USEC)},
            preexec_fn=_hardening(),
        ) as router,
    ):
        ready = notify.wait_for("READY")
        assert "targets UP" in ready["STATUS"], ready
        # READY comes once the SIP listener and the admin API are both up.
        assert _api(_admin_url(router) + "/api/health") == (200, {"ok": True})

        pings = notify.count("WATCHDOG", timeout=15, at_least=3)
        assert pings >= 3, f"{pings} watchdog pings"

        result = run_uac("uac_call", router.address, timeout=15, tmp_root=tmp_path)
        assert result.ok, result.describe()
        deadline = time.monotonic() + 15
        while not any(r["logger"] == "trunkguard.calls" for r in _json_lines(router)):
            assert time.monotonic() < deadline, router.log()
            time.sleep(0.05)

        # A stopped process runs no loop: no ping may come until it runs again. (Calls are
        # placed before: a router that was stopped for seconds sheds load for a moment.)
        os.kill(router.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10
            while _state(router.pid) != "T":
                assert time.monotonic() < deadline, "the router did not stop"
                time.sleep(0.01)
            notify.drain()  # what it sent before it stopped
            quiet_from = time.monotonic()
            while time.monotonic() - quiet_from < 10 * WATCHDOG_USEC / 1e6:
                assert notify.drain() == [], "a ping from a stopped process"
                time.sleep(0.05)
        finally:
            os.kill(router.pid, signal.SIGCONT)
        notify.wait_for("WATCHDOG", timeout=10)
        print(f"watchdog: {pings} pings, none for {10 * WATCHDOG_USEC / 1e6:g}s while stopped")

        router.stop()
        assert router.returncode == 0
        stopping = notify.wait_for("STOPPING", timeout=5)
        assert "draining" in stopping["STATUS"]

    records = _json_lines(router)  # every line of the log is one JSON object
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    assert all(r["ts"].endswith("Z") for r in records)
    calls = [r for r in records if r["logger"] == "trunkguard.calls"]
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["level"] == "info"
    assert call["status"] == 200 and call["carrier"] == "a" and call["attempts"] == "a:200"
    assert call["end"] == "bye from caller", call  # SIPp, the caller, hung up
    assert call["number"] == "callee" and call["source"] == "127.0.0.1"
    assert isinstance(call["pdd_ms"], int) and call["pdd_ms"] >= 0
    assert isinstance(call["duration_s"], float) and call["duration_s"] >= 0
    assert call["call_id"] in call["message"]
    assert TOKEN not in router.log_path.read_text()


def _check_lines(path: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "trunkguard", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    return done.stderr.splitlines()


def test_post_reload_refuses_a_bad_config_with_its_problems_then_takes_the_fixed_one(
    tmp_path: Path,
) -> None:
    with (
        NotifySocket() as notify,
        start_uas("uas_answer", tmp_root=tmp_path) as a,
        start_uas("uas_answer", tmp_root=tmp_path) as b,
        RouterProcess(
            tmp_path / "router",
            [("a", a.port)],
            extra={
                "probe": {"enabled": False},
                "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            },
            env=notify.env,
            preexec_fn=_hardening(),
        ) as router,
    ):
        notify.wait_for("READY")
        url = _admin_url(router)
        good = yaml.safe_load(router.config_path.read_text())

        bad = json.loads(json.dumps(good))
        bad["failover"] = {"invite_timeout": -1}
        bad["carriers"].append({"name": "b", "uri": "not a uri"})
        router.config_path.write_text(yaml.safe_dump(bad, sort_keys=False))
        expected = _check_lines(router.config_path)
        status, body = _api(url + "/api/reload", "POST")
        assert status == 422, body
        assert body["reloaded"] is False
        assert body["problems"] == expected  # as `trunkguard check` prints them
        assert len(expected) >= 2
        assert TOKEN not in json.dumps(body)
        notify.wait_for("RELOADING")
        notify.wait_for("READY")

        # The old config is in force: calls still go to a.
        result = run_uac("uac_call", router.address, timeout=15, tmp_root=tmp_path)
        assert result.ok, result.describe()
        assert a.received("INVITE") == 1

        fixed = json.loads(json.dumps(good))
        fixed["carriers"].insert(0, {"name": "b", "uri": f"sip:127.0.0.1:{b.port}"})
        router.config_path.write_text(yaml.safe_dump(fixed, sort_keys=False))
        status, body = _api(url + "/api/reload", "POST")
        assert status == 200, body
        assert body["reloaded"] is True
        assert "carriers: added b" in body["changed"], body
        assert body["carriers"] == 2
        reloading = notify.wait_for("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify.wait_for("READY")

        status, targets = _api(url + "/api/targets")
        assert sorted(t["name"] for t in targets["targets"]) == ["a", "b"]
        result = run_uac("uac_call", router.address, timeout=15, tmp_root=tmp_path)
        assert result.ok, result.describe()
        assert b.received("INVITE") == 1 and a.received("INVITE") == 1
        counters = router.stop()
    assert counters["reloads"] == 1 and counters["reloads_refused"] == 1


def test_mdwe_is_what_the_test_thinks_it_is() -> None:
    """The hardening above is real: under PR_SET_MDWE a W+X mapping is refused."""
    if not _mdwe_supported():
        pytest.skip("kernel without PR_SET_MDWE")
    code = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=_deny_write_execute,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.strip() == str(errno.EACCES), done
