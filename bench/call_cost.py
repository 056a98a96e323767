"""CPU cost of one call through the router, in process: no sockets, no SIPp, a fake clock.

The router is the one ``trunkguard run`` builds (``Runtime`` from a config with one
carrier, its listeners, the asyncio adapter's ``Router`` with its flush and its one
timer), but its sockets are stand-ins that keep what is sent, and its loop is a fake
one whose clock the driver moves. Each call is what SIPp's ``uac_call`` and
``uas_answer`` do: INVITE, 100, 180, 200, ACK, a hold, BYE, 200, at a fixed rate of
simulated time, so calls overlap and the finished transactions and dialogs pile up
for their 32 s as they do on a live router.

Only the CPU time (process_time: not the time waiting for a core on a busy machine) spent
inside the router is counted (``Router.receive`` and the timers it
arms); making the carrier's and the caller's messages is not. Reported: µs of router
CPU per call (and per message), for every ``--calls`` block, the last one being the
steady state once records expire.

Run: ``.venv/bin/python bench/call_cost.py [--calls N] [--rate R] [--profile PATH]
[--json PATH]``. ``--profile`` also writes a cProfile of the router's part
(``python -m pstats PATH``) and prints the top functions by own time.

Side by side: ``--against DIR`` runs this script in turns, ``--rounds`` times each, on the
source tree here and on the one in ``DIR/src`` (another checkout, e.g. ``git worktree add
/tmp/main main``), and prints the least and the median µs per call of each: on a machine
shared with other work the least is the figure least disturbed by it.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import itertools
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trunkguard.cli import _log_attempt
from trunkguard.config import parse_config
from trunkguard.proxy import Flow
from trunkguard.proxy._server import Router, _CarrierSocket, _UdpListener
from trunkguard.runtime import Runtime

ROUTER = ("127.0.0.1", 5060)
CALLER = ("127.0.0.1", 5090)
CARRIER = ("127.0.0.1", 5071)
HOLD = 0.1  # seconds between the ACK and the BYE, as proxy_rate.py's --hold-ms
ANSWER_AFTER = 0.002  # the carrier's 100, 180 and 200 come this long after the INVITE

CONFIG = f"""
listen: udp:{ROUTER[0]}:{ROUTER[1]}
allow: [127.0.0.0/8]
carriers:
  - name: a
    uri: sip:{CARRIER[0]}:{CARRIER[1]}
log:
  level: warning
store:
  path: {{store}}
"""


class FakeHandle:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """What the adapter uses of its loop: ``time()`` and ``call_at``; the driver fires."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._heap: list[tuple[float, int, FakeHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def run_until(self, end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end:
            when, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            self.now = max(self.now, when)
            handle.callback()
        self.now = max(self.now, end)


class Sink:
    """A stand-in datagram transport: keeps what the router sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object = None) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> None:
        return None

    def take(self) -> list[bytes]:
        out, self.sent = self.sent, []
        return out


# ------------------------------------------------------------------- the peers' side


def headers(data: bytes) -> tuple[str, dict[str, list[str]]]:
    """First line and headers (lower-case name -> values) of a message the router sent."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    out: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), []).append(value.strip())
    return lines[0], out


