"""In-dialog keepalives: find a dialog whose endpoints are gone, and end it both ways.

Every ``dialog_keepalive`` seconds the router sends an OPTIONS inside each
answered dialog to both sides. The OPTIONS carries CSeq 0: an endpoint that
still has the dialog answers (a 200, or a 500 for a CSeq lower than it has
seen, which is just as good a sign of life) without its CSeq state moving,
so the endpoints' own later requests are never refused for it. A ``481`` (no
such dialog), ``404``/``410``, a ``408`` or no answer at all means that side
is gone: the router then sends BYE to both sides, frees the carrier's
capacity, and forgets the dialog. With Timer F at 32 s, a dead dialog ends
within interval + 32 s.

The requests are built here; the core sends them in client transactions.
"""

from __future__ import annotations

from collections.abc import Callable

from ..sip import ParseError, Response, make_request, split_name_addrs
from ._dialogs import Dialog

DEAD = frozenset({404, 408, 410, 481})
DEAD_REASON = 'SIP;cause=408;text="dialog keepalive failed"'


def build_options(dialog: Dialog, to_caller: bool, agent: str | None) -> Callable[[str], bytes]:
    """The OPTIONS toward one side, as a function of the Via the core puts on top."""
    uri, from_, to = _leg(dialog, to_caller)

    def build(via: str) -> bytes:
        return make_request(
            "OPTIONS", uri, via=via, from_=from_, to=to, call_id=dialog.call_id, cseq=0,
            agent=agent,
        )

    return build


def build_bye(dialog: Dialog, to_caller: bool, agent: str | None) -> Callable[[str], bytes]:
    """The BYE that ends a dead dialog on one side, after the highest CSeq that side saw.

    Toward the callee that is the caller's highest plus the dialog's CSeq offset: the
    callee saw the caller's requests renumbered (resent with credentials).
    """
    uri, from_, to = _leg(dialog, to_caller)
    seen = dialog.callee_cseq if to_caller else dialog.caller_cseq + dialog.cseq_offset
    cseq = seen + 1

    def build(via: str) -> bytes:
        return make_request(
            "BYE", uri, via=via, from_=from_, to=to, call_id=dialog.call_id, cseq=cseq,
            extra=[("Reason", DEAD_REASON)], agent=agent,
        )

    return build


def contact_uri(header: str) -> str:
    """The URI of a Contact header value, or "" when it has none that parses."""
    try:
        contacts = split_name_addrs(header, "Contact") if header.strip() not in ("", "*") else []
    except ParseError:
        return ""
    return str(contacts[0].uri) if contacts else ""


def _leg(dialog: Dialog, to_caller: bool) -> tuple[str, str, str]:
    """(Request-URI, From, To) of a request of ours toward one side of the dialog."""
    if to_caller:
        return contact_uri(dialog.caller_contact), dialog.callee_to, dialog.caller_from
    return contact_uri(dialog.callee_contact), dialog.caller_from, dialog.callee_to


class Probe:
    """One keepalive OPTIONS; tells ``on_dead`` when its side is gone."""

    __slots__ = ("call_id", "on_dead")

    def __init__(self, call_id: str, on_dead: Callable[[str, str, float], None]) -> None:
        self.call_id = call_id
        self.on_dead = on_dead

    def on_response(self, response: Response, now: float) -> None:
        if response.status in DEAD:
            self.on_dead(self.call_id, f"{response.status} to a keepalive", now)

    def on_failure(self, kind: str, now: float) -> None:
        self.on_dead(self.call_id, f"keepalive {kind}", now)


class Quiet:
    """The owner of a BYE for a dead dialog: nobody waits for its answer."""

    __slots__ = ()

    def on_response(self, response: Response, now: float) -> None:
        del response, now

    def on_failure(self, kind: str, now: float) -> None:
        del kind, now
