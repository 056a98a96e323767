"""Via header values (RFC 3261 §20.42, §18.2.1; rport from RFC 3581)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ._errors import ParseError
from ._syntax import parse_params
from ._uri import CACHE_SIZE, split_hostport

MAGIC_COOKIE = "z9hG4bK"
_WS_RE = re.compile(r"\s+")

# "SIP / 2.0 / UDP" with LWS allowed around each slash, then sent-by.
_VIA_RE = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[0-9A-Fa-f:.]+\](?:\s*:\s*\d+)?|[^;\s:]+(?:\s*:\s*\d+)?)\s*(.*)\Z",
    re.S,
)


@dataclass(frozen=True, slots=True)
class Via:
    transport: str  # upper-case: UDP, TCP, TLS...
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


# Parsed Vias by their text: a response's top Via (ours) comes back in its 100, 18x and
# final, and a request's retransmissions repeat it. Shared as _uri's caches are.
_VIAS: dict[str, Via] = {}


def parse_via(value: str) -> Via:
    """Parse one Via value (one element of a comma-joined Via header)."""
    found = _VIAS.get(value)
    if found is None:
        found = _parse_via(value)
        if len(_VIAS) >= CACHE_SIZE:
            _VIAS.clear()
        _VIAS[value] = found
    return found


def _parse_via(value: str) -> Via:
    m = _VIA_RE.match(value)
    if not m:
        raise ParseError(f"bad Via {value.strip()!r}", header="Via")
    protocol, version, transport, sent_by, rest = m.groups()
    if protocol.upper() != "SIP" or version != "2.0":
        raise ParseError(f"bad Via protocol {protocol}/{version}", header="Via")
    try:
        host, port = split_hostport(_WS_RE.sub("", sent_by))
    except ParseError as exc:
        raise ParseError(exc.reason, header="Via") from None
    rest = rest.strip()
    if rest and not rest.startswith(";"):
        raise ParseError(f"unexpected text in Via: {rest!r}", header="Via")
    params = parse_params(rest[1:], "Via") if rest else {}
    branch = params.get("branch", "")
    if "branch" in params and not branch:
        raise ParseError("empty branch parameter", header="Via")
    return Via(transport=transport.upper(), host=host, port=port, params=params)
