"""Coverage-guided fuzzing (atheris) of the SIP parser and of the proxy core's receive path.

Two targets share one run; the first byte of an input says which (even: parser, odd: proxy):

* ``parse``: ``parse_message(data, limits)`` with the default limits or small ones (the
  second bit), then every accessor the proxy reads (``exercise`` of tests/unit/sipgen.py).
  Only ParseError (and its LimitError) may come out, of the parse or of a header parsed
  lazily; any other exception is a crash.
* ``proxy``: a fresh ``Proxy`` (three carriers a, b, c, an allow list and a health engine)
  fed a short exchange: records split by two NUL bytes, each a control byte (who sends it:
  the caller over UDP or TCP, or carrier a or b; how far the clock moves, timers firing on
  the way; whether the router is overloaded, so new INVITEs take the raw fast path) and a
  datagram. Per-source limits are tight, so calls over them are refused too. ``$CALL``,
  ``$VIA``, ``$FROM``, ``$TO``... in a datagram stand for
  the fields of the last message the proxy sent to that peer, so a carrier's mutated answer
  still matches the INVITE it was sent, and a caller's ACK or BYE its dialog. Every datagram
  the proxy sends must parse again. Any exception is a crash.

Inputs start from the RFC 4475 torture messages (../shared/sip-torture beside the
repository) and a few valid calls, and are changed by libFuzzer's own mutations and by SIP-
aware ones (lines dropped, doubled, moved or taken from another seed, numbers and values
swapped for nasty ones, folds, bare LFs) and, now and then, a freshly generated message.

Run: ``.venv/bin/python bench/fuzz.py [--runs N] [--target both|parse|proxy] [--seed S]``
(``make fuzz`` runs it without options: 1,000,000 inputs). The libFuzzer log goes to
bench/out/fuzz.log; a crashing input is saved under bench/fuzz-crashes/ and the run exits
non-zero. ``--replay FILE...`` runs saved inputs once, without atheris' instrumentation.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import json
import logging
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRASHES = ROOT / "bench" / "fuzz-crashes"
LOG = ROOT / "bench" / "out" / "fuzz.log"
MAX_LEN = 4096
sys.path.insert(0, str(ROOT / "tests" / "unit"))

WORKER = "--worker" in sys.argv
if WORKER:
    import atheris

    with atheris.instrument_imports(include=["trunkguard"]):
        import trunkguard.health
        import trunkguard.proxy
        import trunkguard.sip  # noqa: F401

from sipgen import exercise, torture, torture_names  # noqa: E402

from trunkguard.health import HealthEngine  # noqa: E402
from trunkguard.proxy import Flow, Proxy, ProxySettings, Target  # noqa: E402
from trunkguard.proxy._sources import Limit, SourceSettings  # noqa: E402
from trunkguard.sip import (  # noqa: E402
    Limits,
    ParseError,
    Request,
    Response,
    parse_message,
    parse_uri,
)

SMALL_LIMITS = Limits(max_message=1500, max_headers=24, max_line=300)
CRLF = b"\r\n"
SEPARATOR = b"\x00\x00"
PARSE, PROXY = 0x00, 0x01

# -- the proxy under test ----------------------------------------------------------------
CALLER = Flow("udp", ("127.0.0.1", 5090))
CALLER_TCP = Flow("tcp", ("127.0.0.1", 5091))
A = Flow("udp", ("127.0.0.1", 5071))
B = Flow("udp", ("127.0.0.1", 5072))
C = Flow("udp", ("127.0.0.1", 5073))
SOURCES = (CALLER, CALLER_TCP, A, B)
# Seconds the clock moves after a record (timers fire on the way): none, retransmissions,
# the INVITE timeout (2 s), the time budget, transactions' 32 s, a dialog sweep.
ADVANCE = (0.0, 0.0, 0.05, 0.6, 2.1, 11.0, 33.0, 301.0)
SETTINGS = ProxySettings(
    advertise=("127.0.0.1", 5060),
    allow=(ipaddress.ip_network("127.0.0.0/24"),),
    secret=b"fuzz" * 8,
    # Tight limits, so the refusals of calls over them are on the path too (the caller
    # and the carriers share 127.0.0.1: the carriers' class, which refuses, never bans).
    sources=SourceSettings(carriers=Limit(calls_per_s=20, concurrent_calls=5, ban=False)),
)
OVERLOADED = 0.75  # share of new calls refused in a record with the overload bit
TARGETS = [
    Target(name, parse_uri(f"sip:{flow.addr[0]}:{flow.addr[1]}"), flow)
    for name, flow in (("a", A), ("b", B), ("c", C))
]
MAX_TIMER_RUNS = 10_000  # more timer rounds than this for one advance: a timer that spins


class TimerSpin(RuntimeError):
    pass


def new_proxy() -> Proxy:
    proxy = Proxy(SETTINGS, TARGETS)
    proxy.health = HealthEngine(["a", "b", "c"], None, random.Random(1), probes_enabled=False)
    proxy.apply_health_changes([])
    return proxy


def _field(message: Request | Response, token: bytes) -> str:
    """The text ``token`` stands for, taken from ``message``; empty when it has none."""
    try:
        if token == b"$VIA":
            return "\r\n".join(f"Via: {v}" for v in message.values("via"))
        if token == b"$CALL":
            return message.call_id
        if token == b"$CSEQ":
            return str(message.cseq)
        if token == b"$FROM":
            return message.get("from") or ""
        if token == b"$TOTAG":
            to = message.get("to") or ""
            return to if "tag=" in to else to + ";tag=fz1"
        if token == b"$TO":
            return message.get("to") or ""
        if token == b"$ROUTE":
            return ", ".join(message.values("record-route"))
        if token == b"$CONTACT":
            contacts = message.contacts
            return str(contacts[0].uri) if contacts else "sip:nobody@127.0.0.1"
        if token == b"$RURI" and isinstance(message, Request):
            return message.uri
    except ParseError:
        pass
    return ""


_TOKEN = re.compile(rb"\$(?:VIA|CALL|CSEQ|FROM|TOTAG|TO|ROUTE|CONTACT|RURI)")


def substitute(data: bytes, reference: Request | Response | None) -> bytes:
    if reference is None or b"$" not in data:
        return data
    # Header text keeps undecodable bytes as surrogates (the parser's surrogateescape).
    return _TOKEN.sub(
        lambda m: _field(reference, m.group(0)).encode("utf-8", "surrogateescape"), data
    )


class Exchange:
    """One fresh proxy, a fake clock, and the last message it sent to each peer."""

    def __init__(self) -> None:
        self.proxy = new_proxy()
        self.now = 1000.0
        self.last: dict[Flow, Request | Response] = {}
        self.sent = 0

    def drain(self) -> None:
        for flow, data in self.proxy.outbox:
            # What the proxy sends must be a message: a ParseError here escapes as a crash.
            self.last[flow] = parse_message(data)
            self.sent += 1
        self.proxy.outbox.clear()
        self.proxy.take_events()

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        for _ in range(MAX_TIMER_RUNS):
            deadline = self.proxy.next_deadline()
            if deadline is None or deadline > end:
                self.now = end
                return
            self.now = max(self.now, deadline)
            self.proxy.run_timers(self.now)
            self.drain()
        raise TimerSpin(f"timers still due after {MAX_TIMER_RUNS} rounds at {self.now}")

    def record(self, control: int, data: bytes) -> None:
        source = SOURCES[control & 3]
        # Overloaded or not: new INVITEs then take the raw fast path (refused or admitted).
        self.proxy.overload.reject = OVERLOADED if control & 0x40 else 0.0
        if control & 0x20:
            data = substitute(data, self.last.get(source))
        self.proxy.receive(data, source, self.now)
        self.drain()
        self.advance(ADVANCE[(control >> 2) & 7])


# -- the two targets ---------------------------------------------------------------------
stats: Counter[str] = Counter()


def fuzz_parse(data: bytes, limits: Limits) -> None:
    stats["parse"] += 1
    try:
        message = parse_message(data, limits)
    except ParseError as exc:
        stats["parse_errors"] += 1
        if exc.partial is not None:  # what the proxy answers a message too large with
            exercise(exc.partial)
        return
    stats["parsed"] += 1
    exercise(message)


def fuzz_proxy(data: bytes) -> None:
    stats["proxy"] += 1
    exchange = Exchange()
    for record in data.split(SEPARATOR)[:12]:
        if record:
            stats["proxy_datagrams"] += 1
            exchange.record(record[0], record[1:])
    stats["proxy_sent"] += exchange.sent


TARGET_MASK = {"both": None, "parse": PARSE, "proxy": PROXY}
only: int | None = None


def one_input(data: bytes) -> None:
    stats["inputs"] += 1
    if not data:
        return
    kind = data[0] & 1 if only is None else only
    if kind == PARSE:
        fuzz_parse(data[1:], SMALL_LIMITS if data[0] & 2 else Limits())
    else:
        fuzz_proxy(data[1:])


# -- seeds -------------------------------------------------------------------------------
def _lines(*lines: str, body: bytes = b"") -> bytes:
    return "\r\n".join(lines).encode() + CRLF + CRLF + body


SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def invite(call_id: str = "fz1", branch: str = "z9hG4bKfz1") -> bytes:
    return _lines(
        "INVITE sip:15551234567@127.0.0.1:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch={branch};rport",
        "From: \"Agent 7\" <sip:agent@127.0.0.1>;tag=caller1",
        "To: <sip:15551234567@127.0.0.1>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Max-Forwards: 70",
        "Contact: <sip:agent@127.0.0.1:5090>",
        "Content-Type: application/sdp",
        f"Content-Length: {len(SDP)}",
        body=SDP,
    )


def answer(status: int, reason: str, extra: str = "") -> bytes:
    """A carrier's answer to the last request it was sent ($-fields filled in on the way)."""
    lines = [f"SIP/2.0 {status} {reason}", "$VIA", "From: $FROM"]
    lines.append("To: $TO" if status == 100 else "To: $TOTAG")
    lines += ["Call-ID: $CALL", "CSeq: $CSEQ", "Contact: <sip:carrier@127.0.0.1:5071>"]
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    return _lines(*lines)


