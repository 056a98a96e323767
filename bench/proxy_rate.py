"""Throughput and latency of trunkguard under SIPp load, on loopback UDP.

Three parts, all against one SIPp carrier (tests/e2e/scenarios/uas_answer.xml):

* post-dial delay (PDD) added by the router: calls at a modest rate, caller -> carrier
  directly, then caller -> router -> carrier. Per call, PDD is the time from the INVITE sent
  to the first 18x received, from the caller's ``-trace_shortmsg`` timestamps (microseconds),
  matched by Call-ID;
* a ramp: steps of rising rate, each ``rate * step_seconds`` calls, through one router,
  until a step has 0.1 % failed calls or more, or does not complete;
* a sustained check: the best ramp rate held for ``sustain_seconds`` on a fresh router,
  lower rates after a failure, as long as the time budget allows.

Why both: the router keeps a small record of each finished transaction, and each dialog,
for up to 64*T1 (32 s) after it ends, so its memory and per-call cost keep growing for 32 s
at a constant rate. Short steps do not reach that steady state; the sustained check does.

SIPp (caller and carrier) and the router share the machine's cores, so the rate found is a
lower bound for the router alone; CPU use of each is reported beside it.

Run: ``.venv/bin/python bench/proxy_rate.py [--quick] [--max-rate N] [--step-seconds S]
[--sustain-seconds S] [--json PATH]`` (``make bench`` runs it without options).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The SIPp harness and the router wrapper are the end-to-end tests' helpers: reuse them.
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from router import RouterProcess  # noqa: E402
from sipp import (  # noqa: E402
    ShortMessage,
    UacResult,
    Uas,
    run_uac,
    sipp_binary,
    start_uas,
)

FAILED_LIMIT = 0.001  # a step passes with fewer than 0.1 % failed calls
# SIPp must offer at least this share of the rate asked for, or the step measured SIPp.
OFFERED_MIN = 0.9
# SIPp's default 64 KB socket buffers drop bursts on its side; those losses would be
# charged to the router. The kernel caps this at net.core.rmem_max / wmem_max.
SIPP_BUFFERS = ["-buff_size", str(4 * 1024 * 1024)]
RECV_TIMEOUT_MS = 5000  # a call waiting longer than this for a message fails
ROUTER_EXTRA: dict[str, object] = {"log": {"level": "warning"}}
WARMUP_CALLS = 20
# A router holding a large heap takes seconds to exit; wait this long after SIGTERM.
ROUTER_EXIT_WAIT = 30.0
# /proc/stat counts busy time by ticks, per-process times are exact: differences below
# this (percent of a core) are measuring noise, not a competing load.
OTHERS_NOTABLE = 25.0
_TICK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------ measuring


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process, from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    # Fields after the command name (which may hold spaces) start at field 3.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_wait(pid: int) -> float:
    """Seconds the process's main thread was runnable but waiting for a core
    (/proc/PID/schedstat); the router runs on one thread."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return math.nan


def rss_mb(pid: int) -> float:
    """Resident memory of a live process (VmRSS), in MB."""
    return status_mb(pid, "VmRSS")


def status_mb(pid: int, name: str) -> float:
    """A memory line of /proc/PID/status (VmRSS, VmHWM: the peak of VmRSS...), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reaped_children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> float:
    """CPU seconds all cores have been busy since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is inside user and nice.
    return (sum(values[:8]) - values[3] - values[4]) / _TICK


