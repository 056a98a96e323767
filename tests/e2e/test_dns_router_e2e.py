"""Carriers found through DNS (RFC 3263), end to end: dnsmasq, the router, SIPp switches.

A carrier's name with three SRV records is three destinations, each with its health:
a dead one is skipped and the other two keep the carrier in rotation. A record added or
removed under the running router takes effect at its TTL, with no reload. A name that
does not resolve does not stop the router: its carrier is out with the DNS reason.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dnsmasq import Dnsmasq, HostRecord, SrvRecord
from router import RouterProcess
from sipp import free_udp_ports, run_uac, start_uas

pytestmark = pytest.mark.e2e

DOMAIN = "carrier.test"
NAME = f"trunk.{DOMAIN}"


def _srv(port: int, host: str, priority: int = 10, weight: int = 50) -> SrvRecord:
    return SrvRecord(f"_sip._udp.{NAME}", f"{host}.{DOMAIN}", port, priority, weight)


def _hosts(*names: str) -> list[HostRecord]:
    return [HostRecord(f"{n}.{DOMAIN}", ("127.0.0.1",), ttl=1) for n in names]


def test_three_srv_records_one_dead_keep_the_carrier_up(tmp_path: Path) -> None:
    p1, p2, dead = free_udp_ports(3)
    with (
        Dnsmasq(domain=DOMAIN, tmp_root=tmp_path) as dns,
        start_uas("uas_answer", port=p1, tmp_root=tmp_path) as sbc1,
        start_uas("uas_answer", port=p2, tmp_root=tmp_path) as sbc2,
    ):
        dns.set_records(
            srv=[_srv(p1, "sbc1"), _srv(p2, "sbc2"), _srv(dead, "sbc3")],
            hosts=_hosts("sbc1", "sbc2", "sbc3"),
        )
        host, port = dns.address
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [{"name": "acme", "uri": f"sip:{NAME}"}],
                "dns": {"servers": [f"{host}:{port}"]},
                "probe": {"interval": 1, "interval_out": 1},
            },
        )
        with router:
            assert router.wait_log("acme: 3 destinations from DNS", 10) is not None
            result = run_uac("uac_call", router.address, calls=60, rate=20, timeout=30)
            print(
                f"\n3 SRV records, one dead: {result.successful} of 60 calls answered, "
                f"{result.failed} failed; sbc1 took {sbc1.received('INVITE')}, "
                f"sbc2 {sbc2.received('INVITE')}"
            )
            assert (result.successful, result.failed) == (60, 0)
            assert sbc1.received("INVITE") > 0 and sbc2.received("INVITE") > 0
        events = [e for e in router.events() if "new" in e]
        out = {str(e["target"]) for e in events if e["new"] == "DOWN"}
        assert out == {f"acme/127.0.0.1:{dead}"}, events
        print(f"out of rotation: {sorted(out)}; the other two stayed UP")


def test_a_record_added_and_one_removed_take_effect_without_a_reload(tmp_path: Path) -> None:
    p1, p2, p3 = free_udp_ports(3)
    with (
        Dnsmasq(domain=DOMAIN, tmp_root=tmp_path) as dns,
        start_uas("uas_answer", port=p1, tmp_root=tmp_path) as sbc1,
        start_uas("uas_answer", port=p2, tmp_root=tmp_path),
        start_uas("uas_answer", port=p3, tmp_root=tmp_path) as sbc3,
    ):
        dns.set_records(srv=[_srv(p1, "sbc1"), _srv(p2, "sbc2")], hosts=_hosts("sbc1", "sbc2"))
        host, port = dns.address
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [{"name": "acme", "uri": f"sip:{NAME}"}],
                "dns": {"servers": [f"{host}:{port}"]},
            },
        )
        with router:
            assert router.wait_log("acme: 2 destinations from DNS", 10) is not None
            # sbc1 leaves, sbc3 arrives; the records' TTL is 1 s.
            dns.set_records(srv=[_srv(p2, "sbc2"), _srv(p3, "sbc3")], hosts=_hosts("sbc2", "sbc3"))
            changed = time.monotonic()
            seen = router.wait_log(f"udp:127.0.0.1:{p3}", 15)
            assert seen is not None, router.log()
            took = time.monotonic() - changed
            before = sbc1.received("INVITE")
            result = run_uac("uac_call", router.address, calls=20, rate=20, timeout=20)
            print(
                f"\nrecord change seen by the router {took:.2f}s after dnsmasq served it (TTL 1s); "
                f"then {result.successful}/20 calls, sbc3 took {sbc3.received('INVITE')}, "
                f"the removed sbc1 {sbc1.received('INVITE') - before}"
            )
            assert (result.successful, result.failed) == (20, 0)
            assert sbc3.received("INVITE") > 0
            assert sbc1.received("INVITE") == before


def test_a_name_that_does_not_resolve_leaves_its_carrier_out_not_the_router(
    tmp_path: Path,
) -> None:
    (b_port,) = free_udp_ports(1)
    with (
        Dnsmasq(domain=DOMAIN, tmp_root=tmp_path) as dns,
        start_uas("uas_answer", port=b_port, tmp_root=tmp_path) as b,
    ):
        host, port = dns.address
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [
                    {"name": "ghost", "uri": f"sip:nowhere.{DOMAIN}"},
                    {"name": "b", "uri": f"sip:127.0.0.1:{b_port}"},
                ],
                "dns": {"servers": [f"{host}:{port}"]},
            },
        )
        with router:
            result = run_uac("uac_call", router.address, calls=10, rate=10, timeout=20)
            assert (result.successful, result.failed) == (10, 0)
            assert b.received("INVITE") == 10
        (down,) = [e for e in router.events() if e.get("target") == "ghost"]
        print(f"\nunresolvable carrier: {down['new']}: {down['reason']}; 10/10 calls went to b")
        assert down["new"] == "DOWN" and str(down["reason"]).startswith("DNS: ")
