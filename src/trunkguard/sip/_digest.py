"""Digest authentication for the SIP client side: read a challenge, answer it.

A carrier answers a REGISTER or INVITE with 401 (``WWW-Authenticate``) or 407
(``Proxy-Authenticate``); the next request carries ``Authorization`` or
``Proxy-Authorization`` with a response hash proving the password is known.
This module holds the whole exchange as pure functions and one small object,
with no I/O:

- :func:`parse_challenge` reads one challenge (RFC 3261 §25.1 ``challenge``,
  RFC 7616 §3.3); :func:`choose_challenge` picks the first supported one of
  several, as RFC 8760 §2.4 asks (the server lists them by preference).
- :class:`DigestClient` computes the answer (RFC 7616 §3.4.1 response,
  §3.4.2 the ``-sess`` A1, §3.4.3 A2 for ``auth-int``; RFC 2617 §3.2.2.1 for a
  challenge without ``qop``, the RFC 2069 form) and keeps the nonce count
  (RFC 7616 §3.4, ``nc``) for each nonce.
- :func:`redact` takes the secrets out of text before it reaches a log.

Supported algorithms are MD5, MD5-sess, SHA-256 and SHA-256-sess (RFC 8760
§2.1 requires SHA-256 of SIP clients). Every string is hashed as UTF-8, which
is what SIP carries in quoted strings (RFC 3261 §25.1); RFC 7616's
``username*`` and ``userhash`` are HTTP features SIP servers do not use.

Secrets stay inside: a password is never in a ``repr``, and no error message
holds a password or a response hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._message import Response

# A challenge header value longer than this is not a challenge anybody sends.
MAX_CHALLENGE = 4096
# Nonces whose count is remembered; the oldest is forgotten first. A forgotten nonce
# restarts at 1, which a server answers with a fresh challenge at worst.
MAX_NONCES = 256
# The qop values this client can answer, by preference.
QOP_PREFERENCE = ("auth", "auth-int")


class DigestError(ValueError):
    """A challenge is malformed or unsupported, or cannot be answered.

    The message says what and why, with values from the network shortened; it
    never holds a password or a response hash. ``offered`` names what the
    challenge offered (``"Digest SHA-512-256"``, ``"Basic"``), when that was
    readable.
    """

    def __init__(self, reason: str, *, offered: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offered = offered


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password, for one realm or (``realm=None``) for any."""

    user: str
    password: str = field(repr=False)
    realm: str | None = None

    def __str__(self) -> str:
        return f"{self.user}@{self.realm if self.realm is not None else '*'}"


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge, as :func:`parse_challenge` read it.

    ``algorithm`` is upper-case (``"MD5"``, ``"MD5-SESS"``, ``"SHA-256"``,
    ``"SHA-256-SESS"``); ``qop`` holds the lower-case tokens offered, ``()`` for
    an RFC 2069 challenge without qop. ``proxy`` is true for a
    ``Proxy-Authenticate`` challenge, answered in ``Proxy-Authorization``.
    """

    realm: str
    nonce: str
    algorithm: str
    qop: tuple[str, ...]
    opaque: str | None
    stale: bool
    proxy: bool


@dataclass(frozen=True, slots=True)
class _Algorithm:
    name: str  # as registered (RFC 7616 §6.1) and written in the answer
    digest: Callable[[bytes], str]
    sess: bool


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ALGORITHMS: dict[str, _Algorithm] = {
    "MD5": _Algorithm("MD5", _md5, sess=False),
    "MD5-SESS": _Algorithm("MD5-sess", _md5, sess=True),
    "SHA-256": _Algorithm("SHA-256", _sha256, sess=False),
    "SHA-256-SESS": _Algorithm("SHA-256-sess", _sha256, sess=True),
}


def _algorithm(name: str) -> _Algorithm | None:
    # ASCII only: str.upper() would also turn "md5-\u017fess" (a long s) into MD5-SESS.
    return ALGORITHMS.get(name.upper()) if name.isascii() else None


# -- reading a challenge --------------------------------------------------------------------
# Line folding (RFC 3261 §7.3.1) is LWS and means one space, in quoted strings too.
_FOLD = re.compile(r"\r?\n[ \t]+")
# RFC 3261 §25.1 token.
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# quoted-string: qdtext is any character but '"', '\' and controls (HTAB is LWS);
# quoted-pair is '\' and any character but CR and LF.
_QUOTED = re.compile(r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\r\n])*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")


def _short(text: str) -> str:
    """A value from the network, short and printable, for an error message."""
    text = text if len(text) <= 32 else text[:32] + "..."
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _show(text: str) -> str:
    return repr(_short(text))


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _scan(value: str) -> dict[str, str]:
    """The parameters of ``Digest name=value, ...``.

    Names are lower-cased; quoted values are unquoted. Empty list elements
    (``a=1,,b=2``) are skipped, as RFC 7230 §7 allows.
    """
    if len(value) > MAX_CHALLENGE:
        raise DigestError(f"challenge is longer than {MAX_CHALLENGE} characters")
    text = _FOLD.sub(" ", value)
    end = len(text)
    pos = _skip_ws(text, 0)
    found = _TOKEN.match(text, pos)
    if found is None:
        raise DigestError("challenge has no authentication scheme")
    scheme = found.group()
    pos = found.end()
    if scheme.lower() != "digest":
        raise DigestError(f"scheme {_show(scheme)} is not Digest", offered=_short(scheme))
    if pos < end and text[pos] not in " \t":
        raise DigestError(f"expected a space after the scheme at offset {pos}", offered="Digest")
    params: dict[str, str] = {}

    def fail(reason: str) -> DigestError:
        algorithm = params.get("algorithm", "MD5")
        return DigestError(reason, offered=f"Digest {_short(algorithm)}")

    while True:
        pos = _skip_ws(text, pos)
        if pos == end:
            break
        if text[pos] == ",":
            pos += 1
            continue
        found = _TOKEN.match(text, pos)
        if found is None:
            raise fail(f"expected a parameter name at offset {pos}")
        name = found.group().lower()
        pos = _skip_ws(text, found.end())
        if pos == end or text[pos] != "=":
            raise fail(f"parameter {_show(name)} has no value")
        pos = _skip_ws(text, pos + 1)
        found = _QUOTED.match(text, pos)
        if found is not None:
            param = _QUOTED_PAIR.sub(r"\1", found.group(1))
        else:
            found = _TOKEN.match(text, pos)
            if found is None:
                raise fail(f"parameter {_show(name)} has a bad value at offset {pos}")
            param = found.group()
        if name in params:
            # RFC 7616 §3.3: each parameter at most once; two nonces leave nothing to trust.
            raise fail(f"parameter {_show(name)} appears twice")
        params[name] = param
        pos = _skip_ws(text, found.end())
        if pos < end and text[pos] != ",":
            raise fail(f"expected ',' at offset {pos}")
    return params


def parse_challenge(value: str, *, proxy: bool) -> Challenge:
    """Read one ``WWW-Authenticate`` (``proxy=False``) or ``Proxy-Authenticate`` value.

    Raises :class:`DigestError` for another scheme, a missing realm or nonce, an
    unsupported algorithm or qop, bad syntax, or a value over 4096 characters.
    Unknown parameters (``domain``, ``charset``, ...) are ignored.
    """
    params = _scan(value)
    raw_algorithm = params.get("algorithm", "MD5")  # RFC 7616 §3.3: absent means MD5
    offered = f"Digest {_short(raw_algorithm)}"
    algorithm = _algorithm(raw_algorithm)
    if algorithm is None:
        raise DigestError(f"unsupported algorithm {_show(raw_algorithm)}", offered=offered)
    realm = params.get("realm")
    if realm is None:
        raise DigestError("challenge has no realm", offered=offered)
    nonce = params.get("nonce")
    if not nonce:
        raise DigestError("challenge has no nonce", offered=offered)
    qop: tuple[str, ...] = ()
    if "qop" in params:
        tokens = (token.strip().lower() for token in params["qop"].split(","))
        qop = tuple(dict.fromkeys(token for token in tokens if token))
        if not any(token in QOP_PREFERENCE for token in qop):
            raise DigestError(
                f"qop {_show(params['qop'])} offers neither auth nor auth-int", offered=offered
            )
    if algorithm.sess and not qop:
        # The -sess A1 needs a cnonce, and without qop the answer has no cnonce
        # (RFC 2617 §3.2.2): no server could check it.
        raise DigestError(f"algorithm {algorithm.name} needs qop", offered=offered)
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=raw_algorithm.upper(),
        qop=qop,
        opaque=params.get("opaque"),
        # RFC 7616 §3.3: anything but a case-insensitive "true" is false.
        stale=params.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def choose_challenge(values: Sequence[str], *, proxy: bool, realm: str | None = None) -> Challenge:
    """The first challenge of ``values`` this client supports.

    The server lists its challenges by preference, e.g. SHA-256 before MD5
    (RFC 8760 §2.4). With ``realm``, only a challenge for that realm counts
    (RFC 3261 §22.3: each proxy on the path may add its own). Raises
    :class:`DigestError` naming what was offered when none is usable.
    """
    offered: list[str] = []
    for value in values:
        try:
            challenge = parse_challenge(value, proxy=proxy)
        except DigestError as exc:
            offered.append(f"{exc.offered or 'unreadable'} ({exc.reason})")
            continue
        if realm is None or challenge.realm == realm:
            return challenge
        offered.append(f"Digest {challenge.algorithm} (realm {_show(challenge.realm)})")
    if not offered:
        raise DigestError("no challenge offered")
    shown = ", ".join(offered[:8]) + (", ..." if len(offered) > 8 else "")
    raise DigestError(f"no usable challenge among {len(offered)} offered: {shown}")


def response_challenge(response: Response, realm: str | None = None) -> Challenge:
    """The challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) to answer.

    Raises :class:`DigestError` when the response carries none we can use.
    """
    proxy = response.status == 407
    header = "proxy-authenticate" if proxy else "www-authenticate"
    return choose_challenge(response.get_all(header), proxy=proxy, realm=realm)


# -- answering ------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _quote(text: str, what: str) -> str:
    """``text`` as a quoted-string (RFC 3261 §25.1), refusing what would break the header."""
    if _CONTROL.search(text):
        raise DigestError(f"{what} contains a control character")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise DigestError(f"{what} is not valid Unicode text") from None


def _hash(algorithm: _Algorithm, *parts: bytes) -> str:
    return algorithm.digest(b":".join(parts))


def _new_cnonce() -> str:
    return secrets.token_hex(16)


class DigestClient:
    """Answers challenges for one set of credentials; keeps the nonce count per nonce."""

    __slots__ = ("_cnonce", "_counts", "_credentials")

    def __init__(
        self, credentials: Credentials, *, cnonce: Callable[[], str] | None = None
    ) -> None:
        self._credentials = credentials
        self._cnonce = cnonce or _new_cnonce
        self._counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"DigestClient({self._credentials!r})"

    def nonce_count(self, nonce: str) -> int:
        """How many answers this client has given to ``nonce`` (0: none, or forgotten)."""
        return self._counts.get(nonce, 0)

    def authorize(
        self, challenge: Challenge, method: str, uri: str, body: bytes = b""
    ) -> tuple[str, str]:
        """The header that answers ``challenge`` for a ``method`` request to ``uri``.

        Returns ``("Authorization", value)``, or ``("Proxy-Authorization", value)``
        for a proxy's challenge. ``body`` is hashed only for qop ``auth-int``,
        which is used only when ``auth`` is not offered. Raises
        :class:`DigestError` for a challenge from another realm than the
        credentials', or one that cannot be answered.
        """
        credentials = self._credentials
        if credentials.realm is not None and challenge.realm != credentials.realm:
            raise DigestError(
                f"challenge for realm {_show(challenge.realm)}, "
                f"credentials {_show(credentials.user)} are for {_show(credentials.realm)}"
            )
        algorithm = _algorithm(challenge.algorithm)
        if algorithm is None:
            raise DigestError(f"unsupported algorithm {_show(challenge.algorithm)}")
        qop = next((q for q in QOP_PREFERENCE if q in challenge.qop), None)
        if challenge.qop and qop is None:
            raise DigestError("challenge offers neither qop auth nor auth-int")
        if algorithm.sess and qop is None:
            raise DigestError(f"algorithm {algorithm.name} needs qop")
        # Everything written is checked before the nonce count moves.
        quoted = {
            "username": _quote(credentials.user, "user name"),
            "realm": _quote(challenge.realm, "realm"),
            "nonce": _quote(challenge.nonce, "nonce"),
            "uri": _quote(uri, "uri"),
        }
        opaque = None if challenge.opaque is None else _quote(challenge.opaque, "opaque")
        user = _utf8(credentials.user, "user name")
        realm = _utf8(challenge.realm, "realm")
        password = _utf8(credentials.password, "password")
        nonce = _utf8(challenge.nonce, "nonce")
        a2 = [_utf8(method, "method"), _utf8(uri, "uri")]
        quoted_cnonce: str | None = None
        nc: str | None = None

        # RFC 7616 §3.4.2: A1, hashed.
        ha1 = _hash(algorithm, user, realm, password)
        if qop is None:
            # RFC 2617 §3.2.2.1, the RFC 2069 compatible form: no nc, no cnonce.
            response = _hash(algorithm, ha1.encode(), nonce, _hash(algorithm, *a2).encode())
        else:
            cnonce = self._cnonce()
            if not cnonce:
                raise DigestError("cnonce is empty")
            raw_cnonce = _utf8(cnonce, "cnonce")
            quoted_cnonce = _quote(cnonce, "cnonce")
            if algorithm.sess:
                ha1 = _hash(algorithm, ha1.encode(), nonce, raw_cnonce)
            if qop == "auth-int":
                # RFC 7616 §3.4.3: the body's hash, for SIP the message body (RFC 3261 §22.4).
                a2.append(algorithm.digest(body).encode())
            nc = self._count(challenge.nonce)
            ha2 = _hash(algorithm, *a2)
            response = _hash(
                algorithm, ha1.encode(), nonce, nc.encode(), raw_cnonce, qop.encode(), ha2.encode()
            )

        # RFC 3261 §25.1 dig-resp: qop, nc and algorithm are tokens, the rest quoted strings.
        fields = [*quoted.items(), ("response", f'"{response}"'), ("algorithm", algorithm.name)]
        if quoted_cnonce is not None:
            fields.append(("cnonce", quoted_cnonce))
        if opaque is not None:
            fields.append(("opaque", opaque))
        if qop is not None and nc is not None:
            fields += [("qop", qop), ("nc", nc)]
        value = "Digest " + ", ".join(f"{name}={text}" for name, text in fields)
        return ("Proxy-Authorization" if challenge.proxy else "Authorization"), value

    def _count(self, nonce: str) -> str:
        """The next nc for ``nonce``: 8 hex digits, from 00000001 (RFC 7616 §3.4)."""
        count = self._counts.pop(nonce, 0) + 1
        if count > 0xFFFFFFFF:
            raise DigestError("nonce count exhausted; a new challenge is needed")
        self._counts[nonce] = count
        if len(self._counts) > MAX_NONCES:
            del self._counts[next(iter(self._counts))]
        return f"{count:08x}"


# -- logs -----------------------------------------------------------------------------------
# An Authorization or Proxy-Authorization header line, with its folded continuation lines.
_AUTH_HEADER = re.compile(r"(?im)^((?:proxy-)?authorization[ \t]*:)[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")
# A parameter whose value lets a listener replay or attack the exchange. Also the
# Authentication-Info ones (RFC 7616 §3.5): nextnonce and rspauth.
_SECRET_PARAM = re.compile(
    r"(?i)(?<![A-Za-z0-9_-])(response|cnonce|nonce|nextnonce|rspauth)([ \t]*=[ \t]*)"
    r'(?:("(?:[^"\\\r\n]|\\[^\r\n])*"?)|[^\s,;"]+)'
)


def _hide(found: re.Match[str]) -> str:
    stars = '"***"' if found.group(3) is not None else "***"
    return f"{found.group(1)}{found.group(2)}{stars}"


def redact(text: str) -> str:
    """``text`` with what must not reach a log replaced by ``***``.

    The whole value of every ``Authorization`` and ``Proxy-Authorization``
    header line of a SIP message, and anywhere else the values of ``response=``,
    ``cnonce=``, ``nonce=`` (and ``nextnonce=``, ``rspauth=``). The rest is kept.
    """
    text = _AUTH_HEADER.sub(r"\1 ***", text)
    return _SECRET_PARAM.sub(_hide, text)
