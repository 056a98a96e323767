"""GET /metrics on a real router process after SIPp calls: the counts are SIPp's.

Carrier a (first in order) rejects every INVITE with 503, carrier b answers; a SIPp
caller makes a fixed number of calls. The router's metrics, scraped over HTTP with
the admin token and parsed with prometheus_client's parser, must count what the
carriers' own traces show: the INVITEs each got, a's 503s as trunk faults, b's
answers, the calls that ended answered, and the OPTIONS probes' round trip.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from kamailio import free_tcp_port
from prometheus_client.parser import text_string_to_metric_families
from router import RouterProcess
from sipp import free_udp_ports, run_uac, start_uas

pytestmark = pytest.mark.e2e

TOKEN = "e2e-metrics-token-51c0"
CALLS = 12


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, str]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    status, text = get(port, "/metrics")
    assert status == 200, text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_metrics_count_what_sipp_saw(tmp_path: Path) -> None:
    pa, pb = free_udp_ports(2)
    admin_port = free_tcp_port()
    extra = {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": TOKEN},
        "probe": {"interval": 1.0},
    }
    with (
        start_uas("uas_reject", port=pa, tmp_root=tmp_path / "a") as a,
        start_uas("uas_answer", port=pb, tmp_root=tmp_path / "b") as b,
        RouterProcess(tmp_path / "router", [("a", pa), ("b", pb)], extra=extra) as router,
    ):
        # Without the token, or with a wrong one, nothing: not even the metric names.
        for token in (None, "wrong-token-0000000"):
            status, body = get(admin_port, "/metrics", token)
            assert status == 401 and "trunkguard_" not in body, body

        result = run_uac(
            "uac_call", router.address, calls=CALLS, rate=10, timeout=40.0,
            tmp_root=tmp_path / "caller",
        )  # fmt: skip
        assert result.successful == CALLS, result.describe()

        def settled() -> bool:
            m = scrape(admin_port)
            return value(m, "trunkguard_calls_ended_total", kind="answered") == CALLS

        assert wait_for(settled, 20.0), router.log()
        # Probes every second: each carrier's round trip shows within a few.
        assert wait_for(
            lambda: all(
                value(scrape(admin_port), "trunkguard_target_probe_rtt_seconds", target=t) > 0
                for t in ("a", "b")
            ),
            20.0,
        ), router.log()
        m = scrape(admin_port)
        a_invites, a_503 = a.received("INVITE"), a.responses_sent(503)
        b_invites, b_200 = b.received("INVITE"), b.responses_sent(200)
        a_options = a.received("OPTIONS")
        _, targets = get(admin_port, "/api/targets")
        states = {t["name"]: t["state"] for t in json.loads(targets)["targets"]}

    print(
        f"\nmetrics e2e: a got {a_invites} INVITEs ({a_503} rejected), b {b_invites} "
        f"({b_200} answered); states {states}; "
        f"rtt a {value(m, 'trunkguard_target_probe_rtt_seconds', target='a') * 1000:.2f} ms"
    )
    assert a_invites >= 1 and a_503 == a_invites  # a got calls until it was taken out
    assert b_200 == CALLS
    assert value(m, "trunkguard_target_calls_total", target="a") == a_invites
    assert value(m, "trunkguard_target_calls_total", target="b") == b_invites
    assert value(m, "trunkguard_target_answers_total", target="a") == 0
    assert value(m, "trunkguard_target_answers_total", target="b") == b_200
    outcomes = "trunkguard_target_outcomes_total"
    assert value(m, outcomes, target="a", **{"class": "trunk_fault"}) == a_503
    assert value(m, outcomes, target="b", **{"class": "success"}) == b_200
    assert value(m, outcomes, target="b", **{"class": "trunk_fault"}) == 0
    assert value(m, "trunkguard_target_trunk_faults_total", target="a", kind="response") == a_503
    assert value(m, "trunkguard_target_trunk_faults_total", target="a", kind="timeout") == 0
    # Both carriers send 100 Trying first: every attempt has a post-dial delay.
    assert value(m, "trunkguard_target_pdd_seconds_count", target="a") == a_invites
    assert value(m, "trunkguard_target_pdd_seconds_count", target="b") == b_invites
    assert value(m, "trunkguard_target_pdd_seconds_bucket", target="b", le="+Inf") == b_invites
    assert value(m, "trunkguard_target_asr_ratio", target="b") == 1.0
    assert value(m, "trunkguard_target_asr_ratio", target="a") == 0.0
    assert value(m, "trunkguard_target_acd_seconds", target="b") >= 0.0
    assert value(m, "trunkguard_calls_ended_total", kind="answered") == CALLS
    assert value(m, "trunkguard_calls_admitted_total") == CALLS
    assert 0 < value(m, "trunkguard_target_probes_total", target="a") <= a_options + 1
    assert 0 < value(m, "trunkguard_target_probe_rtt_seconds", target="a") < 1.0
    # The state gauges say what the API says, one state per target.
    for name, state in states.items():
        assert value(m, "trunkguard_target_state", target=name, state=state) == 1, name
        total = sum(
            v for (n, labels), v in m.items()
            if n == "trunkguard_target_state" and ("target", name) in labels
        )  # fmt: skip
        assert total == 1, name
    # Nothing left open once every call ended; nothing dropped, nothing unparsed.
    assert value(m, "trunkguard_dialogs", kind="up") == 0
    assert 0 <= value(m, "trunkguard_dialogs", kind="closing") <= CALLS
    assert value(m, "trunkguard_calls_in_setup") == 0
    assert value(m, "trunkguard_parse_errors_total") == 0
    assert value(m, "trunkguard_messages_dropped_total", kind="kernel") == 0
    assert value(m, "trunkguard_event_loop_lag_seconds") >= 0.0
    assert value(m, "process_resident_memory_bytes") > 0
    assert TOKEN not in json.dumps(list(m))
