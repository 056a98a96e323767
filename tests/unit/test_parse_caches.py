"""The parser's shortcuts give what the long way gives: the caches of parsed values, and
the split of a header section with nothing folded nor near a limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkguard.sip import LimitError, ParseError, _message, _uri, _via, parse_message, parse_uri
from trunkguard.sip._message import Limits, _split_head
from trunkguard.sip._uri import parse_name_addr
from trunkguard.sip._via import parse_via

INVITE = (
    "INVITE sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1;rport\r\n"
    "From: \"Agent 7\" <sip:agent@127.0.0.1>;tag=caller1\r\n"
    "To: <sip:15551234567@127.0.0.1>\r\n"
    "Call-ID: abc@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Max-Forwards: 70\r\n"
    "Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.1;lr>\r\n"
    "Contact: <sip:agent@127.0.0.1:5090>\r\n"
    "X-Campaign:  spring sale \r\n"
    "Content-Length: 0\r\n\r\n"
)


def _fields(text: str) -> tuple[object, ...]:
    m = parse_message(text.encode())
    m.check()
    return (m.cseq, m.top_via, m.from_, m.to, m.routes, m.contacts, m.call_id)


def test_a_parsed_value_is_the_same_from_the_cache() -> None:
    _uri._URIS.clear()
    _uri._NAME_ADDRS.clear()
    _via._VIAS.clear()
    _message._CSEQS.clear()
    first = _fields(INVITE)
    assert _uri._NAME_ADDRS and _via._VIAS and _message._CSEQS  # the caches took them
    again = _fields(INVITE)
    assert again == first
    # The cached objects are those of a fresh parse, field by field.
    _uri._URIS.clear()
    _uri._NAME_ADDRS.clear()
    _via._VIAS.clear()
    _message._CSEQS.clear()
    assert _fields(INVITE) == first


@pytest.mark.parametrize(
    ("parse", "bad"),
    [
        (parse_uri, "sip:host:99999"),
        (parse_name_addr, "<sip:a@b"),
        (parse_via, "SIP/2.0/UDP host;branch="),
    ],
)
def test_a_bad_value_fails_every_time(parse: object, bad: str) -> None:
    for _ in range(3):
        with pytest.raises(ParseError):
            parse(bad)  # type: ignore[operator]


def test_a_bad_cseq_fails_every_time() -> None:
    text = INVITE.replace("CSeq: 1 INVITE", "CSeq: x INVITE")
    for _ in range(3):
        with pytest.raises(ParseError):
            parse_message(text.encode()).check()


def test_the_caches_are_bounded() -> None:
    for i in range(_uri.CACHE_SIZE + 10):
        parse_uri(f"sip:u{i}@127.0.0.1")
        parse_name_addr(f"<sip:u{i}@127.0.0.1>;tag={i}")
        parse_via(f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{i}")
        parse_message(INVITE.replace("CSeq: 1 ", f"CSeq: {i} ").encode()).cseq  # noqa: B018
    for cache in (_uri._URIS, _uri._NAME_ADDRS, _via._VIAS, _message._CSEQS):
        assert 0 < len(cache) <= _uri.CACHE_SIZE


def _head(text: str) -> str:
    return text.split("\r\n\r\n", 1)[0]


def _long_way(head: str) -> tuple[str, list[tuple[str, str, str]]]:
    """_split_head made to take its checked path: a line limit below the head's size but
    not below its longest line, so the result must be the same."""
    longest = max(len(line) for line in head.split("\r\n"))
    assert longest < len(head)
    start, headers = _split_head(head, Limits(max_line=longest))
    return start, [(h.name, h.raw, h.value) for h in headers]


def _short_way(head: str) -> tuple[str, list[tuple[str, str, str]]]:
    start, headers = _split_head(head, Limits())
    return start, [(h.name, h.raw, h.value) for h in headers]


_names = st.sampled_from(["Via", "v", "X-A", "Subject", "s", "t", "CSeq", "x_y.z"])
_values = st.text(alphabet="abc ;=<>:@\"\t,.0123", max_size=30)


@given(st.lists(st.tuples(_names, st.sampled_from([":", " :", ": ", ":\t"]), _values), max_size=12))
def test_the_plain_split_is_the_checked_split(lines: list[tuple[str, str, str]]) -> None:
    head = "OPTIONS sip:a@b SIP/2.0\r\n" + "\r\n".join(f"{n}{c}{v}" for n, c, v in lines)
    if not lines:
        head = head.rstrip("\r\n") + "\r\nX: 1"
    if "\r\n " in head or "\r\n\t" in head:
        return  # folded: not the plain case
    assert _short_way(head) == _long_way(head)


def test_limits_still_hold_on_the_plain_split() -> None:
    many = "OPTIONS sip:a@b SIP/2.0\r\n" + "".join(f"X-{i}: {i}\r\n" for i in range(129))
    with pytest.raises(LimitError):
        parse_message((many + "\r\n").encode())
    exactly = "OPTIONS sip:a@b SIP/2.0\r\n" + "".join(f"X-{i}: {i}\r\n" for i in range(128))
    assert len(parse_message((exactly + "\r\n").encode()).headers) == 128
    long_line = "OPTIONS sip:a@b SIP/2.0\r\nX: " + "a" * 8200 + "\r\n\r\n"
    with pytest.raises(LimitError):
        parse_message(long_line.encode())
    with pytest.raises(ParseError, match="without a name"):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nno colon here\r\n\r\n")
    with pytest.raises(ParseError, match="bad header name"):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: 1\r\n\r\n")
