"""SIP URIs (RFC 3261 §19.1) and name-addr / addr-spec header values (§20.10)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ._errors import ParseError
from ._syntax import is_digits, parse_params, split_top_level

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?\Z")
# userinfo: unreserved / escaped / user-unreserved (RFC 3261 §25.1); password likewise plus "&=+$,".
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
_WS_RE = re.compile(r"\s")

# Parsed values by their exact text. A call repeats its From, To, Contact, Route and
# Request-URI values in each of its messages, so each is parsed once, not once a message.
# The parsed objects are frozen and nobody edits their params, so one can be shared.
# Bounded (cleared when full): the texts come from the network.
CACHE_SIZE = 4096
_URIS: dict[str, Uri] = {}
_NAME_ADDRS: dict[str, NameAddr] = {}


@dataclass(frozen=True, slots=True)
class Uri:
    """A parsed URI. For schemes other than sip/sips only ``scheme`` and ``opaque`` are set."""

    scheme: str
    host: str = ""
    port: int | None = None
    user: str | None = None
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    opaque: str = ""

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.hostport())
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)


def _parse_host(text: str) -> str:
    if text.startswith("["):
        if not text.endswith("]"):
            raise ParseError(f"bad IPv6 reference {text!r}")
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise ParseError(f"bad IPv6 address {text!r}") from None
        return text
    if not text or not _HOSTNAME_RE.match(text):
        raise ParseError(f"bad host {text!r}")
    return text


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (host may be an ``[IPv6]`` reference) and validate both."""
    if text.startswith("["):
        end = text.find("]")
        host_text, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ParseError(f"bad host {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host_text, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    host = _parse_host(host_text)
    if port_text is None:
        return host, None
    if not is_digits(port_text) or len(port_text) > 5 or int(port_text) > 65535:
        raise ParseError(f"bad port {port_text!r}")
    return host, int(port_text)


def parse_uri(text: str) -> Uri:
    """Parse a URI; raise :class:`ParseError` with the reason when it is malformed."""
    found = _URIS.get(text)
    if found is None:
        found = _parse_uri(text)
        if len(_URIS) >= CACHE_SIZE:
            _URIS.clear()
        _URIS[text] = found
    return found


def _parse_uri(text: str) -> Uri:
    if not text or _WS_RE.search(text):
        raise ParseError(f"bad URI {text!r}: empty or contains whitespace")
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.match(scheme):
        raise ParseError(f"bad URI {text!r}: no scheme")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        if not rest:
            raise ParseError(f"bad URI {text!r}: empty after scheme")
        return Uri(scheme=scheme, opaque=rest)
    # The user part may contain ';', '?' and '/' (user-unreserved) while params and
    # headers cannot contain '@', so the last '@' splits userinfo from the host.
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if not user or not _USER_RE.match(user):
            raise ParseError(f"bad user part in URI {text!r}")
        if pcolon:
            if not _PASSWORD_RE.match(pw):
                raise ParseError(f"bad password in URI {text!r}")
            password = pw
    headers: str | None = None
    if "?" in rest:
        rest, _, headers = rest.partition("?")
    hostport, semi, param_text = rest.partition(";")
    try:
        host, port = split_hostport(hostport)
        params = parse_params(param_text) if semi else {}
    except ParseError as exc:
        raise ParseError(f"{exc.reason} in URI {text!r}") from None
    return Uri(
        scheme=scheme,
        host=host,
        port=port,
        user=user,
        password=password,
        params=params,
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header parameters."""

    uri: Uri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def _check_display(display: str, header: str | None) -> str | None:
    display = display.strip()
    if not display:
        return None
    if display.startswith('"'):
        # Quoted string: ends at the first unescaped quote, which must be the last char.
        i = 1
        while i < len(display):
            ch = display[i]
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                break
            i += 1
        if i != len(display) - 1:
            raise ParseError("bad quoted display name", header=header)
        return display
    for word in display.split():
        if not all(c.isalnum() or c in "-.!%*_+`'~" for c in word):
            raise ParseError(f"display name {display!r} needs quotes", header=header)
    return display


def parse_name_addr(value: str, header: str | None = None) -> NameAddr:
    """Parse ``name-addr`` or ``addr-spec`` followed by header parameters."""
    found = _NAME_ADDRS.get(value)
    if found is None:
        found = _parse_name_addr(value, header)
        if len(_NAME_ADDRS) >= CACHE_SIZE:
            _NAME_ADDRS.clear()
        _NAME_ADDRS[value] = found
    return found


def _parse_name_addr(value: str, header: str | None) -> NameAddr:
    value = value.strip()
    try:
        if "<" in value:
            # The '<' that opens the URI is the first one outside a quoted display name.
            lt = _find_unquoted(value, "<")
            if lt < 0:
                raise ParseError("unterminated quoted string", header=header)
            gt = value.find(">", lt)
            if gt < 0:
                raise ParseError("'<' without '>'", header=header)
            display = _check_display(value[:lt], header)
            uri = parse_uri(value[lt + 1 : gt])
            rest = value[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise ParseError(f"unexpected text after URI: {rest!r}", header=header)
            return NameAddr(uri=uri, display=display, params=parse_params(rest[1:], header))
        if value.startswith('"'):
            raise ParseError("quoted display name without <URI>", header=header)
        # addr-spec: RFC 3261 §20 forbids ',', ';' and '?' in it; ';' starts header params.
        spec, semi, rest = value.partition(";")
        if "?" in spec or "," in spec:
            raise ParseError("URI with '?' or ',' must be enclosed in <>", header=header)
        uri = parse_uri(spec.strip())
        return NameAddr(uri=uri, params=parse_params(rest, header) if semi else {})
    except ParseError as exc:
        if exc.header is None:
            raise ParseError(exc.reason, status=exc.status, header=header) from None
        raise


def _find_unquoted(value: str, needle: str) -> int:
    quoted = False
    i = 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == needle:
            return i
        i += 1
    return -1


def split_name_addrs(value: str, header: str | None = None) -> list[NameAddr]:
    """Parse a comma-joined list of name-addr values (Route, Record-Route, Contact)."""
    return [parse_name_addr(part, header) for part in split_top_level(value, ",") if part.strip()]
