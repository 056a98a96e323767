"""Least-cost routing end to end: one SIPp caller, the router, three SIPp carriers a, b, c.

Each carrier has a small CSV rate deck (custom column names, a connection fee, billing
increments and a not-yet-effective row), so the cheapest carrier differs per prefix:

=============  ==========================  ============================  ==================
prefix         a                           b                             c
=============  ==========================  ============================  ==================
44             0.05/min 60/60 -> 0.100     0.02/min 60/60 -> 0.040       (no rate)
4420           0.01/min 60/60 -> 0.020     0.009/min + 0.01 -> 0.028     (no rate)
1              0.02/min 60/60 -> 0.040     0.015/min 60/60 -> 0.030      0.01/min 6/6 -> 0.015
1212           (row effective 2099: via 1) 0.005/min 60/60 -> 0.010      0.009/min 6/6 -> 0.0135
1900           (via 1)                     0.001/min                     0.0005/min
33             0.03/min -> 0.060           0.01/min -> 0.020             0.04/min 6/6 -> 0.060
=============  ==========================  ============================  ==================

(cost of a 90 s call.) So 4420... goes to a (b's lower per-minute rate loses to its
connection fee), 447... to b (a's only match is its dear 44), 1212... to b, other 1...
to c, and c is never offered 44....

Every check reads what the carriers themselves received: the Call-ID of the caller's
INVITE is looked up in each carrier's message trace, and the Request-URI user of the
INVITE the carrier got is read from its full-message trace. Figures are printed
(``pytest -s``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from router import RouterProcess
from sipp import (
    SipMessage,
    UacResult,
    Uas,
    free_udp_ports,
    read_messages,
    run_uac,
    start_uas,
)

pytestmark = pytest.mark.e2e

NAMES = ("a", "b", "c")

# Column header names of the decks below (matched without regard to case by the router).
DECK_COLUMNS = {
    "prefix": "Prefix",
    "rate": "Rate",
    "connection_fee": "Setup",
    "increment": "Billing",
    "effective": "Effective",
    "description": "Destination",
}
DECK_HEADER = "Prefix,Destination,Rate,Setup,Billing,Effective"
DECKS: dict[str, list[str]] = {
    "a": [
        "44,United Kingdom,0.0500,0,60/60,",
        "4420,United Kingdom - London,0.0100,0,60/60,",
        "1,USA,0.0200,0,60/60,",
        # Not in force yet: were it used, a would be by far the cheapest for 1212.
        "1212,USA - New York,0.0001,0,60/60,2099-01-01",
        "33,France,0.0300,0,60/60,",
    ],
    "b": [
        "44,United Kingdom,0.0200,0,60/60,",
        "4420,United Kingdom - London,0.0090,0.0100,60/60,",
        "1,USA,0.0150,0,60/60,",
        "1212,USA - New York,0.0050,0,60/60,",
        "1900,USA premium,0.0010,0,60/60,",
        "33,France,0.0100,0,60/60,",
    ],
    "c": [
        "1,USA,0.0100,0,6/6,",
        "1212,USA - New York,0.0090,0,6/6,",
        "1900,USA premium,0.0005,0,6/6,",
        "33,France,0.0400,0,6/6,",
    ],
}

LONDON = "442079460000"
MOBILE_UK = "447700900123"
NEW_YORK = "12125551234"
MIAMI = "13055551234"
PREMIUM = "19005551234"
PARIS = "33123456789"

# Fast keepalives, so that a killed carrier is found DOWN within about a second.
FAST_PROBES = {"interval": 0.5, "interval_out": 0.5, "timeout": 0.5}

UAS_LIFETIME = 90.0
CALL_TIMEOUT = 10.0


def request_user(first_line: str) -> str | None:
    """User part of a request line's URI: ``INVITE sip:USER@host:port SIP/2.0``."""
    parts = first_line.split()
    if len(parts) < 2:
        return None
    uri = parts[1]
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips") or "@" not in rest:
        return None
    return rest.split("@", 1)[0]


# --------------------------------------------------------------------------------- lab


