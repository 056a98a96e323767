"""The router's YAML config, validated with pydantic.

Every error names the file, the YAML line, the field and why, and all errors
are reported at once. The minimal file (listen, allow, carriers) is the
contract: later sections are optional, with defaults.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .agi import AgiSettings, check_dial
from .alerts import AlertSettings, DampingSettings, HookSettings
from .dialer import CampaignSettings, DialerSettings, Step, VicidialSettings, WebhookSettings
from .dns import Destination, DnsSettings, Query
from .ha._settings import HaSettings
from .health import FailureTable, HealthPolicy, OutcomeClass
from .prober import ProbeSettings
from .proxy import ProxySettings
from .proxy._overload import OverloadSettings
from .proxy._sources import Limit, SourceSettings
from .quality import QualitySettings
from .register import RegisterSettings
from .routing import (
    POOL_MEMBER,
    CarrierRoute,
    DeckColumns,
    DeckError,
    Flow,
    NumberRules,
    PoolMember,
    RouteRule,
    RoutingTable,
    ServerPool,
    Target,
    TlsClient,
    load_deck,
)
from .sip import Limits, ParseError, TimerConfig, Uri, parse_uri
from .sip._digest import Credentials

Seconds = Annotated[float, Field(gt=0, le=86_400)]


class Strict(BaseModel):
    # Inputs may be secrets: a ValidationError's text never quotes them.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


@dataclass(frozen=True, slots=True)
class Listen:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


def parse_listen(text: str) -> Listen:
    """``udp:HOST:PORT``, ``tcp:HOST:PORT`` or ``tls:HOST:PORT`` (IPv6 as ``udp:[::1]:5060``)."""
    transport, sep, rest = text.partition(":")
    if not sep or transport.lower() not in ("udp", "tcp", "tls"):
        raise ValueError(f"{text!r}: expected udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: expected a port number after the host")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    return Listen(transport.lower(), host, int(port_text))


_URI_PASSWORD = re.compile(r"^(sips?:[^:@;?]*):[^@]*@", re.IGNORECASE)


def _check_target_uri(value: str) -> str:
    shown = _URI_PASSWORD.sub(r"\1:***@", value)  # errors never show a password
    if shown != value:
        raise ValueError(f"{shown!r}: a password does not belong in the URI")
    try:
        uri = parse_uri(value)
    except ParseError as exc:
        raise ValueError(exc.reason) from None
    if not uri.is_sip:
        raise ValueError(f"{shown!r}: a carrier URI must be sip:")
    transport = str(uri.params.get("transport") or "").lower()
    if transport not in ("", "udp", "tcp", "tls"):
        raise ValueError(f"{shown!r}: transport must be udp, tcp or tls")
    if uri.scheme == "sips" and transport == "udp":
        raise ValueError(f"{shown!r}: a sips: URI cannot use transport=udp")
    return value


def uri_transport(uri: Uri) -> str:
    """udp, tcp or tls: what a target URI asks for (``sips:`` is TLS)."""
    transport = str(uri.params.get("transport") or "").lower()
    if uri.scheme == "sips" or transport == "tls":
        return "tls"
    return transport or "udp"


def uri_flow(uri: Uri) -> Flow:
    """Where a URI with an IP or a host name resolved once (getaddrinfo) sends to: its
    transport, address and port (5060, or 5061 for TLS, when it names none)."""
    transport = uri_transport(uri)
    port = uri.port or (5061 if transport == "tls" else 5060)
    return Flow(transport, (resolve(uri.host), port))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _check_codes(value: dict[int, OutcomeClass]) -> dict[int, OutcomeClass]:
    for code in value:
        if not 300 <= code <= 699:
            raise ValueError(f"status {code}: only 300-699 can be classified")
    return value


_DIGITS = r"^[0-9]{1,20}$"
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?")


class DeckConfig(Strict):
    """A carrier's CSV rate deck and which columns hold what (header names)."""

    path: str
    prefix: str = "prefix"
    rate: str = "rate"
    connection_fee: str | None = None
    increment: str | None = None
    effective: str | None = None
    description: str | None = None

    def columns(self) -> DeckColumns:
        return DeckColumns(
            prefix=self.prefix,
            rate=self.rate,
            connection_fee=self.connection_fee,
            increment=self.increment,
            effective=self.effective,
            description=self.description,
        )


class NumbersConfig(Strict):
    country_code: str = Field(default="", pattern=r"^[0-9]{0,4}$")
    national_prefix: str = Field(default="", pattern=r"^[0-9]{0,3}$")
    international_prefixes: list[str] = Field(default_factory=lambda: ["011", "00"])
    national_lengths: list[int] = Field(default_factory=list)
    tech_prefixes: list[str] = Field(default_factory=list)

    def rules(self) -> NumberRules:
        return NumberRules(
            country_code=self.country_code,
            national_prefix=self.national_prefix,
            international_prefixes=tuple(self.international_prefixes),
            national_lengths=tuple(self.national_lengths),
            tech_prefixes=tuple(self.tech_prefixes),
        )


class RouteConfig(Strict):
    prefix: str = Field(pattern=_DIGITS)
    pin: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


class QualityConfig(Strict):
    """Quality in route choice: carriers well below their peers for a destination go last."""

    enabled: bool = False
    window: Seconds = 600.0
    min_samples_asr: int = Field(default=30, ge=1, le=100_000)
    min_samples_pdd: int = Field(default=30, ge=1, le=100_000)
    min_samples_acd: int = Field(default=10, ge=1, le=100_000)
    short_call: float = Field(default=6.0, gt=0, le=3_600)
    well_below: float = Field(default=0.5, gt=0, lt=1)
    pdd_margin: float = Field(default=1.0, ge=0, le=60)
    min_asr: float | None = Field(default=None, ge=0, le=1)
    max_short_share: float | None = Field(default=None, ge=0, le=1)
    min_acd: float | None = Field(default=None, ge=0, le=86_400)
    max_pdd: float | None = Field(default=None, gt=0, le=600)
    groups: list[Annotated[str, Field(pattern=_DIGITS)]] = Field(default_factory=list)
    group_digits: int = Field(default=0, ge=0, le=8)

    def settings(self, route_prefixes: Sequence[str] = ()) -> QualitySettings:
        """The tracker's settings; the prefixes of ``routes:`` are groups too."""
        return QualitySettings(
            window=self.window,
            min_asr_samples=self.min_samples_asr,
            min_pdd_samples=self.min_samples_pdd,
            min_acd_samples=self.min_samples_acd,
            short_call=self.short_call,
            well_below=self.well_below,
            pdd_margin=self.pdd_margin,
            min_asr=self.min_asr,
            max_short_share=self.max_short_share,
            min_acd=self.min_acd,
            max_pdd=self.max_pdd,
            groups=tuple(dict.fromkeys([*self.groups, *route_prefixes])),
            group_digits=self.group_digits,
        )


