"""The SIPp peers against each other, without the proxy: caller -> carrier on loopback.

These pin down the scenarios and the harness that the proxy's end-to-end tests rely on.
"""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sipp
from sipp import (
    HOST,
    SCENARIOS,
    Address,
    SipMessage,
    branch_of,
    count_responses,
    run_uac,
    start_uac,
    start_uas,
    tag_of,
    udp_port_bound,
)

pytestmark = pytest.mark.e2e


def first(messages: list[SipMessage], direction: str, starts: str) -> SipMessage:
    for message in messages:
        if message.direction == direction and message.first_line.startswith(starts):
            return message
    raise AssertionError(f"no {direction} message starting with {starts!r}")


def send_options(address: Address) -> str:
    """A proxy-style OPTIONS keepalive from a plain socket; returns the response text."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(2.0)
        port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{address[0]}:{address[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{call_id}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:keepalive@{HOST}:{port}>;tag=ka{call_id[:8]}\r\n"
            f"To: <sip:{address[0]}:{address[1]}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 7 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), address)
        data, _ = sock.recvfrom(65535)
    response = data.decode()
    assert f"Call-ID: {call_id}" in response
    assert "CSeq: 7 OPTIONS" in response
    return response


def derived_scenario(tmp_path: Path, source: str, name: str, edit: Callable[[str], str]) -> Path:
    """A test-only variant of a scenario (a misbehaving peer), written into tmp_path."""
    text = (SCENARIOS / f"{source}.xml").read_text(encoding="iso-8859-1")
    changed = edit(text)
    assert changed != text
    path = tmp_path / f"{name}.xml"
    path.write_text(changed, encoding="iso-8859-1")
    return path


def test_answered_call(tmp_path: Path) -> None:
    with start_uas("uas_answer", tmp_root=tmp_path) as carrier:
        result = run_uac("uac_call", carrier.address, pause_ms=50, timeout=5, tmp_root=tmp_path)

        assert result.ok, result.describe()
        assert (result.successful, result.failed) == (1, 0)
        assert result.final_codes == [200]
        assert carrier.received("INVITE") == 1, carrier.describe()
        assert carrier.received("ACK") == 1
        assert carrier.received("BYE") == 1
        assert carrier.responses_sent(200, "BYE") == 1


@pytest.mark.parametrize("code", [None, 486, 603])
def test_rejected_call_is_acked(tmp_path: Path, code: int | None) -> None:
    expected = 503 if code is None else code
    with start_uas(
        "uas_reject", reject_code=code, trace_messages=True, tmp_root=tmp_path
    ) as carrier:
        result = run_uac("uac_final", carrier.address, timeout=5, tmp_root=tmp_path)

        assert result.ok, result.describe()
        assert result.final_codes == [expected]
        assert carrier.wait_received("ACK", 1, timeout=2), carrier.describe()
        assert carrier.received("INVITE") == 1
        assert carrier.responses_sent(100) == 1

        messages = carrier.messages()
        invite = first(messages, "R", "INVITE ")
        reject = first(messages, "S", f"SIP/2.0 {expected} ")
        ack = first(messages, "R", "ACK ")
    # A non-2xx ACK belongs to the INVITE transaction: same Request-URI, Via branch,
    # Call-ID and CSeq number; To carries the tag of the response.
    assert ack.first_line.split()[1] == invite.first_line.split()[1]
    assert branch_of(ack.header("Via") or "") == branch_of(invite.header("Via") or "")
    assert ack.header("Call-ID") == invite.header("Call-ID")
    assert ack.header("CSeq") == "1 ACK"
    assert invite.header("CSeq") == "1 INVITE"
    to_tag = tag_of(reject.header("To") or "")
    assert to_tag is not None
    assert tag_of(ack.header("To") or "") == to_tag


def test_ring_then_cancel(tmp_path: Path) -> None:
    with start_uas("uas_ring", trace_messages=True, tmp_root=tmp_path) as carrier:
        result = run_uac("uac_cancel", carrier.address, pause_ms=200, timeout=5, tmp_root=tmp_path)

        assert result.ok, result.describe()
        assert result.final_codes == [487]
        assert count_responses(result.messages, 200, "R", "CANCEL") == 1
        assert carrier.wait_received("ACK", 1, timeout=2), carrier.describe()
        assert carrier.received("CANCEL") == 1
        assert carrier.responses_sent(180) == 1
        assert carrier.responses_sent(200, "CANCEL") == 1
        assert carrier.responses_sent(487) == 1

        messages = carrier.messages()
        invite = first(messages, "R", "INVITE ")
        cancel = first(messages, "R", "CANCEL ")
        ack = first(messages, "R", "ACK ")
    for request in (cancel, ack):
        assert request.first_line.split()[1] == invite.first_line.split()[1]
        assert branch_of(request.header("Via") or "") == branch_of(invite.header("Via") or "")
    assert cancel.header("CSeq") == "1 CANCEL"
    assert tag_of(cancel.header("To") or "") is None


# A carrier whose 487 overtakes the 200 for the CANCEL: that 200 goes out after the ACK.
RING_487_FIRST = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas_ring_487_first">
  <recv request="INVITE"/>
  <send><![CDATA[

SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="CANCEL"/>
  <send><![CDATA[

SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [last_cseq_number] INVITE
Content-Length: 0

]]></send>
  <recv request="ACK"/>
  <send><![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: [last_cseq_number] CANCEL
Content-Length: 0

]]></send>
</scenario>
"""


