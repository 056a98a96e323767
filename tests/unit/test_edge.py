"""The edge: the router forwards only what it routed, and an attacker's version goes nowhere.

Each rule of ARCHITECTURE.md's "What the router forwards" has a test here on a
fake clock, without sockets; the SIPp tests in tests/e2e/test_edge_e2e.py show
the same against real peers.
"""

from __future__ import annotations

import ipaddress

import pytest
from test_proxy_core import CALLER, A, B, C, Net, invite, only_request, reply, responses, target

from trunkguard.health import HealthEngine
from trunkguard.proxy import Flow, Proxy, ProxySettings
from trunkguard.proxy._timers import TimerQueue
from trunkguard.proxy._types import AttemptRecord
from trunkguard.routing import POOL_MEMBER, Target
from trunkguard.sip import Request, Response, parse_message, parse_uri

OUTSIDE = Flow("udp", ("192.0.2.66", 5060))  # a host that is not a carrier
STRANGER = Flow("udp", ("198.51.100.9", 5060))  # a source not in allow
SECRET = b"k" * 32


def in_dialog(
    method: str,
    *,
    call_id: str = "unknown-1",
    ruri: str = "sip:19005551234@192.0.2.66:5060",
    route: str | None = None,
    from_tag: str = "caller1",
    to_tag: str = "x",
    mf: int = 70,
    body: str = "",
) -> bytes:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{method}-{call_id}-{from_tag}",
        f"From: <sip:agent@127.0.0.1>;tag={from_tag}",
        f"To: <sip:19005551234@192.0.2.66>;tag={to_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: 2 {method}",
        f"Max-Forwards: {mf}",
    ]
    if route is not None:
        lines.append(f"Route: {route}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sent_to_anyone_but(net: Net, flow: Flow) -> list[tuple[Flow, Request | Response]]:
    return [(f, m) for f, m in net.take() if f != flow]


def answered_call(net: Net, call_id: str) -> Request:
    """A call answered by carrier a; returns the INVITE as a received it."""
    net.feed(invite(call_id), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 200), A)
    assert responses(net.take(), CALLER) == [200]
    return sent


def net_with_room_for_one_call_on_a(**settings: object) -> tuple[Net, HealthEngine]:
    """A proxy whose carrier a takes one call at a time: a dialog that lingers keeps it full."""
    net = Net(**settings)
    health = HealthEngine(["a", "b", "c"])
    health.set_capacity("a", 1, None)
    net.proxy.health = health
    return net, health


# -- 1. an in-dialog request with no dialog of ours is not an open relay -----------------------
@pytest.mark.parametrize("method", ["INVITE", "BYE", "INFO", "UPDATE", "MESSAGE"])
def test_unknown_dialog_request_aimed_at_any_host_gets_481_and_goes_nowhere(method: str) -> None:
    net = Net()
    net.feed(in_dialog(method, ruri="sip:19005551234@127.0.0.1:5071"), CALLER)
    out = net.take()
    assert [(f, m.status) for f, m in out if isinstance(m, Response)] == [(CALLER, 481)]
    assert [m for _, m in out if isinstance(m, Request)] == []
    assert net.proxy.counters["dialog_refused"] == 1


def test_unknown_dialog_with_a_forged_route_of_ours_goes_nowhere() -> None:
    net = Net()
    for route in (
        "<sip:127.0.0.1:5060;lr>",  # ours, unsigned
        "<sip:127.0.0.1:5060;lr;tgd=00;tgm=00000000000000000000000000000000>",  # bad MAC
        "<sip:192.0.2.66:5060;lr>",  # someone else's
    ):
        net.feed(in_dialog("BYE", route=route), CALLER)
        assert responses(net.take(), CALLER) == [481]
    assert net.proxy.counters["dialog_refused"] == 3


