"""A lab of hosts as Linux network namespaces, for the HA tests (issue 12).

``with Lab(workdir) as lab:`` makes a switch namespace holding a bridge, and one namespace
per host (caller, r1, r2, carriers, etcd members: ``HOSTS``), each joined to the bridge by a
veth pair (``eth0`` on the host's side, a fixed MAC per host so a capture reads plainly).
Nothing is made in the machine's own namespace: removing the namespaces removes every link.

Every name carries the run's tag, ``tgl-<pid>-<start ticks>``, so runs side by side do not
meet, and a run that crashed (its pid gone, or reused by another process) is recognised:
``sweep()`` (called on entry) kills what still runs in such namespaces and deletes them.

However the lab ends (a failed assertion, Ctrl-C, an exception in setup), ``close()`` kills
every process it started (SIGKILL, then whatever ``ip netns pids`` still finds in its
namespaces) and deletes its namespaces. Processes get PR_SET_PDEATHSIG too, so none
outlives the test process even if it is killed.

What a test does in the lab:

* ``lab.popen(host, argv)`` runs a process inside a host (``ip netns exec``, which execs:
  the pid is the program's own), ``lab.run(host, argv)`` a short command;
* ``lab.call_in(host, fn)`` runs a Python function in a thread that has entered the host's
  namespace (``setns``): sockets it opens are the host's, e.g. an HTTP request to etcd or to
  a router's admin API from the caller's side;
* ``lab.partition(host, others)`` cuts a host from a set of others, both ways, with
  blackhole (or prohibit) routes; ``heal()`` puts them back;
* ``lab.capture(path)`` runs ``tcpdump -e -w`` on the bridge; ``read_pcap``/``senders`` read
  it back in plain Python and say, for packets sourced from an address, which MAC sent them
  when; ``overlaps`` says whether two MACs ever answered for it at the same time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, TypeVar

from sipp import die_with_parent

SUBNET = "10.77.0"
PREFIX_LEN = 24
SERVICE_ADDRESS = f"{SUBNET}.100"

#: The lab's hosts and their addresses (ha-spec.md).
HOSTS: dict[str, str] = {
    "caller": f"{SUBNET}.2",
    "r1": f"{SUBNET}.11",
    "r2": f"{SUBNET}.12",
    "c1": f"{SUBNET}.21",
    "c2": f"{SUBNET}.22",
    "e1": f"{SUBNET}.31",
    "e2": f"{SUBNET}.32",
    "e3": f"{SUBNET}.33",
}
ETCD_HOSTS = ("e1", "e2", "e3")
ROUTER_HOSTS = ("r1", "r2")

NS_PREFIX = "tgl-"
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)
COMMAND_TIMEOUT = 20.0  # an `ip` command on a loaded machine; never reached in practice

T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not be built or a command in it failed."""


def mac_of(address: str) -> str:
    """The fixed MAC of a lab host: 02:77:00:00:00:<last octet>, locally administered."""
    return f"02:77:00:00:00:{int(address.rsplit('.', 1)[1]):02x}"


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[19])


def run_tag(pid: int | None = None) -> str:
    """``tgl-<pid>-<start ticks>``: whose run a namespace is, even after a crash."""
    pid = os.getpid() if pid is None else pid
    return f"{NS_PREFIX}{pid}-{_start_ticks(pid)}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _namespace_pids(ns: str) -> list[int]:
    done = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in done.stdout.split() if x.isdigit()]


def _kill_namespace(ns: str) -> None:
    """SIGKILL everything in ``ns`` (bounded), then delete it."""
    for _ in range(20):
        pids = _namespace_pids(ns)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _ip("netns", "del", ns, check=False)


def sweep() -> list[str]:
    """Delete the lab namespaces of runs that are gone (their tag's pid is dead or reused);
    returns their names. Another live run's namespaces are left alone."""
    removed = []
    for ns in list_namespaces():
        if not ns.startswith(NS_PREFIX):
            continue
        parts = ns[len(NS_PREFIX) :].split("-")
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if str(_start_ticks(pid)) == parts[1]:
            continue  # that run is alive
        _kill_namespace(ns)
        removed.append(ns)
    return removed


