"""Inputs from fuzzing (bench/fuzz.py): what the parser and the proxy core must do with them.

Each is one mutation away from a valid call: a precise 400, a drop, or the bytes relayed as
they came, never an exception.
"""

from __future__ import annotations

import re

import pytest
from sipgen import exercise
from test_proxy_core import CALLER, A, Net, invite, only_request, reply

from trunkguard.sip import Limits, ParseError, Request, Response, parse_message


def answers(net: Net) -> list[tuple[int, str | None]]:
    out = net.take()
    return [(m.status, m.get("warning")) for f, m in out if f == CALLER and isinstance(m, Response)]


# An INVITE with one of its lines changed, and the 400 and Warning the caller gets for it.
BAD_INVITES = {
    "cseq-overflow": (b"CSeq: 1 INVITE", b"CSeq: 4294967296 INVITE", "too large"),
    "via-open-bracket": (b"UDP 127.0.0.1:5090", b"UDP [::1:5090", "Via: bad host '['"),
    "via-port-overflow": (b"127.0.0.1:5090;", b"127.0.0.1:99999;", "Via: bad port '99999'"),
    "max-forwards-negative": (b"Max-Forwards: 70", b"Max-Forwards: -1", "bad value '-1'"),
    "content-length-negative": (b"Content-Length: 63", b"Content-Length: -1", "bad value '-1'"),
    "content-length-past-body": (b"Content-Length: 63", b"Content-Length: 99999", "63 follow"),
    "ruri-empty-host": (b"sip:15551234567@127.0.0.1:5060 ", b"sip:15551234567@:5060 ", "bad host"),
}


@pytest.mark.parametrize("name", sorted(BAD_INVITES))
def test_bad_invite_gets_a_400_that_names_why(name: str) -> None:
    old, new, why = BAD_INVITES[name]
    data = invite(f"fz-{name}")
    assert old in data
    data = data.replace(old, new, 1)
    # Content-Length is checked while framing, the others when the proxy first reads them.
    with pytest.raises(ParseError, match=re.escape(why)):
        parse_message(data).check()
    net = Net()
    net.feed(data, CALLER)
    [(status, warning)] = answers(net)
    assert status == 400
    assert warning is not None and why in warning


def test_invite_without_via_is_dropped() -> None:
    data = b"\r\n".join(line for line in invite("fz-novia").split(b"\r\n") if b"Via:" not in line)
    net = Net()
    net.feed(data, CALLER)
    assert net.take() == []  # nowhere to send an answer
    assert net.proxy.counters["bad_requests"] == 1


def test_bytes_that_are_not_utf8_in_from_are_relayed_as_they_came() -> None:
    data = invite("fz-utf8").replace(b"<sip:agent@", b'"\xff\xfe" <sip:agent@', 1)
    exercise(parse_message(data))
    net = Net()
    net.feed(data, CALLER)
    out = net.take()
    sent = only_request(out, A, "INVITE")
    assert sent.to_bytes().count(b'From: "\xff\xfe" <sip:agent@127.0.0.1>;tag=caller1') == 1


def test_carrier_to_tag_that_is_not_utf8_reaches_the_caller_unchanged() -> None:
    net = Net()
    net.feed(invite("fz-tag"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 200, to_tag="TAG").replace(b"tag=TAG", b"tag=\xff\xfe"), A)
    [(flow, ok)] = net.proxy.outbox
    assert flow == CALLER and ok.startswith(b"SIP/2.0 200 ")
    assert b";tag=\xff\xfe\r\n" in ok


def test_response_whose_top_via_does_not_parse_is_dropped() -> None:
    net = Net()
    net.feed(invite("fz-via"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    bad = reply(sent, 200).replace(b"Via: ", b"Via: SIP/2.0/UDP [::1;branch=z9hG4bKx\r\nVia: ", 1)
    net.feed(bad, A)
    assert net.take() == []
    assert net.proxy.counters["bad_responses"] == 1


def test_message_over_the_size_limit_is_answered_from_what_was_read() -> None:
    limits = Limits(max_message=300)
    data = invite("fz-big")
    with pytest.raises(ParseError) as caught:
        parse_message(data, limits)
    partial = caught.value.partial
    assert isinstance(partial, Request) and partial.call_id == "fz-big"
    exercise(partial)
    net = Net(limits=limits)
    net.feed(data, CALLER)
    [(status, _)] = answers(net)
    assert status == 513


def test_a_response_with_our_branch_but_another_methods_cseq_is_a_stray() -> None:
    """RFC 3261 §17.1.3: a response matches a client transaction by branch *and* method."""
    from test_proxy_core import CALLER, A, Net, invite, only_request, reply, responses

    net = Net()
    net.feed(invite("m1"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 180).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), A)
    assert responses(net.take(), CALLER) == [] and net.proxy.counters["stray_responses"] == 1
    net.feed(reply(to_a, 180), A)
    assert responses(net.take(), CALLER) == [180]


def test_an_invite_with_a_malformed_route_is_refused_before_its_call_starts() -> None:
    """Found by fuzzing: the Route was parsed only as the INVITE went out, after the call
    had moved to TRYING, and the ParseError left it there without a branch: its CANCEL
    then failed an assertion."""
    from test_proxy_core import CALLER, A, Net, invite, responses

    net = Net()
    net.feed(invite("fz1", extra="Route\t: application/sdp\r\n"), CALLER)
    out = net.take()
    assert responses(out, CALLER) == [400] and net.sent_to(A, out) == []
    assert "route" in (out[0][1].get("warning") or "").lower()
    assert not [e for e in net.proxy.servers.values() if e.owner is not None]
    cancel = (
        b"CANCEL sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-fz1\r\n"
        b"From: <sip:agent@127.0.0.1>;tag=caller1\r\nTo: <sip:15551234567@127.0.0.1>\r\n"
        b"Call-ID: fz1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    net.feed(cancel, CALLER)
    assert responses(net.take(), CALLER) == [481]