def test_a_signature_for_one_dialog_does_not_open_another() -> None:
    net = Net(secret=SECRET)
    sent = answered_call(net, "real-1")
    rr = sent.get("record-route")
    assert rr is not None
    # Same Route, another Call-ID (a dialog the router never set up).
    net.feed(in_dialog("BYE", call_id="other-1", route=rr, to_tag="carrier"), CALLER)
    assert responses(net.take(), CALLER) == [481]
    # Same Call-ID, another caller tag.
    evil = in_dialog("BYE", call_id="real-1", route=rr, from_tag="evil", to_tag="carrier")
    net.feed(evil, CALLER)
    assert responses(net.take(), CALLER) == [481]


# -- 2. ACK ------------------------------------------------------------------------------------
def test_ack_of_no_transaction_and_no_dialog_is_absorbed() -> None:
    net = Net()
    for ruri in ("sip:x@127.0.0.1:5071", "sip:x@192.0.2.66", "sip:x@127.0.0.1:5060"):
        net.feed(in_dialog("ACK", ruri=ruri, body="v=0\r\n"), CALLER)
        net.feed(in_dialog("ACK", ruri=ruri, route="<sip:127.0.0.1:5061;lr>"), CALLER)
    assert net.take() == []
    assert net.proxy.counters["acks_absorbed"] == 6


def test_ack_from_a_source_not_in_allow_goes_nowhere() -> None:
    net = Net(secret=SECRET)
    sent = answered_call(net, "ack-1")
    rr = sent.get("record-route")
    ack = in_dialog("ACK", call_id="ack-1", route=rr, to_tag="carrier")
    net.feed(ack, STRANGER)
    assert net.take() == []
    net.feed(ack, CALLER)  # the same ACK from the caller goes on
    assert only_request(net.take(), A, "ACK")


def test_ack_with_max_forwards_zero_is_not_relayed() -> None:
    net = Net()
    sent = answered_call(net, "mf-1")
    rr = sent.get("record-route")
    net.feed(in_dialog("ACK", call_id="mf-1", route=rr, to_tag="carrier", mf=0), CALLER)
    assert net.take() == []
    assert net.proxy.counters["acks_absorbed"] == 1


def test_ack_loop_between_two_listen_addresses_is_impossible() -> None:
    net = Net()
    net.proxy.set_own_addresses([("127.0.0.1", 5060), ("127.0.0.1", 5061)])
    ack = in_dialog(
        "ACK", ruri="sip:x@127.0.0.1:5061", route="<sip:127.0.0.1:5061;lr>", to_tag="t"
    )
    for _ in range(3):
        net.feed(ack, CALLER)
    assert net.take() == []


# -- 3. sources: allow, carriers by address and port ------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        invite(),
        in_dialog("BYE"),
        in_dialog("ACK"),
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bK1\r\n"
        b"From: <sip:x@y>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
def test_a_source_not_in_allow_gets_nothing(data: bytes) -> None:
    net = Net()
    net.feed(data, STRANGER)
    assert net.take() == []
    assert net.proxy.counters["forbidden_source"] == 1


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_stream_source_not_in_allow_gets_nothing(transport: str) -> None:
    # Over TLS as over UDP: a certificate proves nothing about being allowed to call.
    net = Net()
    net.feed(invite(), Flow(transport, STRANGER.addr))
    assert net.take() == []
    assert net.proxy.counters["forbidden_source"] == 1


def test_a_carrier_over_tls_is_known_by_transport_too() -> None:
    # A carrier's address on another transport is a stranger's: no peer by address alone.
    net = Net(allow=())
    net.feed(invite(), Flow("tls", A.addr))
    assert net.take() == []
    assert net.proxy.counters["forbidden_source"] == 1


def test_a_carrier_is_known_by_address_and_port() -> None:
    net = Net(allow=())  # only the carriers may send
    same_host_other_port = Flow("udp", ("127.0.0.1", 5999))
    net.feed(invite(), same_host_other_port)
    assert net.take() == []
    assert net.proxy.counters["forbidden_source"] == 1


def test_a_carriers_invite_never_goes_back_out_to_a_carrier() -> None:
    net = Net()
    net.feed(invite("hairpin-1"), A)  # from carrier a's own address and port
    out = net.take()
    assert [m for _, m in out if isinstance(m, Request)] == []
    assert responses(out, A)[-1] == 403
    assert net.proxy.counters["calls_hairpin_refused"] == 1


