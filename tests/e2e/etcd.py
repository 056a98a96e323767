"""Real etcd servers for the tests, from Debian's ``etcd-server``, in temporary directories.

``EtcdCluster(["127.0.0.1"])`` is one member on loopback on free ports;
``EtcdCluster(["10.77.0.31", "10.77.0.32", "10.77.0.33"], run=...)`` is a three-member
cluster on those host addresses (the network-namespace lab passes a ``run`` that puts each
member in its host's namespace, and a ``call`` that makes the test's own requests from a
host of the lab). Members can be killed and started again one by one (``kill(i)``,
``start_member(i)``). Use it as a context manager: however the test ends, every member is
stopped (SIGTERM, then SIGKILL) and its directory removed.

The heartbeat and election timeout are short (50 ms, 500 ms), so that etcd honours leases
of about a second (its minimum TTL is 1.5 x the election timeout).

Requests go to etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/kv/put``,
``/v3/maintenance/status``), keys and values in base64, like the router's own client.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from sipp import die_with_parent

START_TIMEOUT = 30.0  # seconds for a member, then the cluster, to answer (loaded CI is slow)
T = TypeVar("T")


def etcd_binary() -> str:
    path = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if path is None:
        raise RuntimeError("etcd is not installed (Debian's etcd-server): make etcd")
    return path


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _direct(fn: Callable[[], T]) -> T:
    return fn()


class EtcdCluster:
    def __init__(
        self,
        hosts: Sequence[str] = ("127.0.0.1",),
        *,
        run: Callable[[int, list[str]], list[str]] | None = None,
        call: Callable[[Callable[[], Any]], Any] | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
    ) -> None:
        """``run(i, argv)`` returns the command that runs member ``i`` (default: argv itself);
        ``call(fn)`` runs the test's request ``fn`` where it can reach the members (default:
        here).

        Ports: on loopback (one host for all) each member gets free ports; on distinct
        hosts every member uses ``client_port``/``peer_port`` (2379/2380 by default).
        """
        self.hosts = list(hosts)
        self.run = run or (lambda i, argv: argv)
        self.call = call or _direct
        self.root = Path(tempfile.mkdtemp(prefix="trunkguard-etcd-"))
        shared = len(set(self.hosts)) < len(self.hosts) or len(self.hosts) == 1
        self.client_ports: list[int] = []
        self.peer_ports: list[int] = []
        for host in self.hosts:
            if shared and client_port is None:
                self.client_ports.append(free_tcp_port(host))
                self.peer_ports.append(free_tcp_port(host))
            else:
                self.client_ports.append(client_port or 2379)
                self.peer_ports.append(peer_port or 2380)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.token = f"tg-{time.monotonic_ns() % 10**9}"
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(self.hosts)
        self._started = [False] * len(self.hosts)
        atexit.register(self.close)

    # -- addresses ---------------------------------------------------------------------
    def name(self, i: int) -> str:
        return f"m{i}"

    def client_url(self, i: int) -> str:
        return f"http://{self.hosts[i]}:{self.client_ports[i]}"

    def peer_url(self, i: int) -> str:
        return f"http://{self.hosts[i]}:{self.peer_ports[i]}"

    @property
    def endpoints(self) -> list[str]:
        return [self.client_url(i) for i in range(len(self.hosts))]

    def log_path(self, i: int) -> Path:
        return self.root / f"{self.name(i)}.log"

    # -- life --------------------------------------------------------------------------
    def _argv(self, i: int) -> list[str]:
        initial = ",".join(f"{self.name(j)}={self.peer_url(j)}" for j in range(len(self.hosts)))
        # A member started again rejoins with its data directory.
        state = "existing" if self._started[i] else "new"
        return [
            etcd_binary(),
            "--name", self.name(i),
            "--data-dir", str(self.root / f"{self.name(i)}.data"),
            "--listen-client-urls", self.client_url(i),
            "--advertise-client-urls", self.client_url(i),
            "--listen-peer-urls", self.peer_url(i),
            "--initial-advertise-peer-urls", self.peer_url(i),
            "--initial-cluster", initial,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", state,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--log-level", "warn",
            "--logger", "zap",
        ]  # fmt: skip

    def running(self, i: int) -> bool:
        proc = self.procs[i]
        return proc is not None and proc.poll() is None

    def start_member(self, i: int) -> None:
        if self.running(i):
            return
        log = open(self.log_path(i), "ab")  # noqa: SIM115 - handed to the child
        try:
            self.procs[i] = subprocess.Popen(
                self.run(i, self._argv(i)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        self._started[i] = True

    def start(self) -> Self:
        try:
            for i in range(len(self.hosts)):
                self.start_member(i)
            self.wait_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def wait_healthy(
        self, timeout: float = START_TIMEOUT, members: Sequence[int] | None = None
    ) -> None:
        """Until each member (or those named) answers a write and a read through its JSON
        gateway (a write needs the cluster's quorum and a leader)."""
        deadline = time.monotonic() + timeout
        for i in members if members is not None else range(len(self.hosts)):
            while True:
                proc = self.procs[i]
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"etcd {self.name(i)} exited: {self.log_text(i)}")
                try:
                    self.put("/trunkguard-test/health", self.name(i), i=i, timeout=2.0)
                    self.get("/trunkguard-test/health", i=i, timeout=2.0)
                    break
                except (OSError, urllib.error.URLError, ValueError, KeyError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"etcd {self.name(i)} did not answer in {timeout:g}s: "
                            + self.log_text(i)
                        ) from None
                    time.sleep(0.1)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        for i in range(len(self.hosts)):
            self.kill(i, signal.SIGTERM)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------
    def request(
        self, i: int, path: str, body: dict[str, Any], timeout: float = 5.0
    ) -> dict[str, Any]:
        data = json.dumps(body).encode()
        req = urllib.request.Request(
            self.client_url(i) + path, data=data, headers={"Content-Type": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def send() -> dict[str, Any]:
            with opener.open(req, timeout=timeout) as response:
                out: dict[str, Any] = json.loads(response.read())
                return out

        result: dict[str, Any] = self.call(send)
        return result

    def get(self, key: str, i: int = 0, timeout: float = 5.0) -> str | None:
        """The value of ``key`` (text), or None."""
        reply = self.request(i, "/v3/kv/range", {"key": _b64(key)}, timeout=timeout)
        kvs = reply.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def put(self, key: str, value: str, i: int = 0, timeout: float = 5.0) -> int:
        """Write ``key``; returns the cluster's revision after the write."""
        reply = self.request(
            i, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, timeout=timeout
        )
        return int(reply["header"]["revision"])

    def status(self, i: int, timeout: float = 5.0) -> dict[str, Any]:
        """Member ``i``'s ``/v3/maintenance/status``: its id (``header.member_id``), the
        leader's id (``leader``), the raft term (``raftTerm``)."""
        return self.request(i, "/v3/maintenance/status", {}, timeout=timeout)

    def leader(self, timeout: float = 5.0) -> int | None:
        """The index of the member that is raft leader, as a live member reports it."""
        for i in range(len(self.hosts)):
            if not self.running(i):
                continue
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError, KeyError):
                status = self.status(i, timeout=timeout)
                leader_id = str(status["leader"])
                for j in range(len(self.hosts)):
                    if self.running(j):
                        with contextlib.suppress(OSError, urllib.error.URLError, KeyError):
                            if str(self.status(j, timeout)["header"]["member_id"]) == leader_id:
                                return j
        return None

    def log_text(self, i: int) -> str:
        try:
            return self.log_path(i).read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
