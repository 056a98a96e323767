"""The carrier simulator's sans-IO core, per mode, with a fake clock: no sockets, no sleeps.

A test plays the caller: it hands the core request bytes and a time, and reads
the datagrams it answers; ``Clock.advance`` runs the core's timers the way the
asyncio adapter does, one deadline at a time.
"""

from __future__ import annotations

import json

import pytest

from trunkguard.lab._carrier import CarrierCore, Datagram, Mode, ModeError, mode_from_json
from trunkguard.lab._carrier_mode import behaviour, phase_end
from trunkguard.sip import Request, Response, TimerConfig, parse_message

CALLER = ("127.0.0.1", 5999)
LOCAL = ("127.0.0.1", 5071)
T1, T2, T64 = 0.5, 4.0, 32.0
START = 1000.0


def request(
    method: str,
    *,
    call_id: str = "call-1",
    branch: str = "z9hG4bKinvite1",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    to = "<sip:4930@127.0.0.1:5071>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:4930@127.0.0.1:5071 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}",
        "Max-Forwards: 70",
        "From: <sip:caller@127.0.0.1:5999>;tag=caller1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def invite(**kw: object) -> bytes:
    rr = ("Record-Route: <sip:127.0.0.1:5060;lr>",)
    return request("INVITE", extra=rr, **kw)  # type: ignore[arg-type]


def response(d: Datagram) -> Response:
    message = parse_message(d.data)
    assert isinstance(message, Response)
    assert d.addr == CALLER
    return message


def codes(out: list[Datagram]) -> list[int]:
    return [response(d).status for d in out]


class Clock:
    """The core and its time; ``advance`` fires every deadline up to ``until``, in order."""

    def __init__(self, mode: Mode, now: float = START) -> None:
        self.now = now
        self.core = CarrierCore("a", mode, now, local=LOCAL, timers=TimerConfig(T1, T2, 5.0))

    def send(self, data: bytes, at: float | None = None) -> list[Datagram]:
        if at is not None:
            self.run_until(at)
        return self.core.receive(data, CALLER, self.now)

    def run_until(self, until: float) -> list[Datagram]:
        out: list[Datagram] = []
        while (deadline := self.core.next_deadline()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            out += self.core.handle_timer(self.now)
        self.now = max(self.now, until)
        return out

    def counters(self) -> dict[str, object]:
        return self.core.snapshot(self.now)

    def set_mode(self, mode: Mode) -> None:
        self.core.set_mode(mode, self.now)


# -- healthy -----------------------------------------------------------------------------
def test_healthy_answers_100_180_200_in_order_with_sdp() -> None:
    clock = Clock(Mode("healthy"))
    out = clock.send(invite())
    assert codes(out) == [100, 180, 200]
    trying, ringing, ok = (response(d) for d in out)
    assert trying.to.tag is None
    assert ringing.to.tag is not None and ringing.to.tag == ok.to.tag
    assert ok.get("Content-Type") == "application/sdp"
    assert ok.body.startswith(b"v=0\r\n") and b"m=audio" in ok.body
    assert ok.get("Content-Length") == str(len(ok.body))
    assert ok.get("Contact") == "<sip:a@127.0.0.1:5071>"
    for dialog in (ringing, ok):
        assert dialog.get("Record-Route") == "<sip:127.0.0.1:5060;lr>"
    assert ok.cseq.method == "INVITE" and ok.call_id == "call-1"


def test_ring_time_delays_the_200_to_the_millisecond() -> None:
    clock = Clock(Mode("healthy", ring_ms=300))
    assert codes(clock.send(invite())) == [100, 180]
    assert clock.core.next_deadline() == pytest.approx(START + 0.3)
    assert clock.run_until(START + 0.299) == []
    assert codes(clock.run_until(START + 0.3)) == [200]


def test_200_is_resent_with_doubling_intervals_until_the_ack() -> None:
    clock = Clock(Mode("healthy"))
    clock.send(invite())
    assert codes(clock.run_until(START + T1)) == [200]
    assert clock.run_until(START + T1 + 2 * T1 - 0.001) == []
    assert codes(clock.run_until(START + 3 * T1)) == [200]
    ack = request("ACK", branch="z9hG4bKack1", to_tag="x")
    assert clock.send(ack) == []
    assert clock.run_until(START + 60) == []
    counters = clock.counters()
    assert counters["resent"] == 2
    assert counters["received"] == {"ACK": 1, "INVITE": 1}
    assert counters["ack_timeouts"] == 0


def test_200_never_acknowledged_is_given_up_after_64_t1() -> None:
    clock = Clock(Mode("healthy"))
    clock.send(invite())
    resent = clock.run_until(START + T64 + 10)
    # T1, 2 T1, 4 T1, then T2 apart: 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5
    assert len(resent) == 3 + 7
    assert clock.core.next_deadline() is None or clock.core.next_deadline() > START + T64
    assert clock.counters()["ack_timeouts"] == 1


def test_retransmitted_invite_gets_the_last_response_again() -> None:
    clock = Clock(Mode("healthy", ring_ms=2000))
    first = clock.send(invite())
    again = clock.send(invite(), at=START + 0.4)
    assert codes(again) == [180]
    assert again[0].data == first[1].data
    counters = clock.counters()
    assert counters["received"] == {"INVITE": 1}
    assert counters["retransmissions"] == {"INVITE": 1}
    assert counters["invites"] == 1
    assert counters["answered"] == {"100": 1, "180": 1}
    assert counters["resent"] == 1


def test_retransmitted_invite_after_the_200_gets_the_200() -> None:
    clock = Clock(Mode("healthy"))
    ok = clock.send(invite())[2]
    again = clock.send(invite(), at=START + 0.1)
    assert [d.data for d in again] == [ok.data]


def test_bye_ends_the_call_and_an_unknown_bye_gets_481() -> None:
    clock = Clock(Mode("healthy"))
    tag = response(clock.send(invite())[2]).to.tag
    clock.send(request("ACK", branch="z9hG4bKack1", to_tag=tag))
    bye = request("BYE", branch="z9hG4bKbye1", cseq=2, to_tag=tag)
    assert codes(clock.send(bye)) == [200]
    assert clock.counters()["open_calls"] == 0
    assert codes(clock.send(bye)) == [200]  # retransmission: the same answer
    again = request("BYE", branch="z9hG4bKbye2", cseq=3, to_tag=tag)
    assert codes(clock.send(again)) == [481]
    stranger = request("BYE", call_id="nobody", branch="z9hG4bKbye3", to_tag="t")
    out = clock.send(stranger)
    assert codes(out) == [481]
    assert response(out[0]).get("X-Sim-Carrier") == "a"
    counters = clock.counters()
    assert counters["received"] == {"ACK": 1, "BYE": 3, "INVITE": 1}
    assert counters["retransmissions"] == {"BYE": 1}
    assert counters["answered"] == {"100": 1, "180": 1, "200": 2, "481": 2}


def test_bye_while_ringing_ends_the_invite_with_487() -> None:
    clock = Clock(Mode("healthy", ring_ms=5000))
    tag = response(clock.send(invite())[1]).to.tag
    out = clock.send(request("BYE", branch="z9hG4bKbye1", cseq=2, to_tag=tag))
    assert [(response(d).status, response(d).cseq.method) for d in out] == [
        (200, "BYE"),
        (487, "INVITE"),
    ]
    assert codes(clock.run_until(START + T1)) == [487]  # Timer G: no ACK yet
    assert set(codes(clock.run_until(START + 10))) == {487}  # and no 200 after the ring


def test_cancel_gets_200_and_the_invite_487_and_the_ring_stops() -> None:
    clock = Clock(Mode("healthy", ring_ms=3000))
    tag = response(clock.send(invite())[1]).to.tag
    cancel = request("CANCEL", branch="z9hG4bKinvite1")
    out = clock.send(cancel, at=START + 1)
    answers = [response(d) for d in out]
    assert [(r.status, r.cseq.method) for r in answers] == [(200, "CANCEL"), (487, "INVITE")]
    assert {r.to.tag for r in answers} == {tag}
    assert all(r.get("X-Sim-Carrier") == "a" for r in answers)
    ack = request("ACK", branch="z9hG4bKinvite1", to_tag=tag)
    assert clock.send(ack, at=START + 1.1) == []
    assert clock.run_until(START + 60) == []  # no 200 after the ring, no 487 resent
    counters = clock.counters()
    assert counters["answered"] == {"100": 1, "180": 1, "200": 1, "487": 1}
    assert counters["resent"] == 0
    assert counters["open_calls"] == 0


def test_cancel_without_its_invite_gets_481_and_after_the_200_changes_nothing() -> None:
    clock = Clock(Mode("healthy"))
    assert codes(clock.send(request("CANCEL", branch="z9hG4bKnone"))) == [481]
    clock.send(invite())
    out = clock.send(request("CANCEL", branch="z9hG4bKinvite1"))
    assert [(response(d).status, response(d).cseq.method) for d in out] == [(200, "CANCEL")]


def test_options_register_and_other_methods() -> None:
    clock = Clock(Mode("healthy"))
    options = request("OPTIONS", call_id="ka", branch="z9hG4bKopt1")
    out = clock.send(options)
    assert codes(out) == [200]
    assert "OPTIONS" in (response(out[0]).get("Allow") or "")
    assert clock.send(options)[0].data == out[0].data
    register = request(
        "REGISTER", call_id="reg", branch="z9hG4bKreg1", extra=("Contact: <sip:u@1.2.3.4>",)
    )
    ok = response(clock.send(register)[0])
    assert (ok.status, ok.get("Contact"), ok.get("Expires")) == (200, "<sip:u@1.2.3.4>", "3600")
    info = clock.send(request("INFO", call_id="i", branch="z9hG4bKinfo1"))
    assert codes(info) == [405]
    assert response(info[0]).get("Allow") is not None


# -- reject, options-only --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "retry_after"), [(503, 30), (503, None), (500, None), (403, None), (486, None)]
)
def test_reject_answers_100_then_the_code(code: int, retry_after: int | None) -> None:
    clock = Clock(Mode("reject", code=code, retry_after=retry_after))
    out = clock.send(invite())
    assert codes(out) == [100, code]
    final = response(out[1])
    assert final.get("Retry-After") == (None if retry_after is None else str(retry_after))
    assert final.to.tag is not None and final.get("Contact") is None
    # Timer G resends the final until the ACK, which ends that.
    assert codes(clock.run_until(START + T1)) == [code]
    clock.send(request("ACK", to_tag=final.to.tag))
    assert clock.run_until(START + 60) == []
    assert clock.counters()["ack_timeouts"] == 0
    assert codes(clock.send(request("OPTIONS", branch="z9hG4bKopt"))) == [200]


def test_reject_without_ack_times_out_on_timer_h() -> None:
    clock = Clock(Mode("reject", code=503))
    clock.send(invite())
    resent = clock.run_until(START + 60)
    assert set(codes(resent)) == {503}
    assert clock.counters()["ack_timeouts"] == 1
    assert clock.counters()["open_calls"] == 0


def test_options_only_answers_keepalives_and_rejects_invites_without_100() -> None:
    clock = Clock(Mode("options-only"))
    assert codes(clock.send(request("OPTIONS", branch="z9hG4bKopt"))) == [200]
    assert codes(clock.send(invite())) == [503]
    clock = Clock(Mode("options-only", code=480, retry_after=5))
    final = response(clock.send(invite())[0])
    assert (final.status, final.get("Retry-After")) == (480, "5")


# -- blackhole, killed ----------------------------------------------------------------------
def test_blackhole_swallows_everything_and_counts_it() -> None:
    clock = Clock(Mode("blackhole"))
    assert clock.send(invite()) == []
    assert clock.send(invite(), at=START + T1) == []
    assert clock.send(request("OPTIONS", branch="z9hG4bKopt")) == []
    assert clock.send(request("BYE", call_id="x", branch="z9hG4bKbye", to_tag="t")) == []
    assert clock.core.next_deadline() is None
    counters = clock.counters()
    assert counters["received"] == {"BYE": 1, "INVITE": 1, "OPTIONS": 1}
    assert counters["retransmissions"] == {"INVITE": 1}
    assert counters["invites"] == 1
    assert counters["swallowed"] == 4
    assert counters["answered"] == {}


def test_blackhole_also_holds_back_what_was_due_and_recovery_lets_it_through() -> None:
    clock = Clock(Mode("healthy", ring_ms=1000))
    clock.send(invite())
    clock.set_mode(Mode("blackhole"))
    assert clock.run_until(START + 2) == []  # the 200 at +1 s and its first resend
    assert clock.counters()["suppressed"] == 2
    clock.set_mode(Mode("healthy"))
    assert codes(clock.run_until(START + 4)) == [200]  # the 2xx retransmission


def test_a_request_swallowed_by_a_blackhole_is_answered_when_retransmitted_later() -> None:
    clock = Clock(Mode("blackhole"))
    clock.send(invite())
    clock.set_mode(Mode("healthy"))
    assert codes(clock.send(invite(), at=START + T1)) == [100, 180, 200]
    counters = clock.counters()
    assert counters["received"] == {"INVITE": 1}
    assert counters["retransmissions"] == {"INVITE": 1}


def test_killed_forgets_every_call_but_keeps_the_counters() -> None:
    clock = Clock(Mode("healthy", ring_ms=1000))
    clock.send(invite())
    clock.set_mode(Mode("killed"))
    assert clock.core.next_deadline() is None
    assert clock.send(request("OPTIONS", branch="z9hG4bKopt")) == []
    clock.set_mode(Mode("healthy"))
    assert clock.run_until(START + 10) == []
    tag = "whatever"
    bye = request("BYE", branch="z9hG4bKbye", cseq=2, to_tag=tag)
    assert codes(clock.send(bye)) == [481]
    counters = clock.counters()
    assert counters["received"] == {"BYE": 1, "INVITE": 1, "OPTIONS": 1}
    assert counters["answered"] == {"100": 1, "180": 1, "481": 1}


# -- slow --------------------------------------------------------------------------------------
def test_slow_answers_only_after_the_delay_and_absorbs_retransmissions() -> None:
    clock = Clock(Mode("slow", delay_ms=3000, ring_ms=500))
    assert clock.send(invite()) == []
    assert clock.send(invite(), at=START + T1) == []
    assert clock.send(invite(), at=START + 3 * T1) == []
    assert clock.run_until(START + 2.999) == []
    assert codes(clock.run_until(START + 3.0)) == [100, 180]
    assert codes(clock.run_until(START + 3.5)) == [200]
    counters = clock.counters()
    assert counters["received"] == {"INVITE": 1}
    assert counters["retransmissions"] == {"INVITE": 2}
    assert counters["answered"] == {"100": 1, "180": 1, "200": 1}


def test_slow_delays_keepalives_too() -> None:
    clock = Clock(Mode("slow", delay_ms=800))
    assert clock.send(request("OPTIONS", branch="z9hG4bKopt")) == []
    assert codes(clock.run_until(START + 0.8)) == [200]


def test_a_request_delayed_by_slow_meets_the_mode_in_force_when_its_time_comes() -> None:
    clock = Clock(Mode("slow", delay_ms=1000))
    clock.send(invite())
    clock.set_mode(Mode("reject", code=503))
    assert codes(clock.run_until(START + 1)) == [100, 503]


# -- jitter ------------------------------------------------------------------------------------
def test_jitter_takes_each_request_up_after_its_own_delay_within_the_bounds() -> None:
    clock = Clock(Mode("jitter", delay_ms=1, jitter_ms=50))
    delays = []
    for i in range(200):
        sent = clock.now
        assert clock.send(invite(call_id=f"j{i}", branch=f"z9hG4bKj{i}")) == []
        mine: list[int] = []
        while not mine:  # (the earlier calls' 200s are resent meanwhile: no ACK here)
            deadline = clock.core.next_deadline()
            assert deadline is not None
            out = clock.run_until(deadline)
            mine = [r.status for r in map(response, out) if r.call_id == f"j{i}"]
        assert mine[:2] == [100, 180]  # then answered as healthy
        delays.append(clock.now - sent)
        clock.run_until(clock.now + 0.1)
    assert all(0.001 - 1e-9 <= d <= 0.05 + 1e-9 for d in delays)
    assert max(delays) - min(delays) > 0.03  # they do vary, over the whole span
    assert clock.counters()["acting_as"] == "jitter"


def test_jitter_bounds_are_checked_and_described() -> None:
    assert Mode("jitter", delay_ms=1, jitter_ms=50).describe() == "jitter 1 to 50 ms"
    with pytest.raises(ModeError, match="jitter_ms \\(5\\) must be at least delay_ms \\(10\\)"):
        Mode("jitter", delay_ms=10, jitter_ms=5)
    assert mode_from_json({"name": "jitter", "jitter_ms": 20}).jitter_ms == 20


# -- flap --------------------------------------------------------------------------------------
def test_flap_schedule_boundaries() -> None:
    mode = Mode("flap", period_s=20)
    at = [0, 19.999, 20, 39.999, 40, 60, 80.5]
    acting = [behaviour(mode, START, START + t) for t in at]
    assert acting == [
        "healthy",
        "healthy",
        "blackhole",
        "blackhole",
        "healthy",
        "blackhole",
        "healthy",
    ]
    assert phase_end(mode, START, START + 25) == START + 40
    assert phase_end(Mode("healthy"), START, START) is None


def test_flap_answers_in_healthy_phases_only() -> None:
    clock = Clock(Mode("flap", period_s=4))
    answered = []
    for i, t in enumerate([0.1, 3.9, 4.0, 7.9, 8.0, 12.5]):
        out = clock.send(request("OPTIONS", branch=f"z9hG4bKo{i}"), at=START + t)
        answered.append(bool(out))
    assert answered == [True, True, False, False, True, False]
    snapshot = clock.counters()
    assert snapshot["mode"] == "flap" and snapshot["acting_as"] == "blackhole"
    assert snapshot["phase_ends_in_s"] == pytest.approx(3.5)


def test_flap_phase_starts_when_the_mode_is_set() -> None:
    clock = Clock(Mode("healthy"))
    clock.run_until(START + 7)
    clock.set_mode(Mode("flap", period_s=4))
    assert clock.core.behaviour(START + 10.9) == "healthy"
    assert clock.core.behaviour(START + 11) == "blackhole"


# -- what every answer carries, what is counted -----------------------------------------------
def test_every_response_names_its_carrier() -> None:
    clock = Clock(Mode("healthy", ring_ms=100))
    out = clock.send(invite())
    out += clock.send(invite(call_id="c2", branch="z9hG4bKc2"))
    out += clock.send(request("CANCEL", call_id="c2", branch="z9hG4bKc2"))
    out += clock.run_until(START + 2)
    out += clock.send(request("OPTIONS", branch="z9hG4bKopt"))
    out += clock.send(request("BYE", call_id="gone", branch="z9hG4bKb", to_tag="t"))
    out += clock.send(request("MESSAGE", call_id="m", branch="z9hG4bKm"))
    clock.set_mode(Mode("reject", code=486))
    out += clock.send(invite(call_id="c3", branch="z9hG4bKc3"))
    assert len(out) > 10
    assert {response(d).get("X-Sim-Carrier") for d in out} == {"a"}


def test_invites_count_once_per_call_id() -> None:
    clock = Clock(Mode("reject", code=503))
    clock.send(invite())
    clock.send(invite(branch="z9hG4bKinvite2", cseq=2))  # same call, a new attempt
    clock.send(invite(call_id="call-2", branch="z9hG4bKother"))
    counters = clock.counters()
    assert counters["received"] == {"INVITE": 3}
    assert counters["invites"] == 2
    assert counters["answered"] == {"100": 3, "503": 3}
    assert json.loads(json.dumps(counters)) == counters


def test_garbage_and_responses_are_counted_not_answered() -> None:
    clock = Clock(Mode("healthy"))
    assert clock.send(b"\x00\x01 not sip") == []
    assert clock.send(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n") == []
    no_call_id = request("OPTIONS", branch="z9hG4bKbad").replace(b"Call-ID: call-1\r\n", b"")
    out = clock.send(no_call_id)
    assert codes(out) == [400]
    counters = clock.counters()
    assert (counters["unparsable"], counters["stray_responses"]) == (2, 1)


def test_snapshot_describes_the_mode() -> None:
    clock = Clock(Mode("reject", code=503, retry_after=30))
    snapshot = clock.counters()
    assert snapshot["mode"] == "reject"
    assert snapshot["mode_detail"] == "reject 503 (Retry-After 30)"
    assert snapshot["params"] == {
        "name": "reject",
        "code": 503,
        "retry_after": 30,
        "ring_ms": 0,
        "delay_ms": 0,
        "period_s": 20.0,
        "hangup_ms": 2000,
        "busy_pct": 80,
        "jitter_ms": 50,
    }


def test_transactions_and_calls_are_forgotten_once_over() -> None:
    clock = Clock(Mode("healthy"))
    tag = response(clock.send(invite())[2]).to.tag
    clock.send(request("ACK", branch="z9hG4bKack", to_tag=tag))
    clock.send(request("BYE", branch="z9hG4bKbye", cseq=2, to_tag=tag))
    clock.send(request("OPTIONS", call_id="k", branch="z9hG4bKk"))
    clock.run_until(START + 120)
    assert clock.core.next_deadline() is None
    assert clock.core._txns == {} and clock.core._calls == {}


# -- modes as data --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "bogus"}, "unknown mode 'bogus': expected one of healthy, reject"),
        ({"name": "reject", "code": 200}, "code must be from 300 to 699, not 200"),
        ({"name": "reject", "code": True}, "code must be a whole number"),
        ({"name": "reject", "code": "503"}, "code must be a whole number"),
        ({"name": "reject", "retry_after": -1}, "retry_after must be at least 0"),
        ({"name": "slow", "delay_ms": 1.5}, "delay_ms must be a whole number"),
        ({"name": "flap", "period_s": 0}, "period_s must be more than 0"),
        ({"name": "flap", "period_s": "x"}, "period_s must be a number"),
        ({"name": "reject", "cod": 486}, "unknown field(s) cod"),
        ({"code": 486}, "missing 'name'"),
        ({"name": 3}, "name must be a string"),
    ],
)
def test_bad_modes_are_refused_with_the_field_and_why(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ModeError) as info:
        mode_from_json(fields)
    assert message in str(info.value)


