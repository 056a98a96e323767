"""SIP messages: framing, header split, lazy field access, byte-exact relay.

A message is kept as its header lines exactly as received (folded lines
included), so a proxy that edits Via, Route, Record-Route, Max-Forwards and the
Request-URI relays every other header and the body byte for byte. The fields a
proxy needs (Via, Call-ID, CSeq, From/To tags, Max-Forwards, Route) are parsed
on first access only; ``check()`` parses all of them to validate a request
before it is acted on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._errors import LimitError, ParseError
from ._syntax import SINGLE_VALUED, canonical_name, is_digits, is_token, split_top_level
from ._uri import CACHE_SIZE, NameAddr, Uri, parse_name_addr, parse_uri, split_name_addrs
from ._via import Via, parse_via

_CRLF = "\r\n"
_METHOD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_STATUS_LINE_RE = re.compile(r"SIP/(\d+\.\d+) (\d{3}) ([^\r\n]*)\Z")
_VERSION_RE = re.compile(r"SIP/\d+\.\d+\Z")
# RFC 3261 §20.17: SIP-date is rfc1123-date, always in GMT.
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} GMT\Z"
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied while parsing; a breach is a :class:`LimitError` with its reason."""

    max_message: int = 65_535
    max_headers: int = 128
    max_line: int = 8_192


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# Parsed CSeq values by their text (bounded, as _uri's caches: the texts come from the network).
_CSEQS: dict[str, CSeq] = {}


class Header:
    """One header field line: canonical name, exact text, unfolded value."""

    __slots__ = ("name", "raw", "value")

    def __init__(self, name: str, raw: str, value: str) -> None:
        self.name = name
        self.raw = raw
        self.value = value

    def __repr__(self) -> str:
        return f"Header({self.raw!r})"