@dataclass(frozen=True)
class Dial:
    """One call as both ends saw it."""

    dialled: str
    result: UacResult
    elapsed: float
    call_id: str
    reached: dict[str, str | None]  # carrier -> Request-URI user of the INVITE it got

    @property
    def final(self) -> int | None:
        return self.result.final_codes[0] if self.result.final_codes else None

    def line(self) -> str:
        where = ", ".join(f"{n} as {u}" for n, u in self.reached.items()) or "no carrier"
        return (
            f"  dialled {self.dialled:>16} -> {where}; caller got {self.final} "
            f"in {self.elapsed * 1000:.0f} ms"
        )


class Lab:
    def __init__(self, tmp_path: Path, router: RouterProcess, carriers: dict[str, Uas]) -> None:
        self.tmp_path = tmp_path
        self.router = router
        self.carriers = carriers
        self.dials: list[Dial] = []

    def dial(self, number: str, scenario: str = "uac_call") -> Dial:
        started = time.monotonic()
        result = run_uac(
            scenario,
            self.router.address,
            service=number,
            timeout=CALL_TIMEOUT,
            trace_messages=True,
            tmp_root=self.tmp_path / "callers",
        )
        elapsed = time.monotonic() - started
        sent = [m for m in result.messages if m.direction == "S" and m.method == "INVITE"]
        assert sent, result.describe()
        call_id = sent[0].call_id
        if result.ok and scenario == "uac_call":
            # Answered: the carrier that answered has its INVITE in its trace already.
            assert any(call_id in self.invite_call_ids(n) for n in NAMES), result.describe()
        dial = Dial(number, result, elapsed, call_id, self.reached_by(call_id))
        self.dials.append(dial)
        print(dial.line())
        return dial

    def invite_call_ids(self, name: str) -> list[str]:
        """Call-IDs of the distinct INVITEs carrier ``name`` received, in arrival order."""
        seen: dict[str, None] = {}
        for m in self.carriers[name].short_messages():
            if m.direction == "R" and m.method == "INVITE":
                seen.setdefault(m.call_id)
        return list(seen)

    def invite_times(self, name: str) -> list[float]:
        """Wall-clock time at which each distinct INVITE reached carrier ``name``."""
        first: dict[str, float] = {}
        for m in self.carriers[name].short_messages():
            if m.direction == "R" and m.method == "INVITE":
                first.setdefault(m.call_id, m.time)
        return list(first.values())

    def invites(self) -> dict[str, int]:
        return {n: len(self.invite_call_ids(n)) for n in NAMES}

    def reached_by(self, call_id: str) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for name in NAMES:
            if call_id not in self.invite_call_ids(name):
                continue
            uas = self.carriers[name]
            found: list[SipMessage] = []

            def invite_in_trace(uas: Uas = uas, found: list[SipMessage] = found) -> bool:
                for m in uas.messages():
                    if (
                        m.direction == "R"
                        and m.first_line.startswith("INVITE ")
                        and m.header("Call-ID") == call_id
                    ):
                        found.append(m)
                        return True
                return False

            uas.wait_until(invite_in_trace, timeout=3.0)
            out[name] = request_user(found[0].first_line) if found else None
        return out

    def caller_final_message(self, dial: Dial) -> SipMessage | None:
        """The final response to the INVITE as the caller received it (full text)."""
        for m in read_messages(dial.result.workdir / "messages.log"):
            if m.direction != "R" or not m.first_line.startswith("SIP/2.0 "):
                continue
            if int(m.first_line.split()[1]) >= 200 and "INVITE" in (m.header("CSeq") or ""):
                return m
        return None

    @property
    def events_db(self) -> Path:
        return self.router.workdir / "events.db"

    def wait_state(
        self, target: str, new: str, since: float, timeout: float
    ) -> tuple[float, str] | None:
        """The first logged change of ``target`` to ``new`` at or after ``since`` (wall
        clock): (at, reason), polling the router's event log; None after ``timeout`` s."""
        end = time.monotonic() + timeout
        while True:
            with contextlib.suppress(sqlite3.Error):
                db = sqlite3.connect(f"file:{self.events_db}?mode=ro", uri=True, timeout=1.0)
                try:
                    row = db.execute(
                        "SELECT at, reason FROM events WHERE target = ? AND new = ? AND at >= ?"
                        " ORDER BY id LIMIT 1",
                        (target, new, since),
                    ).fetchone()
                finally:
                    db.close()
                if row is not None:
                    return float(row[0]), str(row[1])
            if time.monotonic() >= end:
                return None
            time.sleep(0.05)


