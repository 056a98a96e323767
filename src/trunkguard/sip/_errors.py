"""Errors of the SIP core.

Every error a peer can cause carries the status code a server should answer
with (when an answer is possible at all) and the header it is about, so the
proxy can reply with a precise 400 and count the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._message import Request


class SipError(Exception):
    """Base of every error raised by :mod:`trunkguard.sip`."""


class ParseError(SipError):
    """A message could not be parsed or breaks a rule the proxy relies on.

    ``status`` is the response a server should send (400 unless a more
    precise code exists, e.g. 505 for an unknown SIP version); ``header`` names
    the offending header, if any.
    """

    def __init__(self, reason: str, *, status: int = 400, header: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.header = header
        # A request whose header section could be read although the message is invalid:
        # enough to address an error response to its sender.
        self.partial: Request | None = None

    def __str__(self) -> str:
        if self.header:
            return f"{self.header}: {self.reason}"
        return self.reason


class LimitError(ParseError):
    """A message exceeds a configured size limit (message, line or header count).

    Its status is 513 (Message Too Large) for the size of the whole message,
    400 for a line or header count over the limit.
    """


class TransactionError(SipError):
    """A transaction was driven with an input its state table does not allow.

    Network input never raises this (unexpected datagrams are absorbed as the
    RFC says); only a programming error in the transaction user does.
    """