def test_a_transit_carrier_may_send_calls_out() -> None:
    net = Net()
    uri = parse_uri("sip:127.0.0.1:5071")
    net.proxy.reconfigure(
        net.proxy.settings,
        [Target("a", uri, A, transit=True), target("b", B), target("c", C)],
    )
    net.feed(invite("transit-1"), A)
    assert only_request(net.take(), A, "INVITE")  # the plan's first carrier is a itself


def test_a_carriers_invite_goes_to_pools() -> None:
    net = Net()
    pbx = Flow("udp", ("127.0.0.1", 5081))
    net.proxy.reconfigure(
        net.proxy.settings,
        [target("a", A), Target("pbx1", parse_uri("sip:127.0.0.1:5081"), pbx, kind=POOL_MEMBER)],
    )
    net.feed(invite("did-1"), A)
    out = net.take()
    assert [f for f, m in out if isinstance(m, Request)] == [pbx]


# -- 4. signed Record-Route: a dialog survives a restart --------------------------------------
def test_bye_after_a_restart_follows_the_signed_record_route_both_ways() -> None:
    first = Net(secret=SECRET)
    sent = answered_call(first, "restart-1")
    rr = sent.get("record-route")
    assert rr is not None
    second = Net(secret=SECRET)  # a new process with the same secret: no dialog table
    bye = in_dialog(
        "BYE",
        call_id="restart-1",
        ruri="sip:carrier@127.0.0.1:5071",
        route=rr,
        to_tag="carrier",
    )
    second.feed(bye, CALLER)
    fwd = only_request(second.take(), A, "BYE")
    assert not fwd.has("route")
    second.feed(reply(fwd, 200), A)
    assert responses(second.take(), CALLER) == [200]
    # The carrier's BYE (From: the carrier's tag, To: the caller's) goes to the caller.
    from_carrier = in_dialog(
        "BYE",
        call_id="restart-1",
        ruri="sip:agent@127.0.0.1:5090",
        route=rr,
        from_tag="carrier",
        to_tag="caller1",
    )
    second.feed(from_carrier, A)
    assert only_request(second.take(), CALLER, "BYE")


def test_another_secret_does_not_verify() -> None:
    first = Net(secret=SECRET)
    rr = answered_call(first, "restart-2").get("record-route")
    second = Net(secret=b"z" * 32)
    second.feed(in_dialog("BYE", call_id="restart-2", route=rr, to_tag="carrier"), CALLER)
    assert responses(second.take(), CALLER) == [481]


def test_the_destination_comes_from_the_signature_not_the_request_uri() -> None:
    net = Net(secret=SECRET)
    rr = answered_call(net, "ruri-1").get("record-route")
    restarted = Net(secret=SECRET)
    bye = in_dialog("BYE", call_id="ruri-1", ruri="sip:x@192.0.2.66", route=rr, to_tag="carrier")
    restarted.feed(bye, CALLER)
    out = restarted.take()
    assert [f for f, m in out if isinstance(m, Request)] == [A]


# -- 5. bounded dialogs, draining, limits, robustness -------------------------------------------
def test_an_abandoned_dialog_is_ended_after_dialog_max_age_and_frees_capacity() -> None:
    net, health = net_with_room_for_one_call_on_a(dialog_max_age=120.0)
    answered_call(net, "held-1")
    assert health.overflow("a", net.now) is not None  # a is full with the one call
    net.advance(200.0)  # no BYE ever came
    assert len(net.proxy.dialogs) == 0
    assert net.proxy.counters["dialogs_expired"] == 1
    assert health.overflow("a", net.now) is None


def test_draining_router_answers_new_calls_503_with_retry_after() -> None:
    net = Net()
    net.proxy.drain()
    net.feed(invite("late-1"), CALLER)
    out = net.take()
    assert responses(out, CALLER) == [503]
    assert [m for _, m in out if isinstance(m, Request)] == []
    assert out[0][1].get("retry-after") == "1"


def test_server_header_only_when_configured() -> None:
    quiet = Net()
    quiet.feed(invite("q", mf=0), CALLER)
    [(_, response)] = quiet.take()
    assert not response.has("server")
    named = Net(server_header="acme-sbc")
    named.feed(invite("n", mf=0), CALLER)
    [(_, response)] = named.take()
    assert response.get("server") == "acme-sbc"


