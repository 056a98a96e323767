"""The lab's quality scenarios: faults health does not see, which quality must catch.

``false-answer`` (carrier a answers, then hangs up 2 s later) and ``fake-busy``
(a answers 486 to 80 % of calls) leave a UP in health: every answer a gives is
a proper SIP answer. Quality must demote a for the destination, and the
traffic must move to its peer b.

So that a has a peer with traffic to compare against, a and b have the same
rate for the lab's number (a tie: calls spread between them by weight), and c
costs more. The router's quality window is 60 s, longer than a run: once
demoted, a is not re-tested within it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run import LabResult
    from ._scenarios import Scenario

LAB_NUMBER_GROUP = "1"  # the call generator dials 15551234567
LAB_QUALITY: dict[str, object] = {
    "enabled": True,
    "window": 60.0,
    "groups": [LAB_NUMBER_GROUP],
}
RATES = {"a": "0.0100", "b": "0.0100", "c": "0.0200"}
MOVED_SHARE = 0.1  # after the demotion, at most this share of new calls may still go to a


def quality_config(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``config`` with rate decks (a and b tied, c dearer) and the lab's quality section."""
    carriers = []
    for carrier in config["carriers"]:
        name = carrier["name"]
        deck = workdir / f"deck-{name}.csv"
        deck.write_text(f"prefix,rate\n{LAB_NUMBER_GROUP},{RATES.get(name, '0.0300')}\n")
        carriers.append({**carrier, "deck": {"path": str(deck)}})
    return {**config, "carriers": carriers, "quality": LAB_QUALITY}


def measure_quality(result: LabResult, scenario: Scenario) -> None:
    """When quality demoted a, whether health left it UP, and where the calls went after."""
    m = result.metrics
    fault = scenario.fault_at
    faulted = set(scenario.faulted)
    demotions = [
        n
        for n in result.notices
        if n["kind"] == "quality" and n["state"] == "demoted" and n["target"] in faulted
    ]
    first = demotions[0] if demotions else None
    m["quality_demoted_s"] = round(first["t"] - fault, 3) if first else None
    m["quality_reason"] = first["detail"] if first else None
    outs = [
        e
        for e in result.events
        if e["target"] in faulted and e["t"] >= 0 and e["new"] in ("DOWN", "SUSPECT")
    ]
    m["health_outs"] = len(outs)
    after = (first["t"] + 1.0) if first else scenario.duration
    calls = [c for c in result.calls if c["t"] >= after]
    new_to_a = 0
    for prev, cur in zip(result.samples, result.samples[1:], strict=False):
        if cur.t >= after:
            new_to_a += sum(max(0, cur.invites.get(n, 0) - prev.invites.get(n, 0)) for n in faulted)
    m["calls_after_demotion"] = len(calls)
    m["invites_to_faulted_after_demotion"] = new_to_a
    m["answered_by_faulted_after_demotion"] = sum(1 for c in calls if c["answered_by"] in faulted)
    m["busy_after_demotion"] = sum(1 for c in calls if c["final"] == 486)
    before = [c for c in result.calls if fault <= c["t"] < (first["t"] if first else after)]
    m["busy_before_demotion"] = sum(1 for c in before if c["final"] == 486)
    m["short_calls_by_faulted"] = sum(
        1 for c in result.calls if c["answered_by"] in faulted and c.get("ended_by") == "callee"
    )
    checks = result.checks
    checks.append(
        (
            "the faulted carrier stays UP in health",
            not outs,
            f"{len(outs)} DOWN/SUSPECT events" if outs else "no DOWN or SUSPECT",
        )
    )
    checks.append(
        (
            "quality demotes the faulted carrier",
            first is not None,
            f"after {m['quality_demoted_s']} s: {m['quality_reason']}" if first else "never",
        )
    )
    share = new_to_a / len(calls) if calls else 1.0
    checks.append(
        (
            "traffic moves off the demoted carrier",
            first is not None and bool(calls) and share <= MOVED_SHARE,
            f"{new_to_a} new INVITEs to it for {len(calls)} calls after the demotion",
        )
    )


def describe_quality(m: dict[str, Any]) -> list[str]:
    """The quality figures as console lines (none for other scenarios)."""
    if "quality_demoted_s" not in m:
        return []
    return [
        f"quality: demoted {m['quality_demoted_s']} s after the fault ({m['quality_reason']}); "
        f"health outs {m['health_outs']}; after it: {m['calls_after_demotion']} calls, "
        f"{m['invites_to_faulted_after_demotion']} INVITEs to the faulted carrier, "
        f"{m['busy_after_demotion']} busy (before it: {m['busy_before_demotion']}); "
        f"calls the faulted carrier hung up: {m['short_calls_by_faulted']}",
    ]
