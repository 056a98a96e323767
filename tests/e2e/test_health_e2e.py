"""The health engine under steady load: carriers that die, reject, go silent and come back.

Every test runs a SIPp caller at a fixed rate for a bounded number of calls through a
real router to two SIPp carriers, a (first in order) and b, breaks a mid-run and measures
from three independent records:

* the caller's message trace: per call, when its INVITE left, its post-dial delay (first
  180 or final response) and how it ended;
* each carrier's message trace: which INVITEs (distinct Call-IDs, retransmissions once)
  and OPTIONS reached it, and when (it survives SIGKILL);
* the router's event log (SQLite, wall-clock times) and its counters at stop.

SIPp and the router stamp with the same wall clock, so times compare directly. Figures
are printed (``pytest -s``) next to the targets they are checked against.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sqlite3
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import (
    ShortMessage,
    SippProcess,
    Uac,
    Uas,
    free_udp_ports,
    start_uac,
    start_uas,
)

from trunkguard.lab._run import max_invites_to_silent

pytestmark = pytest.mark.e2e

# Generous margin on top of the calls' own duration: SIPp -timeout ends the run regardless.
CALLER_SLACK = 12.0
# The router stamps its events from the event loop's clock, which has millisecond steps
# (uvloop), mapped to the wall clock once at start: a router time is within this of the
# harness's wall clock for the same instant.
ROUTER_CLOCK_STEP = 0.002


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class CallRecord:
    """One call as the caller saw it."""

    call_id: str
    invited: float  # the caller's INVITE left
    alerted: float | None  # first 180/183 or final response (100 is the router's own)
    final: int | None  # first final status for the INVITE
    hung_up: bool  # the BYE got its 200

    @property
    def pdd(self) -> float | None:
        return None if self.alerted is None else self.alerted - self.invited


def caller_calls(messages: Sequence[ShortMessage]) -> list[CallRecord]:
    invited: dict[str, float] = {}
    alerted: dict[str, float] = {}
    final: dict[str, int] = {}
    hung_up: set[str] = set()
    for m in messages:
        status = m.status
        if m.direction == "S" and m.method == "INVITE":
            invited.setdefault(m.call_id, m.time)
        elif m.direction == "R" and status is not None and m.cseq_method == "INVITE":
            if status >= 180:
                alerted.setdefault(m.call_id, m.time)
            if status >= 200:
                final.setdefault(m.call_id, status)
        elif m.direction == "R" and status == 200 and m.cseq_method == "BYE":
            hung_up.add(m.call_id)
    return [
        CallRecord(cid, t, alerted.get(cid), final.get(cid), cid in hung_up)
        for cid, t in sorted(invited.items(), key=lambda kv: kv[1])
    ]


def arrivals(carriers: Iterable[SippProcess], method: str = "INVITE") -> dict[str, float]:
    """Call-ID -> first arrival of a ``method`` request at any of ``carriers`` (one port's
    successive processes); retransmissions count once."""
    out: dict[str, float] = {}
    for carrier in carriers:
        for m in carrier.short_messages():
            if m.direction == "R" and m.method == method:
                out.setdefault(m.call_id, m.time)
    return out


def sent_times(carrier: SippProcess, status: int, method: str = "INVITE") -> dict[str, float]:
    """Call-ID -> when ``carrier`` first sent ``status`` to a ``method`` request."""
    out: dict[str, float] = {}
    for m in carrier.short_messages():
        if m.direction == "S" and m.status == status and m.cseq_method == method:
            out.setdefault(m.call_id, m.time)
    return out


def normal_pdd(calls: Sequence[CallRecord], before: float) -> float:
    """Median post-dial delay of the answered calls that started before ``before``."""
    pdds = [c.pdd for c in calls if c.invited < before and c.pdd is not None and c.final == 200]
    assert len(pdds) >= 20, f"too few calls before the fault to know the normal PDD: {len(pdds)}"
    return statistics.median(pdds)


def delayed(calls: Sequence[CallRecord], normal: float, by: float) -> list[CallRecord]:
    """Calls whose post-dial delay exceeds the normal one by more than ``by`` seconds
    (a call with no alerting response at all counts as delayed)."""
    return [c for c in calls if c.pdd is None or c.pdd - normal > by]


@dataclass(frozen=True)
class Event:
    at: float
    target: str
    old: str
    new: str
    reason: str


def read_events(db: Path, target: str | None = None) -> list[Event]:
    """The router's event log, oldest first; it is read while the router writes it."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        rows = conn.execute(
            "SELECT at, target, old, new, reason FROM events ORDER BY id"
        ).fetchall()
    events = [Event(float(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]
    return [e for e in events if target is None or e.target == target]


def wait_for_event(
    db: Path, target: str, new: str, timeout: float, after: float = 0.0
) -> Event | None:
    """First event of ``target`` into state ``new`` at or after ``after``, polled for at most
    ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        for event in read_events(db, target):
            if event.new == new and event.at >= after:
                return event
        if time.monotonic() >= end:
            return None
        time.sleep(0.02)


def route_flips(events: Sequence[Event]) -> int:
    """Changes into or out of UP: each one moves traffic between carriers."""
    return sum(1 for e in events if "UP" in (e.old, e.new))


def timeline(events: Sequence[Event], origin: float) -> str:
    return (
        "; ".join(f"+{e.at - origin:.3f}s {e.old}->{e.new} ({e.reason})" for e in events)
        or "no events"
    )


def start_caller(router: RouterProcess, rate: int, seconds: float, tmp: Path) -> Uac:
    calls = int(rate * seconds)
    return start_uac(
        "uac_call",
        router.address,
        calls=calls,
        rate=rate,
        pause_ms=0,
        timeout=seconds + CALLER_SLACK,
        tmp_root=tmp / "caller",
    )


def sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def fault_window(start: float, until: float | None = None) -> list[str]:
    args = ["-set", "fault_from", f"{start:.6f}"]
    if until is not None:
        args += ["-set", "fault_until", f"{until:.6f}"]
    return args


def setup_failures(calls: Sequence[CallRecord]) -> list[CallRecord]:
    return [c for c in calls if c.final != 200]


# The router's INFO line for an attempt that failed over, e.g.
# "call 7-123@127.0.0.1: attempt 1 via a: unreachable (trunk_fault); failing over".
_FAILED_ATTEMPT = re.compile(r"trunkguard: call (\S+): attempt \d+ via (\S+): ")


def failed_attempts(router: RouterProcess, target: str) -> list[str]:
    """Call-IDs of the attempts on ``target`` that failed over, from the router's log."""
    text = router.log_path.read_text(errors="replace")
    return [m[1] for m in _FAILED_ATTEMPT.finditer(text) if m[2] == target]


def failed_before_down(router: RouterProcess, target: str) -> list[str]:
    """Call-IDs of the attempts on ``target`` that failed over before the router logged
    ``target`` going DOWN: the router writes its log in order, from one thread, so these
    attempts were all sent while it still had ``target`` in rotation."""
    text = router.log_path.read_text(errors="replace")
    down = re.search(rf"trunkguard\.health: {re.escape(target)}: \S+ -> DOWN", text)
    head = text if down is None else text[: down.start()]
    return [m[1] for m in _FAILED_ATTEMPT.finditer(head) if m[2] == target]


def dropped_dialogs(
    calls: Sequence[CallRecord], dead: Uas, dead_at: float
) -> tuple[list[CallRecord], list[CallRecord]]:
    """Calls whose BYE failed, split into (answered by ``dead`` before ``dead_at``, by when
    its process had been killed and reaped, others).

    A dialog already set up with a carrier that dies cannot be saved by any router: its BYE
    meets the closed port. Only the second list is the router's doing.
    """
    on_dead = {cid for cid, t in arrivals([dead]).items() if t <= dead_at} - set(
        arrivals([dead], "BYE")
    )
    unfinished = [c for c in calls if c.final == 200 and not c.hung_up]
    return (
        [c for c in unfinished if c.call_id in on_dead],
        [c for c in unfinished if c.call_id not in on_dead],
    )


# ------------------------------------------------------------------------------- tests


def test_kill_primary_under_load(tmp_path: Path) -> None:
    """20 calls/s; carrier a's process is killed mid-run (its port closes: ICMP)."""
    pa, pb = free_udp_ports(2)
    rate, seconds, kill_after = 20, 12.0, 5.0
    invite_timeout = 2.0
    with (
        start_uas("uas_answer", port=pa, tmp_root=tmp_path / "a") as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b") as b,
        RouterProcess(
            tmp_path / "router", [("a", pa), ("b", pb)], failover={"invite_timeout": invite_timeout}
        ) as router,
    ):
        db = router.workdir / "events.db"
        with start_caller(router, rate, seconds, tmp_path) as caller:
            origin = time.time()
            # The router must have carried traffic on a before a dies, however slowly the
            # caller got going on a busy machine.
            assert a.wait_until(lambda: a.responses_sent(200) >= rate, timeout=kill_after + 5), (
                a.describe()
            )
            sleep_until(origin + kill_after)
            killed_at = time.time()
            a.kill()
            # Reaped: a received nothing after this (killed_at is before the signal landed).
            dead_at = time.time()
            down = wait_for_event(db, "a", "DOWN", timeout=5.0)
            result = caller.wait()
        counters = router.stop()
        events = read_events(db, "a")
        b_invites = b.received("INVITE")
        failed_on_a = failed_attempts(router, "a")
        failed_while_up = failed_before_down(router, "a")

    calls = caller_calls(result.messages)
    assert len(calls) == int(rate * seconds), result.describe()
    assert down is not None, f"a never went DOWN: {timeline(events, origin)}\n{router.log()}"
    detection = down.at - killed_at
    a_invites = arrivals([a])
    # INVITEs the router sent to a after it died: the counter counts every one sent, a's
    # trace only those that reached a living process.
    to_dead_a = counters.get("invites_to:a", 0) - len(a_invites)
    after = [c for c in calls if c.invited > down.at]
    worst_after = max((c.pdd or float("inf")) for c in after)
    failed = setup_failures(calls)
    dropped, other_drops = dropped_dialogs(calls, a, dead_at)
    print(
        f"kill-primary @{rate}cps: detection {detection:.3f} s ({down.reason}); "
        f"failed {len(failed)}/{len(calls)}; dialogs lost with a {len(dropped)}; "
        f"INVITEs sent to dead a {to_dead_a}; {len(after)} calls after detection, "
        f"worst PDD {worst_after * 1000:.1f} ms; b got {b_invites} INVITEs"
    )
    print(f"kill-primary: events {timeline(events, killed_at)}")

    assert not failed, [(c.call_id, c.final, c.pdd) for c in failed]
    assert not other_drops, [(c.call_id, c.final) for c in other_drops]
    # SIPp's own verdict agrees: its only failures are BYEs to the dead carrier.
    assert result.failed == len(dropped), result.describe()
    assert "unreachable" in down.reason
    assert -ROUTER_CLOCK_STEP <= detection < 1.0
    # After detection no call waits on a: none has a PDD anywhere near invite_timeout ...
    assert after and worst_after < invite_timeout
    # ... and the router stopped sending to a at once: only INVITEs in flight when the
    # first ICMP came back went to the closed port (none, if an OPTIONS found it first).
    # Each of them failed over (the log names its call), and so did a call that was
    # ringing on a when it died (its INVITE reached a); every such call had started
    # before a was DOWN: no call that started after detection was sent to a.
    assert 0 <= to_dead_a <= 3, counters
    ringing_on_a = [cid for cid in failed_on_a if cid in a_invites]
    assert len(failed_on_a) == to_dead_a + len(ringing_on_a), (failed_on_a, counters)
    assert len(ringing_on_a) <= 1, ringing_on_a
    # Which of them started before detection is the router's to say: the attempt whose
    # ICMP took a DOWN is logged just before the change (the caller stamps its INVITE
    # after sending it, and on a busy machine that can be after the whole round trip).
    # One logged after it was ringing on a, or in flight to the closed port alongside
    # that first one: sent before a was DOWN, so its caller had dialled by then.
    invited = {c.call_id: c.invited for c in calls}
    in_flight = [cid for cid in failed_on_a if cid not in failed_while_up + ringing_on_a]
    assert all(invited[cid] <= down.at + ROUTER_CLOCK_STEP for cid in in_flight), (
        in_flight,
        failed_while_up,
        down,
    )
    assert [e.new for e in events] == ["DOWN"], timeline(events, origin)


def test_503_carrier_trips_after_five_consecutive(tmp_path: Path) -> None:
    """20 calls/s; a starts answering every INVITE with 503 (OPTIONS still 200).

    One carrier process switches at a set time (uas_reject_window.xml) instead of being
    replaced by a uas_reject process: the replacement leaves the port closed for 15-20 ms,
    and an INVITE meeting it takes a out as unreachable, not for its 503s.
    """
    pa, pb = free_udp_ports(2)
    rate, seconds, fault_after = 20, 10.0, 4.0
    # The carrier learns its fault time when it starts, before the router and the caller.
    origin = time.time() + 1.5  # about when the caller starts
    fault = origin + fault_after
    with (
        start_uas(
            "uas_reject_window",
            port=pa,
            extra_args=fault_window(fault, fault + 3600),
            tmp_root=tmp_path / "a",
        ) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b") as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)]) as router,
    ):
        db = router.workdir / "events.db"
        with start_caller(router, rate, seconds, tmp_path) as caller:
            down = wait_for_event(db, "a", "DOWN", timeout=fault - time.time() + 5.0)
            result = caller.wait()
        counters = router.stop()
        events = read_events(db, "a")
        rejected = sent_times(a, 503)
        b_invites = b.received("INVITE")

    calls = caller_calls(result.messages)
    assert down is not None, f"a never went DOWN: {timeline(events, fault)}\n{router.log()}"
    a_invites = arrivals([a])
    in_flight = [cid for cid, t in a_invites.items() if t >= down.at]
    before_fault = [c for c in calls if c.invited < fault - 0.1]
    normal = normal_pdd(calls, fault - 0.1)
    worst = max(c.pdd or float("inf") for c in calls)
    print(
        f"503 carrier @{rate}cps: DOWN {down.at - min(rejected.values()):.3f} s after the first "
        f"503 ({down.reason}); a rejected {len(rejected)} INVITEs, {len(in_flight)} reached it "
        f"after DOWN; failed {result.failed}/{len(calls)}; PDD normal "
        f"{normal * 1000:.1f} ms, worst {worst * 1000:.1f} ms; b got {b_invites} INVITEs"
    )
    print(f"503 carrier: events {timeline(events, fault)}")

    assert result.ok and result.successful == len(calls) == int(rate * seconds), result.describe()
    assert not setup_failures(calls)
    assert before_fault and all(c.call_id in a_invites for c in before_fault)
    assert down.reason.startswith("5 consecutive 503"), down.reason
    assert len(rejected) <= 5 + len(in_flight), (len(rejected), in_flight)
    assert len(in_flight) <= 1, in_flight
    assert all(t < down.at + 0.05 for t in a_invites.values()), "a got INVITEs while DOWN"
    assert [e.new for e in events] == ["DOWN"], timeline(events, fault)
    assert counters.get("attempts:unreachable", 0) == 0


def test_carrier_returns_only_after_probes_and_trials(tmp_path: Path) -> None:
    """a rejects with 503 until DOWN, is then replaced by an answering carrier; with a 2 s
    hold-down, traffic returns to a only after good OPTIONS and trial calls."""
    pa, pb = free_udp_ports(2)
    rate, seconds, fault_after = 20, 12.0, 3.0
    hold_down, probe_successes, trial_calls = 2.0, 2, 3
    origin = time.time() + 1.5
    fault = origin + fault_after
    extra: dict[str, object] = {
        "health": {
            "hold_down": hold_down,
            "hold_down_jitter": 0,
            "probe_successes": probe_successes,
            "trial_calls": trial_calls,
        },
        "probe": {"interval": 1, "interval_out": 0.5, "timeout": 0.5},
    }
    with (
        start_uas(
            "uas_reject_window",
            port=pa,
            extra_args=fault_window(fault, fault + 3600),
            tmp_root=tmp_path / "a",
        ) as a_rejecting,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b") as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)], extra=extra) as router,
    ):
        db = router.workdir / "events.db"
        with start_caller(router, rate, seconds, tmp_path) as caller:
            down = wait_for_event(db, "a", "DOWN", timeout=fault - time.time() + 5.0)
            assert down is not None, router.log()
            # While a is DOWN nothing is sent to it but OPTIONS, and a probe that meets
            # the closed port in between changes nothing: swapping processes is safe now.
            a_rejecting.kill()
            replaced_at = time.time()
            with start_uas("uas_answer", port=pa, tmp_root=tmp_path / "a2") as a_back:
                up = wait_for_event(db, "a", "UP", timeout=hold_down + 6.0, after=down.at)
                result = caller.wait()
                counters = router.stop()
                events = read_events(db, "a")
                options = a_back.short_messages()
                answered = sent_times(a_back, 200)
                b_arrivals = arrivals([b])
                a_arrivals = arrivals([a_rejecting, a_back])

    calls = caller_calls(result.messages)
    assert up is not None, f"a never came back: {timeline(events, fault)}\n{router.log()}"
    probing = next((e for e in events if e.new == "PROBING"), None)
    assert probing is not None, timeline(events, fault)
    while_down = [t for t in a_arrivals.values() if down.at < t < probing.at]
    trials = sorted((t, cid) for cid, t in a_arrivals.items() if probing.at <= t <= up.at)
    # Good probes while PROBING, before the first trial: a's 200s to OPTIONS. One answered
    # in the last moments of the hold-down may reach the router after it ended, and counts.
    good_probes_first = sorted(
        m.time
        for m in options
        if m.direction == "S"
        and m.status == 200
        and m.cseq_method == "OPTIONS"
        and probing.at - 0.05 <= m.time
        and (not trials or m.time < trials[0][0])
    )
    b_after_up = [t for t in b_arrivals.values() if t > up.at + 0.1]
    a_after_up = [t for t in a_arrivals.values() if t > up.at]
    print(
        f"recovery @{rate}cps: DOWN at +{down.at - fault:.3f} s ({down.reason}), replaced "
        f"+{replaced_at - down.at:.3f} s later; PROBING after {probing.at - down.at:.3f} s "
        f"(hold-down {hold_down:.0f} s); {len(good_probes_first)} OPTIONS then "
        f"{len(trials)} trial INVITEs; UP {up.at - probing.at:.3f} s after PROBING "
        f"({up.reason}); INVITEs to a while DOWN {len(while_down)}; after UP a got "
        f"{len(a_after_up)}, b {len(b_after_up)}; failed {result.failed}/{len(calls)}"
    )
    print(f"recovery: events {timeline(events, fault)}")

    assert result.ok and result.successful == len(calls) == int(rate * seconds), result.describe()
    assert [(e.old, e.new) for e in events] == [
        ("UP", "DOWN"),
        ("DOWN", "PROBING"),
        ("PROBING", "UP"),
    ], timeline(events, fault)
    assert down.reason.startswith("5 consecutive 503"), down.reason
    assert "trial calls" in up.reason, up.reason
    assert hold_down - 0.05 <= probing.at - down.at <= hold_down + 0.25
    assert not while_down, "a got INVITEs during its hold-down"
    # Probes first, then trial calls one at a time (each after the previous was answered).
    assert len(good_probes_first) >= probe_successes
    assert len(trials) == trial_calls, trials
    for (_, previous), (t_next, _) in itertools.pairwise(trials):
        assert answered[previous] <= t_next, "trial calls overlapped"
    # Then traffic is back on a, the first carrier.
    assert len(a_after_up) >= rate, a_after_up
    assert not b_after_up, f"{len(b_after_up)} calls went to b after a was UP"
    assert counters.get("calls_answered") == len(calls)


# --------------------------------------------------------------- the targets at 50 cps

RATE = 50


def test_target_blackhole(tmp_path: Path) -> None:
    """a keeps receiving but answers nothing: < 10 calls delayed over 0.5 s, and few
    INVITEs reach a after the fault: once the router judges a silent (its first-response
    times are known), 3 or the calls that start within one silence threshold, sent one at
    a time until it is SUSPECT (the last can be 0.6 s after the fault: three adaptive
    timers of 0.3 s in a row); without a silence, none later than 0.5 s."""
    pa, pb = free_udp_ports(2)
    seconds, fault_after = 8.0, 3.0
    origin = time.time() + 1.5
    fault = origin + fault_after
    with (
        start_uas(
            "uas_blackhole", port=pa, extra_args=fault_window(fault), tmp_root=tmp_path / "a"
        ) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b"),
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)]) as router,
    ):
        db = router.workdir / "events.db"
        with start_caller(router, RATE, seconds, tmp_path) as caller:
            result = caller.wait()
        counters = router.stop()
        events = read_events(db, "a")
        a_arrivals = arrivals([a])

    calls = caller_calls(result.messages)
    normal = normal_pdd(calls, fault - 0.1)
    slow = delayed(calls, normal, 0.5)
    touched = delayed(calls, normal, 0.05)
    after_fault = sorted(t - fault for t in a_arrivals.values() if t >= fault)
    late = [t for t in after_fault if t > 0.5]
    out = next((e for e in events if e.old == "UP"), None)
    left = (
        "never" if out is None else f"{out.at - fault:.3f} s ({out.old}->{out.new}: {out.reason})"
    )
    print(
        f"blackhole @{RATE}cps: out of rotation after {left}; "
        f"calls delayed >0.5 s: {len(slow)} (target < 10), delayed at all: {len(touched)}; "
        f"{len(after_fault)} INVITEs reached a after the fault, the last at "
        f"+{max(after_fault, default=0):.3f} s (target <= 0.5 s); normal PDD "
        f"{normal * 1000:.1f} ms; failed {result.failed}/{len(calls)}"
    )
    print(f"blackhole: events {timeline(events, fault)}")

    assert result.ok and result.successful == len(calls), result.describe()
    assert out is not None, timeline(events, fault)
    assert len(slow) < 10, [(c.call_id, c.pdd) for c in slow]
    assert after_fault, "the fault happened after the last call"
    text = router.log_path.read_text(errors="replace")
    silent = [line for line in text.splitlines() if "trunkguard.health: a silent:" in line]
    if silent:
        found = re.search(r"\(threshold (\d+(?:\.\d+)?) ms\)", silent[0])
        bound = max_invites_to_silent(float(found.group(1)) / 1000 if found else None, RATE)
        print(f"blackhole: a judged silent: {silent[0][-160:]}; at most {bound} INVITEs")
        assert len(after_fault) <= bound, after_fault
    else:
        assert not late, f"{len(late)} INVITEs reached a more than 0.5 s after it went silent"
    assert counters.get("calls_answered") == len(calls)


