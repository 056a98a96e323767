"""A simulated carrier's registrar: REGISTER with digest (MD5, qop=auth), and its bindings.

The server side of RFC 3261 §10.3 and RFC 2617/7616 digest, written here
rather than borrowed from :mod:`trunkguard.sip._digest`, so that the router's
client code is checked against an independent implementation:

- a REGISTER without (valid) credentials gets ``401`` with
  ``WWW-Authenticate: Digest realm="...", nonce="...", qop="auth", algorithm=MD5``;
- ``Authorization`` is verified: user, realm, uri (the Request-URI), a nonce
  this registrar issued, a nonce count that only grows, and
  response = MD5(HA1:nonce:nc:cnonce:qop:HA2), where HA1 = MD5(user:realm:password)
  and HA2 = MD5(REGISTER:uri). A right answer to an unknown, expired or
  replayed nonce gets a fresh challenge with ``stale=true``; a wrong answer
  gets a fresh challenge without it (the client's credentials are wrong);
- a verified REGISTER for another address of record than the user's is ``403``;
- otherwise its Contacts are bound for the Expires asked (the Contact's
  ``expires`` parameter, else the Expires header, else 3600; at most
  ``max_expires``; 0 removes, ``Contact: *`` with Expires 0 removes all), and the
  ``200`` lists every binding with ``;expires=N`` and an ``Expires: N`` header.

With ``require`` set (the default), a carrier without a live binding refuses
INVITEs with ``403``: a real trunk takes calls only from a registered account.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from ..sip import NameAddr, ParseError, Request

MAX_NONCES = 1024  # nonces remembered; the oldest is forgotten first
MAX_BINDINGS = 64
DEFAULT_EXPIRES = 3600
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')
_NC = re.compile(r"[0-9A-Fa-f]{8}\Z")


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """The account a carrier expects, and its registrar's rules. Bad values raise ValueError."""

    user: str
    password: str = field(repr=False)
    realm: str = "sim-carrier"
    max_expires: int = 3600
    nonce_lifetime: float = 300.0
    require: bool = True  # INVITEs get 403 while no binding is live

    def __post_init__(self) -> None:
        for what, value in (("user", self.user), ("realm", self.realm)):
            if not value or any(c in value for c in '"\\\r\n') or not value.isprintable():
                raise ValueError(f"registrar {what} {value!r}: printable, no quotes or backslashes")
        if not self.password:
            raise ValueError("registrar password: must not be empty")
        if self.max_expires < 1:
            raise ValueError(f"registrar max_expires must be at least 1, not {self.max_expires}")
        if not self.nonce_lifetime > 0:
            raise ValueError(
                f"registrar nonce_lifetime must be positive, not {self.nonce_lifetime}"
            )


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer a REGISTER: status, headers, and the outcome for the carrier's log."""

    status: int
    headers: list[tuple[str, str]]
    outcome: str  # challenged, stale, rejected, forbidden, accepted, unregistered, bad-request
    expires: int | None = None  # accepted: the Expires granted


def _md5(*parts: str) -> str:
    return hashlib.md5(":".join(parts).encode("utf-8")).hexdigest()