def test_modes_from_json() -> None:
    assert mode_from_json({"name": "reject", "code": 486}) == Mode("reject", code=486)
    assert mode_from_json({"name": "options-only-alive"}) == Mode("options-only")
    assert mode_from_json({"name": "flap", "period_s": 4}).period_s == 4
    with pytest.raises(ModeError, match="JSON object"):
        mode_from_json(["reject"])
    with pytest.raises(ModeError):
        Mode("healthy", ring_ms=-1)


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        (Mode("healthy"), "healthy"),
        (Mode("healthy", ring_ms=300), "healthy, ring 300 ms"),
        (Mode("reject", code=486), "reject 486"),
        (Mode("slow", delay_ms=3000), "slow 3000 ms"),
        (Mode("flap", period_s=4), "flap 4 s healthy / 4 s dead"),
        (Mode("killed"), "killed"),
    ],
)
def test_describe(mode: Mode, text: str) -> None:
    assert mode.describe() == text


def test_requests_keep_their_own_request_type() -> None:
    # The helper's requests are valid SIP to the project's own parser.
    message = parse_message(invite())
    assert isinstance(message, Request)
    message.check()


# -- quality faults: health sees nothing wrong -------------------------------------------------


def test_fake_busy_answers_486_to_its_share_evenly() -> None:
    clock = Clock(Mode("fake-busy", busy_pct=80))
    finals = []
    for i in range(10):
        out = clock.send(invite(call_id=f"c{i}", branch=f"z9hG4bKfb{i}"))
        finals.append(codes(out)[-1])
        assert codes(out)[0] == 100
    assert finals.count(486) == 8 and finals.count(200) == 2
    assert finals[:5].count(486) == 4  # spread: 4 in every 5, not 8 then 2
    assert codes(Clock(Mode("fake-busy", busy_pct=0)).send(invite())) == [100, 180, 200]
    assert codes(Clock(Mode("fake-busy", busy_pct=100)).send(invite())) == [100, 486]


