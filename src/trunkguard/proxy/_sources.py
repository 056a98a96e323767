"""Per-source limits and bans, as Kamailio's pike and ratelimit modules do.

Each source address (the host, whatever its port) has token buckets for the
messages it sends and the new calls it starts, and a count of its calls in
progress. Which limits apply depends on what the source is: one of the
router's targets (a carrier, a pool server), a network given its own limits,
or any other allowed source.

A source over a limit whose class bans is banned: everything it sends is
dropped, unparsed, for ``ban_for`` seconds. If it kept sending faster than
its limit while banned, the ban is renewed for twice as long (up to
``ban_max``); a source that offends again within ten minutes of its last ban
is banned for twice that one's length too. A ban is reported once when it
starts and once when it is lifted (with what it dropped), never per packet.
A banned source's calls in progress still end: its responses, ACKs, BYEs and
CANCELs pass at the rate those calls can need. At its cap of calls in
progress a source is never banned, only refused (a ban would drop the BYEs
that bring the count down). A class that does not ban (carriers, by default:
banning one would drop the answers to our own calls) has only its excess
refused: new calls over the limit get ``503``, messages over it are dropped.

Every table is bounded: sources seen (idle ones go first), and bans.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Limit:
    """The limits of one class of sources; None: no such limit."""

    calls_per_s: float | None = None
    concurrent_calls: int | None = None
    messages_per_s: float | None = None
    ban: bool = True  # over a limit: the source is banned (else its excess is refused)
    burst: float = 2.0  # seconds of its rate a bucket holds


@dataclass(frozen=True, slots=True)
class SourceSettings:
    enabled: bool = True
    default: Limit = Limit(calls_per_s=500, concurrent_calls=20_000, messages_per_s=10_000)
    carriers: Limit = Limit(ban=False)
    networks: tuple[tuple[Network, Limit], ...] = ()
    ban_for: float = 10.0
    ban_max: float = 600.0
    max_sources: int = 100_000
    max_bans: int = 10_000


@dataclass(frozen=True, slots=True)
class BanEvent:
    """A source was banned, its ban renewed, or lifted; for the event log and the logs."""

    source: str
    state: str  # "banned", "renewed", "lifted"
    detail: str
    at: float


IDLE = 60.0  # seconds without a message after which a source's state may go
# A banned source's responses, ACKs, BYEs and CANCELs still pass, up to this many per
# second per call in progress, plus a floor: what live calls need, not a flood.
PASS_RATE = 0.5
PASS_FLOOR = 20.0
ONGOING = (b"SIP/2.0 ", b"ACK ", b"BYE ", b"CANCEL ")  # first lines of what calls up send
HISTORY = 600.0  # a source banned again within this long gets twice its last ban's length


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at

    def take(self, rate: float, depth: float, now: float) -> bool:
        tokens = min(depth, self.tokens + (now - self.at) * rate)
        self.at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class _Source:
    __slots__ = ("calls", "last_ban", "last_ban_at", "limit", "messages", "new_calls", "seen")

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self.seen = now
        self.calls = 0  # in progress (in setup, or answered until the dialog ends)
        self.messages = _Bucket(_depth(limit.messages_per_s, limit.burst), now)
        self.new_calls = _Bucket(_depth(limit.calls_per_s, limit.burst), now)
        self.last_ban = 0.0  # length of its last ban, seconds
        self.last_ban_at = float("-inf")


class _Ban:
    __slots__ = ("dropped", "length", "passing", "since", "until", "why")

    def __init__(self, why: str, length: float, now: float) -> None:
        self.why = why
        self.length = length
        self.since = now
        self.until = now + length
        self.dropped = 0
        self.passing: _Bucket | None = None  # what its calls in progress still send


def _depth(rate: float | None, burst: float) -> float:
    return 0.0 if rate is None else max(1.0, rate * burst)


class SourceLimits:
    """The per-source state of one router (kept across reloads; see :meth:`reconfigure`)."""

    def __init__(
        self, settings: SourceSettings | None = None, counters: Counter[str] | None = None
    ) -> None:
        self.settings = settings or SourceSettings()
        self.sources: dict[str, _Source] = {}
        self.bans: dict[str, _Ban] = {}
        self.events: list[BanEvent] = []
        self.carrier_hosts: frozenset[str] = frozenset()
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._classes: dict[str, Limit] = {}

    def reconfigure(self, settings: SourceSettings, carrier_hosts: frozenset[str]) -> None:
        """New limits (a reload) or new targets: sources keep their counts and bans."""
        self.settings = settings
        self.carrier_hosts = carrier_hosts
        self._classes = {}
        for host, source in self.sources.items():
            source.limit = self.limit_of(host)

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def limit_of(self, host: str) -> Limit:
        """The class of ``host``: a target's, its network's, or the default."""
        limit = self._classes.get(host)
        if limit is not None:
            return limit
        s = self.settings
        if host in self.carrier_hosts:
            limit = s.carriers
        else:
            limit = s.default
            try:
                ip = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                ip = None
            if ip is not None:
                for net, net_limit in s.networks:
                    if ip in net:
                        limit = net_limit
                        break
        if len(self._classes) < s.max_sources:
            self._classes[host] = limit
        return limit

    def _source(self, host: str, now: float) -> _Source:
        source = self.sources.get(host)
        if source is None:
            if len(self.sources) >= self.settings.max_sources:
                self._evict(now)
            source = self.sources[host] = _Source(self.limit_of(host), now)
        return source

    def _evict(self, now: float) -> None:
        # Sources without calls in progress go first, the longest idle first (dict order
        # is first seen; a sweep pass is enough, a table this full is under attack).
        before = len(self.sources)
        cutoff = now - IDLE
        idle = [h for h, s in self.sources.items() if s.calls == 0 and s.seen < cutoff]
        if len(idle) < before // 10:
            idle = [h for h, s in self.sources.items() if s.calls == 0][: max(1, before // 10)]
        for host in idle:
            del self.sources[host]
        if len(self.sources) >= self.settings.max_sources:
            # Every one has calls up: the oldest go all the same (their calls stay up, only
            # their counts are lost).
            for host in list(self.sources)[: max(1, before // 10)]:
                del self.sources[host]
        self._count("sources_evicted", before - len(self.sources))

    # -- each message ----------------------------------------------------------------------
    def message(self, host: str, now: float, data: bytes = b"") -> bool:
        """Is this message (``data``) from ``host`` to be handled? False: dropped (banned,
        or over its rate).

        A banned source with calls in progress still gets its responses, ACKs, BYEs and
        CANCELs through (by their first line), up to a rate its calls can need, so a ban
        (perhaps of a spoofed address) stops new calls, not live ones.
        """
        ban = self.bans.get(host)
        if ban is not None and (now < ban.until or not self._end_ban(host, ban, now)):
            ban = self.bans[host]  # renewed, perhaps
            if data.startswith(ONGOING) and self._passes(host, ban, now):
                return True
            ban.dropped += 1
            return False
        if not self.settings.enabled:
            return True
        source = self._source(host, now)
        source.seen = now
        limit = source.limit
        rate = limit.messages_per_s
        if rate is None or source.messages.take(rate, _depth(rate, limit.burst), now):
            return True
        self._count("source_messages_over")
        if limit.ban:
            self._ban(host, source, f"over {rate:g} messages/s", now)
        return False

    def _passes(self, host: str, ban: _Ban, now: float) -> bool:
        source = self.sources.get(host)
        if source is None or source.calls <= 0:
            return False
        rate = PASS_RATE * source.calls + PASS_FLOOR
        if ban.passing is None:
            ban.passing = _Bucket(rate, now)
        if ban.passing.take(rate, rate, now):
            self._count("banned_passed")
            return True
        return False

    def banned(self, host: str) -> bool:
        return host in self.bans

    # -- new calls -------------------------------------------------------------------------
    def new_call(self, host: str, now: float) -> str | None:
        """May ``host`` start a new call now? None, or why not (the call gets 503)."""
        if not self.settings.enabled:
            return None
        source = self._source(host, now)
        limit = source.limit
        if limit.concurrent_calls is not None and source.calls >= limit.concurrent_calls:
            # At its cap is not a flood: the excess is refused, never banned (a ban would
            # drop the BYEs that bring the count down).
            self._count("source_calls_full")
            return f"{limit.concurrent_calls} calls in progress from {host}"
        rate = limit.calls_per_s
        if rate is None or source.new_calls.take(rate, _depth(rate, limit.burst), now):
            return None
        why = f"over {rate:g} new calls/s from {host}"
        self._count("source_calls_over")
        if limit.ban:
            self._ban(host, source, why, now)
        return why

    def call_started(self, host: str, now: float) -> None:
        if self.settings.enabled:
            self._source(host, now).calls += 1

    def call_ended(self, host: str) -> None:
        source = self.sources.get(host)
        if source is not None and source.calls > 0:
            source.calls -= 1

    # -- bans ------------------------------------------------------------------------------
    def _ban(self, host: str, source: _Source, why: str, now: float) -> None:
        s = self.settings
        if host in self.bans:
            return
        if len(self.bans) >= s.max_bans:
            # The ban that ends soonest makes room: a full table is a spread attack.
            soonest = min(self.bans, key=lambda h: self.bans[h].until)
            del self.bans[soonest]
            self._count("bans_evicted")
        length = s.ban_for
        if now - source.last_ban_at < HISTORY:
            length = min(s.ban_max, max(length, source.last_ban * 2))
        self.bans[host] = _Ban(why, length, now)
        source.last_ban, source.last_ban_at = length, now
        self._count("sources_banned")
        self.events.append(BanEvent(host, "banned", f"{why}: banned for {length:g} s", now))

    def _end_ban(self, host: str, ban: _Ban, now: float) -> bool:
        """A ban's time is up: renew it if the source kept on, else lift it. True: lifted."""
        s = self.settings
        source = self.sources.get(host)
        limit = source.limit if source is not None else self.limit_of(host)
        # Kept on while banned: faster than the limit it broke (messages, else new calls:
        # a dropped message is at most one call).
        rate = limit.messages_per_s if "messages/s" in ban.why else limit.calls_per_s
        seconds = max(now - ban.since, 1e-9)
        if rate is not None and ban.dropped / seconds > rate:
            length = min(s.ban_max, ban.length * 2)
            detail = (
                f"{ban.why}: kept on at {ban.dropped / seconds:.0f} messages/s while banned"
                f" ({ban.dropped} dropped): banned for {length:g} s more"
            )
            self.events.append(BanEvent(host, "renewed", detail, now))
            self._count("bans_renewed")
            self._count("banned_dropped", ban.dropped)
            renewed = _Ban(ban.why, length, now)
            self.bans[host] = renewed
            if source is not None:
                source.last_ban, source.last_ban_at = length, now
            return False
        del self.bans[host]
        self._count("banned_dropped", ban.dropped)
        detail = f"ban lifted after {now - ban.since:.0f} s; {ban.dropped} messages dropped"
        self.events.append(BanEvent(host, "lifted", detail, now))
        if source is not None:
            # A fresh start: the buckets refill, the ban's length is remembered.
            source.messages.tokens = _depth(limit.messages_per_s, limit.burst)
            source.new_calls.tokens = _depth(limit.calls_per_s, limit.burst)
            source.messages.at = source.new_calls.at = now
        return True

    def sweep(self, now: float) -> None:
        """Lift bans whose time is up (a source that went quiet), forget idle sources."""
        for host, ban in list(self.bans.items()):
            if now >= ban.until:
                self._end_ban(host, ban, now)
        cutoff = now - max(IDLE, HISTORY)
        stale = [h for h, s in self.sources.items() if s.calls == 0 and s.seen < cutoff]
        for host in stale:
            if host not in self.bans:
                del self.sources[host]

    def take_events(self) -> list[BanEvent]:
        events, self.events = self.events, []
        return events

    def snapshot(self, now: float) -> dict[str, object]:
        """For the admin API and ``trunkguard status``: bans in force, table sizes."""
        return {
            "sources": len(self.sources),
            "bans": [
                {
                    "source": host,
                    "why": ban.why,
                    "since": ban.since,
                    "left": max(0.0, ban.until - now),
                    "dropped": ban.dropped,
                }
                for host, ban in sorted(self.bans.items())
            ],
        }