def test_cancel_accepts_487_before_the_cancel_200(tmp_path: Path) -> None:
    carrier_scenario = tmp_path / "uas_ring_487_first.xml"
    carrier_scenario.write_text(RING_487_FIRST, encoding="iso-8859-1")
    with start_uas(carrier_scenario, trace_messages=True, tmp_root=tmp_path) as carrier:
        result = run_uac("uac_cancel", carrier.address, timeout=5, tmp_root=tmp_path)
        assert result.ok, result.describe()
        assert result.final_codes == [487]
        assert count_responses(result.messages, 200, "R", "CANCEL") == 1
        messages = carrier.messages()
        invite = first(messages, "R", "INVITE ")
        ack = first(messages, "R", "ACK ")
    assert branch_of(ack.header("Via") or "") == branch_of(invite.header("Via") or "")


def test_ring_487_keeps_every_via_of_the_invite(tmp_path: Path) -> None:
    # Through the proxy the carrier's INVITE has two Vias, its CANCEL only the proxy's one.
    caller = derived_scenario(
        tmp_path,
        "uac_cancel",
        "uac_cancel_two_vias",
        lambda text: text.replace(
            "branch=[branch]\nFrom:",
            "branch=[branch]\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKupstream\nFrom:",
            1,
        ),
    )
    with start_uas("uas_ring", trace_messages=True, tmp_root=tmp_path) as carrier:
        result = run_uac(caller, carrier.address, timeout=5, tmp_root=tmp_path)
        assert result.ok, result.describe()
        terminated = first(carrier.messages(), "S", "SIP/2.0 487 ")
    vias = terminated.headers("Via")
    assert len(vias) == 2
    assert "192.0.2.1:5060;branch=z9hG4bKupstream" in vias[1]


def test_half_rejects_every_other_invite(tmp_path: Path) -> None:
    with start_uas("uas_half", tmp_root=tmp_path) as carrier:
        send_options(carrier.address)  # keepalives must not shift the alternation
        # 100 calls up within half a second, each held 500 ms: all open at once.
        result = run_uac(
            "uac_call",
            carrier.address,
            calls=100,
            rate=200,
            pause_ms=500,
            timeout=8,
            tmp_root=tmp_path,
        )

        # uac_call expects a 200: each 503 fails its call (SIPp still ACKs it).
        assert (result.successful, result.failed) == (50, 50), result.describe()
        assert Counter(result.final_codes) == {200: 50, 503: 50}
        assert carrier.received("INVITE") == 100
        assert carrier.responses_sent(200) == 50
        assert carrier.responses_sent(503) == 50
        assert carrier.wait_received("ACK", 100, timeout=2)


def test_half_rejects_with_a_chosen_code(tmp_path: Path) -> None:
    with start_uas("uas_half", reject_code=486, tmp_root=tmp_path) as carrier:
        result = run_uac(
            "uac_final",
            carrier.address,
            calls=4,
            rate=50,
            timeout=5,
            recv_timeout_ms=1000,
            tmp_root=tmp_path,
        )
        # uac_final takes only refusals: the answered calls fail, the refused ones pass.
        assert Counter(result.final_codes) == {200: 2, 486: 2}, result.describe()
        assert result.successful == 2