def in_dialog(method: str, cseq: int, branch: str) -> bytes:
    """The caller's ACK or BYE in the dialog of the last response it was sent."""
    return _lines(
        f"{method} $CONTACT SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch={branch}",
        "Route: $ROUTE",
        "From: $FROM",
        "To: $TO",
        "Call-ID: $CALL",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
        "Content-Length: 0",
    )


CANCEL = _lines(
    "CANCEL sip:15551234567@127.0.0.1:5060 SIP/2.0",
    "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKfz1;rport",
    "From: \"Agent 7\" <sip:agent@127.0.0.1>;tag=caller1",
    "To: <sip:15551234567@127.0.0.1>",
    "Call-ID: fz1",
    "CSeq: 1 CANCEL",
    "Max-Forwards: 70",
    "Content-Length: 0",
)
OPTIONS = _lines(
    "OPTIONS sip:127.0.0.1:5060 SIP/2.0",
    "Via: SIP/2.0/TCP 127.0.0.1:5091;branch=z9hG4bKopt",
    "From: <sip:monitor@127.0.0.1>;tag=m1",
    "To: <sip:127.0.0.1>",
    "Call-ID: opt1",
    "CSeq: 7 OPTIONS",
    "Max-Forwards: 0",
    "Content-Length: 0",
)
CARRIER_BYE = _lines(
    "BYE sip:agent@127.0.0.1:5090 SIP/2.0",
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKcbye",
    "Route: $ROUTE",
    "From: $TOTAG",
    "To: $FROM",
    "Call-ID: $CALL",
    "CSeq: 9 BYE",
    "Max-Forwards: 70",
    "Content-Length: 0",
)