class PoolMemberConfig(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    uri: str
    tier: int = Field(default=1, ge=1, le=9)
    weight: int = Field(default=1, ge=0, le=1000)
    max_calls: int | None = Field(default=None, ge=1, le=1_000_000)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _check_target_uri(value)


class PoolConfig(Strict):
    """Servers that take the calls to some numbers (inbound DIDs, say), in tiers."""

    name: str = Field(min_length=1, max_length=64)
    prefixes: list[str] = Field(min_length=1)
    preempt_delay: Seconds = 60.0
    members: list[PoolMemberConfig] = Field(min_length=1)

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not (prefix.isascii() and prefix.isdigit() and len(prefix) <= 20):
                raise ValueError(f"prefix {prefix!r}: expected 1-20 digits")
        return value


_USER = r"^[^\x00-\x1f\x7f\"\\]{1,128}$"


class AuthConfig(Strict):
    """Digest credentials for a carrier: the password inline, in a file, or in the environment."""

    user: str = Field(pattern=_USER)
    password: str | None = Field(default=None, min_length=1, max_length=256, repr=False)
    password_file: str | None = Field(default=None, min_length=1, repr=False)
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    realm: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_password(self) -> AuthConfig:
        given = [k for k in ("password", "password_file", "password_env") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of password, password_file, password_env")
        return self

    def credentials(self, base: Path) -> Credentials:
        """The credentials, reading the password file or variable now; ConfigError if missing."""
        password = self.password
        if self.password_file is not None:
            path = base / self.password_file
            try:
                password = path.read_text(encoding="utf-8").strip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError([f"password_file {path}: cannot read it ({why})"]) from None
            if not password:
                raise ConfigError([f"password_file {path}: it is empty"])
        elif self.password_env is not None:
            password = os.environ.get(self.password_env)
            if not password:
                raise ConfigError([f"password_env {self.password_env}: not set in the environment"])
        assert password is not None
        return Credentials(self.user, password, self.realm)


class RegisterConfig(AuthConfig):
    """Outbound registration: the carrier takes calls from us only while we are registered."""

    expires: int = Field(default=300, ge=5, le=86_400)
    contact_user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.!~*'()&=+$,;?/\-]{1,64}$")
    registrar: str | None = None  # sip:host[:port]; default: the carrier's host
    timeout: Seconds = 2.0  # a REGISTER unanswered this long counts as a timeout
    lost_after: int = Field(default=3, ge=1, le=100)  # timeouts in a row: registration lost
    retry_max: Seconds = 300.0

    @field_validator("registrar")
    @classmethod
    def _registrar(cls, value: str | None) -> str | None:
        if value is not None:
            _check_target_uri(value)
        return value


class TlsClientConfig(Strict):
    """TLS toward a carrier: the CA to trust (default: the system's), and our certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = Field(default=None, min_length=1, max_length=253)
    verify: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsClientConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together")
        return self


class TlsListenConfig(Strict):
    """The certificate of the router's own tls: listeners (for callers)."""

    cert_file: str
    key_file: str
    ca_file: str | None = None  # to verify callers' certificates
    verify_clients: bool = False


class DnsConfig(Strict):
    """The resolver for carrier host names (RFC 3263): servers as IP or IP:port."""

    servers: list[str] = Field(default_factory=list)  # empty: the system's resolver
    timeout: Seconds = 2.0
    min_ttl: Seconds = 1.0
    max_ttl: Seconds = 3600.0

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for item in value:
            dns_server(item)
        return value

    def server_list(self) -> tuple[tuple[str, int], ...]:
        return tuple(dns_server(item) for item in self.servers)


def dns_server(text: str) -> tuple[str, int]:
    """``127.0.0.1``, ``127.0.0.1:5353``, ``::1`` or ``[::1]:5353``."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not (rest.startswith(":") and rest[1:].isdigit()):
                raise ValueError(f"{text!r}: expected [IPv6]:PORT")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"{text!r}: expected IP:PORT")
        port = int(port_text)
    if not is_ip(host) or not 0 < port < 65536:
        raise ValueError(f"{text!r}: expected an IP address, optionally with :PORT")
    return host, port


class CarrierConfig(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    uri: str
    registration: RegisterConfig | None = Field(default=None, alias="register")
    auth: AuthConfig | None = None  # answers 401/407; default: the register credentials
    tls: TlsClientConfig | None = None
    failures: dict[int, OutcomeClass] = Field(default_factory=dict)
    q850: dict[int, OutcomeClass] = Field(default_factory=dict)
    dialstatus: dict[str, OutcomeClass] = Field(default_factory=dict)
    max_calls: int | None = Field(default=None, ge=1, le=1_000_000)
    max_cps: float | None = Field(default=None, gt=0, le=100_000)
    deck: DeckConfig | None = None
    priority: int = Field(default=0, ge=0, le=1000)
    weight: int = Field(default=1, ge=0, le=1000)
    transit: bool = False  # calls arriving from this carrier may go out to carriers again
    # What Asterisk's Dial() takes for this carrier, for the FastAGI route advisor (agi:).
    dial: str | None = None

    @field_validator("dial")
    @classmethod
    def _dial(cls, value: str | None) -> str | None:
        return None if value is None else check_dial(value)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _check_target_uri(value)

    @field_validator("failures")
    @classmethod
    def _codes(cls, value: dict[int, OutcomeClass]) -> dict[int, OutcomeClass]:
        return _check_codes(value)


class FailoverConfig(Strict):
    invite_timeout: Seconds = 2.0
    max_attempts: int = Field(default=3, ge=1, le=20)  # carriers a call tries at most
    # ...and destinations (SRV/A records) of one carrier's name
    max_destinations: int = Field(default=2, ge=1, le=20)
    time_budget: Seconds = 10.0
    ring_timeout: Seconds = 180.0
    # How long a dialog is kept without a BYE (an abandoned or unanswered one).
    dialog_max_age: float = Field(default=14_400.0, ge=60, le=604_800)


class DialogKeepaliveConfig(Strict):
    interval: float | None = Field(default=None, ge=10, le=86_400)  # None: off


class ShutdownConfig(Strict):
    drain_timeout: float = Field(default=10.0, ge=0, le=3_600)  # calls in progress may end


class LimitsConfig(Strict):
    max_message: int = Field(default=65_535, ge=1_024, le=1_048_576)
    max_headers: int = Field(default=128, ge=16, le=1_024)
    max_line: int = Field(default=8_192, ge=256, le=65_535)
    # Caps of the proxy's tables, so memory stays bounded whatever comes in:
    # live transactions (a new call beyond it gets the router's own 503 + Retry-After),
    max_transactions: int = Field(default=200_000, ge=100, le=10_000_000)
    # finished ones, kept (as small records) to absorb retransmissions for up to 32 s
    # (the oldest goes first: about 4 per call, so 1,000 calls/s need some 130,000),
    max_finished: int = Field(default=500_000, ge=100, le=10_000_000)
    # and dialogs (the oldest goes first; its in-dialog requests still find their way
    # by the signed Record-Route).
    max_dialogs: int = Field(default=200_000, ge=100, le=10_000_000)


class OverloadConfig(Strict):
    """When the router itself is overloaded, new calls are refused early (the rest flows)."""

    enabled: bool = True
    policy: Literal["503", "drop"] = "503"  # a refused call gets 503 + Retry-After, or nothing
    retry_after: int = Field(default=1, ge=0, le=3_600)
    queue_high: int = Field(default=1_048_576, ge=4_096, le=1 << 30)  # bytes in a socket queue
    lag_high: float = Field(default=0.05, gt=0, le=10)  # seconds of event-loop lag
    busy_high: float = Field(default=0.95, gt=0, le=1)  # share of time on input
    max_memory_mb: int | None = Field(default=None, ge=32, le=1_048_576)  # resident memory cap
    rfc7339: bool = False  # oc parameters in the top Via toward callers that send them
    oc_validity: int = Field(default=500, ge=0, le=86_400_000)  # ms

    @field_validator("policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> Any:
        # YAML reads `policy: 503` as a number.
        return "503" if value == 503 and not isinstance(value, bool) else value

    def settings(self) -> OverloadSettings:
        return OverloadSettings(
            enabled=self.enabled,
            policy=self.policy,
            retry_after=self.retry_after,
            queue_high=self.queue_high,
            lag_high=self.lag_high,
            busy_high=self.busy_high,
            max_memory=None if self.max_memory_mb is None else self.max_memory_mb << 20,
            oc=self.rfc7339,
            oc_validity=self.oc_validity,
        )


class SourceLimitConfig(Strict):
    """Limits of one class of sources, per source address; null: no such limit."""

    calls_per_s: float | None = Field(default=None, gt=0, le=1_000_000)
    concurrent_calls: int | None = Field(default=None, ge=1, le=10_000_000)
    messages_per_s: float | None = Field(default=None, gt=0, le=10_000_000)
    ban: bool = True  # over a limit: banned; false: only the excess is refused
    burst: float = Field(default=2.0, gt=0, le=3_600)  # seconds of the rate a source may burst

    def limit(self) -> Limit:
        return Limit(
            calls_per_s=self.calls_per_s,
            concurrent_calls=self.concurrent_calls,
            messages_per_s=self.messages_per_s,
            ban=self.ban,
            burst=self.burst,
        )


class SourceNetworkConfig(SourceLimitConfig):
    net: ipaddress.IPv4Network | ipaddress.IPv6Network

    @field_validator("net", mode="before")
    @classmethod
    def _net(cls, value: Any) -> Any:
        try:
            return ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an address or network") from None


def _default_source_limit() -> SourceLimitConfig:
    return SourceLimitConfig(calls_per_s=500, concurrent_calls=20_000, messages_per_s=10_000)


class SourceLimitsConfig(Strict):
    """Per-source limits and bans (pike/ratelimit): allowed sources, carriers, networks."""

    enabled: bool = True
    default: SourceLimitConfig = Field(default_factory=_default_source_limit)
    carriers: SourceLimitConfig = Field(default_factory=lambda: SourceLimitConfig(ban=False))
    networks: list[SourceNetworkConfig] = Field(default_factory=list)
    ban_for: Seconds = 10.0
    ban_max: Seconds = 600.0
    max_sources: int = Field(default=100_000, ge=16, le=10_000_000)
    max_bans: int = Field(default=10_000, ge=16, le=10_000_000)

    @model_validator(mode="after")
    def _bans(self) -> SourceLimitsConfig:
        if self.ban_max < self.ban_for:
            raise ValueError("ban_max cannot be shorter than ban_for")
        return self

    def settings(self) -> SourceSettings:
        return SourceSettings(
            enabled=self.enabled,
            default=self.default.limit(),
            carriers=self.carriers.limit(),
            networks=tuple((n.net, n.limit()) for n in self.networks),
            ban_for=self.ban_for,
            ban_max=self.ban_max,
            max_sources=self.max_sources,
            max_bans=self.max_bans,
        )


class TimersConfig(Strict):
    t1: Seconds = 0.5
    t2: Seconds = 4.0
    t4: Seconds = 5.0


class HealthConfig(Strict):
    consecutive_faults: int = Field(default=5, ge=1, le=1000)
    window_size: int = Field(default=20, ge=1, le=10_000)
    window_ratio: float = Field(default=0.5, gt=0, le=1)
    window_min_volume: int = Field(default=10, ge=1, le=10_000)
    probe_failures: int = Field(default=3, ge=1, le=100)
    probe_successes: int = Field(default=2, ge=0, le=100)
    trial_calls: int = Field(default=3, ge=0, le=100)
    hold_down: Seconds = 30.0
    hold_down_max: Seconds = 600.0
    hold_down_window: Seconds = 600.0
    hold_down_jitter: float = Field(default=0.1, ge=0, lt=1)
    retry_after_max: Seconds = 600.0
    suspect_outstanding: int = Field(default=3, ge=1, le=1000)
    response_timeout_floor: Seconds = 0.3
    # Silence (docs/silent-carrier.md): no new calls to a carrier whose INVITE waits far
    # longer than its own first responses usually take.
    silence: bool = True
    silence_floor: Seconds = 0.02
    silence_margin: float = Field(default=2.0, ge=1, le=100)
    silence_quantile: float = Field(default=0.99, ge=0.5, le=1)
    silence_min_samples: int = Field(default=20, ge=1, le=10_000)
    silence_window: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _window(self) -> HealthConfig:
        if self.window_min_volume > self.window_size:
            raise ValueError("window_min_volume cannot exceed window_size")
        if self.silence_min_samples > self.silence_window:
            raise ValueError("silence_min_samples cannot exceed silence_window")
        if self.silence and self.silence_floor >= self.response_timeout_floor:
            raise ValueError(
                "silence_floor must be shorter than response_timeout_floor "
                "(the adaptive timer would always act first)"
            )
        if self.hold_down_max < self.hold_down:
            raise ValueError("hold_down_max cannot be shorter than hold_down")
        return self


_DEFAULT_DEAD: list[int | str] = [408, "5xx"]


class ProbeConfig(Strict):
    enabled: bool = True
    interval: Seconds = 10.0
    interval_out: Seconds = 2.0
    timeout: Seconds = 2.0
    dead: list[int | str] = Field(default_factory=lambda: _DEFAULT_DEAD.copy())

    @field_validator("dead")
    @classmethod
    def _dead(cls, value: list[int | str]) -> list[int | str]:
        for item in value:
            if isinstance(item, int):
                if not 200 <= item <= 699:
                    raise ValueError(f"{item}: a status code is 200-699")
            elif not (len(item) == 3 and item[0] in "23456" and item[1:] == "xx"):
                raise ValueError(f"{item!r}: expected a status code or a class like 5xx")
        return value

    def dead_codes(self) -> frozenset[int]:
        codes: set[int] = set()
        for item in self.dead:
            if isinstance(item, int):
                codes.add(item)
            else:
                base = int(item[0]) * 100
                codes.update(range(base, base + 100))
        return frozenset(codes)


class StoreConfig(Strict):
    path: str = "trunkguard-events.db"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # an environment variable's name


def _read_secret(where: str, base: Path, file: str | None, env: str | None) -> str | None:
    """A secret from a file (relative to the config) or the environment; ConfigError if not."""
    secret = None
    if file is not None:
        path = base / file
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError([f"{where}: {path}: cannot read it ({why})"]) from None
        if not secret:
            raise ConfigError([f"{where}: {path}: it is empty"])
    elif env is not None:
        secret = os.environ.get(env)
        if not secret:
            raise ConfigError([f"{where}: environment variable {env}: not set"])
    if secret is not None and not re.fullmatch(r"[\x20-\x7e]+", secret):
        raise ConfigError([f"{where}: the secret is not one line of printable text"])
    return secret


class RecordsConfig(Strict):
    """Call records (docs/call-records.md): SQLite beside the event log unless told otherwise."""

    enabled: bool = True
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: str | None = Field(default=None, min_length=1)  # sqlite; default: calls.db by the log
    # postgresql: the DSN inline, in a file or in the environment; a password apart, if wanted.
    dsn: str | None = Field(default=None, min_length=1, repr=False)
    dsn_file: str | None = Field(default=None, min_length=1)
    dsn_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern)
    password_file: str | None = Field(default=None, min_length=1, repr=False)
    password_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern)
    batch: int = Field(default=500, ge=1, le=50_000)  # records per transaction at most
    flush_interval: float = Field(default=1.0, gt=0, le=60)  # seconds a record may wait
    max_queue: int = Field(default=100_000, ge=1, le=10_000_000)  # then the newest are dropped
    retention: str | None = "30d"  # e.g. 12h, 30d, 1.5d; null: keep every record

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        if value is None:
            return None
        m = _DURATION.match(value.strip())
        if m is None:
            raise ValueError(f"expected a duration like 12h or 30d (or null), got {value!r}")
        if float(m[1]) * _DURATION_UNITS[m[2]] < 60:
            raise ValueError("at least 60s (or null: keep every record)")
        return value.strip()

    @model_validator(mode="after")
    def _backend(self) -> RecordsConfig:
        dsns = [k for k in ("dsn", "dsn_file", "dsn_env") if getattr(self, k) is not None]
        passwords = [k for k in ("password_file", "password_env") if getattr(self, k) is not None]
        if self.backend == "postgresql":
            if len(dsns) != 1:
                raise ValueError("backend postgresql: give exactly one of dsn, dsn_file, dsn_env")
            if len(passwords) > 1:
                raise ValueError("give password_file or password_env, not both")
            if self.path is not None:
                raise ValueError("path is for backend sqlite; postgresql takes a dsn")
        elif dsns or passwords:
            raise ValueError(
                f"{(dsns + passwords)[0]} is for backend postgresql (this is backend sqlite)"
            )
        if self.max_queue < self.batch:
            raise ValueError("max_queue cannot be smaller than batch")
        return self

    def retention_seconds(self) -> float | None:
        if self.retention is None:
            return None
        m = _DURATION.match(self.retention)
        assert m is not None
        return float(m[1]) * _DURATION_UNITS[m[2]]

    def sqlite_path(self, base: Path, store: Path) -> Path:
        """``path`` relative to the config's folder; by default calls.db beside the event log."""
        return store.parent / "calls.db" if self.path is None else base / self.path

    def postgres_dsn(self, base: Path) -> tuple[str, str | None]:
        """The DSN and the password apart (None: in the DSN or none), read now; ConfigError."""

        dsn = _read_secret(
            f"records.{'dsn_file' if self.dsn_file else 'dsn_env'}", base, self.dsn_file,
            self.dsn_env,
        ) or self.dsn
        assert dsn is not None
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigError(["records.dsn: expected postgresql://user@host:port/database"])
        password = _read_secret(
            f"records.{'password_file' if self.password_file else 'password_env'}",
            base,
            self.password_file,
            self.password_env,
        )
        return dsn, password


class AdminConfig(Strict):
    """The admin API: loopback by default; it does not start without a token."""

    listen: str = "127.0.0.1:8080"
    token: str | None = Field(default=None, min_length=16, repr=False)
    # The token from this environment variable instead (a service's EnvironmentFile=, so
    # that the config file itself holds no secret and may be readable).
    token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

    @model_validator(mode="before")
    @classmethod
    def _token_from_env(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("token_env") is not None:
            if data.get("token") is not None:
                raise ValueError("give token or token_env, not both")
            name = str(data["token_env"])
            value = os.environ.get(name, "")
            if not value:
                raise ValueError("token_env: that variable is not set in the environment, or empty")
            data = {**data, "token": value}
        return data

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen("tcp:" + value)
        return value

    def address(self) -> tuple[str, int]:
        lst = parse_listen("tcp:" + self.listen)
        return lst.host, lst.port

    def url(self) -> str:
        host, port = self.address()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"


class AlertDampingConfig(Strict):
    """Flap damping of alerts (RFC 2439's, for alerts) and the rate limit on top."""

    penalty: float = Field(default=1000.0, ge=0, le=1e9)  # a change out of service
    penalty_other: float = Field(default=250.0, ge=0, le=1e9)  # any other change
    suppress: float = Field(default=3000.0, gt=0, le=1e12)
    reuse: float = Field(default=750.0, gt=0, le=1e12)
    half_life: Seconds = 60.0
    max_suppress: Seconds = 600.0
    burst: int = Field(default=20, ge=1, le=10_000)  # alerts sent at once, at most
    per_minute: float = Field(default=20.0, gt=0, le=60_000)  # and then this many a minute

    @model_validator(mode="after")
    def _thresholds(self) -> AlertDampingConfig:
        if self.reuse >= self.suppress:
            raise ValueError(f"reuse ({self.reuse:g}) must be below suppress ({self.suppress:g})")
        ceiling = self.settings().ceiling
        if self.suppress > ceiling:
            raise ValueError(
                f"suppress ({self.suppress:g}) is above the highest penalty, "
                f"reuse x 2^(max_suppress / half_life) = {ceiling:g}: nothing would be damped"
            )
        return self

    def settings(self) -> DampingSettings:
        return DampingSettings(**self.model_dump())


AlertKind = Literal["state", "degraded", "overload"]
_ALERT_KINDS: tuple[AlertKind, ...] = ("state", "degraded", "overload")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")


def _http_url(value: str) -> str:
    # Never quoted: a URL may hold a token.
    scheme, sep, rest = value.partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL (the URL is not shown)")
    if not host or any(c in value for c in " \t\r\n\x00"):
        raise ValueError("not a valid URL: no host, or spaces in it (the URL is not shown)")
    return value


class AlertHookConfig(Strict):
    """A webhook (POST of a JSON body) or a command (argv, no shell) to tell of alerts."""

    type: Literal["webhook", "command"]
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\w.\-]+$")
    url: str | None = Field(default=None, max_length=2048)
    argv: list[str] | None = Field(default=None, min_length=1, max_length=64)
    events: list[AlertKind] = Field(default_factory=lambda: list(_ALERT_KINDS), min_length=1)
    timeout: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=2, ge=0, le=10)
    backoff: float = Field(default=1.0, ge=0, le=60)
    queue: int = Field(default=100, ge=1, le=100_000)
    format: Literal["json", "slack", "pagerduty"] = "json"
    headers: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    secret_file: str | None = Field(default=None, min_length=1, repr=False)
    secret_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern)
    secret_header: str | None = Field(default=None, pattern=_HEADER_NAME.pattern)
    secret_prefix: str = Field(default="", max_length=32, pattern=r"^[\x20-\x7e]*$")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        # Never quoted: a Slack webhook's URL is its secret.
        return None if value is None else _http_url(value)

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if any("\x00" in arg for arg in value):
            raise ValueError("an argument holds a NUL character")
        if not os.path.isabs(value[0]):
            raise ValueError(
                f"{value[0][:80]!r}: the command must be an absolute path "
                "(it is run without a shell and without a PATH search)"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name[:64]!r}: not a header name")
            if not re.fullmatch(r"[\x20-\x7e\t]*", text):
                raise ValueError(f"{name}: the value must be one line of printable ASCII")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _ENV_NAME.fullmatch(name) or name.upper().startswith("TG_"):
                raise ValueError(f"{name[:64]!r}: not a variable name of its own (TG_* are ours)")
            if "\x00" in text:
                raise ValueError(f"{name}: the value holds a NUL character")
        return value

    @model_validator(mode="after")
    def _by_type(self) -> AlertHookConfig:
        secret = self.secret_file is not None or self.secret_env is not None
        if self.secret_file is not None and self.secret_env is not None:
            raise ValueError("give secret_file or secret_env, not both")
        if self.type == "webhook":
            if self.url is None or self.argv is not None:
                raise ValueError("a webhook needs url (and no argv)")
            if self.format == "pagerduty" and not secret:
                raise ValueError("format pagerduty needs a routing key: secret_file or secret_env")
            if secret and self.format != "pagerduty" and self.secret_header is None:
                raise ValueError("a webhook's secret needs secret_header, the header to send it in")
        else:
            if self.argv is None or self.url is not None:
                raise ValueError("a command needs argv (and no url)")
            if self.format != "json" or self.headers or self.secret_header is not None:
                raise ValueError("format, headers and secret_header are for webhooks")
        return self

    def settings(self, index: int, base: Path) -> HookSettings:
        """The hook, with its secret read now; ConfigError if it cannot be."""
        name = self.name or f"{self.type}-{index + 1}"
        kind = "secret_file" if self.secret_file is not None else "secret_env"
        secret = _read_secret(
            f"alerts hook {name}: {kind}", base, self.secret_file, self.secret_env
        )
        return HookSettings(
            name=name,
            type=self.type,
            url=self.url or "",
            argv=tuple(self.argv or ()),
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
            events=frozenset(self.events),
            headers=tuple(self.headers.items()),
            secret=secret,
            secret_header=self.secret_header,
            secret_prefix=self.secret_prefix,
            env=tuple(self.env.items()),
            queue=self.queue,
            format=self.format,
        )