class Message:
    """Common part of requests and responses."""

    __slots__ = ("_cache", "_index", "body", "headers")

    def __init__(self, headers: list[Header], body: bytes) -> None:
        self.headers = headers
        self.body = body
        index: dict[str, list[int]] = {}
        get = index.get
        for i, h in enumerate(headers):
            found = get(h.name)
            if found is None:
                index[h.name] = [i]
            else:
                found.append(i)
        self._index = index
        self._cache: dict[str, object] = {}

    # -- raw access -------------------------------------------------------
    def get(self, name: str) -> str | None:
        """Value of the first header called ``name`` (any form), or None."""
        idx = self._index.get(canonical_name(name))
        return self.headers[idx[0]].value if idx else None

    def get_all(self, name: str) -> list[str]:
        """Values of every header line called ``name``, in order."""
        return [self.headers[i].value for i in self._index.get(canonical_name(name), ())]

    def values(self, name: str) -> list[str]:
        """Comma-separated elements of every header line called ``name``, in order."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(p.strip() for p in split_top_level(value, ",") if p.strip())
        return out

    def has(self, name: str) -> bool:
        return canonical_name(name) in self._index

    def raw_lines(self, name: str) -> list[str]:
        return [self.headers[i].raw for i in self._index.get(canonical_name(name), ())]

    def _single(self, name: str, label: str) -> str:
        idx = self._index.get(name)
        if not idx:
            raise ParseError("missing", header=label)
        if len(idx) > 1 and name in SINGLE_VALUED:
            raise ParseError("appears more than once", header=label)
        return self.headers[idx[0]].value

    # -- parsed fields (cached) --------------------------------------------
    @property
    def call_id(self) -> str:
        cached = self._cache.get("call-id")
        if cached is None:
            value = self._single("call-id", "Call-ID")
            if not value or any(c in value for c in " \t,"):
                raise ParseError(f"bad value {value!r}", header="Call-ID")
            self._cache["call-id"] = cached = value
        assert isinstance(cached, str)
        return cached

    @property
    def cseq(self) -> CSeq:
        cached = self._cache.get("cseq")
        if cached is None:
            value = self._single("cseq", "CSeq")
            # "1 INVITE", "2 BYE": the same few values in every call, parsed once.
            known = _CSEQS.get(value)
            if known is not None:
                self._cache["cseq"] = known
                return known
            parts = value.split()
            if len(parts) != 2 or not is_digits(parts[0]) or not _METHOD_RE.match(parts[1]):
                raise ParseError(f"bad value {value!r}", header="CSeq")
            # Bound the length before int(): Python refuses strings of over 4300 digits.
            digits = parts[0].lstrip("0") or "0"
            if len(digits) > 10 or int(digits) >= 2**31:
                raise ParseError(f"sequence number {parts[0]} too large", header="CSeq")
            self._cache["cseq"] = cached = CSeq(int(digits), parts[1])
            if len(_CSEQS) >= CACHE_SIZE:
                _CSEQS.clear()
            _CSEQS[value] = cached
        assert isinstance(cached, CSeq)
        return cached

    @property
    def vias(self) -> list[Via]:
        cached = self._cache.get("via")
        if cached is None:
            values = self.values("via")
            if not values:
                raise ParseError("missing", header="Via")
            self._cache["via"] = cached = [parse_via(v) for v in values]
        assert isinstance(cached, list)
        return cached

    @property
    def top_via(self) -> Via:
        cached = self._cache.get("top-via")
        if cached is None:
            idx = self._index.get("via")
            if not idx:
                raise ParseError("missing", header="Via")
            first = split_top_level(self.headers[idx[0]].value, ",")[0]
            self._cache["top-via"] = cached = parse_via(first)
        assert isinstance(cached, Via)
        return cached

    def _name_addr(self, key: str, label: str) -> NameAddr:
        cached = self._cache.get(key)
        if cached is None:
            self._cache[key] = cached = parse_name_addr(self._single(key, label), label)
        assert isinstance(cached, NameAddr)
        return cached

    @property
    def from_(self) -> NameAddr:
        return self._name_addr("from", "From")

    @property
    def to(self) -> NameAddr:
        return self._name_addr("to", "To")

    @property
    def max_forwards(self) -> int | None:
        idx = self._index.get("max-forwards")
        if not idx:
            return None
        value = self._single("max-forwards", "Max-Forwards")
        if not is_digits(value) or len(value) > 10 or int(value) > 255:
            raise ParseError(f"bad value {value!r}", header="Max-Forwards")
        return int(value)

    @property
    def routes(self) -> list[NameAddr]:
        cached = self._cache.get("route")
        if cached is None:
            value = ", ".join(self.get_all("route"))
            self._cache["route"] = cached = split_name_addrs(value, "Route") if value else []
        return cached  # type: ignore[return-value]

    @property
    def record_routes(self) -> list[NameAddr]:
        return split_name_addrs(", ".join(self.get_all("record-route")), "Record-Route")

    @property
    def contacts(self) -> list[NameAddr]:
        cached = self._cache.get("contact")
        if cached is None:
            value = ", ".join(self.get_all("contact"))
            found = [] if value.strip() in ("*", "") else split_name_addrs(value, "Contact")
            self._cache["contact"] = cached = found
        return cached  # type: ignore[return-value]

    def check_common(self) -> None:
        """Parse the fields a proxy uses (RFC 3261 §16.3 step 1); raise ParseError on a bad one.

        Other headers, well-formed or not, are relayed untouched, as §16.3 asks:
        :meth:`validate` is the strict check of every header trunkguard understands.
        """
        _ = self.call_id, self.cseq, self.top_via, self.from_, self.to, self.max_forwards
        index = self._index
        for name in SINGLE_VALUED:
            idx = index.get(name)
            if idx and len(idx) > 1:
                raise ParseError("appears more than once", header=self.headers[idx[0]].name)

    def validate(self) -> None:
        """Strict check: :meth:`check` plus every Via, Route, Record-Route, Contact and Date."""
        self.check()
        _ = self.vias
        date = self.get("date")
        if date is not None and not _DATE_RE.match(date):
            raise ParseError(f"not an RFC 1123 date in GMT: {date!r}", header="Date")
        if self.has("contact"):
            _ = self.contacts
        if self.has("route"):
            _ = self.routes
        if self.has("record-route"):
            _ = self.record_routes

    def check(self) -> None:
        raise NotImplementedError

    # -- serialisation -----------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def _serialise(self, start: str, lines: Iterable[str]) -> bytes:
        head = start + _CRLF + _CRLF.join(lines) + _CRLF + _CRLF
        data = head.encode("utf-8", "surrogateescape")
        return data + self.body if self.body else data

    def _lines_with_length(self, lines: list[str]) -> list[str]:
        # Over a stream Content-Length is mandatory; a datagram may have omitted it.
        if "content-length" not in self._index:
            lines.append(f"Content-Length: {len(self.body)}")
        return lines

    def to_bytes(self) -> bytes:
        return self._serialise(
            self.start_line(), self._lines_with_length([h.raw for h in self.headers])
        )

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(Message):
    __slots__ = ("method", "uri", "version")

    def __init__(
        self, method: str, uri: str, headers: list[Header], body: bytes, version: str = "SIP/2.0"
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri
        self.version = version

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    @property
    def request_uri(self) -> Uri:
        cached = self._cache.get("ruri")
        if cached is None:
            try:
                self._cache["ruri"] = cached = parse_uri(self.uri)
            except ParseError as exc:
                raise ParseError(f"bad Request-URI: {exc.reason}") from None
        assert isinstance(cached, Uri)
        return cached

    def check(self) -> None:
        """Validate a request as RFC 3261 §16.3 and §8.2 ask before acting on it."""
        if self.version != "SIP/2.0":
            raise ParseError(f"unsupported version {self.version}", status=505)
        ruri = self.request_uri
        if ruri.is_sip and ruri.headers is not None:
            raise ParseError("Request-URI must not carry headers ('?')")
        self.check_common()
        cseq = self.cseq
        if cseq.method != self.method:
            raise ParseError(
                f"method {cseq.method} does not match request line {self.method}", header="CSeq"
            )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    # -- proxy edits ---------------------------------------------------------
    def forwarded(
        self,
        *,
        via: str,
        uri: str | None = None,
        max_forwards: int | None = None,
        pop_route: bool = False,
        record_route: str | None = None,
        cseq: int | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """Bytes of this request as a proxy forwards it (RFC 3261 §16.6).

        Adds ``via`` on top, optionally rewrites the Request-URI, sets
        Max-Forwards, removes the first Route value and adds a Record-Route.
        ``cseq`` renumbers the CSeq (a request resent with credentials, RFC
        3261 §22.1); ``extra`` headers (credentials) are added and replace any
        of the same name. Every other header line is copied exactly.
        """
        lines: list[str] = ["Via: " + via]
        if record_route is not None:
            lines.append("Record-Route: " + record_route)
        route_popped = not pop_route
        mf_done = max_forwards is None
        replaced = {name.lower() for name, _ in extra}
        for h in self.headers:
            name = h.name
            if name in replaced:
                continue
            if name == "cseq" and cseq is not None:
                lines.append(f"CSeq: {cseq} {self.method}")
                continue
            if name == "max-forwards" and not mf_done:
                lines.append(f"Max-Forwards: {max_forwards}")
                mf_done = True
                continue
            if name == "route" and not route_popped:
                route_popped = True
                rest = split_top_level(h.value, ",")[1:]
                if rest:
                    lines.append("Route: " + ",".join(p.strip() for p in rest))
                continue
            lines.append(h.raw)
        if not mf_done:
            lines.append(f"Max-Forwards: {max_forwards}")
        lines += [f"{name}: {value}" for name, value in extra]
        start = f"{self.method} {uri or self.uri} {self.version}"
        return self._serialise(start, self._lines_with_length(lines))


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self, status: int, reason: str, headers: list[Header], body: bytes, version: str = "SIP/2.0"
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def check(self) -> None:
        if self.version != "SIP/2.0":
            raise ParseError(f"unsupported version SIP/{self.version}")
        self.check_common()

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def without_top_via(self, cseq: int | None = None) -> bytes:
        """Bytes of this response with the first Via value removed (RFC 3261 §16.7 step 3).

        ``cseq`` puts back the CSeq number of the request as the sender sent
        it, when the router renumbered it on the way (credentials added).
        """
        lines: list[str] = []
        popped = False
        for h in self.headers:
            if h.name == "cseq" and cseq is not None:
                lines.append(f"CSeq: {cseq} {self.cseq.method}")
                continue
            if h.name == "via" and not popped:
                popped = True
                rest = split_top_level(h.value, ",")[1:]
                if rest:
                    lines.append("Via: " + ",".join(p.strip() for p in rest))
                continue
            lines.append(h.raw)
        return self._serialise(self.start_line(), self._lines_with_length(lines))


# Header names seen before, raw (as on the wire) -> canonical; only valid names go in.
_NAMES: dict[str, str] = {}


def _split_head(head: str, limits: Limits) -> tuple[str, list[Header]]:
    lines = head.split(_CRLF)
    if (
        len(head) <= limits.max_line
        and len(lines) <= limits.max_headers + 1
        and "\r\n " not in head
        and "\r\n\t" not in head
    ):
        # The usual message: no line can be too long, nor can there be too many, and no
        # line is folded. The same split without those checks on each line.
        return lines[0], _plain_headers(lines)
    max_line = limits.max_line
    max_headers = limits.max_headers
    headers: list[Header] = []
    append = headers.append
    names = _NAMES
    start = lines[0]
    if len(start) > max_line:
        raise LimitError(f"start line longer than {max_line} bytes")
    for i in range(1, len(lines)):
        line = lines[i]
        if len(line) > max_line:
            raise LimitError(f"header line longer than {max_line} bytes")
        first = line[:1]
        if first == " " or first == "\t":
            # Unfold: CRLF + whitespace becomes one space (RFC 3261 §7.3.1).
            if not headers:
                raise ParseError("continuation line before any header")
            h = headers[-1]
            h.raw += _CRLF + line
            h.value = f"{h.value} {line.strip()}".strip()
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(f"header line without a name and ':': {line[:40]!r}")
        raw_name = line[:colon]
        name = names.get(raw_name)
        if name is None:
            name = _new_name(raw_name)
        append(Header(name, line, line[colon + 1 :].strip()))
        if len(headers) > max_headers:
            raise LimitError(f"more than {max_headers} header lines")
    return start, headers


def _new_name(raw_name: str) -> str:
    """The canonical form of a header name not seen before (remembered, up to a bound)."""
    stripped = raw_name.rstrip(" \t")
    if not is_token(stripped):
        raise ParseError(f"bad header name {stripped!r}")
    name = canonical_name(stripped)
    if len(_NAMES) < 4096:  # bounded: names come from the network
        _NAMES[raw_name] = name
    return name


def _plain_headers(lines: list[str]) -> list[Header]:
    """Header lines after the start line, none folded nor over a limit (see _split_head)."""
    headers: list[Header] = []
    append = headers.append
    names = _NAMES
    for i in range(1, len(lines)):
        line = lines[i]
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(f"header line without a name and ':': {line[:40]!r}")
        raw_name = line[:colon]
        name = names.get(raw_name)
        if name is None:
            name = _new_name(raw_name)
        append(Header(name, line, line[colon + 1 :].strip()))
    return headers


def _content_length(headers: list[Header]) -> int | None:
    found: int | None = None
    for h in headers:
        if h.name == "content-length":
            if found is not None:
                raise ParseError("appears more than once", header="Content-Length")
            text = h.value
            if not is_digits(text) or len(text) > 9:
                raise ParseError(f"bad value {text!r}", header="Content-Length")
            found = int(text)
    return found


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one complete message (a datagram, or one frame cut by :class:`StreamFramer`).

    Raises :class:`ParseError` (or :class:`LimitError`) with the reason; never
    anything else, whatever the bytes.
    """
    if len(data) > limits.max_message:
        exc = LimitError(f"message larger than {limits.max_message} bytes", status=513)
        exc.partial = _salvage(data, limits)
        raise exc
    # RFC 3261 §7.5: CRLFs before the start line are ignored (also keepalives).
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise ParseError("no empty line ends the header section")
    head = data[:end].decode("utf-8", "surrogateescape")
    rest = data[end + 4 :]
    try:
        start, headers = _split_head(head, limits)
    except LimitError as exc:
        exc.partial = _salvage(data, limits)
        raise
    try:
        length = _content_length(headers)
        if length is not None:
            if length > len(rest):
                raise ParseError(
                    f"says {length} bytes but {len(rest)} follow", header="Content-Length"
                )
            body = rest[:length]
        else:
            body = rest
        return _start(start, headers, body)
    except ParseError as exc:
        # The header section split cleanly: keep it, so a server can still answer 400
        # with the request's own Via, From, To, Call-ID and CSeq (RFC 4475 §3.1.2).
        if not start.startswith("SIP/"):
            exc.partial = Request(start.split(" ", 1)[0], "", headers, b"")
        raise


