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

    def order(
        self, is_up: Callable[[str], bool], now: float
    ) -> tuple[list[str], list[str], str | None]:
        """Members in the order to try, one explanation line per tier, and a tier change.

        The change, when there is one, reads like "tier 2 promoted: tier 1 has
        no member up" and is meant for the log.
        """
        up_tiers = [t for t in self.tiers if any(is_up(m.name) for m in self._tier(t))]
        change = None
        best = up_tiers[0] if up_tiers else None
        if best is not None and self.active not in up_tiers and best != self.active:
            old, self.active, self.back_since = self.active, best, None
            verb = "promoted" if best > old else "back in front"
            change = f"{self.name}: tier {best} {verb}: tier {old} has no member up"
        elif best is not None and best < self.active:
            if self.back_since is None:
                self.back_since = now
            if now - self.back_since >= self.preempt_delay:
                old, self.active, self.back_since = self.active, best, None
                change = (
                    f"{self.name}: tier {old} demoted: tier {best} up for "
                    f"{self.preempt_delay:g}s (preempt delay)"
                )
        else:
            self.back_since = None
        names: list[str] = []
        explain: list[str] = []
        for tier in [self.active, *(t for t in self.tiers if t != self.active)]:
            members = weighted_order(self._tier(tier), lambda m: m.weight, self.rng)
            names += [m.name for m in members]
            role = "active" if tier == self.active else "standby"
            note = ""
            if tier != self.active and self.back_since is not None and tier == best:
                left = self.preempt_delay - (now - self.back_since)
                note = f", back; takes over in {left:.0f}s (preempt delay)"
            explain.append(
                f"pool {self.name} tier {tier} ({role}{note}): {', '.join(m.name for m in members)}"
            )
        return names, explain, change

    def _tier(self, tier: int) -> list[PoolMember]:
        return [m for m in self.members if m.tier == tier]