@pytest.mark.parametrize("scenario", ["uas_answer", "uas_reject", "uas_ring", "uas_half"])
def test_carriers_answer_options(tmp_path: Path, scenario: str) -> None:
    with start_uas(scenario, tmp_root=tmp_path) as carrier:
        assert send_options(carrier.address).startswith("SIP/2.0 200 ")
        assert send_options(carrier.address).startswith("SIP/2.0 200 ")
        assert carrier.received("OPTIONS") == 2
        assert carrier.running()


def test_call_after_options_keepalive(tmp_path: Path) -> None:
    with start_uas("uas_answer", tmp_root=tmp_path) as carrier:
        send_options(carrier.address)
        result = run_uac("uac_call", carrier.address, timeout=5, tmp_root=tmp_path)
        assert result.ok, result.describe()


def test_uac_call_absorbs_late_provisionals(tmp_path: Path) -> None:
    # A proxy may relay a provisional after the 200 it followed: here, after the ACK,
    # while the caller pauses before its BYE.
    late_180 = (
        "  <send><![CDATA[\n\nSIP/2.0 180 Ringing\n[$invite_via]\n[last_From:]\n"
        "[last_To:]\n[last_Call-ID:]\nCSeq: 1 INVITE\nContent-Length: 0\n\n]]></send>\n\n"
    )
    carrier_scenario = derived_scenario(
        tmp_path,
        "uas_answer",
        "uas_late_180",
        lambda text: text.replace(
            '<recv request="INVITE" crlf="true"/>',
            '<recv request="INVITE" crlf="true"><action><ereg regexp="Via:[^[:cntrl:]]*" '
            'search_in="msg" assign_to="invite_via"/></action></recv>',
        ).replace('  <recv request="BYE"/>', late_180 + '  <recv request="BYE"/>'),
    )
    with start_uas(carrier_scenario, tmp_root=tmp_path) as carrier:
        result = run_uac(
            "uac_call",
            carrier.address,
            calls=3,
            rate=50,
            pause_ms=200,
            timeout=5,
            tmp_root=tmp_path,
        )
        assert carrier.responses_sent(180) == 3
    assert result.ok, result.describe()
    assert result.successful == 3


def test_paused_carrier_answers_after_resume(tmp_path: Path) -> None:
    with start_uas("uas_answer", tmp_root=tmp_path) as carrier:
        carrier.pause()
        with start_uac("uac_call", carrier.address, timeout=6, tmp_root=tmp_path) as caller:
            time.sleep(0.7)  # the INVITE and a retransmission queue up in the stopped carrier
            assert carrier.received("INVITE") == 0
            carrier.resume()
            result = caller.wait()
        assert result.ok, result.describe()
        assert carrier.received("INVITE") == 1


def test_silent_carrier_fails_the_call_on_recv_timeout(tmp_path: Path) -> None:
    with start_uas("uas_answer", tmp_root=tmp_path) as carrier:
        carrier.pause()
        started = time.monotonic()
        result = run_uac(
            "uac_call", carrier.address, recv_timeout_ms=500, timeout=5, tmp_root=tmp_path
        )
        assert time.monotonic() - started < 4
    assert (result.successful, result.failed) == (0, 1), result.describe()
    assert result.stat("FailedTimeoutOnRecv(C)") == 1
    assert result.final_codes == []


def test_killed_carrier_frees_its_port_for_a_replacement(tmp_path: Path) -> None:
    carrier = start_uas("uas_answer", tmp_root=tmp_path)
    port = carrier.port
    assert udp_port_bound(port)
    assert carrier.kill() == -signal.SIGKILL
    assert not udp_port_bound(port)
    with start_uas("uas_reject", port=port, tmp_root=tmp_path) as replacement:
        result = run_uac("uac_final", replacement.address, timeout=5, tmp_root=tmp_path)
    assert result.final_codes == [503], result.describe()


def test_stop_is_clean(tmp_path: Path) -> None:
    carrier = start_uas("uas_answer", tmp_root=tmp_path)
    assert carrier.stop(grace=2.0) == 0
    assert not udp_port_bound(carrier.port)


def test_start_retries_on_a_taken_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((HOST, 0))
        taken = squatter.getsockname()[1]
        free = iter([taken])
        real = sipp.free_udp_port
        monkeypatch.setattr(sipp, "free_udp_port", lambda host=HOST: next(free, None) or real())
        with start_uas("uas_answer", tmp_root=tmp_path) as carrier:
            assert carrier.port != taken
            assert carrier.running()
