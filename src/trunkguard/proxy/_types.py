"""Plain data shared by the proxy core and its asyncio adapter."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..health import Verdict
from ..routing import Addr, Flow, Plan, Target
from ..sip import DEFAULT_LIMITS, Limits, TimerConfig
from ._overload import OverloadSettings
from ._sources import SourceSettings

__all__ = [
    "Addr",
    "Alarm",
    "AttemptRecord",
    "Flow",
    "Plan",
    "ProxySettings",
    "RegistrationEvent",
    "Target",
]


@dataclass(frozen=True, slots=True)
class ProxySettings:
    advertise: Addr
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    invite_timeout: float = 2.0
    max_attempts: int = 3  # carriers a call tries at most
    max_destinations: int = 2  # destinations (DNS records) of one carrier a call tries at most
    time_budget: float = 10.0
    ring_timeout: float = 180.0
    dialog_max_age: float = 4 * 3600.0
    timers: TimerConfig = field(default_factory=TimerConfig)
    limits: Limits = DEFAULT_LIMITS
    reject: str = "drop"  # what a source not in allow gets: "drop" (nothing) or "403"
    server_header: str | None = None  # Server/User-Agent value; None: no such header
    secret: bytes = b""  # key of the signed Record-Route; empty: a random one per process
    drain_timeout: float = 10.0  # on SIGTERM, how long calls in setup may take to finish
    dialog_keepalive: float | None = None  # seconds between in-dialog OPTIONS; None: off
    # Caps of the tables (see config.LimitsConfig): live transactions (a new call beyond it
    # gets our own 503), finished ones kept for retransmissions, and dialogs (oldest go first).
    max_transactions: int = 200_000
    max_finished: int = 500_000
    max_dialogs: int = 200_000
    overload: OverloadSettings = field(default_factory=OverloadSettings)
    sources: SourceSettings = field(default_factory=SourceSettings)


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
    carrier: str = ""  # the target's carrier (a DNS carrier has a target per destination)

    @property
    def post_dial_delay(self) -> float | None:
        return None if self.first_response is None else self.first_response - self.started


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as it went, from its INVITE to its end: for call records, metrics and logs.

    Handed out once per call: when its final response went to the caller, unless
    that was a 2xx; an answered call's record comes when its dialog ends (``ended``,
    ``end`` say how). Times are on the core's clock. Calls refused before any
    state was made for them (shed under overload, over a source's limit, a
    malformed request) have no record; they are counted.
    """

    call_id: str
    number: str  # the number dialed (as routing normalised it, when it did)
    source: str  # the caller's address
    plan: tuple[str, ...]  # the targets the plan offered, in order
    explain: Sequence[str]  # the plan's reason for each candidate (built when read)
    attempts: tuple[AttemptRecord, ...]
    status: int  # the final status the caller got
    started: float
    answered: float | None  # when the 2xx went to the caller
    ended: float
    end: str  # "failed", "cancelled", "refused"; answered: "bye", "dead:<why>", "expired", ...
    overflow: tuple[str, ...] = ()  # healthy targets the plan skipped as full (not a fault)

    @property
    def carrier(self) -> str | None:
        """The carrier that answered, if one did."""
        if self.answered is None or not self.attempts:
            return None
        return self.attempts[-1].carrier or self.attempts[-1].target


@dataclass(frozen=True, slots=True)
class Alarm:
    """A problem an operator must fix (credentials a carrier rejects): raised once, not per call."""

    target: str
    kind: str  # "credentials"
    detail: str  # never a credential
    at: float


@dataclass(frozen=True, slots=True)
class RegistrationEvent:
    """A carrier's registration changed state; for the event log and the logs."""

    carrier: str
    state: str
    detail: str
    at: float
    expires: float | None = None  # seconds granted, when REGISTERED