def write_decks(directory: Path) -> None:
    for name, rows in DECKS.items():
        (directory / f"{name}.csv").write_text("\n".join([DECK_HEADER, *rows]) + "\n")


@contextlib.contextmanager
def routing_lab(
    tmp_path: Path,
    *,
    numbers: Mapping[str, object] | None = None,
    routes: Sequence[Mapping[str, object]] | None = None,
    blocked: list[str] | None = None,
    probe: Mapping[str, object] | None = None,
) -> Iterator[Lab]:
    """Carriers a, b, c (SIPp ``uas_answer``) with their decks, and the router before them."""
    workdir = tmp_path / "router"
    workdir.mkdir(parents=True)
    write_decks(workdir)  # deck paths are relative to router.yaml, written in the same place
    carrier_ports = dict(zip(NAMES, free_udp_ports(len(NAMES)), strict=True))
    extra: dict[str, object] = {
        "carriers": [
            {
                "name": name,
                "uri": f"sip:127.0.0.1:{port}",
                "deck": {"path": f"{name}.csv", **DECK_COLUMNS},
            }
            for name, port in carrier_ports.items()
        ]
    }
    if numbers is not None:
        extra["numbers"] = dict(numbers)
    if routes is not None:
        extra["routes"] = [dict(r) for r in routes]
    if blocked is not None:
        extra["blocked"] = blocked
    if probe is not None:
        extra["probe"] = dict(probe)
    with contextlib.ExitStack() as stack:
        carriers = {
            name: stack.enter_context(
                start_uas(
                    "uas_answer",
                    port=port,
                    trace_messages=True,
                    lifetime=UAS_LIFETIME,
                    tmp_root=tmp_path / f"carrier-{name}",
                )
            )
            for name, port in carrier_ports.items()
        }
        router = stack.enter_context(
            RouterProcess(workdir, list(carrier_ports.items()), extra=extra)
        )
        yield Lab(tmp_path, router, carriers)


def assert_nothing_open(counters: dict[str, int]) -> None:
    assert counters.get("open:calls_unanswered", 0) == 0, counters
    assert counters.get("open:branches_pending", 0) == 0, counters


# ------------------------------------------------------------------------------- tests


def test_same_number_goes_to_the_cheapest_for_its_prefix(tmp_path: Path) -> None:
    with routing_lab(tmp_path) as lab:
        print("\ncheapest per prefix (default number rules):")
        london = [lab.dial("+" + LONDON) for _ in range(3)]
        mobile = lab.dial("+" + MOBILE_UK)
        for d in london:
            assert d.result.ok, d.result.describe()
            # a: 0.020 for 90 s beats b's 0.028 (lower rate, but a connection fee).
            assert d.reached == {"a": LONDON}, d.line()
        # Same country, other prefix: a's longest match is its dear 44, b is cheapest.
        assert mobile.result.ok, mobile.result.describe()
        assert mobile.reached == {"b": MOBILE_UK}, mobile.line()
        time.sleep(0.3)
        invites = lab.invites()
        counters = lab.router.stop()
    print(f"  INVITEs per carrier: {invites}")
    assert invites == {"a": 3, "b": 1, "c": 0}
    assert counters["calls_answered"] == 4
    assert counters.get("failovers", 0) == 0
    assert_nothing_open(counters)


