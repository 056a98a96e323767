"""The call generator against SIPp carriers on loopback: our measuring tool, checked by a peer.

SIPp is the independent witness: its ``-trace_shortmsg`` log says which requests reached
the carrier and when it sent each response. Every run is bounded by the generator itself
(``window + hold + timeout``) and, around it, by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import SCENARIOS, ShortMessage, Uas, free_udp_port, start_uas

from trunkguard.lab._caller import CallGenerator, CallRecord, GeneratorSettings

pytestmark = pytest.mark.e2e


def derived_scenario(tmp_path: Path, source: str, name: str, edit: Callable[[str], str]) -> Path:
    """A test-only variant of a carrier scenario, written into tmp_path."""
    text = (SCENARIOS / f"{source}.xml").read_text(encoding="iso-8859-1")
    changed = edit(text)
    assert changed != text
    path = tmp_path / f"{name}.xml"
    path.write_text(changed, encoding="iso-8859-1")
    return path


def run(settings: GeneratorSettings) -> tuple[list[CallRecord], float, dict[str, object]]:
    """Run a generator to its end; the records, the wall time it took, its last snapshot."""
    generator = CallGenerator(settings)
    ended: list[CallRecord] = []
    generator.on_call_end = ended.append

    async def main() -> list[CallRecord]:
        return await asyncio.wait_for(generator.run(), settings.bound + 2.0)

    began = time.monotonic()
    records = asyncio.run(main())
    took = time.monotonic() - began
    assert sorted(r.call_id for r in ended) == sorted(r.call_id for r in records)
    return records, took, generator.snapshot()


def sipp_calls(carrier: Uas) -> dict[str, list[ShortMessage]]:
    """The carrier's messages per Call-ID, in order."""
    calls: dict[str, list[ShortMessage]] = {}
    for message in carrier.short_messages():
        calls.setdefault(message.call_id, []).append(message)
    return calls


def first_time(messages: list[ShortMessage], direction: str, start: str) -> float:
    return next(
        m.time for m in messages if m.direction == direction and m.first_line.startswith(start)
    )


def test_calls_at_a_rate_all_succeed_and_sipp_counts_agree(tmp_path: Path) -> None:
    n = 20
    with start_uas("uas_answer", lifetime=30, tmp_root=tmp_path) as carrier:
        settings = GeneratorSettings(
            target=carrier.address, rate=20.0, calls=n, hold=0.2, timeout=5.0
        )
        records, took, snap = run(settings)
        assert carrier.wait_received("BYE", n, timeout=3), carrier.describe()
        counts = tuple(carrier.received(m) for m in ("INVITE", "ACK", "BYE"))
        sipp_ids = set(sipp_calls(carrier))

    assert counts == (n, n, n), carrier.describe()
    assert len(records) == n and [r.index for r in records] == list(range(n))
    failed = [r for r in records if not r.ok]
    assert failed == [], failed
    assert {r.final for r in records} == {200} and {r.bye_status for r in records} == {200}
    assert {r.answered_by for r in records} == {f"127.0.0.1:{carrier.port}"}  # its Contact
    assert {r.call_id for r in records} == sipp_ids
    assert all(r.pdd is not None and 0 < r.pdd < 0.1 for r in records)
    assert snap["started"] == n and snap["answered"] == n and snap["failed"] == 0
    assert snap["in_progress"] == 0 and snap["by_carrier"] == {f"127.0.0.1:{carrier.port}": n}
    assert took < settings.bound, took
    assert took < settings.window + settings.hold + 0.5, took  # ended with the last BYE


def test_start_times_are_spaced_one_interval_apart(tmp_path: Path) -> None:
    n, rate = 40, 25.0
    interval = 1 / rate
    with start_uas("uas_answer", lifetime=30, tmp_root=tmp_path) as carrier:
        settings = GeneratorSettings(
            target=carrier.address, rate=rate, calls=n, hold=0.1, timeout=5.0
        )
        records, _, snap = run(settings)
        assert carrier.wait_received("INVITE", n, timeout=3), carrier.describe()
        calls = sipp_calls(carrier)

    starts = [r.started for r in records]
    gaps = [b - a for a, b in pairwise(starts)]
    # The schedule is by start time: the span does not drift with timer lag.
    assert starts[-1] - starts[0] == pytest.approx((n - 1) * interval, abs=0.010), gaps
    assert statistics.median(gaps) == pytest.approx(interval, abs=0.002), gaps
    assert all(0.5 * interval <= g <= 1.5 * interval for g in gaps), gaps
    assert snap["slips"] == 0
    # The carrier saw the same rhythm.
    arrived = sorted(first_time(calls[r.call_id], "R", "INVITE") for r in records)
    sipp_gaps = [b - a for a, b in pairwise(arrived)]
    assert arrived[-1] - arrived[0] == pytest.approx((n - 1) * interval, abs=0.015), sipp_gaps
    assert statistics.median(sipp_gaps) == pytest.approx(interval, abs=0.003), sipp_gaps


