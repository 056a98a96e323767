"""A carrier found through DNS as the runtime keeps it: one target per destination.

No sockets: DNS answers are handed to ``Runtime.dns_changed`` as the watcher would, and
SIP goes through the proxy core's ``receive`` and outbox.
"""

from __future__ import annotations

from pathlib import Path

from test_proxy_core import CALLER, invite, reply

from trunkguard.config import load_config
from trunkguard.dns import Destination
from trunkguard.proxy import Flow
from trunkguard.runtime import Runtime
from trunkguard.sip import Request, Response, parse_message

CONFIG = """\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - {name: acme, uri: "sip:trunk.acme.test", max_calls: 10}
  - {name: b, uri: "sip:127.0.0.1:5072"}
probe: {enabled: false}
store: {path: events.db}
"""
RECORDS = [
    Destination("sbc1.acme.test", "127.0.0.2", 5060, "udp", 10, 50),
    Destination("sbc2.acme.test", "127.0.0.3", 5060, "udp", 10, 50),
    Destination("sbc3.acme.test", "127.0.0.4", 5060, "udp", 10, 50),
]
B = Flow("udp", ("127.0.0.1", 5072))


def _runtime(tmp: Path, extra: str = "") -> Runtime:
    path = tmp / "router.yaml"
    path.write_text(CONFIG + extra)
    config, _ = load_config(str(path))
    runtime = Runtime(config)
    runtime.start(1000.0)
    return runtime


def _take(runtime: Runtime) -> list[tuple[Flow, Request | Response]]:
    out = [(f, parse_message(d)) for f, d in runtime.proxy.outbox]
    runtime.proxy.outbox.clear()
    return out


def _names(runtime: Runtime) -> list[str]:
    return [t.name for t in runtime.proxy.targets]


def test_each_record_is_a_target_and_a_reload_keeps_them(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    assert _names(runtime) == ["acme", "b"]  # the stand-in, until the name resolves
    assert runtime.dns_changed("acme", RECORDS, None, 1000.0)
    names = ["acme/127.0.0.2:5060", "acme/127.0.0.3:5060", "acme/127.0.0.4:5060"]
    assert _names(runtime) == [*names, "b"]
    # The carrier's max_calls is shared by its destinations.
    capacities = {id(runtime.health.targets[n].capacity) for n in names}
    assert len(capacities) == 1
    assert runtime.health.targets[names[0]].capacity.max_calls == 10
    config, _ = load_config(str(tmp_path / "router.yaml"))
    runtime.reload(config, config.routing(), 1001.0)
    assert _names(runtime) == [*names, "b"]
    assert not runtime.dns_changed("acme", RECORDS, None, 1002.0)  # nothing new
    runtime.close()


def test_a_record_removed_under_a_call_in_flight_does_not_break_it(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    runtime.dns_changed("acme", RECORDS[:1], None, 1000.0)
    runtime.proxy.receive(invite("dns-call-1"), CALLER, 1000.0)
    runtime.pump()
    sent = [m for f, m in _take(runtime) if isinstance(m, Request) and m.method == "INVITE"]
    (request,) = sent
    flow = Flow("udp", ("127.0.0.2", 5060))
    # The record goes away while its INVITE is out...
    runtime.dns_changed("acme", RECORDS[1:], None, 1000.1)
    assert "acme/127.0.0.2:5060" not in _names(runtime)
    # ...and its answer still reaches the caller.
    runtime.proxy.receive(reply(request, 180), flow, 1000.2)
    runtime.proxy.receive(reply(request, 200), flow, 1000.3)
    runtime.pump()
    statuses = [m.status for f, m in _take(runtime) if f == CALLER and isinstance(m, Response)]
    assert statuses == [180, 200]
    # Forgotten later, once nothing in flight can report on it.
    runtime.proxy.run_timers(1000.3 + runtime._forget_after() + 1)
    assert "acme/127.0.0.2:5060" not in runtime.health.targets
    runtime.close()


def test_a_carrier_with_three_failing_records_still_fails_over_to_the_next(
    tmp_path: Path,
) -> None:
    runtime = _runtime(tmp_path, "failover: {max_attempts: 2, max_destinations: 2}\n")
    runtime.dns_changed("acme", RECORDS, None, 1000.0)
    runtime.proxy.receive(invite("dns-call-2"), CALLER, 1000.0)
    now = 1000.0
    tried: list[Flow] = []
    for _ in range(5):
        runtime.pump()
        out = _take(runtime)
        invites = [(f, m) for f, m in out if isinstance(m, Request) and m.method == "INVITE"]
        if not invites:
            break
        flow, request = invites[0]
        tried.append(flow)
        if flow == B:
            break
        now += 0.01
        runtime.proxy.receive(reply(request, 503), flow, now)
    # Two of acme's three SBCs (max_destinations), then carrier b: not three of acme.
    assert len(tried) == 3 and tried[-1] == B, tried
    assert all(f.addr[0].startswith("127.0.0.") and f != B for f in tried[:2])
    runtime.close()
