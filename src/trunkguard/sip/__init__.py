"""Sans-IO SIP core: messages, URIs, Via, transactions (RFC 3261).

Nothing here touches a socket or a clock: callers pass bytes and ``now`` in
and get bytes, timers and events out.
"""

from ._build import (
    REASONS,
    make_ack,
    make_cancel,
    make_request,
    make_response,
    new_branch,
    new_tag,
)
from ._errors import LimitError, ParseError, SipError, TransactionError
from ._message import (
    DEFAULT_LIMITS,
    CSeq,
    Header,
    Limits,
    Message,
    Request,
    Response,
    StreamFramer,
    parse_message,
)
from ._transaction import (
    ALL_TRANSACTIONS,
    ClientInvite,
    ClientNonInvite,
    Deliver,
    Event,
    Send,
    ServerInvite,
    ServerNonInvite,
    Terminated,
    TimedOut,
    TimerConfig,
    Transaction,
    TransportFailed,
)
from ._uri import NameAddr, Uri, parse_name_addr, parse_uri, split_hostport, split_name_addrs
from ._via import MAGIC_COOKIE, Via, parse_via

__all__ = [
    "ALL_TRANSACTIONS",
    "DEFAULT_LIMITS",
    "MAGIC_COOKIE",
    "REASONS",
    "CSeq",
    "ClientInvite",
    "ClientNonInvite",
    "Deliver",
    "Event",
    "Header",
    "LimitError",
    "Limits",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "Send",
    "ServerInvite",
    "ServerNonInvite",
    "SipError",
    "StreamFramer",
    "Terminated",
    "TimedOut",
    "TimerConfig",
    "Transaction",
    "TransactionError",
    "TransportFailed",
    "Uri",
    "Via",
    "make_ack",
    "make_cancel",
    "make_request",
    "make_response",
    "new_branch",
    "new_tag",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "split_hostport",
    "split_name_addrs",
]
