"""What the ``dialer:`` config section becomes: campaigns, their level tables, and where
changes go (VICIdial's non-agent API, a webhook), with secrets read."""

from __future__ import annotations

from dataclasses import dataclass, field

VICIDIAL = "vicidial"
WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class Step:
    """Below this share of the campaign's healthy capacity, dial at this level."""

    below: float  # 0 < below <= 1
    level: float


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    id: str
    normal: float  # the level to restore when capacity is back
    steps: tuple[Step, ...]  # highest ``below`` first; levels non-increasing
    prefixes: tuple[str, ...] = ()  # the numbers it dials (their carriers count)
    carriers: tuple[str, ...] = ()  # or the carriers it goes out by, named
    hysteresis: float = 0.1  # share above a step's bound before the level goes back up
    min_interval: float = 60.0  # seconds between two changes of this campaign
    dry_run: bool = False  # only log what would be sent


@dataclass(frozen=True, slots=True)
class VicidialSettings:
    """``non_agent_api.php``. ``password`` is never shown: not in repr, logs or notices."""

    url: str
    user: str
    password: str = field(repr=False)
    source: str = "trunkguard"
    timeout: float = 5.0
    retries: int = 2
    backoff: float = 1.0


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    url: str  # only its scheme and host are ever logged
    timeout: float = 5.0
    retries: int = 2
    backoff: float = 1.0
    secret: str | None = field(default=None, repr=False)
    secret_header: str | None = None


@dataclass(frozen=True, slots=True)
class DialerSettings:
    campaigns: tuple[CampaignSettings, ...] = ()
    vicidial: VicidialSettings | None = None
    webhook: WebhookSettings | None = None
    degraded: float = 0.5  # what a SUSPECT carrier counts for (UP: 1; DOWN, PROBING...: 0)
    retry_after: float = 30.0  # seconds before a change that did not reach the dialer is sent again
    router: str = ""  # the router's name in webhooks; "" for the host name


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: all of it that is ever logged."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    return f"{scheme}://{host}"


def describe(settings: DialerSettings) -> str:
    """What ``trunkguard check`` prints: campaigns and where changes go (no secrets)."""
    sinks = []
    if settings.vicidial is not None:
        sinks.append(f"VICIdial at {origin(settings.vicidial.url)}")
    if settings.webhook is not None:
        sinks.append(f"webhook {origin(settings.webhook.url)}")
    dry = [c.id for c in settings.campaigns if c.dry_run]
    text = f"{len(settings.campaigns)} campaign(s) to {', '.join(sinks) or 'nowhere'}"
    return text + (f" (dry run: {', '.join(dry)})" if dry else "")
