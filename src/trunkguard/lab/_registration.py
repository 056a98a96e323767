"""What a registration scenario measures: a carrier out for its registration, and back.

The faulted carrier's registrar stops answering REGISTER at ``fault_at`` and
answers again at ``recover_at``. From its REGISTER log (times in the lab's
clock) and the router's state changes it works out:

- when the router took the carrier out, and why: within one refresh interval
  (half the granted Expires) plus ``lost_after`` timeouts and the pauses
  between them, with "registration lost: N REGISTER timeouts";
- when the carrier's binding lapsed, and so from when it refused calls (403)
  before the router knew; how many INVITEs it refused;
- the REGISTER attempts during the outage: how many, and the gaps between
  them, which must grow once the registration is lost (backoff, not a storm);
- after the registrar is back: registered, PROBING, trial calls, UP, each
  timed from the recovery, and that the carrier stayed out until registered.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from ._scenarios import Scenario

if TYPE_CHECKING:
    from ._run import LabResult

JITTER_MIN = 0.9  # the router's backoff jitter: each delay is 0.9 to 1.1 times its base
DETECT_SLACK = 1.0  # timer lateness on a busy machine, on top of the bound
CLOCK_SLACK = 0.05  # the lab's clock against the router's event times
GROWTH = 1.2  # each gap after the loss is at least this much longer than the one before


def backoff_count(window: float, timeout: float) -> int:
    """REGISTERs the router's backoff allows in ``window`` s after a lost registration.

    Each retry waits ``timeout * 2**k`` (at least 0.9 times that, jittered), then
    ``timeout`` for an answer that does not come.
    """
    sent, at, k = 0, 0.0, 0
    while True:
        at += timeout * 2.0**k * JITTER_MIN
        if at >= window:
            return sent
        sent += 1
        at += timeout
        k += 1


def _first(values: list[float], at_least: float) -> float | None:
    return next((t for t in values if t >= at_least), None)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def measure_registration(
    result: LabResult, scenario: Scenario, register: Mapping[str, float | int]
) -> None:
    from ._run import _pdd_stats

    names = [n for n in scenario.faulted if n in scenario.registers]
    if not names:
        return
    name = names[0]
    m, checks = result.metrics, result.checks
    expires, timeout = float(register["expires"]), float(register["timeout"])
    lost_after = int(register["lost_after"])
    refresh = expires / 2
    retry = timeout / 4  # the router's pause before it retries a timed-out REGISTER
    bound = refresh + lost_after * timeout + (lost_after - 1) * retry
    fault = scenario.fault_at
    recover = scenario.recover_at if scenario.recover_at is not None else scenario.duration
    log = result.registrar_log.get(name, [])

    def times(event: str) -> list[float]:
        return [float(e["t"]) for e in log if e["event"] == event]

    received, accepted, unanswered = times("received"), times("accepted"), times("unanswered")
    events = [e for e in result.events if e["target"] == name]
    down = next((e for e in events if e["t"] >= fault and e["new"] == "DOWN"), None)
    out = None if down is None else float(down["t"])
    m["register_refresh_s"] = refresh
    m["detect_bound_s"] = bound
    m["down_reason"] = None if down is None else down["reason"]

    # The binding the carrier last granted before the fault lapses ``expires`` after it.
    before = [t for t in accepted if t < fault]
    lapse = before[-1] + expires if before else None
    m["binding_lapsed_after_fault_s"] = _r(None if lapse is None else lapse - fault)
    m["out_after_binding_lapsed_s"] = _r(None if lapse is None or out is None else out - lapse)
    first_silent = _first(unanswered, fault)
    m["first_unanswered_register_to_out_s"] = _r(
        None if first_silent is None or out is None else out - first_silent
    )
    registrar = result.carrier_counters.get(name, {}).get("registrar", {})
    m["invites_refused_403"] = int(registrar.get("invites_refused", 0))
    if out is not None:
        m["pdd_around_out"] = _pdd_stats([c for c in result.calls if abs(c["t"] - out) <= 1.0])

    # REGISTER attempts: each unanswered one during the outage, then the first after it.
    attempts = [t for t in unanswered if fault <= t < recover]
    back = _first(received, recover)
    if back is not None:
        attempts.append(back)
    gaps = [round(b - a, 2) for a, b in pairwise(attempts)]
    after_loss = [
        g for g, t in zip(gaps, attempts[1:], strict=False) if out is not None and t > out
    ]
    m["registers_during_outage"] = sum(1 for t in received if fault <= t < recover)
    m["register_gaps_s"] = gaps
    retrans = result.carrier_counters.get(name, {}).get("retransmissions", {})
    m["register_retransmissions"] = int(retrans.get("REGISTER", 0)) if retrans else 0
    window = recover - out if out is not None else recover - fault
    register_bound = lost_after + backoff_count(window, timeout)
    m["register_bound"] = register_bound

    rereg = _first(accepted, recover)
    probing = None
    if rereg is not None:
        probing = next(
            (
                float(e["t"])
                for e in events
                if e["t"] >= rereg - CLOCK_SLACK and e["new"] == "PROBING"
            ),
            None,
        )
    up = next((float(e["t"]) for e in events if e["t"] >= recover and e["new"] == "UP"), None)
    early = [
        e
        for e in events
        if out is not None
        and out < e["t"] < (rereg if rereg is not None else recover) - CLOCK_SLACK
        and e["new"] in ("PROBING", "UP")
    ]
    trials = [
        c
        for c in result.calls
        if probing is not None
        and up is not None
        and probing <= c["t"] <= up
        and c["answered_by"] == name
    ]
    m["reregistered_after_recovery_s"] = _r(None if rereg is None else rereg - recover)
    m["probing_after_recovery_s"] = _r(None if probing is None else probing - recover)
    m["up_after_recovery_s"] = _r(None if up is None else up - recover)
    m["trial_calls"] = len(trials)

    expected = f"registration lost: {lost_after} REGISTER timeouts"
    checks.append(
        (
            f"{name} out for its lost registration",
            down is not None and down["reason"] == expected,
            f"DOWN {m.get('detection_s')} s after the fault: "
            f"{None if down is None else down['reason']}",
        )
    )
    detection = m.get("detection_s")
    checks.append(
        (
            "out within one refresh interval and the timeouts",
            detection is not None and detection <= bound + DETECT_SLACK,
            f"{detection} s; bound {bound:g} s = refresh {refresh:g} s + {lost_after} x "
            f"{timeout:g} s timeouts + {lost_after - 1} x {retry:g} s between",
        )
    )
    growing = len(after_loss) >= 2 and all(b >= GROWTH * a for a, b in pairwise(after_loss))
    checks.append(
        (
            "REGISTER backs off, no storm",
            growing and m["registers_during_outage"] <= register_bound,
            f"{m['registers_during_outage']} REGISTERs in the {recover - fault:g} s outage "
            f"(bound {register_bound}); gaps {gaps} s",
        )
    )
    checks.append(
        (
            f"{name} stays out until registered again",
            out is not None and rereg is not None and not early,
            f"registered again {m['reregistered_after_recovery_s']} s after the registrar "
            f"came back; {len(early)} PROBING/UP before that",
        )
    )
    checks.append(
        (
            f"{name} back UP through probes and trial calls",
            rereg is not None and probing is not None and up is not None and up > probing,
            f"PROBING {m['probing_after_recovery_s']} s, UP {m['up_after_recovery_s']} s "
            f"after the registrar came back, {len(trials)} trial calls",
        )
    )


def describe(m: dict[str, Any]) -> list[str]:
    """The registration figures as lines for the console (none for other scenarios)."""
    if "register_refresh_s" not in m:
        return []
    return [
        f"registration: out {m['detection_s']} s after the registrar went silent "
        f"({m['down_reason']}; bound {m['detect_bound_s']:g} s), "
        f"{m['first_unanswered_register_to_out_s']} s after the first unanswered REGISTER, "
        f"{m['out_after_binding_lapsed_s']} s after the binding lapsed; "
        f"{m['invites_refused_403']} INVITEs refused 403 meanwhile",
        f"REGISTERs during the outage {m['registers_during_outage']} (bound "
        f"{m['register_bound']}), gaps {m['register_gaps_s']} s; back: registered "
        f"{m['reregistered_after_recovery_s']} s, PROBING {m['probing_after_recovery_s']} s, "
        f"UP {m['up_after_recovery_s']} s after the registrar came back "
        f"({m['trial_calls']} trial calls)",
    ]
