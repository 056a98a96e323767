"""FastAGI route advisor: sessions per second, and each session's time, against a real router.

A router process (``trunkguard run``, uvloop) with four carriers priced by rate decks,
three of them with a ``dial:`` string, and the advisor on a loopback port. This
process plays Asterisk on ``--concurrency`` connections at once for ``--seconds``
seconds each run: each connection runs one session after another, as res_agi
does (connect, the header block, lockstep 200 result=1 replies to the server's
SET VARIABLE commands, until the server closes). Two runs:

1. ``route``: one session per call (TG_PLAN_ID, three TG_ROUTE_n, TG_ROUTE_COUNT).
2. ``route+report``: a route session and a report session (CONGESTION/34 on a route
   of the plan, alternating with BUSY/17, so the carriers go DOWN and come back) per call.

It prints sessions/s, the 50th/99th percentile of a session's time (connect to close),
and the router's CPU seconds per 1,000 sessions. The client shares the machine.

Run: ``.venv/bin/python bench/agi.py [--seconds 5] [--concurrency 50] [--json PATH]``
(``make bench`` runs it without options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

CARRIERS = {"a": ("0.020", "PJSIP/${NUMBER}@carrier-a"), "b": ("0.010", "SIP/carrier-b/${EXTEN}"),
            "c": ("0.030", "IAX2/carrier-c/${NUMBER}"), "d": ("0.015", None)}


def header_block(script: str, args: list[str], n: int) -> bytes:
    lines = [
        "agi_network: yes", f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1:4578/{script}", f"agi_channel: SIP/bench-{n:08x}",
        "agi_language: en", "agi_type: SIP", f"agi_uniqueid: 1764612000.{n}",
        "agi_version: 18.20.2", "agi_callerid: 3125550100", "agi_calleridname: bench",
        "agi_callingpres: 0", "agi_callingani2: 0", "agi_callington: 0", "agi_callingtns: 0",
        "agi_dnid: 915551234567", "agi_rdnis: unknown", "agi_context: vicidial-auto",
        "agi_extension: 915551234567", "agi_priority: 1", "agi_enhanced: 0.0",
        "agi_accountcode: ", "agi_threadid: 140245106927360",
        *[f"agi_arg_{i}: {a}" for i, a in enumerate(args, 1)], "",
    ]  # fmt: skip
    return "".join(line + "\n" for line in lines).encode()


async def session(addr: tuple[str, int], block: bytes) -> dict[str, str]:
    reader, writer = await asyncio.open_connection(*addr)
    values: dict[str, str] = {}
    try:
        writer.write(block)
        while True:
            line = await reader.readline()
            if not line:
                return values
            _, _, name, value = line.decode().rstrip("\n").split(" ", 3)
            values[name] = value.strip('"')
            writer.write(b"200 result=1\n")
    finally:
        writer.close()


async def run(
    addr: tuple[str, int], seconds: float, concurrency: int, report: bool
) -> dict[str, Any]:
    times: list[float] = []
    errors = 0
    counter = [0]
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < end:
            counter[0] += 1
            n = counter[0]
            t0 = time.perf_counter()
            try:
                got = await session(addr, header_block("route", ["15551234567"], n))
                times.append(time.perf_counter() - t0)
                if report and got.get("TG_PLAN_ID"):
                    status = ("CONGESTION", "34") if n % 2 else ("BUSY", "17")
                    t0 = time.perf_counter()
                    block = header_block("report", [got["TG_PLAN_ID"], "1", *status], n)
                    await session(addr, block)
                    times.append(time.perf_counter() - t0)
                elif not got.get("TG_ROUTE_COUNT"):
                    errors += 1
            except OSError:
                errors += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.monotonic() - started
    times.sort()
    return {
        "sessions": len(times),
        "sessions_per_s": round(len(times) / took),
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(times[int(len(times) * 0.99)] * 1000, 2),
        "errors": errors,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        carriers = []
        for i, (name, (rate, dial)) in enumerate(CARRIERS.items()):
            (work / f"{name}.csv").write_text(f"prefix,rate\n1,{rate}\n")
            entry = f'  - {{name: {name}, uri: "sip:127.0.0.1:{9 + i}", deck: {{path: {name}.csv}}'
            carriers.append(entry + (f', dial: "{dial}"}}' if dial else "}"))
        (work / "router.yaml").write_text(
            "listen: udp:127.0.0.1:0\nallow: [127.0.0.0/8]\nprobe: {enabled: false}\n"
            "store: {path: events.db}\nlog: {level: warning}\n"
            "numbers: {country_code: '1', national_lengths: [10]}\n"
            "health: {hold_down: 1}\n"
            "agi: {enabled: true, listen: '127.0.0.1:0'}\ncarriers:\n" + "\n".join(carriers) + "\n"
        )
        ready = work / "ready.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "trunkguard", "run", "-c", str(work / "router.yaml"),
             "--ready-file", str(ready)],
            stdout=subprocess.DEVNULL, stderr=open(work / "router.log", "wb"),  # noqa: SIM115
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while not ready.exists() or not ready.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    print((work / "router.log").read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.05)
            time.sleep(0.05)
            host, port = json.loads(ready.read_text())["agi"]
            addr = (str(host), int(port))
            out: dict[str, Any] = {"concurrency": args.concurrency, "seconds": args.seconds,
                                   "cpus": os.cpu_count()}
            for name, report in (("route", False), ("route+report", True)):
                cpu0 = cpu_seconds(proc.pid)
                figures = uvloop.run(run(addr, args.seconds, args.concurrency, report))
                figures["router_cpu_s_per_1000"] = round(
                    (cpu_seconds(proc.pid) - cpu0) / figures["sessions"] * 1000, 3
                )
                out[name] = figures
                print(f"{name:>13}: {figures['sessions_per_s']:>6} sessions/s "
                      f"({figures['sessions']} in {args.seconds:.0f}s, "
                      f"{args.concurrency} at once), "
                      f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
                      f"router CPU {figures['router_cpu_s_per_1000']} s per 1,000 sessions, "
                      f"{figures['errors']} errors")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
