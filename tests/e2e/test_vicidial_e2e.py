"""What a VICIdial/Asterisk server gets from trunkguard when carriers fail: the guide's table.

docs/vicidial.md has a table of cases (a carrier's 503 with Q.850 cause 34, a busy with
cause 17, every carrier down...) and, for each, the one final status and the Reason header
the dialer gets. These tests read that table from the guide and play each row: SIPp stands
in for Asterisk (it sends what ``Dial(SIP/trunkguard/18005550123)`` sends), two SIPp
carriers answer as the row says, and the router runs with the guide's example config
(docs/examples/vicidial-router.yaml: its numbers, decks, blocked prefixes and failover),
moved onto loopback ports. The caller's trace must show exactly the row's status and
Reason, and each carrier's trace which INVITEs reached it.

The DIALSTATUS and HANGUPCAUSE columns are Asterisk's side (read from its source; no
Asterisk runs here, it is not packaged in Debian 12): see tests/unit/test_vicidial_docs.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from router import RouterProcess
from sipp import SipMessage, SippProcess, free_udp_ports, start_uac, start_uas

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "vicidial.md"
EXAMPLE = ROOT / "docs" / "examples" / "vicidial-router.yaml"
# What VICIdial dials for lead 8005550123: exten 918005550123, Dial(${TG}/${EXTEN:1}).
NUMBER = "18005550123"


@dataclass(frozen=True)
class Row:
    case: str
    first: str  # what the first carrier of the plan answers
    second: str
    status: int  # what the dialer gets
    reason: str | None


def outcome_rows(text: str) -> list[Row]:
    """The rows of the guide's outcome table (the one after ``<!-- outcomes -->``)."""
    start = text.index("<!-- outcomes")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if cells[0] in ("Case", "") or set(cells[0]) <= {"-", ":"}:
            continue
        reason = None if cells[4] == "none" else cells[4]
        rows.append(Row(cells[0], cells[1], cells[2], int(cells[3]), reason))
    return rows


ROWS = outcome_rows(GUIDE.read_text(encoding="utf-8"))


def test_the_guide_has_the_outcome_table() -> None:
    assert [r.case for r in ROWS] == ["failover", "all-fail", "busy", "busy-in-503", "silent"]


def _carrier(answer: str, port: int, tmp: Path) -> contextlib.AbstractContextManager[SippProcess]:
    """A SIPp carrier that answers as a table cell says."""
    if answer == "200":
        return start_uas("uas_answer", port=port, trace_messages=True, tmp_root=tmp)
    if answer in ("no answer", "not tried"):  # not tried: it must never see the INVITE
        return start_uas("uas_blackhole", port=port, extra_args=["-set", "fault_from", "0"],
                         trace_messages=True, tmp_root=tmp)
    m = re.fullmatch(r"(\d{3}), Q\.850;cause=(\d+)", answer.replace("`", ""))
    assert m, f"the guide's table has a carrier answer this test cannot play: {answer!r}"
    return start_uas("uas_reject_cause", port=port, reject_code=int(m.group(1)),
                     extra_args=["-key", "cause", m.group(2)], trace_messages=True, tmp_root=tmp)


def _router_config(ports: dict[str, int]) -> dict[str, object]:
    """The example config on loopback: its carriers at these ports, its other sections as is."""
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    carriers = []
    for c in example["carriers"]:
        deck = dict(c["deck"], path=str(EXAMPLE.parent / c["deck"]["path"]))
        carriers.append(dict(c, uri=f"sip:127.0.0.1:{ports[c['name']]}", deck=deck))
    extra = {k: v for k, v in example.items() if k not in ("listen", "allow", "store")}
    extra["carriers"] = carriers
    return extra


@contextlib.contextmanager
def _closing(*procs: SippProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.close()


@pytest.mark.parametrize("row", ROWS, ids=[r.case for r in ROWS])
def test_what_the_dialer_gets(row: Row, tmp_path: Path) -> None:
    # The example's decks put carrier-b first (0.004/min) and carrier-a second.
    pb, pa = free_udp_ports(2)
    extra = _router_config({"carrier-a": pa, "carrier-b": pb})
    if row.case == "silent":
        extra["failover"] = {**extra["failover"], "invite_timeout": 0.5}  # type: ignore[dict-item]
    scenario = "uac_call" if row.status == 200 else "uac_final"
    with (
        _carrier(row.first, pb, tmp_path) as first,
        _carrier(row.second, pa, tmp_path) as second,
        RouterProcess(tmp_path / "router", [], extra=extra) as router,
    ):
        uac = start_uac(
            scenario, router.address, service=NUMBER, pause_ms=100, timeout=15,
            trace_messages=True, tmp_root=tmp_path,
        )
        with _closing(uac):
            result = uac.wait()
            assert result.ok, result.describe()
            sent_from = next(m for m in uac.messages() if m.direction == "S").header("From")
            received = [m for m in uac.messages() if m.direction == "R"]
        finals = [m for m in received if re.match(r"SIP/2.0 [2-6]\d\d ", m.first_line)]
        statuses = {int(m.first_line.split()[1]) for m in finals}
        # One final status, the row's, however many carriers were tried.
        assert statuses == {row.status}, [m.first_line for m in finals]
        assert finals[0].headers("Reason") == ([row.reason] if row.reason else [])
        invites = {
            "first": _invites(first),
            "second": _invites(second),
        }
        for which, answer in (("first", row.first), ("second", row.second)):
            expected = 0 if answer == "not tried" else 1
            assert len(invites[which]) == expected, (which, invites, router.log())
        for invite in invites["first"] + invites["second"]:
            # The carrier gets the E.164 number, and the dialer's From (its caller ID) as is.
            assert invite.first_line.startswith(f"INVITE sip:{NUMBER}@127.0.0.1:"), invite.text
            assert invite.header("From") == sent_from, invite.text
        if row.status == 200:
            assert second.wait_received("BYE", 1, timeout=10), second.describe()
        counters = router.stop()
    print(
        f"\n{row.case}: carriers answered {row.first} / {row.second}; the dialer got "
        f"{row.status}, Reason {row.reason or 'none'}; failovers {counters.get('failovers', 0)}"
    )
    assert counters.get("open:calls_unanswered", 0) == 0, counters
    tried = sum(1 for a in (row.first, row.second) if a != "not tried")
    assert counters.get("failovers", 0) == tried - 1, counters


def _invites(carrier: SippProcess) -> list[SipMessage]:
    seen: dict[str, SipMessage] = {}
    for m in carrier.messages():
        if m.direction == "R" and m.first_line.startswith("INVITE "):
            seen.setdefault(m.header("Call-ID") or "", m)  # retransmissions once
    return list(seen.values())
