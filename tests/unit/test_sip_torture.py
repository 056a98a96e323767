"""RFC 4475 torture messages: accept every valid one, reject every invalid one with a reason."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sipgen import exercise, torture, torture_names

from trunkguard.sip import ParseError, Request, Response, make_response, parse_message

VALID = "valid"

# name -> VALID, or the status a server should answer the invalid message with.
EXPECTED: dict[str, str | int] = {
    # §3.1.1 valid messages, and the §3.2-3.4 ones a proxy must accept.
    "wsinv": VALID,
    "intmeth": VALID,
    "esc01": VALID,
    "escnull": VALID,
    "esc02": VALID,
    "lwsdisp": VALID,
    "longreq": VALID,
    "dblreq": VALID,
    "semiuri": VALID,
    "transports": VALID,
    "mpart01": VALID,
    "unreason": VALID,
    "noreason": VALID,
    "badbranch": VALID,
    "unkscm": VALID,
    "novelsc": VALID,
    "unksm2": VALID,
    "bext01": VALID,
    "invut": VALID,
    "regaut01": VALID,
    "bcast": VALID,
    "zeromf": VALID,
    "cparam01": VALID,
    "cparam02": VALID,
    "regescrt": VALID,
    "sdp01": VALID,
    "inv2543": VALID,
    # §3.1.2 invalid messages (and test.dat, which is not SIP at all).
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": 400,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "baddate": 400,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": 400,
    "insuf": 400,
    "multi01": 400,
    "mcl01": 400,
    "test": 400,
}


# Invalid per RFC 4475, in headers a proxy does not use: check() (RFC 3261 §16.3, what the
# proxy acts on) lets them through to be relayed untouched; validate() (strict) rejects them.
RELAYED_BY_CHECK = {"baddate", "badinv01", "regbadct"}


def test_every_torture_file_is_in_the_table() -> None:
    names = torture_names()
    assert len(names) == 50
    assert set(names) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(n for n, v in EXPECTED.items() if v == VALID))
def test_valid_message_is_accepted(name: str) -> None:
    msg = parse_message(torture(name))
    msg.check()
    msg.validate()
    # Every field a proxy reads is there and parses.
    assert msg.call_id
    assert msg.vias
    assert msg.top_via == msg.vias[0]
    _ = msg.from_, msg.to, msg.cseq, msg.max_forwards, msg.routes, msg.record_routes
    if msg.has("contact"):
        _ = msg.contacts
    exercise(msg)


@pytest.mark.parametrize("name", sorted(n for n, v in EXPECTED.items() if v != VALID))
def test_invalid_message_is_rejected_with_a_reason(name: str) -> None:
    with pytest.raises(ParseError) as info:
        msg = parse_message(torture(name))
        msg.validate()
    assert info.value.reason.strip()
    assert str(info.value).strip()
    assert info.value.status == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(n for n, v in EXPECTED.items() if v != VALID))
def test_check_rejects_what_the_proxy_uses(name: str) -> None:
    try:
        msg = parse_message(torture(name))
    except ParseError:
        assert name not in RELAYED_BY_CHECK
        return
    if name in RELAYED_BY_CHECK:
        msg.check()
        with pytest.raises(ParseError):
            msg.validate()
    else:
        with pytest.raises(ParseError) as info:
            msg.check()
        assert info.value.status == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_torture_message_survives_every_accessor(name: str) -> None:
    try:
        msg = parse_message(torture(name))
    except ParseError:
        return
    exercise(msg)


def _requests() -> list[str]:
    out = []
    for name in sorted(EXPECTED):
        try:
            msg = parse_message(torture(name))
        except ParseError:
            continue
        if isinstance(msg, Request):
            out.append(name)
    return out


@pytest.mark.parametrize("name", _requests())
def test_a_torture_request_can_be_answered_400(name: str) -> None:
    req = parse_message(torture(name))
    assert isinstance(req, Request)
    resp = parse_message(make_response(req, 400))
    assert isinstance(resp, Response)
    assert resp.status == 400
    assert resp.reason == "Bad Request"
    # The answer goes back along the request's Vias and names its transaction.
    assert resp.raw_lines("via") == req.raw_lines("via")
    assert resp.get("cseq") == req.get("cseq")
    if req.has("call-id"):
        assert resp.get("call-id") == req.get("call-id")
        try:
            call_id = req.call_id
        except ParseError:
            return  # e.g. multi01: two Call-IDs; the first one is echoed
        assert resp.call_id == call_id


@pytest.mark.parametrize("name", ["clerr", "ncl", "mcl01", "lwsruri", "lwsstart", "trws"])
def test_a_request_that_fails_to_parse_keeps_enough_to_answer_400(name: str) -> None:
    data = torture(name)
    with pytest.raises(ParseError) as info:
        parse_message(data)
    partial = info.value.partial
    assert partial is not None
    resp = parse_message(make_response(partial, 400))
    assert isinstance(resp, Response)
    assert resp.status == 400
    assert resp.call_id == partial.call_id
    assert resp.raw_lines("via") == partial.raw_lines("via")
    assert resp.call_id.encode() in data


@pytest.mark.parametrize("name", ["test", "bigcode"])
def test_no_partial_request_for_responses_or_non_sip(name: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(torture(name))
    assert info.value.partial is None


def test_the_torture_requests_include_the_invalid_ones_a_proxy_can_answer() -> None:
    answerable = set(_requests())
    assert {"badinv01", "quotbal", "baddn", "badvers", "insuf", "multi01", "escruri"} <= answerable
    assert "wsinv" in answerable


# -- specific fields of valid messages ---------------------------------------------------
def _wsinv(msg: Request | Response) -> None:
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.request_uri.params == {"unknownparam": None}
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    assert msg.max_forwards == 68
    assert msg.to.tag == "1918181833n"
    assert msg.to.uri.user == "vivekg"
    assert msg.from_.tag == "98asjd8"
    assert msg.from_.display == '"J Rosenberg \\\\\\""'
    # One 'Via' line and one compact 'v:' line holding two values.
    assert len(msg.get_all("via")) == 2
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.get("s") == ""
    assert msg.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.routes[0].uri.host == "services.example.com"
    assert msg.routes[0].uri.params["unknownwith"] == "value"
    (contact,) = msg.contacts
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(msg.body) == 150


def _esc01(msg: Request | Response) -> None:
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"
    assert msg.raw_lines("call-id") == ["i: esc01.239409asdfakjkn23onasd0-3234"]
    assert msg.get("content-type") == "application/sdp"  # from the compact 'C:'
    assert isinstance(msg, Request)
    assert msg.request_uri.user == "sips%3Auser%40example.com"
    assert msg.to.uri.user == "%75se%72"


def _longreq(msg: Request | Response) -> None:
    assert len(msg.vias) == 34
    assert len(msg.values("via")) == 34
    assert msg.vias[0].host == "sip33.example.com"
    assert msg.to.uri.port == 6000
    assert msg.call_id.startswith("longreq.onereallyreally")


def _unreason(msg: Request | Response) -> None:
    assert isinstance(msg, Response)
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def _noreason(msg: Request | Response) -> None:
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (100, "")


def _transports(msg: Request | Response) -> None:
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def _zeromf(msg: Request | Response) -> None:
    assert msg.max_forwards == 0


def _dblreq(msg: Request | Response) -> None:
    # Content-Length: 0 ends the datagram's message; the INVITE after it is not the body.
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # from 'I:'


def _semiuri(msg: Request | Response) -> None:
    assert isinstance(msg, Request)
    assert msg.request_uri.user == "user;par=u%40example.net"
    assert msg.request_uri.host == "example.com"
    assert msg.request_uri.params == {}


def _intmeth(msg: Request | Response) -> None:
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq.method == msg.method
    assert msg.request_uri.host == "example.com"


def _unkscm(msg: Request | Response) -> None:
    assert isinstance(msg, Request)
    assert msg.request_uri.scheme == "nobodyknowsthisscheme"
    assert not msg.request_uri.is_sip
    assert msg.request_uri.opaque == "totallyopaquecontent"


def _mpart01(msg: Request | Response) -> None:
    assert msg.get("content-length") == str(len(msg.body))
    assert b"\x00" in msg.body or any(b > 127 for b in msg.body)
    assert msg.vias[0].params["rport"] is None


def _bcast(msg: Request | Response) -> None:
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]


def _escnull(msg: Request | Response) -> None:
    assert [c.uri.user for c in msg.contacts] == ["%00", "%00%00"]


def _regescrt(msg: Request | Response) -> None:
    (contact,) = msg.contacts
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"


def _badbranch(msg: Request | Response) -> None:
    assert msg.top_via.branch == "z9hG4bK"


FIELDS: dict[str, Callable[[Request | Response], None]] = {
    "wsinv": _wsinv,
    "esc01": _esc01,
    "longreq": _longreq,
    "unreason": _unreason,
    "noreason": _noreason,
    "transports": _transports,
    "zeromf": _zeromf,
    "dblreq": _dblreq,
    "semiuri": _semiuri,
    "intmeth": _intmeth,
    "unkscm": _unkscm,
    "mpart01": _mpart01,
    "bcast": _bcast,
    "escnull": _escnull,
    "regescrt": _regescrt,
    "badbranch": _badbranch,
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_valid_message_fields(name: str) -> None:
    assert EXPECTED[name] == VALID
    msg = parse_message(torture(name))
    msg.validate()
    FIELDS[name](msg)


@pytest.mark.parametrize(
    ("name", "header", "words"),
    [
        ("badvers", None, "version"),
        ("clerr", "Content-Length", "9999"),
        ("ncl", "Content-Length", "-999"),
        ("mcl01", "Content-Length", "more than once"),
        ("multi01", "Call-ID", "more than once"),
        ("insuf", "Call-ID", "missing"),
        ("mismatch01", "CSeq", "OPTIONS"),
        ("scalar02", "CSeq", "too large"),
        ("scalarlg", "CSeq", "too large"),
        ("baddate", "Date", "GMT"),
        ("escruri", None, "Request-URI"),
        ("ltgtruri", None, "Request-URI"),
        ("quotbal", "To", "quoted"),
        ("baddn", "From", "quotes"),
        ("bigcode", None, "status"),
        ("badinv01", "Via", "Via"),
        ("regbadct", "Contact", "<>"),
    ],
)
def test_invalid_message_reason_names_the_problem(
    name: str, header: str | None, words: str
) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(torture(name)).validate()
    assert info.value.header == header
    assert words in info.value.reason


def test_raw_torture_bytes_round_trip_for_valid_messages_with_exact_length() -> None:
    # Valid messages whose Content-Length covers the whole rest are relayed byte for byte.
    checked = 0
    for name in (n for n, v in EXPECTED.items() if v == VALID):
        data = torture(name)
        msg = parse_message(data)
        if msg.has("content-length") and data.endswith(msg.body) and data[:1] != b"\r":
            head = data[: data.index(b"\r\n\r\n") + 4]
            if len(head) + len(msg.body) == len(data):
                assert msg.to_bytes() == data, name
                checked += 1
    assert checked >= 15
