"""What a simulated carrier received and answered, as the lab and its tests read it.

A request is *new* the first time its transaction (Via branch, sent-by,
method) is seen and a *retransmission* after that, whatever the carrier did
with it: a blackholed INVITE and its retransmissions count as one INVITE and
some retransmissions. INVITEs are also counted once per Call-ID. Responses
count once per first sending; resending one (a retransmitted request, a timer)
counts in ``resent``. Memory is bounded: the oldest keys are forgotten first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

MAX_REMEMBERED = 200_000

_K = TypeVar("_K")


def remember(keys: dict[_K, None], key: _K, limit: int = MAX_REMEMBERED) -> bool:
    """Add ``key``; True if it was new. Past ``limit`` keys the oldest is dropped."""
    if key in keys:
        return False
    keys[key] = None
    if len(keys) > limit:
        del keys[next(iter(keys))]
    return True


@dataclass(slots=True)
class Counters:
    received: Counter[str] = field(default_factory=Counter)  # new requests, by method
    retransmissions: Counter[str] = field(default_factory=Counter)  # by method
    answered: Counter[int] = field(default_factory=Counter)  # first sendings, by status
    resent: int = 0  # responses sent again
    swallowed: int = 0  # requests that got no answer because the carrier was silent
    suppressed: int = 0  # responses due while silent, not sent
    unparsable: int = 0  # datagrams that were no valid SIP request
    stray_responses: int = 0  # responses: the carrier sends no requests
    ack_timeouts: int = 0  # finals never acknowledged (Timer H, or the 2xx given up)
    send_errors: int = 0  # the socket refused a datagram
    invites: int = 0  # distinct Call-IDs among the INVITEs
    byes_sent: int = 0  # false-answer: the carrier hung up
    bye_answers: int = 0  # responses to those BYEs (counted apart from stray responses)
    _transactions: dict[tuple[str, ...], None] = field(default_factory=dict)
    _call_ids: dict[str, None] = field(default_factory=dict)

    def request(self, method: str, transaction: tuple[str, ...], call_id: str) -> bool:
        """Count one request; True if it is new, False for a retransmission."""
        if not remember(self._transactions, transaction):
            self.retransmissions[method] += 1
            return False
        self.received[method] += 1
        if method == "INVITE" and remember(self._call_ids, call_id):
            self.invites += 1
        return True

    def response(self, status: int, resent: bool) -> None:
        if resent:
            self.resent += 1
        else:
            self.answered[status] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "received": dict(sorted(self.received.items())),
            "invites": self.invites,
            "retransmissions": dict(sorted(self.retransmissions.items())),
            "answered": {str(s): n for s, n in sorted(self.answered.items())},
            "resent": self.resent,
            "swallowed": self.swallowed,
            "suppressed": self.suppressed,
            "unparsable": self.unparsable,
            "stray_responses": self.stray_responses,
            "ack_timeouts": self.ack_timeouts,
            "send_errors": self.send_errors,
            "byes_sent": self.byes_sent,
            "bye_answers": self.bye_answers,
        }