def background_load(seconds: float = 1.0) -> float:
    """Percent of a core the machine is busy while this script only sleeps."""
    before = machine_cpu()
    time.sleep(seconds)
    return 100 * (machine_cpu() - before) / seconds


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped because a UDP receive buffer was full (all sockets)."""
    with open("/proc/net/snmp", encoding="ascii") as snmp:
        rows = [line.split() for line in snmp if line.startswith("Udp:")]
    header, values = rows[0], rows[1]
    return int(values[header.index("RcvbufErrors")])


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def post_dial_delays(messages: Sequence[ShortMessage]) -> tuple[list[float], int]:
    """Ascending PDDs in ms (first INVITE sent -> first 18x received, per Call-ID) and the
    number of calls that got no 18x."""
    sent: dict[str, float] = {}
    ringing: dict[str, float] = {}
    for m in messages:
        if m.cseq_method != "INVITE":
            continue
        status = m.status
        if m.direction == "S" and m.method == "INVITE":
            sent.setdefault(m.call_id, m.time)
        elif m.direction == "R" and status is not None and 180 <= status <= 189:
            ringing.setdefault(m.call_id, m.time)
    delays = sorted((ringing[c] - t) * 1000 for c, t in sent.items() if c in ringing)
    return delays, len(sent) - len(delays)


def offered_rate(messages: Sequence[ShortMessage]) -> float:
    """Calls per second SIPp actually started: first INVITE of each call, first to last."""
    starts: dict[str, float] = {}
    for m in messages:
        if m.direction == "S" and m.method == "INVITE":
            starts.setdefault(m.call_id, m.time)
    if len(starts) < 2:
        return math.nan
    span = max(starts.values()) - min(starts.values())
    return (len(starts) - 1) / span if span > 0 else math.nan


def duplicate_responses(messages: Sequence[ShortMessage]) -> int:
    """Responses the caller received more than once (a retransmitted 200, typically)."""
    seen = Counter(
        (m.call_id, m.cseq_number, m.cseq_method, m.first_line)
        for m in messages
        if m.direction == "R" and not m.is_request
    )
    return sum(n - 1 for n in seen.values())


def failure_reasons(result: UacResult) -> dict[str, int]:
    """SIPp's non-zero cumulative Failed*(C) counters, without the FailedCall total."""
    out: dict[str, int] = {}
    for name in result.stats:
        if name.startswith("Failed") and name.endswith("(C)") and name != "FailedCall(C)":
            value = result.stat(name)
            if value:
                out[name.removesuffix("(C)")] = value
    return out


def read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_last_stats(path: Path) -> dict[str, str]:
    """Latest row of a SIPp ``-trace_stat`` file, by column name."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line]
    except FileNotFoundError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def carrier_counters(carrier: Uas) -> dict[str, int]:
    """Cumulative counters of the carrier's latest statistics row."""
    stats = read_last_stats(carrier.workdir / "stats.csv")

    def get(name: str) -> int:
        value = stats.get(name, "")
        return int(value) if value.isdigit() else 0

    return {
        "retransmissions": get("Retransmissions(C)"),
        "watchdog": get("WatchdogMajor(C)") + get("WatchdogMinor(C)"),
    }


def summarize(lines: Sequence[str], limit: int = 4) -> list[str]:
    """The most frequent kinds of line, with their count; Call-IDs and ports masked."""
    kinds: Counter[str] = Counter()
    for line in lines:
        text = re.sub(r"[\w.\-]+@[\w.\-]+", "<id>", line.strip())
        text = re.sub(r":\d{2,5}\b", ":<port>", text)
        if text:
            kinds[text[:160]] += 1
    return [f"{n} x {text}" for text, n in kinds.most_common(limit)]


def router_log_problems(text: str) -> list[str]:
    """Warnings, errors and tracebacks from the router's log, without their timestamps."""
    lines = []
    for line in text.splitlines():
        if " WARNING " in line or " ERROR " in line or " CRITICAL " in line:
            lines.append(line.split(" ", 2)[-1])
        elif line.startswith(("Traceback", "  File")) or re.match(r"^\w+(Error|Exception)", line):
            lines.append(line)
    return lines


