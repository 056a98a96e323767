"""The dial-level controller on a fake clock: every move, hold-back and retry.

The table used throughout: normal 3.0; below 80 % -> 2.0; below 50 % -> 1.0;
below 20 % -> 0 (stop), hysteresis 10 %, min_interval 30 s.
"""

from __future__ import annotations

import itertools

import pytest

from trunkguard.dialer import (
    CampaignSettings,
    Capacity,
    DialController,
    Step,
    capacity,
    level_for,
    shown,
)
from trunkguard.health import State

STEPS = (Step(0.8, 2.0), Step(0.5, 1.0), Step(0.2, 0.0))
CAMP = CampaignSettings("SALES", normal=3.0, steps=STEPS, hysteresis=0.1, min_interval=30.0)


def cap(share: float) -> dict[str, Capacity]:
    return {"SALES": Capacity(share, (("a", State.UP), ("b", State.DOWN)))}


def controller(**kw: object) -> DialController:
    import dataclasses

    return DialController([dataclasses.replace(CAMP, **kw)])  # type: ignore[arg-type]


# -- capacity ------------------------------------------------------------------------------


def test_capacity_weights_and_states() -> None:
    carriers = [("a", 1.0), ("b", 1.0), ("c", 2.0)]
    assert capacity(carriers, {"a": State.UP, "b": State.UP, "c": State.UP}, 0.5).share == 1.0
    got = capacity(carriers, {"a": State.DOWN, "b": State.UP, "c": State.UP}, 0.5)
    assert got.share == pytest.approx(0.75)
    assert got.detail == "a DOWN, b UP, c UP"
    # every route degraded: SUSPECT counts for `degraded`
    got = capacity(carriers, {"a": State.SUSPECT, "b": State.SUSPECT, "c": State.SUSPECT}, 0.5)
    assert got.share == pytest.approx(0.5)
    got = capacity(carriers, {"a": State.SUSPECT, "b": State.UP, "c": State.SUSPECT}, 0.25)
    assert got.share == pytest.approx((0.25 + 1 + 2 * 0.25) / 4)
    # PROBING has not proven itself yet: a dead carrier passes through it at each hold-down
    for out in (State.DOWN, State.PROBING, State.DRAINED, State.FORCED_DOWN):
        assert capacity([("a", 1.0)], {"a": out}, 0.5).share == 0.0
    assert capacity([("a", 1.0)], {}, 0.5).share == 0.0  # unknown: out
    assert capacity([("a", 1.0)], {}, 0.5).detail == "a unknown"
    assert capacity([], {}, 0.5) == Capacity(0.0)
    assert capacity([], {}, 0.5).detail == "no carrier"


def test_level_for_every_band_and_bound() -> None:
    cases = [
        (1.0, 3.0), (0.8, 3.0), (0.79, 2.0), (0.5, 2.0), (0.49, 1.0), (0.2, 1.0),
        (0.19, 0.0), (0.0, 0.0), (-0.05, 0.0),
    ]
    for share, level in cases:
        assert level_for(share, CAMP)[0] == level, share
    assert level_for(0.9, CAMP)[1] is None
    assert level_for(0.6, CAMP)[1] == Step(0.8, 2.0)


def test_shown_as_vicidial_takes_it() -> None:
    assert [shown(x) for x in (3, 3.0, 2.5, 1.25, 0, 18)] == [
        "3.0", "3.0", "2.5", "1.25", "0.0", "18.0"
    ]
    assert shown(None) == "unknown"


# -- moves ---------------------------------------------------------------------------------


def test_full_capacity_changes_nothing() -> None:
    c = controller()
    assert c.evaluate(cap(1.0), 0.0) == []
    assert c.level("SALES") == 3.0
    assert c.next_deadline() is None


def test_step_by_step_down_then_restore() -> None:
    c = controller()
    ch = c.evaluate(cap(2 / 3), 100.0)
    assert [(x.old, x.new) for x in ch] == [(3.0, 2.0)]
    assert ch[0].reason == (
        "capacity 67% (a UP, b DOWN), below 80%: auto_dial_level 3.0 -> 2.0"
    )
    ch = c.evaluate(cap(1 / 3), 130.0)
    assert [(x.old, x.new) for x in ch] == [(2.0, 1.0)]
    ch = c.evaluate(cap(0.0), 160.0)
    assert [(x.old, x.new) for x in ch] == [(1.0, 0.0)]
    ch = c.evaluate(cap(1.0), 190.0)  # all back at once: straight to normal
    assert [(x.old, x.new) for x in ch] == [(0.0, 3.0)]
    assert "back above 80% + 10% hysteresis" in ch[0].reason


def test_a_fall_of_several_bands_is_one_change() -> None:
    c = controller()
    ch = c.evaluate(cap(0.1), 0.0)
    assert [(x.old, x.new) for x in ch] == [(3.0, 0.0)]
    assert "below 20%" in ch[0].reason


def test_hysteresis_on_the_way_up_only() -> None:
    c = controller()
    c.evaluate(cap(0.7), 0.0)  # 2.0
    for share in (0.8, 0.85, 0.899):  # above the bound, but not by the hysteresis
        assert c.evaluate(cap(share), 100.0) == []
    ch = c.evaluate(cap(0.9), 100.0)
    assert [(x.old, x.new) for x in ch] == [(2.0, 3.0)]
    # down again needs only the bound
    ch = c.evaluate(cap(0.79), 200.0)
    assert [(x.old, x.new) for x in ch] == [(3.0, 2.0)]


