"""A bounded UDP flood from one source address: new INVITEs, or garbage datagrams.

Run as a process of its own (so the test's own loop and SIPp are not slowed by it):

    python flood.py --to 127.0.0.1:5060 --source 127.0.0.2 --rate 7000 --seconds 8 \
        --kind invite --number 999000

It sends at ``--rate`` datagrams per second, paced in 5 ms slices, stops after ``--seconds``
or ``--count`` datagrams, whichever comes first, and reads what comes back the whole time.
It prints one JSON line: datagrams sent, send errors, responses received by status.

Kinds:
- ``invite``: a new call each time (its own Call-ID, branch and tag), to ``--number``; a
  final non-2xx that comes back is ACKed, as a caller would;
- ``garbage``: random bytes, truncated INVITEs and header soup, never a valid message.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import time
from collections import Counter

SLICE = 0.005  # seconds per pacing slice


def invite(n: int, source: tuple[str, int], to: tuple[str, int], number: str) -> bytes:
    host, port = source
    return (
        f"INVITE sip:{number}@{to[0]}:{to[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-flood-{os.getpid()}-{n};rport\r\n"
        f"From: <sip:flood@{host}>;tag=f{n}\r\n"
        f"To: <sip:{number}@{to[0]}>\r\n"
        f"Call-ID: flood-{os.getpid()}-{n}@{host}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:flood@{host}:{port}>\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def ack_for(
    reply: bytes, source: tuple[str, int], to: tuple[str, int], number: str
) -> bytes | None:
    """The ACK of a final non-2xx response to one of our INVITEs (same branch, its To)."""
    head = reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    status = head[0].split(b" ", 2)
    if len(status) < 2 or not status[1].isdigit() or int(status[1]) < 300:
        return None
    fields = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        fields.setdefault(name.strip().lower(), value.strip())
    call_id = fields.get(b"call-id", b"")
    if not call_id.startswith(b"flood-") or b"INVITE" not in fields.get(b"cseq", b""):
        return None
    n = int(call_id.split(b"@")[0].rsplit(b"-", 1)[1])
    host, port = source
    return (
        f"ACK sip:{number}@{to[0]}:{to[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-flood-{os.getpid()}-{n};rport\r\n"
        f"From: <sip:flood@{host}>;tag=f{n}\r\n"
        f"To: {fields.get(b'to', b'').decode('latin-1')}\r\n"
        f"Call-ID: {call_id.decode('latin-1')}\r\n"
        "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def garbage(n: int, rng: random.Random, template: bytes) -> bytes:
    kind = n % 4
    if kind == 0:
        return rng.randbytes(rng.randint(1, 1400))
    if kind == 1:
        return template[: rng.randint(1, len(template) - 5)]  # cut before the blank line
    if kind == 2:
        return b"INVITE " + rng.randbytes(rng.randint(0, 300)) + b" SIP/2.0\r\n\r\n"
    soup = b"\r\n".join(rng.randbytes(rng.randint(1, 40)) + b": x" for _ in range(20))
    return b"SIP/2.0 200 OK\r\n" + soup + b"\r\n\r\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--to", required=True)
    parser.add_argument("--source", default="127.0.0.2")
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--kind", choices=["invite", "garbage"], default="invite")
    parser.add_argument("--number", default="999000")
    args = parser.parse_args()
    host, _, port = args.to.rpartition(":")
    to = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((args.source, 0))
    sock.setblocking(False)
    me = sock.getsockname()
    rng = random.Random(1)
    template = invite(0, me, to, args.number)
    statuses: Counter[str] = Counter()
    sent = errors = received = 0
    per_slice = max(1, round(args.rate * SLICE))
    start = time.monotonic()
    deadline = start + args.seconds
    next_slice = start
    while sent < args.count and time.monotonic() < deadline:
        for _ in range(min(per_slice, args.count - sent)):
            data = invite(sent, me, to, args.number) if args.kind == "invite" else (
                garbage(sent, rng, template)
            )
            try:
                sock.sendto(data, to)
            except OSError:
                errors += 1
            sent += 1
        next_slice += SLICE
        while True:
            try:
                reply = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                errors += 1
                break
            received += 1
            statuses[reply.split(b" ", 2)[1].decode("latin-1", "replace")[:3]] += 1
            ack = ack_for(reply, me, to, args.number) if args.kind == "invite" else None
            if ack is not None:
                try:
                    sock.sendto(ack, to)
                except OSError:
                    errors += 1
        pause = next_slice - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    elapsed = time.monotonic() - start
    # What is still on its way back.
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        try:
            reply = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            time.sleep(0.01)
            continue
        except OSError:
            break
        received += 1
        statuses[reply.split(b" ", 2)[1].decode("latin-1", "replace")[:3]] += 1
    sock.close()
    print(
        json.dumps(
            {
                "sent": sent,
                "seconds": round(elapsed, 3),
                "rate": round(sent / elapsed) if elapsed else 0,
                "send_errors": errors,
                "received": received,
                "statuses": dict(statuses),
            }
        )
    )


if __name__ == "__main__":
    main()
