"""The dial-level controller: a campaign's healthy capacity in, level changes out. Pure.

Invariants, in plain words:
- A campaign's capacity is the share of its carriers' weight that is healthy: an UP
  carrier counts fully, a SUSPECT one for ``degraded`` (every route degraded is a fall
  too), one DOWN, PROBING, DRAINED or FORCED_DOWN not at all. PROBING is a carrier whose
  hold-down is over but that has not proven itself yet: one still dead passes through it
  at each hold-down, and must not raise the level.
- The level for a share is the level of the lowest step whose ``below`` the share is
  under, else the normal level. Going down happens as soon as the share falls under a
  bound; going back up needs the share ``hysteresis`` above it, so a share hovering at a
  bound does not flap the dialer.
- Two changes of one campaign are at least ``min_interval`` apart. A change held back
  by it is not lost: :meth:`next_deadline` says when to ask again, and the level then
  is the one the capacity of that moment calls for.
- The controller believes the dialer is at the level it last asked for. A change the
  dialer did not take (:meth:`failed`) makes the level unknown; it is asked again after
  ``retry_after``, with the level the capacity calls for then.
- Dry run changes nothing in this logic: the changes come out marked, and are only logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..health import State
from ._settings import CampaignSettings, Step

_DEGRADED = frozenset({State.SUSPECT})


@dataclass(frozen=True, slots=True)
class Capacity:
    share: float  # 0..1
    states: tuple[tuple[str, State | None], ...] = ()  # each carrier's, for the reason

    @property
    def shown(self) -> str:
        return f"{self.share:.0%}"

    @property
    def detail(self) -> str:
        """``a DOWN, b UP, c UP``: worked out only for a change's reason."""
        if not self.states:
            return "no carrier"
        return ", ".join(f"{n} {s.value if s is not None else 'unknown'}" for n, s in self.states)


def capacity(
    carriers: Sequence[tuple[str, float]], states: Mapping[str, State], degraded: float
) -> Capacity:
    """The healthy share of ``carriers`` (name, weight); a carrier with no state is out."""
    total = 0.0
    healthy = 0.0
    for name, weight in carriers:
        total += weight
        state = states.get(name)
        if state is State.UP:
            healthy += weight
        elif state in _DEGRADED:
            healthy += weight * degraded
    if total <= 0:
        return Capacity(0.0)
    return Capacity(healthy / total, tuple((n, states.get(n)) for n, _ in carriers))


def level_for(share: float, campaign: CampaignSettings) -> tuple[float, Step | None]:
    """The level ``share`` calls for, and the step that gives it (None: the normal level)."""
    found: Step | None = None
    for step in campaign.steps:  # highest bound first: the last one the share is under wins
        if share < step.below:
            found = step
    return (campaign.normal, None) if found is None else (found.level, found)


def shown(level: float | None) -> str:
    """A level as VICIdial takes it: ``3.0``, ``2.5``, ``1.25``."""
    if level is None:
        return "unknown"
    text = f"{level:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


@dataclass(frozen=True, slots=True)
class LevelChange:
    campaign: str
    old: float | None  # None: not known (a change before did not reach the dialer)
    new: float
    share: float
    reason: str
    at: float
    dry_run: bool = False
    retry: bool = False  # sent again after a failure


@dataclass(slots=True)
class _Campaign:
    settings: CampaignSettings
    level: float | None  # what the dialer is believed to have
    changed: float | None = None  # when it was last asked to change
    retry_at: float | None = None  # level unknown: ask again from then
    wait_until: float | None = None  # a change is held back by min_interval until then


class DialController:
    def __init__(self, campaigns: Sequence[CampaignSettings]) -> None:
        self.campaigns: dict[str, _Campaign] = {}
        self.reconfigure(campaigns)

    def reconfigure(self, campaigns: Sequence[CampaignSettings]) -> None:
        """New settings; a campaign that stays keeps its level and its last change's time."""
        old = self.campaigns
        self.campaigns = {}
        for c in campaigns:
            before = old.get(c.id)
            if before is None:
                self.campaigns[c.id] = _Campaign(c, c.normal)
            else:
                before.settings = c
                self.campaigns[c.id] = before

    def level(self, campaign: str) -> float | None:
        return self.campaigns[campaign].level

    def evaluate(self, capacities: Mapping[str, Capacity], now: float) -> list[LevelChange]:
        """The changes the capacities call for now (campaigns missing from them: none)."""
        out = []
        for cid, c in self.campaigns.items():
            cap = capacities.get(cid)
            if cap is None:
                continue
            change = self._one(c, cap, now)
            if change is not None:
                out.append(change)
        return out

    def _one(self, c: _Campaign, cap: Capacity, now: float) -> LevelChange | None:
        s = c.settings
        down, down_step = level_for(cap.share, s)
        up, _ = level_for(cap.share - s.hysteresis, s)
        c.wait_until = None
        if c.level is None:
            if c.retry_at is not None and now < c.retry_at:
                return None
            new, why = down, "the last change did not reach the dialer: sending it again"
            retry = True
        elif down < c.level:
            new = down
            assert down_step is not None
            why = f"below {down_step.below:.0%}"
            retry = False
        elif up > c.level:
            new = up
            why = self._up_reason(up, s)
            retry = False
        else:
            return None
        if c.changed is not None and now < c.changed + s.min_interval and not retry:
            c.wait_until = c.changed + s.min_interval
            return None
        old = c.level
        c.level = new
        c.changed = now
        c.retry_at = None
        reason = (
            f"capacity {cap.shown} ({cap.detail}), {why}: "
            f"auto_dial_level {shown(old)} -> {shown(new)}"
        )
        return LevelChange(s.id, old, new, cap.share, reason, now, s.dry_run, retry)

    @staticmethod
    def _up_reason(new: float, s: CampaignSettings) -> str:
        # The bound crossed on the way up: the top of the band just under the new level.
        bound = max((st.below for st in s.steps if st.level < new), default=None)
        if bound is None:
            return "back"
        return f"back above {bound:.0%} + {s.hysteresis:.0%} hysteresis"

    def failed(self, campaign: str, now: float, retry_after: float) -> None:
        """The dialer did not take the last change: its level is not known any more."""
        c = self.campaigns.get(campaign)
        if c is None:
            return
        c.level = None
        c.retry_at = now + retry_after

    def next_deadline(self) -> float | None:
        """When to evaluate again although no capacity changed (min_interval, a retry)."""
        times = [
            t
            for c in self.campaigns.values()
            for t in (c.wait_until, c.retry_at if c.level is None else None)
            if t is not None
        ]
        return min(times, default=None)