def ctl(source: int, advance: int = 0, fill: bool = False) -> int:
    return source | advance << 2 | (0x20 if fill else 0)


def exchange(*records: tuple[int, bytes]) -> bytes:
    return bytes([PROXY]) + SEPARATOR.join(bytes([c]) + data for c, data in records)


def seeds() -> list[bytes]:
    tortures = [torture(name) for name in torture_names()]
    valid = [invite(), answer(180, "Ringing"), answer(200, "OK"), in_dialog("ACK", 1, "z9hG4bKa")]
    valid += [in_dialog("BYE", 2, "z9hG4bKb"), CANCEL, OPTIONS, CARRIER_BYE]
    out = [bytes([PARSE]) + m for m in tortures + valid]
    out += [bytes([PARSE | 2]) + m for m in tortures[::5]]
    caller, tcp, a, b = 0, 1, 2, 3
    out += [exchange((caller, m)) for m in tortures]
    out += [exchange((caller, invite()), (a, m)) for m in tortures[::4]]
    out += [
        exchange((caller, invite())),
        exchange((tcp, OPTIONS)),
        exchange(
            (caller, invite()),
            (ctl(a, fill=True), answer(100, "Trying")),
            (ctl(a, fill=True), answer(180, "Ringing")),
            (ctl(a, fill=True), answer(200, "OK")),
            (ctl(caller, fill=True), in_dialog("ACK", 1, "z9hG4bKack1")),
            (ctl(caller, fill=True), in_dialog("BYE", 2, "z9hG4bKbye1")),
            (ctl(a, 2, fill=True), answer(200, "OK")),
        ),
        exchange(
            (caller, invite()),
            (ctl(a, fill=True), answer(503, "Service Unavailable", "Retry-After: 30")),
            (ctl(b, fill=True), answer(180, "Ringing")),
            (ctl(b, 3, fill=True), answer(200, "OK")),
            (ctl(b, 6, fill=True), CARRIER_BYE),
        ),
        exchange((ctl(caller, 4), invite()), (ctl(b, 7, fill=True), answer(486, "Busy Here"))),
        exchange(
            (caller, invite()),
            (ctl(a, fill=True), answer(180, "Ringing")),
            (caller, CANCEL),
            (ctl(a, fill=True), answer(200, "OK")),
            (ctl(a, 6, fill=True), answer(487, "Request Terminated")),
        ),
        exchange(
            (caller, invite()),
            (ctl(a, fill=True), answer(407, "Proxy Authentication Required")),
            (ctl(b, 5, fill=True), answer(500, "Oops", "Reason: Q.850;cause=34")),
        ),
    ]
    return out


