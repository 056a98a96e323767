"""What the ``alerts:`` config section becomes: the hooks and the damping, secrets read."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._policy import KINDS, DampingSettings

WEBHOOK = "webhook"
COMMAND = "command"
FORMATS = ("json", "slack", "pagerduty")


@dataclass(frozen=True, slots=True)
class HookSettings:
    """One hook. ``secret`` (from a file or the environment) is never shown: not in repr,
    not in logs; a webhook sends it as ``secret_header`` (or, for ``pagerduty``, as the
    routing key), a command gets it in ``TG_SECRET``."""

    name: str
    type: str  # WEBHOOK or COMMAND
    url: str = ""  # webhook; only its scheme and host are ever logged
    argv: tuple[str, ...] = ()  # command: argv[0] an absolute path
    timeout: float = 5.0  # seconds per attempt (a command: then it is killed)
    retries: int = 2  # webhook: attempts after the first
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    events: frozenset[str] = frozenset(KINDS)
    headers: tuple[tuple[str, str], ...] = ()
    secret: str | None = field(default=None, repr=False)
    secret_header: str | None = None
    secret_prefix: str = ""
    env: tuple[tuple[str, str], ...] = ()  # command: added to its environment
    queue: int = 100  # alerts waiting for this hook at most; beyond, the oldest go
    format: str = "json"


@dataclass(frozen=True, slots=True)
class AlertSettings:
    hooks: tuple[HookSettings, ...] = ()
    damping: DampingSettings = field(default_factory=DampingSettings)
    router: str = ""  # the router's name in alerts; "" for the host name
    stop_timeout: float = 3.0  # seconds a shutdown waits for queued alerts
