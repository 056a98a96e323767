"""Silence in the router around the engine: config, the event log's notices, /api/targets,
/metrics and the dashboard's reason."""

from __future__ import annotations

import asyncio

import pytest
from test_admin_api import Client, call, client, rearms, runtime
from test_config import MINIMAL

from trunkguard.admin._metrics import SPEC
from trunkguard.config import ConfigError, parse_config
from trunkguard.runtime import Runtime

__all__ = ["client", "rearms", "runtime"]


def test_the_health_section_sets_silence_and_defaults_are_on() -> None:
    policy = parse_config(MINIMAL, "x.yaml").health_policy()
    assert policy.silence and policy.silence_floor == 0.02 and policy.silence_margin == 2.0
    text = MINIMAL + (
        "health:\n  silence_floor: 0.05\n  silence_margin: 3\n  silence_quantile: 0.95\n"
        "  silence_min_samples: 50\n  silence_window: 200\n"
    )
    policy = parse_config(text, "x.yaml").health_policy()
    assert (policy.silence_floor, policy.silence_margin, policy.silence_quantile) == (
        0.05,
        3.0,
        0.95,
    )
    assert (policy.silence_min_samples, policy.silence_window) == (50, 200)
    off = parse_config(MINIMAL + "health: {silence: false}\n", "x.yaml").health_policy()
    assert not off.silence


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("{silence_floor: 0}", "health.silence_floor: Input should be greater than 0"),
        ("{silence_margin: 0.5}", "health.silence_margin: Input should be greater than or equal"),
        ("{silence_quantile: 1.5}", "health.silence_quantile:"),
        ("{silence_min_samples: 500}", "silence_min_samples cannot exceed silence_window"),
        ("{silence_floor: 0.5}", "silence_floor must be shorter than response_timeout_floor"),
        ("{silence_flor: 0.5}", "health.silence_flor: Extra inputs are not permitted"),
    ],
)
def test_bad_silence_settings_are_clear_config_errors(health: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + f"health: {health}\n", "x.yaml")
    assert any(expected in p for p in info.value.problems), info.value.problems


def _silence(runtime: Runtime, name: str = "a") -> float:
    """Teach ``name`` a 1 ms carrier, then leave an INVITE unanswered past 20 ms."""
    engine = runtime.health
    now = asyncio.get_running_loop().time()
    for i in range(20):
        attempt = engine.attempt_started(name, now - 1 + i * 0.02)
        engine.first_response(name, attempt, now - 1 + i * 0.02 + 0.001)
        engine.attempt_ended(name, attempt, None, now - 1 + i * 0.02 + 0.001, what="487")
    engine.attempt_started(name, now - 0.05)
    # Seen 30 ms after the crossing: a late look, believed one loop turn later.
    runtime.proxy.apply_health_changes(engine.tick(now - 0.001), now - 0.001)
    runtime.proxy.apply_health_changes(engine.tick(now), now)
    runtime.pump()
    assert engine.silenced(name, now) is not None
    return now


async def test_a_silence_episode_is_one_notice_at_its_start_and_one_at_its_end(
    runtime: Runtime,
) -> None:
    now = _silence(runtime)
    [start] = runtime.store.notices("a", 0, 100)
    assert (start.kind, start.state) == ("silence", "silent")
    assert "silent 50 ms, usually 1.0 ms" in start.detail
    runtime.proxy.apply_health_changes(runtime.health.tick(now + 0.01), now + 0.01)
    runtime.pump()
    assert len(runtime.store.notices("a", 0, 100)) == 1  # not one per tick nor per call
    runtime.drain("a", now + 0.02)
    notices = runtime.store.notices("a", 0, 100)
    assert [n.state for n in notices] == ["silent", "heard"]
    assert "now DRAINED" in notices[-1].detail


async def test_api_targets_says_why_new_calls_are_held_back(
    client: Client,
    runtime: Runtime,
) -> None:
    _, body = await call(client, "GET", "/api/targets")
    a = body["targets"][0]
    assert a["silent"] is None
    assert a["silence"] == {"threshold_ms": None, "usual_ms": None, "samples": 0, "episodes": 0}
    _silence(runtime)
    _, a = await call(client, "GET", "/api/targets/a")
    assert a["silent"].startswith("silent ") and a["silent"].endswith("usually 1.0 ms")
    assert a["state"] == "UP"
    assert a["silence"]["threshold_ms"] == 20.0 and a["silence"]["episodes"] == 1


def test_the_silences_counter_is_a_per_target_metric() -> None:
    spec = SPEC["trunkguard_target_silences_total"]
    assert spec.type == "counter" and spec.labels == ("target",)


def test_the_labs_bound_on_invites_to_a_silent_carrier_follows_its_threshold() -> None:
    from trunkguard.health._silence import ms
    from trunkguard.lab._run import LabResult, max_invites_to_silent, silence_threshold

    result = LabResult.__new__(LabResult)
    result.notices = [
        {"kind": "silence", "state": "silent", "target": "b", "detail": "x (threshold 900 ms)"},
        {
            "kind": "silence",
            "state": "silent",
            "target": "a",
            "detail": f"silent 71 ms, usually 4 ms (threshold {ms(0.0702)}): no new calls",
        },
    ]
    threshold = silence_threshold(result, "a")
    assert threshold == 0.070
    assert max_invites_to_silent(threshold, 50.0) == 5  # 0, 20, 40, 60 ms, and one racing
    assert max_invites_to_silent(0.021, 50.0) == 4  # the SUSPECT rule's 3, and one racing
    assert max_invites_to_silent(None, 50.0) == 3
    result.notices = []
    assert silence_threshold(result, "a") is None
