"""A real DNS server for the tests: dnsmasq on 127.0.0.1, serving a zone the test sets.

dnsmasq (Debian's dnsmasq-base, installed by ``make dnsmasq``) answers as the carriers' DNS:
SRV (``srv-host=``), NAPTR (``naptr-record=``), A/AAAA with a TTL each (``host-record=``),
everything else under the zone's domain NXDOMAIN (``local=/test/``), nothing upstream.

How a new zone takes effect. dnsmasq re-reads on SIGHUP only /etc/hosts, ``--addn-hosts``,
``--hostsdir`` and the DHCP files; ``srv-host``, ``naptr-record`` and ``host-record`` lines
of a ``--conf-file`` are read at start only (dnsmasq(8), NOTES; checked: a SIGHUP after
adding an ``srv-host`` line leaves the old answer). So :meth:`Dnsmasq.set_records` writes
the new configuration and restarts dnsmasq on the same port. Each configuration carries
a generation number as a TXT record (``_generation.<domain>``), and set_records returns
only once the server answers with the new generation: the zone is in effect, no guessing.
A query that arrives during the restart (a few milliseconds) gets no reply, and the
client's retry within its lifetime gets the new zone.

Process handling, as in sipp.py: dnsmasq runs in the foreground (``--keep-in-foreground``:
no fork to the background, but otherwise as in production, unlike the debug mode of
``--no-daemon``) as a child with PR_SET_PDEATHSIG (SIGKILL when the test process dies), is
SIGTERMed then SIGKILLed on close, and inherits the environment, so the conftest's
TRUNKGUARD_TEST_SESSION marker finds it if anything goes wrong. Run as root, dnsmasq would
change to user nobody and group dip; a change of credentials clears PR_SET_PDEATHSIG, so
``--user``/``--group`` name the current ones and nothing changes. ``--pid-file=`` (empty):
no pid file. Its configuration lives in a working directory of its own (readable by all,
in case dnsmasq reads it as another user), with its log (``--log-queries``) beside it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from sipp import die_with_parent

HOST = "127.0.0.1"
_CONF = "dnsmasq.conf"
_LOG = "dnsmasq.log"


class DnsmasqError(RuntimeError):
    """dnsmasq could not be started or did not serve the zone it was given."""


@dataclass(frozen=True)
class SrvRecord:
    """``name`` is the full owner, e.g. ``_sip._udp.trunk.carrier.test``; target "." is
    "not available"."""

    name: str
    target: str
    port: int = 5060
    priority: int = 0
    weight: int = 0


@dataclass(frozen=True)
class NaptrRecord:
    name: str
    order: int
    preference: int
    service: str  # "SIP+D2U", "SIP+D2T", "SIPS+D2T"
    replacement: str
    flags: str = "s"
    regexp: str = ""


@dataclass(frozen=True)
class HostRecord:
    """A/AAAA records of ``name``, with their own TTL (the server's ``ttl`` if None)."""

    name: str
    addrs: tuple[str, ...]
    ttl: int | None = None


def dnsmasq_binary() -> str:
    # /usr/sbin is not on every user's PATH.
    path = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if path is None:
        raise DnsmasqError("dnsmasq is not installed (Debian package dnsmasq-base)")
    return path


def free_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP on ``host`` a moment ago (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
            return port
    raise DnsmasqError("no port free for both UDP and TCP")


def zone_lines(
    domain: str,
    srv: Iterable[SrvRecord] = (),
    naptr: Iterable[NaptrRecord] = (),
    hosts: Iterable[HostRecord] = (),
) -> list[str]:
    """The configuration lines of a zone (without the generation marker)."""
    lines = [f"local=/{domain}/"]
    for s in srv:
        lines.append(f"srv-host={s.name},{s.target},{s.port},{s.priority},{s.weight}")
    for n in naptr:
        lines.append(
            f"naptr-record={n.name},{n.order},{n.preference},{n.flags},{n.service},"
            f"{n.regexp},{n.replacement}"
        )
    for h in hosts:
        for addr in h.addrs:
            ttl = f",{h.ttl}" if h.ttl is not None else ""
            lines.append(f"host-record={h.name},{addr}{ttl}")
    return lines


class Dnsmasq:
    """dnsmasq serving a zone on ``127.0.0.1:port``; a context manager.

    ``ttl``: the TTL of SRV and NAPTR records and of host records without their own
    (``--local-ttl``). ``domain``: names under it that the zone lacks are NXDOMAIN.
    ``tmp_root``: where the working directory goes (kept); without it, a temporary one
    that close() removes.
    """

    def __init__(
        self,
        *,
        ttl: int = 1,
        domain: str = "test",
        tmp_root: Path | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.ttl = ttl
        self.domain = domain
        self.start_timeout = start_timeout
        if tmp_root is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="dnsmasq-"))
            self._owns_workdir = True
        else:
            tmp_root.mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(prefix="dnsmasq-", dir=tmp_root))
            self._owns_workdir = False
        self.workdir.chmod(0o755)
        self.port = 0
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.last_restart_s = 0.0  # from stopping the old server to the new zone answering
        self._lines: list[str] = zone_lines(domain)

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> Self:
        """Start on a free port with the current zone; return once it answers."""
        if self.process is None:
            self._launch(fixed_port=False)
        return self

    def set_records(
        self,
        *,
        srv: Iterable[SrvRecord] = (),
        naptr: Iterable[NaptrRecord] = (),
        hosts: Iterable[HostRecord] = (),
    ) -> None:
        """Replace the whole zone and return once dnsmasq serves it (restart, same port)."""
        self._lines = zone_lines(self.domain, srv, naptr, hosts)
        if self.process is None:
            return
        began = time.monotonic()
        self._terminate()
        self._launch(fixed_port=True)
        self.restarts += 1
        self.last_restart_s = time.monotonic() - began

    def log(self) -> str:
        try:
            return (self.workdir / _LOG).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self._terminate()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the process ------------------------------------------------------------------

    def _command(self) -> list[str]:
        command = [
            dnsmasq_binary(),
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            f"--listen-address={HOST}",
            f"--port={self.port}",
            f"--conf-file={self.workdir / _CONF}",
            f"--local-ttl={self.ttl}",
            "--pid-file=",
            "--log-facility=-",
            "--log-queries",
        ]
        if os.geteuid() == 0:
            command += [
                f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
                f"--group={grp.getgrgid(os.getegid()).gr_name}",
            ]
        return command

    def _write_conf(self) -> None:
        marker = f'txt-record=_generation.{self.domain},"{self.generation}"'
        path = self.workdir / _CONF
        path.write_text("\n".join([*self._lines, marker]) + "\n", encoding="ascii")
        path.chmod(0o644)

    def _launch(self, *, fixed_port: bool) -> None:
        end = time.monotonic() + self.start_timeout
        last = ""
        attempt = 0
        while time.monotonic() < end:
            attempt += 1
            if not fixed_port or self.port == 0:
                self.port = free_port()
            self.generation += 1
            self._write_conf()
            log_start = len(self.log())
            with (self.workdir / _LOG).open("ab") as log:
                self.process = subprocess.Popen(
                    self._command(),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=die_with_parent,
                )
            status = self._wait_serving(end)
            if status is None:
                return
            self.process = None
            last = self.log()[log_start:][-400:]
            if "in use" not in last:
                raise DnsmasqError(f"dnsmasq exited {status} at start: {last}")
            # The port is taken: a new one, or, for a restart, the same one a little later.
            time.sleep(min(0.02 * attempt, 0.2))
        raise DnsmasqError(f"dnsmasq did not serve on {HOST}:{self.port} in time: {last}")

    def _wait_serving(self, end: float) -> int | None:
        """None once the server answers the current generation; its exit status if it
        exits first. SIGKILL and DnsmasqError at ``end``."""
        assert self.process is not None
        query = dns.message.make_query(f"_generation.{self.domain}", dns.rdatatype.TXT)
        wanted = f'"{self.generation}"'
        while True:
            status = self.process.poll()
            if status is not None:
                return status
            with contextlib.suppress(dns.exception.DNSException, OSError):
                reply = dns.query.udp(query, HOST, port=self.port, timeout=0.02)
                if any(wanted in rrset.to_text() for rrset in reply.answer):
                    return None
            if time.monotonic() >= end:
                self._terminate()
                raise DnsmasqError(f"dnsmasq on port {self.port} never answered: {self.log()}")
            time.sleep(0.01)

    def _terminate(self, grace: float = 2.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()