_SIPP_EVENT = re.compile(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ")


def sipp_events(text: str) -> list[str]:
    """First line of each event of a ``-trace_err`` log. An event may quote a whole
    message over many lines, and the next event may start on the same line as its end."""
    return [part.split("\n", 1)[0] for part in _SIPP_EVENT.split(text)[1:]]


# -------------------------------------------------------------------------- results


@dataclass
class Latency:
    path: str
    calls: int
    successful: int
    failed: int
    with_18x: int
    without_18x: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class Problems:
    """How many lines a log had, and its most frequent kinds."""

    count: int
    kinds: list[str]

    @classmethod
    def of(cls, lines: Sequence[str]) -> Problems:
        return cls(len(lines), summarize(lines))


@dataclass
class RouterEnd:
    """How a router stopped: its counters, and how long SIGTERM took."""

    counters: dict[str, int]
    exit_status: int | None
    exit_seconds: float
    killed: bool
    waited: float = ROUTER_EXIT_WAIT


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed_sipp: int  # SIPp's FailedCall
    unfinished: int  # created, neither successful nor failed when SIPp stopped
    not_created: int  # never started (SIPp ran out of time)
    offered_cps: float
    wall_s: float
    pdd_p50_ms: float
    pdd_p99_ms: float
    router_cpu_pct: float  # of one core
    router_wait_pct: float  # runnable but without a core, of the step's time
    caller_cpu_pct: float
    carrier_cpu_pct: float
    machine_cpu_pct: float  # every process, of one core
    others_cpu_pct: float  # machine less router, SIPp and this script
    router_rss_mb: float  # at the end of the step
    sipp_returncode: int
    sipp_killed: bool
    reasons: dict[str, int] = field(default_factory=dict)
    caller_retransmissions: int = 0
    caller_duplicate_responses: int = 0
    carrier_retransmissions: int = 0
    sipp_watchdog: int = 0
    udp_receive_drops: int = 0
    router_log: Problems = field(default_factory=lambda: Problems(0, []))
    caller_errors: Problems = field(default_factory=lambda: Problems(0, []))
    carrier_errors: Problems = field(default_factory=lambda: Problems(0, []))
    router_end: RouterEnd | None = None  # when the router stopped after this step

    @property
    def failed(self) -> int:
        return self.calls - self.successful

    @property
    def failed_pct(self) -> float:
        return 100.0 * self.failed / self.calls

    @property
    def sipp_cpu_pct(self) -> float:
        return self.caller_cpu_pct + self.carrier_cpu_pct

    @property
    def completed(self) -> bool:
        """SIPp ended every call by itself, within its bounds."""
        return not self.sipp_killed and self.unfinished == 0 and self.not_created == 0

    @property
    def offered_enough(self) -> bool:
        return not self.offered_cps < OFFERED_MIN * self.rate

    @property
    def passed(self) -> bool:
        return self.completed and self.offered_enough and self.failed < FAILED_LIMIT * self.calls

    def verdict(self) -> str:
        why = []
        if self.failed >= FAILED_LIMIT * self.calls:
            why.append(f"{self.failed_pct:.2f}% failed")
        if not self.completed:
            why.append("calls did not complete")
        if not self.offered_enough:
            why.append("SIPp could not offer the rate")
        return ", ".join(why) or "passed"


# --------------------------------------------------------------------------- phases


def router_pid(router: RouterProcess) -> int:
    proc = router._proc
    if proc is None:
        raise RuntimeError("router is not running")
    return proc.pid


def stop_router(router: RouterProcess, wait: float = ROUTER_EXIT_WAIT) -> RouterEnd:
    """SIGTERM and wait (longer than RouterProcess.stop does: a big heap exits slowly)."""
    proc = router._proc
    if proc is None:
        return RouterEnd(router.counters, None, 0.0, False)
    started = time.monotonic()
    killed = False
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            killed = True
            proc.kill()
            proc.wait()
    took = time.monotonic() - started
    # The process has exited: RouterProcess.stop() only reads the counters it wrote.
    counters = router.stop()
    return RouterEnd(counters, proc.returncode, took, killed, wait)


OnStep = Callable[[Step], None]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, started: float) -> None:
        self.args = args
        self.workdir = workdir
        self.deadline: float = started + args.budget
        self.hold_ms: int = args.hold_ms

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def exit_wait(self) -> float:
        """How long a router may take to exit, within the budget."""
        return max(5.0, min(ROUTER_EXIT_WAIT, self.remaining()))

    def cost(self, seconds: float) -> float:
        """Wall-clock seconds a passing run of ``seconds`` of calls takes, about. A failing
        one takes longer, but its SIPp timeout is cut to the time left."""
        return seconds + self.hold_ms / 1000 + 3

    def sustain_cost(self) -> float:
        """One sustained try, with the router's exit (a large heap takes seconds)."""
        seconds = self.args.sustain_seconds
        return self.cost(seconds) + min(10.0, seconds) if seconds else 0.0

    def run_calls(self, target: tuple[str, int], calls: int, rate: int, tag: str) -> UacResult:
        """One bounded SIPp caller run of ``calls`` at ``rate`` calls/s."""
        duration = calls / rate + self.hold_ms / 1000
        # Open calls allowed (-l): 8 s of calls, more than a call's slowest legitimate life
        # (-recv_timeout plus hold), so SIPp never slows down to wait for the router. Above
        # about 20000 SIPp warns that media sockets could run out of file descriptors.
        limit = min(calls, max(1000, rate * 8), 19_000)
        # Room for the last calls' slowest legitimate end (-recv_timeout), then SIPp stops.
        timeout = duration + RECV_TIMEOUT_MS / 1000 + 4
        timeout = max(2.0, min(timeout, self.remaining() - 3))
        return run_uac(
            "uac_call",
            target,
            calls=calls,
            rate=rate,
            limit=limit,
            pause_ms=self.hold_ms,
            timeout=timeout,
            recv_timeout_ms=RECV_TIMEOUT_MS,
            extra_args=SIPP_BUFFERS,
            tmp_root=self.workdir / tag,
        )

    def new_router(self, carrier: Uas, name: str) -> RouterProcess:
        return RouterProcess(
            self.workdir / name / "router", [("carrier", carrier.port)], extra=ROUTER_EXTRA
        ).start()

    # -- post-dial delay ------------------------------------------------------------------

    def latency(self, path: str, target: tuple[str, int], tag: str) -> Latency:
        # The first calls pay for cold caches and lazy set-up on every side: not measured.
        self.run_calls(target, min(WARMUP_CALLS, self.args.pdd_calls), self.args.pdd_rate, tag)
        result = self.run_calls(target, self.args.pdd_calls, self.args.pdd_rate, tag)
        delays, without = post_dial_delays(result.messages)
        return Latency(
            path=path,
            calls=self.args.pdd_calls,
            successful=result.successful,
            failed=self.args.pdd_calls - result.successful,
            with_18x=len(delays),
            without_18x=without,
            p50_ms=percentile(delays, 50),
            p95_ms=percentile(delays, 95),
            p99_ms=percentile(delays, 99),
            max_ms=delays[-1] if delays else math.nan,
        )

    def pdd_phase(self, carrier: Uas) -> tuple[Latency, Latency, RouterEnd]:
        direct = self.latency("direct", carrier.address, "pdd-direct")
        router = self.new_router(carrier, "pdd")
        try:
            routed = self.latency("through router", router.address, "pdd-router")
        finally:
            end = stop_router(router, self.exit_wait())
        return direct, routed, end

    # -- load -----------------------------------------------------------------------------

    def measure(
        self, router: RouterProcess, carrier: Uas, rate: int, seconds: float, tag: str
    ) -> Step:
        """``rate * seconds`` calls through a running router, with everyone's CPU use."""
        calls = max(1, round(rate * seconds))
        rpid = router_pid(router)
        carrier_errors = carrier.workdir / "errors.log"
        errors_offset = size_of(carrier_errors)
        log_offset = size_of(router.log_path)
        carrier0 = carrier_counters(carrier)
        drops0 = udp_receive_drops()
        wait0 = cpu_wait(rpid)
        cpu0 = (process_cpu(rpid), process_cpu(carrier.pid), reaped_children_cpu())
        busy0, self0 = machine_cpu(), own_cpu()
        t0 = time.monotonic()
        # The caller is reaped inside: its CPU lands in this process's RUSAGE_CHILDREN.
        result = self.run_calls(router.address, calls, rate, tag)
        wall = time.monotonic() - t0
        cpu1 = (process_cpu(rpid), process_cpu(carrier.pid), reaped_children_cpu())
        busy1, self1 = machine_cpu(), own_cpu()
        wait1 = cpu_wait(rpid)
        drops1 = udp_receive_drops()
        rss = rss_mb(rpid)
        # The carrier writes its statistics once a second; let the last row land.
        time.sleep(1.2)
        carrier1 = carrier_counters(carrier)

        router_cpu, carrier_cpu, caller_cpu = (b - a for a, b in zip(cpu0, cpu1, strict=True))
        all_cpu = busy1 - busy0
        others = all_cpu - router_cpu - carrier_cpu - caller_cpu - (self1 - self0)
        delays, _ = post_dial_delays(result.messages)
        return Step(
            rate=rate,
            calls=calls,
            successful=result.successful,
            failed_sipp=result.failed,
            unfinished=max(0, result.created - result.successful - result.failed),
            not_created=max(0, calls - result.created),
            offered_cps=offered_rate(result.messages),
            wall_s=wall,
            pdd_p50_ms=percentile(delays, 50),
            pdd_p99_ms=percentile(delays, 99),
            router_cpu_pct=100 * router_cpu / wall,
            router_wait_pct=100 * (wait1 - wait0) / wall,
            caller_cpu_pct=100 * caller_cpu / wall,
            carrier_cpu_pct=100 * carrier_cpu / wall,
            machine_cpu_pct=100 * all_cpu / wall,
            others_cpu_pct=100 * others / wall,
            router_rss_mb=rss,
            sipp_returncode=result.returncode,
            sipp_killed=result.killed,
            reasons=failure_reasons(result),
            caller_retransmissions=result.stat("Retransmissions(C)"),
            caller_duplicate_responses=duplicate_responses(result.messages),
            carrier_retransmissions=carrier1["retransmissions"] - carrier0["retransmissions"],
            sipp_watchdog=result.stat("WatchdogMajor(C)")
            + result.stat("WatchdogMinor(C)")
            + carrier1["watchdog"]
            - carrier0["watchdog"],
            udp_receive_drops=drops1 - drops0,
            router_log=Problems.of(router_log_problems(read_from(router.log_path, log_offset))),
            caller_errors=Problems.of(sipp_events(result.errors)),
            carrier_errors=Problems.of(sipp_events(read_from(carrier_errors, errors_offset))),
        )

    def ramp(self, carrier: Uas, on_step: OnStep) -> tuple[list[Step], str, RouterEnd]:
        """Rising rates through one router until a step fails or time runs out.

        One router for the whole ramp: the state it keeps for 32 s after each call builds
        up as in service. A fresh router per short step would hold only that step's calls
        and look cheaper than it is.
        """
        steps: list[Step] = []
        reason = "every step passed (raise --max-rate to go further)"
        router = self.new_router(carrier, "ramp")
        try:
            for rate in self.args.rates:
                # Keep enough time for the sustained check after the ramp.
                if self.remaining() < self.cost(self.args.step_seconds) + self.sustain_cost():
                    reason = f"time budget reached before {rate} calls/s"
                    break
                step = self.measure(router, carrier, rate, self.args.step_seconds, f"ramp-{rate}")
                steps.append(step)
                on_step(step)
                if not step.passed:
                    reason = f"stopped after {rate} calls/s: {step.verdict()}"
                    break
        finally:
            end = stop_router(router, self.exit_wait())
        return steps, reason, end

    def sustain(self, carrier: Uas, candidates: list[int], on_step: OnStep) -> list[Step]:
        """Hold a rate for sustain_seconds on a fresh router, from the best ramp rate down,
        until one passes or time runs out."""
        tried: list[Step] = []
        seconds = self.args.sustain_seconds
        while candidates and self.remaining() >= self.sustain_cost():
            rate = candidates[0]
            router = self.new_router(carrier, f"sustain-{rate}")
            try:
                step = self.measure(router, carrier, rate, seconds, f"sustain-{rate}")
            finally:
                end = stop_router(router, self.exit_wait())
            step.router_end = end
            tried.append(step)
            on_step(step)
            if step.passed:
                break
            # Failed: next try at most 80 % of this rate, so few tries span a wide range.
            candidates = [r for r in candidates if r <= 0.8 * rate]
        return tried