def carrier_reply(request: bytes, status: int, reason: str, tag: str, body: bytes = b"") -> bytes:
    _, h = headers(request)
    to = h["to"][0]
    if status > 100 and "tag=" not in to:
        to += f";tag={tag}"
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in h["via"]]
    lines += [f"From: {h['from'][0]}", f"To: {to}", f"Call-ID: {h['call-id'][0]}"]
    lines.append(f"CSeq: {h['cseq'][0]}")
    lines += [f"Record-Route: {v}" for v in h.get("record-route", [])]
    lines.append(f"Contact: <sip:carrier@{CARRIER[0]}:{CARRIER[1]}>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def caller_invite(n: int) -> bytes:
    head = (
        f"INVITE sip:15551234567@{ROUTER[0]}:{ROUTER[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-{n}-0\r\n"
        f"From: sipp <sip:sipp@{CALLER[0]}:{CALLER[1]}>;tag={n}SIPpTag00\r\n"
        f"To: <sip:15551234567@{ROUTER[0]}:{ROUTER[1]}>\r\n"
        f"Call-ID: {n}-bench@{CALLER[0]}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:sipp@{CALLER[0]}:{CALLER[1]}>\r\n"
        f"Max-Forwards: 70\r\n"
        f"Subject: Performance Test\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    )
    return head.encode() + SDP


def caller_request(n: int, method: str, cseq: int, branch: int, ok: bytes) -> bytes:
    """ACK or BYE of call ``n``, in its dialog, from the 200 the caller received."""
    _, h = headers(ok)
    target = h["contact"][0].strip("<>").split(">")[0]
    lines = [f"{method} {target} SIP/2.0"]
    lines.append(f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-{n}-{branch}")
    lines += [f"Route: {v}" for v in h.get("record-route", [])]
    lines += [f"From: {h['from'][0]}", f"To: {h['to'][0]}", f"Call-ID: {h['call-id'][0]}"]
    lines += [f"CSeq: {cseq} {method}", "Max-Forwards: 70", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------- driver


class Driver:
    def __init__(self, workdir: Path) -> None:
        config = parse_config(CONFIG.format(store=workdir / "events.db"))
        self.runtime = Runtime(config)
        self.runtime.on_attempt = _log_attempt  # as ``trunkguard run`` does
        self.loop = FakeLoop()
        router = Router(self.runtime.proxy, self.loop)  # type: ignore[arg-type]
        router.on_events = self.runtime.pump
        listener = _UdpListener(router)
        listener.local = ROUTER
        self.to_caller = Sink()
        listener.transport = self.to_caller  # type: ignore[assignment]
        router.udp[ROUTER] = listener
        carrier_flow = Flow("udp", CARRIER)
        carrier = _CarrierSocket(router, carrier_flow)
        self.to_carrier = Sink()
        carrier.transport = self.to_carrier  # type: ignore[assignment]
        router.carriers[CARRIER] = carrier
        proxy = self.runtime.proxy
        proxy.set_own_addresses([ROUTER])
        self.runtime.start(self.loop.time())
        router._rearm()
        self.router = router
        self.listener = listener
        self.carrier = carrier
        self.busy = 0.0  # seconds inside the router
        self.messages = 0
        self.failed = 0
        self._plan: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        # ``trunkguard run``'s collector policy (cli._GcPolicy): young generations once a
        # second of the loop's time, then freeze what survived.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        self._gc_tick(self.loop.now + 1.0)

    def _gc_tick(self, when: float) -> None:
        def tick() -> None:
            gc.collect(1)
            gc.freeze()
            self._gc_tick(when + 1.0)

        self.loop.call_at(when, tick)

    def at(self, when: float, step: Callable[[], None]) -> None:
        heapq.heappush(self._plan, (when, next(self._seq), step))

    def _in(self, data: bytes, from_caller: bool) -> None:
        started = time.process_time()
        if from_caller:
            self.listener.datagram_received(data, CALLER)
        else:
            self.carrier.datagram_received(data, CARRIER)
        self.busy += time.process_time() - started
        self.messages += 1

    def _timers_until(self, when: float) -> None:
        started = time.process_time()
        self.loop.run_until(when)
        self.busy += time.process_time() - started

    def call(self, n: int, start: float) -> None:
        """Schedule call ``n``: each step reads what the router sent at the one before."""

        def invite() -> None:
            self._in(caller_invite(n), True)
            self.to_caller.take()  # 100 Trying
            out = [m for m in self.to_carrier.take() if m.startswith(b"INVITE ")]
            if not out:
                self.failed += 1
                return
            sent = out[0]
            tag = f"{n}SIPpTag01"

            def answer() -> None:
                self._in(carrier_reply(sent, 100, "Trying", tag), False)
                self._in(carrier_reply(sent, 180, "Ringing", tag), False)
                self.to_caller.take()
                self._in(carrier_reply(sent, 200, "OK", tag, SDP), False)
                oks = [m for m in self.to_caller.take() if m.startswith(b"SIP/2.0 200")]
                if not oks:
                    self.failed += 1
                    return
                ok = oks[0]
                self._in(caller_request(n, "ACK", 1, 1, ok), True)
                self.to_carrier.take()

                def bye() -> None:
                    self._in(caller_request(n, "BYE", 2, 2, ok), True)
                    byes = [m for m in self.to_carrier.take() if m.startswith(b"BYE ")]
                    if not byes:
                        self.failed += 1
                        return
                    self._in(carrier_reply(byes[0], 200, "OK", tag), False)
                    if not any(m.startswith(b"SIP/2.0 200") for m in self.to_caller.take()):
                        self.failed += 1

                self.at(self.loop.now + HOLD, bye)

            self.at(self.loop.now + ANSWER_AFTER, answer)

        self.at(start, invite)

    def run(self, calls: int, rate: float, first: int = 0) -> None:
        """``calls`` calls at ``rate`` per second of simulated time, each run to its end."""
        start = self.loop.now
        for i in range(calls):
            self.call(first + i, start + i / rate)
        plan = self._plan
        while plan:
            when, _, step = heapq.heappop(plan)
            self._timers_until(when)
            step()
        # Let the last calls' transactions end, as they would between blocks.
        self._timers_until(self.loop.now + 0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=10_000, help="calls per block")
    parser.add_argument("--blocks", type=int, default=6, help="blocks of --calls calls")
    parser.add_argument("--rate", type=float, default=1000.0, help="calls/s of simulated time")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the router part here")
    parser.add_argument("--top", type=int, default=30, help="functions to print with --profile")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--against", type=Path, help="compare with the checkout in this folder")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each, with --against")
    args = parser.parse_args(argv)
    if args.against is not None:
        return compare(args)
    logging.basicConfig(level=logging.WARNING)  # proxy_rate.py runs the router at warning

    with tempfile.TemporaryDirectory(prefix="trunkguard-cost-") as tmp:
        driver = Driver(Path(tmp))
        profile = cProfile.Profile() if args.profile else None
        blocks: list[dict[str, Any]] = []
        print(
            f"in-process router, one carrier, {args.rate:g} calls/s of simulated time, "
            f"{args.calls} calls per block (7 messages in, 7 out per call)"
        )
        print(f"  {'block':>5} {'calls':>6} {'failed':>6} {'µs/call':>8} {'µs/msg':>7}")
        for b in range(args.blocks):
            busy, messages, failed = driver.busy, driver.messages, driver.failed
            if profile is not None and b == args.blocks - 1:
                profile.enable()
            driver.run(args.calls, args.rate, first=b * args.calls)
            if profile is not None and b == args.blocks - 1:
                profile.disable()
            spent = driver.busy - busy
            row = {
                "block": b + 1,
                "calls": args.calls,
                "failed": driver.failed - failed,
                "us_per_call": spent / args.calls * 1e6,
                "us_per_message": spent / max(1, driver.messages - messages) * 1e6,
            }
            blocks.append(row)
            print(
                f"  {row['block']:>5} {row['calls']:>6} {row['failed']:>6} "
                f"{row['us_per_call']:>8.1f} {row['us_per_message']:>7.1f}",
                flush=True,
            )
        counters = dict(driver.runtime.proxy.counters)
        driver.runtime.close()
    steady = blocks[-1]["us_per_call"]
    print(f"router CPU per call (last block, steady state): {steady:.1f} µs")
    if profile is not None and args.profile is not None:
        profile.dump_stats(str(args.profile))
        print(f"\ncProfile of the last block (router and driver) in {args.profile}:")
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    if args.json:
        report = {"rate": args.rate, "blocks": blocks, "us_per_call": steady, "counters": counters}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(b["failed"] for b in blocks) else 0


def compare(args: argparse.Namespace) -> int:
    """Run this script on both trees in turns; print the least and median µs per call."""
    here = Path(__file__).resolve().parents[1]
    trees = {"this tree": here / "src", str(args.against): args.against.resolve() / "src"}
    if not (args.against / "src" / "trunkguard").is_dir():
        print(f"{args.against}: no src/trunkguard in it", file=sys.stderr)
        return 2
    figures: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="trunkguard-cost-") as tmp:
        for r in range(args.rounds):
            for name, src in trees.items():
                out = Path(tmp) / f"{r}.json"
                env = {**os.environ, "PYTHONPATH": str(src)}
                cmd = [sys.executable, __file__, "--calls", str(args.calls)]
                cmd += ["--blocks", str(args.blocks), "--rate", str(args.rate), "--json", str(out)]
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
                figures[name].append(json.loads(out.read_text())["us_per_call"])
                print(f"  round {r + 1} {name}: {figures[name][-1]:.1f} µs/call", flush=True)
    print(f"\nrouter CPU per call, {args.rounds} runs each, in turns (µs): least / median")
    for name, values in figures.items():
        print(f"  {name:<30} {min(values):8.1f} / {statistics.median(values):8.1f}")
    ours, theirs = (min(v) for v in figures.values())
    print(f"  this tree / {args.against}: {ours / theirs:.2f} of the time (least)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
