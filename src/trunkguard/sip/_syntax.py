"""Small pieces of RFC 3261 grammar shared by the message, URI and Via readers."""

from __future__ import annotations

import re

from ._errors import ParseError

# RFC 3261 §7.3.3: compact forms, mapped to the canonical lower-case long name.
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "x": "session-expires",
    "u": "allow-events",
    "y": "identity",
    "n": "identity-info",
}

# Header fields that may appear only once (RFC 3261 §7.3.1 and Table 2/3):
# a second value is a parse error rather than something to guess about.
SINGLE_VALUED = frozenset(
    {
        "call-id",
        "content-length",
        "content-type",
        "cseq",
        "from",
        "to",
        "max-forwards",
        "expires",
    }
)

# A token, or an IPv6 reference / host:port as in maddr= and received= values.
_PVALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+\Z")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


def is_token(text: str) -> bool:
    return bool(_TOKEN_RE.match(text))


def is_digits(text: str) -> bool:
    """ASCII DIGITs only: str.isdigit() also accepts '²' and other digits int() rejects."""
    return text.isascii() and text.isdigit()


_CANONICAL: dict[str, str] = {}


def canonical_name(name: str) -> str:
    found = _CANONICAL.get(name)
    if found is None:
        lower = name.lower()
        found = COMPACT_FORMS.get(lower, lower)
        if len(_CANONICAL) < 4096:  # bounded: names come from the network
            _CANONICAL[name] = found
    return found


def split_top_level(value: str, sep: str) -> list[str]:
    """Split ``value`` on ``sep`` outside quoted strings and ``<...>``.

    Used for comma-joined header values and for ``;`` parameters, where a
    separator inside a quoted display name or an enclosed URI does not count.
    """
    if sep not in value:
        return [value]
    if '"' not in value and "<" not in value:
        return value.split(sep)
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            if depth:
                depth -= 1
        elif ch == sep and depth == 0:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise ParseError("unterminated quoted string")
    parts.append(value[start:])
    return parts


def parse_params(text: str, header: str | None = None) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` into a dict with lower-case names.

    Whitespace around ``;`` and ``=`` is allowed (RFC 3261 SEMI and EQUAL
    include LWS). Values keep their case and quotes.
    """
    params: dict[str, str | None] = {}
    if not text.strip():
        return params
    for raw in split_top_level(text, ";"):
        item = raw.strip()
        if not item:
            # ";;" and a trailing ";" carry nothing; tolerated as other stacks do.
            continue
        name, eq, value = item.partition("=")
        name = name.strip()
        if not is_token(name):
            raise ParseError(f"bad parameter name {name!r}", header=header)
        if eq:
            value = value.strip()
            if not value:
                raise ParseError(f"parameter {name!r} has no value", header=header)
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise ParseError(f"parameter {name!r} has a bad quoted value", header=header)
            elif not _PVALUE_RE.match(value):
                raise ParseError(f"parameter {name!r} has a bad value {value!r}", header=header)
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params