@pytest.mark.parametrize("code", [486, 503, 603])
def test_rejecting_carrier_gives_the_final_codes(tmp_path: Path, code: int) -> None:
    n = 5
    with start_uas("uas_reject", reject_code=code, lifetime=30, tmp_root=tmp_path) as carrier:
        settings = GeneratorSettings(
            target=carrier.address, rate=20.0, calls=n, hold=0.2, timeout=5.0
        )
        records, took, snap = run(settings)
        # The ACK for a non-2xx is the INVITE transaction's: SIPp's scenario waits for it.
        assert carrier.wait_received("ACK", n, timeout=3), carrier.describe()
        counts = tuple(carrier.received(m) for m in ("INVITE", "ACK", "BYE"))
        sent = carrier.responses_sent(code)

    assert counts == (n, n, 0) and sent == n
    assert [r.final for r in records] == [code] * n
    assert not any(r.ok for r in records) and snap["failed"] == n and snap["answered"] == 0
    for r in records:  # no 18x: the final ends the post-dial delay
        assert r.ringing is None and r.final_at is not None
        assert r.pdd == r.final_at - r.started
    assert snap["finals"] == {code: n}
    assert took < settings.window + 0.5, took


def test_pdd_agrees_with_sipps_own_timestamps(tmp_path: Path) -> None:
    """Per call: generator PDD vs SIPp's (180 sent - INVITE received), 20-150 ms of ringing.

    Ours also holds the two loopback transits and both event loops, so it is typically
    longer by a fraction of a millisecond. SIPp stamps a message when it logs it, so on a
    busy machine one of its stamps can be late by a few milliseconds either way: the
    per-call bound is symmetric, allows two such calls of the 15, and the typical call is
    checked by the median.
    """
    ringing = derived_scenario(
        tmp_path,
        "uas_answer",
        "uas_slow_ring",
        lambda t: t.replace(
            "  <send><![CDATA[\n\nSIP/2.0 180 Ringing",
            '  <pause distribution="uniform" min="20" max="150"/>\n\n'
            "  <send><![CDATA[\n\nSIP/2.0 180 Ringing",
        ),
    )
    n = 15
    with start_uas(ringing, lifetime=30, tmp_root=tmp_path) as carrier:
        settings = GeneratorSettings(
            target=carrier.address, rate=10.0, calls=n, hold=0.1, timeout=5.0
        )
        records, _, _ = run(settings)
        assert carrier.wait_received("BYE", n, timeout=3), carrier.describe()
        calls = sipp_calls(carrier)

    assert all(r.ok for r in records), records
    diffs = []
    for r in records:
        messages = calls[r.call_id]
        theirs = first_time(messages, "S", "SIP/2.0 180") - first_time(messages, "R", "INVITE")
        assert r.pdd is not None
        diffs.append(r.pdd - theirs)
    spread = [round(d * 1000, 3) for d in diffs]  # ms, ours minus SIPp's
    print(f"\ngenerator PDD minus SIPp's, per call (ms): {spread}")
    # A stamp taken late by a busy scheduler moves one call, not the typical one: nearly
    # every call within 5 ms, none beyond 50 ms, the median within a few tenths.
    close = sum(1 for d in diffs if abs(d) <= 0.005)
    assert close >= len(diffs) - 2, spread
    assert all(abs(d) <= 0.050 for d in diffs), spread
    assert -0.0005 <= statistics.median(diffs) <= 0.003, spread
    pdds = sorted(r.pdd for r in records if r.pdd is not None)
    assert pdds[-1] - pdds[0] > 0.03  # the pauses really varied: the check is not trivial


def test_x_sim_carrier_header_names_who_answered(tmp_path: Path) -> None:
    named = derived_scenario(
        tmp_path,
        "uas_answer",
        "uas_named",
        lambda t: t.replace(
            "Content-Type: application/sdp\n",
            "X-Sim-Carrier: sipp-a\nContent-Type: application/sdp\n",
        ),
    )
    with start_uas(named, lifetime=30, tmp_root=tmp_path) as carrier:
        settings = GeneratorSettings(
            target=carrier.address, rate=20.0, calls=3, hold=0.1, timeout=5.0
        )
        records, _, snap = run(settings)
    assert [r.answered_by for r in records] == ["sipp-a"] * 3
    assert snap["by_carrier"] == {"sipp-a": 3}


