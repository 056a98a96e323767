"""trunkguard between SIPp callers and SIPp carriers on loopback.

Each test checks both ends: what the caller got (SIPp's own verdict and the
final codes it saw) and which carrier saw what (requests counted from each
carrier's message trace), plus the router's counters after a clean stop.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import free_udp_ports, run_uac, setup_times, start_uac, start_uas

pytestmark = pytest.mark.e2e


def assert_nothing_open(counters: dict[str, int]) -> None:
    assert counters.get("open:calls_unanswered", 0) == 0, counters
    assert counters.get("open:branches_pending", 0) == 0, counters


def test_normal_call_through_first_carrier(tmp_path: Path) -> None:
    pa, pb = free_udp_ports(2)
    with (
        start_uas("uas_answer", port=pa, trace_messages=True, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)]) as router,
    ):
        result = run_uac("uac_call", router.address, pause_ms=100, timeout=10, tmp_root=tmp_path)
        assert result.ok, result.describe()
        assert result.successful == 1
        assert a.wait_received("BYE", 1, timeout=3), a.describe()
        assert (a.received("INVITE"), a.received("ACK"), a.received("BYE")) == (1, 1, 1)
        assert b.received("INVITE") == 0
        received = [m for m in a.messages() if m.direction == "R"]
        invite = next(m for m in received if m.first_line.startswith("INVITE"))
        # The router put its real address (it listens on port 0) in Record-Route and Via.
        # Its Record-Route also carries the dialog's peers, signed (tgd, tgm).
        rr = invite.header("Record-Route") or ""
        assert rr.startswith(f"<sip:127.0.0.1:{router.port};lr;tgd="), rr
        assert ";tgm=" in rr
        assert f"SIP/2.0/UDP 127.0.0.1:{router.port};branch=" in (invite.header("Via") or "")
        bye = next(m for m in received if m.first_line.startswith("BYE"))
        assert bye.header("Route") is None  # the caller's Route to the router was consumed
        counters = router.stop()
    assert counters["calls_answered"] == 1
    assert_nothing_open(counters)


def test_503_fails_over_and_caller_never_sees_it(tmp_path: Path) -> None:
    pa, pb = free_udp_ports(2)
    with (
        start_uas("uas_reject", port=pa, reject_code=503, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)]) as router,
    ):
        result = run_uac("uac_call", router.address, pause_ms=50, timeout=10, tmp_root=tmp_path)
        assert result.ok, result.describe()
        codes = {m.status for m in result.messages if m.status is not None}
        assert 503 not in codes
        assert a.received("INVITE") == 1 and a.wait_received("ACK", 1, timeout=2)
        assert b.wait_received("BYE", 1, timeout=3), b.describe()
        assert b.received("INVITE") == 1
        counters = router.stop()
    assert counters["failovers"] == 1
    assert_nothing_open(counters)


def test_silent_carrier_fails_over_after_invite_timeout(tmp_path: Path) -> None:
    pa, pb = free_udp_ports(2)
    timeout = 0.8
    with (
        start_uas("uas_answer", port=pa, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(
            tmp_path / "router", [("a", pa), ("b", pb)], failover={"invite_timeout": timeout}
        ) as router,
    ):
        a.pause()  # SIGSTOP: the port stays open, nothing answers
        started = time.monotonic()
        result = run_uac("uac_call", router.address, timeout=10, tmp_root=tmp_path)
        elapsed = time.monotonic() - started
        assert result.ok, result.describe()
        assert b.received("INVITE") == 1
        print(
            f"silent carrier: call completed via b after {elapsed:.2f}s (invite_timeout {timeout}s)"
        )
        assert elapsed >= timeout
        # When the carrier wakes up it answers the INVITE it queued: the router must end
        # that leg (CANCEL after its 100, or ACK + BYE after a 200), or the carrier would
        # bill a call nobody hears.
        a.resume()
        ended = a.wait_until(lambda: a.received("CANCEL") + a.received("BYE") >= 1, timeout=5)
        assert ended, a.describe()
        counters = router.stop()
    assert counters["attempts:timeout"] == 1
    assert_nothing_open(counters)


def test_closed_port_fails_over_without_waiting(tmp_path: Path) -> None:
    pa, pb = free_udp_ports(2)  # nothing listens on pa: the kernel answers ICMP port unreachable
    with (
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(
            tmp_path / "router",
            [("a", pa), ("b", pb)],
            failover={"invite_timeout": 2.0},
            # Keepalives would find the closed port first; this test is about the call path.
            extra={"probe": {"enabled": False}},
        ) as router,
    ):
        result = run_uac("uac_call", router.address, timeout=10, tmp_root=tmp_path)
        assert result.ok, result.describe()
        assert b.received("INVITE") == 1
        [elapsed] = setup_times(result.messages)
        print(f"closed port: answered via b {elapsed:.3f}s after the INVITE (invite_timeout 2s)")
        assert elapsed < 1.0, "waited for a timeout instead of acting on ICMP"
        counters = router.stop()
    assert counters["attempts:unreachable"] == 1
    assert counters.get("attempts:timeout", 0) == 0
    assert_nothing_open(counters)


def test_busy_is_final_and_next_carrier_sees_nothing(tmp_path: Path) -> None:
    pa, pb = free_udp_ports(2)
    with (
        start_uas("uas_reject", port=pa, reject_code=486, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)]) as router,
    ):
        result = run_uac("uac_final", router.address, timeout=10, tmp_root=tmp_path)
        assert result.ok, result.describe()
        assert result.final_codes == [486]
        assert a.received("INVITE") == 1 and a.wait_received("ACK", 1, timeout=2)
        time.sleep(0.3)
        assert b.received("INVITE") == 0
        counters = router.stop()
    assert counters.get("failovers", 0) == 0
    assert_nothing_open(counters)


def test_caller_cancel_while_ringing(tmp_path: Path) -> None:
    pa, pb = free_udp_ports(2)
    with (
        start_uas("uas_ring", port=pa, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)]) as router,
    ):
        result = run_uac("uac_cancel", router.address, pause_ms=300, timeout=10, tmp_root=tmp_path)
        assert result.ok, result.describe()
        assert result.final_codes == [487]
        assert a.wait_received("ACK", 1, timeout=3), a.describe()  # ACK for the carrier's 487
        assert a.received("CANCEL") == 1
        assert b.received("INVITE") == 0
        time.sleep(0.2)
        counters = router.stop()
    assert counters["calls_cancelled"] == 1
    assert_nothing_open(counters)
    assert counters.get("open:dialogs", 0) == 0


def test_all_carriers_fail_one_clean_final_within_budget(tmp_path: Path) -> None:
    pa, pb, pc = free_udp_ports(3)
    budget = 4.0
    with (
        start_uas("uas_reject", port=pa, reject_code=503, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(
            tmp_path / "router",
            [("a", pa), ("b", pb), ("c", pc)],
            failover={"invite_timeout": 0.5, "time_budget": budget},
        ) as router,
    ):
        b.pause()  # a rejects, b is silent, c's port is closed
        result = run_uac("uac_final", router.address, timeout=10, tmp_root=tmp_path)
        b.resume()
        assert result.ok, result.describe()
        assert result.final_codes == [500], result.describe()  # never a carrier's 503 as 503
        finals = [m for m in result.messages if m.status is not None and m.status >= 200]
        assert {m.status for m in finals} == {500}
        [elapsed] = setup_times(result.messages)
        print(f"all carriers failed: 500 {elapsed:.2f}s after the INVITE (budget {budget}s)")
        assert elapsed < budget
        assert a.received("INVITE") == 1
        counters = router.stop()
    assert counters["calls_failed"] == 1
    assert_nothing_open(counters)


def test_100_concurrent_calls_with_half_rejected(tmp_path: Path) -> None:
    pa, pb = free_udp_ports(2)
    with (
        start_uas("uas_half", port=pa, reject_code=503, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path) as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)]) as router,
        start_uac(
            "uac_call",
            router.address,
            calls=100,
            rate=200,
            limit=100,
            pause_ms=1000,
            timeout=30,
            tmp_root=tmp_path,
        ) as caller,
    ):
        result = caller.wait()
        assert result.successful == 100 and result.failed == 0, result.describe()
        # Every call a rejected went on to b; once a's failure ratio takes it out of
        # rotation, calls go to b directly.
        rejected = a.responses_sent(503)
        assert b.received("INVITE") == rejected + (100 - a.received("INVITE"))
        counters = router.stop()
    print(
        f"100 concurrent calls, carrier a rejecting half: {result.failed} failed at the caller;"
        f" a saw {a.received('INVITE')} INVITEs and rejected {rejected}"
    )
    assert counters["failovers"] == rejected
    assert_nothing_open(counters)


def test_tcp_caller_and_carriers_with_refused_connection(tmp_path: Path) -> None:
    """Over TCP: carrier a refuses the connection, the call completes through b at once."""
    pa, pb = free_udp_ports(2)  # nothing listens on TCP pa: connect() is refused
    with (
        start_uas("uas_answer", port=pb, extra_args=["-t", "t1"], tmp_root=tmp_path) as b,
        RouterProcess(
            tmp_path / "router",
            [("a", pa, "tcp"), ("b", pb, "tcp")],
            transport="tcp",
            failover={"invite_timeout": 2.0},
            # Keepalives would find the refused port first; this test is about the call path.
            extra={"probe": {"enabled": False}},
        ) as router,
    ):
        result = run_uac(
            "uac_call",
            router.address,
            pause_ms=100,
            timeout=10,
            extra_args=["-t", "t1"],
            tmp_root=tmp_path,
        )
        assert result.ok, result.describe()
        assert b.wait_received("BYE", 1, timeout=3), b.describe()
        assert (b.received("INVITE"), b.received("ACK")) == (1, 1)
        [elapsed] = setup_times(result.messages)
        print(f"TCP, refused connection: call answered via b {elapsed:.3f}s after its INVITE")
        assert elapsed < 1.5
        counters = router.stop()
    assert counters["attempts:unreachable"] == 1
    assert_nothing_open(counters)