# -- SIP-aware mutations -----------------------------------------------------------------
NASTY_VALUES = [
    b"", b" ", b"\t", b";", b",", b"<", b">", b"<>", b"\"", b"\\\"", b"@", b"%", b"%00", b"%zz",
    b"sip:", b"sips:[::1]:", b"sip:[", b"sip:a@b:99999", b"sip:a@b:-1", b"<sip:x;lr>,<",
    b"SIP/2.0/UDP", b"SIP/2.0/UDP h:0;branch=", b"SIP/2.0/UDP [::1;branch=z9hG4bK",
    b"SIP/3.0/UDP 1.2.3.4", b";tag=", b";tag", b"1 INVITE", b"-1 INVITE", b"4294967296 ACK",
    b"1", b"x INVITE", b"\xff\xfe", b"\xc3(", b"\x00", b"a" * 400, b"=" * 3, b"sip:%41@h",
]
NASTY_NUMBERS = [b"0", b"-1", b"00000070", b"4294967296", b"99999999999999999999", b"1e3", b""]
NASTY_BYTES = b"\x00\xff\r\n\t \"<>;,:@%[]\\=?&"
NAMES = [
    b"Via", b"v", b"From", b"f", b"To", b"t", b"Call-ID", b"i", b"CSeq", b"Contact", b"m",
    b"Route", b"Record-Route", b"Max-Forwards", b"Content-Length", b"l", b"Content-Type", b"c",
    b"Require", b"Proxy-Require", b"Supported", b"Retry-After", b"Reason", b"Authorization",
    b"Proxy-Authenticate", b"WWW-Authenticate", b"Expires", b"X-Dialer-Campaign",
]
METHODS = [b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"REGISTER", b"INFO", b"NEWMETHOD"]


