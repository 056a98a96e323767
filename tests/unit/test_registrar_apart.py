"""A registrar apart from the carrier's servers: REGISTER goes there, only its answers come back.

The registrar is no target: its responses are taken (the REGISTER's answer), but a request
from its address is a stranger's, and goes nowhere.
"""

from __future__ import annotations

import random

from test_proxy_core import CALLER, B, Net, invite, only_request, reply

from trunkguard.health import HealthEngine
from trunkguard.proxy import Flow
from trunkguard.register import REGISTERED, RegisterSettings, Registrations
from trunkguard.sip import Request, Response, parse_message
from trunkguard.sip._digest import Credentials

REGISTRAR = Flow("udp", ("192.0.2.50", 5060))  # outside allow (127.0.0.0/8)


def _setup() -> tuple[Net, Registrations]:
    net = Net()
    health = HealthEngine(["a", "b", "c"])
    net.proxy.health = health
    settings = RegisterSettings(
        credentials=Credentials("trunk-a", "pw-apart"),
        registrar="sip:192.0.2.50",
        aor="sip:trunk-a@192.0.2.50",
        contact_user="trunk-a",
        expires=60,
        flow=REGISTRAR,
    )
    regs = Registrations(net.proxy, health, {"a": settings}, random.Random(1))
    regs.start(net.now)
    return net, regs


def test_register_goes_to_the_registrar_and_its_answer_is_taken() -> None:
    net, regs = _setup()
    net.advance(0.5)
    sent = [(f, m) for f, m in net.take() if isinstance(m, Request) and m.method == "REGISTER"]
    assert [f for f, _ in sent] == [REGISTRAR]
    (_, register) = sent[0]
    net.feed(
        reply(register, 200, extra="Contact: <sip:trunk-a@127.0.0.1:5060>;expires=60\r\n"),
        REGISTRAR,
    )
    assert regs.by_carrier["a"].state == REGISTERED
    assert net.proxy.counters["forbidden_source"] == 0


def test_a_request_from_the_registrar_address_is_a_strangers() -> None:
    net, _ = _setup()
    net.take()
    invite = (
        b"INVITE sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bK-apart\r\n"
        b"From: <sip:x@192.0.2.50>;tag=x1\r\nTo: <sip:15551234567@127.0.0.1>\r\n"
        b"Call-ID: apart-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        b"Contact: <sip:x@192.0.2.50>\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(parse_message(invite), Request)
    net.feed(invite, REGISTRAR)
    assert net.take() == []  # no answer, no INVITE to any carrier
    assert net.proxy.counters["forbidden_source"] == 1


def test_the_registrar_cannot_answer_a_call_in_its_stead() -> None:
    net, _ = _setup()
    net.take()
    net.feed(invite("apart-call"), CALLER)
    # Carrier a waits for its first registration: the call goes to b.
    sent = only_request(net.take(), B, "INVITE")
    # The registrar's address, with the INVITE's branch: matched to no transaction of its.
    net.feed(reply(sent, 200), REGISTRAR)
    assert [m for f, m in net.take() if f == CALLER and isinstance(m, Response)] == []
    assert net.proxy.counters["stray_responses"] == 1
    net.feed(reply(sent, 200), B)  # the carrier's own answer goes up
    assert [m.status for f, m in net.take() if f == CALLER and isinstance(m, Response)] == [200]
