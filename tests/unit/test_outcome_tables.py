"""The failure tables: SIP status, Q.850 cause in a Reason header, Asterisk DIALSTATUS."""

from __future__ import annotations

import pytest
from test_proxy_core import CALLER, A, B, Net, invite, only_request, reply, responses, target

from trunkguard.health import FailureTable, OutcomeClass, q850_cause

T, F = OutcomeClass.TRUNK_FAULT, OutcomeClass.DESTINATION_FINAL


@pytest.mark.parametrize(
    ("reason", "cause"),
    [
        ('Q.850;cause=34;text="No circuit available"', 34),
        ("Q.850 ; cause = 17", 17),
        ('SIP;cause=200;text="x", Q.850;cause=16', 16),
        ('q.850;text="busy";cause=17', 17),
        ("SIP;cause=503", None),
        ("", None),
        (None, None),
    ],
)
def test_q850_cause_from_reason_header(reason: str | None, cause: int | None) -> None:
    assert q850_cause(reason) == cause


@pytest.mark.parametrize(
    ("status", "reason", "klass"),
    [
        (503, None, T),
        (480, None, F),
        (480, "Q.850;cause=34", T),  # "no circuit": the trunk, whatever the status says
        (503, "Q.850;cause=17", F),  # busy, sent as a 503
        (503, "Q.850;cause=99", T),  # a cause the table does not name: the status decides
        (200, "Q.850;cause=34", OutcomeClass.SUCCESS),
    ],
)
def test_q850_cause_wins_over_status(status: int, reason: str | None, klass: OutcomeClass) -> None:
    assert FailureTable().classify(status, reason).klass is klass


@pytest.mark.parametrize(
    ("value", "klass"),
    [
        ("CONGESTION", T),
        ("chanunavail", T),
        ("BUSY", F),
        ("NOANSWER", F),
        ("ANSWER", OutcomeClass.SUCCESS),
        ("CANCEL", OutcomeClass.NEUTRAL),
        ("SOMETHINGNEW", T),
    ],
)
def test_dialstatus(value: str, klass: OutcomeClass) -> None:
    assert FailureTable().classify_dialstatus(value).klass is klass


def test_overrides_per_table() -> None:
    table = FailureTable().with_overrides(q850={16: T}, dialstatus={"noanswer": T})
    assert table.classify(480, "Q.850;cause=16").klass is T
    assert table.classify_dialstatus("NOANSWER").klass is T
    assert FailureTable().classify_dialstatus("NOANSWER").klass is F  # the default is untouched


def test_carrier_503_with_busy_cause_reaches_caller_as_486_without_failover() -> None:
    net = Net()
    net.feed(invite("q1"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 503, extra='Reason: Q.850;cause=17;text="User busy"\r\n'), A)
    out = net.take()
    assert responses(out, CALLER) == [486]
    assert net.sent_to(B, out) == []


def test_carrier_480_with_no_circuit_cause_fails_over() -> None:
    net = Net()
    net.proxy.targets[0] = target("a", A, FailureTable())
    net.feed(invite("q2"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 480, extra="Reason: Q.850;cause=34\r\n"), A)
    assert net.sent_to(B, net.take()) == ["INVITE"]