def test_other_prefix_in_e164_national_and_tech_prefix_forms(tmp_path: Path) -> None:
    numbers = {"country_code": "1", "national_lengths": [10], "tech_prefixes": ["8899"]}
    with routing_lab(tmp_path, numbers=numbers) as lab:
        print(f"\nother prefixes, numbers: {numbers}:")
        forms = [
            NEW_YORK,  # E.164 digits
            "+" + NEW_YORK,  # with +
            NEW_YORK[1:],  # national, 10 digits: country code 1 added
            "8899" + NEW_YORK[1:],  # tech prefix, then national
            "8899" + NEW_YORK,  # tech prefix, then E.164 digits
        ]
        for form in forms:
            d = lab.dial(form)
            assert d.result.ok, d.result.describe()
            # b: 0.010 for 90 s, c 0.0135; a's 1212 row is not in force yet (a: 0.040 via 1).
            assert d.reached == {"b": NEW_YORK}, d.line()
        miami = lab.dial(MIAMI[1:])
        assert miami.result.ok, miami.result.describe()
        assert miami.reached == {"c": MIAMI}, miami.line()  # c's 6/6 billing: 0.015
        london = lab.dial("011" + LONDON)  # international access code
        assert london.result.ok, london.result.describe()
        assert london.reached == {"a": LONDON}, london.line()
        time.sleep(0.3)
        invites = lab.invites()
        counters = lab.router.stop()
    print(f"  INVITEs per carrier: {invites}")
    assert invites == {"a": 1, "b": len(forms), "c": 1}
    assert counters["calls_answered"] == len(forms) + 2
    assert counters.get("failovers", 0) == 0
    assert_nothing_open(counters)


def test_cheapest_down_next_cheapest_gets_the_call(tmp_path: Path) -> None:
    with routing_lab(tmp_path, probe=FAST_PROBES) as lab:
        print(f"\ncheapest carrier DOWN (probes {FAST_PROBES}):")
        before = lab.dial("+" + LONDON)
        assert before.result.ok, before.result.describe()
        assert before.reached == {"a": LONDON}, before.line()

        killed_at = time.time()
        lab.carriers["a"].kill()  # the port closes: the kernel answers ICMP port unreachable
        down = lab.wait_state("a", "DOWN", killed_at, timeout=10.0)
        assert down is not None, f"a not DOWN 10 s after its kill:\n{lab.router.log()}"
        down_at, reason = down
        print(f"  a killed; DOWN in the event log {down_at - killed_at:.3f} s later: {reason}")

        after = [lab.dial("+" + LONDON) for _ in range(2)]
        for d in after:
            assert d.result.ok, d.result.describe()
            # Next-cheapest for 4420: b (0.028); c has no rate for 44.
            assert d.reached == {"b": LONDON}, d.line()
        b_times = lab.invite_times("b")
        time.sleep(0.3)
        invites = lab.invites()
        counters = lab.router.stop()
    print(
        f"  INVITEs per carrier: {invites}; router counters: invites_to:a "
        f"{counters.get('invites_to:a', 0)}, invites_to:b {counters.get('invites_to:b', 0)}, "
        f"attempts:unreachable {counters.get('attempts:unreachable', 0)}"
    )
    assert all(t >= down_at for t in b_times), (b_times, down_at)
    assert invites == {"a": 1, "b": 2, "c": 0}
    # a's SIPp is gone, so its trace cannot show INVITEs sent after the kill; the router's
    # own count can, and an INVITE to the closed port would have come back unreachable.
    assert counters["invites_to:a"] == 1, counters
    assert counters.get("attempts:unreachable", 0) == 0, counters
    assert counters.get("failovers", 0) == 0, counters
    assert counters["calls_answered"] == 3
    assert_nothing_open(counters)


