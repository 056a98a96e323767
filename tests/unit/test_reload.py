"""Reload (SIGHUP): new config and decks in force, states kept, calls in progress untouched."""

from __future__ import annotations

from pathlib import Path

from test_proxy_core import CALLER, A, invite, only_request, reply, responses

from trunkguard.config import load_config
from trunkguard.health import State
from trunkguard.proxy import Flow
from trunkguard.runtime import Runtime
from trunkguard.sip import Request, Response, parse_message

CONFIG = """\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - {name: a, uri: "sip:127.0.0.1:5071", deck: {path: a.csv}}
  - {name: b, uri: "sip:127.0.0.1:5072", deck: {path: b.csv}}
probe: {enabled: false}
store: {path: events.db}
"""


def _write(tmp: Path, a_rate: str, extra: str = "") -> Path:
    (tmp / "a.csv").write_text(f"prefix,rate\n44,{a_rate}\n")
    (tmp / "b.csv").write_text("prefix,rate\n44,0.0100\n")
    (tmp / "d.csv").write_text("prefix,rate\n44,0.0001\n")
    path = tmp / "router.yaml"
    path.write_text(CONFIG + extra)
    return path


def _uk_call(call_id: str) -> bytes:
    return invite(call_id).replace(b"15551234567", b"442079460000")


def _take(runtime: Runtime) -> list[tuple[Flow, Request | Response]]:
    out = [(f, parse_message(d)) for f, d in runtime.proxy.outbox]
    runtime.proxy.outbox.clear()
    return out


def test_reload_swaps_decks_keeps_states_and_calls(tmp_path: Path) -> None:
    path = _write(tmp_path, a_rate="0.0050")
    config, _ = load_config(path)
    runtime = Runtime(config)
    runtime.start(0.0)
    proxy = runtime.proxy
    # A call in progress through a (the cheapest) when the reload comes.
    proxy.receive(_uk_call("r1"), CALLER, 1.0)
    to_a = only_request(_take(runtime), A, "INVITE")
    assert to_a.uri == "sip:442079460000@127.0.0.1:5071"
    # b goes DOWN before the reload.
    proxy.apply_health_changes(runtime.health.unreachable("b", 1.0, "test"))

    _write(tmp_path, a_rate="0.0200")
    (tmp_path / "router.yaml").write_text(
        CONFIG.replace(
            '  - {name: b, uri: "sip:127.0.0.1:5072", deck: {path: b.csv}}\n',
            '  - {name: b, uri: "sip:127.0.0.1:5072", deck: {path: b.csv}}\n'
            '  - {name: d, uri: "sip:127.0.0.1:5074", deck: {path: d.csv}}\n',
        )
    )
    new, _ = load_config(path)
    notes = runtime.reload(new, new.routing(), 2.0)
    assert notes == []
    assert runtime.health.state("b") is State.DOWN  # kept across the reload
    assert "d" in runtime.health.targets
    # The call in progress completes on the plan it had.
    proxy.receive(reply(to_a, 180), A, 2.1)
    proxy.receive(reply(to_a, 200), A, 2.2)
    assert responses(_take(runtime), CALLER) == [180, 200]
    # New calls follow the new decks: d is now the cheapest for 44.
    request = parse_message(_uk_call("r2"))
    assert isinstance(request, Request)
    plan = proxy.plan(request, 3.0)
    assert [t.name for t in plan.targets] == ["d", "a"]  # b is DOWN
    runtime.close()


def test_reload_notes_what_needs_a_restart(tmp_path: Path) -> None:
    path = _write(tmp_path, a_rate="0.0050")
    config, _ = load_config(path)
    runtime = Runtime(config)
    runtime.start(0.0)
    path.write_text(CONFIG.replace("5060", "5061"))
    new, _ = load_config(path)
    assert runtime.reload(new, new.routing(), 1.0) == [
        "listen/advertise changes take effect at the next restart"
    ]
    runtime.close()
