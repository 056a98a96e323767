"""The lab's named scenarios: which fault, on which carrier, when, and what must hold.

Every scenario runs the same shape: calls at a steady rate through a router
in front of simulated carriers a, b, c (a the cheapest, tried first; some
scenarios use a and b only); the fault is injected into a (or all of them) at
``fault_at`` and, for some, taken back at ``recover_at``. The router registers
to the carriers named in ``registers``: those are registrars too, and refuse
INVITEs with 403 while the router is not registered. The ``quality`` ones
(``_quality``) tie a and b on cost, so they share the calls, and turn quality on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._carrier import Mode


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    fault: Mode
    fault_at: float = 10.0
    duration: float = 35.0
    recover_at: float | None = None
    faulted: tuple[str, ...] = ("a",)
    rate: float = 20.0
    hold: float = 2.0
    expect_failed: bool = False  # all-down: calls must fail, cleanly
    carriers: tuple[str, ...] = ("a", "b", "c")
    registers: tuple[str, ...] = ()  # carriers the router registers to
    quality: bool = False  # rate decks with a and b tied, quality on: a quality fault
    notes: list[str] = field(default_factory=list)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "kill-primary",
            "carrier a's process dies: its port closes and the kernel answers ICMP",
            Mode("killed"),
        ),
        Scenario(
            "reject-503",
            "carrier a answers every INVITE with 503 (and OPTIONS with 200)",
            Mode("reject", code=503),
        ),
        Scenario(
            "options-only-alive",
            "carrier a answers OPTIONS but rejects every INVITE: keepalives alone look fine",
            Mode("options-only", code=503),
        ),
        Scenario(
            "blackhole",
            "carrier a receives everything and answers nothing",
            Mode("blackhole"),
        ),
        Scenario(
            # The silent-carrier figure (docs/silent-carrier.md): how many new calls a
            # carrier that stops answering still gets at 50 calls/s.
            "blackhole-50",
            "carrier a receives everything and answers nothing, at 50 calls/s",
            Mode("blackhole"),
            fault_at=8.0,
            duration=20.0,
            rate=50.0,
        ),
        Scenario(
            # From the start: a carrier whose latency varies is its normal, not a fault.
            # (One that turns from 1 ms to 50 ms at once is held back for its first slow
            # answers, until they are in its figures: docs/silent-carrier.md.)
            "jitter",
            "carrier a takes each request up 1 to 50 ms late (its 100 Trying too), "
            "at 50 calls/s: nothing to fail over for",
            Mode("jitter", delay_ms=1, jitter_ms=50),
            fault_at=0.0,
            duration=20.0,
            rate=50.0,
        ),
        Scenario(
            "slow-answer",
            "carrier a answers every request 3 s late, past invite_timeout",
            Mode("slow", delay_ms=3000),
        ),
        Scenario(
            "flap",
            "carrier a alternates 4 s healthy, 4 s dead for 32 s",
            Mode("flap", period_s=4.0),
            fault_at=5.0,
            duration=45.0,
            recover_at=37.0,
        ),
        Scenario(
            "recover",
            "carrier a dies, then comes back healthy 12 s later",
            Mode("killed"),
            fault_at=8.0,
            duration=40.0,
            recover_at=20.0,
        ),
        Scenario(
            "all-down",
            "every carrier's process dies: calls must fail cleanly, none hang",
            Mode("killed"),
            faulted=("a", "b", "c"),
            duration=25.0,
            expect_failed=True,
        ),
        Scenario(
            # Calls start right after the router registered, so it refreshes at 5, 10,
            # 15 s...: the registrar goes silent 1 s after a refresh, near the worst case
            # (the loss shows only at the next refresh), and comes back between two of the
            # router's backed-off retries.
            "registration-drop",
            "carrier a's registrar stops answering REGISTER for 15 s; a answers calls until "
            "its binding lapses, then refuses them with 403",
            Mode("registrar-silent"),
            fault_at=6.0,
            duration=32.0,
            recover_at=21.0,
            carriers=("a", "b"),
            registers=("a",),
        ),
        Scenario(
            # Calls are held 8 s, so a 2 s call is a short one (under quality.short_call, 6 s).
            "false-answer",
            "carrier a answers 200 and hangs up 2 s later; a and b share the traffic",
            Mode("false-answer", hangup_ms=2000),
            fault_at=4.0,
            duration=30.0,
            hold=8.0,
            quality=True,
        ),
        Scenario(
            "fake-busy",
            "carrier a answers 486 to 80 % of calls; a and b share the traffic",
            Mode("fake-busy", busy_pct=80),
            fault_at=4.0,
            duration=30.0,
            quality=True,
        ),
    )
}
