"""Per-source limits and bans (pike/ratelimit), pure, then in the proxy core."""

from __future__ import annotations

import ipaddress

from test_proxy_core import A, Net, invite, only_request, reply, responses

from trunkguard.proxy import Flow
from trunkguard.proxy._sources import BanEvent, Limit, SourceLimits, SourceSettings

HOST = "10.0.0.66"


def _limits(**kwargs: object) -> SourceLimits:
    settings: dict[str, object] = {
        "default": Limit(calls_per_s=10, concurrent_calls=3, messages_per_s=100, burst=1.0)
    }
    settings.update(kwargs)
    return SourceLimits(SourceSettings(**settings))  # type: ignore[arg-type]


def _flood(limits: SourceLimits, host: str, start: float, seconds: float, rate: float) -> int:
    """Messages at ``rate`` for ``seconds``; returns how many were let through."""
    passed = 0
    for i in range(int(seconds * rate)):
        passed += limits.message(host, start + i / rate)
    return passed


def test_a_source_over_its_message_rate_is_banned_and_reported_once() -> None:
    limits = _limits()
    passed = _flood(limits, HOST, 0.0, 2.0, 1000)  # ten times its 100/s
    assert 100 <= passed <= 110  # its burst, then nothing
    events = limits.take_events()
    detail = "over 100 messages/s: banned for 10 s"
    assert events == [BanEvent(HOST, "banned", detail, events[0].at)]
    assert limits.banned(HOST)


def test_a_ban_is_lifted_when_the_source_went_quiet_and_renewed_twice_as_long_if_not() -> None:
    limits = _limits()
    _flood(limits, HOST, 0.0, 1.0, 1000)
    limits.take_events()
    # It kept on through the ban: renewed for 20 s, then 40 s.
    _flood(limits, HOST, 1.0, 10.5, 500)
    _flood(limits, HOST, 11.5, 21.0, 500)
    states = [(e.state, e.detail.rsplit(": ", 1)[-1]) for e in limits.take_events()]
    assert states == [("renewed", "banned for 20 s more"), ("renewed", "banned for 40 s more")]
    # Quiet now: the sweep lifts the ban once its time is up, with what it dropped.
    limits.sweep(100.0)
    (lifted,) = limits.take_events()
    assert lifted.state == "lifted" and "messages dropped" in lifted.detail
    assert not limits.banned(HOST) and limits.message(HOST, 100.1)
    # Offending again soon after: its next ban is twice the last one.
    _flood(limits, HOST, 101.0, 1.0, 1000)
    assert limits.take_events()[0].detail.endswith("banned for 80 s")


def test_ban_max_caps_the_length() -> None:
    limits = _limits(ban_for=10.0, ban_max=15.0)
    _flood(limits, HOST, 0.0, 1.0, 1000)
    _flood(limits, HOST, 1.0, 10.0, 500)
    assert [e.detail.rsplit(": ", 1)[-1] for e in limits.take_events()][-1] == (
        "banned for 15 s more"
    )


def test_new_calls_per_second_and_in_progress() -> None:
    limits = _limits()
    limits.settings = SourceSettings(default=Limit(calls_per_s=2, concurrent_calls=3, burst=1.0))
    assert limits.new_call(HOST, 0.0) is None and limits.new_call(HOST, 0.01) is None
    why = limits.new_call(HOST, 0.02)
    assert why == f"over 2 new calls/s from {HOST}" and limits.banned(HOST)


def test_a_class_that_does_not_ban_has_only_its_excess_refused() -> None:
    limits = _limits(default=Limit(calls_per_s=2, concurrent_calls=2, ban=False, burst=1.0))
    assert limits.new_call(HOST, 0.0) is None
    limits.call_started(HOST, 0.0)
    assert limits.new_call(HOST, 0.1) is None
    limits.call_started(HOST, 0.1)
    assert limits.new_call(HOST, 2.0) == f"2 calls in progress from {HOST}"
    limits.call_ended(HOST)
    assert limits.new_call(HOST, 2.1) is None and limits.new_call(HOST, 2.11) is None
    assert limits.new_call(HOST, 2.12) is not None  # over 2/s now
    assert not limits.banned(HOST) and limits.take_events() == []
    assert limits.new_call(HOST, 3.5) is None  # the bucket refilled


def test_carriers_and_networks_get_their_own_limits() -> None:
    limits = _limits(
        networks=((ipaddress.ip_network("10.9.0.0/16"), Limit(messages_per_s=5000)),),
    )
    limits.reconfigure(limits.settings, frozenset({"192.0.2.1"}))
    assert _flood(limits, "192.0.2.1", 0.0, 1.0, 2000) == 2000  # a carrier: no limits
    assert _flood(limits, "10.9.1.1", 0.0, 1.0, 2000) == 2000  # its network's 5000/s
    assert _flood(limits, "10.8.1.1", 0.0, 1.0, 2000) < 200  # the default's 100/s
    assert [e.source for e in limits.take_events()] == ["10.8.1.1"]


def test_disabled_limits_still_let_bans_in_force_run_out() -> None:
    limits = _limits()
    _flood(limits, HOST, 0.0, 1.0, 1000)
    limits.settings = SourceSettings(enabled=False)
    assert not limits.message(HOST, 2.0)
    assert limits.message("10.0.0.67", 2.0) and limits.new_call("10.0.0.67", 2.0) is None