# ------------------------------------------------------------------------- reporting

# Router counters worth a line when non-zero. open:dialogs is left out: the router keeps
# ended dialogs for 64*T1 to absorb retransmitted BYEs, so it is never 0 right after load.
NOTABLE_COUNTERS = frozenset(
    {
        "retransmissions_in",
        "stray_responses",
        "server_txn_failed",
        "calls_failed",
        "failovers",
        "parse_errors",
        "udp_errors_unattributed",
        "transport_errors",
        "acks_absorbed",
        "stray_2xx",
    }
)
NOTABLE_PREFIXES = (
    "open:calls",
    "open:branches",
    "attempts:timeout",
    "attempts:unreachable",
    "rejected_",
)

STEP_HEADER = (
    f"  {'rate':>5} {'calls':>6} {'failed':>6} {'failed%':>8} {'offered':>7} "
    f"{'PDD p50':>7} {'PDD p99':>8} {'router CPU%':>11} {'wait%':>5} {'SIPp CPU%':>9} "
    f"{'machine CPU%':>12} {'router MB':>9}"
)


def show_step(step: Step) -> None:
    print(step_row(step), flush=True)
    for line in step_details(step):
        print("        " + line, flush=True)


def rate_ladder(max_rate: int) -> list[int]:
    """100..1000 by 100, then by 200 to 2000, then by 500."""
    rates, rate = [], 100
    while rate <= max_rate:
        rates.append(rate)
        rate += 100 if rate < 1000 else 200 if rate < 2000 else 500
    return rates


