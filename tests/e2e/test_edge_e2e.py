"""The edge against real peers: an attacker's version of a message goes nowhere.

The same rules as tests/unit/test_edge.py, with the router as a process and SIPp on
both sides. Each test shows the attacker's messages leaving the sender (its own
trace), shows that no peer received them (each peer's trace), and reads the
router's counters after a clean stop. Where something should have gone through
(a BYE after a restart, a call from an allowed caller), the test checks that it did,
so that "nothing arrived" cannot come from a peer that was not listening.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import ShortMessage, free_udp_ports, run_uac, start_uac, start_uas

pytestmark = pytest.mark.e2e

#: Requests a host outside the router receives from an attacker's in-dialog forgeries.
ATTACK_METHODS = ("INVITE", "BYE", "INFO", "ACK")
NO_PROBES: dict[str, object] = {"probe": {"enabled": False}}


def sent(messages: Sequence[ShortMessage], *, acks: bool) -> int:
    """Requests a SIPp sent, every retransmission included: ACKs only, or all but ACKs."""
    return sum(
        1 for m in messages if m.direction == "S" and m.is_request and (m.method == "ACK") == acks
    )


def received_any(messages: Sequence[ShortMessage]) -> list[str]:
    return [m.first_line for m in messages if m.direction == "R"]


def forged_signed_route(router_port: int, caller_port: int, victim_port: int) -> str:
    """The router's own Record-Route format, with peers naming the victim and a made-up MAC."""
    fields = ["udp", "127.0.0.1", str(caller_port), "", "0"]
    fields += ["udp", "127.0.0.1", str(victim_port), "", "0"]
    data = "\x00".join(fields).encode().hex()
    return f"Route: <sip:127.0.0.1:{router_port};lr;tgd={data};tgm={'0' * 32}>"