def test_the_tables_are_bounded() -> None:
    limits = _limits(max_sources=100, max_bans=20)
    for i in range(1000):
        limits.message(f"10.1.{i // 250}.{i % 250}", i * 0.001)
    assert len(limits.sources) <= 100 and limits.counters["sources_evicted"] >= 900
    for i in range(50):
        host = f"10.2.0.{i}"
        _flood(limits, host, 10.0, 0.2, 1000)
    assert len(limits.bans) <= 20 and limits.counters["bans_evicted"] >= 30


# -- in the core -----------------------------------------------------------------------------
DIALER = Flow("udp", ("127.0.0.9", 5090))


def _net(**limit: object) -> Net:
    default = Limit(**limit)  # type: ignore[arg-type]
    return Net(sources=SourceSettings(default=default))


def test_a_banned_source_is_dropped_unparsed_and_the_ban_is_one_event() -> None:
    net = _net(messages_per_s=10, burst=1.0)
    for i in range(50):
        net.proxy.receive(b"garbage that is no SIP at all %d" % i, DIALER, net.now)
    counters = net.proxy.counters
    assert counters["parse_errors"] == 10 and counters["source_dropped"] == 40
    assert counters["sources_banned"] == 1
    bans = [e for e in net.proxy.take_events() if isinstance(e, BanEvent)]
    assert [b.state for b in bans] == ["banned"]


def test_a_source_over_its_calls_in_progress_gets_503_until_one_ends() -> None:
    net = _net(concurrent_calls=1, ban=False)
    net.feed(invite("s1"), DIALER)
    first = only_request(net.take(), A, "INVITE")
    net.feed(invite("s2"), DIALER)
    out = net.take()
    assert responses(out, DIALER) == [503] and net.sent_to(A, out) == []
    assert "1 calls in progress" in (out[0][1].get("warning") or "")
    net.feed(reply(first, 486), A)  # the first call ends unanswered: its place is free
    net.take()
    net.feed(invite("s3"), DIALER)
    third = only_request(net.take(), A, "INVITE")
    net.feed(reply(third, 200), A)  # answered: it counts until its dialog ends
    net.take()
    net.feed(invite("s4"), DIALER)
    assert responses(net.take(), DIALER) == [503]
    bye = (
        b"BYE sip:carrier@127.0.0.1:5071 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bye-s3\r\n"
        b"Route: <sip:127.0.0.1:5060;lr>\r\n"
        b"From: <sip:agent@127.0.0.1>;tag=caller1\r\n"
        b"To: <sip:15551234567@127.0.0.1>;tag=carrier\r\n"
        b"Call-ID: s3\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    net.feed(bye, DIALER)
    assert "BYE" in net.sent_to(A, net.take())
    net.feed(invite("s5"), DIALER)
    only_request(net.take(), A, "INVITE")
    assert net.proxy.sources.sources["127.0.0.9"].calls == 1


def test_a_source_over_its_call_rate_is_banned_and_its_invite_gets_nothing() -> None:
    net = _net(calls_per_s=2, burst=1.0)
    for i in range(2):
        net.feed(invite(f"r{i}"), DIALER)
    assert net.sent_to(A, net.take()) == ["INVITE", "INVITE"]
    net.feed(invite("r2"), DIALER)
    assert net.take() == []
    net.feed(invite("r3"), DIALER)
    assert net.take() == [] and net.proxy.counters["source_dropped"] == 1


def test_at_its_cap_of_calls_in_progress_a_source_is_refused_never_banned() -> None:
    limits = _limits(default=Limit(concurrent_calls=2))
    for _ in range(2):
        assert limits.new_call(HOST, 0.0) is None
        limits.call_started(HOST, 0.0)
    for i in range(50):
        assert limits.new_call(HOST, 0.1 + i * 0.01) == f"2 calls in progress from {HOST}"
    assert not limits.banned(HOST) and limits.take_events() == []


def test_a_banned_source_with_calls_up_still_ends_them() -> None:
    limits = _limits(default=Limit(messages_per_s=100, burst=1.0))
    for _ in range(10):
        limits.call_started(HOST, 0.0)
    _flood(limits, HOST, 0.0, 1.0, 1000)  # banned
    assert limits.banned(HOST)
    # Its BYEs and responses pass, up to what ten calls can need; anything else is dropped.
    assert limits.message(HOST, 1.5, b"BYE sip:x SIP/2.0")
    assert not limits.message(HOST, 1.5, b"INVITE sip:x SIP/2.0")
    passed = sum(limits.message(HOST, 2.0 + i * 0.001, b"SIP/2.0 200 OK") for i in range(1000))
    assert 40 <= passed <= 55  # 25/s (0.5 per call up + 20): a full bucket, then a second
    # Without calls up, nothing passes.
    other = "10.0.0.67"
    _flood(limits, other, 0.0, 1.0, 1000)
    assert not limits.message(other, 1.5, b"ACK sip:x SIP/2.0")


def test_a_message_ban_is_renewed_by_the_message_rate_not_the_call_rate() -> None:
    limits = _limits(default=Limit(calls_per_s=5, messages_per_s=1000, burst=1.0))
    _flood(limits, HOST, 0.0, 1.0, 3000)  # over 1000 messages/s: banned
    limits.take_events()
    _flood(limits, HOST, 1.0, 10.0, 50)  # then 50/s while banned: under 1000/s, over 5/s
    limits.sweep(12.0)
    assert [e.state for e in limits.take_events()] == ["lifted"]