def test_blocked_prefix_gets_403_and_no_carrier_sees_it(tmp_path: Path) -> None:
    numbers = {"country_code": "1", "national_lengths": [10]}
    with routing_lab(tmp_path, numbers=numbers, blocked=["1900"]) as lab:
        print("\nblocked prefix 1900 (b and c have cheap rates for it):")
        forms = [PREMIUM, "+" + PREMIUM, PREMIUM[1:], "011" + PREMIUM]
        for form in forms:
            d = lab.dial(form, scenario="uac_final")
            assert d.result.ok, d.result.describe()
            assert d.result.final_codes == [403], d.result.describe()
            assert d.reached == {}, d.line()
            final = lab.caller_final_message(d)
            assert final is not None
            warning = final.header("Warning")
            print(f"    Warning: {warning}")
            assert warning is not None and "blocked prefix 1900" in warning, final.text
        control = lab.dial(NEW_YORK)  # same country, not blocked
        assert control.result.ok, control.result.describe()
        assert control.reached == {"b": NEW_YORK}, control.line()
        time.sleep(0.5)
        invites = lab.invites()
        counters = lab.router.stop()
    print(f"  INVITEs per carrier: {invites}; calls_blocked {counters.get('calls_blocked', 0)}")
    assert invites == {"a": 0, "b": 1, "c": 0}
    assert counters["calls_blocked"] == len(forms)
    assert sum(v for k, v in counters.items() if k.startswith("invites_to:")) == 1, counters
    assert_nothing_open(counters)


def test_pin_route_sends_only_to_the_pinned_carrier(tmp_path: Path) -> None:
    routes: list[dict[str, object]] = [
        {"prefix": "33", "pin": ["c"]},  # b would be cheapest for 33
        {"prefix": "447", "exclude": ["b"]},  # b would be cheapest for 447
    ]
    with routing_lab(tmp_path, routes=routes, probe=FAST_PROBES) as lab:
        print(f"\nroute rules {routes}:")
        paris = [lab.dial("+" + PARIS) for _ in range(2)]
        for d in paris:
            assert d.result.ok, d.result.describe()
            assert d.reached == {"c": PARIS}, d.line()
        mobile = lab.dial("+" + MOBILE_UK)
        assert mobile.result.ok, mobile.result.describe()
        assert mobile.reached == {"a": MOBILE_UK}, mobile.line()
        london = lab.dial("+" + LONDON)  # no rule: cost order as usual
        assert london.result.ok, london.result.describe()
        assert london.reached == {"a": LONDON}, london.line()
        before = lab.invites()

        # Pinned means only c: with c gone, the call fails rather than going to a or b.
        killed_at = time.time()
        lab.carriers["c"].kill()
        down = lab.wait_state("c", "DOWN", killed_at, timeout=10.0)
        assert down is not None, f"c not DOWN 10 s after its kill:\n{lab.router.log()}"
        print(f"  c killed; DOWN after {down[0] - killed_at:.3f} s: {down[1]}")
        refused = lab.dial("+" + PARIS, scenario="uac_final")
        assert refused.result.ok, refused.result.describe()
        assert refused.final is not None and refused.final >= 400, refused.result.describe()
        assert refused.reached == {}, refused.line()
        time.sleep(0.5)
        after = lab.invites()
        counters = lab.router.stop()
    print(
        f"  INVITEs per carrier: {after}; pinned call with c DOWN ended {refused.final}; "
        f"router: invites_to:c {counters.get('invites_to:c', 0)}, "
        f"panic_plans {counters.get('panic_plans', 0)}, "
        f"attempts:unreachable {counters.get('attempts:unreachable', 0)}"
    )
    assert before == {"a": 2, "b": 0, "c": 2}
    assert after["a"] == before["a"] and after["b"] == before["b"]
    assert counters["invites_to:a"] == 2 and counters.get("invites_to:b", 0) == 0, counters
    assert counters["calls_answered"] == 4
    assert_nothing_open(counters)


def test_number_no_carrier_has_a_rate_for_gets_404(tmp_path: Path) -> None:
    with routing_lab(tmp_path) as lab:
        print("\nno rate anywhere (81...):")
        d = lab.dial("+81312345678", scenario="uac_final")
        assert d.result.ok, d.result.describe()
        assert d.result.final_codes == [404], d.result.describe()
        assert d.reached == {}, d.line()
        final = lab.caller_final_message(d)
        assert final is not None
        print(f"    Warning: {final.header('Warning')}")
        time.sleep(0.3)
        invites = lab.invites()
        counters = lab.router.stop()
    print(f"  INVITEs per carrier: {invites}; calls_unroutable {counters.get('calls_unroutable')}")
    assert invites == {"a": 0, "b": 0, "c": 0}
    assert counters["calls_unroutable"] == 1
    assert_nothing_open(counters)
