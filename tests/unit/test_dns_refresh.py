"""Refresh rules of trunkguard.dns._refresh and the DnsSettings checks: pure, no loop."""

from __future__ import annotations

import math

import pytest

from trunkguard.dns import Destination, DnsSettings, Refresh, Resolution, refresh_step, retry_delay

SETTINGS = DnsSettings(min_ttl=1.0, max_ttl=3600.0, retry_min=1.0, retry_max=60.0)
A = Destination("sbc1.carrier.test", "127.0.0.2", 5060, "udp", 10, 60)
B = Destination("sbc2.carrier.test", "127.0.0.3", 5060, "udp", 10, 30)
GOOD = Resolution((A, B), 30.0)
NXDOMAIN = Resolution((), 30.0, "trunk.carrier.test: no such name (NXDOMAIN)")
TIMEOUT = Resolution((), 0.0, "trunk.carrier.test: DNS timeout after 4.0s", transient=True)


def run(results: list[Resolution], times: list[float], settings: DnsSettings = SETTINGS):
    state = Refresh()
    steps = []
    for result, now in zip(results, times, strict=True):
        step = refresh_step(state, result, now, settings)
        steps.append(step)
        state = step.state
    return steps


@pytest.mark.parametrize(
    ("ttl", "delay"), [(0.0, 1.0), (0.2, 1.0), (30.0, 30.0), (1e6, 3600.0), (math.inf, 3600.0)]
)
def test_next_refresh_at_the_ttl_clamped(ttl: float, delay: float) -> None:
    step = refresh_step(Refresh(), Resolution((A,), ttl), 0.0, SETTINGS)
    assert step.delay == delay


def test_failures_back_off_doubling_to_the_cap_and_reset_on_success() -> None:
    delays = [retry_delay(n, SETTINGS) for n in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert retry_delay(10_000, SETTINGS) == 60
    steps = run([NXDOMAIN, NXDOMAIN, NXDOMAIN, GOOD, NXDOMAIN], [0, 1, 3, 7, 37])
    assert [s.delay for s in steps] == [1, 2, 4, 30, 1]


def test_first_result_is_a_change_then_only_real_changes() -> None:
    reordered = Resolution((B, A), 12.0)  # same destinations, new order and TTL
    steps = run([GOOD, reordered, GOOD, Resolution((A,), 30.0)], [0, 30, 42, 72])
    assert [s.changed for s in steps] == [True, False, False, True]
    assert steps[1].state.current == reordered  # current() still shows the newest


def test_a_new_priority_or_weight_is_a_change() -> None:
    moved = Destination(A.host, A.addr, A.port, A.transport, 20, 60)
    steps = run([GOOD, Resolution((moved, B), 30.0)], [0, 30])
    assert steps[1].changed


def test_same_error_again_is_not_a_change_a_new_one_is() -> None:
    steps = run([NXDOMAIN, NXDOMAIN, TIMEOUT, TIMEOUT], [0, 1, 3, 7])
    assert [s.changed for s in steps] == [True, False, True, False]


def test_transient_failure_keeps_the_last_destinations_with_the_error() -> None:
    steps = run([GOOD, TIMEOUT, TIMEOUT, GOOD], [0, 30, 31, 33])
    kept = steps[1].state.current
    assert kept is not None and kept.destinations == (A, B)
    assert kept.error == TIMEOUT.error and kept.transient
    assert [s.changed for s in steps] == [True, True, False, True]
    assert steps[1].message == (
        "trunk.carrier.test: DNS timeout after 4.0s; keeping 2 destinations, retrying in 1s"
    )
    assert steps[3].state.current == GOOD and steps[3].state.failures == 0


def test_stale_destinations_go_after_serve_stale_past_their_ttl() -> None:
    settings = DnsSettings(serve_stale=100.0)
    # TTL 30 at t=0: kept through failures until t=130.
    steps = run([GOOD, TIMEOUT, TIMEOUT], [0, 129, 131], settings)
    assert steps[1].state.current is not None and steps[1].state.current.destinations
    assert steps[2].state.current == TIMEOUT and steps[2].changed


def test_serve_stale_zero_drops_at_the_first_failure() -> None:
    steps = run([GOOD, TIMEOUT], [0, 0.5], DnsSettings(serve_stale=0.0))
    assert steps[1].state.current == TIMEOUT


def test_an_answer_of_none_drops_destinations_at_once() -> None:
    steps = run([GOOD, NXDOMAIN], [0, 30])
    assert steps[1].state.current == NXDOMAIN and steps[1].changed
    assert steps[1].message == (
        "no destinations: trunk.carrier.test: no such name (NXDOMAIN), retrying in 1s"
    )


def test_transient_failure_with_nothing_to_keep() -> None:
    step = run([TIMEOUT], [0])[0]
    assert step.state.current == TIMEOUT and step.changed


def test_change_message_lists_destinations_with_ranks() -> None:
    step = run([GOOD], [0])[0]
    assert step.message == "2 destinations (udp:127.0.0.2:5060 p10 w60, udp:127.0.0.3:5060 p10 w30)"
    single = run([Resolution((A,), 5.0)], [0])[0]
    assert single.message.startswith("1 destination (")


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"servers": (("dns.example", 53),)}, "not an IP address"),
        ({"servers": (("127.0.0.1", 0),)}, "bad port 0"),
        ({"timeout": 0}, "dns timeout: must be a positive"),
        ({"min_ttl": math.nan}, "dns min_ttl"),
        ({"min_ttl": 10.0, "max_ttl": 5.0}, "max_ttl .* is below min_ttl"),
        ({"retry_min": 10.0, "retry_max": 5.0}, "retry_max .* is below retry_min"),
        ({"timeout": 5.0, "lifetime": 1.0}, "lifetime .* is below timeout"),
        ({"serve_stale": -1.0}, "serve_stale"),
        ({"transports": ("udp", "sctp")}, "transports must be some of"),
        ({"address_types": ("A", "MX")}, "address types must be some of"),
    ],
)
def test_bad_settings_say_which_and_why(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        DnsSettings(**kwargs)  # type: ignore[arg-type]
