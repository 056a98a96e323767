"""Message parser: byte-exact round trip, header lookup, robustness, limits, framing."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sipgen import (
    RFC_COMPACT,
    GeneratedMessage,
    RequestParts,
    ViaParts,
    build,
    canonical,
    exercise,
    messages,
    route_values,
    torture,
    torture_names,
    valid_requests,
    via_values,
)

from trunkguard.sip import (
    LimitError,
    Limits,
    ParseError,
    Request,
    Response,
    StreamFramer,
    make_response,
    parse_message,
)

BASE_LINES = [
    "Via: SIP/2.0/UDP client.example.com:5060;branch=z9hG4bK74bf9",
    "Max-Forwards: 70",
    "From: Alice <sip:alice@example.com>;tag=9fxced76sl",
    "To: <sip:bob@example.net>",
    "Call-ID: 3848276298220188511@client.example.com",
    "CSeq: 1 OPTIONS",
]
BASE_START = "OPTIONS sip:bob@example.net SIP/2.0"


def base(extra: list[str] | None = None, body: bytes = b"") -> bytes:
    return build(BASE_START, [*BASE_LINES, *(extra or [])], body)


# -- round trip -------------------------------------------------------------------------
@given(messages())
def test_round_trip_is_byte_exact(gen: GeneratedMessage) -> None:
    msg = parse_message(gen.data)
    assert msg.to_bytes() == gen.data
    assert bytes(msg) == gen.data
    assert msg.body == gen.body
    assert isinstance(msg, Request) == gen.is_request
    assert msg.start_line() == gen.start


@given(messages())
def test_header_lines_keep_raw_text_and_unfold_values(gen: GeneratedMessage) -> None:
    msg = parse_message(gen.data)
    assert [h.raw for h in msg.headers] == [h.raw for h in gen.headers]
    assert [h.value for h in msg.headers] == [h.value for h in gen.headers]


@given(messages())
def test_lookup_by_long_compact_or_any_case_name_agrees(gen: GeneratedMessage) -> None:
    msg = parse_message(gen.data)
    for spec in gen.headers:
        key = canonical(spec.name)
        expected = [h.value for h in gen.headers if canonical(h.name) == key]
        spellings = {spec.name, spec.name.upper(), spec.name.lower(), spec.name.swapcase()}
        spellings |= {key, key.upper(), key.title()}
        spellings |= {c for c, long in RFC_COMPACT.items() if long == key}
        for spelling in spellings:
            assert msg.get_all(spelling) == expected, spelling
            assert msg.get(spelling) == expected[0], spelling
            assert msg.has(spelling)
            assert len(msg.raw_lines(spelling)) == len(expected)


@given(messages(content_length=False))
def test_datagram_without_content_length_takes_the_rest_as_body(gen: GeneratedMessage) -> None:
    msg = parse_message(gen.data)
    assert msg.body == gen.body
    # On the way out the length is always stated (a stream needs it).
    again = parse_message(msg.to_bytes())
    assert again.get("content-length") == str(len(gen.body))
    assert again.body == gen.body
    assert [h.raw for h in again.headers][:-1] == [h.raw for h in msg.headers]


def test_round_trip_keeps_bytes_that_are_not_utf8() -> None:
    data = base(["X-Binary: PLACEHOLDER", "Content-Length: 3"], b"\x00\xff\r")
    data = data.replace(b"PLACEHOLDER", b"\xff\xfe\x80 end")
    msg = parse_message(data)
    assert msg.to_bytes() == data
    assert msg.body == b"\x00\xff\r"
    assert msg.get("x-binary") is not None


def test_leading_crlfs_before_the_start_line_are_ignored() -> None:
    data = base(["Content-Length: 0"])
    msg = parse_message(b"\r\n\r\n\r\n" + data)
    assert msg.to_bytes() == data


def test_unknown_header_without_a_compact_form_is_found_in_any_case() -> None:
    msg = parse_message(base(["NewFangledHeader:   newfangled value", " continued value"]))
    assert msg.get("newfangledheader") == "newfangled value continued value"
    assert msg.get("NEWFANGLEDHEADER") == msg.get("NewFangledHeader")
    assert msg.get("x-absent") is None
    assert msg.get_all("x-absent") == []
    assert not msg.has("x-absent")


@given(valid_requests())
def test_generated_valid_requests_pass_check_and_report_their_fields(gen: RequestParts) -> None:
    msg = parse_message(gen.data)
    assert isinstance(msg, Request)
    msg.check()
    assert msg.method == gen.method
    assert msg.call_id == gen.call_id
    assert msg.cseq.number == gen.cseq
    assert msg.cseq.method == gen.method
    assert [v.branch for v in msg.vias] == [v.branch for v in gen.vias]
    assert [v.transport for v in msg.vias] == [v.transport for v in gen.vias]
    assert [(v.host, v.port) for v in msg.vias] == [(v.host, v.port) for v in gen.vias]
    assert msg.top_via == msg.vias[0]
    assert msg.from_.tag == gen.from_tag
    assert msg.to.tag == gen.to_tag
    assert msg.max_forwards == gen.max_forwards
    assert msg.values("route") == gen.routes
    assert len(msg.routes) == len(gen.routes)


# -- comma-joined and repeated headers ------------------------------------------------------
@given(
    st.lists(via_values(), min_size=1, max_size=5),
    st.lists(route_values, min_size=1, max_size=5),
    st.data(),
)
def test_comma_joined_and_repeated_lines_give_the_same_values(
    vias: list[ViaParts], routes: list[str], data: st.DataObject
) -> None:
    def grouped(name: str, values: list[str]) -> list[str]:
        # Cut the list into random runs; each run is one comma-joined line.
        inner = st.sets(st.integers(1, len(values) - 1)) if len(values) > 1 else st.just(set())
        bounds = [0, *sorted(data.draw(inner)), len(values)]
        sep = data.draw(st.sampled_from([",", ", ", " ,  ", ",\r\n "]))
        return [f"{name}: " + sep.join(values[a:b]) for a, b in pairwise(bounds)]

    via_texts = [v.text for v in vias]
    lines_a = [f"Via: {v}" for v in via_texts] + [f"Route: {r}" for r in routes]
    lines_b = grouped("Via", via_texts) + grouped("Route", routes)
    rest = BASE_LINES[1:]
    a = parse_message(build(BASE_START, [*lines_a, *rest]))
    b = parse_message(build(BASE_START, [*lines_b, *rest]))
    assert a.values("via") == b.values("via") == via_texts
    assert a.values("v") == b.values("VIA") == via_texts
    assert a.values("route") == b.values("Route") == routes
    assert a.vias == b.vias
    assert a.top_via == b.top_via == a.vias[0]
    assert a.routes == b.routes


def test_comma_inside_quotes_or_angle_brackets_does_not_split() -> None:
    msg = parse_message(
        base(['Contact: "Doe, John" <sip:j@example.com;x=a,b>, <sip:k@example.com>'])
    )
    assert msg.values("contact") == [
        '"Doe, John" <sip:j@example.com;x=a,b>',
        "<sip:k@example.com>",
    ]


# -- arbitrary input never escapes as anything but ParseError ------------------------------------
def _parse_and_exercise(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except ParseError as exc:
        assert exc.reason
        assert str(exc)
        if exc.partial is not None:
            # What is left of a broken request is still enough to answer it.
            answer = parse_message(make_response(exc.partial, 400))
            assert isinstance(answer, Response) and answer.status == 400
        return
    exercise(msg)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    _parse_and_exercise(data)


@given(
    st.sampled_from([BASE_START, "SIP/2.0 200 OK", "INVITE sip:x SIP/2.0"]),
    st.binary(max_size=300),
)
def test_arbitrary_header_bytes_raise_only_parse_error(start: str, tail: bytes) -> None:
    _parse_and_exercise(start.encode() + b"\r\n" + tail + b"\r\n\r\n")


INTERESTING = [
    b":",
    b",",
    b";",
    b"<",
    b">",
    b'"',
    b"\\",
    b"\r\n",
    b"\r\n ",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"\xc2\xb2",
    "\u0663".encode(),
    b"%",
    b"%0",
    b"@",
    b"[",
    b"]",
    b"=",
    b"?",
    b"/",
    b"0",
    b"9" * 12,
    b"9" * 5000,
    b"-1",
    b"\r\n\r\n",
    b"SIP/2.0",
    b"z9hG4bK",
    b"sip:",
    b"v: ",
]
SEEDS = [torture(n) for n in torture_names()] + [base(["Content-Length: 0"])]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "replace", "delete", "byte"]))
        if op == "insert":
            data[pos:pos] = draw(st.sampled_from(INTERESTING))
        elif op == "replace":
            data[pos : pos + draw(st.integers(1, 8))] = draw(st.sampled_from(INTERESTING))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        else:
            data[pos : pos + 1] = bytes([draw(st.integers(0, 255))])
    return bytes(data)


@given(mutated_messages())
@example(base(["Content-Length: \u00b2"]))
@example(base(["Max-Forwards: \u00b9", "Content-Length: 0"]).replace(b"Max-Forwards: 70\r\n", b""))
@example(base(["Content-Length: 0"]).replace(b"CSeq: 1 ", b"CSeq: \xc2\xb9 "))
@example(base(["Content-Length: 0"]).replace(b"CSeq: 1 ", b"CSeq: " + b"1" * 5000 + b" "))
@example(base(["Content-Length: 0"]).replace(b"example.net SIP", "example.net:\u00b9 SIP".encode()))
def test_mutated_messages_raise_only_parse_error(data: bytes) -> None:
    _parse_and_exercise(data)


@pytest.mark.parametrize(
    ("line", "header"),
    [
        ("Content-Length: \u00b2", "Content-Length"),  # isdigit() but not a DIGIT
        ("Content-Length: \u0663", "Content-Length"),  # a decimal digit, but not ASCII
        ("Content-Length: 1234567890", "Content-Length"),
        ("Content-Length: -1", "Content-Length"),
        ("Content-Length: 1 2", "Content-Length"),
    ],
)
def test_bad_content_length_is_a_parse_error_naming_the_header(line: str, header: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(base([line]))
    assert info.value.header == header
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("old", "new", "header"),
    [
        ("CSeq: 1 OPTIONS", "CSeq: \u00b9 OPTIONS", "CSeq"),
        ("CSeq: 1 OPTIONS", "CSeq: " + "1" * 5000 + " OPTIONS", "CSeq"),
        ("CSeq: 1 OPTIONS", "CSeq: 2147483648 OPTIONS", "CSeq"),
        ("CSeq: 1 OPTIONS", "CSeq: OPTIONS", "CSeq"),
        ("Max-Forwards: 70", "Max-Forwards: \u00b2", "Max-Forwards"),
        ("Max-Forwards: 70", "Max-Forwards: 256", "Max-Forwards"),
        ("Max-Forwards: 70", "Max-Forwards: -1", "Max-Forwards"),
        ("Call-ID: 3848276298220188511@client.example.com", "Call-ID: a b", "Call-ID"),
        ("To: <sip:bob@example.net>", "To: <sip:bob@example.net:\u00b9>", "To"),
        ("To: <sip:bob@example.net>", "To: <sip:bob@example.net:65536>", "To"),
    ],
)
def test_bad_field_values_fail_check_naming_the_header(old: str, new: str, header: str) -> None:
    msg = parse_message(base(["Content-Length: 0"]).replace(old.encode(), new.encode()))
    with pytest.raises(ParseError) as info:
        msg.check()
    assert info.value.header == header
    assert info.value.reason


def test_cseq_with_leading_zeros_is_accepted() -> None:
    msg = parse_message(base(["Content-Length: 0"]).replace(b"CSeq: 1 ", b"CSeq: 00000000000042 "))
    msg.check()
    assert msg.cseq.number == 42


def test_missing_mandatory_header_is_named() -> None:
    lines = [x for x in BASE_LINES if not x.startswith("CSeq")]
    msg = parse_message(build(BASE_START, lines))
    with pytest.raises(ParseError) as info:
        msg.check()
    assert info.value.header == "CSeq"
    assert str(info.value) == "CSeq: missing"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n",  # no empty line
        b"OPTIONS sip:a@b SIP/2.0\r\n continuation\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nno colon here\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n: empty name\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"OPTIONS sip:a@b\r\nVia: x\r\n\r\n",
        b"OPTIONS sip:a@b HTTP/1.1\r\nVia: x\r\n\r\n",
        b"OPT(ONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n",
        b"SIP/2.0 99 Too Low\r\nVia: x\r\n\r\n",
        b"SIP/2.0 700 Too High\r\nVia: x\r\n\r\n",
        b"SIP/2.0 2000 Four Digits\r\nVia: x\r\n\r\n",
        b"SIP/2.0 OK\r\nVia: x\r\n\r\n",
    ],
)
def test_malformed_framing_is_a_parse_error_with_a_reason(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.reason
    assert info.value.status == 400


# -- limits ---------------------------------------------------------------------------------
def test_message_size_limit() -> None:
    data = base(["Content-Length: 0"])
    parse_message(data, Limits(max_message=len(data)))
    with pytest.raises(LimitError) as info:
        parse_message(data, Limits(max_message=len(data) - 1))
    assert info.value.reason == f"message larger than {len(data) - 1} bytes"
    assert isinstance(info.value, ParseError)


def test_header_count_limit() -> None:
    data = base(["Content-Length: 0"])
    count = len(BASE_LINES) + 1
    assert len(parse_message(data, Limits(max_headers=count)).headers) == count
    with pytest.raises(LimitError) as info:
        parse_message(data, Limits(max_headers=count - 1))
    assert info.value.reason == f"more than {count - 1} header lines"


def test_folded_lines_count_as_one_header() -> None:
    data = base(["X-Folded: a", " b", "\tc", "Content-Length: 0"])
    count = len(BASE_LINES) + 2
    msg = parse_message(data, Limits(max_headers=count))
    assert msg.get("x-folded") == "a b c"


def test_default_header_count_limit_is_enforced() -> None:
    extra = [f"X-H{i}: {i}" for i in range(200)]
    with pytest.raises(LimitError) as info:
        parse_message(base(extra))
    assert "header lines" in info.value.reason


@pytest.mark.parametrize("where", ["start", "header", "continuation"])
def test_line_length_limit(where: str) -> None:
    limit = 80
    start, lines = BASE_START, [*BASE_LINES, "Content-Length: 0"]
    if where == "start":
        start = "OPTIONS sip:" + "u" * (limit + 1 - 32) + "@example.net SIP/2.0"
        offending = start
    elif where == "header":
        offending = "X-Long: " + "x" * (limit + 1 - 8)
        lines.append(offending)
    else:
        offending = " " + "x" * limit
        lines += ["X-Long: a", offending]
    assert len(offending) == limit + 1
    data = build(start, lines)
    with pytest.raises(LimitError) as info:
        parse_message(data, Limits(max_line=limit))
    assert info.value.reason.endswith(f"longer than {limit} bytes")
    assert info.value.reason.startswith("start line" if where == "start" else "header line")
    # One byte more of allowance and the same message is fine.
    parse_message(data, Limits(max_line=limit + 1))


# -- Content-Length on a datagram ------------------------------------------------------------------
def test_content_length_truncates_a_longer_datagram() -> None:
    msg = parse_message(base(["Content-Length: 5"], b"hello, and trailing junk"))
    assert msg.body == b"hello"
    assert msg.to_bytes() == base(["Content-Length: 5"], b"hello")


def test_content_length_larger_than_the_rest_is_an_error() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(base(["Content-Length: 6"], b"hello"))
    assert info.value.header == "Content-Length"
    assert "6" in info.value.reason
    assert "5" in info.value.reason


def test_compact_content_length() -> None:
    msg = parse_message(base(["l: 2"], b"hi!"))
    assert msg.body == b"hi"


def test_absent_content_length_takes_the_rest_as_body() -> None:
    msg = parse_message(base([], b"v=0\r\n\r\nrest"))
    assert msg.body == b"v=0\r\n\r\nrest"


def test_zero_content_length_with_trailing_bytes() -> None:
    msg = parse_message(base(["Content-Length: 0"], b"\r\n\r\nINVITE ..."))
    assert msg.body == b""


def test_duplicate_content_length_is_an_error() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(base(["Content-Length: 0", "l: 0"]))
    assert info.value.header == "Content-Length"


# -- StreamFramer --------------------------------------------------------------------------------
STREAM_MESSAGES = [
    base(["Content-Length: 0"]),
    base(["Content-Type: text/plain", "l: 11"], b"hello\r\n\r\nyo"),
    torture("wsinv"),
    build("SIP/2.0 180 Ringing", [*BASE_LINES, "Content-Length: 0"]),
]


def _stream_of(msgs: list[bytes], keepalives: list[bytes]) -> bytes:
    out = b""
    for i, m in enumerate(msgs):
        out += keepalives[i % len(keepalives)] + m
    return out


def test_framer_splits_at_every_byte_boundary() -> None:
    stream = _stream_of(STREAM_MESSAGES, [b"", b"\r\n\r\n", b"\r\n"])
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == STREAM_MESSAGES, cut


def test_framer_byte_by_byte() -> None:
    stream = _stream_of(STREAM_MESSAGES, [b"\r\n"])
    framer = StreamFramer()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += framer.feed(stream[i : i + 1])
    assert got == STREAM_MESSAGES
    assert framer.feed(b"") == []


@given(st.lists(messages(), min_size=1, max_size=4), st.data())
def test_framer_with_random_chunks(gens: list[GeneratedMessage], data: st.DataObject) -> None:
    msgs = [g.data for g in gens]
    stream = _stream_of(msgs, [data.draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))])
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    framer = StreamFramer()
    got: list[bytes] = []
    for a, b in pairwise(bounds):
        got += framer.feed(stream[a:b])
    assert got == msgs
    assert [parse_message(m).to_bytes() for m in got] == msgs


def test_framer_cuts_two_messages_sent_in_one_write() -> None:
    # dblreq.dat: a REGISTER with Content-Length 0, then an INVITE whose body is 150 bytes,
    # then 5 bytes the INVITE's Content-Length leaves over.
    data = torture("dblreq")
    framer = StreamFramer()
    frames = framer.feed(data[:-5])
    assert len(frames) == 2
    first, second = (parse_message(f) for f in frames)
    assert isinstance(first, Request) and first.method == "REGISTER"
    assert first.body == b""
    assert isinstance(second, Request) and second.method == "INVITE"
    assert len(second.body) == 150
    # Over a stream the left-over bytes must frame as a message, and they do not.
    with pytest.raises(ParseError):
        framer.feed(data[-5:])


def test_framer_requires_content_length() -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError) as info:
        framer.feed(base([], b"body"))
    assert info.value.header == "Content-Length"
    assert "stream" in info.value.reason


def test_framer_rejects_a_bad_content_length() -> None:
    with pytest.raises(ParseError) as info:
        StreamFramer().feed(base(["Content-Length: lots"]))
    assert info.value.header == "Content-Length"


def test_framer_ignores_keepalives_only() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n") == []
    msg = base(["Content-Length: 0"])
    assert framer.feed(b"\r\n" + msg + b"\r\n\r\n") == [msg]
    assert framer.feed(b"\r\n") == []


def test_framer_waits_for_the_whole_body() -> None:
    msg = base(["Content-Length: 10"], b"0123456789")
    framer = StreamFramer()
    assert framer.feed(msg[:-1]) == []
    assert framer.feed(msg[-1:]) == [msg]


def test_framer_limits() -> None:
    with pytest.raises(LimitError) as info:
        StreamFramer(Limits(max_message=100)).feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X" * 100)
    assert "header section larger than 100" in info.value.reason
    big = base(["Content-Length: 500"])
    with pytest.raises(LimitError) as info:
        StreamFramer(Limits(max_message=len(big) + 499)).feed(big)
    assert info.value.reason == f"message larger than {len(big) + 499} bytes"
    with pytest.raises(LimitError):
        StreamFramer(Limits(max_headers=3)).feed(base(["Content-Length: 0"]))


@given(st.lists(st.binary(max_size=80), max_size=6))
def test_framer_on_arbitrary_bytes_raises_only_parse_error(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                _parse_and_exercise(frame)
    except ParseError as exc:
        assert exc.reason