def test_unknown_dialog_requests_aimed_at_an_outside_host_never_reach_it(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    victim_port, carrier_port = free_udp_ports(2)
    with (
        start_uas("uas_answer", port=victim_port, tmp_root=tmp_path) as victim,
        start_uas("uas_answer", port=carrier_port, tmp_root=tmp_path) as carrier,
        RouterProcess(tmp_path / "router", [("carrier", carrier_port)]) as router,
    ):
        ruri = f"sip:19005551234@127.0.0.1:{victim_port}"
        senders = free_udp_ports(4)
        variants = {
            "request-uri only": "X-No-Route: 1",
            "route to the victim": f"Route: <sip:127.0.0.1:{victim_port};lr>",
            "route to the carrier": f"Route: <sip:127.0.0.1:{carrier_port};lr>",
            "forged route of ours": forged_signed_route(router.port, senders[3], victim_port),
        }
        uacs = [
            start_uac(
                "uac_unknown_dialog",
                router.address,
                port=port,
                timeout=8,
                recv_timeout_ms=3000,
                extra_args=["-key", "ruri", ruri, "-key", "route_header", header],
                tmp_root=tmp_path,
            )
            for port, header in zip(senders, variants.values(), strict=True)
        ]
        results = [uac.wait() for uac in uacs]
        for name, result in zip(variants, results, strict=True):
            assert result.ok, f"{name}: {result.describe()}"
            # The sender got a 481 for each request that can be answered, and nothing else.
            answers = {(m.cseq_method, m.status) for m in result.messages if m.direction == "R"}
            assert answers == {("INVITE", 481), ("BYE", 481), ("INFO", 481)}, f"{name}: {answers}"
        # Nothing reached the victim nor the carrier (which saw only the router's OPTIONS).
        for peer in (victim, carrier):
            got = {method: peer.received(method) for method in ATTACK_METHODS}
            assert got == dict.fromkeys(ATTACK_METHODS, 0), f"{got}\n{peer.describe()}"
        assert received_any(victim.short_messages()) == []

        # Control: the victim's trace does show a request that reaches it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as direct:
            direct.bind(("127.0.0.1", 0))
            here = direct.getsockname()[1]
            direct.sendto(
                (
                    f"BYE {ruri} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bK-control\r\n"
                    "From: <sip:agent@127.0.0.1>;tag=control\r\n"
                    f"To: <{ruri}>;tag=victim\r\nCall-ID: control-1\r\nCSeq: 3 BYE\r\n"
                    "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                victim.address,
            )
            assert victim.wait_received("BYE", 1, timeout=3), victim.describe()
        counters = router.stop()
    requests = sum(sent(r.messages, acks=False) for r in results)
    acks = sum(sent(r.messages, acks=True) for r in results)
    assert requests >= 3 * len(variants) and acks == 2 * len(variants)
    # Every forged request and ACK was refused as not ours; none went anywhere.
    assert counters.get("dialog_refused", 0) == requests + acks, counters
    assert counters.get("acks_absorbed", 0) == acks, counters
    assert counters.get("acks_forwarded", 0) == 0, counters
    assert not [k for k in counters if k.startswith("in_dialog:")], counters
    print(
        f"unknown dialog: {len(variants)} variants, {requests} requests + {acks} ACKs sent, "
        f"481 to each request, victim and carrier got 0, "
        f"dialog_refused {counters['dialog_refused']} acks_absorbed {counters['acks_absorbed']} "
        f"({time.monotonic() - started:.1f}s)"
    )


HOLD_MS = 6000  # the caller's pause between its ACK and its BYE: the router restarts meanwhile


def test_a_bye_after_a_router_restart_still_ends_the_call(tmp_path: Path) -> None:
    started = time.monotonic()
    workdir = tmp_path / "router"
    carrier_port, router_port = free_udp_ports(2)
    # The router sends to a carrier from a socket connected to it (for ICMP errors), whose
    # ephemeral port dies with the process. SIPp answers every request of a call to the
    # address its INVITE came from, so its 200 to the new router's BYE would go to that dead
    # port. -rsa makes it answer at the router's Via sent-by (its listening port), as
    # RFC 3261 18.2.2 has it; an RFC 3581 carrier (the Via has rport) answers at the BYE's
    # source, the new process's socket: either way the answer reaches the new router.
    with start_uas(
        "uas_answer",
        port=carrier_port,
        extra_args=["-rsa", f"127.0.0.1:{router_port}"],
        tmp_root=tmp_path,
    ) as carrier:
        first = RouterProcess(workdir, [("carrier", carrier_port)], port=router_port).start()
        second: RouterProcess | None = None
        try:
            with start_uac(
                "uac_call",
                first.address,
                pause_ms=HOLD_MS,
                timeout=HOLD_MS / 1000 + 10,
                tmp_root=tmp_path,
            ) as caller:
                assert carrier.wait_received("ACK", 1, timeout=5), carrier.describe()
                answered_at = time.time()
                first_counters = first.stop()
                assert first.returncode == 0, first.log()
                # A new process, same config and working directory (so the same key file),
                # on the port the caller's dialog names.
                second = RouterProcess(workdir, [("carrier", carrier_port)], port=router_port)
                second.start()
                listening_at = time.time()
                assert second.port == first.port
                result = caller.wait()
            assert carrier.wait_received("BYE", 1, timeout=3), carrier.describe()
            second_counters = second.stop()
            assert second.returncode == 0, second.log()
        finally:
            first.stop()
            if second is not None:
                second.stop()
    assert (workdir / "trunkguard-route.key").is_file()
    assert result.ok, result.describe()
    assert result.successful == 1 and result.failed == 0, result.describe()
    assert (carrier.received("INVITE"), carrier.received("BYE")) == (1, 1)
    assert carrier.responses_sent(200, "BYE") == 1
    byes = [m for m in result.messages if m.direction == "S" and m.method == "BYE"]
    ok = [m for m in result.messages if m.direction == "R" and m.cseq_method == "BYE"]
    assert byes and byes[0].time > listening_at, (byes, listening_at)
    assert [m.status for m in ok] == [200], ok
    # The old router answered the call; the new one, which never saw it, relayed the BYE.
    assert first_counters.get("calls_answered") == 1, first_counters
    assert "in_dialog:BYE" not in first_counters, first_counters
    assert second_counters.get("in_dialog:BYE") == 1, second_counters
    assert second_counters.get("dialog_refused", 0) == 0, second_counters
    print(
        f"restart: router down and back on port {first.port} in "
        f"{listening_at - answered_at:.2f}s, BYE {byes[0].time - listening_at:.2f}s later "
        f"reached the carrier and the caller got 200 ({time.monotonic() - started:.1f}s)"
    )


RECV_TIMEOUT_MS = 1500


def test_a_source_not_in_allow_gets_no_answer(tmp_path: Path) -> None:
    started = time.monotonic()
    (carrier_port,) = free_udp_ports(1)
    with (
        start_uas("uas_answer", port=carrier_port, tmp_root=tmp_path) as carrier,
        RouterProcess(
            tmp_path / "router",
            [("carrier", carrier_port)],
            extra={"allow": ["127.0.0.2/32"]},  # the SIPp callers send from 127.0.0.1
        ) as router,
    ):
        uacs = [
            start_uac(
                scenario,
                router.address,
                timeout=6,
                recv_timeout_ms=RECV_TIMEOUT_MS,
                tmp_root=tmp_path,
            )
            for scenario in ("uac_final", "uac_options")
        ]
        results = [uac.wait() for uac in uacs]
        for result in results:
            assert not result.killed, result.describe()
            assert result.failed == 1 and result.successful == 0, result.describe()
            assert result.stat("FailedTimeoutOnRecv(C)") == 1, result.describe()
            assert received_any(result.messages) == [], result.describe()
        assert carrier.received("INVITE") == 0, carrier.describe()
        counters = router.stop()
    out = sum(sent(r.messages, acks=False) + sent(r.messages, acks=True) for r in results)
    assert out >= 2
    # Every datagram from the stranger, retransmissions included, was dropped as such.
    assert counters.get("forbidden_source", 0) == out, counters
    assert not [k for k in counters if k.startswith("rejected_")], counters
    print(
        f"not in allow: INVITE and OPTIONS ({out} datagrams with retransmissions) got no "
        f"answer in {RECV_TIMEOUT_MS} ms, forbidden_source {counters['forbidden_source']} "
        f"({time.monotonic() - started:.1f}s)"
    )


def test_a_carriers_invite_toward_an_outside_number_is_refused(tmp_path: Path) -> None:
    started = time.monotonic()
    other_port, hairpin_port = free_udp_ports(2)
    with (
        start_uas("uas_answer", port=other_port, tmp_root=tmp_path) as other,
        RouterProcess(
            tmp_path / "router",
            [("other", other_port), ("hairpin", hairpin_port)],
            extra=NO_PROBES,  # the caller sits on the hairpin carrier's port: leave it alone
        ) as router,
    ):
        # An INVITE from the configured carrier's own address and port, to a number no
        # pool serves: an inbound call that would go straight back out.
        result = run_uac(
            "uac_final",
            router.address,
            port=hairpin_port,
            service="19005551234",
            timeout=6,
            recv_timeout_ms=3000,
            tmp_root=tmp_path,
        )
        assert result.ok, result.describe()
        assert result.final_codes == [403], result.describe()
        assert other.received("INVITE") == 0, other.describe()
        refused_other = other.received("INVITE")
        # Control: the same call from a caller that is not a carrier goes to that carrier.
        control = run_uac("uac_call", router.address, timeout=6, tmp_root=tmp_path)
        assert control.ok, control.describe()
        assert other.wait_received("BYE", 1, timeout=3), other.describe()
        assert other.received("INVITE") == 1
        counters = router.stop()
    assert counters.get("calls_hairpin_refused") == 1, counters
    assert counters.get("calls_answered") == 1, counters
    print(
        f"hairpin: INVITE from carrier hairpin's address got 403, carrier other got "
        f"{refused_other} INVITE (1 for the control call), calls_hairpin_refused "
        f"{counters['calls_hairpin_refused']} ({time.monotonic() - started:.1f}s)"
    )


def test_no_ack_loop_between_two_listen_addresses(tmp_path: Path) -> None:
    started = time.monotonic()
    (carrier_port,) = free_udp_ports(1)
    with (
        start_uas("uas_answer", port=carrier_port, tmp_root=tmp_path) as carrier,
        RouterProcess(
            tmp_path / "router",
            [("carrier", carrier_port)],
            # No probes: every message the router counts in is one of ours.
            extra={"listen": ["udp:127.0.0.1:0", "udp:127.0.0.2:0"], **NO_PROBES},
        ) as router,
    ):
        (_, host1, port1), (_, host2, port2) = router.bound
        assert (host1, host2) == ("127.0.0.1", "127.0.0.2")
        directions = [((host1, port1), f"{host2}:{port2}"), ((host2, port2), f"{host1}:{port1}")]
        results = [
            run_uac(
                "uac_stray_ack",
                to,
                timeout=5,
                extra_args=["-key", "other", other],
                tmp_root=tmp_path,
            )
            for to, other in directions
        ]
        for result in results:
            assert result.ok, result.describe()
            assert received_any(result.messages) == [], result.describe()
        time.sleep(0.2)  # an amplified copy would still be circling: let it be counted
        assert carrier.short_messages() == [], carrier.describe()
        counters = router.stop()
    acks = sum(sent(r.messages, acks=True) for r in results)
    assert acks == 6
    # One message in per ACK sent: none came back to the router through its other address.
    assert counters.get("messages_in") == acks, counters
    assert counters.get("acks_absorbed") == acks, counters
    assert counters.get("acks_forwarded", 0) == 0, counters
    print(
        f"two listen addresses: {acks} stray ACKs naming the other address, "
        f"messages_in {counters['messages_in']} acks_absorbed {counters['acks_absorbed']} "
        f"({time.monotonic() - started:.1f}s)"
    )