class AlertsConfig(Strict):
    """Hooks told of state changes, every route degraded and overload (docs/alerts.md)."""

    hooks: list[AlertHookConfig] = Field(default_factory=list, max_length=32)
    router: str = Field(default="", max_length=64, pattern=r"^[\x20-\x7e]*$")  # "": host name
    damping: AlertDampingConfig = AlertDampingConfig()
    stop_timeout: float = Field(default=3.0, ge=0, le=60)

    def settings(self, base: Path) -> AlertSettings:
        return AlertSettings(
            hooks=tuple(h.settings(i, base) for i, h in enumerate(self.hooks)),
            damping=self.damping.settings(),
            router=self.router,
            stop_timeout=self.stop_timeout,
        )


class AgiConfig(Strict):
    """The FastAGI route advisor (route, report) for dialplans that dial carriers directly."""

    enabled: bool = False
    listen: str = "127.0.0.1:4578"  # VICIdial's own FastAGI is on 4577
    max_sessions: int = Field(default=1000, ge=1, le=100_000)
    session_timeout: float = Field(default=10.0, gt=0, le=3600)
    max_line: int = Field(default=1024, ge=128, le=65536)  # bytes, one line from Asterisk
    max_header: int = Field(default=16384, ge=512, le=1 << 20)  # bytes, the agi_* block
    max_routes: int = Field(default=10, ge=1, le=50)  # TG_ROUTE_1..N at most
    plans: int = Field(default=100_000, ge=10, le=10_000_000)  # plan ids kept for report
    plan_ttl: float = Field(default=3600.0, gt=0, le=86400)  # how long one stays valid

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen("tcp:" + value)
        return value

    def settings(self) -> AgiSettings:
        lst = parse_listen("tcp:" + self.listen)
        return AgiSettings(
            host=lst.host,
            port=lst.port,
            max_sessions=self.max_sessions,
            session_timeout=self.session_timeout,
            max_line=self.max_line,
            max_header=self.max_header,
            max_routes=self.max_routes,
            plans=self.plans,
            plan_ttl=self.plan_ttl,
        )


