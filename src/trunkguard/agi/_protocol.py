"""FastAGI as Asterisk's res_agi speaks it, from the script's side; no I/O.

Invariants, in plain words:

- Asterisk speaks first: ``agi_network: yes``, ``agi_network_script: <what
  followed host:port/ in the AGI() URL, query string and all>`` (only when
  there is one), then the environment (``agi_request`` first, ``agi_channel``,
  ..., ``agi_arg_1..N``), each ``key: value\\n``, and a blank line.
- Then it is lockstep: the script sends one command line, Asterisk answers it
  with one reply: ``200 result=...``, ``510 Invalid or unknown command``,
  ``511 Command Not Permitted on a dead channel or intercept routine``, or a
  usage error, ``520 ...`` on one line or ``520-...`` up to ``520 End of
  proper usage.``.
- When the channel hangs up Asterisk writes ``HANGUP`` on a line of its own, at
  any moment: it is not a reply, and the reply still comes.
- Every line has a size limit, the header block a total limit and a line count
  limit: input past them, or not text, is malformed and the session ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

HEADER_KEY_RE = re.compile(r"^agi_[a-z0-9_]{1,40}$")
MAX_HEADERS = 200  # Asterisk sends about 25, plus one per argument (at most 127)


class Malformed(Exception):
    """The peer sent something res_agi never sends; the message says what."""


@dataclass(frozen=True, slots=True)
class Request:
    """The header block: the script asked for, its arguments, and every agi_* field."""

    script: str  # the name before any '?': "route", "report"
    query: str  # what followed '?', or ""
    args: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    code: int  # 200, 510, 511, 520
    result: str | None  # the value of result= on a 200, else None
    text: str  # the whole line (the last one of a 520- block)


@dataclass(frozen=True, slots=True)
class Hangup:
    """The channel hung up (Asterisk sent "HANGUP")."""


Event = Request | Reply | Hangup

_REPLY_RE = re.compile(r"^(\d{3})([ -])(.*)$")
_RESULT_RE = re.compile(r"^result=(\S*)")


def _split_script(value: str) -> tuple[str, str]:
    script, _, query = value.partition("?")
    return script.strip("/"), query


def _script_of_request(url: str) -> tuple[str, str]:
    # agi_request is the AGI() URL itself: agi://host[:port][/script[?query]]
    m = re.match(r"^h?agi://[^/]*/?(.*)$", url)
    return _split_script(m.group(1)) if m else ("", "")


class Session:
    """Bytes from Asterisk in, events out; commands to Asterisk as bytes."""

    __slots__ = ("_block", "_buffer", "_headers", "_in_usage", "hung_up", "max_header", "max_line",
                 "request")

    def __init__(self, max_line: int = 1024, max_header: int = 16384) -> None:
        self.max_line = max_line
        self.max_header = max_header
        self._buffer = b""
        self._headers: dict[str, str] = {}
        self._block = 0  # bytes of header block so far
        self._in_usage = False  # inside a "520-" usage block
        self.request: Request | None = None
        self.hung_up = False

    def receive(self, data: bytes) -> list[Event]:
        """What ``data`` completes; raises Malformed (the session is then over)."""
        self._buffer += data
        events: list[Event] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_line:
                    raise Malformed(f"a line longer than {self.max_line} bytes")
                return events
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            if len(raw) > self.max_line:
                raise Malformed(f"a line longer than {self.max_line} bytes")
            try:
                line = raw.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError:
                raise Malformed("a line that is not UTF-8 text") from None
            event = self._line(line, len(raw) + 1)
            if event is not None:
                events.append(event)

    def _line(self, line: str, size: int) -> Event | None:
        if self.request is None:
            return self._header(line, size)
        if line == "HANGUP":
            self.hung_up = True
            return Hangup()
        m = _REPLY_RE.match(line)
        if m is None:
            if self._in_usage:
                return None  # the usage text between "520-" and "520 End of proper usage."
            raise Malformed(f"not an AGI reply: {line[:60]!r}")
        code, sep, rest = int(m.group(1)), m.group(2), m.group(3)
        if sep == "-":
            self._in_usage = True
            return None
        self._in_usage = False
        result = None
        if code == 200:
            r = _RESULT_RE.match(rest)
            if r is None:
                raise Malformed(f"a 200 reply without result=: {line[:60]!r}")
            result = r.group(1)
        return Reply(code, result, line)

    def _header(self, line: str, size: int) -> Request | None:
        self._block += size
        if self._block > self.max_header:
            raise Malformed(f"a header block larger than {self.max_header} bytes")
        if line == "":
            return self._finish()
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")  # "agi_accountcode:" with nothing after
        if not sep or not HEADER_KEY_RE.match(key):
            raise Malformed(f"not an agi_* header line: {line[:60]!r}")
        if key in self._headers:
            raise Malformed(f"header {key} twice")
        if len(self._headers) >= MAX_HEADERS:
            raise Malformed(f"more than {MAX_HEADERS} header lines")
        self._headers[key] = value
        return None

    def _finish(self) -> Request:
        h = self._headers
        if not h:
            raise Malformed("an empty header block")
        if "agi_request" not in h:
            raise Malformed("no agi_request in the header block")
        if "agi_network_script" in h:
            script, query = _split_script(h["agi_network_script"])
        else:
            script, query = _script_of_request(h["agi_request"])
        args = []
        n = 1
        while f"agi_arg_{n}" in h:
            args.append(h[f"agi_arg_{n}"])
            n += 1
        self.request = Request(script, query, tuple(args), dict(h))
        return self.request


def quote(value: str) -> str:
    """An argument as res_agi's parse_args reads it back: in quotes, \\ and " escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_variable(name: str, value: str) -> bytes:
    """SET VARIABLE (res_agi answers "200 result=1")."""
    if "\n" in value or "\r" in value:
        raise ValueError("an AGI argument cannot hold a line break")
    return f"SET VARIABLE {name} {quote(value)}\n".encode()