def test_false_answer_hangs_up_along_the_dialog_after_hangup_ms() -> None:
    clock = Clock(Mode("false-answer", hangup_ms=2000))
    contact = ("Contact: <sip:caller@127.0.0.1:5999>",)
    rr = ("Record-Route: <sip:127.0.0.1:5060;lr>",)
    assert codes(clock.send(request("INVITE", extra=(*rr, *contact)))) == [100, 180, 200]
    clock.send(request("ACK", cseq_method="ACK", to_tag="x"), at=START + 0.1)
    assert clock.run_until(START + 1.9) == []
    out = clock.run_until(START + 2.1)
    assert len(out) == 1 and out[0].addr == ("127.0.0.1", 5060)  # to the record-router
    bye = parse_message(out[0].data)
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.uri == "sip:caller@127.0.0.1:5999"  # loose routing: the caller's Contact
    assert bye.get_all("route") == ["<sip:127.0.0.1:5060;lr>"]
    assert bye.from_.tag and bye.to.tag == "caller1" and bye.call_id == "call-1"
    assert clock.core.counters.byes_sent == 1
    ok = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {bye.get('via')}\r\nFrom: {bye.get('from')}\r\nTo: {bye.get('to')}\r\n"
        "Call-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    clock.core.receive(ok, ("127.0.0.1", 5060), clock.now)
    assert clock.core.counters.bye_answers == 1 and clock.core.counters.stray_responses == 0
    # The caller's own BYE after that finds no call.
    assert codes(clock.send(request("BYE", branch="z9hG4bKbye", cseq=2, to_tag="x"))) == [481]


def test_false_answer_does_not_hang_up_a_call_already_over() -> None:
    clock = Clock(Mode("false-answer", hangup_ms=2000))
    clock.send(invite())
    clock.send(request("BYE", branch="z9hG4bKbye", cseq=2, to_tag="x"), at=START + 1.0)
    out = clock.run_until(START + 3.0)
    assert all(isinstance(parse_message(d.data), Response) for d in out)
    assert clock.core.counters.byes_sent == 0