def test_a_message_over_the_size_limit_gets_513_with_a_warning() -> None:
    from trunkguard.sip import Limits

    net = Net(limits=Limits(max_message=2000))
    big = invite("big-1", extra="X-Padding: " + "p" * 3000 + "\r\n")
    net.feed(big, CALLER)
    [(flow, response)] = net.take()
    assert flow == CALLER and isinstance(response, Response) and response.status == 513
    assert "2000 bytes" in (response.get("warning") or "")
    assert net.proxy.counters["rejected_513"] == 1


def test_too_many_headers_gets_400_with_a_warning() -> None:
    from trunkguard.sip import Limits

    net = Net(limits=Limits(max_headers=20))
    many = invite("many-1", extra="".join(f"X-H{i}: {i}\r\n" for i in range(40)))
    net.feed(many, CALLER)
    [(_, response)] = net.take()
    assert isinstance(response, Response) and response.status == 400
    assert "header lines" in (response.get("warning") or "")


def test_a_failing_timer_does_not_stop_the_others() -> None:
    queue = TimerQueue()
    fired: list[float] = []

    def boom(now: float) -> None:
        raise OSError("sendto failed")

    queue.schedule(1.0, boom)
    queue.schedule(2.0, fired.append)
    queue.run_due(3.0)
    assert fired == [3.0]
    assert queue.failed == 1


def test_own_addresses_are_never_a_next_hop() -> None:
    proxy = Proxy(
        ProxySettings(advertise=("127.0.0.1", 5060), allow=(ipaddress.ip_network("0.0.0.0/0"),)),
        [],
    )
    proxy.set_own_addresses([("0.0.0.0", 5062), ("127.0.0.1", 5061)])
    admission = proxy.admission
    assert admission.is_own(("127.0.0.1", 5060))
    assert admission.is_own(("127.0.0.1", 5061))
    assert admission.is_own(("127.0.0.5", 5062))  # a wildcard listener: loopback is us
    assert not admission.is_own(("127.0.0.1", 5071))
    assert not admission.is_own(("192.0.2.1", 5061))


def test_the_core_queues_its_events_for_the_adapter() -> None:
    net = Net()
    net.proxy.receive(invite("ev-1"), CALLER, net.now)
    [sent] = [parse_message(d) for f, d in net.proxy.outbox if f == A]
    assert isinstance(sent, Request)
    net.proxy.receive(reply(sent, 503), A, net.now)
    events = net.proxy.take_events()
    assert [(e.target, e.status) for e in events if isinstance(e, AttemptRecord)] == [("a", 503)]
    assert net.proxy.take_events() == []


def test_the_edge_settings_come_from_the_config() -> None:
    from trunkguard.config import parse_config

    config = parse_config(
        """\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
reject: 403
server_header: acme-sbc
secret: "0123456789abcdef0123456789abcdef"
failover: {dialog_max_age: 600}
shutdown: {drain_timeout: 3}
carriers:
  - {name: a, uri: "sip:127.0.0.1:5071", transit: true}
  - {name: b, uri: "sip:127.0.0.1:5072"}
""",
        "edge.yaml",
    )
    settings = config.proxy_settings()
    assert (settings.reject, settings.server_header) == ("403", "acme-sbc")
    assert settings.secret == b"0123456789abcdef0123456789abcdef"
    assert (settings.dialog_max_age, settings.drain_timeout) == (600.0, 3.0)
    assert [(t.name, t.transit) for t in config.targets()] == [("a", True), ("b", False)]


def keepalives(out: list[tuple[Flow, Request | Response]]) -> dict[Flow, Request]:
    return {f: m for f, m in out if isinstance(m, Request) and m.method == "OPTIONS"}


