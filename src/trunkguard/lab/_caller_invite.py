"""What the caller puts on the wire first: its addresses, its Via, its INVITE with an offer."""

from __future__ import annotations

from dataclasses import dataclass

from ..sip import Request, make_request, new_branch, parse_message
from ._caller_dialog import Addr


def hostport(addr: Addr) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def via(local: Addr, branch: str) -> str:
    # rport (RFC 3581): responses come back to the port we sent from.
    return f"SIP/2.0/UDP {hostport(local)};branch={branch};rport"


def offer(host: str) -> bytes:
    """An SDP offer, as a dialer sends it; no media ever flows (port 9, discard)."""
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=trunkguard 1 1 IN {ip} {host}",
        "s=-",
        f"c=IN {ip} {host}",
        "t=0 0",
        "m=audio 9 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def with_body(data: bytes, body: bytes) -> bytes:
    """Our own request with ``body`` and its Content-Length (make_request writes none)."""
    message = parse_message(data)
    assert isinstance(message, Request)
    headers = [h for h in message.headers if h.name != "content-length"]
    return Request(message.method, message.uri, headers, body).to_bytes()


@dataclass(frozen=True, slots=True)
class Invite:
    data: bytes
    request: Request  # parsed back: the ACK for a non-2xx and the CANCEL are built from it
    branch: str
    via: str


def make_invite(*, uri: str, from_: str, contact: str, call_id: str, local: Addr) -> Invite:
    branch = new_branch()
    top = via(local, branch)
    data = make_request(
        "INVITE",
        uri,
        via=top,
        from_=from_,
        to=f"<{uri}>",
        call_id=call_id,
        cseq=1,
        extra=[("Contact", f"<{contact}>"), ("Content-Type", "application/sdp")],
    )
    data = with_body(data, offer(local[0]))
    request = parse_message(data)
    assert isinstance(request, Request)
    return Invite(data, request, branch, top)
