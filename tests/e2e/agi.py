"""Asterisk's side of FastAGI for the tests: replay res_agi transcripts byte for byte.

A transcript (tests/e2e/agi_sessions/*.agi) is what one Asterisk channel and
our server say to each other, one protocol line per file line:

    > agi_network: yes        a line Asterisk sends ("\\n" added, as res_agi ends each)
    >                         the blank line that ends the header block
    < SET VARIABLE ...        a line the server must send, byte for byte
    = close                   the server must close the connection, having sent nothing more
    == session                a new connection (a new channel running AGI)

Asterisk's lines are sent together until the next ``<`` (the block as one
write, as a burst of small ast_agi_send() writes arrives). In ``<`` lines,
``{PLAN_ID}`` matches the server's plan id (16 hex digits) and remembers it;
in ``>`` lines it is replaced by the one remembered. Lines starting with ``#``
are comments.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

SESSIONS = Path(__file__).parent / "agi_sessions"
PLAN_ID_RE = "(?P<PLAN_ID>[0-9a-f]{16})"
READ_TIMEOUT = 20.0  # generous: a loaded machine may be slow, a hung server still fails


def parse(text: str) -> list[list[tuple[str, str]]]:
    """The transcript's sessions, each a list of (direction, line)."""
    sessions: list[list[tuple[str, str]]] = [[]]
    for raw in text.splitlines():
        if raw.startswith("#") or raw == "":
            continue
        if raw == "== session":
            if sessions[-1]:
                sessions.append([])
            continue
        if raw == "= close":
            sessions[-1].append(("=", "close"))
            continue
        direction, line = raw[0], raw[2:] if len(raw) > 1 else ""
        if direction not in "<>" or (len(raw) > 1 and raw[1] != " "):
            raise ValueError(f"bad transcript line: {raw!r}")
        sessions[-1].append((direction, line))
    return [s for s in sessions if s]


def read_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    out = b""
    while len(out) < size:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(size - len(out))
        if not chunk:
            break
        out += chunk
    return out


def read_line(sock: socket.socket, deadline: float) -> bytes:
    out = b""
    while not out.endswith(b"\n"):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(1)
        if not chunk:
            break
        out += chunk
    return out


def read_to_eof(sock: socket.socket, deadline: float) -> bytes:
    """All the peer sends until it closes. A reset counts as closed: a server that closes
    on input it will not read (a line too long) leaves it unread, and the kernel resets."""
    out = b""
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def replay(
    address: tuple[str, int], text: str, memory: dict[str, str] | None = None
) -> dict[str, str]:
    """Play Asterisk's side of every session of ``text``; AssertionError on any byte off."""
    memory = {} if memory is None else memory
    for n, session in enumerate(parse(text), 1):
        with socket.create_connection(address, timeout=READ_TIMEOUT) as sock:
            pending = b""
            for direction, line in session:
                deadline = time.monotonic() + READ_TIMEOUT
                if direction == ">":
                    for key, value in memory.items():
                        line = line.replace("{" + key + "}", value)
                    pending += line.encode() + b"\n"
                    continue
                if pending:
                    sock.sendall(pending)
                    pending = b""
                if direction == "=":
                    rest = read_to_eof(sock, deadline)
                    assert rest == b"", f"session {n}: more after the end: {rest!r}"
                    continue
                got = read_line(sock, deadline)
                pattern = re.escape(line + "\n").replace(r"\{PLAN_ID\}", PLAN_ID_RE)
                m = re.fullmatch(pattern.encode(), got)
                assert m is not None, f"session {n}: expected {line!r}, got {got!r}"
                memory.update({k: v.decode() for k, v in m.groupdict().items() if v})
            if pending:
                sock.sendall(pending)
    return memory


def header_block(script: str, args: list[str], channel: str = "SIP/vicidial-00000001") -> bytes:
    """A header block as res_agi writes it (launch_netscript, then setup_env)."""
    lines = [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1:4578/{script}",
        f"agi_channel: {channel}",
        "agi_language: en",
        "agi_type: SIP",
        "agi_uniqueid: 1764612000.101",
        "agi_version: 18.20.2",
        "agi_callerid: 3125550100",
        "agi_calleridname: V1201120000000000001",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: 915551234567",
        "agi_rdnis: unknown",
        "agi_context: vicidial-auto",
        "agi_extension: 915551234567",
        "agi_priority: 2",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140245106927360",
        *[f"agi_arg_{i}: {a}" for i, a in enumerate(args, 1)],
        "",
    ]
    return "".join(line + "\n" for line in lines).encode()