_ANSWER_HEADERS = frozenset({"via", "from", "to", "call-id", "cseq"})


def _salvage(data: bytes, limits: Limits) -> Request | None:
    """From a request over a limit, the headers an error response needs, if they are sane.

    Only Via, From, To, Call-ID and CSeq lines within the line limit are kept,
    and only from the first ``max_message`` bytes: enough to answer 513 or 400
    instead of dropping the message without a word.
    """
    head = data[: limits.max_message].lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0]
    lines = head.decode("utf-8", "surrogateescape").split(_CRLF)
    start = lines[0]
    if start.startswith("SIP/") or len(start) > limits.max_line:
        return None
    headers: list[Header] = []
    for line in lines[1 : limits.max_headers + 1]:
        colon = line.find(":")
        if colon <= 0 or len(line) > limits.max_line:
            continue
        name = canonical_name(line[:colon].rstrip(" \t"))
        if name in _ANSWER_HEADERS:
            headers.append(Header(name, line, line[colon + 1 :].strip()))
    if not any(h.name == "via" for h in headers):
        return None
    return Request(start.split(" ", 1)[0], "", headers, b"")


def _start(start: str, headers: list[Header], body: bytes) -> Request | Response:
    if start.startswith("SIP/"):
        m = _STATUS_LINE_RE.match(start)
        if not m:
            raise ParseError(f"bad status line {start[:60]!r}")
        version, code, reason = m.groups()
        status = int(code)
        if not 100 <= status <= 699:
            raise ParseError(f"status code {status} out of range")
        return Response(status, reason, headers, body, "SIP/" + version)
    parts = start.split(" ")
    if len(parts) != 3:
        raise ParseError(f"request line must be 'METHOD URI SIP/2.0': {start[:60]!r}")
    method, uri, version = parts
    if not _METHOD_RE.match(method):
        raise ParseError(f"bad method {method!r}")
    if not _VERSION_RE.match(version):
        raise ParseError(f"bad SIP version {version!r}")
    return Request(method, uri, headers, body, version)


