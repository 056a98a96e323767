"""The dashboard's logins: sessions, one-time login links and the failed-login throttle.

Pure: every call takes ``now`` (any monotonic clock), nothing here reads a clock,
a socket or a file, so it is tested without either.

- A session is made by a login with the admin token (or a one-time link). The
  browser holds only its random id, in an HttpOnly cookie; the server keeps the
  session, keyed by a hash of that id, so a lookup is no timing oracle for it.
  Each session has its own CSRF token, handed to the page and sent back on
  every POST. Sessions expire when idle and at the end of a fixed lifetime;
  there are at most ``max_sessions`` (the oldest go first).
- A one-time link carries a random code that opens one session, once, within
  a few minutes: ``trunkguard lab`` prints one so that the token itself need
  not be typed nor put in a URL.
- Failed logins are counted per client address. After ``free`` failures in a
  row an address must wait, twice as long after each further failure (capped),
  before its next try is even looked at. The first failure of a burst is to be
  logged, the rest only counted (``failed`` says which).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

IDLE = 3600.0  # a session unused this long is gone
LIFETIME = 12 * 3600.0  # and none outlives this
MAX_SESSIONS = 64
LINK_TTL = 600.0
MAX_LINKS = 16


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode(errors="surrogateescape")).hexdigest()


@dataclass(slots=True)
class Session:
    key: str  # hash of the id in the cookie; the id itself is not kept
    csrf: str
    created: float
    seen: float


class Sessions:
    def __init__(
        self,
        *,
        idle: float = IDLE,
        lifetime: float = LIFETIME,
        max_sessions: int = MAX_SESSIONS,
        link_ttl: float = LINK_TTL,
        max_links: int = MAX_LINKS,
    ) -> None:
        if min(idle, lifetime, link_ttl) <= 0 or min(max_sessions, max_links) < 1:
            raise ValueError("session limits must be positive")
        self.idle = idle
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self.link_ttl = link_ttl
        self.max_links = max_links
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # oldest first
        self._links: OrderedDict[str, float] = OrderedDict()  # code hash -> expires

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, now: float) -> tuple[str, Session]:
        """A new session: returns the id for the cookie (kept nowhere else) and the session."""
        self._expire(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        session = Session(_key(sid), secrets.token_urlsafe(32), now, now)
        self._sessions[session.key] = session
        return sid, session

    def get(self, sid: str, now: float) -> Session | None:
        """The live session of cookie value ``sid`` (its idle time restarts), or None."""
        session = self._sessions.get(_key(sid))
        if session is None:
            return None
        if not self._alive(session, now):
            del self._sessions[session.key]
            return None
        session.seen = now
        return session

    def alive(self, key: str, now: float) -> bool:
        """Whether the session with this key is still open (an open stream keeps it used)."""
        session = self._sessions.get(key)
        if session is None or not self._alive(session, now):
            return False
        session.seen = now
        return True

    def close(self, sid: str) -> Session | None:
        return self._sessions.pop(_key(sid), None)

    def _alive(self, s: Session, now: float) -> bool:
        return now - s.seen < self.idle and now - s.created < self.lifetime

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if not self._alive(s, now)]:
            del self._sessions[key]

    # -- one-time links -----------------------------------------------------------------------
    def make_link(self, now: float) -> str:
        """A code that opens one session, once, within ``link_ttl`` seconds."""
        for code_key in [k for k, until in self._links.items() if until <= now]:
            del self._links[code_key]
        while len(self._links) >= self.max_links:
            self._links.popitem(last=False)
        code = secrets.token_urlsafe(24)
        self._links[_key(code)] = now + self.link_ttl
        return code

    def redeem(self, code: str, now: float) -> bool:
        until = self._links.pop(_key(code), None)
        return until is not None and now < until


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    wait_until: float


class LoginThrottle:
    """Failed logins per client address: a growing wait after ``free`` failures in a row."""

    def __init__(
        self,
        *,
        free: int = 5,
        first_wait: float = 1.0,
        max_wait: float = 300.0,
        quiet: float = 600.0,
        max_addresses: int = 4096,
    ) -> None:
        self.free = free
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.quiet = quiet  # failures this far apart start a new burst
        self.max_addresses = max_addresses
        self._by_address: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, address: str, now: float) -> float:
        """Seconds ``address`` must still wait before a login is tried (0: go ahead)."""
        f = self._by_address.get(address)
        return 0.0 if f is None else max(f.wait_until - now, 0.0)

    def failed(self, address: str, now: float) -> bool:
        """A failed login from ``address``; True when it starts a burst (log it, once)."""
        f = self._by_address.get(address)
        first = f is None or now - f.last >= self.quiet
        if f is None or first:
            f = _Failures(0, now, now)
            self._by_address[address] = f
            while len(self._by_address) > self.max_addresses:
                self._by_address.popitem(last=False)
        self._by_address.move_to_end(address)
        f.count += 1
        f.last = now
        if f.count >= self.free:
            extra = min(f.count - self.free, 20)
            f.wait_until = now + min(self.first_wait * 2.0**extra, self.max_wait)
        return first

    def failures(self, address: str) -> int:
        f = self._by_address.get(address)
        return 0 if f is None else f.count

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)
