"""The health engine as the proxy core and the prober drive it: scripted carriers, a fake clock.

``Lab`` is the proxy harness of test_proxy_core.py with a HealthEngine plugged in, an
optional Prober, and carriers that answer each INVITE and OPTIONS as a test tells them to.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from test_proxy_core import CALLER, A, B, C, Net, invite, only_request, reply

from trunkguard.health import HealthEngine, HealthPolicy, State
from trunkguard.prober import Prober, ProbeSettings
from trunkguard.proxy import Flow
from trunkguard.sip import Request, Response, parse_message

UP, DOWN, PROBING = State.UP, State.DOWN, State.PROBING
Carrier = Callable[[Request], int | None]  # the final status to answer with; None: silence
Sent = list[tuple[Flow, Request | Response]]
_calls = itertools.count(1)


def answers(status: int) -> Carrier:
    return lambda request: status


def silent(request: Request) -> None:
    return None


def options_ok_but_invites(status: int) -> Carrier:
    return lambda request: 200 if request.method == "OPTIONS" else status


class Lab(Net):
    def __init__(
        self,
        carriers: dict[Flow, Carrier],
        *,
        probes: ProbeSettings | None = None,
        policy: HealthPolicy | None = None,
        seed: int = 1,
        **settings: object,
    ) -> None:
        super().__init__(**settings)
        self.carriers = carriers
        self.health = HealthEngine(
            ["a", "b", "c"], policy, random.Random(seed), probes_enabled=probes is not None
        )
        self.finals: dict[str, int] = {}  # call-id -> the caller's final response
        self._answered: set[str] = set()
        self._guard_health_timer()
        self.proxy.health = self.health
        self.prober: Prober | None = None
        if probes is not None:
            self.prober = Prober(self.proxy, self.health, probes, random.Random(seed))
            self.prober.start(self.now)
        self.proxy.apply_health_changes([])

    def _guard_health_timer(self) -> None:
        # A health deadline that tick() does not act on is re-armed at the same past time, and
        # TimerQueue.run_due would spin on it for ever: fail the test instead of hanging it.
        proxy = self.proxy
        inner = proxy._on_health_timer
        runs: list[float] = []

        def guarded(now: float) -> None:
            runs.append(now)
            if len(runs) >= 50 and runs[-50] == now:
                raise AssertionError(f"health timer re-armed at {now} again and again")
            inner(now)

        proxy._on_health_timer = guarded  # type: ignore[method-assign]

    def serve(self) -> Sent:
        """Let the carriers answer everything sent so far, until nothing more goes out."""
        seen: Sent = []
        while out := self.take():
            seen += out
            for flow, message in out:
                if isinstance(message, Response):
                    if flow == CALLER and message.status >= 200:
                        self.finals.setdefault(message.call_id, message.status)
                    continue
                carrier = self.carriers.get(flow)
                branch = message.vias[0].branch or ""
                if carrier is None or message.method not in ("INVITE", "OPTIONS"):
                    continue
                if branch in self._answered:
                    continue  # a retransmission: the carrier answered already
                status = carrier(message)
                if status is None:
                    continue
                self._answered.add(branch)
                if message.method == "INVITE":
                    self.feed(reply(message, 100), flow)
                self.feed(reply(message, status), flow)
        return seen

    def step(self, seconds: float) -> Sent:
        self.advance(seconds)
        return self.serve()

    def dial(self) -> tuple[str, Sent]:
        call_id = f"lab-{next(_calls)}"
        self.feed(invite(call_id), CALLER)
        return call_id, self.serve()

    def trip(self, name: str) -> None:
        self.proxy.apply_health_changes(self.health.unreachable(name, self.now, "test"))
        self.pump()

    def moves(self, name: str) -> list[tuple[State, State, str]]:
        return [(c.old, c.new, c.reason) for c in self.changes if c.target == name]


def invites(sent: Sent, flow: Flow) -> int:
    return sum(1 for f, m in sent if f == flow and isinstance(m, Request) and m.method == "INVITE")


# -- 12. a tripped carrier costs the next call nothing --------------------------------------------
def test_a_tripped_carrier_gets_no_attempt_from_the_next_call() -> None:
    lab = Lab({A: silent, B: answers(200), C: answers(200)})
    lab.feed(invite("first"), CALLER)
    only_request(lab.take(), A, "INVITE")
    lab.proxy.transport_error(A, lab.now)  # ICMP port unreachable from carrier a
    assert lab.moves("a") == [(UP, DOWN, "a unreachable: port unreachable")]
    assert lab.serve() and lab.finals["first"] == 200  # the call itself moved on to b
    assert lab.proxy.counters["state:a:DOWN"] == 1
    call_id, sent = lab.dial()
    assert invites(sent, A) == 0 and invites(sent, B) == 1
    assert lab.finals[call_id] == 200
    assert lab.proxy.counters["invites_to:a"] == 1
    assert lab.proxy.counters["failovers"] == 1  # only the first call failed over


def test_state_changes_reach_on_state_change_through_recovery() -> None:
    lab = Lab({A: silent, B: answers(200), C: answers(200)})  # no prober: trials at once
    lab.trip("a")
    [down] = lab.changes
    assert down.hold_down is not None
    lab.carriers[A] = answers(200)  # the carrier is fixed meanwhile
    lab.step(down.hold_down + 0.01)
    assert lab.health.state("a") is PROBING
    for _ in range(3):
        call_id, sent = lab.dial()
        assert invites(sent, A) == 1 and lab.finals[call_id] == 200
    assert [(old, new) for old, new, _ in lab.moves("a")] == [
        (UP, DOWN),
        (DOWN, PROBING),
        (PROBING, UP),
    ]
    assert lab.changes[-1].reason == "3 trial calls answered"


def test_trial_calls_go_one_at_a_time_through_the_proxy() -> None:
    lab = Lab({A: silent, B: answers(200), C: answers(200)})
    lab.trip("a")
    lab.step(100.0)
    assert lab.health.state("a") is PROBING
    _, first = lab.dial()
    assert invites(first, A) == 1  # the trial
    second_id, second = lab.dial()
    assert invites(second, A) == 0 and lab.finals[second_id] == 200  # a is busy with it
    lab.step(2.5)  # the silent trial times out: back DOWN, and that call moves on to b
    assert lab.moves("a")[-1][:2] == (PROBING, DOWN)
    assert lab.moves("a")[-1][2] == "trial call failed: timeout"


# -- the health timer never spins ----------------------------------------------------------------
def test_a_faster_answer_on_one_call_does_not_stall_the_timers() -> None:
    # The timer learns 0.1 s from call two while call one still waits for its 2 s timer: the
    # old next_deadline() asked for a tick at 0.3 s that tick() ignored, for ever.
    lab = Lab({A: silent, B: answers(200), C: answers(200)})
    lab.dial()
    lab.advance(0.05)
    lab.feed(invite("two"), CALLER)
    to_a = only_request(lab.take(), A, "INVITE")
    lab.advance(0.1)
    lab.feed(reply(to_a, 100), A)
    assert lab.health.response_timeout("a") < 1.0
    lab.step(3.0)
    assert lab.health.state("a") is UP
    assert lab.proxy.counters["attempts:timeout"] == 1  # call one gave up on a at 2 s


def test_hold_down_over_through_the_proxy_timer() -> None:
    lab = Lab({A: silent, B: answers(200), C: answers(200)})
    lab.trip("a")
    lab.step(700.0)
    assert [new for _, new, _ in lab.moves("a")] == [DOWN, PROBING]
    assert lab.health.next_deadline() is None


# -- 4. a silent carrier is found by the probes --------------------------------------------------
def test_silent_carrier_is_tripped_by_probes_within_interval_times_k() -> None:
    probes = ProbeSettings(interval=10.0, interval_out=2.0, timeout=2.0)
    lab = Lab({A: silent, B: answers(200), C: answers(200)}, probes=probes)
    start = lab.now
    bound = probes.interval * lab.health.policy.probe_failures + probes.timeout  # 32 s
    while lab.health.state("a") is UP and lab.now < start + 2 * bound:
        lab.step(0.1)
    [down] = [c for c in lab.changes if c.target == "a"]
    assert (down.old, down.new, down.reason) == (UP, DOWN, "3 OPTIONS timeouts")
    assert down.at - start <= bound
    counters = lab.proxy.counters
    assert counters["probes_failed:a"] == 3 and counters["probes_ok:a"] == 0
    assert counters["attempts:timeout"] == 0  # no call had to find it
    assert lab.health.state("b") is UP and lab.health.state("c") is UP
    assert counters["probes_ok:b"] >= 3 and counters["probes_failed:b"] == 0
    lab.step(10.0)  # the probe already scheduled still keeps the UP interval...
    sent = counters["probes_to:a"]
    lab.step(10.0)  # ...then, out of rotation, a is probed every interval_out
    assert counters["probes_to:a"] - sent == 5


def test_unreachable_on_a_probe_trips_at_once() -> None:
    probes = ProbeSettings(interval=10.0, interval_out=2.0, timeout=2.0)
    lab = Lab({A: silent, B: answers(200), C: answers(200)}, probes=probes)
    while not any(
        f == A and isinstance(m, Request) and m.method == "OPTIONS" for f, m in lab.step(0.05)
    ):
        assert lab.now < 1002.0
    lab.proxy.transport_error(A, lab.now)
    [down] = lab.changes
    assert (down.target, down.old, down.new) == ("a", UP, DOWN)
    assert down.reason == "a unreachable: OPTIONS port unreachable"
    assert down.at == lab.now
    assert lab.proxy.counters["probes_failed:a"] == 1


# -- 3. through the proxy: alive on OPTIONS, 503 on every INVITE ----------------------------------
def test_options_alive_invite_dead_carrier_through_the_proxy() -> None:
    probes = ProbeSettings(interval=10.0, interval_out=2.0, timeout=2.0)
    lab = Lab({A: options_ok_but_invites(503), B: answers(200), C: answers(200)}, probes=probes)
    start = lab.now
    while lab.now < start + 400.0:
        lab.dial()
        lab.step(1.0)
    moves = lab.moves("a")
    assert moves[0] == (UP, DOWN, "5 consecutive 503 from a")
    assert all(new is not UP for _, new, _ in moves)  # good probes never bring it back
    trials = [m for m in moves if m[:2] == (PROBING, DOWN)]
    assert trials and all(reason == "trial call failed: 503" for _, _, reason in trials)
    assert len(moves) == 1 + 2 * len(trials) + (moves[-1][1] is PROBING)
    holds = [c.hold_down or 0.0 for c in lab.changes if c.target == "a" and c.new is DOWN]
    assert holds == sorted(holds) and len(set(holds)) == len(holds)
    assert lab.proxy.counters["invites_to:a"] == 5 + len(trials)  # one INVITE per trial
    assert set(lab.finals.values()) == {200}  # every caller was answered, by b
    assert lab.proxy.counters["probes_ok:a"] > 2 * len(trials)


# -- 7. the panic rule -----------------------------------------------------------------------------
def _request() -> Request:
    message = parse_message(invite())
    assert isinstance(message, Request)
    return message


def test_with_every_target_out_the_plan_uses_them_all_in_config_order() -> None:
    lab = Lab({A: answers(200), B: answers(200), C: answers(200)})
    for name in ("c", "a", "b"):
        lab.trip(name)
    plan = lab.proxy.plan(_request(), lab.now)
    assert [t.name for t in plan] == ["a", "b", "c"]
    assert lab.proxy.counters["panic_plans"] == 1
    call_id, sent = lab.dial()  # a dead route still carries the call, starting with a
    assert invites(sent, A) == 1 and invites(sent, B) == 0 and lab.finals[call_id] == 200
    assert lab.proxy.counters["panic_plans"] == 2


def test_with_one_target_up_the_plan_is_only_that_target() -> None:
    lab = Lab({A: answers(200), B: answers(200), C: answers(200)})
    lab.trip("a")
    lab.trip("c")
    assert [t.name for t in lab.proxy.plan(_request(), lab.now)] == ["b"]
    lab.proxy.apply_health_changes(lab.health.drain("b", lab.now))
    assert [t.name for t in lab.proxy.plan(_request(), lab.now)] == ["a", "b", "c"]
    lab.proxy.apply_health_changes(lab.health.restore("b", lab.now))
    assert [t.name for t in lab.proxy.plan(_request(), lab.now)] == ["b"]
    assert lab.proxy.counters["panic_plans"] == 1


def test_a_probing_target_with_a_free_trial_slot_is_in_the_plan() -> None:
    lab = Lab({A: answers(200), B: answers(200), C: answers(200)})
    for name in ("a", "b", "c"):
        lab.trip(name)
    lab.step(34.0)  # past every first hold-down (30 s + 10 %)
    assert {lab.health.state(n) for n in ("a", "b", "c")} == {PROBING}
    assert [t.name for t in lab.proxy.plan(_request(), lab.now)] == ["a", "b", "c"]
    assert lab.proxy.counters["panic_plans"] == 0


def test_a_carrier_that_goes_out_is_probed_on_the_faster_schedule_at_once() -> None:
    probes = ProbeSettings(interval=10.0, interval_out=2.0, timeout=1.0)
    lab = Lab({A: answers(200), B: answers(200), C: answers(200)}, probes=probes)
    assert lab.prober is not None
    lab.on_change.append(lab.prober.state_changed)
    lab.step(1.5)  # the first probes went out; the next ones are ~10 s away
    before = lab.proxy.counters["probes_to:a"]
    lab.trip("a")
    lab.step(2.1)
    assert lab.proxy.counters["probes_to:a"] == before + 1  # not 10 s later
    assert lab.proxy.counters["probes_to:b"] == 1
