"""Overload: SIPp offering 1x, 2x and 5x the router's measured capacity, 60 s each.

* Capacity: unless ``--capacity`` is given, proxy_rate's ramp (steps of rising rate through
  one router, stop at the first step with 0.1 % failed calls or more), in short steps.
* Each step on a fresh router, one SIPp carrier that answers (uas_answer.xml), one SIPp
  caller (uac_overload.xml) offering ``multiple * capacity`` calls/s for ``--seconds``.
  The caller takes a 503 to its INVITE as "shed": it ACKs it and ends the call on a path
  of its own. Each call is classified by its Call-ID in the caller's ``-trace_shortmsg``:
  offered (an INVITE sent), shed (first final status 503), admitted (offered, not shed),
  answered (200 to the INVITE and to the BYE); failed = admitted but not answered.
* Beside it: the router's resident memory at the end of the step and its peak (VmHWM),
  the CPU of each process, the kernel's UDP receive-buffer drops, the carrier's state as
  the admin API gives it (polled every second) and as the event log recorded it, and the
  router's counters (``/api/counters``).
* A memory figure: a fresh router offered ``--memory-rate`` calls/s for ``--seconds``.

The router's overload control (``overload:``, on by default) is what is measured: past its
capacity it refuses new calls with a quick 503. Per-source limits are off, so they do not
take the place of overload control for the one SIPp source. SIPp and the router share the
machine's cores, so at 5x the caller itself may not reach the rate asked: the offered rate
is printed beside it.

Run: ``.venv/bin/python bench/overload.py [--capacity N] [--seconds S] [--steps 1,2,5]
[--quick] [--json PATH] [--memory-rate 1000]`` (``make bench`` runs it without options).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from kamailio import free_tcp_port  # noqa: E402
from proxy_rate import (  # noqa: E402
    OFFERED_MIN,
    OTHERS_NOTABLE,
    RECV_TIMEOUT_MS,
    SIPP_BUFFERS,
    STEP_HEADER,
    Bench,
    Problems,
    RouterEnd,
    Step,
    background_load,
    cpu_wait,
    failure_reasons,
    fmt,
    machine_cpu,
    percentile,
    process_cpu,
    rate_ladder,
    read_from,
    reaped_children_cpu,
    router_end_lines,
    router_log_problems,
    router_pid,
    sipp_events,
    sipp_version,
    status_mb,
    step_row,
    stop_router,
    udp_receive_drops,
    without_nan,
)
from router import RouterProcess  # noqa: E402
from sipp import Uas, iter_short_messages, start_uac, start_uas  # noqa: E402

HOLD_MS = 100  # call hold before the BYE, as proxy_rate
ADMIN_TOKEN = "overload-bench-admin-token"
CARRIER = "carrier"
POLL_EVERY = 1.0  # seconds between two reads of /api/targets
ADMIN_TIMEOUT = 2.0  # an overloaded router answers its admin API late, or not at all
SHOWN_CHANGES = 6  # state changes printed per step


PLAIN_CONFIG = False  # --plain-config: a version from before source_limits existed


def router_config(admin_port: int) -> dict[str, object]:
    """The router's config for every run of this bench, besides listen, allow, carriers and
    store (RouterProcess writes those). Per-source limits are off: one SIPp source at 5x
    would be banned by limits meant for a real caller, and this measures overload control."""
    config: dict[str, object] = {
        "log": {"level": "warning"},
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": ADMIN_TOKEN},
    }
    if not PLAIN_CONFIG:
        config["source_limits"] = {"enabled": False}
    return config


def new_router(carrier: Uas, workdir: Path) -> Admin:
    admin_port = free_tcp_port()
    router = RouterProcess(workdir, [(CARRIER, carrier.port)], extra=router_config(admin_port))
    return Admin(router.start(), admin_port)


@dataclass
class Admin:
    """A running router and its admin API."""

    router: RouterProcess
    port: int

    def get(self, path: str) -> dict[str, object] | None:
        """The JSON of GET ``path``, or None when the router did not answer in time."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT) as response:
                out: dict[str, object] = json.loads(response.read())
                return out
        except (OSError, ValueError):
            return None

    def states(self) -> dict[str, str] | None:
        body = self.get("/api/targets")
        if body is None or not isinstance(body.get("targets"), list):
            return None
        return {str(t["name"]): str(t["state"]) for t in body["targets"]}