def test_in_dialog_keepalives_end_a_dead_dialog_with_bye_both_ways() -> None:
    net, health = net_with_room_for_one_call_on_a(dialog_keepalive=30.0)
    answered_call(net, "ka-1")
    net.advance(30.0)
    probes = keepalives(net.take())
    assert set(probes) == {CALLER, A}
    to_carrier = probes[A]
    assert to_carrier.cseq.number == 0  # moves no CSeq state of the endpoints
    assert to_carrier.from_.tag == "caller1" and to_carrier.to.tag == "carrier"
    assert str(to_carrier.request_uri) == "sip:carrier@127.0.0.1:5071"  # the 2xx's Contact
    to_caller = probes[CALLER]
    assert to_caller.from_.tag == "carrier" and to_caller.to.tag == "caller1"
    net.feed(reply(to_carrier, 200), A)
    net.feed(reply(to_caller, 500), CALLER)  # "CSeq out of order" is a sign of life too
    assert len(net.proxy.dialogs) == 1
    went_silent = net.now
    net.advance(30.0)
    probes = keepalives(net.take())
    net.feed(reply(probes[CALLER], 200), CALLER)  # the caller answers, the carrier no more
    ended = None
    for _ in range(120):
        net.advance(1.0)
        byes = [(f, m) for f, m in net.take() if isinstance(m, Request) and m.method == "BYE"]
        if byes:
            ended = net.now
            break
    assert ended is not None and ended - went_silent <= 120.0
    assert {f for f, _ in byes} == {CALLER, A}
    bye_to_caller = next(m for f, m in byes if f == CALLER)
    assert bye_to_caller.cseq.number >= 1 and bye_to_caller.to.tag == "caller1"
    assert len(net.proxy.dialogs) == 0
    assert health.overflow("a", net.now) is None  # the carrier's capacity is free again
    assert net.proxy.counters["dialogs_ended_dead"] == 1


def test_a_481_to_a_keepalive_ends_the_dialog_at_once() -> None:
    net = Net(dialog_keepalive=30.0)
    answered_call(net, "ka-2")
    net.advance(30.0)
    probes = keepalives(net.take())
    net.feed(reply(probes[CALLER], 481), CALLER)
    byes = [f for f, m in net.take() if isinstance(m, Request) and m.method == "BYE"]
    assert sorted(byes, key=str) == sorted([CALLER, A], key=str)
    assert len(net.proxy.dialogs) == 0


def test_no_keepalives_unless_configured() -> None:
    net = Net()
    answered_call(net, "ka-3")
    net.advance(600.0)
    assert keepalives(net.take()) == {}


def test_a_strangers_481_to_a_keepalive_ends_nothing() -> None:
    net = Net(dialog_keepalive=30.0)
    answered_call(net, "ka-4")
    net.advance(30.0)
    probes = keepalives(net.take())
    net.feed(reply(probes[CALLER], 481), STRANGER)  # the right branch, from the wrong place
    assert net.take() == []
    assert len(net.proxy.dialogs) == 1


def test_a_cancelled_branch_that_never_answers_is_given_up_after_64_t1() -> None:
    net = Net()
    net.feed(invite("cancel-silent"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 180), A)
    cancel = invite("cancel-silent").replace(b"INVITE sip:", b"CANCEL sip:", 1)
    cancel = cancel.replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    net.feed(cancel, CALLER)
    assert only_request(net.take(), A, "CANCEL")  # and a never answers 487
    net.advance(33.0)
    assert net.proxy.clients == {}
    assert net.proxy.counters["cancelled_branches_given_up"] == 1


def test_icmp_on_in_dialog_traffic_takes_the_carrier_out_at_once() -> None:
    from trunkguard.health import State

    net = Net()
    health = HealthEngine(["a", "b", "c"])
    net.proxy.health = health
    answered_call(net, "dead-1")
    bye = in_dialog("BYE", call_id="dead-1", ruri="sip:carrier@127.0.0.1:5071", to_tag="carrier")
    net.feed(bye, CALLER)
    assert only_request(net.take(), A, "BYE")
    net.proxy.transport_error(A, net.now)  # the BYE met a closed port
    assert health.state("a") is State.DOWN
    assert [(c.target, c.new) for c in net.changes] == [("a", State.DOWN)]
    assert responses(net.take(), CALLER) == [502]  # the caller's BYE is answered
