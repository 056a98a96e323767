"""Server pools: tiers of targets that are not carriers (the PBX boxes inbound calls go to).

Tier 1 takes the traffic while any of its members is up. When none is, the
next tier with a member up is promoted at once. When a better tier comes back,
the standby is demoted only after ``preempt_delay`` seconds of it staying
back, so a primary that flaps does not drag the traffic with it. Within the
active tier, members share calls by weight; the other tiers follow in the
plan as failover candidates.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ._weights import weighted_order


@dataclass(frozen=True, slots=True)
class PoolMember:
    name: str
    tier: int = 1
    weight: int = 1


class ServerPool:
    def __init__(
        self,
        name: str,
        members: list[PoolMember],
        prefixes: list[str],
        preempt_delay: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.members = members
        self.prefixes = frozenset(prefixes)
        self.preempt_delay = preempt_delay
        self.rng = rng or random.Random()
        self.tiers = sorted({m.tier for m in members})
        self.active = self.tiers[0]
        self.back_since: float | None = None  # a better tier has been up since then
        self._best: int | None = self.active  # the best tier with a member up, at the last update

    def update(self, is_up: Callable[[str], bool], now: float) -> str | None:
        """Move the active tier as the members' health says; the change, for the log.

        Run on a timer and on every health change, never as a side effect of a
        plan, so a plan (and ``trunkguard route``) always shows the live tier.
        A change reads like "tier 2 promoted: tier 1 has no member up".
        """
        up_tiers = [t for t in self.tiers if any(is_up(m.name) for m in self._tier(t))]
        best = up_tiers[0] if up_tiers else None
        self._best = best
        if best is not None and self.active not in up_tiers and best != self.active:
            old, self.active, self.back_since = self.active, best, None
            verb = "promoted" if best > old else "back in front"
            return f"{self.name}: tier {best} {verb}: tier {old} has no member up"
        if best is not None and best < self.active:
            if self.back_since is None:
                self.back_since = now
            if now - self.back_since >= self.preempt_delay:
                old, self.active, self.back_since = self.active, best, None
                return (
                    f"{self.name}: tier {old} demoted: tier {best} up for "
                    f"{self.preempt_delay:g}s (preempt delay)"
                )
            return None
        self.back_since = None
        return None

    def next_deadline(self) -> float | None:
        """When a standby's preempt delay runs out, if one is counting down."""
        return None if self.back_since is None else self.back_since + self.preempt_delay

    def order(self, now: float) -> tuple[list[str], list[str]]:
        """Members in the order to try (active tier first), and one explanation line per tier."""
        names: list[str] = []
        explain: list[str] = []
        for tier in [self.active, *(t for t in self.tiers if t != self.active)]:
            members = weighted_order(self._tier(tier), lambda m: m.weight, self.rng)
            names += [m.name for m in members]
            role = "active" if tier == self.active else "standby"
            note = ""
            if tier != self.active and self.back_since is not None and tier == self._best:
                left = self.preempt_delay - (now - self.back_since)
                note = f", back; takes over in {left:.0f}s (preempt delay)"
            explain.append(
                f"pool {self.name} tier {tier} ({role}{note}): {', '.join(m.name for m in members)}"
            )
        return names, explain

    def _tier(self, tier: int) -> list[PoolMember]:
        return [m for m in self.members if m.tier == tier]
