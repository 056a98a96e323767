"""Plain data shared by the proxy core and its asyncio adapter."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..health import FailureTable, Verdict
from ..sip import DEFAULT_LIMITS, Limits, TimerConfig, Uri

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a message came from or goes to: transport and remote address."""

    transport: str  # "udp" or "tcp"
    addr: Addr

    def __str__(self) -> str:
        host, port = self.addr
        return f"{self.transport}:{host}:{port}"


@dataclass(frozen=True, slots=True)
class Target:
    """A place a call can be sent: a carrier trunk (later also a server of a pool)."""

    name: str
    uri: Uri
    flow: Flow
    failures: FailureTable = field(default_factory=FailureTable)


@dataclass(frozen=True, slots=True)
class Plan:
    """The targets a call will try, in order; ``panic`` when all were out of rotation."""

    targets: list[Target]
    panic: bool = False
    overflow: list[str] = field(default_factory=list)  # healthy targets skipped as full
    number: str | None = None  # the E.164 number to dial, when routing normalised it
    rejected: tuple[int, str] | None = None  # (status, why): blocked or undialable
    explain: list[str] = field(default_factory=list)  # one line per candidate target

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    advertise: Addr
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    invite_timeout: float = 2.0
    max_attempts: int = 3
    time_budget: float = 10.0
    ring_timeout: float = 180.0
    dialog_max_age: float = 4 * 3600.0
    timers: TimerConfig = field(default_factory=TimerConfig)
    limits: Limits = DEFAULT_LIMITS


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """How one attempt of one call ended: what the health engine and the logs are fed."""

    call_id: str
    target: str
    attempt: int
    status: int | None  # None: no response (timeout or unreachable)
    kind: str  # "response", "timeout", "unreachable", "cancelled", "budget"
    verdict: Verdict | None
    started: float
    ended: float
    first_response: float | None  # time of the first 100/18x, for post-dial delay
    retry_after: float | None = None  # a 503's Retry-After, seconds

    @property
    def post_dial_delay(self) -> float | None:
        return None if self.first_response is None else self.first_response - self.started