def test_target_port_closed(tmp_path: Path) -> None:
    """a's process is killed: fewer than 3 calls delayed at all (> 50 ms over normal)."""
    pa, pb = free_udp_ports(2)
    seconds, kill_after = 8.0, 3.0
    with (
        start_uas("uas_answer", port=pa, tmp_root=tmp_path / "a") as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b"),
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)]) as router,
    ):
        db = router.workdir / "events.db"
        with start_caller(router, RATE, seconds, tmp_path) as caller:
            origin = time.time()
            # Enough calls answered by a to know the normal post-dial delay, however slowly
            # the caller got going on a busy machine.
            assert a.wait_until(lambda: a.responses_sent(200) >= 50, timeout=kill_after + 5), (
                a.describe()
            )
            sleep_until(origin + kill_after)
            killed_at = time.time()
            a.kill()
            dead_at = time.time()  # reaped: a received nothing after this
            result = caller.wait()
        counters = router.stop()
        events = read_events(db, "a")

    calls = caller_calls(result.messages)
    normal = normal_pdd(calls, killed_at - 0.1)
    touched = delayed(calls, normal, 0.05)
    failed = setup_failures(calls)
    dropped, other_drops = dropped_dialogs(calls, a, dead_at)
    down = next((e for e in events if e.new == "DOWN"), None)
    print(
        f"port closed @{RATE}cps: detection "
        f"{'never' if down is None else f'{down.at - killed_at:.3f} s ({down.reason})'}; "
        f"calls delayed > 50 ms: {len(touched)} (target < 3) "
        f"{[round((c.pdd or -1) * 1000, 1) for c in touched]} ms; normal PDD "
        f"{normal * 1000:.1f} ms; failed {len(failed)}/{len(calls)}; dialogs lost with a "
        f"{len(dropped)}; INVITEs to dead a "
        f"{counters.get('invites_to:a', 0) - len(arrivals([a]))}"
    )

    assert not failed, [(c.call_id, c.final, c.pdd) for c in failed]
    assert not other_drops, [(c.call_id, c.final) for c in other_drops]
    assert result.failed == len(dropped), result.describe()
    assert down is not None and "unreachable" in down.reason, timeline(events, killed_at)
    assert len(touched) < 3, [(c.call_id, c.pdd) for c in touched]


