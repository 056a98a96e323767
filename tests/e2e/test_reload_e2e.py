"""A reload on a live router: a carrier added by SIGHUP gets its connected socket at once.

Without a socket connected to it, a carrier's ICMP "port unreachable" cannot be
told apart from anyone else's, and a call to a dead carrier would wait its
invite_timeout before failing over.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml
from router import RouterProcess
from sipp import free_udp_port, run_uac, start_uas

pytestmark = pytest.mark.e2e


def wait_for_log(router: RouterProcess, text: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in router.log():
        assert time.monotonic() < deadline, f"router never logged {text!r}:\n{router.log()}"
        time.sleep(0.05)


def test_a_carrier_added_by_reload_fails_over_on_icmp_at_once(tmp_path: Path) -> None:
    pa = free_udp_port()  # nothing listens here: the kernel answers port unreachable
    pb = free_udp_port()
    with (
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(
            tmp_path / "router",
            [("b", pb)],
            failover={"invite_timeout": 5.0},
            # Keepalives would find the closed port first; this test is about the call path.
            extra={"probe": {"enabled": False}},
        ) as router,
    ):
        config = yaml.safe_load(router.config_path.read_text())
        config["carriers"] = [{"name": "a", "uri": f"sip:127.0.0.1:{pa}"}, *config["carriers"]]
        router.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        assert router._proc is not None
        router._proc.send_signal(signal.SIGHUP)
        wait_for_log(router, "reloaded")
        started = time.monotonic()
        result = run_uac("uac_call", router.address, timeout=15, tmp_root=tmp_path)
        elapsed = time.monotonic() - started
        assert result.ok, result.describe()
        assert b.received("INVITE") == 1
        print(f"carrier added by reload, port closed: call via b in {elapsed:.3f}s (timeout 5s)")
        counters = router.stop()
    # The call tried a first (the reload put it in front), met ICMP, and moved on at once.
    assert counters["invites_to:a"] == 1
    assert counters["attempts:unreachable"] == 1
    assert counters.get("attempts:timeout", 0) == 0
    assert counters["reloads"] == 1
    assert elapsed < 5.0, "waited for the invite timeout instead of acting on ICMP"
