"""trunkguard side by side with Kamailio's dispatcher: the same SIPp load, in one run.

Both systems under test (SUT) do the same job on loopback UDP: a stateful proxy that
record-routes each call and sends it to the first of two SIPp carriers (uas_answer), failing
over to the second on 5xx or silence. Kamailio runs bench/kamailio-dispatcher.cfg (dispatcher
set 1 from bench/kamailio-dispatcher.list); trunkguard runs with the two carriers by priority.
The SIPp caller (uac_call: INVITE, 200, ACK, hold, BYE) calls the SUT; first Kamailio, then
trunkguard, with the same carriers and the same steps. For each SUT:

* **highest rate held**: a ramp of short steps (``--step-seconds``) on one SUT instance finds
  the region (the last step with < 0.1 % failed); then that rate is held for
  ``--hold-seconds`` (60) on a fresh instance, lower rates (``--down`` of the last) after a
  failure, within the SUT's time budget. A rate SIPp could not offer fails the step: near the
  machine's limit the figure is then SIPp's, and the report says so;
* **added PDD** p50/p99 at 50 and 800 calls/s (``--pdd-rates``): per call, the time from the
  INVITE sent to the first 18x received at the caller (SIPp's ``-trace_shortmsg``), through the
  SUT less the same figure caller -> carrier directly at the same rate, measured just
  before (other load on the machine drifts in minutes); and **PDD p95** at
  1,600 calls/s (``--p95-rate``), absolute. Each rate on a fresh instance, after a warm-up;
* **CPU per 1,000 calls**: user + system seconds of every process of the SUT (Kamailio's
  workers too) from /proc, over the held run, and over the 800 calls/s PDD run (one rate for
  both SUTs).

Then the ratios trunkguard / Kamailio. Every run also counts, per call, whether its INVITE
reached a carrier (by Call-ID in the carriers' traces): the figures come from calls carried.

The SIPp caller, both carriers and the SUT share this machine's cores: on a 2-core machine the
rates are a lower bound for either SUT alone, and other load on the machine moves them (the
script prints what it saw). Kamailio runs ``--kamailio-children`` UDP workers (processes);
trunkguard is one process with one event loop.

Run: ``.venv/bin/python bench/compare.py [--quick] [--json PATH]`` (``make bench-compare``
runs it; it takes 10 to 20 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

BENCH = Path(__file__).resolve().parent
# proxy_rate's pieces, and the end-to-end tests' SIPp, Kamailio and router helpers.
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests" / "e2e")]

from kamailio import (  # noqa: E402
    KamailioError,
    _group_members,
    _term_with_parent,
    kamailio_binary,
    module_dir,
    send_options,
    status_of,
)
from proxy_rate import (  # noqa: E402
    SIPP_BUFFERS,
    Bench,
    Problems,
    Step,
    background_load,
    cpu_wait,
    duplicate_responses,
    failure_reasons,
    fmt,
    machine_cpu,
    offered_rate,
    own_cpu,
    percentile,
    post_dial_delays,
    process_cpu,
    read_from,
    reaped_children_cpu,
    router_log_problems,
    sipp_events,
    sipp_version,
    size_of,
    status_mb,
    step_details,
    step_json,
    stop_router,
    udp_receive_drops,
    without_nan,
)
from router import RouterProcess  # noqa: E402
from sipp import HOST, Address, ShortMessage, Uas, free_udp_port, start_uas  # noqa: E402

KAMAILIO_CFG = BENCH / "kamailio-dispatcher.cfg"
KAMAILIO_LIST = BENCH / "kamailio-dispatcher.list"
ROUTER_EXTRA: dict[str, object] = {"log": {"level": "warning"}}
START_TIMEOUT = 20.0
# The ramp's rates: 100, then 200 apart to 2,000, then wider.
LADDER = [100, *range(200, 2001, 200), 2400, 2800, 3200, 3600, 4000, 5000]


# ------------------------------------------------------------------------- the SUTs


class Sut(Protocol):
    """A running system under test: where to call it, and its processes."""

    kind: str
    address: Address
    log_path: Path

    def pids(self) -> list[int]: ...

    def log_problems(self, text: str) -> list[str]: ...

    def stop(self, wait: float) -> dict[str, object]: ...


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (Kamailio's shared memory) split among the
    processes that map them, so the sum over a SUT's processes counts each page once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return status_mb(pid, "VmRSS")


class TrunkguardSut:
    """``trunkguard run`` (tests/e2e/router.py) with the two carriers by priority."""

    kind = "trunkguard"

    def __init__(self, workdir: Path, carriers: Sequence[Uas], overload_guard: bool) -> None:
        named = [("primary", carriers[0].port), ("backup", carriers[1].port)]
        extra = {
            **ROUTER_EXTRA,
            **({} if overload_guard else {"overload": {"enabled": False}}),
            "carriers": [
                {"name": name, "uri": f"sip:{HOST}:{port}", "priority": i}
                for i, (name, port) in enumerate(named)
            ],
        }
        self.router = RouterProcess(workdir, named, extra=extra).start()
        self.address = self.router.address
        self.log_path = self.router.log_path

    def pids(self) -> list[int]:
        proc = self.router._proc
        return [] if proc is None else descendants(proc.pid)

    def log_problems(self, text: str) -> list[str]:
        return router_log_problems(text)

    def stop(self, wait: float) -> dict[str, object]:
        return asdict(stop_router(self.router, wait))


class KamailioSut:
    """Kamailio on bench/kamailio-dispatcher.cfg, its own process group, foreground."""

    kind = "kamailio"

    def __init__(self, workdir: Path, carriers: Sequence[Uas], children: int, port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "run").mkdir(exist_ok=True)
        listing = workdir / "dispatcher.list"
        listing.write_text(
            KAMAILIO_LIST.read_text()
            .replace("PRIMARY_PORT", str(carriers[0].port))
            .replace("BACKUP_PORT", str(carriers[1].port))
        )
        self.address = (HOST, port)
        self.log_path = workdir / "kamailio.log"
        command = [
            kamailio_binary(),
            "-DD",
            "-E",
            "-f",
            str(KAMAILIO_CFG),
            "-L",
            module_dir(),
            "-Y",
            str(workdir / "run"),
            # Shared memory for about 60 s of tm transactions at a few thousand calls/s.
            "-m",
            "512",
            "-M",
            "16",
            "-l",
            f"udp:{HOST}:{port}",
            "-A",
            f'DISPATCHER_LIST="{listing}"',
            "-A",
            f"CHILDREN={children}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                process_group=0,
                # SIGTERM when this script dies: Kamailio then ends its workers.
                preexec_fn=_term_with_parent,
            )
        end = time.monotonic() + START_TIMEOUT
        while status_of(send_options(self.address, timeout=0.25)) != 200:
            if self.process.poll() is not None or time.monotonic() > end:
                self.stop(3.0)
                raise KamailioError(f"kamailio did not start:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        return _group_members(self.process.pid)

    def log_tail(self) -> str:
        return read_from(self.log_path, max(0, size_of(self.log_path) - 3000))

    def log_problems(self, text: str) -> list[str]:
        marks = (" ERROR: ", " CRITICAL: ", " ALERT: ", " BUG: ", " WARNING: ")
        return [line for line in text.splitlines() if any(m in line for m in marks)]

    def stop(self, wait: float) -> dict[str, object]:
        started = time.monotonic()
        killed = False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        end = started + wait
        while _group_members(self.process.pid) and time.monotonic() < end:
            time.sleep(0.02)
        if _group_members(self.process.pid):
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        return {
            "exit_status": self.process.returncode,
            "exit_seconds": time.monotonic() - started,
            "killed": killed,
        }


# ------------------------------------------------------------------------- measuring


def sent_call_ids(messages: Iterable[ShortMessage]) -> set[str]:
    return {m.call_id for m in messages if m.direction == "S" and m.method == "INVITE"}


def received_invites(path: Path, offset: int) -> set[str]:
    """Call-IDs of the INVITEs a carrier received after ``offset`` in its short trace."""
    out: set[str] = set()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return out
    with handle:
        handle.seek(offset)
        for raw in handle:
            fields = raw.split(b"\t")
            if len(fields) == 7 and fields[3] == b"R" and fields[6].startswith(b"INVITE "):
                out.add(fields[4].decode(errors="replace"))
    return out


def sut_cpu(pids: Iterable[int]) -> dict[int, float]:
    return {pid: process_cpu(pid) for pid in pids}


def sum_finite(values: Iterable[float]) -> float:
    return sum(v for v in values if not math.isnan(v))


@dataclass
class Run:
    """One SIPp caller run through a SUT (or directly to the carrier)."""

    sut: str  # "kamailio", "trunkguard" or "direct"
    phase: str  # "pdd", "ramp", "hold"
    step: Step  # proxy_rate's figures; its router_* fields are the SUT's
    sent: int  # calls whose INVITE the caller sent (by Call-ID)
    carried: int  # of those, INVITEs a carrier received
    by_carrier: dict[str, int]
    sut_cpu_s: float
    sut_processes: int
    pdd_p95_ms: float
    end: dict[str, object] | None = None  # how the SUT stopped after this run

    @property
    def cpu_per_1000(self) -> float:
        """SUT CPU seconds per 1,000 calls sent."""
        return 1000 * self.sut_cpu_s / self.sent if self.sent else math.nan

    def to_json(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if k != "step"}
        return {**out, "step": step_json(self.step), "cpu_s_per_1000_calls": self.cpu_per_1000}


class CompareBench(Bench):
    """proxy_rate's Bench (bounded SIPp runs, its time budget), over any SUT: its own
    phases are calls(), pdd(), ramp_sut() and hold_sut()."""

    def __init__(
        self, args: argparse.Namespace, workdir: Path, carriers: Sequence[Uas]
    ) -> None:
        super().__init__(args, workdir, time.monotonic())
        self.carriers = carriers

    def new_sut(self, kind: str, tag: str) -> Sut:
        workdir = self.workdir / kind / tag
        if kind == "kamailio":
            return KamailioSut(
                workdir, self.carriers, self.args.kamailio_children, free_udp_port()
            )
        return TrunkguardSut(workdir, self.carriers, not self.args.no_overload_guard)

    def exit_wait(self) -> float:
        return max(5.0, min(30.0, self.remaining()))

    def calls(
        self, sut: Sut | None, rate: int, seconds: float, tag: str, phase: str
    ) -> Run:
        """``rate * seconds`` calls to ``sut`` (None: to the primary carrier directly)."""
        calls = max(1, round(rate * seconds))
        target = self.carriers[0].address if sut is None else sut.address
        pids = [] if sut is None else sut.pids()
        traces = [c.workdir / "shortmessages.log" for c in self.carriers]
        trace_offsets = [size_of(p) for p in traces]
        log_offset = 0 if sut is None else size_of(sut.log_path)
        drops0 = udp_receive_drops()
        wait0 = sum_finite(cpu_wait(p) for p in pids)
        cpu0 = sut_cpu(pids)
        carriers0 = sum_finite(process_cpu(c.pid) for c in self.carriers)
        caller0, busy0, self0 = reaped_children_cpu(), machine_cpu(), own_cpu()
        t0 = time.monotonic()
        result = self.run_calls(target, calls, rate, f"{tag}-{phase}")
        wall = time.monotonic() - t0
        cpu1 = sut_cpu(pids)
        caller1, busy1, self1 = reaped_children_cpu(), machine_cpu(), own_cpu()
        carriers1 = sum_finite(process_cpu(c.pid) for c in self.carriers)
        wait1 = sum_finite(cpu_wait(p) for p in pids)
        drops1 = udp_receive_drops()
        memory = sum_finite(pss_mb(p) for p in pids) if pids else math.nan

        sut_s = sum_finite(cpu1[p] - cpu0[p] for p in pids)
        caller_s, carriers_s = caller1 - caller0, carriers1 - carriers0
        all_s = busy1 - busy0
        others = all_s - sut_s - caller_s - carriers_s - (self1 - self0)
        sent = sent_call_ids(result.messages)
        by_carrier, carried = self.carried(sent, traces, trace_offsets)
        delays, _ = post_dial_delays(result.messages)
        log = "" if sut is None else read_from(sut.log_path, log_offset)
        step = Step(
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
            router_cpu_pct=100 * sut_s / wall,
            router_wait_pct=100 * (wait1 - wait0) / wall if pids else math.nan,
            caller_cpu_pct=100 * caller_s / wall,
            carrier_cpu_pct=100 * carriers_s / wall,
            machine_cpu_pct=100 * all_s / wall,
            others_cpu_pct=100 * others / wall,
            router_rss_mb=memory,
            sipp_returncode=result.returncode,
            sipp_killed=result.killed,
            reasons=failure_reasons(result),
            caller_retransmissions=result.stat("Retransmissions(C)"),
            caller_duplicate_responses=duplicate_responses(result.messages),
            udp_receive_drops=drops1 - drops0,
            router_log=Problems.of([] if sut is None else sut.log_problems(log)),
            caller_errors=Problems.of(sipp_events(result.errors)),
        )
        return Run(
            sut="direct" if sut is None else sut.kind,
            phase=phase,
            step=step,
            sent=len(sent),
            carried=carried,
            by_carrier=by_carrier,
            sut_cpu_s=sut_s,
            sut_processes=len(pids),
            pdd_p95_ms=percentile(delays, 95),
        )

    def carried(
        self, sent: set[str], traces: Sequence[Path], offsets: Sequence[int]
    ) -> tuple[dict[str, int], int]:
        """How many of the calls sent reached each carrier. SIPp writes its trace as it
        goes; a line or two may land just after the caller exits, so poll briefly."""
        names = ("primary", "backup")
        end = time.monotonic() + 3.0
        while True:
            seen = [received_invites(p, o) & sent for p, o in zip(traces, offsets, strict=True)]
            carried = len(set().union(*seen))
            if carried >= len(sent) or time.monotonic() > end:
                return {n: len(s) for n, s in zip(names, seen, strict=True)}, carried
            time.sleep(0.2)

    # -- phases ---------------------------------------------------------------------

    def pdd(self, kind: str | None, rate: int, on_run: OnRun) -> Run:
        """A warm-up, then ``pdd_seconds`` of calls at ``rate``, on a fresh SUT."""
        seconds = self.args.pdd_seconds
        tag = f"pdd-{rate}"
        sut = None if kind is None else self.new_sut(kind, tag)
        try:
            # The first calls pay for cold caches and lazy set-up on every side.
            if self.args.warmup_calls:
                self.run_calls(
                    self.carriers[0].address if sut is None else sut.address,
                    self.args.warmup_calls,
                    min(rate, 50),
                    f"{tag}-warmup",
                )
            run = self.calls(sut, rate, seconds, tag, "pdd")
        finally:
            end = None if sut is None else sut.stop(self.exit_wait())
        run.end = end
        on_run(run)
        return run

    def ramp_sut(self, kind: str, on_run: OnRun) -> tuple[list[Run], str]:
        """Rising rates through one SUT until a step fails or the time is up."""
        runs: list[Run] = []
        reason = "every step passed (raise --max-rate to go further)"
        hold_cost = self.cost(self.args.hold_seconds) + 10
        sut = self.new_sut(kind, "ramp")
        try:
            for rate in self.args.rates:
                if self.remaining() < self.cost(self.args.step_seconds) + hold_cost:
                    reason = f"time budget reached before {rate} calls/s"
                    break
                run = self.calls(sut, rate, self.args.step_seconds, f"ramp-{rate}", "ramp")
                runs.append(run)
                on_run(run)
                if not run.step.passed:
                    reason = f"stopped at {rate} calls/s: {run.step.verdict()}"
                    break
        finally:
            end = sut.stop(self.exit_wait())
        if runs:
            runs[-1].end = end
        return runs, reason

    def hold_sut(self, kind: str, start: int, on_run: OnRun) -> list[Run]:
        """``start`` held for hold_seconds on a fresh SUT; after a failure, ``down`` times
        that rate, while the time allows."""
        tried: list[Run] = []
        rate = start
        seconds = self.args.hold_seconds
        while rate >= self.args.min_rate and self.remaining() >= self.cost(seconds) + 10:
            sut = self.new_sut(kind, f"hold-{rate}")
            try:
                run = self.calls(sut, rate, seconds, f"hold-{rate}", "hold")
            finally:
                run_end = sut.stop(self.exit_wait())
            run.end = run_end
            tried.append(run)
            on_run(run)
            if run.step.passed:
                break
            rate = int(rate * self.args.down) // 50 * 50
        return tried


OnRun = Callable[[Run], None]


# ------------------------------------------------------------------------ reporting

RUN_HEADER = (
    f"  {'SUT':<10} {'phase':<5} {'rate':>5} {'calls':>6} {'carried':>7} {'failed':>6} "
    f"{'offered':>7} {'PDD p50':>7} {'p95':>6} {'p99':>6} {'SUT CPU%':>8} {'procs':>5} "
    f"{'SIPp CPU%':>9} {'machine%':>8} {'SUT MB':>6}"
)


def run_row(r: Run) -> str:
    s = r.step
    return (
        f"  {r.sut:<10} {r.phase:<5} {s.rate:>5} {s.calls:>6} {r.carried:>7} {s.failed:>6} "
        f"{s.offered_cps:>7.0f} {fmt(s.pdd_p50_ms, 1):>7} {fmt(r.pdd_p95_ms, 1):>6} "
        f"{fmt(s.pdd_p99_ms, 1):>6} {s.router_cpu_pct:>8.0f} {r.sut_processes:>5} "
        f"{s.sipp_cpu_pct:>9.0f} {s.machine_cpu_pct:>8.0f} {fmt(s.router_rss_mb, 0):>6}"
    )


def show_run(r: Run) -> None:
    print(run_row(r), flush=True)
    details = step_details(r.step)
    if r.carried != r.sent:
        details.insert(0, f"only {r.carried} of {r.sent} INVITEs sent reached a carrier")
    if r.by_carrier.get("backup"):
        details.append(f"calls at the backup carrier: {r.by_carrier['backup']}")
    if r.end and r.end.get("killed"):
        details.append("the SUT did not exit on SIGTERM: killed")
    for line in details:
        print("        " + line, flush=True)


@dataclass
class Result:
    """What one SUT got: the table's figures and the runs behind them."""

    kind: str
    held_rate: int = 0
    held_note: str = ""
    ramp_best: int = 0
    ramp_stop: str = ""
    added_pdd: dict[int, tuple[float, float]] = field(default_factory=dict)  # rate: p50, p99
    p95: Run | None = None
    cpu_held: float = math.nan
    cpu_at: dict[int, float] = field(default_factory=dict)  # rate: CPU s per 1,000 calls
    runs: list[Run] = field(default_factory=list)
    # The baseline, caller -> carrier, measured just before each PDD run of this SUT.
    direct: dict[int, Run] = field(default_factory=dict)