class StateWatch(threading.Thread):
    """Reads the targets' states every POLL_EVERY seconds until stopped."""

    def __init__(self, admin: Admin) -> None:
        super().__init__(daemon=True)
        self.admin = admin
        self.seen: Counter[str] = Counter()  # "name STATE" -> polls
        self.polls = 0
        self.unanswered = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            started = time.monotonic()
            states = self.admin.states()
            self.polls += 1
            if states is None:
                self.unanswered += 1
            else:
                self.seen.update(f"{name} {state}" for name, state in states.items())
            self._done.wait(max(0.0, POLL_EVERY - (time.monotonic() - started)))

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=ADMIN_TIMEOUT + 1)


# ------------------------------------------------------------------------ one step


@dataclass
class Calls:
    """The caller's calls, classified by Call-ID from its -trace_shortmsg."""

    offered: int = 0
    shed: int = 0
    answered: int = 0
    offered_cps: float = math.nan
    offer_span_s: float = math.nan
    pdd_ms: list[float] = field(default_factory=list)  # admitted calls with an 18x
    admitted_without_18x: int = 0
    finals: dict[str, int] = field(default_factory=dict)  # first final status -> calls

    @property
    def admitted(self) -> int:
        return self.offered - self.shed

    @property
    def failed(self) -> int:
        return self.admitted - self.answered


def classify(trace: Path) -> Calls:
    """One pass over the trace, a few values per call: a 5x run has millions of lines."""
    sent: dict[str, float] = {}
    ringing: dict[str, float] = {}
    final: dict[str, int] = {}
    bye_ok: set[str] = set()
    for m in iter_short_messages(trace):
        status = m.status
        if m.direction == "S":
            if m.method == "INVITE":
                sent.setdefault(m.call_id, m.time)
        elif status is None:
            continue
        elif m.cseq_method == "INVITE":
            if 180 <= status <= 189:
                ringing.setdefault(m.call_id, m.time)
            elif status >= 200:
                final.setdefault(m.call_id, status)
        elif m.cseq_method == "BYE" and 200 <= status < 300:
            bye_ok.add(m.call_id)
    calls = Calls(offered=len(sent))
    finals: Counter[str] = Counter()
    for call_id, started in sent.items():
        status = final.get(call_id)
        finals[str(status) if status is not None else "none"] += 1
        if status == 503:
            calls.shed += 1
            continue
        if status is not None and 200 <= status < 300 and call_id in bye_ok:
            calls.answered += 1
        if call_id in ringing:
            calls.pdd_ms.append((ringing[call_id] - started) * 1000)
        else:
            calls.admitted_without_18x += 1
    calls.pdd_ms.sort()
    calls.finals = dict(sorted(finals.items()))
    if len(sent) >= 2:
        span = max(sent.values()) - min(sent.values())
        calls.offer_span_s = span
        calls.offered_cps = (len(sent) - 1) / span if span > 0 else math.nan
    return calls


@dataclass
class OverloadStep:
    name: str
    multiple: float
    asked_cps: int
    seconds: float
    calls_asked: int
    offered: int
    offered_cps: float
    admitted: int
    answered: int
    failed: int  # admitted, not answered
    shed: int  # 503 to the INVITE
    shed_sipp: int  # SIPp's own count of its shed path
    goodput_cps: float  # answered calls per second of offering
    failed_pct_admitted: float
    shed_pct_offered: float
    pdd_p50_ms: float
    pdd_p99_ms: float
    admitted_without_18x: int
    finals: dict[str, int]
    wall_s: float
    router_rss_mb: float  # at the end of the step
    router_peak_mb: float  # VmHWM: the peak of the resident memory
    router_cpu_pct: float  # of one core
    router_wait_pct: float  # runnable without a core, of the step's time
    caller_cpu_pct: float
    carrier_cpu_pct: float
    machine_cpu_pct: float
    udp_receive_drops: int
    carrier_changed: bool
    states_seen: dict[str, int]  # "target STATE" -> polls of /api/targets
    state_changes: list[str]
    admin_polls: int
    admin_unanswered: int
    router_counters: dict[str, object] | None  # /api/counters at the end of the step
    sipp_returncode: int
    sipp_killed: bool
    sipp_failed: int
    sipp_reasons: dict[str, int]
    caller_retransmissions: int
    router_log: Problems
    caller_errors: Problems
    router_end: RouterEnd | None = None

    @property
    def offered_enough(self) -> bool:
        return not self.offered_cps < OFFERED_MIN * self.asked_cps


