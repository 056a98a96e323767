"""Run one lab scenario: simulated carriers, a real router process, calls, a fault, numbers.

The scenario's simulated carriers (a, b, c, in this process) sit behind a
router (its own process, on loopback). The call generator dials at a steady
rate; at the scenario's time the fault is injected into a; every 50 ms the lab
samples what each carrier received and the router's event log. Afterwards it
works out what the scenario measures: calls failed at the caller, time to
detect, time until no new INVITE reaches the faulted carrier, post-dial delay
before, during and after, route flips and time for traffic to return.

Carriers the scenario ``registers`` to are registrars with an account of their
own (random password per run); the router registers to them with
:data:`LAB_REGISTER`, and calls start only once each holds the router's
binding. Their REGISTER log and the router's registration notices are kept
for ``_registration``, which measures what the registration scenarios show.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._caller import CallGenerator, CallRecord, GeneratorSettings
from ._carrier import Mode, SimCarrier
from ._carrier_registrar import RegistrarConfig
from ._quality import measure_quality, quality_config
from ._registration import measure_registration
from ._router import LabRouter
from ._scenarios import Scenario

SAMPLE_EVERY = 0.05
REGISTERED_WITHIN = 15.0  # seconds for the router's first registrations before calls start

# The lab's router: the product's defaults, with hold-downs and probes scaled to a lab run
# of under a minute (the same rules, faster clocks).
LAB_HEALTH = {
    "hold_down": 3.0,
    "hold_down_max": 60.0,
    "hold_down_window": 120.0,
}
LAB_PROBE = {"interval": 2.0, "interval_out": 0.5, "timeout": 0.5}
# Registration as a carrier would ask for it, with short clocks: refreshed every 5 s.
LAB_REGISTER: dict[str, int | float] = {"expires": 10, "timeout": 1.0, "lost_after": 3}


@dataclass(slots=True)
class Sample:
    t: float  # seconds since the run started
    invites: dict[str, int]
    states: dict[str, str]


@dataclass(slots=True)
class LabResult:
    scenario: str
    description: str
    started_wall: float
    fault_at: float
    recover_at: float | None
    duration: float
    faulted: list[str]
    calls: list[dict[str, Any]]
    events: list[dict[str, Any]]
    samples: list[Sample]
    metrics: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    router_counters: dict[str, int] = field(default_factory=dict)
    notices: list[dict[str, Any]] = field(default_factory=list)  # registration, alarms
    registrar_log: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    carrier_counters: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def lab_config(
    ports: dict[str, int], accounts: dict[str, RegistrarConfig] | None = None
) -> dict[str, object]:
    """The router's config: the carriers of ``ports`` in order, registering to ``accounts``."""
    carriers: list[dict[str, object]] = []
    for name, port in ports.items():
        carrier: dict[str, object] = {"name": name, "uri": f"sip:127.0.0.1:{port}"}
        account = (accounts or {}).get(name)
        if account is not None:
            carrier["register"] = {
                "user": account.user,
                "password": account.password,
                "realm": account.realm,
                **LAB_REGISTER,
            }
        carriers.append(carrier)
    return {
        "listen": "udp:127.0.0.1:0",
        "allow": ["127.0.0.0/8"],
        "carriers": carriers,
        "failover": {"invite_timeout": 2.0, "max_attempts": 3, "time_budget": 8.0},
        "health": LAB_HEALTH,
        "probe": LAB_PROBE,
        "log": {"level": "info"},
    }