def fresh(rng: random.Random, pool: list[bytes]) -> bytes:
    """A message made up from parts: a start line, header lines from anywhere, a body."""
    if rng.random() < 0.5:
        start = b"%s %s SIP/2.0" % (rng.choice(METHODS), rng.choice([*NASTY_VALUES, b"sip:h"]))
    else:
        start = b"SIP/2.0 %d %s" % (rng.randrange(0, 1000), rng.choice(NASTY_VALUES))
    lines = [start]
    for _ in range(rng.randrange(0, 12)):
        if rng.random() < 0.6:
            lines.append(rng.choice(rng.choice(pool).split(CRLF)))
        else:
            lines.append(rng.choice(NAMES) + b": " + rng.choice(NASTY_VALUES))
    return CRLF.join(lines) + CRLF + CRLF + rng.choice([b"", b"v=0\r\n", b"\x00" * 3])


def mutate_sip(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    lines = data.split(CRLF)
    i = rng.randrange(len(lines))
    op = rng.randrange(12)
    if op == 0 and len(lines) > 1:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[i])
    elif op == 2:
        lines.insert(i, rng.choice(rng.choice(pool).split(CRLF)))
    elif op == 3:
        name, colon, _ = lines[i].partition(b":")
        lines[i] = (name if colon else rng.choice(NAMES)) + b": " + rng.choice(NASTY_VALUES)
    elif op == 4:
        numbers = list(re.finditer(rb"\d+", lines[i]))
        if numbers:
            m = rng.choice(numbers)
            new = rng.choice(NASTY_NUMBERS)
            lines[i] = lines[i][: m.start()] + new + lines[i][m.end() :]
    elif op == 5:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 6:
        at = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:at] + rng.choice([b"\r\n ", b"\r\n\t", b"\n", b"\r"]) + lines[i][at:]
    elif op == 7:
        at = rng.randrange(len(lines[i]) + 1)
        byte = NASTY_BYTES[rng.randrange(len(NASTY_BYTES))]
        lines[i] = lines[i][:at] + bytes([byte]) * rng.choice([1, 1, 2, 50]) + lines[i][at:]
    elif op == 8:
        name, colon, value = lines[i].partition(b":")
        if colon:
            lines[i] = rng.choice(NAMES).swapcase() + rng.choice([b":", b" :", b"\t:"]) + value
    elif op == 9:
        if rng.random() < 0.5:
            return data.replace(CRLF, b"\n")
        return data[: rng.randrange(len(data) + 1)]
    elif op == 10:
        lines[i] = lines[i].replace(b";", rng.choice([b",", b";;", b" ; ", b"?", b"\x00"]))
    else:
        for _ in range(rng.randrange(1, 4)):
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
    return CRLF.join(lines)


def make_mutator(pool: list[bytes]) -> object:
    bodies = [seed[1:] for seed in pool if seed]

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if not data:
            data = bytes([rng.randrange(2)])
        tag, body = data[:1], data[1:]
        roll = rng.random()
        if roll < 0.01:
            tag = bytes([rng.randrange(4)])  # the other target, or the other limits
        if roll < 0.04:
            made = fresh(rng, bodies)
            if tag[0] & 1:  # a made-up datagram to the proxy, after an INVITE or not
                made = bytes([rng.randrange(64)]) + made
                if rng.random() < 0.5:
                    made = b"\x00" + invite() + SEPARATOR + made
            body = made
        elif roll < 0.45:
            records = body.split(SEPARATOR)
            k = rng.randrange(len(records))
            if tag[0] & 1 and records[k]:
                records[k] = records[k][:1] + mutate_sip(records[k][1:], rng, bodies)
            else:
                records[k] = mutate_sip(records[k], rng, bodies)
            body = SEPARATOR.join(records)
        else:
            body = atheris.Mutate(body, max(max_size - 1, 1))
        return (tag + body)[:max_size]

    return mutator


