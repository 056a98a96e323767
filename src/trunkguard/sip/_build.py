"""Messages the proxy writes itself: its responses, ACK for non-2xx, CANCEL, BYE, OPTIONS."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ._message import Request, Response
from ._via import MAGIC_COOKIE

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

def new_branch() -> str:
    return MAGIC_COOKIE + os.urandom(8).hex()


def new_tag() -> str:
    return os.urandom(6).hex()


def _lines(*pairs: tuple[str, str]) -> list[str]:
    return [f"{n}: {v}" for n, v in pairs]


def _encode(start: str, lines: Sequence[str], body: bytes = b"") -> bytes:
    head = start + "\r\n" + "\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    agent: str | None = None,
) -> bytes:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, Call-ID, CSeq copied as received.

    Copies the raw header lines, so it works for a request that failed
    validation too (the 400 for a malformed request still reaches its sender).
    ``agent`` is the Server header's value; without it there is none, so a
    response says nothing about the product that wrote it.
    """
    lines: list[str] = []
    lines += request.raw_lines("via")
    lines += request.raw_lines("from")
    to_raw = request.raw_lines("to")
    if to_raw and to_tag and status > 100:
        try:
            has_tag = request.to.tag is not None
        except Exception:  # a malformed To: answer without adding a tag
            has_tag = True
        lines.append(to_raw[0] if has_tag else f"{to_raw[0]};tag={to_tag}")
    else:
        lines += to_raw[:1]
    lines += request.raw_lines("call-id")[:1]
    lines += request.raw_lines("cseq")[:1]
    lines += _lines(*extra)
    if agent:
        lines.append(f"Server: {agent}")
    return _encode(f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}", lines)


def make_ack(
    invite: Request,
    response: Response,
    *,
    uri: str,
    via: str,
    routes: Sequence[str],
    cseq: int | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """ACK for a non-2xx final response, sent by the client transaction (RFC 3261 §17.1.1.3).

    ``uri``, ``via`` and ``routes`` are those of the INVITE as it was sent on
    this branch; To comes from the response (it carries the remote tag).
    ``cseq`` and ``extra`` are the branch's own when it resent the INVITE with
    credentials: the ACK carries the same CSeq and credentials (RFC 3261 §22.1).
    """
    lines = [f"Via: {via}", "Max-Forwards: 70"]
    lines += invite.raw_lines("from")
    lines += response.raw_lines("to")[:1]
    lines += invite.raw_lines("call-id")[:1]
    lines.append(f"CSeq: {invite.cseq.number if cseq is None else cseq} ACK")
    lines += [f"Route: {r}" for r in routes]
    lines += [f"{name}: {value}" for name, value in extra]
    return _encode(f"ACK {uri} SIP/2.0", lines)


def make_cancel(
    invite: Request,
    *,
    uri: str,
    via: str,
    routes: Sequence[str],
    cseq: int | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """CANCEL for the INVITE sent on one branch (RFC 3261 §9.1): same branch, same To.

    For an INVITE resent with credentials, ``cseq`` is its CSeq number and
    ``extra`` its credentials, which the CANCEL repeats: a CANCEL cannot be
    challenged (RFC 3261 §22.1).
    """
    lines = [f"Via: {via}", "Max-Forwards: 70"]
    lines += invite.raw_lines("from")
    lines += invite.raw_lines("to")[:1]
    lines += invite.raw_lines("call-id")[:1]
    lines.append(f"CSeq: {invite.cseq.number if cseq is None else cseq} CANCEL")
    lines += [f"Route: {r}" for r in routes]
    lines += [f"{name}: {value}" for name, value in extra]
    return _encode(f"CANCEL {uri} SIP/2.0", lines)


def make_request(
    method: str,
    uri: str,
    *,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    routes: Sequence[str] = (),
    extra: Sequence[tuple[str, str]] = (),
    agent: str | None = None,
) -> bytes:
    """A request of the proxy's own: OPTIONS keepalives, the ACK and BYE for a stray 2xx.

    ``agent`` is the User-Agent header's value; without it there is none.
    """
    lines = [f"Via: {via}", "Max-Forwards: 70", f"From: {from_}", f"To: {to}"]
    lines += [f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
    lines += [f"Route: {r}" for r in routes]
    lines += _lines(*extra)
    if agent:
        lines.append(f"User-Agent: {agent}")
    return _encode(f"{method} {uri} SIP/2.0", lines)