def test_target_503_outage_flips(tmp_path: Path) -> None:
    """a answers OPTIONS 200 but every INVITE 503 for 3 s: it stays out until its trial
    calls succeed, with at most 2 route flips for the outage."""
    pa, pb = free_udp_ports(2)
    seconds, fault_after, fault_length = 10.0, 2.0, 3.0
    trial_calls = 3
    origin = time.time() + 1.5
    fault = origin + fault_after
    fault_end = fault + fault_length
    # Hold-down 1 s (then 2 s after a failed trial): a PROBING phase falls inside the
    # outage, and another after it, within the run.
    extra: dict[str, object] = {
        "health": {"hold_down": 1, "hold_down_jitter": 0, "trial_calls": trial_calls},
        "probe": {"interval": 1, "interval_out": 0.3, "timeout": 0.3},
    }
    with (
        start_uas(
            "uas_reject_window",
            port=pa,
            extra_args=fault_window(fault, fault_end),
            tmp_root=tmp_path / "a",
        ) as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b"),
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)], extra=extra) as router,
    ):
        db = router.workdir / "events.db"
        with start_caller(router, RATE, seconds, tmp_path) as caller:
            result = caller.wait()
        router.stop()
        events = read_events(db, "a")
        a_arrivals = arrivals([a])
        rejected = sent_times(a, 503)

    calls = caller_calls(result.messages)
    flips = route_flips(events)
    outages = sum(1 for e in events if e.old == "UP")
    failed_trials = [e for e in events if e.old == "PROBING" and e.new == "DOWN"]
    back = next((e for e in reversed(events) if e.new == "UP"), None)
    # Every INVITE a got while out of rotation must be a trial call of a PROBING phase.
    phases: list[tuple[float, float]] = []
    for e, nxt in zip(events, [*events[1:], None], strict=True):
        if e.new == "PROBING":
            phases.append((e.at, float("inf") if nxt is None else nxt.at))
    first_out = next((e.at for e in events if e.old == "UP"), None)
    out_until = back.at if back is not None else float("inf")
    while_out = [
        t for t in a_arrivals.values() if first_out is not None and first_out < t < out_until
    ]
    non_trials = [t for t in while_out if not any(lo <= t <= hi for lo, hi in phases)]
    per_phase = [sum(1 for t in while_out if lo <= t <= hi) for lo, hi in phases]
    returned = "never" if back is None else f"{back.at - fault_end:+.3f} s after the fault ended"
    print(
        f"503 outage @{RATE}cps ({fault_length:.0f} s): route flips {flips} in {outages} "
        f"outage(s) (target <= 2 per outage); {len(failed_trials)} failed trial(s); "
        f"back UP {returned}; a rejected {len(rejected)} INVITEs, got {len(while_out)} while out "
        f"({per_phase} per PROBING phase, {len(non_trials)} outside one); "
        f"failed {result.failed}/{len(calls)}"
    )
    print(f"503 outage: events {timeline(events, fault)}")

    assert result.ok and result.successful == len(calls), result.describe()
    assert outages == 1, timeline(events, fault)
    assert flips <= 2 * outages, timeline(events, fault)
    assert phases and phases[0][0] < fault_end, "no PROBING phase during the outage"
    assert failed_trials, "no trial call met the outage: the test did not test that"
    assert back is not None and back.at > fault_end and "trial calls" in back.reason
    assert not non_trials, "a got INVITEs outside its PROBING phases while out"
    assert all(n <= trial_calls for n in per_phase), per_phase