def test_up_by_part_of_the_way() -> None:
    c = controller()
    c.evaluate(cap(0.0), 0.0)  # 0.0
    ch = c.evaluate(cap(0.65), 100.0)  # 0.65 - 0.1 = 0.55: band of 2.0
    assert [(x.old, x.new) for x in ch] == [(0.0, 2.0)]
    assert "back above 50% + 10%" in ch[0].reason


def test_min_interval_holds_back_and_says_when() -> None:
    c = controller()
    assert c.evaluate(cap(0.7), 0.0)[0].new == 2.0
    assert c.evaluate(cap(0.4), 10.0) == []  # 20 s too early
    assert c.next_deadline() == 30.0
    assert c.level("SALES") == 2.0
    # asked again at the deadline: the capacity of that moment counts
    ch = c.evaluate(cap(0.1), 30.0)
    assert [(x.old, x.new) for x in ch] == [(2.0, 0.0)]
    assert c.next_deadline() is None


def test_held_back_change_dropped_when_capacity_returns_meanwhile() -> None:
    c = controller()
    c.evaluate(cap(0.7), 0.0)
    assert c.evaluate(cap(0.4), 5.0) == []
    assert c.next_deadline() == 30.0
    assert c.evaluate(cap(0.7), 6.0) == []  # back in the band of the level in force
    assert c.next_deadline() is None
    assert c.evaluate(cap(0.7), 30.0) == []


def test_min_interval_zero() -> None:
    c = controller(min_interval=0.0)
    assert [x.new for x in c.evaluate(cap(0.7), 0.0)] == [2.0]
    assert [x.new for x in c.evaluate(cap(0.4), 0.0)] == [1.0]


def test_dry_run_marks_changes_and_tracks_them() -> None:
    c = controller(dry_run=True)
    ch = c.evaluate(cap(0.4), 0.0)
    assert ch[0].dry_run and ch[0].new == 1.0
    assert c.evaluate(cap(0.4), 100.0) == []  # logged once, not at every state change


def test_failed_delivery_retries_after_retry_after() -> None:
    c = controller()
    c.evaluate(cap(0.4), 0.0)  # 1.0, not taken
    c.failed("SALES", 1.0, 30.0)
    assert c.level("SALES") is None
    assert c.next_deadline() == 31.0
    assert c.evaluate(cap(0.4), 20.0) == []
    ch = c.evaluate(cap(0.3), 31.0)
    assert len(ch) == 1 and ch[0].retry and ch[0].old is None and ch[0].new == 1.0
    assert "did not reach the dialer" in ch[0].reason
    assert c.level("SALES") == 1.0
    assert c.next_deadline() is None


def test_retry_sends_what_capacity_calls_for_then() -> None:
    c = controller()
    c.evaluate(cap(0.4), 0.0)
    c.failed("SALES", 0.0, 30.0)
    ch = c.evaluate(cap(1.0), 30.0)
    assert [(x.old, x.new, x.retry) for x in ch] == [(None, 3.0, True)]


def test_failed_for_unknown_campaign_is_ignored() -> None:
    c = controller()
    c.failed("OTHER", 0.0, 30.0)
    assert c.next_deadline() is None


def test_missing_capacity_leaves_a_campaign_alone() -> None:
    c = controller()
    assert c.evaluate({}, 0.0) == []
    assert c.evaluate({"OTHER": Capacity(0.0)}, 0.0) == []


def test_campaigns_are_independent() -> None:
    other = CampaignSettings("OTHER", normal=2.0, steps=(Step(0.5, 1.0),), min_interval=0.0)
    c = DialController([CAMP, other])
    ch = c.evaluate(
        {"SALES": Capacity(0.7), "OTHER": Capacity(0.4)}, 0.0
    )
    assert sorted((x.campaign, x.new) for x in ch) == [("OTHER", 1.0), ("SALES", 2.0)]


def test_reconfigure_keeps_levels_of_campaigns_that_stay() -> None:
    c = controller()
    c.evaluate(cap(0.4), 0.0)
    other = CampaignSettings("NEW", normal=2.0, steps=(Step(0.5, 1.0),))
    c.reconfigure([CAMP, other])
    assert c.level("SALES") == 1.0 and c.level("NEW") == 2.0
    c.reconfigure([other])
    assert list(c.campaigns) == ["NEW"]


def test_every_share_sequence_stays_consistent() -> None:
    """Over all walks through the bands: the level always matches the table within the
    hysteresis once min_interval allows, and never moves twice within min_interval."""
    changes = 0
    shares = (1.0, 0.85, 0.75, 0.55, 0.45, 0.25, 0.15, 0.0)
    for walk in itertools.product(shares, repeat=4):
        c = controller()
        now = 0.0
        last_change = None
        for share in walk:
            now += 10.0
            for _ in c.evaluate(cap(share), now):
                if last_change is not None:
                    assert now - last_change >= 30.0
                last_change = now
                changes += 1
            deadline = c.next_deadline()
            if deadline is not None:
                now = deadline
                for _ in c.evaluate(cap(share), now):
                    last_change = now
                    changes += 1
            level = c.level("SALES")
            assert level is not None
            # once min_interval allows: within the table, give or take the hysteresis
            assert level_for(share - 0.1, CAMP)[0] <= level <= level_for(share, CAMP)[0]
    assert changes > 1000  # the walks did move the level
