"""Late answers on a branch the call gave up on: the requests that leave no leg billing.

A 2xx nobody wanted gets an ACK (again for each retransmission of it) and one
BYE, both inside the dialog the 2xx made: to its Contact, along its
Record-Route. The call table decides when; these build the bytes.
"""

from __future__ import annotations

from ..sip import ParseError, Response, make_request

BYE_REASON = 'SIP;cause=200;text="Call completed elsewhere"'


def _leg(branch_uri: str, response: Response) -> tuple[str, list[str], str]:
    """Where requests inside a stray 2xx's dialog go: (target, routes, To)."""
    try:
        contacts = response.contacts
    except ParseError:
        contacts = []
    target_uri = str(contacts[0].uri) if contacts else branch_uri
    routes = [v for v in reversed(response.values("record-route"))]
    return target_uri, routes, response.get("to") or ""


def stray_request(
    method: str,
    from_: str,
    call_id: str,
    response: Response,
    *,
    branch_uri: str,
    via: str,
    agent: str | None,
    auth: tuple[str, str] | None = None,
) -> bytes:
    """The ACK (same CSeq as the INVITE) or the BYE (the next CSeq) for a stray 2xx.

    ``from_`` and ``call_id`` are the INVITE's (From with its tag). ``auth`` is
    the branch's credentials, when its INVITE was resent with them: the ACK
    repeats them (RFC 3261 §22.1).
    """
    target_uri, routes, to = _leg(branch_uri, response)
    bye = method == "BYE"
    extra = [("Reason", BYE_REASON)] if bye else [auth] if auth is not None else []
    return make_request(
        method,
        target_uri,
        via=via,
        from_=from_,
        to=to,
        call_id=call_id,
        cseq=response.cseq.number + (1 if bye else 0),  # the branch's own CSeq
        routes=routes,
        extra=extra,
        agent=agent,
    )
