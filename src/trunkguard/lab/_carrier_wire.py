"""The responses a simulated carrier writes, on top of :func:`trunkguard.sip.make_response`.

Every response names its carrier in ``X-Sim-Carrier`` so that a caller behind
a router can tell which carrier answered. Responses to an INVITE that open a
dialog (18x, 2xx) carry a Contact and the request's Record-Route set (RFC 3261
§12.1.1), so the caller's ACK and BYE come back through the router that
record-routed; the 200 carries a small SDP answer (PCMU, no media is sent).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..sip import Request, make_response

HEADER = "X-Sim-Carrier"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER"
SDP_TYPE = "application/sdp"
MEDIA_PORT = 40000
_NO_BODY = b"Content-Length: 0\r\n\r\n"


def sdp_answer(name: str, host: str) -> bytes:
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o={name} 1 1 IN {family} {host}",
        "s=trunkguard sim-carrier",
        f"c=IN {family} {host}",
        "t=0 0",
        f"m=audio {MEDIA_PORT} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def with_body(message: bytes, content_type: str, body: bytes) -> bytes:
    """``message`` (as make_response writes it, without a body) with ``body`` added."""
    if not message.endswith(_NO_BODY):
        raise ValueError("message does not end with an empty Content-Length")
    head = message[: -len(_NO_BODY)]
    tail = f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head + tail.encode() + body


def build_response(
    request: Request,
    status: int,
    carrier: str,
    *,
    tag: str | None = None,
    contact: str | None = None,
    retry_after: int | None = None,
    extra: Sequence[tuple[str, str]] = (),
    sdp: bytes | None = None,
) -> bytes:
    """A response of carrier ``carrier``; ``contact`` is set for dialog-opening responses."""
    headers: list[tuple[str, str]] = [(HEADER, carrier)]
    if contact is not None:
        headers += [("Record-Route", rr) for rr in request.get_all("record-route")]
        headers.append(("Contact", f"<{contact}>"))
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    headers += extra
    data = make_response(request, status, to_tag=tag, extra=headers)
    return data if sdp is None else with_body(data, SDP_TYPE, sdp)
