"""The FastAGI advisor's pure layers: the res_agi protocol, dial strings, plans and reports."""

from __future__ import annotations

import re

import pytest

from trunkguard.agi import (
    Hangup,
    Malformed,
    PlanTable,
    Reply,
    Request,
    Route,
    Session,
    advise,
    check_dial,
    check_report,
    quote,
    set_variable,
)
from trunkguard.config import ConfigError, parse_config
from trunkguard.health import FailureTable, HealthEngine, HealthPolicy, OutcomeClass, State
from trunkguard.proxy import Flow
from trunkguard.routing import Plan, Target
from trunkguard.sip import parse_uri

HEADERS = (
    b"agi_network: yes\n"
    b"agi_network_script: route?campaign=TEST&x=1\n"
    b"agi_request: agi://10.0.0.5:4578/route?campaign=TEST&x=1\n"
    b"agi_channel: SIP/vicidial-0000002a\n"
    b"agi_accountcode: \n"
    b"agi_arg_1: 15551234567\n"
    b"agi_arg_2: \n"
    b"agi_arg_3: two words\n"
    b"\n"
)


def test_header_block_in_any_chunks() -> None:
    """However TCP cuts it (here one byte at a time), the same request comes out once."""
    for size in (1, 2, 7, len(HEADERS)):
        s = Session()
        events = []
        for i in range(0, len(HEADERS), size):
            events += s.receive(HEADERS[i : i + size])
        assert events == [s.request]
        req = s.request
        assert req is not None
        assert (req.script, req.query) == ("route", "campaign=TEST&x=1")
        assert req.args == ("15551234567", "", "two words")
        assert req.headers["agi_accountcode"] == ""
        assert req.headers["agi_channel"] == "SIP/vicidial-0000002a"


def test_script_from_agi_request_when_no_network_script() -> None:
    s = Session()
    (req,) = s.receive(b"agi_network: yes\nagi_request: agi://h:4578/report?a=b\n\n")
    assert isinstance(req, Request) and (req.script, req.query) == ("report", "a=b")
    s = Session()
    (req,) = s.receive(b"agi_network: yes\nagi_request: agi://h:4578\n\n")
    assert isinstance(req, Request) and req.script == ""


def test_replies_hangup_and_usage_block() -> None:
    s = Session()
    s.receive(HEADERS)
    assert s.receive(b"200 result=1\n") == [Reply(200, "1", "200 result=1")]
    assert s.receive(b"HANGUP\n200 result=1\n") == [Hangup(), Reply(200, "1", "200 result=1")]
    assert s.hung_up
    got = s.receive(
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b"Usage: SET VARIABLE <variablename> <value>\n"
        b"520 End of proper usage.\n"
    )
    assert got == [Reply(520, None, "520 End of proper usage.")]
    assert s.receive(b"510 Invalid or unknown command\n")[0].code == 510  # type: ignore[union-attr]
    assert s.receive(b"200 result=-1 endpos=1234\r\n") == [
        Reply(200, "-1", "200 result=-1 endpos=1234")
    ]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe\n", "not UTF-8"),
        (b"hello\n", "not an agi_* header"),
        (b"Host: x\n", "not an agi_* header"),
        (b"agi_request: a\nagi_request: a\n", "twice"),
        (b"agi_network: yes\n\n", "no agi_request"),
        (b"\n", "empty header block"),
        (b"agi_request: " + b"x" * 2000, "longer than 1024"),
        (b"agi_request: " + b"x" * 2000 + b"\n", "longer than 1024"),
    ],
)
def test_malformed_headers(data: bytes, why: str) -> None:
    with pytest.raises(Malformed, match=re.escape(why)):
        Session().receive(data)


def test_header_block_size_and_bad_replies() -> None:
    s = Session(max_header=600)
    with pytest.raises(Malformed, match="larger than 600"):
        s.receive(b"".join(b"agi_arg_%d: %s\n" % (i, b"x" * 40) for i in range(1, 20)))
    s = Session()
    s.receive(HEADERS)
    with pytest.raises(Malformed, match="not an AGI reply"):
        s.receive(b"OK\n")
    s = Session()
    s.receive(HEADERS)
    with pytest.raises(Malformed, match="without result="):
        s.receive(b"200 fine\n")


def parse_args(line: str) -> list[str]:
    """res_agi's parse_args, as its C reads (quotes toggle, backslash escapes), for checking
    that what we quote reads back as we meant it."""
    out: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and cur is None:
                cur = []
                out.append("")
            continue
        if ch in " \t" and not quoted and not escaped:
            if cur is not None:
                out[-1] = "".join(cur)
            cur = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if cur is None:
            cur = []
            out.append("")
        cur.append(ch)
        escaped = False
    if cur is not None:
        out[-1] = "".join(cur)
    return out