def sipp_version() -> str:
    try:
        out = subprocess.run(
            [sipp_binary(), "-v"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    found = re.search(r"SIPp v(\d+(?:\.\d+)+)", out)
    return found.group(1) if found else "?"


def fmt(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def print_latency(direct: Latency, routed: Latency, rate: int, hold_ms: int) -> None:
    print(
        f"\nPost-dial delay: INVITE sent -> first 18x received at the caller, "
        f"{direct.calls} calls at {rate} calls/s, hold {hold_ms} ms (ms)"
    )
    print(f"  {'path':<15} {'ok':>5} {'fail':>5} {'no18x':>5} {'p50':>7} {'p95':>7} {'p99':>7}")
    for row in (direct, routed):
        print(
            f"  {row.path:<15} {row.successful:>5} {row.failed:>5} {row.without_18x:>5} "
            f"{fmt(row.p50_ms):>7} {fmt(row.p95_ms):>7} {fmt(row.p99_ms):>7}"
        )
    print(
        f"  added by the router: p50 {fmt(routed.p50_ms - direct.p50_ms)} ms, "
        f"p95 {fmt(routed.p95_ms - direct.p95_ms)} ms",
        flush=True,
    )


def step_row(s: Step) -> str:
    return (
        f"  {s.rate:>5} {s.calls:>6} {s.failed:>6} {s.failed_pct:>8.2f} {s.offered_cps:>7.0f} "
        f"{fmt(s.pdd_p50_ms, 1):>7} {fmt(s.pdd_p99_ms, 1):>8} {s.router_cpu_pct:>11.0f} "
        f"{fmt(s.router_wait_pct, 0):>5} {s.sipp_cpu_pct:>9.0f} {s.machine_cpu_pct:>12.0f} "
        f"{s.router_rss_mb:>9.0f}"
    )


def notable_counters(counters: dict[str, int]) -> dict[str, int]:
    return {
        k: v
        for k, v in counters.items()
        if v and (k in NOTABLE_COUNTERS or k.startswith(NOTABLE_PREFIXES))
    }


def router_end_lines(end: RouterEnd) -> list[str]:
    out = []
    if end.killed and end.waited < ROUTER_EXIT_WAIT:
        out.append(f"router still exiting {end.waited:.0f} s after SIGTERM: killed (time budget)")
    elif end.killed:
        out.append(f"router did not exit within {end.waited:.0f} s of SIGTERM: killed")
    elif end.exit_seconds > 2:
        out.append(f"router took {end.exit_seconds:.1f} s to exit after SIGTERM")
    if end.exit_status not in (0, None) and not end.killed:
        out.append(f"router exit status {end.exit_status}")
    notable = notable_counters(end.counters)
    if notable:
        out.append("router counters at its stop: " + json.dumps(notable))
    return out


def step_details(s: Step) -> list[str]:
    """What went wrong in a step, or looked unusual; nothing for a clean one."""
    out = []
    if s.failed:
        parts = [f"SIPp FailedCall {s.failed_sipp}"]
        if s.unfinished:
            parts.append(f"still open at SIPp's end {s.unfinished}")
        if s.not_created:
            parts.append(f"never started {s.not_created}")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items()))
        out.append("failed calls: " + "; ".join(parts) + (f" ({reasons})" if reasons else ""))
    if s.others_cpu_pct > OTHERS_NOTABLE:
        out.append(f"other processes used {s.others_cpu_pct:.0f}% of a core meanwhile")
    if s.sipp_killed:
        out.append("SIPp caller was killed at its wall-clock deadline")
    if not s.offered_enough:
        out.append(f"SIPp offered only {s.offered_cps:.0f} of {s.rate} calls/s")
    extras = {
        "caller retransmissions": s.caller_retransmissions,
        "responses the caller got twice": s.caller_duplicate_responses,
        "carrier retransmissions": s.carrier_retransmissions,
        "SIPp watchdog alarms": s.sipp_watchdog,
        "kernel UDP receive-buffer drops": s.udp_receive_drops,
    }
    noted = [f"{k} {v}" for k, v in extras.items() if v]
    if noted:
        out.append(", ".join(noted))
    for title, problems in (
        ("router log warnings/errors", s.router_log),
        ("caller SIPp errors", s.caller_errors),
        ("carrier SIPp errors", s.carrier_errors),
    ):
        if problems.count:
            out.append(f"{title} ({problems.count}):")
            out.extend("    " + kind for kind in problems.kinds)
    if s.router_end is not None:
        out.extend(router_end_lines(s.router_end))
    return out


def without_nan(value: object) -> object:
    """``value`` with NaN floats as None, so the JSON stays standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    return value


def step_json(s: Step) -> dict[str, object]:
    return {
        **asdict(s),
        "failed": s.failed,
        "failed_pct": s.failed_pct,
        "sipp_cpu_pct": s.sipp_cpu_pct,
        "passed": s.passed,
    }


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: few calls, two rates")
    parser.add_argument("--max-rate", type=int, default=3000, help="highest ramp step, calls/s")
    parser.add_argument("--step-seconds", type=float, default=5.0, help="ramp step length")
    parser.add_argument(
        "--sustain-seconds",
        type=float,
        default=60.0,
        help="length of the sustained check (0: none); over 32 s to reach the steady state",
    )
    parser.add_argument("--hold-ms", type=int, default=100, help="call hold before the BYE")
    parser.add_argument("--pdd-calls", type=int, default=500, help="calls per PDD run")
    parser.add_argument("--pdd-rate", type=int, default=50, help="calls/s of the PDD runs")
    parser.add_argument(
        "--rates", type=lambda s: [int(r) for r in s.split(",")], help="ramp steps, e.g. 100,200"
    )
    parser.add_argument("--budget", type=float, default=290.0, help="whole run, seconds")
    parser.add_argument("--workdir", type=Path, help="traces and logs (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.pdd_calls = min(args.pdd_calls, 50)
        args.rates = args.rates or [50, 100]
        args.step_seconds = min(args.step_seconds, 2.0)
        args.sustain_seconds = min(args.sustain_seconds, 3.0)
        args.budget = min(args.budget, 28.0)
    if args.rates is None:
        args.rates = rate_ladder(args.max_rate)
    args.rates = sorted(r for r in args.rates if 0 < r <= args.max_rate)
    if not args.rates or args.pdd_calls < 1 or args.pdd_rate < 1 or args.step_seconds <= 0:
        parser.error("nothing to run: check --rates, --max-rate, --pdd-calls, --step-seconds")
    if args.sustain_seconds < 0:
        parser.error("--sustain-seconds must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trunkguard-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    bench = Bench(args, workdir, started)

    print(f"trunkguard proxy benchmark: SIPp {sipp_version()}, UDP on 127.0.0.1")
    print(
        f"This machine has {cores} cores (os.cpu_count()), shared by the SIPp caller, the SIPp "
        "carrier and the router:\nthe rates below are a lower bound for the router alone. "
        f"CPU% is of one core ({cores * 100}% = all cores busy); machine = every process."
    )
    others = background_load()
    if others > OTHERS_NOTABLE:
        print(f"WARNING: before the start, other processes kept {others:.0f}% of a core busy")
    print(f"traces and logs: {workdir}", flush=True)

    report: dict[str, object] = {
        "cores": cores,
        "background_load_pct": others,
        "workdir": str(workdir),
        "hold_ms": args.hold_ms,
        "step_seconds": args.step_seconds,
        "sustain_seconds": args.sustain_seconds,
    }
    # The carrier outlives every run; its own -timeout ends it if this script is stuck.
    with start_uas(
        "uas_answer",
        lifetime=args.budget + 60,
        extra_args=SIPP_BUFFERS,
        tmp_root=workdir / "carrier",
    ) as carrier:
        direct, routed, pdd_end = bench.pdd_phase(carrier)
        print_latency(direct, routed, args.pdd_rate, args.hold_ms)
        for line in router_end_lines(pdd_end):
            print("  " + line)
        report["pdd"] = {
            "rate": args.pdd_rate,
            "direct": asdict(direct),
            "through_router": asdict(routed),
            "added_p50_ms": routed.p50_ms - direct.p50_ms,
            "added_p95_ms": routed.p95_ms - direct.p95_ms,
            "router_end": asdict(pdd_end),
        }

        print(
            f"\nRamp: {args.step_seconds:g} s of calls per step (rate x {args.step_seconds:g}"
            f" calls), hold {args.hold_ms} ms, one router for the whole ramp;\n"
            "failed = calls not successful (SIPp FailedCall + calls not completed); "
            "offered = calls/s SIPp actually started;\n"
            "PDD in ms under that load; wait% = time the router was ready to run but had no "
            "core;\nrouter MB = the router's resident memory at the end of the step"
        )
        print(STEP_HEADER, flush=True)
        steps, ramp_reason, ramp_end = bench.ramp(carrier, show_step)
        print(ramp_reason)
        for line in router_end_lines(ramp_end):
            print("  " + line)

        ramp_best = 0
        for s in steps:
            if not s.passed:
                break
            ramp_best = s.rate
        sustained: list[Step] = []
        sustain_note = ""
        if args.sustain_seconds and ramp_best:
            print(
                f"\nSustained: {args.sustain_seconds:g} s of calls on a fresh router, from the "
                "best ramp rate down (80% after a failure) while time allows"
            )
            print(STEP_HEADER, flush=True)
            candidates = sorted((s.rate for s in steps if s.passed), reverse=True)
            sustained = bench.sustain(carrier, candidates, show_step)
            if not sustained:
                sustain_note = "no time left for the sustained check"
                print(sustain_note)

    held = next((s.rate for s in sustained if s.passed), 0)
    elapsed = time.monotonic() - started
    print(f"\nramp (steps of {args.step_seconds:g} s): {ramp_best} calls/s")
    if sustained:
        tried = ", ".join(f"{s.rate} calls/s {s.failed_pct:.2f}% failed" for s in sustained)
        print(f"held for {args.sustain_seconds:g} s: {tried}")
    print(f"benchmark took {elapsed:.0f} s")
    if held:
        final = held
        qualifier = f"held for {args.sustain_seconds:g} s"
    elif sustained:
        final = ramp_best
        qualifier = (
            f"in {args.step_seconds:g} s steps only: no rate tried held {args.sustain_seconds:g} s"
        )
    else:
        final = ramp_best
        qualifier = f"in {args.step_seconds:g} s steps" + (
            f"; {sustain_note}" if sustain_note else ""
        )
    print(f"highest rate with < 0.1% failed: {final} calls/s ({qualifier})", flush=True)

    if args.json:
        report.update(
            ramp=[step_json(s) for s in steps],
            ramp_stop=ramp_reason,
            ramp_router_end=asdict(ramp_end),
            ramp_best_rate=ramp_best,
            sustained=[step_json(s) for s in sustained],
            sustained_rate=held,
            highest_rate=final,
            highest_rate_qualifier=qualifier,
            elapsed_s=elapsed,
        )
        args.json.write_text(json.dumps(without_nan(report), indent=2, default=str) + "\n")
    return 0 if steps else 1


if __name__ == "__main__":
    sys.exit(main())