class _Namespace:
    """A thread that has entered a network namespace runs ``fn`` there (sockets it opens
    belong to that namespace); the thread ends afterwards, so no other code runs there."""

    @staticmethod
    def call(ns: str, fn: Callable[[], T], timeout: float) -> T:
        box: dict[str, object] = {}

        def body() -> None:
            try:
                fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
                try:
                    if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns {ns}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise LabError(f"call in {ns} did not return within {timeout} s")
        if "error" in box:
            error = box["error"]
            assert isinstance(error, BaseException)
            raise error
        return box["value"]  # type: ignore[return-value]


@dataclass
class Partition:
    """Blackhole (or prohibit) routes cutting ``host`` from ``others``, both ways."""

    lab: Lab
    host: str
    others: tuple[str, ...]
    kind: str
    routes: list[tuple[str, str]]  # (host whose table holds it, destination address)

    def heal(self) -> None:
        for owner, dest in self.routes:
            self.lab.run(owner, ["ip", "route", "del", self.kind, f"{dest}/32"], check=False)
        self.routes = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()


class Capture:
    """``tcpdump -e -w`` on the lab's bridge, packet-buffered; stop() flushes and ends it."""

    def __init__(self, lab: Lab, path: Path) -> None:
        self.lab = lab
        self.path = path
        self.stderr_path = path.with_suffix(".stderr")
        with self.stderr_path.open("wb") as err:
            self.process = lab.popen(
                "switch",
                ["tcpdump", "-i", "br0", "-e", "-n", "-U", "--immediate-mode", "-Z", "root",
                 "-s", "256", "-w", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )  # fmt: skip
        deadline = time.monotonic() + 15.0
        while b"listening on" not in self._stderr():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LabError(f"tcpdump did not start: {self._stderr().decode(errors='replace')}")
            time.sleep(0.02)

    def _stderr(self) -> bytes:
        try:
            return self.stderr_path.read_bytes()
        except OSError:
            return b""

    def stop(self) -> Path:
        if self.process.poll() is None:
            # tcpdump ends on SIGINT without reading what the kernel still holds for it:
            # a moment for the last frames (immediate mode hands them over at once).
            time.sleep(0.2)
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Lab:
    def __init__(
        self,
        workdir: Path,
        hosts: dict[str, str] | None = None,
        *,
        tag: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.hosts = dict(HOSTS if hosts is None else hosts)
        self.tag = tag or run_tag()
        # Several labs in one process (one after another) get names of their own.
        self.tag = f"{self.tag}-{next(_SERIAL)}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.partitions: list[Partition] = []
        self._lock = threading.Lock()

    # -- names ----------------------------------------------------------------------

    def ns(self, host: str) -> str:
        """The namespace of ``host`` (or of the bridge, ``"switch"``)."""
        if host != "switch" and host not in self.hosts:
            raise LabError(f"no host {host!r} in this lab")
        return f"{self.tag}-{host}"

    def address(self, host: str) -> str:
        return self.hosts[host]

    def mac(self, host: str) -> str:
        return mac_of(self.hosts[host])

    def host_of_mac(self, mac: str) -> str | None:
        return next((h for h in self.hosts if self.mac(h) == mac.lower()), None)

    # -- life -----------------------------------------------------------------------

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        sweep()
        try:
            self._add_namespace("switch")
            self.run("switch", ["ip", "link", "set", "lo", "up"])
            self.run("switch", ["ip", "link", "add", "br0", "type", "bridge"])
            # No STP, no learning delay: the bridge forwards the moment a port is up.
            self.run("switch", ["ip", "link", "set", "br0", "type", "bridge", "forward_delay", "0",
                                "stp_state", "0"])  # fmt: skip
            self.run("switch", ["ip", "link", "set", "br0", "up"])
            for host in self.hosts:
                self._add_host(host)
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, host: str) -> None:
        ns = self.ns(host)
        _ip("netns", "add", ns)
        self.namespaces.append(ns)

    def _add_host(self, host: str) -> None:
        ns, sw = self.ns(host), self.ns("switch")
        self._add_namespace(host)
        port = f"p-{host}"[:15]
        _ip("link", "add", "eth0", "netns", ns, "address", self.mac(host), "type", "veth",
            "peer", "name", port, "netns", sw)  # fmt: skip
        self.run("switch", ["ip", "link", "set", port, "master", "br0", "up"])
        self.run(host, ["ip", "link", "set", "lo", "up"])
        self.run(host, ["ip", "addr", "add", f"{self.hosts[host]}/{PREFIX_LEN}", "dev", "eth0"])
        self.run(host, ["ip", "link", "set", "eth0", "up"])
        # A router binds the service address before it holds it (the standby's listener).
        self.run(host, ["sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1"])

    def close(self) -> None:
        for part in list(self.partitions):
            with contextlib.suppress(LabError, OSError, subprocess.SubprocessError):
                part.heal()
        with self._lock:
            processes, self.processes = self.processes, []
        for proc in processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
        for proc in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for ns in reversed(self.namespaces):
            _kill_namespace(ns)
        self.namespaces = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- running things in a host ---------------------------------------------------

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside ``host``: ``ip netns exec NS argv`` (ip execs the program)."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def run(
        self, host: str, argv: Sequence[str], *, check: bool = True, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(host, argv), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise LabError(f"{host}: {' '.join(argv)}: {done.stderr.strip() or done.returncode}")
        return done

    def popen(
        self,
        host: str,
        argv: Sequence[str],
        *,
        preexec_fn: Callable[[], None] | None = None,
        **kwargs: object,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``; the lab kills it at close, and it dies with the
        test process (PR_SET_PDEATHSIG)."""

        def setup() -> None:
            if preexec_fn is not None:
                preexec_fn()
            die_with_parent()

        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            self.command(host, argv), preexec_fn=setup, **kwargs
        )
        with self._lock:
            self.processes.append(proc)
        return proc

    def call_in(self, host: str, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` in a thread inside ``host``'s namespace and return what it returns."""
        return _Namespace.call(self.ns(host), fn, timeout)

    # -- the network ----------------------------------------------------------------

    def partition(
        self,
        host: str,
        others: Iterable[str],
        kind: Literal["blackhole", "prohibit"] = "blackhole",
    ) -> Partition:
        """Cut ``host`` from ``others`` both ways: a /32 route of ``kind`` in each table.
        ``blackhole`` drops silently (a cable cut); ``prohibit`` fails sends at once."""
        others = tuple(others)
        part = Partition(self, host, others, kind, [])
        self.partitions.append(part)
        try:
            for other in others:
                for owner, dest in ((host, self.hosts[other]), (other, self.hosts[host])):
                    self.run(owner, ["ip", "route", "add", kind, f"{dest}/32"])
                    part.routes.append((owner, dest))
        except BaseException:
            part.heal()
            raise
        return part

    def capture(self, path: Path) -> Capture:
        return Capture(self, path)

    def add_address(self, host: str, address: str = SERVICE_ADDRESS) -> None:
        self.run(host, ["ip", "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0"])

    def has_address(self, host: str, address: str = SERVICE_ADDRESS) -> bool:
        out = self.run(host, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
        return f" {address}/" in out


def _serial() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


_SERIAL = _serial()


# ------------------------------------------------------------------------ the capture


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured Ethernet frame, reduced to what the HA checks read."""

    time: float  # unix seconds
    src_mac: str
    dst_mac: str
    ethertype: int
    src_ip: str | None  # IPv4 source, or an ARP packet's sender address
    dst_ip: str | None
    proto: int | None  # IPv4 protocol (17 UDP), None for ARP
    arp_op: int | None  # 1 request, 2 reply (a gratuitous ARP is either)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ipv4(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def read_pcap(path: Path) -> list[Frame]:
    """Frames of a classic pcap file (either byte order, micro- or nanosecond stamps,
    Ethernet link type); a truncated last record is skipped (tcpdump killed mid-write)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    orders = {
        b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
        b"\xa1\xb2\xc3\xd4": (">", 1e-6),
        b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
        b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    }
    if magic not in orders:
        raise ValueError(f"{path}: not a pcap file (magic {magic.hex()})")
    order, unit = orders[magic]
    linktype = struct.unpack(order + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    frames = []
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(order + "IIII", data[offset : offset + 16])
        offset += 16
        packet = data[offset : offset + caplen]
        offset += caplen
        if len(packet) < caplen or caplen < 14:
            break
        frame = _frame(sec + frac * unit, packet)
        if frame is not None:
            frames.append(frame)
    return frames


def _frame(when: float, packet: bytes) -> Frame | None:
    dst, src = _mac(packet[0:6]), _mac(packet[6:12])
    ethertype = struct.unpack("!H", packet[12:14])[0]
    body = packet[14:]
    if ethertype == 0x8100 and len(body) >= 4:  # one VLAN tag
        ethertype = struct.unpack("!H", body[2:4])[0]
        body = body[4:]
    if ethertype == 0x0800 and len(body) >= 20:
        return Frame(when, src, dst, ethertype, _ipv4(body[12:16]), _ipv4(body[16:20]),
                     body[9], None)  # fmt: skip
    if ethertype == 0x0806 and len(body) >= 28:
        op = struct.unpack("!H", body[6:8])[0]
        return Frame(when, src, dst, ethertype, _ipv4(body[14:18]), _ipv4(body[24:28]),
                     None, op)  # fmt: skip
    return Frame(when, src, dst, ethertype, None, None, None, None)


@dataclass(frozen=True, slots=True)
class Span:
    """The first and last moment one MAC sent packets sourced from an address."""

    mac: str
    first: float
    last: float
    packets: int


def senders(frames: Iterable[Frame], address: str, *, arp: bool = True) -> list[Span]:
    """Per MAC that sent IPv4 packets (or, with ``arp``, ARP) sourced from ``address``:
    when it first and last did, oldest first."""
    spans: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for f in frames:
        if f.src_ip != address or (f.ethertype == 0x0806 and not arp):
            continue
        if f.ethertype not in (0x0800, 0x0806):
            continue
        span = spans.setdefault(f.src_mac, [f.time, f.time])
        span[0] = min(span[0], f.time)
        span[1] = max(span[1], f.time)
        counts[f.src_mac] = counts.get(f.src_mac, 0) + 1
    out = [Span(mac, first, last, counts[mac]) for mac, (first, last) in spans.items()]
    return sorted(out, key=lambda s: s.first)


def overlaps(spans: Sequence[Span]) -> list[tuple[Span, Span]]:
    """Pairs of MACs whose spans intersect: a moment (within the capture's resolution)
    when both were answering for the address. Empty means one authority at a time."""
    found = []
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if a.first <= b.last and b.first <= a.last:
                found.append((a, b))
    return found


def sequence(frames: Iterable[Frame], address: str) -> list[tuple[str, float, float, int]]:
    """The MACs that sent from ``address``, as runs in time order: (mac, first, last,
    packets). One run per MAC means the address moved once and never came back."""
    runs: list[tuple[str, float, float, int]] = []
    for f in sorted((f for f in frames if f.src_ip == address), key=lambda f: f.time):
        if f.ethertype not in (0x0800, 0x0806):
            continue
        if runs and runs[-1][0] == f.src_mac:
            mac, first, _, n = runs[-1]
            runs[-1] = (mac, first, f.time, n + 1)
        else:
            runs.append((f.src_mac, f.time, f.time, 1))
    return runs