# -- dialer feedback (docs/dialer-feedback.md) -------------------------------------------------
DialLevel = Annotated[float, Field(ge=0, le=18, multiple_of=0.01)]  # VICIdial: 0 to 18


class DialStepConfig(Strict):
    below: float = Field(gt=0, le=1)  # a share of the campaign's healthy capacity
    level: DialLevel


class DialCampaignConfig(Strict):
    """A VICIdial campaign (or another dialer's), the numbers it dials, its level table."""

    id: str = Field(min_length=2, max_length=8, pattern=r"^[A-Za-z0-9_\-]+$")
    prefixes: list[str] = Field(default_factory=list, max_length=1000)
    carriers: list[str] = Field(default_factory=list, max_length=1000)
    normal: DialLevel
    levels: list[DialStepConfig] = Field(min_length=1, max_length=20)
    hysteresis: float = Field(default=0.1, ge=0, lt=1)
    min_interval: float = Field(default=60.0, ge=0, le=86_400)
    dry_run: bool | None = None  # None: the section's dry_run

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not re.fullmatch(_DIGITS, prefix):
                raise ValueError(f"{prefix[:40]!r}: a prefix is digits")
        return value

    @model_validator(mode="after")
    def _table(self) -> DialCampaignConfig:
        if self.prefixes and self.carriers:
            raise ValueError("give prefixes or carriers, not both")
        steps = sorted(self.levels, key=lambda s: -s.below)
        if len({s.below for s in steps}) != len(steps):
            raise ValueError("two levels have the same 'below'")
        last = self.normal
        for step in steps:
            if step.level > last:
                raise ValueError(
                    f"below {step.below:g}: level {step.level:g} is above the level for more "
                    f"capacity ({last:g}); less capacity must not dial faster"
                )
            last = step.level
        if steps[0].level >= self.normal:
            raise ValueError(f"below {steps[0].below:g}: the level is not below normal")
        return self

    def settings(self, dry_run: bool) -> CampaignSettings:
        return CampaignSettings(
            id=self.id,
            normal=self.normal,
            steps=tuple(
                Step(s.below, s.level) for s in sorted(self.levels, key=lambda s: -s.below)
            ),
            prefixes=tuple(self.prefixes),
            carriers=tuple(self.carriers),
            hysteresis=self.hysteresis,
            min_interval=self.min_interval,
            dry_run=dry_run if self.dry_run is None else self.dry_run,
        )