@pytest.mark.parametrize("value", ["SIP/carrier-b/15551234567", "", 'a "b" \\c', "two  spaces"])
def test_quoted_values_read_back_as_res_agi_parses_them(value: str) -> None:
    line = set_variable("TG_X", value).decode()
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_args(line[:-1]) == ["SET", "VARIABLE", "TG_X", value]
    assert quote(value).startswith('"')
    with pytest.raises(ValueError):
        set_variable("TG_X", "a\nb")


def test_dial_templates() -> None:
    assert check_dial("PJSIP/${NUMBER}@carrier-a") == "PJSIP/${NUMBER}@carrier-a"
    assert check_dial("Local/${EXTEN}@out-ctx")
    for bad in ["SIP/a", "SIP/a/${X}", "SIP/a,b/${NUMBER}", "SIP/a&SIP/b/${NUMBER}",
                'SIP/"${NUMBER}', "SIP/a b/${NUMBER}", "SIP/a\\b/${NUMBER}", "SIP/$${NUMBER}",
                "/${NUMBER}", "SIP/" + "x" * 200 + "${NUMBER}"]:
        with pytest.raises(ValueError):
            check_dial(bad)


def test_a_bad_dial_is_a_config_error_with_its_field() -> None:
    text = (
        "listen: udp:127.0.0.1:5060\n"
        "carriers:\n"
        '  - {name: a, uri: "sip:127.0.0.1:5071", dial: "SIP/a,60/${NUMBER}"}\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert any("carriers[0].dial" in p and "TECH/resource" in p for p in info.value.problems)
    config = parse_config(text.replace("SIP/a,60/", "SIP/a/") + "agi: {enabled: true}\n")
    s = config.agi.settings()
    assert (s.host, s.port, s.max_sessions) == ("127.0.0.1", 4578, 1000)
    with pytest.raises(ConfigError):
        parse_config(text.replace("SIP/a,60/", "SIP/a/") + "agi: {listen: 'nowhere'}\n")


def target(name: str, carrier: str = "") -> Target:
    return Target(name, parse_uri("sip:127.0.0.1:5071"), Flow("udp", ("127.0.0.1", 5071)),
                  carrier=carrier)


TEMPLATES = {"a": "PJSIP/${NUMBER}@a", "b": "SIP/b/${EXTEN}"}


def test_advise_one_route_per_carrier_in_plan_order() -> None:
    plan = Plan(
        [target("b/10.0.0.1:5060", "b"), target("c"), target("b/10.0.0.2:5060", "b"),
         target("a")],
        number="15551234567",
        explain=["b: cheapest"],
    )
    advice = advise("5551234567", lambda user: plan, TEMPLATES, 10)
    assert [(r.carrier, r.target.name, r.dial) for r in advice.routes] == [
        ("b", "b/10.0.0.1:5060", "SIP/b/5551234567"),
        ("a", "a", "PJSIP/15551234567@a"),
    ]
    assert "no dial: in config for c" in advice.explain[-1]
    assert len(advise("1555", lambda user: plan, TEMPLATES, 1).routes) == 1


def test_advise_refusals() -> None:
    def never(user: str) -> Plan:
        raise AssertionError("no plan for a bad number")

    assert advise("1555;x", never, TEMPLATES, 10).error.startswith("not a number")
    assert advise("", never, TEMPLATES, 10).error
    refused = Plan([], rejected=(403, "blocked prefix 1900"))
    assert advise("1900", lambda u: refused, TEMPLATES, 10).error == (
        "refused (403): blocked prefix 1900"
    )
    assert advise("1555", lambda u: Plan([target("c")]), TEMPLATES, 10).error == (
        "no carrier of the plan has a dial: string"
    )


def test_plan_table_expires_and_evicts() -> None:
    t = PlanTable(size=3, ttl=10.0)
    ids = [t.add((), now) for now in (0.0, 1.0, 2.0, 3.0)]
    assert t.get(ids[0], 3.0) is None and t.evicted == 1  # the oldest made room
    assert t.get(ids[1], 10.9) is not None
    assert t.get(ids[1], 11.0) is None  # expired
    assert len(t) == 2 and t.get(ids[3], 13.0) is None and len(t) == 0
    assert len(set(ids)) == 4 and all(len(i) == 16 for i in ids)


def test_check_report() -> None:
    t = PlanTable(10, 60.0)
    routes = (Route("b", target("b"), "SIP/b/1"), Route("a", target("a"), "PJSIP/1@a"))
    pid = t.add(routes, 0.0)
    r = check_report((pid, "2", "congestion", "34"), t, 1.0)
    assert r.route is routes[1] and r.verdict is not None and r.what == "CONGESTION/34"
    assert r.verdict.klass is OutcomeClass.TRUNK_FAULT and r.failover
    assert check_report((pid, "2", "CONGESTION", "34"), t, 1.0).counter == "agi_report_duplicate"
    for args, counter in [
        ((pid,), "agi_report_bad"),
        ((pid, "x", "BUSY", "17"), "agi_report_bad"),
        ((pid, "3", "BUSY", "17"), "agi_report_bad"),
        ((pid, "0", "BUSY", "17"), "agi_report_bad"),
        ((pid, "1", "ROBOT", "17"), "agi_report_bad"),
        ((pid, "1", "BUSY", "300"), "agi_report_bad"),
        (("ffffffffffffffff", "1", "BUSY", "17"), "agi_report_unknown_plan"),
    ]:
        assert check_report(args, t, 1.0).counter == counter, args
    assert check_report((pid, "1", "BUSY", "17"), t, 61.0).counter == "agi_report_unknown_plan"
    # Without the plan, the default tables still say whether to try the next route.
    assert check_report(("0" * 16, "1", "CHANUNAVAIL", ""), t, 61.0).failover
    assert not check_report(("0" * 16, "1", "BUSY", "17"), t, 61.0).failover
    assert not check_report((pid, "1", "", ""), t, 61.0).failover
    fresh = t.add(routes, 100.0)
    r = check_report((fresh, "1", "NOANSWER"), t, 100.0)  # no HANGUPCAUSE given
    assert r.verdict is not None and r.what == "NOANSWER"


@pytest.mark.parametrize(
    ("status", "cause", "klass"),
    [
        ("CONGESTION", 34, OutcomeClass.TRUNK_FAULT),
        ("CHANUNAVAIL", 20, OutcomeClass.TRUNK_FAULT),  # 20 not in the table: the status says
        ("CHANUNAVAIL", None, OutcomeClass.TRUNK_FAULT),
        ("BUSY", 17, OutcomeClass.DESTINATION_FINAL),
        ("NOANSWER", 19, OutcomeClass.DESTINATION_FINAL),
        ("CONGESTION", 17, OutcomeClass.DESTINATION_FINAL),  # the cause wins: a busy line
        ("BUSY", 38, OutcomeClass.TRUNK_FAULT),  # network out of order behind a "busy"
        ("ANSWER", 16, OutcomeClass.SUCCESS),
        ("ANSWER", 34, OutcomeClass.SUCCESS),  # an answered call's clearing cause
        ("CANCEL", 16, OutcomeClass.NEUTRAL),
    ],
)
def test_classify_dial(status: str, cause: int | None, klass: OutcomeClass) -> None:
    assert FailureTable().classify_dial(status, cause).klass is klass


def test_classify_dial_with_overrides() -> None:
    table = FailureTable(dialstatus={"NOANSWER": OutcomeClass.TRUNK_FAULT})
    assert table.classify_dial("NOANSWER", None).klass is OutcomeClass.TRUNK_FAULT
    table = FailureTable(q850={17: OutcomeClass.TRUNK_FAULT})
    assert table.classify_dial("BUSY", 17).klass is OutcomeClass.TRUNK_FAULT


def test_reported_outcomes_trip_without_taking_capacity() -> None:
    # A long window: the streak alone trips here (the window has tests of its own).
    policy = HealthPolicy(window_size=100, window_min_volume=100)
    engine = HealthEngine(["b"], policy, probes_enabled=False)
    engine.set_capacity("b", 1, None)
    fault = FailureTable().classify_dial("CONGESTION", 34)
    busy = FailureTable().classify_dial("BUSY", 17)
    ok = FailureTable().classify_dial("ANSWER", 16)
    for i in range(4):
        assert engine.outcome_reported("b", fault, float(i), what="CONGESTION/34") == []
    assert engine.outcome_reported("b", busy, 4.0, what="BUSY/17") == []  # the streak ends
    assert engine.outcome_reported("b", ok, 4.5, what="ANSWER") == []
    for i in range(4):
        assert engine.outcome_reported("b", fault, 5.0 + i, what="CONGESTION/34") == []
    assert engine.overflow("b", 9.0) is None  # nothing reported took b's one call
    (change,) = engine.outcome_reported("b", fault, 9.0, what="CONGESTION/34 (Asterisk)")
    assert change.new is State.DOWN
    assert change.reason == "5 consecutive CONGESTION/34 (Asterisk) from b"
    assert engine.outcome_reported("b", fault, 10.0, what="x") == []  # DOWN stays DOWN
    assert engine.outcome_reported("gone", fault, 10.0, what="x") == []  # forgotten target