def test_cancel_option_against_a_ringing_carrier(tmp_path: Path) -> None:
    n = 3
    with start_uas("uas_ring", lifetime=30, tmp_root=tmp_path) as carrier:
        settings = GeneratorSettings(
            target=carrier.address, rate=10.0, calls=n, hold=0.1, timeout=5.0, cancel_after=0.3
        )
        records, took, _ = run(settings)
        assert carrier.wait_received("ACK", n, timeout=3), carrier.describe()
        counts = tuple(carrier.received(m) for m in ("INVITE", "CANCEL", "ACK", "BYE"))
        cancelled_487 = carrier.responses_sent(487)

    assert counts == (n, n, n, 0) and cancelled_487 == n
    assert all(r.final == 487 and r.ok and r.cancelled is not None for r in records), records
    for r in records:
        assert r.cancelled is not None
        assert r.cancelled - r.started == pytest.approx(0.3, abs=0.02)
    assert took < settings.window + 0.3 + 0.5, took


def test_silent_carrier_calls_hang_and_the_run_stays_bounded(tmp_path: Path) -> None:
    n = 3
    with start_uas(
        "uas_blackhole", lifetime=30, extra_args=["-set", "fault_from", "0"], tmp_root=tmp_path
    ) as carrier:
        settings = GeneratorSettings(
            target=carrier.address, rate=10.0, calls=n, hold=0.5, timeout=1.0
        )
        records, took, snap = run(settings)
        invites = carrier.received("INVITE")

    assert invites == n
    assert all(r.hung and r.final is None and r.pdd is None for r in records), records
    assert snap["hung"] == n and snap["in_progress"] == 0
    # The last call starts at 0.2 s and gives up 1 s later.
    assert 1.1 <= took <= settings.bound, took


def test_unreachable_target_hangs_within_the_bound() -> None:
    port = free_udp_port()  # nobody listens: the kernel answers ICMP port unreachable
    settings = GeneratorSettings(
        target=("127.0.0.1", port), rate=10.0, calls=2, hold=0.5, timeout=0.8
    )
    records, took, _ = run(settings)
    assert [r.final for r in records] == [None, None]
    assert took <= settings.bound, took


def test_calls_through_the_router_are_acked_and_ended_via_its_record_route(
    tmp_path: Path,
) -> None:
    n = 10
    port = free_udp_port()
    with (
        start_uas("uas_answer", port=port, trace_messages=True, tmp_root=tmp_path) as carrier,
        RouterProcess(tmp_path / "router", [("a", port)]) as router,
    ):
        settings = GeneratorSettings(
            target=router.address, rate=20.0, calls=n, hold=0.2, timeout=5.0
        )
        records, _, snap = run(settings)
        assert carrier.wait_received("BYE", n, timeout=3), carrier.describe()
        counts = tuple(carrier.received(m) for m in ("INVITE", "ACK", "BYE"))
        received = [m for m in carrier.messages() if m.direction == "R"]
        counters = router.stop()

    assert all(r.ok for r in records), records
    assert counts == (n, n, n)
    assert snap["by_carrier"] == {f"127.0.0.1:{port}": n}  # the carrier's Contact, relayed
    # Our ACK and BYE went to the router (its Record-Route as our Route) and on to the carrier.
    ack = next(m for m in received if m.first_line.startswith("ACK"))
    assert f"SIP/2.0/UDP 127.0.0.1:{router.port};branch=" in (ack.header("Via") or "")
    assert counters.get("calls_answered") == n, counters


def test_a_failing_hook_is_raised_by_run(tmp_path: Path) -> None:
    with start_uas("uas_reject", lifetime=30, tmp_root=tmp_path) as carrier:
        generator = CallGenerator(
            GeneratorSettings(target=carrier.address, rate=10.0, calls=2, hold=0.1, timeout=2.0)
        )

        def hook(record: CallRecord) -> None:
            raise LookupError(f"hook saw {record.final}")

        generator.on_call_end = hook

        async def main() -> list[CallRecord]:
            return await asyncio.wait_for(generator.run(), 5.0)

        with pytest.raises(LookupError, match="hook saw 503"):
            asyncio.run(main())