class VicidialConfig(Strict):
    """VICIdial's non_agent_api.php; the password from a file or the environment."""

    url: str = Field(max_length=2048)
    user: str = Field(min_length=1, max_length=20, pattern=r"^[\x21-\x7e]+$")
    pass_file: str | None = Field(default=None, min_length=1, repr=False)
    pass_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern)
    source: str = Field(default="trunkguard", min_length=1, max_length=20, pattern=r"^\w+$")
    timeout: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=10)
    backoff: float = Field(default=1.0, ge=0, le=60)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @model_validator(mode="after")
    def _password(self) -> VicidialConfig:
        if (self.pass_file is None) == (self.pass_env is None):
            raise ValueError("give the API user's password as pass_file or pass_env (one)")
        return self

    def settings(self, base: Path) -> VicidialSettings:
        password = _read_secret("dialer vicidial password", base, self.pass_file, self.pass_env)
        assert password is not None
        return VicidialSettings(
            url=self.url,
            user=self.user,
            password=password,
            source=self.source,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
        )


class DialWebhookConfig(Strict):
    """A POST of a JSON body per change, for dialers other than VICIdial."""

    url: str = Field(max_length=2048)
    timeout: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=10)
    backoff: float = Field(default=1.0, ge=0, le=60)
    secret_file: str | None = Field(default=None, min_length=1, repr=False)
    secret_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern)
    secret_header: str | None = Field(default=None, pattern=_HEADER_NAME.pattern)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @model_validator(mode="after")
    def _secret(self) -> DialWebhookConfig:
        if self.secret_file is not None and self.secret_env is not None:
            raise ValueError("give secret_file or secret_env, not both")
        if (self.secret_file or self.secret_env) and self.secret_header is None:
            raise ValueError("a webhook's secret needs secret_header, the header to send it in")
        return self

    def settings(self, base: Path, router: str) -> WebhookSettings:
        del router
        return WebhookSettings(
            url=self.url,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
            secret=_read_secret("dialer webhook secret", base, self.secret_file, self.secret_env),
            secret_header=self.secret_header,
        )


class DialerConfig(Strict):
    """Feedback to the dialer: slow a campaign down when its carriers' capacity falls."""

    campaigns: list[DialCampaignConfig] = Field(default_factory=list, max_length=500)
    vicidial: VicidialConfig | None = None
    webhook: DialWebhookConfig | None = None
    dry_run: bool = False  # only log what would be sent
    degraded: float = Field(default=0.5, ge=0, le=1)  # what a SUSPECT carrier counts for
    retry_after: float = Field(default=30.0, gt=0, le=3600)
    router: str = Field(default="", max_length=64, pattern=r"^[\x20-\x7e]*$")

    @model_validator(mode="after")
    def _campaigns(self) -> DialerConfig:
        ids = [c.id for c in self.campaigns]
        if len(set(ids)) != len(ids):
            raise ValueError("two campaigns have the same id")
        return self

    def settings(self, base: Path) -> DialerSettings:
        return DialerSettings(
            campaigns=tuple(c.settings(self.dry_run) for c in self.campaigns),
            vicidial=None if self.vicidial is None else self.vicidial.settings(base),
            webhook=None if self.webhook is None else self.webhook.settings(base, self.router),
            degraded=self.degraded,
            retry_after=self.retry_after,
            router=self.router,
        )


# -- high availability (docs/ha.md) ----------------------------------------------------------
_HA_FIELDS = ("{address}", "{ip}", "{interface}", "{node}")


def _ha_argv(value: list[str]) -> list[str]:
    for item in value:
        if not item or "\x00" in item or "\n" in item:
            raise ValueError("each argv item must be one non-empty line")
        rest = item
        for name in _HA_FIELDS:
            rest = rest.replace(name, "")
        if "{" in rest or "}" in rest:
            raise ValueError(f"{item!r}: the only fields are {', '.join(_HA_FIELDS)}")
    return value


class HaConfig(Strict):
    """Two or more routers sharing leadership and target state on etcd."""

    node: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    etcd: list[str] = Field(min_length=1, max_length=16)
    prefix: str = Field(default="/trunkguard/main", pattern=r"^/[A-Za-z0-9_./-]{0,200}$")
    mode: Literal["active-standby", "active-active"] = "active-standby"
    lease_ttl: float = Field(default=2.0, ge=1.0, le=3600)
    renew_every: float = Field(default=0.25, gt=0, le=600)
    fence_after: float = Field(default=1.2, gt=0, le=3600)
    service_address: str | None = None
    interface: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@-]{1,15}$")
    acquire: list[str] = Field(default_factory=list)
    release: list[str] = Field(default_factory=list)
    hook_timeout: float = Field(default=5.0, gt=0, le=300)

    @field_validator("etcd", mode="before")
    @classmethod
    def _etcd_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("etcd")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for url in value:
            m = re.fullmatch(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})/?", url)
            if m is None or not 0 < int(m.group(2)) < 65536:
                raise ValueError(f"{url!r}: expected http://HOST:PORT (an etcd client URL)")
        return [url.rstrip("/") for url in value]

    @field_validator("service_address")
    @classmethod
    def _service_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                iface = ipaddress.ip_interface(value)
            except ValueError:
                raise ValueError(f"{value!r}: expected ADDRESS/PREFIX, like 10.0.0.9/24") from None
            if "/" not in value:
                value = f"{iface.ip}/{iface.network.prefixlen}"
        return value

    @field_validator("acquire", "release")
    @classmethod
    def _hooks(cls, value: list[str]) -> list[str]:
        return _ha_argv(value)

    @model_validator(mode="after")
    def _timing(self) -> HaConfig:
        if self.fence_after >= self.lease_ttl:
            raise ValueError(
                f"fence_after ({self.fence_after:g}s) must be less than lease_ttl "
                f"({self.lease_ttl:g}s): a node must stop serving before its lease expires"
            )
        if self.renew_every * 2 > self.fence_after:
            raise ValueError(
                f"renew_every ({self.renew_every:g}s) must be at most half of fence_after "
                f"({self.fence_after:g}s): one late renewal must not fence the node"
            )
        if self.service_address is not None and self.interface is None:
            raise ValueError("service_address needs interface (where the address goes)")
        return self

    def settings(self) -> HaSettings:
        return HaSettings(
            node=self.node,
            etcd=tuple(self.etcd),
            prefix=self.prefix.rstrip("/") or "/",
            mode=self.mode,
            lease_ttl=self.lease_ttl,
            renew_every=self.renew_every,
            fence_after=self.fence_after,
            service_address=self.service_address,
            interface=self.interface,
            acquire=tuple(self.acquire),
            release=tuple(self.release),
            hook_timeout=self.hook_timeout,
            request_timeout=min(0.5, max(0.1, self.fence_after / 3)),
        )


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"  # json: one object per line (ts, level, ...)
    calls: bool = False  # one info line per call: status, carrier, attempts, PDD, duration