def table(results: Sequence[Result], args: argparse.Namespace) -> list[str]:
    """The side-by-side rows, the ratios, and a note for each figure from a failing run."""
    kam = next((r for r in results if r.kind == "kamailio"), None)
    tg = next((r for r in results if r.kind == "trunkguard"), None)
    rows: list[tuple[str, float, float, int]] = []

    def add(name: str, get: Callable[[Result], float], digits: int = 2) -> None:
        rows.append(
            (name, get(kam) if kam else math.nan, get(tg) if tg else math.nan, digits)
        )

    def pdd_run(r: Result, rate: int) -> Run | None:
        return next((x for x in r.runs if x.phase == "pdd" and x.step.rate == rate), None)

    hold = f"{args.hold_seconds:g} s"
    add(f"highest rate held {hold}, < 0.1% failed (calls/s)", lambda r: r.held_rate, 0)
    high = args.pdd_rates[-1]
    for rate in sorted(set(args.pdd_rates)):
        add(f"added PDD p50 at {rate} calls/s (ms)",
            lambda r, k=rate: r.added_pdd.get(k, (math.nan, math.nan))[0])
        add(f"added PDD p99 at {rate} calls/s (ms)",
            lambda r, k=rate: r.added_pdd.get(k, (math.nan, math.nan))[1])
    add(f"PDD p95 at {args.p95_rate} calls/s (ms)",
        lambda r: r.p95.pdd_p95_ms if r.p95 else math.nan)
    add(f"CPU s per 1,000 calls, held {hold}", lambda r: r.cpu_held)
    add(f"CPU s per 1,000 calls at {high} calls/s", lambda r: r.cpu_at.get(high, math.nan))
    width = max(len(row[0]) for row in rows)
    out = [f"  {'':<{width}} {'Kamailio':>9} {'trunkguard':>10} {'tg/Kamailio':>11}"]
    for name, k, t, digits in rows:
        # A ratio to next to nothing, or below it (an added PDD within the noise), says
        # nothing.
        ratio = t / k if k >= 0.05 and t >= 0 else math.nan
        out.append(
            f"  {name:<{width}} {fmt(k, digits):>9} {fmt(t, digits):>10} {fmt(ratio, 2):>11}"
        )
    bases = [
        f"{fmt(r.direct[args.p95_rate].pdd_p95_ms)} ms before {r.kind}"
        for r in results
        if args.p95_rate in r.direct
    ]
    if bases:
        out.append(f"  (caller -> carrier directly, PDD p95 at {args.p95_rate} calls/s: "
                   f"{', '.join(bases)})")
    for r in results:
        for rate in sorted({*args.pdd_rates, args.p95_rate}):
            run = pdd_run(r, rate)
            if run is not None and not run.step.passed:
                out.append(f"  note: {r.kind} at {rate} calls/s: {run.step.verdict()}; its "
                           "figures there are those of the calls that got through")
            base = r.direct.get(rate)
            if base is not None and not base.step.passed:
                out.append(f"  note: directly at {rate} calls/s, before {r.kind}: "
                           f"{base.step.verdict()}")
    return out


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: few calls, low rates")
    parser.add_argument("--sut", choices=["kamailio", "trunkguard"], action="append",
                        help="only this SUT (repeatable; default both, Kamailio first)")
    parser.add_argument("--max-rate", type=int, default=5000, help="highest ramp step, calls/s")
    parser.add_argument("--rates", type=lambda s: [int(r) for r in s.split(",")],
                        help="ramp steps, e.g. 200,400 (default 200 apart to 2000, then wider)")
    parser.add_argument("--step-seconds", type=float, default=5.0, help="ramp step length")
    parser.add_argument("--hold-seconds", type=float, default=60.0, help="held run length")
    parser.add_argument("--down", type=float, default=0.8,
                        help="after a failed hold, try this share of its rate")
    parser.add_argument("--min-rate", type=int, default=50, help="lowest rate a hold tries")
    parser.add_argument("--hold-ms", type=int, default=100, help="call hold before the BYE")
    parser.add_argument("--pdd-rates", type=lambda s: [int(r) for r in s.split(",")],
                        default=[50, 800], help="rates of the added-PDD runs")
    parser.add_argument("--p95-rate", type=int, default=1600, help="rate of the PDD p95 run")
    parser.add_argument("--pdd-seconds", type=float, default=10.0, help="length of a PDD run")
    parser.add_argument("--warmup-calls", type=int, default=20,
                        help="calls before each PDD run, not measured")
    parser.add_argument("--kamailio-children", type=int, default=4,
                        help="Kamailio's UDP worker processes")
    parser.add_argument("--no-overload-guard", action="store_true",
                        help="trunkguard with overload.enabled: false (Kamailio's config has "
                        "no such guard); by default it runs as shipped")
    parser.add_argument("--budget", type=float, default=540.0,
                        help="seconds for each SUT's ramp and holds")
    parser.add_argument("--workdir", type=Path, help="traces and logs (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.warmup_calls < 0:
        parser.error("--warmup-calls must be 0 or more")
    if args.quick:
        args.pdd_rates = [30]
        args.p95_rate = 30
        args.pdd_seconds = 1.0
        args.warmup_calls = 0
        args.rates = args.rates or [30]
        args.step_seconds = 1.0
        args.hold_seconds = 1.0
        args.min_rate = 20
        args.budget = min(args.budget, 40.0)
    args.suts = args.sut or ["kamailio", "trunkguard"]
    if args.rates is None:
        args.rates = LADDER
    args.rates = sorted(r for r in args.rates if 0 < r <= args.max_rate)
    if not args.rates or not args.pdd_rates or min(args.pdd_rates) < 1 or args.p95_rate < 1:
        parser.error("nothing to run: check --rates, --max-rate, --pdd-rates, --p95-rate")
    if args.step_seconds <= 0 or args.hold_seconds <= 0 or args.pdd_seconds <= 0:
        parser.error("--step-seconds, --hold-seconds and --pdd-seconds must be positive")
    if not 0 < args.down < 1 or args.kamailio_children < 1:
        parser.error("--down must be between 0 and 1, --kamailio-children at least 1")
    return args


def measure_sut(bench: CompareBench, kind: str) -> Result:
    args = bench.args
    result = Result(kind)
    bench.deadline = time.monotonic() + args.budget

    def seen(run: Run) -> None:
        result.runs.append(run)
        show_run(run)

    for rate in sorted({*args.pdd_rates, args.p95_rate}):
        # The baseline just before: other load on the machine drifts in minutes.
        base = result.direct[rate] = bench.pdd(None, rate, show_run)
        run = bench.pdd(kind, rate, seen)
        if rate in args.pdd_rates:
            result.added_pdd[rate] = (
                run.step.pdd_p50_ms - base.step.pdd_p50_ms,
                run.step.pdd_p99_ms - base.step.pdd_p99_ms,
            )
            result.cpu_at[rate] = run.cpu_per_1000
        if rate == args.p95_rate:
            result.p95 = run
    ramp, result.ramp_stop = bench.ramp_sut(kind, seen)
    for run in ramp:
        if not run.step.passed:
            break
        result.ramp_best = run.step.rate
    print(f"  {kind} ramp: {result.ramp_stop}", flush=True)
    # No step passed (a busy machine): the holds start one step down from the first.
    start = result.ramp_best or int(args.rates[0] * args.down) // 50 * 50
    held = bench.hold_sut(kind, start, seen)
    passed = next((r for r in held if r.step.passed), None)
    if passed is not None:
        result.held_rate = passed.step.rate
        result.cpu_held = passed.cpu_per_1000
        result.held_note = f"held {args.hold_seconds:g} s"
    else:
        result.held_note = (
            "no rate tried held" if held else "no hold tried: no time left, or rate < --min-rate"
        )
    print(f"  {kind}: {result.held_note} at {result.held_rate} calls/s", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trunkguard-compare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    version = subprocess.run(
        [kamailio_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split("\n", 1)[0]
    print(f"trunkguard beside Kamailio: SIPp {sipp_version()}, {version.strip()}, UDP on {HOST}")
    print(
        f"{cores} cores, shared by the SIPp caller, two SIPp carriers and the SUT: rates are a "
        "lower bound for the SUT alone.\nCPU% is of one core; SUT CPU = every process of the "
        f"SUT (Kamailio: {args.kamailio_children} UDP workers and its other processes)."
    )
    if args.no_overload_guard:
        print("trunkguard runs with its overload guard off (overload.enabled: false)")
    sample = 0.3 if args.quick else 1.0  # seconds of only sleeping, to see the others
    others = background_load(sample)
    print(f"before the start, other processes kept {others:.0f}% of a core busy")
    print(f"traces and logs: {workdir}", flush=True)
    lifetime = 4 * 60 + len(args.suts) * (args.budget + 200)
    report: dict[str, object] = {"cores": cores, "background_load_pct": others,
                                 "kamailio": version.strip(), "args": vars(args)}
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        carriers = [
            stack.enter_context(
                start_uas("uas_answer", lifetime=lifetime, extra_args=SIPP_BUFFERS,
                          tmp_root=workdir / name)
            )
            for name in ("primary", "backup")
        ]
        bench = CompareBench(args, workdir, carriers)
        print("\nRuns (PDD in ms at the caller; carried = INVITEs that reached a carrier; "
              "SUT MB = proportional set size)")
        print(RUN_HEADER, flush=True)
        for kind in args.suts:
            results.append(measure_sut(bench, kind))
    elapsed = time.monotonic() - started
    late = background_load(sample)

    print(f"\nSide by side ({cores} cores shared by SIPp and the SUT; "
          f"other load {others:.0f}% of a core at the start, {late:.0f}% at the end):")
    for line in table(results, args):
        print(line)
    for r in results:
        print(f"  {r.kind}: ramp best {r.ramp_best} calls/s ({args.step_seconds:g} s steps; "
              f"{r.ramp_stop}); {r.held_note}")
    print("  ratio > 1 is better for the rate, < 1 for PDD and CPU")
    print(f"took {elapsed:.0f} s", flush=True)

    if args.json:
        report.update(
            background_load_end_pct=late,
            elapsed_s=elapsed,
            table=table(results, args),
            suts={
                r.kind: {
                    "held_rate": r.held_rate,
                    "held_note": r.held_note,
                    "ramp_best": r.ramp_best,
                    "ramp_stop": r.ramp_stop,
                    "added_pdd_ms": {str(k): {"p50": v[0], "p99": v[1]}
                                     for k, v in r.added_pdd.items()},
                    "pdd_p95_ms": r.p95.pdd_p95_ms if r.p95 else None,
                    "cpu_s_per_1000_held": r.cpu_held,
                    "cpu_s_per_1000_at": {str(k): v for k, v in r.cpu_at.items()},
                    "runs": [run.to_json() for run in r.runs],
                    "direct": [run.to_json() for run in r.direct.values()],
                }
                for r in results
            },
        )
        args.json.write_text(json.dumps(without_nan(report), indent=2, default=str) + "\n")
    return 0 if all(r.runs for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
