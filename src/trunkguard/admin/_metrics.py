"""Prometheus metrics of one router: ``GET /metrics`` on the admin listener.

Two sources, one collector:

- counts made as events go by (:class:`~._tallies.Tallies`, a ``Runtime``
  listener): attempts, answers, outcome classes, trunk faults, overflow and
  the PDD histogram per target, and how calls ended;
- state read at scrape time: each target's state (one gauge per state, 1 for
  the one it is in), its figures over the stats window (calls/s, ASR, ACD),
  its last probe's round trip, each carrier's registration, and the process's
  tables, counters and load.

Only the targets configured at scrape time appear: one removed by a reload or
by DNS goes with its series. Labels are ``target``, ``carrier``, ``class``,
``state`` and ``kind``, never a call or a number. Each ``Metrics`` has a
registry of its own (never the global one), so several routers in one process
(tests) do not clash. A scrape runs on the router's loop; its cost is measured
by ``bench/metrics.py``.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from ..health import State
from ..register import FAILED, REGISTERED, REGISTERING, STOPPED, UNREGISTERED
from ..runtime import Runtime
from ..stats import WINDOW
from ._tallies import CALL_ENDS, CLASSES, FAULT_KINDS, Tallies

STATES: tuple[str, ...] = tuple(s.value for s in State)
REGISTRATION_STATES: tuple[str, ...] = (UNREGISTERED, REGISTERING, REGISTERED, FAILED, STOPPED)
# A call refused by the router itself, by why, and the core counter that counts it.
SHED_KINDS: dict[str, str] = {
    "overload": "calls_shed_overload",
    "stalled": "calls_shed_stalled",
    "shutdown": "calls_shed_draining",
    "source_limit": "calls_limited",
    "table_full": "calls_shed_table_full",
}
DROP_KINDS: dict[str, str] = {
    "source": "source_dropped",
    "forbidden": "forbidden_source",
    "kernel": "kernel_drops",
}


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # as exposed; a counter's ends in _total
    type: str  # "counter", "gauge", "histogram"
    labels: tuple[str, ...]
    help: str


_W = f"over the last {WINDOW:g} s"
T = ("target",)
SPECS: tuple[Spec, ...] = (
    # -- per target ---------------------------------------------------------------------------
    Spec("trunkguard_target_info", "gauge", ("target", "carrier"), "1 per target; its carrier"),
    Spec(
        "trunkguard_target_state", "gauge", ("target", "state"),
        "1 for the state the target is in, 0 for every other state",
    ),
    Spec("trunkguard_target_calls_total", "counter", T, "Call attempts sent to the target"),
    Spec(
        "trunkguard_target_answers_total", "counter", T,
        "Attempts the target answered with a 2xx",
    ),
    Spec(
        "trunkguard_target_outcomes_total", "counter", ("target", "class"),
        "Attempts by the class of their outcome (success, trunk_fault, route_mismatch, "
        "destination_final, neutral)",
    ),
    Spec(
        "trunkguard_target_trunk_faults_total", "counter", ("target", "kind"),
        "Attempts classed trunk_fault, by how they ended (response, timeout, unreachable)",
    ),
    Spec(
        "trunkguard_target_overflow_total", "counter", T,
        "Calls whose plan skipped the target as full (capacity limits; not a fault)",
    ),
    Spec(
        "trunkguard_target_pdd_seconds", "histogram", T,
        "Post-dial delay: from the INVITE to the target's first 100/18x",
    ),
    Spec("trunkguard_target_calls_per_second", "gauge", T, f"Attempts per second {_W}"),
    Spec(
        "trunkguard_target_asr_ratio", "gauge", T,
        f"Answer-seizure ratio {_W} (absent without attempts)",
    ),
    Spec(
        "trunkguard_target_acd_seconds", "gauge", T,
        f"Average length of the answered calls that ended {_W} (absent without any)",
    ),
    Spec("trunkguard_target_trips_total", "counter", T, "Times the target was taken DOWN"),
    Spec(
        "trunkguard_target_silences_total", "counter", T,
        "Times the target went silent past its own first-response times (new calls held back)",
    ),
    Spec(
        "trunkguard_target_probe_rtt_seconds", "gauge", T,
        "Round trip of the last answered OPTIONS probe (absent before the first)",
    ),
    Spec("trunkguard_target_probes_total", "counter", T, "OPTIONS probes sent to the target"),
    Spec(
        "trunkguard_target_probe_failures_total", "counter", T,
        "Probes unanswered, unreachable or answered with a dead status",
    ),
    # -- per carrier --------------------------------------------------------------------------
    Spec(
        "trunkguard_carrier_registration_state", "gauge", ("carrier", "state"),
        "1 for the state of the carrier's registration, 0 for the others",
    ),
    Spec(
        "trunkguard_carrier_registration_expires_seconds", "gauge", ("carrier",),
        "Seconds until the carrier's registration lapses without a refresh (when REGISTERED)",
    ),
    # -- the process --------------------------------------------------------------------------
    Spec(
        "trunkguard_transactions", "gauge", ("kind",),
        "SIP transactions open (client, server) or kept for retransmissions (finished)",
    ),
    Spec(
        "trunkguard_dialogs", "gauge", ("kind",),
        "Dialogs the router tracks: up (answered calls), closing (ended, kept a little "
        "for retransmissions)",
    ),
    Spec("trunkguard_calls_in_setup", "gauge", (), "Calls without a final answer yet"),
    Spec("trunkguard_branches_pending", "gauge", (), "Attempts waiting for a target's answer"),
    Spec("trunkguard_messages_received_total", "counter", (), "SIP messages received"),
    Spec(
        "trunkguard_messages_dropped_total", "counter", ("kind",),
        "Messages dropped unread: source (banned or over its rate), forbidden (not in "
        "allow), kernel (receive queue full)",
    ),
    Spec("trunkguard_parse_errors_total", "counter", (), "Messages that did not parse"),
    Spec("trunkguard_calls_admitted_total", "counter", (), "New calls taken on"),
    Spec(
        "trunkguard_calls_ended_total", "counter", ("kind",),
        "Calls over, by how: answered, destination_final, no_answer, failed, cancelled, "
        "refused, other",
    ),
    Spec(
        "trunkguard_calls_shed_total", "counter", ("kind",),
        "New calls the router refused itself: overload, stalled (event loop), shutdown, "
        "source_limit, table_full",
    ),
    Spec(
        "trunkguard_event_loop_lag_seconds", "gauge", (),
        "How late the last load sample's timer fired",
    ),
    Spec(
        "trunkguard_event_loop_stalls_total", "counter", (),
        "Times the event loop was found stalled",
    ),
    Spec(
        "trunkguard_overload_refused_ratio", "gauge", (),
        "Share of new calls refused for load now (0-1)",
    ),
    Spec("trunkguard_overload_episodes_total", "counter", (), "Overload episodes begun"),
    Spec(
        "trunkguard_receive_queue_bytes", "gauge", (),
        "Bytes waiting in the fullest UDP receive queue, at the last load sample",
    ),
    # HA (the ha: section only; docs/ha.md)
    Spec(
        "trunkguard_ha_role", "gauge", ("role",),
        "This node's HA role: 1 for the one it is in (standby, campaigning, active, fenced)",
    ),
    Spec("trunkguard_ha_serving", "gauge", (), "1 while this HA node serves (its gate is open)"),
    Spec("trunkguard_ha_etcd_connected", "gauge", (), "1 while etcd answers this HA node"),
    Spec("trunkguard_ha_takeovers_total", "counter", (), "Times this HA node became active"),
    Spec(
        "trunkguard_ha_fences_total", "counter", (),
        "Times this HA node stopped serving because it could not renew its lease in time",
    ),
)  # fmt: skip
HA_ROLES: tuple[str, ...] = ("standby", "campaigning", "active", "fenced")
SPEC = {s.name: s for s in SPECS}


def exported_names() -> set[str]:
    """Every sample name the router's collector can export (``_bucket``, ``_sum`` ...)."""
    out: set[str] = set()
    for s in SPECS:
        if s.type == "histogram":
            out.update(s.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            out.add(s.name)
    return out


Family = GaugeMetricFamily | CounterMetricFamily


def _family(name: str) -> Family:
    s = SPEC[name]
    if s.type == "counter":
        return CounterMetricFamily(s.name, s.help, labels=s.labels)
    assert s.type == "gauge", s
    return GaugeMetricFamily(s.name, s.help, labels=s.labels)


def _histogram(name: str) -> HistogramMetricFamily:
    s = SPEC[name]
    assert s.type == "histogram", s
    return HistogramMetricFamily(s.name, s.help, labels=s.labels)


class RouterCollector:
    """Reads a Runtime (and its tallies) into metric families, at scrape time."""

    def __init__(self, runtime: Runtime, tallies: Tallies, clock: Callable[[], float]) -> None:
        self.runtime = runtime
        self.tallies = tallies
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        for s in SPECS:
            yield _histogram(s.name) if s.type == "histogram" else _family(s.name)

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        yield from self._targets(now)
        yield from self._registrations(now)
        yield from self._process()
        yield from self._ha()

    def _ha(self) -> Iterator[Metric]:
        node = self.runtime.ha
        if node is None:
            return
        view = node.view()
        role = _family("trunkguard_ha_role")
        for r in HA_ROLES:
            role.add_metric([r], 1.0 if view["role"] == r else 0.0)
        yield role
        for name, value in (
            ("trunkguard_ha_serving", view["serving"]),
            ("trunkguard_ha_etcd_connected", view["etcd"] == "connected"),
            ("trunkguard_ha_takeovers_total", view["takeovers"]),
            ("trunkguard_ha_fences_total", view["fences"]),
        ):
            family = _family(name)
            family.add_metric([], float(value))
            yield family

    def _targets(self, now: float) -> Iterator[Metric]:
        rt = self.runtime
        targets = [t for t in rt.proxy.targets if t.name in rt.health.targets]
        self.tallies.keep_only(t.name for t in targets)
        f = {
            s.name: _family(s.name)
            for s in SPECS
            if s.labels[:1] == ("target",) and s.type != "histogram"
        }
        pdd = _histogram("trunkguard_target_pdd_seconds")
        counters = rt.proxy.counters
        rtt = rt.prober.rtt if rt.prober is not None else {}
        for target in targets:
            name = target.name
            h = rt.health.targets[name]
            tally = self.tallies.of(name)
            f["trunkguard_target_info"].add_metric([name, target.carrier], 1.0)
            state = h.state.value
            for s in STATES:
                f["trunkguard_target_state"].add_metric([name, s], 1.0 if s == state else 0.0)
            f["trunkguard_target_calls_total"].add_metric([name], tally.calls)
            f["trunkguard_target_answers_total"].add_metric([name], tally.answers)
            for klass in CLASSES:
                f["trunkguard_target_outcomes_total"].add_metric(
                    [name, klass], tally.outcomes[klass]
                )
            for kind in FAULT_KINDS:
                f["trunkguard_target_trunk_faults_total"].add_metric(
                    [name, kind], tally.faults[kind]
                )
            f["trunkguard_target_overflow_total"].add_metric([name], tally.overflow)
            pdd.add_metric([name], tally.cumulative(), tally.pdd_sum)
            fig = rt.stats.rates(name, now)
            f["trunkguard_target_calls_per_second"].add_metric([name], fig.calls_per_s)
            if fig.asr is not None:
                f["trunkguard_target_asr_ratio"].add_metric([name], fig.asr)
            if fig.acd is not None:
                f["trunkguard_target_acd_seconds"].add_metric([name], fig.acd)
            f["trunkguard_target_trips_total"].add_metric([name], h.trips)
            f["trunkguard_target_silences_total"].add_metric([name], h.silence.episodes)
            if name in rtt:
                f["trunkguard_target_probe_rtt_seconds"].add_metric([name], rtt[name])
            f["trunkguard_target_probes_total"].add_metric([name], counters[f"probes_to:{name}"])
            f["trunkguard_target_probe_failures_total"].add_metric(
                [name], counters[f"probes_failed:{name}"]
            )
        yield from f.values()
        yield pdd

    def _registrations(self, now: float) -> Iterator[Metric]:
        state = _family("trunkguard_carrier_registration_state")
        expires = _family("trunkguard_carrier_registration_expires_seconds")
        for carrier, reg in self.runtime.registrations.by_carrier.items():
            view = reg.view(now)
            for s in REGISTRATION_STATES:
                state.add_metric([carrier, s], 1.0 if view["state"] == s else 0.0)
            left = view.get("expires_in_s")
            if isinstance(left, float | int):
                expires.add_metric([carrier], float(left))
        yield state
        yield expires

    def _process(self) -> Iterator[Metric]:
        proxy = self.runtime.proxy
        counters = proxy.counters
        active = proxy.active()
        work = proxy.open_work()
        last = proxy.overload.last

        def one(name: str, value: float) -> Metric:
            family = _family(name)
            family.add_metric([], value)
            return family

        txns = _family("trunkguard_transactions")
        txns.add_metric(["client"], active["client_transactions"])
        txns.add_metric(["server"], active["server_transactions"])
        txns.add_metric(["finished"], active["finished_transactions"])
        yield txns
        dialogs = _family("trunkguard_dialogs")
        up = sum(1 for d in proxy.dialogs.table.values() if not d.ending)
        dialogs.add_metric(["up"], up)
        dialogs.add_metric(["closing"], active["dialogs"] - up)
        yield dialogs
        yield one("trunkguard_calls_in_setup", work["calls_unanswered"])
        yield one("trunkguard_branches_pending", work["branches_pending"])
        yield one("trunkguard_messages_received_total", counters["messages_in"])
        drops = _family("trunkguard_messages_dropped_total")
        for kind, counter in DROP_KINDS.items():
            drops.add_metric([kind], counters[counter])
        yield drops
        yield one("trunkguard_parse_errors_total", counters["parse_errors"])
        yield one("trunkguard_calls_admitted_total", counters["calls"])
        ended = _family("trunkguard_calls_ended_total")
        for kind in (*CALL_ENDS, "other"):
            ended.add_metric([kind], self.tallies.calls_ended[kind])
        yield ended
        shed = _family("trunkguard_calls_shed_total")
        for kind, counter in SHED_KINDS.items():
            shed.add_metric([kind], counters[counter])
        yield shed
        yield one("trunkguard_event_loop_lag_seconds", last.lag)
        yield one("trunkguard_event_loop_stalls_total", counters["loop_stalls"])
        yield one("trunkguard_overload_refused_ratio", proxy.overload.reject)
        yield one("trunkguard_overload_episodes_total", counters["overload_episodes"])
        yield one("trunkguard_receive_queue_bytes", last.queued)


def _loop_clock() -> float:
    # The engine's clock: the loop's monotonic time (see Runtime).
    return asyncio.get_running_loop().time()


class _Snapshot:
    """Families already collected: what the encoder reads, off the loop."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class Metrics:
    """A router's metrics: its own registry, its tallies listening to the runtime.

    ``attach`` subscribes the tallies to the runtime's events and ``detach``
    stops that (the admin app does both, at start-up and clean-up).
    """

    def __init__(
        self,
        runtime: Runtime,
        clock: Callable[[], float] = _loop_clock,
        *,
        process: bool = True,
    ) -> None:
        self.runtime = runtime
        self.tallies = Tallies()
        self.collector = RouterCollector(runtime, self.tallies, clock)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        # process_* (CPU, memory, file descriptors) and python_info, from /proc: they
        # read no router state, so they run with the encoding, off the loop.
        self._process = CollectorRegistry(auto_describe=False)
        if process:
            ProcessCollector(registry=self._process)
            PlatformCollector(registry=self._process)
        self._one_at_a_time = asyncio.Lock()

    def attach(self) -> None:
        if self.tallies.feed not in self.runtime.listeners:
            self.runtime.listeners.append(self.tallies.feed)

    def detach(self) -> None:
        while self.tallies.feed in self.runtime.listeners:
            self.runtime.listeners.remove(self.tallies.feed)

    def snapshot(self) -> list[Metric]:
        """Every family, read now (on the loop: it reads the router's state)."""
        return [*self.collector.collect(), *self._process.collect()]

    async def handler(self, request: web.Request) -> web.Response:
        """``GET /metrics``: read on the loop, encoded in a worker thread.

        Encoding the text is most of a scrape's cost (some 20 ms for 50 targets):
        on the loop, that would show as loop lag, which the overload control takes
        as a reason to refuse calls. The snapshot is plain data, safe to hand over.
        Content negotiation (text 0.0.4 or OpenMetrics) and gzip are
        prometheus_client's own.
        """
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        gzip_ok = gzip_accepted(",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, [])))
        encoder, content_type = choose_encoder(accept)
        async with self._one_at_a_time:  # scrapes in parallel would only queue threads up
            families = self.snapshot()
            body = await asyncio.to_thread(_encode, encoder, families, gzip_ok)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        if gzip_ok:
            response.headers[hdrs.CONTENT_ENCODING] = "gzip"
        return response


def _encode(encoder: Callable[[Collector], bytes], families: list[Metric], gzip_ok: bool) -> bytes:
    output = encoder(_Snapshot(families))
    return gzip.compress(output, compresslevel=1) if gzip_ok else output
