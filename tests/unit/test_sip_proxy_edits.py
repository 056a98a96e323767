"""Proxy edits (RFC 3261 §16.6, §16.7): only what a proxy must touch changes."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sipgen import ViaParts, build, route_values, torture, via_values

from trunkguard.sip import (
    Header,
    ParseError,
    Request,
    Response,
    make_ack,
    make_cancel,
    make_request,
    make_response,
    parse_message,
)

NEW_VIA = "SIP/2.0/UDP proxy.example.net:5060;branch=z9hG4bKproxy1;rport"
NEW_URI = "sip:+15551234567@carrier.example.com:5070;transport=udp"
RR = "<sip:proxy.example.net;lr>"

# A wsinv-like request: folded lines, compact forms, odd spacing, a body.
WSINV_LIKE_HEAD = [
    "TO :",
    " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
    'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
    "  ;",
    "  tag = 98asjd8",
    "MaX-fOrWaRdS: 0068",
    "Call-ID: wsinv.ndaksdj@192.0.2.1",
    "Content-Length   : 14",
    "cseq: 0009",
    "  INVITE",
    "Via  : SIP  /   2.0",
    " /UDP",
    "    192.0.2.2;branch=390skdjuw",
    "s :",
    "NewFangledHeader:   newfangled value",
    " continued newfangled value",
    "UnknownHeaderWithUnusualValue: ;;,,;;,;",
    "Content-Type: application/sdp",
]
WSINV_LIKE_TAIL = [
    "v:  SIP  / 2.0  / TCP     spindle.example.com   ;",
    "  branch  =   z9hG4bK9ikj8  ,",
    " SIP  /    2.0   / UDP  192.168.255.111   ; branch=",
    " z9hG4bK30239",
    'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
    "      newvalue ;",
    "  secondparam ; q = 0.33",
]
BODY = b"v=0\r\n\r\nbinary\xff"
START = "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0"

ROUTES_JOINED = [
    "Route:",
    " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>,",
    "  <sip:second.example.com;lr>",
    "Route: <sip:third.example.com;lr>",
]
ROUTES_REPEATED = [
    "Route:",
    " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>",
    "Route: <sip:second.example.com;lr>",
    "Route: <sip:third.example.com;lr>",
]
ROUTE_VALUES = [
    "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>",
    "<sip:second.example.com;lr>",
    "<sip:third.example.com;lr>",
]


def wsinv_like(routes: list[str]) -> bytes:
    return build(START, [*WSINV_LIKE_HEAD, *routes, *WSINV_LIKE_TAIL], BODY)


def request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def untouched(headers: list[Header]) -> list[str]:
    """Raw text of every header line a proxy must relay unchanged, in order."""
    edited = {"max-forwards", "route", "record-route"}
    return [h.raw for h in headers if h.name not in edited]


@pytest.mark.parametrize("routes", [ROUTES_JOINED, ROUTES_REPEATED], ids=["joined", "repeated"])
def test_forwarded_changes_only_what_a_proxy_must(routes: list[str]) -> None:
    orig = request(wsinv_like(routes))
    orig.check()
    assert orig.values("route") == ROUTE_VALUES

    out_bytes = orig.forwarded(
        via=NEW_VIA, uri=NEW_URI, max_forwards=67, pop_route=True, record_route=RR
    )
    out = request(out_bytes)
    out.check()

    assert out.method == "INVITE"
    assert out.uri == NEW_URI
    assert out.version == "SIP/2.0"
    assert out.body == BODY
    assert out_bytes.endswith(b"\r\n\r\n" + BODY)
    # The new Via is the first value; the old ones follow unchanged.
    assert out.values("via") == [NEW_VIA, *orig.values("via")]
    assert out.top_via.branch == "z9hG4bKproxy1"
    assert out.headers[0].raw == "Via: " + NEW_VIA
    assert out.max_forwards == 67
    assert out.get_all("max-forwards") == ["67"]
    assert out.values("route") == ROUTE_VALUES[1:]
    assert out.values("record-route") == [RR]
    # Every other header line, folds and odd spacing included, is byte for byte the same.
    assert untouched(out.headers)[1:] == untouched(orig.headers)
    for h in orig.headers:
        if h.name not in ("max-forwards", "route"):
            assert h.raw.encode() in out_bytes
    # Max-Forwards stays where it was.
    names = [h.name for h in out.headers if h.name not in ("route", "record-route")]
    assert names[1:] == [h.name for h in orig.headers if h.name != "route"]
    # The original message is not changed by forwarding it.
    assert orig.to_bytes() == wsinv_like(routes)


def test_forwarded_with_nothing_to_edit_but_the_via() -> None:
    data = wsinv_like(ROUTES_REPEATED)
    orig = request(data)
    out_bytes = orig.forwarded(via=NEW_VIA)
    out = request(out_bytes)
    assert out.uri == orig.uri
    assert [h.raw for h in out.headers] == ["Via: " + NEW_VIA, *(h.raw for h in orig.headers)]
    start = START.encode() + b"\r\n"
    assert out_bytes == start + b"Via: " + NEW_VIA.encode() + b"\r\n" + data[len(start) :]


def test_forwarded_adds_max_forwards_when_absent() -> None:
    head = [line for line in WSINV_LIKE_HEAD if not line.startswith("MaX")]
    orig = request(build(START, [*head, *WSINV_LIKE_TAIL], BODY))
    assert orig.max_forwards is None
    out = request(orig.forwarded(via=NEW_VIA, max_forwards=70))
    assert out.max_forwards == 70
    assert untouched(out.headers)[1:] == untouched(orig.headers)


def test_forwarded_single_route_line_with_one_value_is_removed() -> None:
    orig = request(wsinv_like(["Route: <sip:only.example.com;lr>"]))
    out = request(orig.forwarded(via=NEW_VIA, pop_route=True))
    assert not out.has("route")
    assert out.routes == []


def test_forwarded_without_pop_keeps_routes_exactly() -> None:
    orig = request(wsinv_like(ROUTES_JOINED))
    out = request(orig.forwarded(via=NEW_VIA, pop_route=False))
    assert out.raw_lines("route") == orig.raw_lines("route")


@given(st.lists(route_values, min_size=1, max_size=6), st.data())
def test_pop_route_removes_exactly_the_first_value(routes: list[str], data: st.DataObject) -> None:
    cuts = st.sets(st.integers(1, len(routes) - 1)) if len(routes) > 1 else st.just(set())
    bounds = [0, *sorted(data.draw(cuts)), len(routes)]
    sep = data.draw(st.sampled_from([",", ", ", " , ", ",\r\n  "]))
    lines = ["Route: " + sep.join(routes[a:b]) for a, b in pairwise(bounds)]
    orig = request(wsinv_like(lines))
    out = request(orig.forwarded(via=NEW_VIA, pop_route=True, record_route=RR))
    assert out.values("route") == routes[1:]
    assert [r.uri for r in out.routes] == [r.uri for r in orig.routes][1:]
    assert untouched(out.headers)[1:] == untouched(orig.headers)
    assert out.body == BODY


# -- responses: remove the proxy's own Via ------------------------------------------------
RESPONSE_LINES = [
    "From: <sip:alice@example.com>;tag=1",
    "To:",
    "  <sip:bob@example.net>;tag=2",
    "Call-ID: resp@example.com",
    "CSeq: 1 INVITE",
    "Content-Length: 4",
]


PROXY_VIA = "SIP/2.0/UDP proxy.example.net;branch=z9hG4bKp"
CALLER_VIA = "SIP/2.0/UDP a.example.com;branch=z9hG4bKa"


@pytest.mark.parametrize(
    "via_lines",
    [
        [f"Via: {PROXY_VIA}, {CALLER_VIA}"],
        [f"v: {PROXY_VIA}", f"Via: {CALLER_VIA}"],
        [f"Via: {PROXY_VIA} ,", f" {CALLER_VIA}"],
        [f"Via: {PROXY_VIA}"],
    ],
    ids=["joined", "separate", "folded", "only"],
)
def test_without_top_via_removes_exactly_the_first_value(via_lines: list[str]) -> None:
    data = build("SIP/2.0 180 Ringing", [*via_lines, *RESPONSE_LINES], b"ring")
    orig = parse_message(data)
    assert isinstance(orig, Response)
    out = parse_message(orig.without_top_via())
    assert isinstance(out, Response)
    assert out.status == 180 and out.reason == "Ringing"
    assert out.values("via") == orig.values("via")[1:]
    folded_to = "To:\r\n  <sip:bob@example.net>;tag=2"
    expected = [RESPONSE_LINES[0], folded_to, *RESPONSE_LINES[3:]]
    assert [h.raw for h in out.headers if h.name != "via"] == expected
    assert out.values("via") == ([CALLER_VIA] if len(orig.values("via")) > 1 else [])
    assert out.body == b"ring"


@given(st.lists(via_values(), min_size=1, max_size=5), st.booleans())
def test_without_top_via_generated(vias: list[ViaParts], joined: bool) -> None:
    texts = [v.text for v in vias]
    lines = ["Via: " + ", ".join(texts)] if joined else [f"Via: {t}" for t in texts]
    orig = parse_message(build("SIP/2.0 200 OK", [*lines, *RESPONSE_LINES], b"okay"))
    assert isinstance(orig, Response)
    out = parse_message(orig.without_top_via())
    assert out.values("via") == texts[1:]
    if len(texts) > 1:
        assert out.top_via == orig.vias[1]
    else:
        assert not out.has("via")
    others = [h.raw for h in out.headers if h.name != "via"]
    assert others == [h.raw for h in orig.headers if h.name != "via"]
    assert out.body == b"okay"


# -- builders ----------------------------------------------------------------------------
def test_make_response_copies_the_dialog_headers_and_adds_a_to_tag() -> None:
    invite = request(wsinv_like(ROUTES_JOINED))
    resp = parse_message(make_response(invite, 486, to_tag="abc"))
    assert isinstance(resp, Response)
    assert resp.status == 486 and resp.reason == "Busy Here"
    assert resp.call_id == invite.call_id
    assert resp.cseq == invite.cseq
    assert resp.raw_lines("via") == invite.raw_lines("via")
    assert resp.values("via") == invite.values("via")
    assert resp.from_ == invite.from_
    # The To in the request already has a tag: it is kept, not replaced.
    assert resp.to.tag == "1918181833n"
    assert resp.body == b""
    assert resp.get("content-length") == "0"
    resp.check()


def test_make_response_tags_a_to_without_a_tag_but_not_for_100() -> None:
    invite = request(torture("esc01"))
    assert invite.to.tag is None
    ringing = parse_message(make_response(invite, 180, to_tag="t1"))
    assert ringing.to.tag == "t1"
    trying = parse_message(make_response(invite, 100, to_tag="t1"))
    assert trying.to.tag is None
    custom = parse_message(make_response(invite, 499, "Odd", extra=[("Retry-After", "5")]))
    assert isinstance(custom, Response)
    assert custom.reason == "Odd"
    assert custom.get("retry-after") == "5"


def test_make_ack_and_cancel() -> None:
    invite = request(torture("esc01"))
    final = parse_message(make_response(invite, 503, to_tag="remote"))
    assert isinstance(final, Response)
    via = "SIP/2.0/UDP proxy.example.net;branch=z9hG4bKbr1"
    routes = ["<sip:r1.example.com;lr>", "<sip:r2.example.com;lr>"]
    ack = request(make_ack(invite, final, uri="sip:carrier.example.com", via=via, routes=routes))
    ack.check()
    assert ack.method == "ACK" and ack.uri == "sip:carrier.example.com"
    assert ack.cseq.number == invite.cseq.number and ack.cseq.method == "ACK"
    assert ack.to.tag == "remote"
    assert ack.values("via") == [via]
    assert ack.values("route") == routes
    assert ack.call_id == invite.call_id
    cancel = request(make_cancel(invite, uri="sip:carrier.example.com", via=via, routes=[]))
    cancel.check()
    assert cancel.method == "CANCEL"
    assert cancel.cseq.number == invite.cseq.number
    assert cancel.to.tag is None
    assert cancel.top_via.branch == "z9hG4bKbr1"
    assert not cancel.has("route")


def test_make_request() -> None:
    data = make_request(
        "OPTIONS",
        "sip:carrier.example.com",
        via="SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKk1",
        from_="<sip:probe@192.0.2.1>;tag=p1",
        to="<sip:carrier.example.com>",
        call_id="probe-1@192.0.2.1",
        cseq=7,
        routes=["<sip:edge.example.com;lr>"],
        extra=[("Accept", "application/sdp")],
    )
    req = request(data)
    req.check()
    assert req.cseq.number == 7 and req.cseq.method == "OPTIONS"
    assert req.max_forwards == 70
    assert req.top_via.transport == "TCP"
    assert req.from_.tag == "p1"
    assert req.values("route") == ["<sip:edge.example.com;lr>"]
    assert req.get("accept") == "application/sdp"
    assert req.body == b""


def test_make_response_answers_a_request_that_fails_check() -> None:
    bad = request(wsinv_like(ROUTES_JOINED).replace(b"TO :\r\n sip:", b'TO :\r\n "unbalanced sip:'))
    with pytest.raises(ParseError):
        bad.check()
    resp = parse_message(make_response(bad, 400, to_tag="x"))
    assert isinstance(resp, Response)
    assert resp.status == 400
    assert resp.call_id == bad.call_id
    assert resp.raw_lines("to") == bad.raw_lines("to")