# -- running -----------------------------------------------------------------------------
def worker(args: argparse.Namespace, libfuzzer: list[str]) -> None:
    global only
    only = TARGET_MASK[args.target]
    logging.disable(logging.CRITICAL)  # the core logs refusals; a million of them is noise
    started = time.monotonic()

    def report() -> None:
        figures = dict(stats, seconds=time.monotonic() - started)
        Path(args.stats).write_text(json.dumps(figures))

    atexit.register(report)
    pool = seeds()
    atheris.Setup([sys.argv[0], *libfuzzer], one_input, custom_mutator=make_mutator(pool))
    atheris.Fuzz()


STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\S+)")


def supervise(args: argparse.Namespace) -> int:
    """Run the fuzzer in one child process, keep its log, and print the figures."""
    CRASHES.mkdir(parents=True, exist_ok=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    corpus = Path(tempfile.mkdtemp(prefix="trunkguard-fuzz-"))
    stats_path = corpus / "stats.json"
    (corpus / "in").mkdir()
    wanted = TARGET_MASK[args.target]
    for n, seed in enumerate(seeds()):
        if wanted is not None and seed[0] & 1 != wanted:
            continue
        (corpus / "in" / f"seed-{n:03d}").write_bytes(seed)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    command += ["--target", args.target, "--stats", str(stats_path), "--"]
    command += [
        f"-atheris_runs={args.runs}",  # unlike -runs, lets atexit write the counts
        f"-seed={args.seed}",
        f"-max_len={MAX_LEN}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={CRASHES}/",
        str(corpus / "in"),
    ]
    print(f"fuzzing {args.target} for {args.runs:,} inputs, one process; log in {LOG}")
    started, begun = time.monotonic(), time.time()
    last: re.Match[str] | None = None
    tail: list[str] = []
    with LOG.open("w") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            log.write(line)
            tail = [*tail[-60:], line]
            status = STATUS.match(line)
            if status:
                last = status
                if status.group(2) == "pulse":
                    print(f"  {line.rstrip()}", flush=True)
    wall = time.monotonic() - started
    figures = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    shutil.rmtree(corpus, ignore_errors=True)
    crashed = child.returncode != 0
    if crashed:
        print("".join(tail), file=sys.stderr)
    inputs = figures.get("inputs", 0)
    seconds = figures.get("seconds") or wall
    print()
    print(f"inputs run:      {inputs:,} ({inputs / seconds:,.0f} exec/s)")
    print(f"  parse_message: {figures.get('parse', 0):,} inputs, "
          f"{figures.get('parsed', 0):,} parsed, {figures.get('parse_errors', 0):,} ParseError")
    print(f"  proxy receive: {figures.get('proxy', 0):,} inputs, "
          f"{figures.get('proxy_datagrams', 0):,} datagrams in, "
          f"{figures.get('proxy_sent', 0):,} out")
    if last is not None:
        print(f"coverage:        {last.group(3)} edges, {last.group(4)} features, "
              f"corpus {last.group(5)}")
    print(f"crashes:         {1 if crashed else 0}")
    print(f"wall time:       {wall:,.0f} s")
    if crashed:
        saved = [p for p in CRASHES.iterdir() if p.stat().st_mtime >= begun]
        for path in saved:
            print(f"crashing input saved: {path} (replay: bench/fuzz.py --replay {path})")
    return 1 if crashed else 0


def replay(paths: list[str]) -> int:
    """Run saved inputs once each, with the traceback of the first that fails."""
    logging.disable(logging.CRITICAL)
    for path in paths:
        print(path)
        one_input(Path(path).read_bytes())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--target", choices=sorted(TARGET_MASK), default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replay", nargs="+", metavar="FILE")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args, libfuzzer = parser.parse_known_args()
    if args.replay:
        return replay(args.replay)
    if args.worker:
        worker(args, [a for a in libfuzzer if a != "--"])
        return 0
    return supervise(args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
