"""Where calls go: flows (transport and address), targets, and the plan of one call.

Plain data, shared by routing (which builds plans), the proxy core (which
follows them) and the adapters (which open sockets for targets).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..health import FailureTable
from ..sip import Uri
from ..sip._digest import Credentials

Addr = tuple[str, int]

CARRIER = "carrier"
POOL_MEMBER = "pool member"


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a message came from or goes to: transport and remote address.

    ``local`` is the address of the listening socket a message arrived on, so
    the answer leaves from the same socket; ``None`` for flows we open
    ourselves (to a target), which leave from the target's own socket. It
    takes no part in comparisons: one peer is one flow, whichever socket
    heard it.
    """

    transport: str  # "udp", "tcp" or "tls"
    addr: Addr
    local: Addr | None = field(default=None, compare=False)

    def __str__(self) -> str:
        host, port = self.addr
        return f"{self.transport}:{host}:{port}"


@dataclass(frozen=True, slots=True)
class TlsClient:
    """How to open TLS toward a target: whose certificate to expect, and ours."""

    server_name: str  # SNI and the name the certificate must carry (the carrier's domain)
    ca_file: str | None = None  # None: the system's trust store
    cert_file: str | None = None  # a client certificate, when the carrier asks for one
    key_file: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """A place a call can be sent: a carrier trunk (or one of its servers), or a pool's server.

    ``transit``: a call that arrives *from* this carrier may be sent back out
    to carriers; otherwise calls from a carrier (inbound DIDs) go to pools only.

    ``carrier`` is the carrier this target belongs to: its own name, unless
    the carrier's host is a DNS name whose records (SRV, A) are each a target
    of their own, named ``carrier/address:port``. ``priority`` and ``weight``
    are then the SRV record's. ``auth`` answers the carrier's 401/407.
    """

    name: str
    uri: Uri
    flow: Flow
    failures: FailureTable = field(default_factory=FailureTable)
    kind: str = CARRIER
    transit: bool = False
    carrier: str = ""
    priority: int = 0
    weight: int = 0
    auth: Credentials | None = None
    tls: TlsClient | None = None

    def __post_init__(self) -> None:
        if not self.carrier:
            object.__setattr__(self, "carrier", self.name)


@dataclass(slots=True)
class Plan:
    """The targets a call will try, in order; ``panic`` when all were out of rotation.

    Made once per call and not changed after (not frozen: a frozen dataclass's
    constructor costs a third of a whole plan).
    """

    targets: list[Target]
    panic: bool = False
    overflow: list[str] = field(default_factory=list)  # healthy targets skipped as full
    number: str | None = None  # the E.164 number to dial, when routing normalised it
    rejected: tuple[int, str] | None = None  # (status, why): blocked or undialable
    # One line per candidate target; written out on first read (routing.Explain).
    explain: Sequence[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)
