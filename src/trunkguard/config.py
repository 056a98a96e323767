"""The router's YAML config, validated with pydantic.

Every error names the file, the YAML line, the field and why, and all errors
are reported at once. The minimal file (listen, allow, carriers) is the
contract: later sections are optional, with defaults.
"""

from __future__ import annotations

import ipaddress
import socket
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
    field_validator,
    model_validator,
)

from .health import FailureTable, HealthPolicy, OutcomeClass
from .prober import ProbeSettings
from .proxy import ProxySettings
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
    load_deck,
)
from .sip import Limits, ParseError, TimerConfig, parse_uri

Seconds = Annotated[float, Field(gt=0, le=86_400)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Listen:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


def parse_listen(text: str) -> Listen:
    """``udp:HOST:PORT`` or ``tcp:HOST:PORT`` (IPv6 as ``udp:[::1]:5060``)."""
    transport, sep, rest = text.partition(":")
    if not sep or transport.lower() not in ("udp", "tcp"):
        raise ValueError(f"{text!r}: expected udp:HOST:PORT or tcp:HOST:PORT")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: expected a port number after the host")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    return Listen(transport.lower(), host, int(port_text))


def _check_target_uri(value: str) -> str:
    try:
        uri = parse_uri(value)
    except ParseError as exc:
        raise ValueError(exc.reason) from None
    if not uri.is_sip:
        raise ValueError(f"{value!r}: a carrier URI must be sip: or sips:")
    transport = str(uri.params.get("transport") or "udp").lower()
    if transport not in ("udp", "tcp"):
        raise ValueError(f"{value!r}: transport must be udp or tcp")
    return value


def _check_codes(value: dict[int, OutcomeClass]) -> dict[int, OutcomeClass]:
    for code in value:
        if not 300 <= code <= 699:
            raise ValueError(f"status {code}: only 300-699 can be classified")
    return value


_DIGITS = r"^[0-9]{1,20}$"


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


class CarrierConfig(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    uri: str
    failures: dict[int, OutcomeClass] = Field(default_factory=dict)
    q850: dict[int, OutcomeClass] = Field(default_factory=dict)
    dialstatus: dict[str, OutcomeClass] = Field(default_factory=dict)
    max_calls: int | None = Field(default=None, ge=1, le=1_000_000)
    max_cps: float | None = Field(default=None, gt=0, le=100_000)
    deck: DeckConfig | None = None
    priority: int = Field(default=0, ge=0, le=1000)
    weight: int = Field(default=1, ge=0, le=1000)

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
    max_attempts: int = Field(default=3, ge=1, le=20)
    time_budget: Seconds = 10.0
    ring_timeout: Seconds = 180.0


class LimitsConfig(Strict):
    max_message: int = Field(default=65_535, ge=1_024, le=1_048_576)
    max_headers: int = Field(default=128, ge=16, le=1_024)
    max_line: int = Field(default=8_192, ge=256, le=65_535)


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

    @model_validator(mode="after")
    def _window(self) -> HealthConfig:
        if self.window_min_volume > self.window_size:
            raise ValueError("window_min_volume cannot exceed window_size")
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


class AdminConfig(Strict):
    """The admin API: loopback by default; it does not start without a token."""

    listen: str = "127.0.0.1:8080"
    token: str | None = Field(default=None, min_length=16)

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


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


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
    timers: TimersConfig = TimersConfig()
    health: HealthConfig = HealthConfig()
    probe: ProbeConfig = ProbeConfig()
    store: StoreConfig = StoreConfig()
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    numbers: NumbersConfig | None = None
    routes: list[RouteConfig] = Field(default_factory=list)
    blocked: list[str] = Field(default_factory=list)
    typical_call_seconds: Seconds = 90.0
    pools: list[PoolConfig] = Field(default_factory=list)
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

    @model_validator(mode="after")
    def _unique(self) -> RouterConfig:
        carrier_names = [c.name for c in self.carriers]
        names = carrier_names + [m.name for p in self.pools for m in p.members]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"carrier and pool member names must be unique: {', '.join(dupes)}")
        known = set(carrier_names)
        for route in self.routes:
            unknown = sorted({*route.pin, *route.exclude} - known)
            if unknown:
                raise ValueError(f"route {route.prefix}: no carrier named {', '.join(unknown)}")
        for prefix in self.blocked:
            if not (prefix.isascii() and prefix.isdigit() and len(prefix) <= 20):
                raise ValueError(f"blocked prefix {prefix!r}: expected 1-20 digits")
        return self

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths in it are relative to this."""
        return self._base

    def store_path(self) -> Path:
        return self._base / self.store.path

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
            time_budget=f.time_budget,
            ring_timeout=f.ring_timeout,
            timers=TimerConfig(t1=self.timers.t1, t2=self.timers.t2, t4=self.timers.t4),
            limits=Limits(
                max_message=self.limits.max_message,
                max_headers=self.limits.max_headers,
                max_line=self.limits.max_line,
            ),
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

    def targets(self) -> list[Target]:
        """Carriers as targets, in config order; host names are resolved once, here."""
        base = FailureTable(self.failures, q850=self.q850, dialstatus=self.dialstatus)
        out = []
        for carrier in self.carriers:
            uri = parse_uri(carrier.uri)
            transport = str(uri.params.get("transport") or "udp").lower()
            host = resolve(uri.host)
            flow = Flow(transport, (host, uri.port or 5060))
            table = base.with_overrides(
                carrier.failures, q850=carrier.q850, dialstatus=carrier.dialstatus
            )
            out.append(Target(carrier.name, uri, flow, table))
        for pool in self.pools:
            for member in pool.members:
                uri = parse_uri(member.uri)
                transport = str(uri.params.get("transport") or "udp").lower()
                flow = Flow(transport, (resolve(uri.host), uri.port or 5060))
                out.append(Target(member.name, uri, flow, base, kind=POOL_MEMBER))
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
        raise ConfigError([f"cannot resolve carrier host {host!r}: {exc}"]) from None
    return str(infos[0][4][0])


class ConfigError(Exception):
    """Config could not be loaded; ``problems`` lists every reason with its place."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _node_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
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


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(text: str, source: str = "<config>") -> RouterConfig:
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping with listen, allow, carriers"])
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
            # Union members add their type name to the path; keep only real keys.
            loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("IPv")))
            line = _node_line(root, loc)
            where = f"{source}:{line}" if line else source
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {_field_path(loc)}: {msg}")
        raise ConfigError(problems) from None


def load_config(path: str | Path | None) -> tuple[RouterConfig, str]:
    """Load ``path``, or the embedded default config when ``path`` is None."""
    if path is None:
        text = default_config_text()
        return parse_config(text, "<embedded default>"), "<embedded default>"
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    config = parse_config(text, str(p))
    config._base = p.resolve().parent
    return config, str(p)


def default_config_text() -> str:
    return (resources.files("trunkguard") / "defaults" / "router.yaml").read_text("utf-8")
