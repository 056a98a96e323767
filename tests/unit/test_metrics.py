"""Prometheus metrics: the text format after known traffic, driven through the real core.

A Runtime (core, health, prober, registrations) on a fake clock gets calls and probe
answers as datagrams, the way the adapter feeds it; the admin app serves /metrics with
aiohttp's TestServer, and the scrape is parsed by prometheus_client's own parser.
Every count is checked exactly against the traffic the test made.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from test_proxy_core import CALLER, A, B, C, invite, reply

from trunkguard.admin import build_app
from trunkguard.admin._api import METRICS
from trunkguard.admin._metrics import SPECS, exported_names
from trunkguard.admin._tallies import PDD_BUCKETS, Tallies
from trunkguard.config import parse_config
from trunkguard.health import OutcomeClass, State, Verdict
from trunkguard.proxy import AttemptRecord, CallRecord, Flow
from trunkguard.runtime import Runtime
from trunkguard.sip import Request, Response, parse_message

TOKEN = "metrics-token-7d2e9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """\
listen: udp:127.0.0.1:5060
advertise: 127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - {name: a, uri: "sip:127.0.0.1:5071"}
  - {name: b, uri: "sip:127.0.0.1:5072", max_calls: 1}
  - name: c
    uri: "sip:127.0.0.1:5073"
    register: {user: trunk1, password: not-in-any-output, expires: 120}