class RouterConfig(Strict):
    listen: list[str] = Field(min_length=1)
    advertise: str | None = None
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)
    carriers: list[CarrierConfig] = Field(min_length=1)
    failover: FailoverConfig = FailoverConfig()
    failures: dict[int, OutcomeClass] = Field(default_factory=dict)
    q850: dict[int, OutcomeClass] = Field(default_factory=dict)
    dialstatus: dict[str, OutcomeClass] = Field(default_factory=dict)
    limits: LimitsConfig = LimitsConfig()
    overload: OverloadConfig = OverloadConfig()
    source_limits: SourceLimitsConfig = SourceLimitsConfig()
    timers: TimersConfig = TimersConfig()
    health: HealthConfig = HealthConfig()
    probe: ProbeConfig = ProbeConfig()
    store: StoreConfig = StoreConfig()
    admin: AdminConfig = AdminConfig()
    records: RecordsConfig = RecordsConfig()
    log: LogConfig = LogConfig()
    alerts: AlertsConfig = AlertsConfig()
    agi: AgiConfig = AgiConfig()
    dialer: DialerConfig = DialerConfig()
    numbers: NumbersConfig | None = None
    routes: list[RouteConfig] = Field(default_factory=list)
    quality: QualityConfig = QualityConfig()
    blocked: list[str] = Field(default_factory=list)
    typical_call_seconds: Seconds = 90.0
    pools: list[PoolConfig] = Field(default_factory=list)
    reject: Literal["drop", "403"] = "drop"  # what a source outside allow gets
    server_header: str | None = None  # None: no Server/User-Agent header at all
    dialog_keepalive: DialogKeepaliveConfig = DialogKeepaliveConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    tls: TlsListenConfig | None = None  # needed by tls: listeners
    ha: HaConfig | None = None  # absent: a single node
    dns: DnsConfig = DnsConfig()
    # The key that signs Record-Route; neither: one generated into the state directory.
    secret: str | None = Field(default=None, min_length=32, repr=False)
    secret_file: str | None = Field(default=None, min_length=1, repr=False)
    _base: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("failures")
    @classmethod
    def _codes(cls, value: dict[int, OutcomeClass]) -> dict[int, OutcomeClass]:
        return _check_codes(value)

    @field_validator("listen", mode="before")
    @classmethod
    def _listen_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_listen(item)
        return value

    @field_validator("allow", mode="before")
    @classmethod
    def _allow(cls, value: Any) -> Any:
        if isinstance(value, list):
            out = []
            for item in value:
                try:
                    out.append(ipaddress.ip_network(str(item), strict=False))
                except ValueError:
                    raise ValueError(f"{item!r} is not an address or network") from None
            return out
        return value

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen("udp:" + value)
        return value

    @field_validator("reject", mode="before")
    @classmethod
    def _reject(cls, value: Any) -> Any:
        # YAML reads `reject: 403` as a number.
        return "403" if value == 403 and not isinstance(value, bool) else value

    @field_validator("server_header")
    @classmethod
    def _server_header(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_VALUE.fullmatch(value):
            raise ValueError(
                "expected one line of printable ASCII, 1-200 characters, "
                "without leading or trailing spaces"
            )
        return value

    @model_validator(mode="after")
    def _across_fields(self, info: ValidationInfo) -> RouterConfig:
        # parse_config checks these on the YAML itself, with lines, even when fields fail.
        if not (info.context or {}).get("cross_checked"):
            found = cross_problems(self.model_dump())
            if found:
                raise ValueError("; ".join(f"{_field_path(loc)}: {why}" for loc, why in found))
        return self

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths in it are relative to this."""
        return self._base

    def store_path(self) -> Path:
        return self._base / self.store.path

    def secret_path(self) -> Path | None:
        """``secret_file`` relative to the config file's folder, or None without one."""
        return None if self.secret_file is None else self._base / self.secret_file

    def routing(self) -> tuple[RoutingTable | None, NumberRules | None]:
        """The routing table with every carrier's deck loaded, or (None, None) without decks.

        Deck paths are relative to the config file. Raises ConfigError with every
        problem of every deck.
        """
        if not (any(c.deck for c in self.carriers) or self.routes or self.blocked or self.pools):
            return None, None
        problems: list[str] = []
        carriers = []
        for carrier in self.carriers:
            deck = None
            if carrier.deck is not None:
                path = self._base / carrier.deck.path
                try:
                    deck = load_deck(path, carrier.deck.columns(), carrier.name)
                except DeckError as exc:
                    problems += exc.problems
            carriers.append(CarrierRoute(carrier.name, deck, carrier.priority, carrier.weight))
        if problems:
            raise ConfigError(problems)
        rules = [RouteRule(r.prefix, tuple(r.pin), tuple(r.exclude)) for r in self.routes]
        pools = [
            ServerPool(
                p.name,
                [PoolMember(m.name, m.tier, m.weight) for m in p.members],
                p.prefixes,
                p.preempt_delay,
            )
            for p in self.pools
        ]
        table = RoutingTable(
            carriers, rules, list(self.blocked), self.typical_call_seconds, pools=pools
        )
        numbers = (self.numbers or NumbersConfig()).rules()
        return table, numbers

    def ha_settings(self) -> HaSettings | None:
        """The ``ha:`` section's settings, or None for a single node."""
        return None if self.ha is None else self.ha.settings()

    def quality_settings(self) -> QualitySettings | None:
        """The quality tracker's settings, or None when ``quality.enabled`` is off."""
        if not self.quality.enabled:
            return None
        return self.quality.settings([r.prefix for r in self.routes])

    # -- what the proxy needs ------------------------------------------------------------
    def listeners(self) -> list[Listen]:
        return [parse_listen(item) for item in self.listen]

    def advertised(self) -> tuple[str, int]:
        lst = parse_listen("udp:" + self.advertise) if self.advertise else self.listeners()[0]
        host = f"[{lst.host}]" if ":" in lst.host else lst.host
        return host, lst.port

    def proxy_settings(self) -> ProxySettings:
        f = self.failover
        return ProxySettings(
            advertise=self.advertised(),
            allow=tuple(self.allow),
            invite_timeout=f.invite_timeout,
            max_attempts=f.max_attempts,
            max_destinations=f.max_destinations,
            time_budget=f.time_budget,
            ring_timeout=f.ring_timeout,
            dialog_max_age=f.dialog_max_age,
            timers=TimerConfig(t1=self.timers.t1, t2=self.timers.t2, t4=self.timers.t4),
            limits=Limits(
                max_message=self.limits.max_message,
                max_headers=self.limits.max_headers,
                max_line=self.limits.max_line,
            ),
            reject=self.reject,
            server_header=self.server_header,
            # Empty: the runtime reads (or makes) the key file; see runtime.record_route_secret.
            secret=self.secret.encode("utf-8") if self.secret else b"",
            drain_timeout=self.shutdown.drain_timeout,
            dialog_keepalive=self.dialog_keepalive.interval,
            max_transactions=self.limits.max_transactions,
            max_finished=self.limits.max_finished,
            max_dialogs=self.limits.max_dialogs,
            overload=self.overload.settings(),
            sources=self.source_limits.settings(),
        )

    def health_policy(self) -> HealthPolicy:
        h = self.health
        return HealthPolicy(**h.model_dump(), invite_timeout=self.failover.invite_timeout)

    def probe_settings(self) -> ProbeSettings:
        p = self.probe
        return ProbeSettings(
            interval=p.interval,
            interval_out=p.interval_out,
            timeout=p.timeout,
            dead=p.dead_codes(),
        )

    def credentials(self, carrier: CarrierConfig) -> Credentials | None:
        """The credentials that answer ``carrier``'s challenges (``auth``, else ``register``)."""
        auth = carrier.auth or carrier.registration
        return None if auth is None else auth.credentials(self._base)

    def dialer_settings(self) -> DialerSettings:
        """The dialer section with its secrets read (files, environment); ConfigError if not."""
        return self.dialer.settings(self._base)

    def alert_settings(self) -> AlertSettings:
        """The alerts section with its secrets read (files, environment); ConfigError if not."""
        return self.alerts.settings(self._base)

    def register_settings(self) -> dict[str, RegisterSettings]:
        """Every carrier's registration, by carrier name; ConfigError if a password is missing."""
        out: dict[str, RegisterSettings] = {}
        problems: list[str] = []
        for carrier in self.carriers:
            reg = carrier.registration
            if reg is None:
                continue
            try:
                credentials = reg.credentials(self._base)
            except ConfigError as exc:
                problems += [f"carriers.{carrier.name}.register: {p}" for p in exc.problems]
                continue
            uri = parse_uri(carrier.uri)
            scheme = "sips" if uri.scheme == "sips" else "sip"
            registrar = reg.registrar or f"{scheme}:{uri.hostport()}"
            reg_uri = parse_uri(registrar)
            domain = reg_uri.host
            flow = tls = None
            if reg.registrar is not None and reg_uri.hostport() != uri.hostport():
                # A registrar of its own: its name is resolved once, here.
                try:
                    flow = uri_flow(reg_uri)
                except ConfigError as exc:
                    problems += [f"carriers.{carrier.name}.register: {p}" for p in exc.problems]
                    continue
                if flow.transport == "tls":
                    tls = dataclasses.replace(
                        self._tls_client(carrier, uri), server_name=reg_uri.host.strip("[]")
                    )
            out[carrier.name] = RegisterSettings(
                flow=flow,
                tls=tls,
                credentials=credentials,
                registrar=registrar,
                aor=f"{scheme}:{reg.user}@{domain}",
                contact_user=reg.contact_user or reg.user,
                expires=reg.expires,
                timeout=reg.timeout,
                lost_after=reg.lost_after,
                retry_max=reg.retry_max,
            )
        if problems:
            raise ConfigError(problems)
        return out

    def dns_settings(self) -> DnsSettings:
        d = self.dns
        return DnsSettings(
            servers=d.server_list(), timeout=d.timeout, min_ttl=d.min_ttl, max_ttl=d.max_ttl
        )

    def dns_queries(self) -> dict[str, Query]:
        """The carriers whose host is a name, with what RFC 3263 is asked for each."""
        out: dict[str, Query] = {}
        for carrier in self.carriers:
            uri = parse_uri(carrier.uri)
            if is_ip(uri.host):
                continue
            explicit = str(uri.params.get("transport") or "").lower() or None
            out[carrier.name] = Query(
                host=uri.host,
                port=uri.port,
                transport=explicit,
                secure=uri.scheme == "sips",
            )
        return out

    def _tls_client(self, carrier: CarrierConfig, uri: Uri) -> TlsClient:
        t = carrier.tls or TlsClientConfig()

        def path(name: str | None) -> str | None:
            if name is None:
                return None
            full = self._base / name
            if not full.is_file():
                raise ConfigError([f"tls: {full}: no such file"])
            return str(full)

        return TlsClient(
            server_name=t.server_name or uri.host.strip("[]"),
            ca_file=path(t.ca_file),
            cert_file=path(t.cert_file),
            key_file=path(t.key_file),
            verify=t.verify,
        )

    def carrier_targets(
        self, carrier: CarrierConfig, destinations: Sequence[Destination] | None = None
    ) -> list[Target]:
        """One carrier as targets: itself (an IP host), or one per DNS destination.

        ``destinations`` are its host name's records (RFC 3263), in order; with
        none (not resolved yet, or no such name) the carrier is one target that
        cannot be sent to (port 0) and stays out until its name resolves.
        """
        base = FailureTable(self.failures, q850=self.q850, dialstatus=self.dialstatus)
        table = base.with_overrides(
            carrier.failures, q850=carrier.q850, dialstatus=carrier.dialstatus
        )
        uri = parse_uri(carrier.uri)
        transport = uri_transport(uri)
        auth = self.credentials(carrier)
        if is_ip(uri.host):
            flow = uri_flow(uri)
            tls = self._tls_client(carrier, uri) if transport == "tls" else None
            return [
                Target(
                    carrier.name,
                    uri,
                    flow,
                    table,
                    transit=carrier.transit,
                    auth=auth,
                    tls=tls,
                )
            ]
        # A DNS name: the stand-in carries what its destinations will share (credentials,
        # TLS settings for any record that says TLS), so that a DNS change reads no file.
        stand_in = Target(
            carrier.name,
            uri,
            Flow(transport, ("0.0.0.0", 0)),
            table,
            transit=carrier.transit,
            auth=auth,
            tls=self._tls_client(carrier, uri),
        )
        return destination_targets(stand_in, destinations or ())

    def targets(self, resolved: Mapping[str, Sequence[Destination]] | None = None) -> list[Target]:
        """Carriers (and pool servers) as targets, in config order.

        A carrier host that is a DNS name takes its destinations from
        ``resolved`` (the DNS cache): without them it is a placeholder that
        stays out until its name resolves. Pool servers' names are resolved
        once, here.
        """
        resolved = resolved or {}
        out = []
        problems: list[str] = []
        for carrier in self.carriers:
            try:
                out += self.carrier_targets(carrier, resolved.get(carrier.name))
            except ConfigError as exc:
                problems += [f"carriers.{carrier.name}: {p}" for p in exc.problems]
        if problems:
            raise ConfigError(problems)
        base = FailureTable(self.failures, q850=self.q850, dialstatus=self.dialstatus)
        for pool in self.pools:
            for member in pool.members:
                uri = parse_uri(member.uri)
                flow = uri_flow(uri)
                tls = None
                if flow.transport == "tls":
                    tls = TlsClient(server_name=uri.host.strip("[]"))
                out.append(Target(member.name, uri, flow, base, kind=POOL_MEMBER, tls=tls))
        return out


def destination_targets(stand_in: Target, destinations: Sequence[Destination]) -> list[Target]:
    """A DNS carrier's targets: one per destination, named ``carrier/address:port``, each
    with the stand-in's settings; the stand-in itself (port 0) when there are none."""
    if not destinations:
        return [stand_in]
    out = []
    for d in destinations:
        host = f"[{d.addr}]" if ":" in d.addr else d.addr
        out.append(
            dataclasses.replace(
                stand_in,
                name=f"{stand_in.carrier}/{host}:{d.port}",
                flow=Flow(d.transport, (d.addr, d.port)),
                tls=stand_in.tls if d.transport == "tls" else None,
                priority=d.priority,
                weight=d.weight,
            )
        )
    return out


def resolve(host: str) -> str:
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigError([f"cannot resolve host {host!r}: {exc}"]) from None
    return str(infos[0][4][0])


class ConfigError(Exception):
    """Config could not be loaded; ``problems`` lists every reason with its place."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def shown(self, limit: int = 50) -> list[str]:
        """The problems to print or log: the first ``limit``, then how many more."""
        out = self.problems[:limit]
        if len(self.problems) > limit:
            out.append(f"... and {len(self.problems) - limit} more problems")
        return out


Loc = tuple[int | str, ...]
_SECRET_WORDS = ("token", "password", "secret", "dsn")  # a DSN may hold a password
_MERGE_TAG = "tag:yaml.org,2002:merge"


def is_secret_field(loc: Loc) -> bool:
    """Whether ``loc`` names a secret (token, password, secret...): its value is never shown."""
    return any(isinstance(p, str) and any(w in p.lower() for w in _SECRET_WORDS) for p in loc)


def _secret_values(data: Any) -> set[str]:
    """Every value under a secret field of the raw YAML data, to scrub from any message."""
    found: set[str] = set()
    stack: list[tuple[Loc, Any]] = [((), data)]
    seen: set[int] = set()  # YAML aliases share objects
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict | list):
            if id(value) in seen:
                continue
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(((*loc, k if isinstance(k, int) else str(k)), v) for k, v in items)
        elif value is not None and is_secret_field(loc) and len(str(value)) >= 4:
            found.add(str(value))
    return found


def _scrub(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _node_line(root: yaml.Node | None, loc: Loc) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if str(key.value) == str(part):
                    found = value
                    line = key.start_mark.line + 1
                    break
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
            if node is not None:
                line = node.start_mark.line + 1
        else:
            break
        if node is None:
            break
    return line


def _field_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _walk(root: yaml.Node | None) -> Iterator[tuple[Loc, yaml.Node]]:
    """Every node of the document with its path, each once (aliases share nodes)."""
    stack: list[tuple[Loc, yaml.Node | None]] = [((), root)]
    seen: set[int] = set()
    while stack:
        loc, node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        yield loc, node
        if isinstance(node, yaml.MappingNode):
            stack.extend(((*loc, str(k.value)), v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(((*loc, i), item) for i, item in enumerate(node.value))


def duplicate_keys(root: yaml.Node | None) -> list[tuple[int, str]]:
    """(line, "field: why") for every key that a mapping has twice, at any depth.

    YAML loaders keep the last value silently; a config with a key twice is
    almost always a mistake (an edit that meant to replace the first).
    """
    found = []
    for loc, node in _walk(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first:
                where = _field_path((*loc, key.value))
                before = first[key.tag, key.value]
                found.append((line, f"{where}: duplicate key (first at line {before})"))
            else:
                first[key.tag, key.value] = line
    return found


def _items(data: Any, key: str) -> list[tuple[int, dict[str, Any]]]:
    """The mappings in the list ``data[key]``, with their index; anything else is skipped."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _target_names(data: Any) -> list[tuple[Loc, str]]:
    """Every carrier and pool member name, with its path, in config order."""
    out: list[tuple[Loc, Any]] = [
        (("carriers", i, "name"), c.get("name")) for i, c in _items(data, "carriers")
    ]
    for i, pool in _items(data, "pools"):
        for j, member in _items(pool, "members"):
            out.append((("pools", i, "members", j, "name"), member.get("name")))
    return [(loc, name) for loc, name in out if isinstance(name, str)]


def cross_problems(data: Any) -> list[tuple[Loc, str]]:
    """What no single field can check: unique names, routes to known carriers...

    Works on the raw YAML data, so these are reported with the field errors.
    """
    if not isinstance(data, dict):
        return []
    return (
        _duplicate_names(data)
        + _unknown_carriers(data)
        + _bad_blocked(data)
        + _two_keys(data)
        + _tls_listener(data)
        + _dialer_carriers(data)
    )


def _dialer_carriers(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    carriers = {name for loc, name in _target_names(data) if loc[0] == "carriers"}
    dialer = data.get("dialer")
    found: list[tuple[Loc, str]] = []
    for i, campaign in _items(dialer if isinstance(dialer, dict) else {}, "campaigns"):
        names = campaign.get("carriers")
        unknown = [n for n in names if n not in carriers] if isinstance(names, list) else []
        if unknown:
            listed = ", ".join(map(str, unknown))
            found.append((("dialer", "campaigns", i, "carriers"), f"no carrier named {listed}"))
    return found


def _duplicate_names(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    first: dict[str, Loc] = {}
    for loc, name in _target_names(data):
        if name in first:
            found.append((loc, f"duplicate target name {name!r} (also {_field_path(first[name])})"))
        first.setdefault(name, loc)
    return found


def _unknown_carriers(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    carriers = {name for loc, name in _target_names(data) if loc[0] == "carriers"}
    found: list[tuple[Loc, str]] = []
    for i, route in _items(data, "routes"):
        for field in ("pin", "exclude"):
            names = route.get(field)
            unknown = [n for n in names if n not in carriers] if isinstance(names, list) else []
            if unknown:
                listed = ", ".join(map(str, unknown))
                found.append((("routes", i, field), f"no carrier named {listed}"))
    return found


def _bad_blocked(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    blocked = data.get("blocked")
    found: list[tuple[Loc, str]] = []
    for i, prefix in enumerate(blocked if isinstance(blocked, list) else []):
        text = str(prefix)
        if not (text.isascii() and text.isdigit() and len(text) <= 20):
            found.append((("blocked", i), f"prefix {text[:40]!r}: expected 1-20 digits"))
    return found


def _two_keys(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    if data.get("secret") is not None and data.get("secret_file") is not None:
        return [(("secret_file",), "give secret or secret_file, not both")]
    return []


def _tls_listener(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    listen = data.get("listen")
    items = [listen] if isinstance(listen, str) else listen if isinstance(listen, list) else []
    for i, item in enumerate(items):
        if str(item).lower().startswith("tls:") and not data.get("tls"):
            loc: Loc = ("listen",) if isinstance(listen, str) else ("listen", i)
            return [(loc, "a tls: listener needs the tls: section (cert_file, key_file)")]
    return []


def _validation_problem(err: Any) -> tuple[Loc, str]:
    loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
    # Union members add their type name to the path; keep only real keys.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("IPv")))
    msg = str(err["msg"]).removeprefix("Value error, ")
    if is_secret_field(loc) and err["type"] in ("value_error", "assertion_error"):
        msg = "not valid (the value is not shown: it is a secret)"
    return loc, msg


def _yaml_problem(exc: yaml.YAMLError, text: str, source: str) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character))
        return f"{source}:{line}: not valid YAML: character #x{char:04x} is not allowed"
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"{where}: not valid YAML: {problem}"


def _read_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, text, source)]) from None
    except RecursionError:
        raise ConfigError([f"{source}: not valid YAML: nested too deeply"]) from None


def parse_config(text: str, source: str = "<config>") -> RouterConfig:
    root, data = _read_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping with listen, allow, carriers"])
    config = None
    found = cross_problems(data)
    try:
        config = RouterConfig.model_validate(data, context={"cross_checked": True})
    except ValidationError as exc:
        found += [_validation_problem(err) for err in exc.errors()]
    located: list[tuple[int | None, str]] = [*duplicate_keys(root)]
    located += [(_node_line(root, loc), f"{_field_path(loc)}: {why}") for loc, why in found]
    if config is not None and not located:
        return config
    raise ConfigError(_problem_lines(located, source, _secret_values(data)))


def _problem_lines(
    located: list[tuple[int | None, str]], source: str, secrets: set[str]
) -> list[str]:
    """``file:line: field: why`` in file order, with no secret value in them."""
    located = sorted(located, key=lambda item: item[0] or 0)
    return [
        _scrub(f"{source}:{line}: {why}" if line else f"{source}: {why}", secrets)
        for line, why in located
    ]


def decode_utf8(raw: bytes, source: str) -> str:
    """``raw`` as text, or a ConfigError naming the line and column of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        byte = raw[exc.start]
        problem = f"{source}:{line}: not UTF-8 text: byte 0x{byte:02x} at column {column}"
        raise ConfigError([problem]) from None


def load_config(path: str | Path | None) -> tuple[RouterConfig, str]:
    """Load ``path``, or the embedded default config when ``path`` is None."""
    if path is None:
        text = default_config_text()
        return parse_config(text, "<embedded default>"), "<embedded default>"
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    config = parse_config(decode_utf8(raw, str(p)), str(p))
    config._base = p.resolve().parent
    return config, str(p)


def default_config_text() -> str:
    return (resources.files("trunkguard") / "defaults" / "router.yaml").read_text("utf-8")