def test_call_ringing_on_a_carrier_that_dies_moves_on(tmp_path: Path) -> None:
    """The kill tests' rare failure made deterministic: a call rings at a (100, 180, no
    final yet) when a's process dies; the next call meets the closed port and a goes DOWN.
    The ringing call must not wait on a carrier known to be gone."""
    pa, pb = free_udp_ports(2)
    budget = 4.0
    with (
        start_uas("uas_ring", port=pa, tmp_root=tmp_path / "a") as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b"),
        RouterProcess(
            tmp_path / "router", [("a", pa), ("b", pb)], failover={"time_budget": budget}
        ) as router,
    ):
        db = router.workdir / "events.db"
        # Two calls one second apart: the first rings at a, the second finds a dead.
        with start_uac(
            "uac_call",
            router.address,
            calls=2,
            rate=1,
            timeout=budget + 8,
            tmp_root=tmp_path / "caller",
        ) as caller:
            assert a.wait_until(lambda: a.responses_sent(180) >= 1, timeout=3), a.describe()
            a.kill()
            down = wait_for_event(db, "a", "DOWN", timeout=3.0)
            result = caller.wait()
        counters = router.stop()

    calls = caller_calls(result.messages)
    assert down is not None, router.log()
    ringing = calls[0]
    finals = {
        m.call_id: m.time
        for m in result.messages
        if m.direction == "R" and m.cseq_method == "INVITE" and (m.status or 0) >= 200
    }
    waited = finals.get(ringing.call_id, float("inf")) - down.at
    print(
        f"ringing on a dead carrier: final {ringing.final} {waited:.3f} s after a went DOWN "
        f"(time_budget {budget:.0f} s); counters attempts:budget "
        f"{counters.get('attempts:budget', 0)}, calls_failed {counters.get('calls_failed', 0)}"
    )
    assert [c.final for c in calls] == [200, 200], result.describe()
    assert waited < 1.0
