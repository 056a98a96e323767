"""Hypothesis strategies and small helpers shared by the SIP unit tests.

Generated messages are built from their parts, so a test knows exactly which
bytes went in and what the parser must report for them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from trunkguard.sip import ParseError, Request, Response, make_response, parse_message

CRLF = "\r\n"

# The project's shared/ folder sits beside the repository (in CI too).
_SHARED_TORTURE = Path(__file__).resolve().parents[3] / "shared" / "sip-torture" / "rfc4475"
TORTURE_DIR = Path(os.environ.get("TRUNKGUARD_TORTURE_DIR", str(_SHARED_TORTURE)))

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"

# Long name -> compact form (RFC 3261 §7.3.3), for the headers the tests vary.
COMPACT: dict[str, str] = {
    "Call-ID": "i",
    "Contact": "m",
    "Content-Encoding": "e",
    "Content-Type": "c",
    "From": "f",
    "Subject": "s",
    "Supported": "k",
    "To": "t",
    "Via": "v",
    "Event": "o",
    "Allow-Events": "u",
}
# The whole RFC 3261 / registry table of compact forms, compact -> lower-case long name.
RFC_COMPACT: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "x": "session-expires",
    "u": "allow-events",
    "y": "identity",
    "n": "identity-info",
}


def canonical(name: str) -> str:
    return RFC_COMPACT.get(name.lower(), name.lower())


OTHER_NAMES = ["CSeq", "Max-Forwards", "Route", "Record-Route", "User-Agent", "X-Custom-Header"]


# -- small building blocks ---------------------------------------------------------
tokens = st.text(alphabet=TOKEN_ALPHABET, min_size=1, max_size=10)
lower_tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=8)
methods = (
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "MESSAGE"])
    | tokens
)

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_labels = st.builds(
    lambda a, mid, z: a + (mid + z if z else ""),
    st.sampled_from(_ALNUM),
    st.text(alphabet=_ALNUM + "-", max_size=6),
    st.sampled_from(["", *_ALNUM]),
)
hostnames = st.lists(_labels, min_size=1, max_size=4).map(".".join)
ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
hosts = st.one_of(hostnames, ipv4_hosts, ipv6_hosts)
ports = st.none() | st.integers(0, 65535)
users = st.from_regex(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2}){1,12}", fullmatch=True)
param_values = st.text(alphabet=TOKEN_ALPHABET, min_size=1, max_size=8)
uri_params = st.dictionaries(lower_tokens, st.none() | param_values, max_size=3)


def mixed_case(name: str) -> st.SearchStrategy[str]:
    """``name`` with the case of each letter chosen at random."""
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.swapcase() if f else c for c, f in zip(name, flips, strict=True))
    )


@dataclass
class UriParts:
    text: str
    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None]


@st.composite
def sip_uris(draw: st.DrawFn, with_params: bool = True) -> UriParts:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.none() | users)
    host = draw(hosts)
    port = draw(ports)
    params = draw(uri_params) if with_params else {}
    text = f"{scheme}:"
    if user is not None:
        text += f"{user}@"
    text += host if port is None else f"{host}:{port}"
    for name, value in params.items():
        text += f";{name}" if value is None else f";{name}={value}"
    return UriParts(text, scheme, user, host, port, params)


@dataclass
class ViaParts:
    text: str
    transport: str
    host: str
    port: int | None
    branch: str


@st.composite
def via_values(draw: st.DrawFn) -> ViaParts:
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP"]))
    host = draw(hosts)
    port = draw(ports)
    branch = "z9hG4bK" + draw(tokens)
    sent_by = host if port is None else f"{host}:{port}"
    extra = draw(st.sampled_from(["", ";rport", ";received=192.0.2.1", ";rport=5060"]))
    text = f"SIP/2.0/{transport} {sent_by};branch={branch}{extra}"
    return ViaParts(text, transport, host, port, branch)


route_values = sip_uris(with_params=False).map(lambda u: f"<{u.text};lr>")


# -- free-form messages for the round trip -------------------------------------------
value_words = st.text(
    alphabet=st.characters(
        min_codepoint=0x21, max_codepoint=0x44F, exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")
    ),
    min_size=1,
    max_size=8,
)
inline_space = st.sampled_from([" ", "  ", "\t", " \t "])
fold_indent = st.sampled_from([" ", "\t", "    ", " \t"])


@dataclass
class HeaderSpec:
    name: str  # as written, maybe compact or odd case
    raw: str  # the exact header text, folds included
    value: str  # the value once unfolded, as the parser must report it


@st.composite
def header_values(draw: st.DrawFn) -> tuple[str, str]:
    """(raw value text, possibly folded; the unfolded value)."""
    segments: list[str] = []
    first_empty = draw(st.booleans())
    for i in range(draw(st.integers(0, 3))):
        words = draw(st.lists(value_words, min_size=1, max_size=3))
        sep = draw(inline_space)
        segments.append(sep.join(words))
        if i == 0 and first_empty:
            segments.insert(0, "")
    raw = ""
    for i, seg in enumerate(segments):
        raw += seg if i == 0 else CRLF + draw(fold_indent) + seg
    unfolded = " ".join(s for s in segments if s)
    return raw, unfolded


@st.composite
def header_names(draw: st.DrawFn) -> str:
    long = draw(st.sampled_from([*COMPACT, *OTHER_NAMES]))
    if long in COMPACT and draw(st.booleans()):
        return draw(mixed_case(COMPACT[long]))
    return draw(mixed_case(long))


@st.composite
def headers(draw: st.DrawFn, names: st.SearchStrategy[str] | None = None) -> HeaderSpec:
    name = draw(names if names is not None else header_names() | tokens)
    before = draw(st.sampled_from(["", " ", "   ", "\t"]))
    after = draw(st.sampled_from(["", " ", "  "]))
    raw_value, value = draw(header_values())
    return HeaderSpec(name, f"{name}{before}:{after}{raw_value}", value)


@dataclass
class GeneratedMessage:
    data: bytes
    start: str
    headers: list[HeaderSpec]
    body: bytes
    is_request: bool
    content_length_at: int = -1  # index in ``headers`` of the Content-Length line, -1 if none
    extra: dict[str, object] = field(default_factory=dict)


reason_phrases = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, max_codepoint=0x44F, exclude_categories=("Cs", "Cc", "Zl", "Zp")
    ),
    max_size=20,
)


@st.composite
def start_lines(draw: st.DrawFn) -> tuple[str, bool]:
    if draw(st.booleans()):
        return f"{draw(methods)} {draw(sip_uris()).text} SIP/2.0", True
    return f"SIP/2.0 {draw(st.integers(100, 699))} {draw(reason_phrases)}", False


@st.composite
def messages(draw: st.DrawFn, content_length: bool = True) -> GeneratedMessage:
    """A syntactically valid message: any headers (no Content-Length among them) and a body.

    With ``content_length`` a Content-Length line (odd spelling, maybe compact, maybe
    leading zeros) is placed at a random position and matches the body.
    """
    start, is_request = draw(start_lines())
    hs = draw(st.lists(headers(), max_size=8))
    hs = [h for h in hs if h.name.lower() not in ("l", "content-length")]
    body = draw(st.binary(max_size=120))
    at = -1
    if content_length:
        name = draw(st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH", "l"]))
        name = draw(mixed_case(name))
        number = "0" * draw(st.integers(0, 2)) + str(len(body))
        before = draw(st.sampled_from(["", "   "]))
        at = draw(st.integers(0, len(hs)))
        hs.insert(at, HeaderSpec(name, f"{name}{before}: {number}", number))
    head = CRLF.join([start, *(h.raw for h in hs)]) + CRLF + CRLF
    data = head.encode("utf-8") + body
    return GeneratedMessage(data, start, hs, body, is_request, at)


# -- a well-formed request whose fields the test knows -----------------------------------
@dataclass
class RequestParts:
    data: bytes
    method: str
    call_id: str
    cseq: int
    vias: list[ViaParts]
    from_tag: str
    to_tag: str | None
    max_forwards: int | None
    routes: list[str]


@st.composite
def valid_requests(draw: st.DrawFn) -> RequestParts:
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER", "MESSAGE"]) | tokens)
    ruri = draw(sip_uris())
    vias = draw(st.lists(via_values(), min_size=1, max_size=3))
    call_id = draw(st.from_regex(r"[A-Za-z0-9.!%*_+`'~\-@:]{1,20}", fullmatch=True))
    cseq = draw(st.integers(0, 2**31 - 1))
    from_tag = draw(tokens)
    to_tag = draw(st.none() | tokens)
    mf = draw(st.none() | st.integers(0, 255))
    routes = draw(st.lists(route_values, max_size=3))

    def name(long: str) -> str:
        if long in COMPACT and draw(st.booleans()):
            return draw(mixed_case(COMPACT[long]))
        return draw(mixed_case(long))

    lines = [f"{name('Via')}: {v.text}" for v in vias]
    lines.append(f"{name('From')}: <{draw(sip_uris()).text}>;tag={from_tag}")
    to = f"<{draw(sip_uris()).text}>" + ("" if to_tag is None else f";tag={to_tag}")
    lines.append(f"{name('To')}: {to}")
    lines.append(f"{name('Call-ID')}: {call_id}")
    lines.append(f"{name('CSeq')}: {cseq} {method}")
    if mf is not None:
        lines.append(f"{name('Max-Forwards')}: {mf}")
    lines += [f"{name('Route')}: {r}" for r in routes]
    lines.append(f"{name('Content-Length')}: 0")
    # Any order of header lines; Via and Route keep their order relative to themselves.
    order = draw(st.permutations(range(len(lines))))
    vias = [vias[i] for i in order if i < len(vias)]
    first_route = len(lines) - 1 - len(routes)
    routes = [routes[i - first_route] for i in order if first_route <= i < len(lines) - 1]
    head = [f"{method} {ruri.text} SIP/2.0", *(lines[i] for i in order)]
    data = (CRLF.join(head) + CRLF + CRLF).encode()
    return RequestParts(data, method, call_id, cseq, vias, from_tag, to_tag, mf, routes)


# -- helpers ---------------------------------------------------------------------------
def build(start: str, lines: list[str], body: bytes = b"") -> bytes:
    """Bytes of a message from its start line, header lines and body."""
    return (CRLF.join([start, *lines]) + CRLF + CRLF).encode("utf-8") + body


def torture(name: str) -> bytes:
    return (TORTURE_DIR / f"{name}.dat").read_bytes()


def torture_names() -> list[str]:
    return sorted(p.stem for p in TORTURE_DIR.glob("*.dat"))


def exercise(msg: Request | Response) -> None:
    """Touch every parsed field, ``check()`` and the serialisers.

    Each may raise ParseError (the message is malformed); anything else escapes
    and fails the calling test.
    """
    fields = ["call_id", "cseq", "vias", "top_via", "from_", "to", "max_forwards", "routes"]
    fields += ["record_routes", "contacts"]
    if isinstance(msg, Request):
        fields.append("request_uri")
    for name in fields:
        with contextlib.suppress(ParseError):
            getattr(msg, name)
    with contextlib.suppress(ParseError):
        msg.check()
    with contextlib.suppress(ParseError):
        msg.validate()
    for name in ("via", "route", "contact", "record-route"):
        with contextlib.suppress(ParseError):
            msg.values(name)
    msg.to_bytes()
    if isinstance(msg, Request):
        with contextlib.suppress(ParseError):
            msg.forwarded(
                via="SIP/2.0/UDP proxy.example.net;branch=z9hG4bKfuzz",
                uri="sip:carrier.example.net",
                max_forwards=69,
                pop_route=True,
                record_route="<sip:proxy.example.net;lr>",
            )
        answer = parse_message(make_response(msg, 400))
        assert isinstance(answer, Response)
        assert answer.status == 400
    else:
        with contextlib.suppress(ParseError):
            msg.without_top_via()