def share(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else math.nan


def state_changes(rows: Sequence[dict[str, object]]) -> list[str]:
    """State changes of the event log (notices left out), as "target OLD -> NEW (reason)"."""
    return [
        f"{r['target']} {r['old']} -> {r['new']} ({r['reason']})"
        for r in rows
        if "notice" not in r and r.get("old") != r.get("new")
    ]


def run_step(
    carrier: Uas, name: str, multiple: float, rate: int, seconds: float, workdir: Path
) -> OverloadStep:
    calls = max(1, round(rate * seconds))
    admin = new_router(carrier, workdir / "router")
    router = admin.router
    watch = StateWatch(admin)
    try:
        rpid = router_pid(router)
        watch.start()
        drops0, wait0 = udp_receive_drops(), cpu_wait(rpid)
        cpu0 = (process_cpu(rpid), process_cpu(carrier.pid), reaped_children_cpu())
        busy0 = machine_cpu()
        t0 = time.monotonic()
        # A call's slowest legitimate life: an INVITE and a BYE each waiting up to
        # -recv_timeout; after that SIPp stops by itself, and is killed 3 s later.
        timeout = seconds + HOLD_MS / 1000 + 2 * RECV_TIMEOUT_MS / 1000 + 3
        caller = start_uac(
            "uac_overload",
            router.address,
            calls=calls,
            rate=rate,
            # Open calls allowed: as proxy_rate, so SIPp never waits for the router.
            limit=min(calls, max(1000, rate * 8), 19_000),
            pause_ms=HOLD_MS,
            timeout=timeout,
            recv_timeout_ms=RECV_TIMEOUT_MS,
            extra_args=SIPP_BUFFERS,
            tmp_root=workdir / "caller",
        )
        result = caller.wait(read_messages=False)
        wall = time.monotonic() - t0
        # The caller is reaped: its CPU is in RUSAGE_CHILDREN, before any other child.
        cpu1 = (process_cpu(rpid), process_cpu(carrier.pid), reaped_children_cpu())
        busy1 = machine_cpu()
        wait1, drops1 = cpu_wait(rpid), udp_receive_drops()
        rss, peak = status_mb(rpid, "VmRSS"), status_mb(rpid, "VmHWM")
        watch.stop()
        counters = admin.get("/api/counters")
        changes = state_changes(router.events())
        log = read_from(router.log_path, 0)
    finally:
        if watch.is_alive():
            watch.stop()
        end = stop_router(router)

    router_cpu, carrier_cpu, caller_cpu = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    seen = dict(sorted(watch.seen.items()))
    changed = bool(changes) or any(not k.endswith(" UP") for k in seen)
    c = classify(result.workdir / "shortmessages.log")
    return OverloadStep(
        name=name,
        multiple=multiple,
        asked_cps=rate,
        seconds=seconds,
        calls_asked=calls,
        offered=c.offered,
        offered_cps=c.offered_cps,
        admitted=c.admitted,
        answered=c.answered,
        failed=c.failed,
        shed=c.shed,
        shed_sipp=result.stat("shed(C)"),
        goodput_cps=c.answered / c.offer_span_s if c.offer_span_s > 0 else math.nan,
        failed_pct_admitted=share(c.failed, c.admitted),
        shed_pct_offered=share(c.shed, c.offered),
        pdd_p50_ms=percentile(c.pdd_ms, 50),
        pdd_p99_ms=percentile(c.pdd_ms, 99),
        admitted_without_18x=c.admitted_without_18x,
        finals=c.finals,
        wall_s=wall,
        router_rss_mb=rss,
        router_peak_mb=peak,
        router_cpu_pct=100 * router_cpu / wall,
        router_wait_pct=100 * (wait1 - wait0) / wall,
        caller_cpu_pct=100 * caller_cpu / wall,
        carrier_cpu_pct=100 * carrier_cpu / wall,
        machine_cpu_pct=100 * (busy1 - busy0) / wall,
        udp_receive_drops=drops1 - drops0,
        carrier_changed=changed,
        states_seen=seen,
        state_changes=changes,
        admin_polls=watch.polls,
        admin_unanswered=watch.unanswered,
        router_counters=counters,
        sipp_returncode=result.returncode,
        sipp_killed=result.killed,
        sipp_failed=result.failed,
        sipp_reasons=failure_reasons(result),
        caller_retransmissions=result.stat("Retransmissions(C)"),
        router_log=Problems.of(router_log_problems(log)),
        caller_errors=Problems.of(sipp_events(result.errors)),
        router_end=end,
    )


# ----------------------------------------------------------------------- capacity


class CapacityRamp(Bench):
    """proxy_rate's ramp, on a router configured as this bench's steps are."""

    def new_router(self, carrier: Uas, name: str) -> RouterProcess:
        return new_router(carrier, self.workdir / name / "router").router


def measure_capacity(
    carrier: Uas, rates: list[int], step_seconds: float, workdir: Path
) -> tuple[int, list[Step], str]:
    args = argparse.Namespace(
        budget=len(rates) * (step_seconds + 4) + 30,
        hold_ms=HOLD_MS,
        rates=rates,
        step_seconds=step_seconds,
        sustain_seconds=0.0,
    )
    ramp = CapacityRamp(args, workdir, time.monotonic())
    print(STEP_HEADER)
    steps, reason, _ = ramp.ramp(carrier, lambda s: print(step_row(s), flush=True))
    best = 0
    for s in steps:
        if not s.passed:
            break
        best = s.rate
    return best, steps, reason


# ---------------------------------------------------------------------- reporting

TABLE_HEADER = (
    "| step | asked calls/s | offered calls/s | goodput calls/s | admitted | failed of admitted "
    "| 503 of offered | PDD p50 / p99 (ms) | router RSS / peak (MB) | router CPU | "
    "UDP drops | carrier changed state |"
)


def changed_text(s: OverloadStep) -> str:
    """ "no", or "yes" with how many times each state was entered (or was seen polled)."""
    if not s.carrier_changed:
        return "no"
    entered = Counter(change.split(" -> ")[1].split(" ")[0] for change in s.state_changes)
    if not entered:
        entered = Counter({k.split(" ")[-1]: v for k, v in s.states_seen.items()})
    return "yes: " + ", ".join(f"{state} x{n}" for state, n in sorted(entered.items()))


def table_row(s: OverloadStep) -> str:
    return (
        f"| {s.name} | {s.asked_cps} | {fmt(s.offered_cps, 0)} | {fmt(s.goodput_cps, 0)} | "
        f"{s.admitted} | {fmt(s.failed_pct_admitted, 1)} % | {fmt(s.shed_pct_offered, 1)} % | "
        f"{fmt(s.pdd_p50_ms, 1)} / {fmt(s.pdd_p99_ms, 1)} | "
        f"{fmt(s.router_rss_mb, 0)} / {fmt(s.router_peak_mb, 0)} | "
        f"{s.router_cpu_pct:.0f} % | {s.udp_receive_drops} | {changed_text(s)} |"
    )


def show_step(s: OverloadStep) -> None:
    print(f"\n{s.name}: {s.asked_cps} calls/s asked for {s.seconds:g} s ({s.calls_asked} calls)")
    lines = [
        f"offered {fmt(s.offered_cps, 0)} calls/s ({s.offered} calls)"
        + ("" if s.offered_enough else f": SIPp could not offer the {s.asked_cps} asked"),
        f"goodput {fmt(s.goodput_cps, 0)} calls/s answered ({s.answered} calls)",
        f"admitted {s.admitted}, failed {s.failed} ({fmt(s.failed_pct_admitted, 2)} % of "
        f"admitted); shed with 503 {s.shed} ({fmt(s.shed_pct_offered, 2)} % of offered; "
        f"SIPp's shed counter {s.shed_sipp})",
        "first final status per call: " + ", ".join(f"{k} {v}" for k, v in s.finals.items()),
        f"PDD of admitted calls p50 {fmt(s.pdd_p50_ms, 1)} ms, p99 {fmt(s.pdd_p99_ms, 1)} ms"
        f" ({s.admitted_without_18x} admitted calls got no 18x)",
        f"router RSS {fmt(s.router_rss_mb, 0)} MB at the end, peak {fmt(s.router_peak_mb, 0)} MB;"
        f" CPU% of one core: router {s.router_cpu_pct:.0f} (waiting for a core "
        f"{fmt(s.router_wait_pct, 0)}), caller {s.caller_cpu_pct:.0f}, carrier "
        f"{s.carrier_cpu_pct:.0f}, machine {s.machine_cpu_pct:.0f}",
        f"kernel UDP receive-buffer drops {s.udp_receive_drops}; caller retransmissions "
        f"{s.caller_retransmissions}",
        "carrier state: "
        + ("changed" if s.carrier_changed else "unchanged")
        + f"; /api/targets polls {s.admin_polls} ({s.admin_unanswered} unanswered): "
        + ", ".join(f"{k} x{v}" for k, v in s.states_seen.items()),
    ]
    lines += [f"    {change}" for change in s.state_changes[:SHOWN_CHANGES]]
    if len(s.state_changes) > SHOWN_CHANGES:
        lines.append(f"    ... {len(s.state_changes) - SHOWN_CHANGES} more (--json has all)")
    if s.sipp_failed or s.sipp_killed:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.sipp_reasons.items()))
        killed = "; killed at its deadline" if s.sipp_killed else ""
        lines.append(f"SIPp FailedCall {s.sipp_failed} ({reasons}){killed}")
    counters = s.router_counters.get("counters") if s.router_counters else None
    if isinstance(counters, dict):
        notable = {k: v for k, v in counters.items() if v and not k.startswith("open")}
        lines.append("router counters (/api/counters): " + json.dumps(notable))
    else:
        lines.append("router counters: /api/counters did not answer")
    for title, problems in (("router log", s.router_log), ("caller SIPp errors", s.caller_errors)):
        if problems.count:
            lines.append(f"{title} ({problems.count}):")
            lines.extend("    " + kind for kind in problems.kinds)
    if s.router_end is not None:
        lines.extend(router_end_lines(s.router_end))
    for line in lines:
        print("  " + line, flush=True)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--capacity", type=int, help="calls/s taken as 1x (default: measured)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each step")
    parser.add_argument(
        "--steps",
        type=lambda s: [float(x) for x in s.split(",") if x.strip()],
        default=[1.0, 2.0, 5.0],
        help="multiples of the capacity, e.g. 1,2,5 (empty: the memory run only)",
    )
    parser.add_argument(
        "--plain-config",
        action="store_true",
        help="no source_limits section (to run a version from before it, via PYTHONPATH)",
    )
    parser.add_argument(
        "--memory-rate", type=int, default=1000, help="calls/s of the memory run (0: none)"
    )
    parser.add_argument("--ramp-seconds", type=float, default=3.0, help="capacity ramp step")
    parser.add_argument("--quick", action="store_true", help="smoke run: short steps")
    parser.add_argument("--workdir", type=Path, help="traces and logs (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.rates = rate_ladder(3000)
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
        args.ramp_seconds = min(args.ramp_seconds, 1.5)
        args.rates = [100, 200, 300]
        args.memory_rate = min(args.memory_rate, 200)
    if args.seconds <= 0 or any(m <= 0 for m in args.steps):
        parser.error("--seconds and every --steps multiple must be positive")
    if not args.steps and not args.memory_rate:
        parser.error("nothing to run: no --steps and no --memory-rate")
    if not args.steps and args.capacity is None:
        args.capacity = args.memory_rate  # the memory run alone needs no ramp
    if args.capacity is not None and args.capacity < 1:
        parser.error("--capacity must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    global PLAIN_CONFIG
    PLAIN_CONFIG = args.plain_config
    started = time.monotonic()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trunkguard-overload-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    print(f"trunkguard overload benchmark: SIPp {sipp_version()}, UDP on 127.0.0.1")
    print(
        f"This machine has {cores} cores, shared by the SIPp caller, the SIPp carrier and the "
        f"router. CPU% is of one core ({cores * 100}% = all cores busy)."
    )
    others = background_load()
    print(f"before the start, other processes kept {others:.0f}% of a core busy")
    if others > OTHERS_NOTABLE:
        print("WARNING: the machine is busy with other work: every figure below is lower")
    print(f"traces and logs: {workdir}", flush=True)
    report: dict[str, object] = {
        "cores": cores,
        "background_load_pct": others,
        "workdir": str(workdir),
        "hold_ms": HOLD_MS,
        "seconds": args.seconds,
    }
    budget = (len(args.steps) + 1) * (args.seconds + 60) + 200
    steps: list[OverloadStep] = []
    memory: OverloadStep | None = None
    with start_uas(
        "uas_answer", lifetime=budget, extra_args=SIPP_BUFFERS, tmp_root=workdir / "carrier"
    ) as carrier:
        capacity = args.capacity
        if capacity is None:
            print(f"\nCapacity: proxy_rate's ramp, {args.ramp_seconds:g} s steps, one router")
            capacity, ramp, reason = measure_capacity(
                carrier, args.rates, args.ramp_seconds, workdir / "capacity"
            )
            print(f"{reason}\ncapacity: {capacity} calls/s (highest step with < 0.1 % failed)")
            report["capacity_ramp"] = [asdict(s) for s in ramp]
            report["capacity_ramp_stop"] = reason
            if not capacity:
                print("no ramp step passed: nothing to overload")
                return 1
        report["capacity"] = capacity
        report["capacity_measured"] = args.capacity is None
        print(
            f"\nOverload steps: {args.seconds:g} s each on a fresh router, hold {HOLD_MS} ms;"
            " a 503 to the INVITE counts as shed, not failed",
            flush=True,
        )
        for multiple in args.steps:
            name = f"{multiple:g}x"
            rate = max(1, round(multiple * capacity))
            step = run_step(carrier, name, multiple, rate, args.seconds, workdir / name)
            steps.append(step)
            show_step(step)
        if args.memory_rate:
            print(f"\nMemory: {args.memory_rate} calls/s offered for {args.seconds:g} s")
            memory = run_step(
                carrier,
                "memory",
                args.memory_rate / capacity,
                args.memory_rate,
                args.seconds,
                workdir / "memory",
            )
            show_step(memory)

    elapsed = time.monotonic() - started
    print(f"\ncapacity {capacity} calls/s; {args.seconds:g} s per step; {cores} cores shared")
    print(TABLE_HEADER)
    print("|---" * (TABLE_HEADER.count("|") - 1) + "|")
    for s in steps:
        print(table_row(s))
    if memory is not None:
        print(
            f"memory: router RSS {fmt(memory.router_rss_mb, 0)} MB (peak "
            f"{fmt(memory.router_peak_mb, 0)} MB) after {args.seconds:g} s offered at "
            f"{memory.asked_cps} calls/s (SIPp offered {fmt(memory.offered_cps, 0)})"
        )
    print(f"benchmark took {elapsed:.0f} s", flush=True)
    if args.json:
        report.update(
            steps=[asdict(s) for s in steps],
            memory=asdict(memory) if memory else None,
            elapsed_s=elapsed,
        )
        args.json.write_text(json.dumps(without_nan(report), indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
