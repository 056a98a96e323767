"""The HA lab's harness itself (tests/e2e/netns.py, halab.py, etcd.py), before any HA code:
namespaces come and go with nothing left, the 3-member etcd cluster survives a member's
death, a partition cuts exactly what it names, and the capture tells which MAC answered
for the service address when (and sees it when two do)."""

from __future__ import annotations

import os
import socket
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd import EtcdCluster
from halab import SIP_PORT, lab_etcd, lab_router, lab_uac, lab_uas, wait_for
from netns import (
    NS_PREFIX,
    SERVICE_ADDRESS,
    Lab,
    LabError,
    _ip,
    list_namespaces,
    overlaps,
    read_pcap,
    senders,
    sequence,
    sweep,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab's network namespaces need root"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("netns-lab")) as lab:
        yield lab


@pytest.fixture(scope="module")
def etcd(lab: Lab) -> Iterator[EtcdCluster]:
    started = time.monotonic()
    with lab_etcd(lab) as cluster:
        took = time.monotonic() - started
        print(f"\n3-member etcd cluster in the lab answered after {took:.2f} s")
        yield cluster


def _tcp_reaches(lab: Lab, host: str, address: str, port: int, timeout: float = 1.0) -> bool:
    def connect() -> bool:
        with socket.create_connection((address, port), timeout=timeout):
            return True

    try:
        return lab.call_in(host, connect)
    except OSError:
        return False


def test_lab_leaves_nothing_even_when_the_test_fails(tmp_path: Path) -> None:
    # A crashed run's namespace (its pid cannot exist) is swept by the next lab.
    stale = f"{NS_PREFIX}999999999-1-1-caller"
    _ip("netns", "add", stale)
    names = {"a": "10.77.0.2", "b": "10.77.0.11"}
    with pytest.raises(RuntimeError, match="on purpose"), Lab(tmp_path, names) as lab:
        assert stale not in list_namespaces()
        mine = [ns for ns in list_namespaces() if ns.startswith(lab.tag)]
        assert sorted(mine) == sorted(lab.ns(h) for h in ("switch", "a", "b"))
        sleeper = lab.popen("a", ["sleep", "300"])
        assert _tcp_reaches(lab, "a", "10.77.0.11", 9) is False  # nobody listens: refused
        # The hosts see each other through the bridge, and only their own stack.
        listener = lab.call_in("b", lambda: socket.create_server(("10.77.0.11", 7000)))
        try:
            assert _tcp_reaches(lab, "a", "10.77.0.11", 7000)
            assert lab.has_address("b", "10.77.0.11") and not lab.has_address("a", "10.77.0.11")
        finally:
            listener.close()
        raise RuntimeError("on purpose")
    assert not [ns for ns in list_namespaces() if ns.startswith(lab.tag)]
    assert sleeper.poll() is not None, "a process of the lab outlived it"
    assert sweep() == []


def test_one_etcd_member_killed_the_cluster_still_answers(lab: Lab, etcd: EtcdCluster) -> None:
    leader = wait_for(lambda: (etcd.leader(timeout=2.0),), 30.0)
    assert leader is not None and leader[0] is not None, "no raft leader"
    victim = leader[0]
    revision = etcd.put("/lab/before", "1", i=(victim + 1) % 3)
    killed = time.monotonic()
    etcd.kill(victim)
    survivors = [i for i in range(3) if i != victim]
    # The two others elect a leader among themselves and take writes again.
    answered = wait_for(lambda: etcd.put("/lab/after", "2", i=survivors[0], timeout=1.0), 30.0)
    took = time.monotonic() - killed
    assert answered and answered > revision
    assert etcd.get("/lab/before", i=survivors[1]) == "1"
    assert etcd.get("/lab/after", i=survivors[1]) == "2"
    new_leader = etcd.leader(timeout=2.0)
    print(f"\netcd raft leader m{victim} killed: writes answered again after {took:.2f} s, "
          f"new leader m{new_leader}")  # fmt: skip
    assert new_leader in survivors
    # The member comes back with its data and catches up.
    etcd.start_member(victim)
    etcd.wait_healthy(members=[victim])
    assert wait_for(lambda: etcd.get("/lab/after", i=victim) == "2", 30.0)


def test_a_partition_cuts_exactly_what_it_names(lab: Lab, etcd: EtcdCluster) -> None:
    etcd_ips = [lab.address(h) for h in ("e1", "e2", "e3")]
    assert all(_tcp_reaches(lab, "r1", ip, 2379) for ip in etcd_ips)
    listener = lab.call_in("r2", lambda: socket.create_server((lab.address("r2"), 7001)))
    try:
        with lab.partition("r1", ["e1", "e2", "e3"]):
            # r1 reaches no member, either way; everyone else still does, and r1 still
            # reaches r2.
            assert not any(_tcp_reaches(lab, "r1", ip, 2379, timeout=0.5) for ip in etcd_ips)
            assert all(_tcp_reaches(lab, "r2", ip, 2379) for ip in etcd_ips)
            assert _tcp_reaches(lab, "r1", lab.address("r2"), 7001)
            with pytest.raises((OSError, urllib.error.URLError)):
                lab.call_in("r1", lambda: _read_from(etcd, 0, 0.5))
            assert etcd.put("/lab/partitioned", "r1", i=0) > 0  # from the caller's side
            # The other direction is cut too: a member cannot reach r1.
            listener_r1 = lab.call_in("r1", lambda: socket.create_server(("0.0.0.0", 7002)))
            try:
                assert not _tcp_reaches(lab, "e1", lab.address("r1"), 7002, timeout=0.5)
                assert _tcp_reaches(lab, "caller", lab.address("r1"), 7002)
            finally:
                listener_r1.close()
        assert wait_for(lambda: all(_tcp_reaches(lab, "r1", ip, 2379) for ip in etcd_ips), 10.0)
    finally:
        listener.close()


def _read_from(etcd: EtcdCluster, i: int, timeout: float) -> object:
    """A read of member ``i`` from the current thread's namespace (not through etcd.call)."""
    import json
    import urllib.request

    req = urllib.request.Request(
        etcd.client_url(i) + "/v3/kv/range", data=json.dumps({"key": "eA=="}).encode()
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as response:
        return response.read()


def _garp(lab: Lab, host: str) -> None:
    # Debian's arping (Habets'): -U alone sends "who-has ADDR tell <primary address>",
    # which updates nobody's entry for ADDR; -S makes the sender ADDR itself.
    lab.run(host, ["arping", "-U", "-S", SERVICE_ADDRESS, "-c", "1", "-w", "0.2", "-i", "eth0",
                   SERVICE_ADDRESS], check=False)  # fmt: skip


def test_the_capture_says_who_answered_on_the_service_address(
    lab: Lab, tmp_path: Path
) -> None:
    """Routers in r1 and r2 (no HA: the address is moved by hand), a carrier in c1, a
    caller: calls to the service address go to whichever host holds it, and the capture
    shows r1's MAC, then r2's, never both at once; holding it on both is seen."""
    carrier = lab_uas(lab, "c1", tmp_path)
    r1 = lab_router(lab, "r1", tmp_path / "r1")
    r2 = lab_router(lab, "r2", tmp_path / "r2")
    capture = lab.capture(tmp_path / "bridge.pcap")
    try:
        with carrier, r1, r2:
            lab.add_address("r1")
            _garp(lab, "r1")
            first = lab_uac(lab, "caller", (SERVICE_ADDRESS, SIP_PORT), tmp_path, calls=5,
                            rate=10).wait()  # fmt: skip
            assert first.successful == 5, first.describe()
            lab.run("r1", ["ip", "addr", "del", f"{SERVICE_ADDRESS}/24", "dev", "eth0"])
            moved = time.time()
            lab.add_address("r2")
            _garp(lab, "r2")
            second = lab_uac(lab, "caller", (SERVICE_ADDRESS, SIP_PORT), tmp_path, calls=5,
                             rate=10).wait()  # fmt: skip
            assert second.successful == 5, second.describe()
            frames = read_pcap(capture.stop())
            spans = senders(frames, SERVICE_ADDRESS)
            print("\nservice address senders: " + ", ".join(
                f"{lab.host_of_mac(s.mac)} {s.packets} packets "
                f"{s.first - moved:+.3f}..{s.last - moved:+.3f} s" for s in spans))  # fmt: skip
            assert [lab.host_of_mac(s.mac) for s in spans] == ["r1", "r2"]
            assert overlaps(spans) == []
            assert len(sequence(frames, SERVICE_ADDRESS)) == 2
            assert spans[0].last < moved <= spans[1].first
            # Both holding it (what fencing must prevent) shows as an overlap.
            second_capture = lab.capture(tmp_path / "both.pcap")
            lab.add_address("r1")
            for _ in range(2):
                _garp(lab, "r1")
                _garp(lab, "r2")
            both = senders(read_pcap(second_capture.stop()), SERVICE_ADDRESS)
            lab.run("r1", ["ip", "addr", "del", f"{SERVICE_ADDRESS}/24", "dev", "eth0"])
            assert {lab.host_of_mac(s.mac) for s in both} == {"r1", "r2"}
            assert len(overlaps(both)) == 1
    finally:
        capture.stop()
        carrier.close()
    # SIPp in a namespace writes its traces where the sipp module reads them.
    assert carrier.received("INVITE") == 10
    with pytest.raises(LabError):
        lab.run("r1", ["false"])


def _pcap(frames: list[tuple[float, bytes]], order: str = "<", nano: bool = False) -> bytes:
    import struct

    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for when, data in frames:
        sec = int(when)
        frac = round((when - sec) * (1e9 if nano else 1e6))
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data
    return out


def _udp_from(mac: str, src: str, dst: str = "10.77.0.2") -> bytes:
    eth = bytes.fromhex("027700000002") + bytes.fromhex(mac.replace(":", "")) + b"\x08\x00"
    ip = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0])
    ip += socket.inet_aton(src) + socket.inet_aton(dst)
    return eth + ip + b"\x13\xc4\x13\xc4\x00\x08\x00\x00"