probe: {interval: 60, timeout: 2}
store: {path: state/events.db}
"""
ROOT = Path(__file__).resolve().parents[2]
Client = TestClient[web.Request, web.Application]
Sent = list[tuple[Flow, Request | Response]]


class Lab:
    """A Runtime on a fake clock, fed datagrams as the adapter would."""

    def __init__(self, tmp_path: Path, text: str = CONFIG) -> None:
        config = parse_config(text, "test.yaml")
        config._base = tmp_path
        (tmp_path / "state").mkdir(exist_ok=True)
        self.runtime = Runtime(config)
        self.now = 1000.0
        self.marks: dict[str, float] = {}  # when things happened, for the figures
        self.runtime.start(self.now)

    def feed(self, data: bytes, source: Flow) -> None:
        self.runtime.proxy.receive(data, source, self.now)
        self.runtime.pump()

    def take(self) -> Sent:
        self.runtime.pump()
        proxy = self.runtime.proxy
        out = [(flow, parse_message(data)) for flow, data in proxy.outbox]
        proxy.outbox.clear()
        return out

    def advance(self, seconds: float) -> Sent:
        """Move the clock on, firing every timer due on the way; returns what went out."""
        proxy = self.runtime.proxy
        end = self.now + seconds
        for _ in range(10_000):
            deadline = proxy.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            proxy.run_timers(self.now)
            self.runtime.pump()
        self.now = end
        return self.take()


def requests(sent: Sent, flow: Flow, method: str) -> list[Request]:
    return [m for f, m in sent if f == flow and isinstance(m, Request) and m.method == method]


def one(sent: Sent, flow: Flow, method: str) -> Request:
    [found] = requests(sent, flow, method)
    return found


def bye(call_id: str, carrier: Flow) -> bytes:
    return (
        f"BYE sip:carrier@127.0.0.1:{carrier.addr[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bye-{call_id}\r\n"
        "Route: <sip:127.0.0.1:5060;lr>\r\n"
        "From: <sip:agent@127.0.0.1>;tag=caller1\r\n"
        "To: <sip:15551234567@127.0.0.1>;tag=carrier\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def register_ok(request: Request, expires: int) -> bytes:
    contact = request.get("contact") or ""
    return reply(request, 200, extra=f"Contact: {contact};expires={expires}\r\n")


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    yield lab
    lab.runtime.close()


@pytest.fixture
async def client(lab: Lab) -> AsyncIterator[Client]:
    app = build_app(lab.runtime, TOKEN)
    app[METRICS].collector.clock = lambda: lab.now
    async with TestClient(TestServer(app)) as c:
        yield c


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples\n{self.text}"
        return found[0]

    def has(self, name: str, **labels: str) -> bool:
        return any(s.name == name and s.labels == labels for s in self.samples)

    def targets(self, name: str) -> set[str]:
        return {s.labels["target"] for s in self.samples if s.name == name}


async def scrape(client: Client) -> Scrape:
    async with client.get("/metrics", headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        return Scrape(await resp.text())


def drive_known_traffic(lab: Lab) -> None:
    """c registers; three calls, with a 503, a busy, a timeout and two answers; probes."""
    # c's REGISTER goes out within 0.2 s, the first probes within the first second: c is
    # answered at once, a's OPTIONS 25 ms after it left; b's and c's never.
    probed: set[Flow] = set()
    proxy = lab.runtime.proxy
    for _ in range(100):
        deadline = proxy.next_deadline()
        if deadline is None or deadline > 1001.0:
            break
        lab.now = max(lab.now, deadline)
        proxy.run_timers(lab.now)
        sent = lab.take()
        for register in requests(sent, C, "REGISTER"):
            lab.feed(register_ok(register, 120), C)
        for flow in (A, B, C):
            for options in requests(sent, flow, "OPTIONS"):
                probed.add(flow)
                if flow == A:
                    lab.now += 0.025
                    lab.feed(reply(options, 200), A)
    assert probed == {A, B, C}
    assert lab.runtime.registrations.by_carrier["c"].state == "REGISTERED"
    lab.now = 1001.0

    # c1: a 100 after 20 ms then 503; b rings after 300 ms, answers: up on b (max_calls 1).
    lab.feed(invite("m1"), CALLER)
    to_a = one(lab.take(), A, "INVITE")
    lab.now += 0.02
    lab.feed(reply(to_a, 100), A)
    lab.now += 0.01
    lab.feed(reply(to_a, 503), A)
    to_b = one(lab.take(), B, "INVITE")
    lab.now += 0.3
    lab.feed(reply(to_b, 180), B)
    lab.now += 1.0
    lab.feed(reply(to_b, 200), B)
    lab.take()
    lab.marks["m1 answered"] = lab.now

    # c2: b is full (overflow); a says 100 after 40 ms, then busy: final, no failover.
    lab.feed(invite("m2"), CALLER)
    sent = lab.take()
    assert requests(sent, B, "INVITE") == []
    to_a = one(sent, A, "INVITE")
    lab.now += 0.04
    lab.feed(reply(to_a, 100), A)
    lab.feed(reply(to_a, 486), A)
    lab.take()

    # c3: b still full; a stays silent (a timeout), c answers at once.
    lab.feed(invite("m3"), CALLER)
    one(lab.take(), A, "INVITE")
    to_c: Request | None = None
    for _ in range(100):
        sent = lab.advance(0.1)
        found = requests(sent, C, "INVITE")
        if found:
            [to_c] = found
            break
    assert to_c is not None, "c3 never failed over to c"
    lab.feed(reply(to_c, 200), C)
    lab.take()

    # The answered calls end, 28 s after the last one's answer.
    lab.now += 28.0
    lab.feed(bye("m1", B), CALLER)
    lab.marks["m1 ended"] = lab.now
    lab.feed(bye("m3", C), CALLER)
    lab.take()
    lab.advance(3.0)  # the probes' timeouts (b's and c's) are over


# -- the text format after known traffic --------------------------------------------------------
async def test_the_scrape_has_every_count_of_the_traffic(lab: Lab, client: Client) -> None:
    drive_known_traffic(lab)
    m = await scrape(client)
    calls = "trunkguard_target_calls_total"
    assert {n: m.value(calls, target=n) for n in "abc"} == {"a": 3, "b": 1, "c": 1}
    answers = "trunkguard_target_answers_total"
    assert {n: m.value(answers, target=n) for n in "abc"} == {"a": 0, "b": 1, "c": 1}
    outcomes = "trunkguard_target_outcomes_total"
    assert m.value(outcomes, target="a", **{"class": "trunk_fault"}) == 2
    assert m.value(outcomes, target="a", **{"class": "destination_final"}) == 1
    assert m.value(outcomes, target="a", **{"class": "success"}) == 0
    assert m.value(outcomes, target="b", **{"class": "success"}) == 1
    assert m.value(outcomes, target="c", **{"class": "success"}) == 1
    faults = "trunkguard_target_trunk_faults_total"
    assert m.value(faults, target="a", kind="response") == 1
    assert m.value(faults, target="a", kind="timeout") == 1
    assert m.value(faults, target="a", kind="unreachable") == 0
    assert m.value(faults, target="b", kind="response") == 0
    overflow = "trunkguard_target_overflow_total"
    assert {n: m.value(overflow, target=n) for n in "abc"} == {"a": 0, "b": 2, "c": 0}

    # PDD: a's 100s came after 20 and 40 ms, b's 180 after 300 ms.
    pdd = "trunkguard_target_pdd_seconds"
    assert m.value(pdd + "_count", target="a") == 2
    assert m.value(pdd + "_sum", target="a") == pytest.approx(0.06)
    assert m.value(pdd + "_bucket", target="a", le="0.02") == 1
    assert m.value(pdd + "_bucket", target="a", le="0.05") == 2
    assert m.value(pdd + "_bucket", target="a", le="+Inf") == 2
    assert m.value(pdd + "_bucket", target="b", le="0.2") == 0
    assert m.value(pdd + "_bucket", target="b", le="0.5") == 1
    assert m.value(pdd + "_sum", target="b") == pytest.approx(0.3)
    buckets = [s for s in m.samples if s.name == pdd + "_bucket" and s.labels["target"] == "a"]
    assert len(buckets) == len(PDD_BUCKETS) + 1

    # The window's figures: ASR, ACD (b carried c1 only), calls/s.
    assert m.value("trunkguard_target_asr_ratio", target="a") == 0.0
    assert m.value("trunkguard_target_asr_ratio", target="b") == 1.0
    acd = lab.marks["m1 ended"] - lab.marks["m1 answered"]
    assert acd > 28.0
    assert m.value("trunkguard_target_acd_seconds", target="b") == pytest.approx(acd)
    assert not m.has("trunkguard_target_acd_seconds", target="a")  # a answered nothing
    fig_a = lab.runtime.stats.figures("a", lab.now)
    assert fig_a.seizures == 3
    rate = m.value("trunkguard_target_calls_per_second", target="a")
    assert rate == pytest.approx(fig_a.calls_per_s) and rate > 0

    # Probes: a answered its first in 25 ms; b and c timed out.
    assert m.value("trunkguard_target_probe_rtt_seconds", target="a") == pytest.approx(0.025)
    assert not m.has("trunkguard_target_probe_rtt_seconds", target="b")
    assert m.value("trunkguard_target_probes_total", target="a") >= 1
    assert m.value("trunkguard_target_probe_failures_total", target="a") == 0
    assert m.value("trunkguard_target_probe_failures_total", target="b") >= 1

    # How the calls ended.
    ended = "trunkguard_calls_ended_total"
    assert m.value(ended, kind="answered") == 2
    assert m.value(ended, kind="destination_final") == 1
    assert m.value(ended, kind="failed") == 0
    assert m.value("trunkguard_calls_admitted_total") == 3

    # States and registration, one-hot.
    for name in "abc":
        states = {s.labels["state"]: s.value for s in m.samples
                  if s.name == "trunkguard_target_state" and s.labels["target"] == name}
        assert states == {s.value: (1.0 if s is State.UP else 0.0) for s in State}, name
    reg = {s.labels["state"]: s.value for s in m.samples
           if s.name == "trunkguard_carrier_registration_state"}
    assert reg == {"UNREGISTERED": 0, "REGISTERING": 0, "REGISTERED": 1, "FAILED": 0,
                   "STOPPED": 0}
    left = m.value("trunkguard_carrier_registration_expires_seconds", carrier="c")
    assert 0 < left <= 120
    assert m.value("trunkguard_target_info", target="c", carrier="c") == 1
    assert "not-in-any-output" not in m.text and TOKEN not in m.text


async def test_a_target_taken_out_shows_its_new_state(lab: Lab, client: Client) -> None:
    lab.runtime.drain("a", lab.now)
    lab.runtime.force_down("b", 60, lab.now, "drill")
    m = await scrape(client)
    assert m.value("trunkguard_target_state", target="a", state="DRAINED") == 1
    assert m.value("trunkguard_target_state", target="a", state="UP") == 0
    assert m.value("trunkguard_target_state", target="b", state="FORCED_DOWN") == 1
    assert sum(s.value for s in m.samples if s.name == "trunkguard_target_state") == 3
    reg = "trunkguard_carrier_registration_state"
    assert m.value(reg, carrier="c", state="UNREGISTERED") == 1
    lab.advance(0.3)  # c's first REGISTER is out, unanswered
    m = await scrape(client)
    assert m.value(reg, carrier="c", state="REGISTERING") == 1
    assert m.value(reg, carrier="c", state="UNREGISTERED") == 0
    assert not m.has("trunkguard_carrier_registration_expires_seconds", carrier="c")


async def test_process_figures_count_what_came_in(lab: Lab, client: Client) -> None:
    lab.take()
    received = lab.runtime.proxy.counters["messages_in"]
    lab.feed(b"INVITE sip:x SIP/2.0\r\nnot a header\r\n\r\n", CALLER)
    lab.feed(b"\x00\x01garbage", CALLER)
    lab.feed(invite("p1"), Flow("udp", ("192.0.2.7", 5060)))  # not in allow
    lab.feed(invite("p2"), CALLER)
    to_a = one(lab.take(), A, "INVITE")
    lab.feed(reply(to_a, 180), A)
    m = await scrape(client)
    assert m.value("trunkguard_messages_received_total") == received + 5
    assert m.value("trunkguard_parse_errors_total") == 2
    assert m.value("trunkguard_messages_dropped_total", kind="forbidden") == 1
    assert m.value("trunkguard_messages_dropped_total", kind="source") == 0
    assert m.value("trunkguard_messages_dropped_total", kind="kernel") == 0
    assert m.value("trunkguard_calls_in_setup") == 1
    assert m.value("trunkguard_branches_pending") == 1
    assert m.value("trunkguard_transactions", kind="server") >= 1
    assert m.value("trunkguard_transactions", kind="client") >= 1
    assert m.value("trunkguard_dialogs", kind="up") == 0
    lab.feed(reply(to_a, 200), A)
    m = await scrape(client)
    assert m.value("trunkguard_dialogs", kind="up") == 1
    assert m.value("trunkguard_dialogs", kind="closing") == 0
    assert m.value("trunkguard_calls_in_setup") == 0
    for kind in ("overload", "stalled", "shutdown", "source_limit", "table_full"):
        assert m.value("trunkguard_calls_shed_total", kind=kind) == 0
    lab.runtime.proxy.drain()  # SIGTERM: new calls get our own 503
    lab.feed(invite("p3"), CALLER)
    lab.feed(bye("p2", A), CALLER)
    m = await scrape(client)
    assert m.value("trunkguard_calls_shed_total", kind="shutdown") == 1
    assert m.value("trunkguard_dialogs", kind="up") == 0
    assert m.value("trunkguard_dialogs", kind="closing") == 1  # kept for retransmissions
    assert m.value("trunkguard_event_loop_lag_seconds") == 0
    assert m.value("trunkguard_overload_refused_ratio") == 0
    assert m.has("process_resident_memory_bytes")


# -- labels: targets and classes, never calls or numbers -------------------------------------------
async def test_labels_are_only_targets_carriers_classes_states_and_kinds(
    lab: Lab, client: Client
) -> None:
    drive_known_traffic(lab)
    m = await scrape(client)
    ours = [s for s in m.samples if s.name.startswith("trunkguard_")]
    assert ours
    allowed = {"target", "carrier", "class", "state", "kind", "le"}
    assert {k for s in ours for k in s.labels} <= allowed
    for text in ("m1", "m2", "m3", "15551234567", "127.0.0.1"):
        assert not any(text in v for s in ours for v in s.labels.values()), text
    assert {s.name for s in ours} <= exported_names()
    # HELP on every family, names per the conventions.
    for spec in SPECS:
        assert spec.help, spec.name
        assert re.fullmatch(r"trunkguard_[a-z_]+", spec.name)
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
    for family in m.families.values():
        if family.name.startswith("trunkguard_"):
            assert family.documentation, family.name


# -- targets that go away ----------------------------------------------------------------------
async def test_a_target_removed_by_a_reload_stops_appearing(lab: Lab, client: Client) -> None:
    drive_known_traffic(lab)
    m = await scrape(client)
    assert m.targets("trunkguard_target_calls_total") == {"a", "b", "c"}
    text = CONFIG.replace('  - {name: a, uri: "sip:127.0.0.1:5071"}\n', "")
    new = parse_config(text, "test.yaml")
    new._base = lab.runtime.config._base
    lab.runtime.reload(new, new.routing(), lab.now)
    m = await scrape(client)
    for spec in SPECS:
        if "target" in spec.labels:
            names = spec.name + ("_count" if spec.type == "histogram" else "")
            assert "a" not in m.targets(names), spec.name
    assert m.targets("trunkguard_target_calls_total") == {"b", "c"}
    assert m.value("trunkguard_target_calls_total", target="b") == 1
    assert not [s for s in m.samples if s.labels.get("target") == "a"]


def test_tallies_forget_targets_they_are_told_to() -> None:
    tallies = Tallies()
    ok = Verdict(OutcomeClass.SUCCESS, failover=False, counts_against=False)
    for name in ("x", "y"):
        tallies.feed(AttemptRecord("c1", name, 1, 200, "response", ok, 1.0, 2.0, 1.5))
    tallies.feed(AttemptRecord("c2", "x", 1, None, "budget", None, 1.0, 1.0, None))
    tallies.feed(object())  # any other event: ignored
    assert tallies.targets["x"].calls == 1  # a budget attempt was never sent
    assert tallies.targets["x"].pdd_buckets[PDD_BUCKETS.index(0.5)] == 1
    tallies.keep_only(["y"])
    assert list(tallies.targets) == ["y"]
    assert tallies.of("x").calls == 0 and "x" not in tallies.targets
    record = CallRecord("c3", "1555", "10.0.0.1", ("y",), ("y: cost",), (), 503, 1.0,
                        None, 2.0, "dead: odd", overflow=("x",))
    tallies.feed(record)
    assert tallies.calls_ended["other"] == 1
    assert tallies.targets["x"].overflow == 1


# -- the token ---------------------------------------------------------------------------------
async def test_metrics_need_the_token(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        async with client.get("/metrics", headers=headers) as resp:
            assert resp.status == 401
            assert "trunkguard_" not in await resp.text()


async def test_openmetrics_when_asked(client: Client) -> None:
    accept = {"Accept": "application/openmetrics-text; version=1.0.0", **AUTH}
    async with client.get("/metrics", headers=accept) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/openmetrics-text"
        text = await resp.text()
    assert text.rstrip().endswith("# EOF")
    assert "# TYPE trunkguard_target_calls counter" in text


async def test_two_apps_in_one_process_keep_apart(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = Lab(tmp_path / "other")
    before = len(lab.runtime.listeners)
    try:
        apps = [build_app(lab.runtime, TOKEN), build_app(other.runtime, TOKEN)]
        lab.feed(invite("k1"), CALLER)
        lab.feed(reply(one(lab.take(), A, "INVITE"), 486), A)  # an attempt counts as it ends
        scrapes = []
        for app in apps:
            async with TestClient(TestServer(app)) as c:
                scrapes.append(await scrape(c))
        assert scrapes[0].value("trunkguard_target_calls_total", target="a") == 1
        assert scrapes[1].value("trunkguard_target_calls_total", target="a") == 0
    finally:
        other.runtime.close()
    # Each app's clean-up took its listener off its runtime.
    assert len(lab.runtime.listeners) == before


# -- the Grafana dashboard -------------------------------------------------------------------------
def _exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def test_the_dashboard_uses_only_metrics_the_router_exports() -> None:
    board = json.loads((ROOT / "contrib/grafana/trunkguard.json").read_text())
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["target"]["type"] == "query"
    exprs = list(_exprs(board["panels"])) + list(_exprs(board["templating"]))
    assert len(exprs) >= 15
    used = {n for e in exprs for n in re.findall(r"\b(trunkguard_[a-z_]+)", e)}
    missing = used - exported_names()
    assert not missing, f"the dashboard uses metrics the router does not export: {missing}"
    # Every per-target family has a panel, and so does each process figure asked for.
    for wanted in (
        "trunkguard_target_state", "trunkguard_target_calls_total",
        "trunkguard_target_asr_ratio", "trunkguard_target_acd_seconds",
        "trunkguard_target_pdd_seconds_bucket", "trunkguard_target_outcomes_total",
        "trunkguard_target_overflow_total", "trunkguard_target_probe_rtt_seconds",
        "trunkguard_carrier_registration_state", "trunkguard_transactions",
        "trunkguard_dialogs", "trunkguard_parse_errors_total",
        "trunkguard_messages_dropped_total", "trunkguard_calls_shed_total",
        "trunkguard_event_loop_lag_seconds",
    ):
        assert wanted in used, wanted
    assert any("histogram_quantile(0.95" in e for e in exprs)
    assert any("histogram_quantile(0.5" in e for e in exprs)
    for panel in board["panels"]:
        if panel.get("type") != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_docs_list_every_metric() -> None:
    text = (ROOT / "docs/metrics.md").read_text()
    for spec in SPECS:
        assert f"`{spec.name}`" in text, spec.name


def test_the_app_counts_from_build_to_cleanup(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    try:
        before = len(lab.runtime.listeners)

        async def serve() -> None:
            app = build_app(lab.runtime, TOKEN)
            assert len(lab.runtime.listeners) == before + 1
            async with TestClient(TestServer(app)):
                pass

        asyncio.run(serve())
        assert len(lab.runtime.listeners) == before
    finally:
        lab.runtime.close()