class StreamFramer:
    """Cuts a byte stream (TCP) into messages using Content-Length (RFC 3261 §18.3)."""

    __slots__ = ("_buf", "_total", "limits")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        # Size of the message at the head of the buffer once its header section is read,
        # so a body arriving in small pieces does not re-parse the headers each time.
        self._total: int | None = None
        self.limits = limits

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages now available.

        Raises :class:`ParseError` when the stream cannot be framed any more
        (missing or bad Content-Length, over-long message): the connection
        must then be closed.
        """
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            total = self._total
            if total is not None:
                if len(buf) < total:
                    return out
                out.append(bytes(buf[:total]))
                del buf[:total]
                self._total = None
                continue
            # Keepalive CRLFs between messages (RFC 5626 §3.5.1).
            strip = 0
            while strip < len(buf) and buf[strip] in (13, 10):
                strip += 1
            if strip:
                del buf[:strip]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.limits.max_message:
                    raise LimitError(f"header section larger than {self.limits.max_message}")
                return out
            head = bytes(buf[:end]).decode("utf-8", "surrogateescape")
            _, headers = _split_head(head, self.limits)
            length = _content_length(headers)
            if length is None:
                raise ParseError("required on a stream transport", header="Content-Length")
            total = end + 4 + length
            if total > self.limits.max_message:
                raise LimitError(f"message larger than {self.limits.max_message} bytes")
            self._total = total
