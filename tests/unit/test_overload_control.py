"""Overload control: the refused share from load samples, and refusing from raw bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from sipgen import RequestParts, torture, torture_names, valid_requests
from test_proxy_core import CALLER, A, Net, invite, only_request, reply, responses

from trunkguard.proxy import Flow
from trunkguard.proxy._entries import server_key
from trunkguard.proxy._overload import (
    MAX_REJECT,
    WINDOW,
    Load,
    OverloadControl,
    OverloadSettings,
    quick_invite,
    response_with_oc,
    shed_response,
    with_oc,
)
from trunkguard.sip import ParseError, Request, Response, parse_message

HIGH = OverloadSettings().queue_high


def test_the_refused_share_steers_the_queue_to_half_the_mark() -> None:
    control = OverloadControl()
    assert control.sample(Load(queued=HIGH // 10), 0.0) is None and control.reject == 0.0
    assert control.sample(Load(queued=HIGH + 1), 0.05) == "start"
    assert "KB waiting" in control.why
    shares = [control.reject]
    for i in range(8):
        control.sample(Load(queued=2 * HIGH), 0.1 + i * 0.05)
        shares.append(control.reject)
    assert shares == sorted(shares) and shares[-1] > 0.9 and shares[-1] <= MAX_REJECT
    # At half the mark: held where it is; a little over or under: a little more or less.
    held = control.reject
    control.sample(Load(queued=HIGH // 2), 1.0)
    assert control.reject == held
    control.reject = 0.5
    control.sample(Load(queued=HIGH * 6 // 10), 1.0)
    assert 0.5 < control.reject < 0.55
    control.sample(Load(queued=HIGH * 4 // 10), 1.0)
    assert abs(control.reject - 0.5) < 1e-3
    # Short: it falls, and the episode ends within a second and a half.
    ends = [control.sample(Load(queued=0), 1.0 + i * 0.05) for i in range(30)]
    assert "end" in ends and ends.index("end") < 30 and control.reject == 0.0


@pytest.mark.parametrize(
    ("load", "signal"),
    [
        (Load(drops=3), "dropped 3 datagrams"),
        (Load(lag=0.2), "200 ms late"),
        (Load(busy=0.99, queued=HIGH // 2), "of the time on input"),
        (Load(memory=600 << 20), "resident memory 600 MB"),
    ],
)
def test_each_signal_says_overloaded(load: Load, signal: str) -> None:
    control = OverloadControl(OverloadSettings(max_memory=500 << 20))
    if load.lag:  # lateness counts from the second sample in a row
        assert control.sample(load, 0.0) is None and control.reject == 0.0
    assert control.sample(load, 0.05) == "start"
    assert signal in control.why


def test_one_stall_of_the_loop_is_no_overload() -> None:
    control = OverloadControl()
    for i in range(20):  # a 300 ms stall every half second: never two late samples in a row
        lag = 0.3 if i % 10 == 0 else 0.001
        assert control.sample(Load(lag=lag), i * 0.05) is None
    assert control.reject == 0.0 and control.signal == ""
    control.sample(Load(lag=0.3), 1.0)
    assert control.sample(Load(lag=0.3), 1.05) == "start"  # late twice in a row: it is
    assert "2 samples in a row" in control.why


def test_busy_alone_with_an_empty_queue_is_not_overload() -> None:
    control = OverloadControl()
    control.sample(Load(busy=1.0, queued=0), 0.0)
    assert control.reject == 0.0


def test_over_the_memory_cap_every_new_call_is_refused() -> None:
    control = OverloadControl(OverloadSettings(max_memory=100 << 20))
    control.sample(Load(memory=101 << 20), 0.0)
    assert control.reject == 1.0
    assert all(control.refuse_next() for _ in range(100))
    control.sample(Load(memory=50 << 20), 0.05)
    assert control.reject <= MAX_REJECT


def test_refusals_are_spread_evenly() -> None:
    control = OverloadControl()
    control.reject = 0.25
    refused = [control.refuse_next() for _ in range(100)]
    assert sum(refused) == 25
    assert max(len(run) for run in "".join("x" if r else "." for r in refused).split("x")) <= 3


def _window(control: OverloadControl, offered: dict[str, int], now: float) -> None:
    """One window of samples in which each source offered so many new calls."""
    for host, n in offered.items():
        for _ in range(n):
            control.count(host)
    for i in range(WINDOW):
        control.sample(Load(queued=HIGH + 1), now + i * 0.05)


def test_a_source_that_offers_little_is_spared_while_a_flooder_is_refused() -> None:
    control = OverloadControl()
    _window(control, {"10.0.0.66": 800, "10.0.0.5": 4}, 0.0)
    assert control.light == frozenset({"10.0.0.5"}) and control.reject > 0.5
    assert not any(control.refuse_next("10.0.0.5") for _ in range(5))
    assert sum(control.refuse_next("10.0.0.66") for _ in range(100)) >= 50


def test_a_source_not_seen_in_the_last_window_gets_no_pass() -> None:
    control = OverloadControl()
    _window(control, {"10.0.0.66": 800, "10.0.0.5": 4}, 0.0)
    # A flood from ever-new addresses: each is new, none is spared.
    refused = [control.refuse_next(f"10.9.{i // 250}.{i % 250}") for i in range(1000)]
    assert sum(refused) >= 1000 * control.reject - 1
    # Spread thin over many steady sources, none is light either: all share the refusals.
    many = {f"10.8.0.{i}": 2 for i in range(200)} | {"10.0.0.5": 2}
    _window(control, many, 1.0)
    assert control.light == frozenset()


def test_the_first_sample_of_an_overload_already_knows_who_offers_the_most() -> None:
    net = Net()
    flooder, dialer = Flow("udp", ("127.0.0.66", 5090)), Flow("udp", ("127.0.0.5", 5090))
    for i in range(40):
        net.proxy.receive(invite(f"f{i}"), flooder, net.now)
    net.proxy.receive(invite("d0"), dialer, net.now)
    net.proxy.outbox.clear()
    for i in range(WINDOW):  # a window of samples, the last of which says overloaded
        net.proxy.note_load(Load(queued=2 * HIGH if i == WINDOW - 1 else 0), net.now)
    assert net.proxy.overload.light == frozenset({"127.0.0.5"})
    net.feed(invite("d1"), dialer)
    assert responses(net.take(), dialer) == [100]  # spared from the first moment


def test_disabled_never_refuses() -> None:
    control = OverloadControl(OverloadSettings(enabled=False))
    control.sample(Load(queued=10 * HIGH, drops=100, lag=5.0), 0.0)
    assert control.reject == 0.0 and not control.refuse_next()


# -- the raw look ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "via",
    [
        "Via: SIP/2.0/UDP 10.1.2.3:5090;branch=z9hG4bK-a1;rport",
        "v: SIP/2.0/UDP Dialer.Example.COM;branch=z9hG4bKx",
        "VIA:  SIP/2.0/TCP 10.1.2.3:5070 ; branch=z9hG4bK-sp ;received=1.2.3.4",
        "Via: SIP/2.0/UDP 10.1.2.3:5090;branch=z9hG4bK-t, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKo",
        "Via: SIP/2.0/UDP 10.1.2.3:5090;BRANCH=z9hG4bK-up ;rport",
        'Via: SIP/2.0/UDP 10.1.2.3;oc-algo="loss,rate";branch=z9hG4bK-q;oc',
    ],
)
def test_quick_invite_finds_the_same_transaction_key_as_the_parser(via: str) -> None:
    data = invite("q1").replace(b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-q1", via.encode())
    quick = quick_invite(data)
    assert quick is not None and not quick.to_tag
    request = parse_message(data)
    assert isinstance(request, Request)
    assert quick.key == server_key(request, "INVITE")


@pytest.mark.parametrize(
    "change",
    [
        (b"Via: SIP/2.0/UDP 127.0.0.1:5090", b"Via: SIP/2.0/UDP [::1]:5090"),  # IPv6: parser
        (b"branch=z9hG4bK-q2", b"branch=old-style"),  # RFC 2543 key
        (b"To: <sip:15551234567@127.0.0.1>\r\n", b"To: <sip:1@x>\r\n To: folded\r\n"),
        (b"Call-ID: q2\r\n", b""),  # no Call-ID
        (b"\r\n\r\n", b"\r\n"),  # no end of head
        (b"127.0.0.1:5090;", b"127.0.0.1:05090;"),  # a port the parser reads as a number
        (b"branch=z9hG4bK-q2", b"branch=Z9HG4BK-q2"),  # the cookie is case-sensitive
    ],
)
def test_quick_invite_leaves_anything_unusual_to_the_parser(change: tuple[bytes, bytes]) -> None:
    assert quick_invite(invite("q2").replace(*change)) is None


def _agrees_with_the_parser(data: bytes) -> None:
    """Whatever the fast path reads, the parser reads the same way (or it reads nothing).
    The core looks only at datagrams that start with ``INVITE ``."""
    quick = quick_invite(data)
    if quick is None or not data.startswith(b"INVITE "):
        return
    try:
        request = parse_message(data)
        key = server_key(request, "INVITE")  # type: ignore[arg-type]
        to_tag = request.to.tag is not None
    except ParseError:  # the parser refuses it: then so does the full path
        return
    assert isinstance(request, Request)
    assert quick.key == key
    assert quick.to_tag == to_tag


@given(valid_requests())
def test_quick_invite_agrees_with_the_parser_on_any_request(parts: RequestParts) -> None:
    data = parts.data
    if not data.startswith(b"INVITE "):
        data = b"INVITE " + data.split(b" ", 1)[1]
    _agrees_with_the_parser(data)


@pytest.mark.parametrize("name", torture_names())
def test_quick_invite_agrees_with_the_parser_on_the_torture_messages(name: str) -> None:
    _agrees_with_the_parser(torture(name))


def test_quick_invite_tells_a_tag_in_to_from_one_in_its_uri() -> None:
    tagged = invite("q3").replace(b"To: <sip:15551234567@127.0.0.1>", b"To: <sip:1@x>;tag=abc")
    in_uri = invite("q3").replace(b"To: <sip:15551234567@127.0.0.1>", b"To: <sip:1@x;tag=abc>")
    compact = invite("q3").replace(b"To: <sip:15551234567@127.0.0.1>", b"t: sip:1@x ; TAG=abc")
    assert quick_invite(tagged).to_tag  # type: ignore[union-attr]
    assert not quick_invite(in_uri).to_tag  # type: ignore[union-attr]
    assert quick_invite(compact).to_tag  # type: ignore[union-attr]


def test_the_stateless_503_copies_the_request_and_tags_to() -> None:
    data = invite("q4").replace(b"Via:", b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-up\r\nVia:", 1)
    quick = quick_invite(data)
    assert quick is not None
    out = parse_message(shed_response(quick, "sTAG", (b"Retry-After: 1",)))
    request = parse_message(data)
    assert isinstance(out, Response) and isinstance(request, Request)
    assert out.status == 503 and out.get("retry-after") == "1"
    assert out.values("via") == request.values("via")
    assert out.to.tag == "sTAG" and out.from_.tag == "caller1"
    assert (out.call_id, str(out.cseq)) == (request.call_id, str(request.cseq))
    assert out.get("content-length") == "0" and not out.body


def test_rfc7339_parameters_replace_the_callers_own() -> None:
    line = b'Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;oc;oc-algo="loss,rate", SIP/2.0/UDP b'
    out = with_oc(line, ';oc=20;oc-algo="loss";oc-validity=500;oc-seq=1.000')
    assert out == (
        b'Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;oc=20;oc-algo="loss";oc-validity=500'
        b";oc-seq=1.000, SIP/2.0/UDP b"
    )
    response = b"SIP/2.0 100 Trying\r\nv: SIP/2.0/UDP h;branch=z9hG4bK-2;oc\r\nCSeq: 1 INVITE\r\n"
    assert b"v: SIP/2.0/UDP h;branch=z9hG4bK-2;oc=0" in response_with_oc(response, ";oc=0")


# -- in the core -----------------------------------------------------------------------------
def _overloaded(net: Net, share: float = 1.0) -> None:
    net.proxy.overload.reject = share


def test_under_overload_a_new_invite_gets_a_quick_503_and_its_ack_is_absorbed() -> None:
    net = Net()
    _overloaded(net)
    net.feed(invite("o1"), CALLER)
    out = net.take()
    assert responses(out, CALLER) == [503] and net.sent_to(A, out) == []
    response = out[0][1]
    assert isinstance(response, Response)
    assert response.get("retry-after") == "1" and "overloaded" in (response.get("warning") or "")
    assert response.to.tag == net.proxy.shed_tag
    counters = net.proxy.counters
    assert counters["calls_shed_overload"] == 1 and counters["calls"] == 0
    assert not net.proxy.servers  # no transaction
    ack = (
        "ACK sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-o1\r\n"
        "From: <sip:agent@127.0.0.1>;tag=caller1\r\n"
        f"To: <sip:15551234567@127.0.0.1>;tag={net.proxy.shed_tag}\r\n"
        "Call-ID: o1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    net.feed(ack, CALLER)
    assert net.take() == [] and counters["shed_acks_absorbed"] == 1


def test_under_overload_admitted_calls_and_everything_but_new_invites_flow() -> None:
    net = Net()
    net.feed(invite("o2"), CALLER)  # admitted before the overload
    to_a = only_request(net.take(), A, "INVITE")
    _overloaded(net)
    net.feed(invite("o2"), CALLER)  # its retransmission: absorbed, never a 503
    assert 503 not in responses(net.take(), CALLER)
    net.feed(reply(to_a, 180), A)
    net.feed(reply(to_a, 200), A)
    assert responses(net.take(), CALLER) == [180, 200]
    reinvite = invite("o2").replace(
        b"To: <sip:15551234567@127.0.0.1>", b"To: <sip:15551234567@127.0.0.1>;tag=carrier"
    )
    reinvite = reinvite.replace(b"branch=z9hG4bK-o2", b"branch=z9hG4bK-o2re")
    reinvite = reinvite.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE")
    net.feed(reinvite, CALLER)  # inside the dialog: relayed
    assert "INVITE" in net.sent_to(A, net.take())
    assert net.proxy.counters["calls_shed_overload"] == 0


def test_the_drop_policy_sends_nothing() -> None:
    from trunkguard.proxy._overload import OverloadSettings as S

    net = Net(overload=S(policy="drop"))
    _overloaded(net)
    net.feed(invite("o3"), CALLER)
    assert net.take() == [] and net.proxy.counters["calls_shed_overload"] == 1


def test_rfc7339_toward_a_caller_that_asks_and_only_when_enabled() -> None:
    from trunkguard.proxy._overload import OverloadSettings as S

    asking = invite("o4").replace(b"branch=z9hG4bK-o4", b"branch=z9hG4bK-o4;oc")
    for enabled in (False, True):
        net = Net(overload=S(oc=enabled))
        net.feed(asking, CALLER)
        trying = net.take()[0][1]
        assert isinstance(trying, Response) and trying.status == 100
        assert (trying.top_via.params.get("oc") == "0") is enabled
        _overloaded(net, 0.5)
        for i in range(4):
            net.feed(asking.replace(b"o4", f"o4-{i}".encode()), CALLER)
        shed = [m for _, m in net.take() if isinstance(m, Response) and m.status == 503]
        assert len(shed) == 2
        assert (shed[0].top_via.params.get("oc") == "50") is enabled
        if enabled:
            assert shed[0].top_via.params.get("oc-validity") == "500"


def test_silence_checks_wait_for_an_overload_but_not_for_ever() -> None:
    import random

    from trunkguard.health import HealthEngine
    from trunkguard.proxy._core import MAX_DEFERRAL

    net = Net()
    proxy = net.proxy
    proxy.health = HealthEngine(["a", "b", "c"], rng=random.Random(1), probes_enabled=False)
    ticks: list[float] = []
    real_tick = proxy.health.tick
    proxy.health.tick = lambda now: ticks.append(now) or real_tick(now)  # type: ignore[method-assign]
    start = net.now
    proxy.stalled_until = start + 3600.0  # overloaded for an hour
    proxy._on_health_timer(start)
    net.advance(MAX_DEFERRAL - 0.5)
    assert ticks == []  # put off while the overload lasts...
    net.advance(1.0)
    assert ticks and ticks[0] - start <= MAX_DEFERRAL + 0.01  # ...but not past MAX_DEFERRAL


def test_only_a_signal_excuses_timeouts_not_the_share_winding_down() -> None:
    net = Net()
    proxy = net.proxy
    proxy.note_load(Load(queued=2 * HIGH), net.now)
    assert proxy.stalled_until > net.now
    assert [type(e).__name__ for e in proxy.take_events()] == ["OverloadEvent"]
    proxy.stalled_until = float("-inf")
    proxy.note_load(Load(queued=HIGH // 2), net.now + 3.0)  # relaxing: still refusing some
    assert proxy.overload.reject > 0 and proxy.stalled_until < net.now + 3.0


def test_the_queue_mark_is_half_the_buffer_the_kernel_granted_when_smaller() -> None:
    control = OverloadControl()
    assert control.queue_mark(Load(limit=212_992)) == 212_992  # stock rmem_max: 416 KB / 2
    assert control.queue_mark(Load(limit=0)) == HIGH
    assert control.sample(Load(queued=300_000, limit=212_992), 0.0) == "start"


def test_a_caller_elsewhere_is_counted_per_source() -> None:
    net = Net()
    other = Flow("udp", ("127.0.0.9", 5090))
    net.feed(invite("o5"), other)
    only_request(net.take(), A, "INVITE")
    assert net.proxy.sources.sources["127.0.0.9"].calls == 1


def test_under_overload_a_retransmission_of_an_answered_invite_is_absorbed_not_refused() -> None:
    net = Net()
    net.feed(invite("o6"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 200), A)
    assert responses(net.take(), CALLER) == [200]
    _overloaded(net)
    net.feed(invite("o6"), CALLER)  # its 200 was lost: the caller sends the INVITE again
    out = net.take()
    assert 503 not in responses(out, CALLER) and net.sent_to(A, out) == []
    assert net.proxy.counters["calls_shed_overload"] == 0
