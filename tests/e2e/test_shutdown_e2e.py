"""SIGTERM on a live router: calls in setup finish, new calls get 503 at once, then it exits."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import free_udp_port, run_uac, scenario_path, start_uac, start_uas

pytestmark = pytest.mark.e2e

RING_MS = 2500


def slow_answer_scenario(directory: Path) -> Path:
    """uas_answer with the 200 sent RING_MS after the 180: a call stays in setup that long."""
    text = scenario_path("uas_answer").read_text()
    marker = "  <!-- Record-Route is echoed"
    assert marker in text
    text = text.replace(marker, f'  <pause milliseconds="{RING_MS}"/>\n\n{marker}', 1)
    path = directory / "uas_slow_answer.xml"
    path.write_text(text)
    return path


def test_sigterm_lets_a_call_in_setup_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    pa = free_udp_port()
    scenario = slow_answer_scenario(tmp_path)
    with (
        start_uas(scenario, port=pa, tmp_root=tmp_path) as a,
        RouterProcess(
            tmp_path / "router", [("a", pa)], extra={"shutdown": {"drain_timeout": 8}}
        ) as router,
        start_uac("uac_call", router.address, timeout=10, tmp_root=tmp_path) as caller,
    ):
        assert a.wait_received("INVITE", 1, timeout=5), a.describe()
        assert router._proc is not None
        router._proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        # While it drains, a new call is refused at once with the router's own 503.
        late = run_uac("uac_final", router.address, timeout=10, tmp_root=tmp_path)
        assert late.final_codes == [503], late.describe()
        first = caller.wait()
        # Answered after 2.5 s, through the draining router. (Its BYE may find the router
        # gone: a call that is up is no longer the router's to wait for.)
        assert first.final_codes == [200], first.describe()
        router._proc.wait(timeout=15)
        drained = time.monotonic() - stopped_at
        counters = router.stop()
    print(f"SIGTERM: the call in setup completed; exit {drained:.2f}s after the signal")
    assert router.returncode == 0
    assert counters["calls_shed"] == 1
    assert counters["calls_answered"] == 1
    assert a.received("INVITE") == 1  # the late call never reached the carrier
    assert "no call in setup: stopping" in router.log()