def _garp_from(mac: str, address: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", ""))
    eth = b"\xff" * 6 + raw + b"\x08\x06"
    arp = bytes.fromhex("0001080006040001") + raw + socket.inet_aton(address)
    return eth + arp + b"\x00" * 6 + socket.inet_aton(address)


@pytest.mark.parametrize(("order", "nano"), [("<", False), (">", False), ("<", True)])
def test_the_pcap_reader_on_known_frames(tmp_path: Path, order: str, nano: bool) -> None:
    a, b = "02:77:00:00:00:0b", "02:77:00:00:00:0c"
    frames = [
        (100.25, _udp_from(a, SERVICE_ADDRESS)),
        (100.5, _udp_from(a, "10.77.0.11")),  # not from the service address
        (101.0, _garp_from(b, SERVICE_ADDRESS)),
        (101.125, _udp_from(b, SERVICE_ADDRESS)),
    ]
    path = tmp_path / "known.pcap"
    # A truncated last record (tcpdump killed mid-write) is left out.
    path.write_bytes(_pcap(frames, order, nano) + b"\x01\x02\x03")
    read = read_pcap(path)
    assert [round(f.time, 6) for f in read] == [100.25, 100.5, 101.0, 101.125]
    assert read[2].arp_op == 1 and read[2].src_ip == SERVICE_ADDRESS
    spans = senders(read, SERVICE_ADDRESS)
    assert [(s.mac, s.first, s.last, s.packets) for s in spans] == [
        (a, pytest.approx(100.25), pytest.approx(100.25), 1),
        (b, pytest.approx(101.0), pytest.approx(101.125), 2),
    ]
    assert overlaps(spans) == []
    assert [r[0] for r in sequence(read, SERVICE_ADDRESS)] == [a, b]
    assert [s.mac for s in senders(read, SERVICE_ADDRESS, arp=False)] == [a, b]
    # a answering again after b started is an overlap, and a second run of a.
    path.write_bytes(_pcap([*frames, (101.5, _udp_from(a, SERVICE_ADDRESS))], order, nano))
    again = read_pcap(path)
    assert len(overlaps(senders(again, SERVICE_ADDRESS))) == 1
    assert [r[0] for r in sequence(again, SERVICE_ADDRESS)] == [a, b, a]