def _states(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            rows = con.execute(
                "SELECT target, new FROM events WHERE id IN "
                "(SELECT MAX(id) FROM events GROUP BY target)"
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return {}
    return {str(t): str(s) for t, s in rows}


def _events(db: Path, wall0: float) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT at, target, old, new, reason FROM events ORDER BY id").fetchall()
    finally:
        con.close()
    return [
        {"t": at - wall0, "target": target, "old": old, "new": new, "reason": reason}
        for at, target, old, new, reason in rows
    ]


def _notices(db: Path, wall0: float) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT at, target, kind, state, detail FROM notices ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError:  # an event log without notices
        rows = []
    finally:
        con.close()
    return [
        {"t": at - wall0, "target": target, "kind": kind, "state": state, "detail": detail}
        for at, target, kind, state, detail in rows
    ]


def registrar_account(name: str) -> RegistrarConfig:
    """Carrier ``name``'s account for one run: a fresh password each time."""
    return RegistrarConfig(f"trunk-{name}", secrets.token_urlsafe(12), realm=f"{name}.lab")


async def _registered(sims: list[SimCarrier], router: LabRouter, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(sim.registered() for sim in sims):
        if loop.time() > deadline:
            missing = ", ".join(s.name for s in sims if not s.registered())
            tail = router.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the router did not register to {missing}:\n{tail}")
        await asyncio.sleep(SAMPLE_EVERY)


async def run_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    on_tick: Callable[[float, dict[str, SimCarrier], dict[str, str], CallGenerator], None]
    | None = None,
    admin: dict[str, object] | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> LabResult:
    """Run ``scenario`` once; ``on_tick`` (the live view) is called at every sample.

    ``admin``: the router's admin section (the demo's dashboard); ``on_ready`` is awaited
    once the router is up, before the first call (the clock of the run starts after it).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    accounts = {name: registrar_account(name) for name in scenario.registers}
    sims = {name: SimCarrier(name, registrar=accounts.get(name)) for name in scenario.carriers}
    for sim in sims.values():
        await sim.start()
    config = lab_config({n: s.port for n, s in sims.items()}, accounts)
    if scenario.quality:
        config = quality_config(config, workdir.resolve())
    if admin is not None:
        config["admin"] = admin
    router = LabRouter(workdir, config)
    samples: list[Sample] = []
    try:
        await router.start()
        await _registered([sims[n] for n in scenario.registers], router, REGISTERED_WITHIN)
        if on_ready is not None:
            await on_ready()
        generator = CallGenerator(
            GeneratorSettings(
                target=("127.0.0.1", router.port),
                rate=scenario.rate,
                duration=scenario.duration,
                hold=scenario.hold,
                timeout=12.0,
            )
        )
        t0 = loop.time()
        wall0 = time.time()
        # New INVITEs (Call-IDs) the faulted carriers had when the fault began and ended.
        invites_at: dict[str, dict[str, int]] = {}

        def invites_now() -> dict[str, int]:
            return {n: _count(sims[n].counters().get("invites")) for n in scenario.faulted}

        def inject() -> None:
            invites_at["fault"] = invites_now()
            for name in scenario.faulted:
                sims[name].set_mode(scenario.fault)

        def recover() -> None:
            invites_at["recover"] = invites_now()
            for name in scenario.faulted:
                sims[name].set_mode(Mode("healthy"))

        loop.call_at(t0 + scenario.fault_at, inject)
        if scenario.recover_at is not None:
            loop.call_at(t0 + scenario.recover_at, recover)

        async def sample() -> None:
            while True:
                states = _states(router.events_path)
                invites = {n: _count(s.counters().get("invites")) for n, s in sims.items()}
                samples.append(Sample(loop.time() - t0, invites, states))
                if on_tick is not None:
                    on_tick(loop.time() - t0, sims, states, generator)
                await asyncio.sleep(SAMPLE_EVERY)

        sampler = asyncio.create_task(sample())
        try:
            records = await generator.run()
        finally:
            sampler.cancel()
        carrier_counters = {n: s.counters() for n, s in sims.items()}
        invites_at.setdefault("recover", invites_now())
        counters = await router.stop()
        events = _events(router.events_path, wall0)
        notices = _notices(router.events_path, wall0)
        registrar_log = {
            n: [{"t": round(at - t0, 4), "event": what} for at, what in sims[n].register_log()]
            for n in scenario.registers
        }
    finally:
        await router.stop()
        for sim in sims.values():
            await sim.stop()
    calls = [_call(r, t0) for r in records]
    result = LabResult(
        scenario=scenario.name,
        description=scenario.description,
        started_wall=wall0,
        fault_at=scenario.fault_at,
        recover_at=scenario.recover_at,
        duration=scenario.duration,
        faulted=list(scenario.faulted),
        calls=calls,
        events=events,
        samples=samples,
        router_counters=counters,
        notices=notices,
        registrar_log=registrar_log,
        carrier_counters=carrier_counters,
    )
    if "fault" in invites_at:
        result.metrics["invites_during_fault"] = sum(
            invites_at["recover"][n] - invites_at["fault"][n] for n in scenario.faulted
        )
    measure(result, scenario)
    return result


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


def _call(r: CallRecord, t0: float) -> dict[str, Any]:
    return {
        "call_id": r.call_id,
        "t": r.started - t0,
        "pdd": r.pdd,
        "final": r.final,
        "answered_by": r.answered_by,
        # Set up: the caller got its 2xx. A call set up on a carrier that then died may
        # still lose its BYE (nobody can save that leg); it is counted apart, as cut.
        "ok": r.answered,
        "cut": r.answered and not r.ok,
        "ended_by": r.ended_by,
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _pdd_stats(calls: list[dict[str, Any]]) -> dict[str, float | int | None]:
    pdds = [c["pdd"] for c in calls if c["pdd"] is not None]
    return {
        "calls": len(calls),
        "p50_ms": None if not pdds else round(_pct(pdds, 0.5) * 1000, 1),  # type: ignore[operator]
        "p95_ms": None if not pdds else round(_pct(pdds, 0.95) * 1000, 1),  # type: ignore[operator]
        "max_ms": None if not pdds else round(max(pdds) * 1000, 1),
    }


# The silent-carrier aims (docs/silent-carrier.md), at 50 calls/s.
MAX_INVITES_TO_SILENT = 3
_THRESHOLD = re.compile(r"\(threshold (\d+(?:\.\d+)?) ?(ms|s)\)")


def silence_threshold(result: LabResult, target: str) -> float | None:
    """The threshold (seconds) the router reported with ``target``'s first silence."""
    for n in result.notices:
        if n["kind"] == "silence" and n["state"] == "silent" and n["target"] == target:
            found = _THRESHOLD.search(str(n.get("detail") or ""))
            if found is not None:
                value = float(found.group(1))
                return value / 1000 if found.group(2) == "ms" else value
    return None


def max_invites_to_silent(threshold: float | None, rate: float) -> int:
    """New INVITEs a blackholed carrier may get once it is judged silent: 3 (the SUSPECT
    rule's evidence), or the calls that start within one silence threshold of the first
    unanswered one, whichever is more (a carrier whose own 0.99 quantile is 35 ms has a
    70 ms threshold: 4 calls at 50 calls/s), and one more: a call that starts as the
    threshold passes races the silence timer (seen under load: 4 with a 20 ms threshold,
    the INVITEs at +0, +20 ms, then one at a time at +0.3 and +0.6 s)."""
    if threshold is None:
        return MAX_INVITES_TO_SILENT
    return max(MAX_INVITES_TO_SILENT, math.floor(threshold * rate) + 1) + 1


def measure_silence(result: LabResult, scenario: Scenario) -> None:
    """The checks of the silent-carrier scenarios: few INVITEs to a blackholed carrier,
    and a carrier whose latency merely varies never held back nor flipped."""
    m, checks = result.metrics, result.checks
    if scenario.name == "blackhole-50" and "invites_during_fault" in m:
        n = m["invites_during_fault"]
        threshold = silence_threshold(result, "a")
        bound = max_invites_to_silent(threshold, scenario.rate)
        m["silence_threshold_ms"] = None if threshold is None else round(threshold * 1000, 1)
        checks.append(
            (
                f"at most {bound} new INVITEs to the blackholed carrier (3, or the calls in "
                "one silence threshold)",
                n <= bound,
                f"{n} new INVITEs after the fault; threshold "
                f"{m['silence_threshold_ms']} ms",
            )
        )
    if scenario.name == "jitter":
        checks.append(("no route flips", m["route_flips"] == 0, f"{m['route_flips']} flips"))
        checks.append(
            ("never held back as silent", m["silences"] == 0, f"{m['silences']} silences")
        )


def flip_bound(scenario: Scenario, base: float, window: float) -> int:
    """Route flips the hold-down doubling allows while a carrier flaps for ``window`` s.

    Each outage costs at most two flips (out of UP, back into UP), and each
    re-trip waits a hold-down that doubles: base, 2 base, 4 base... (less 10 %
    jitter at most). The outages that fit in the window bound the flips.
    """
    del scenario
    trips, spent, hold = 1, 0.0, base * 0.9
    while spent + hold < window:
        spent += hold
        trips += 1
        hold *= 2
    return 2 * trips


def measure(result: LabResult, scenario: Scenario) -> None:
    calls = result.calls
    fault = scenario.fault_at
    faulted = set(scenario.faulted)
    m = result.metrics
    m["attempted"] = len(calls)
    m["failed"] = sum(1 for c in calls if not c["ok"])
    m["hung"] = sum(1 for c in calls if c["final"] is None)
    m["cut_after_answer"] = sum(1 for c in calls if c.get("cut"))
    finals: dict[str, int] = {}
    for c in calls:
        key = str(c["final"])
        finals[key] = finals.get(key, 0) + 1
    m["finals"] = finals
    # The router's own word that its event loop ran late (the machine was too busy): it
    # then sheds new calls and times what it can, and the figures are the machine's.
    m["router_loop_stalls"] = int(result.router_counters.get("loop_stalls", 0))
    outs = [
        e
        for e in result.events
        if e["target"] in faulted and e["t"] >= fault and e["new"] in ("DOWN", "SUSPECT")
    ]
    m["detection_s"] = round(outs[0]["t"] - fault, 3) if outs else None
    m["detection_reason"] = outs[0]["reason"] if outs else None
    # The last moment the faulted carrier got regular traffic: a new INVITE up to its
    # detection (plus what was in flight then). Later ones are trial calls of PROBING
    # phases, one at a time, counted apart.
    end = scenario.recover_at if scenario.recover_at is not None else scenario.duration
    cutoff = fault + (m["detection_s"] if m["detection_s"] is not None else end - fault) + 0.5
    last_new = None
    trials = 0
    for prev, cur in zip(result.samples, result.samples[1:], strict=False):
        if not fault <= cur.t <= end:
            continue
        new = sum(max(0, cur.invites.get(n, 0) - prev.invites.get(n, 0)) for n in faulted)
        if new and cur.t <= cutoff:
            last_new = cur.t
        elif new:
            trials += new
    m["last_invite_to_faulted_s"] = None if last_new is None else round(last_new - fault, 3)
    m["trial_invites_while_out"] = trials
    during_end = min(end, fault + 5.0)
    m["pdd_before"] = _pdd_stats([c for c in calls if c["t"] < fault])
    m["pdd_during"] = _pdd_stats([c for c in calls if fault <= c["t"] < during_end])
    m["pdd_after"] = _pdd_stats([c for c in calls if c["t"] >= during_end])
    flips = [
        e
        for e in result.events
        if e["target"] in faulted and e["t"] >= 0 and ("UP" in (e["old"], e["new"]))
    ]
    m["route_flips"] = len(flips)
    m["silences"] = sum(
        1
        for n in result.notices
        if n["kind"] == "silence" and n["state"] == "silent" and n["target"] in faulted
    )
    measure_silence(result, scenario)
    if scenario.recover_at is not None:
        back = [
            c
            for c in calls
            if c["t"] >= scenario.recover_at and c["answered_by"] in faulted and c["ok"]
        ]
        m["traffic_returns_s"] = round(back[0]["t"] - scenario.recover_at, 3) if back else None
    checks = result.checks
    if scenario.quality:
        measure_quality(result, scenario)
    if scenario.name == "fake-busy":
        pass  # its 486s reach the caller, as a real busy does: no zero-failure check
    elif scenario.expect_failed:
        checks.append(("no hung calls", m["hung"] == 0, f"{m['hung']} hung"))
        clean = all(c["final"] is not None and c["final"] >= 200 for c in calls)
        checks.append(("every call got a final response", clean, f"finals {finals}"))
    else:
        checks.append(
            (
                "zero failed calls at the caller",
                m["failed"] == 0,
                f"{m['failed']} of {m['attempted']} failed",
            )
        )
    if scenario.name == "flap":
        window = (scenario.recover_at or scenario.duration) - fault
        bound = flip_bound(scenario, float(LAB_HEALTH["hold_down"]), window)
        m["flip_bound"] = bound
        checks.append(
            (
                "route flips within the hold-down bound",
                m["route_flips"] <= bound,
                f"{m['route_flips']} flips, bound {bound}",
            )
        )
    if scenario.name == "recover":
        checks.append(
            (
                "traffic returns after recovery",
                m.get("traffic_returns_s") is not None,
                f"after {m.get('traffic_returns_s')} s",
            )
        )
    if scenario.registers:
        measure_registration(result, scenario, LAB_REGISTER)