def parse_authorization(value: str) -> dict[str, str] | None:
    """The parameters of ``Digest k=v, k="v", ...`` (names lower-cased), or None."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            return None
        name, raw = m.group(1).lower(), m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name in params:
            return None
        params[name] = raw
        pos = m.end()
    return params


class Registrar:
    """One account's bindings and the nonces issued for it. Every method takes ``now``."""

    def __init__(self, config: RegistrarConfig) -> None:
        self.config = config
        self.bindings: dict[str, float] = {}  # contact URI -> when it lapses
        self._nonces: dict[str, tuple[float, int]] = {}  # nonce -> (issued, last nc)
        self.counts: dict[str, int] = {}

    # -- the carrier asks ---------------------------------------------------------------------
    def registered(self, now: float) -> bool:
        self._expire(now)
        return bool(self.bindings)

    def expires_at(self, now: float) -> float | None:
        """When the last live binding lapses, or None without one."""
        self._expire(now)
        return max(self.bindings.values()) if self.bindings else None

    def snapshot(self, now: float) -> dict[str, object]:
        at = self.expires_at(now)
        out: dict[str, object] = {
            "user": self.config.user,
            "realm": self.config.realm,
            "require": self.config.require,
            "registered": at is not None,
            "bindings": len(self.bindings),
        }
        if at is not None:
            out["expires_in_s"] = round(at - now, 3)
        out.update(sorted(self.counts.items()))
        return out

    def forget(self) -> None:
        """A killed process: bindings and nonces are gone (the counts are the simulator's)."""
        self.bindings.clear()
        self._nonces.clear()

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # -- a REGISTER ---------------------------------------------------------------------------
    def handle(self, req: Request, now: float) -> Answer:
        answer = self._handle(req, now)
        self.count(answer.outcome)
        return answer

    def _handle(self, req: Request, now: float) -> Answer:
        value = req.get("authorization")
        if value is None:
            return self._challenge(now, "challenged")
        params = parse_authorization(value)
        if params is None:
            return self._challenge(now, "rejected")
        verdict = self._verify(params, req.uri, now)
        if verdict != "ok":
            return self._challenge(now, verdict, stale=verdict == "stale")
        try:
            aor_user = req.to.uri.user
            contacts = req.contacts
        except ParseError:
            return Answer(400, [], "bad-request")
        if aor_user != self.config.user:
            return Answer(403, [], "forbidden")
        return self._bind(req, contacts, now)

    def _challenge(self, now: float, outcome: str, *, stale: bool = False) -> Answer:
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = (now, 0)
        while len(self._nonces) > MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]
        value = (
            f'Digest realm="{self.config.realm}", nonce="{nonce}", qop="auth", algorithm=MD5'
            + (", stale=true" if stale else "")
        )
        return Answer(401, [("WWW-Authenticate", value)], outcome)

    def _verify(self, p: dict[str, str], uri: str, now: float) -> str:
        """``ok``, ``stale`` (right answer, nonce not good), or ``rejected``."""
        c = self.config
        needed = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(not p.get(k) for k in needed):
            return "rejected"
        if p["username"] != c.user or p["realm"] != c.realm or p["uri"] != uri:
            return "rejected"
        if p.get("algorithm", "MD5").upper() != "MD5" or p["qop"] != "auth":
            return "rejected"
        if not _NC.match(p["nc"]):
            return "rejected"
        ha1 = _md5(c.user, c.realm, c.password)
        ha2 = _md5("REGISTER", p["uri"])
        expected = _md5(ha1, p["nonce"], p["nc"], p["cnonce"], "auth", ha2)
        if not hmac.compare_digest(expected, p["response"].lower()):
            return "rejected"
        issued = self._nonces.get(p["nonce"])
        nc = int(p["nc"], 16)
        if issued is None or now - issued[0] > c.nonce_lifetime or nc <= issued[1]:
            return "stale"
        self._nonces[p["nonce"]] = (issued[0], nc)
        return "ok"

    def _bind(self, req: Request, contacts: list[NameAddr], now: float) -> Answer:
        header = req.get("expires")
        default = int(header) if header is not None and header.strip().isdigit() else None
        self._expire(now)
        raw = ", ".join(req.get_all("contact")).strip()
        granted: int | None = None
        if raw == "*":
            if default != 0:
                return Answer(400, [], "bad-request")
            self.bindings.clear()
            return Answer(200, [], "unregistered", 0)
        for contact in contacts:
            param = contact.params.get("expires")
            asked = int(param) if param is not None and param.isdigit() else default
            expires = min(DEFAULT_EXPIRES if asked is None else asked, self.config.max_expires)
            key = str(contact.uri)
            if expires == 0:
                self.bindings.pop(key, None)
            else:
                self.bindings[key] = now + expires
                while len(self.bindings) > MAX_BINDINGS:
                    del self.bindings[next(iter(self.bindings))]
            if granted is None:
                granted = expires
        headers = [
            ("Contact", f"<{uri}>;expires={max(0, round(at - now))}")
            for uri, at in self.bindings.items()
        ]
        if granted is not None:
            headers.append(("Expires", str(granted)))
        outcome = "unregistered" if granted == 0 else "accepted"
        return Answer(200, headers, outcome, granted)

    def _expire(self, now: float) -> None:
        for uri in [u for u, at in self.bindings.items() if at <= now]:
            del self.bindings[uri]
