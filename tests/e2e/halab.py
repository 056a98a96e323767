"""The HA lab's peers in their namespaces: etcd members, SIPp carriers and callers, routers.

Built on netns.Lab (the hosts), etcd.EtcdCluster (the members), sipp (the scenarios and
their traces) and router.RouterProcess (``trunkguard run``). Each host has its own network
stack, so every SIPp uses the standard port 5060 on its host's address, and the routers
listen on the service address (bound before it is held: the lab sets ip_nonlocal_bind).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sipp
from etcd import EtcdCluster
from netns import ETCD_HOSTS, NETNS_DIR, SERVICE_ADDRESS, Lab, LabError
from router import RouterProcess

SIP_PORT = 5060
T = TypeVar("T")
_P = TypeVar("_P", bound=sipp.SippProcess)
_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


# ------------------------------------------------------------------------------ etcd


def lab_etcd(lab: Lab, hosts: Sequence[str] = ETCD_HOSTS, via: str = "caller") -> EtcdCluster:
    """An etcd cluster with one member in each of ``hosts`` (started by ``start()`` or
    ``with``); the test's own requests to it are made from ``via``'s namespace."""

    def run(i: int, argv: list[str]) -> list[str]:
        return lab.command(hosts[i], argv)

    def call(fn: Callable[[], Any]) -> Any:
        return lab.call_in(via, fn)

    return EtcdCluster([lab.address(h) for h in hosts], run=run, call=call)


# ------------------------------------------------------------------------------ SIPp


def _udp_bound_in(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a UDP socket on ``port`` (read in its own namespace's
    table, /proc/PID/net/udp: the test's /proc/net is another namespace's)."""
    try:
        with open(f"/proc/{pid}/net/udp", encoding="ascii") as table:
            next(table)
            inodes = {
                f[9] for f in (line.split() for line in table)
                if len(f) > 9 and f[1].endswith(f":{port:04X}")
            }  # fmt: skip
    except OSError:
        return False
    return bool(inodes & sipp._socket_inodes_of(pid))


def _start_sipp(
    cls: type[_P],
    lab: Lab,
    host: str,
    scenario: str | Path,
    extra: list[str],
    lifetime: float,
    tmp_root: Path,
    trace_messages: bool = False,
    port: int = SIP_PORT,
) -> _P:
    source = sipp.scenario_path(scenario)
    workdir, owns = sipp._new_workdir(tmp_root, f"{host}-{cls.role}-{source.stem}")
    path = Path(shutil.copy(source, workdir / source.name))
    lifetime_s = max(1, math.ceil(lifetime))
    command = [sipp.sipp_binary(), "-sf", path.name]
    command += sipp._common_args(port, lifetime_s, trace_messages, lab.address(host))
    command += extra
    with (workdir / sipp._STDOUT).open("wb") as out, (workdir / sipp._STDERR).open("wb") as err:
        process = lab.popen(host, command, cwd=workdir, stdout=out, stderr=err)
    deadline = time.monotonic() + 15.0
    while not _udp_bound_in(process.pid, port):
        if process.poll() is not None and cls.role == "uas":
            raise sipp.SippError(f"SIPp {source.name} in {host} exited {process.returncode}: "
                                 f"{sipp._read(workdir / sipp._STDERR)[-500:]}")  # fmt: skip
        if process.poll() is not None or time.monotonic() > deadline:
            if cls.role == "uac":
                break
            process.kill()
            process.wait()
            raise sipp.SippError(f"SIPp {source.name} did not bind in {host}")
        time.sleep(0.01)
    return cls(path, port, workdir, owns, process, time.monotonic() + lifetime_s + 3.0)


def lab_uas(
    lab: Lab, host: str, tmp_root: Path, scenario: str | Path = "uas_answer",
    lifetime: float = 120.0, extra: Sequence[str] = (),
) -> sipp.Uas:  # fmt: skip
    """A carrier on ``host``:5060."""
    return _start_sipp(sipp.Uas, lab, host, scenario, list(extra), lifetime, tmp_root)


def lab_uac(
    lab: Lab,
    host: str,
    target: tuple[str, int],
    tmp_root: Path,
    *,
    scenario: str | Path = "uac_call",
    calls: int = 1,
    rate: float = 10,
    limit: int | None = None,
    pause_ms: int = 0,
    timeout: float = 30.0,
    service: str = "callee",
    port: int = SIP_PORT,
    extra: Sequence[str] = (),
) -> sipp.Uac:
    """A caller on ``host``:``port`` toward ``target``; ``uac.wait()`` reads its results."""
    args = ["-m", str(calls), "-r", f"{rate:g}", "-l", str(limit if limit is not None else calls)]
    args += ["-d", str(pause_ms), "-s", service, *extra, f"{target[0]}:{target[1]}"]
    return _start_sipp(sipp.Uac, lab, host, scenario, args, timeout, tmp_root, port=port)


def lab_sim_carrier(lab: Lab, host: str, workdir: Path) -> subprocess.Popen[bytes]:
    """trunkguard's own carrier simulator on ``host``:5060, answering every call at once.

    Unlike SIPp's UAS, which answers each request of a call to the address its INVITE came
    from, it answers a request where that request came from (RFC 3581's rport, as the
    router's Via asks): a BYE relayed by the new active after a takeover gets its 200 back
    there, not at the dead node.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"sim-{host}.log"
    with log.open("wb") as out:
        proc = lab.popen(
            host,
            [sys.executable, "-m", "trunkguard", "sim-carrier", "--name", host,
             "--listen", f"{lab.address(host)}:{SIP_PORT}", "--ring-ms", "0"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if not wait_for(lambda: b"listening on" in log.read_bytes() or proc.poll() is not None, 30):
        raise LabError(f"sim-carrier in {host} did not start: {log.read_text()[-500:]}")
    if proc.poll() is not None:
        raise LabError(f"sim-carrier in {host} exited: {log.read_text()[-500:]}")
    return proc


# ---------------------------------------------------------------------------- routers


def enter_namespace(lab: Lab, host: str) -> Callable[[], None]:
    """A preexec_fn that moves the child into ``host``'s network namespace before exec."""
    path = str(NETNS_DIR / lab.ns(host))

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
            os._exit(121)
        os.close(fd)

    return enter


ADMIN_PORT = 8080
ADMIN_TOKEN = "halab-admin-token-0123456789abcdef"


def lab_router(
    lab: Lab,
    host: str,
    workdir: Path,
    *,
    carriers: Sequence[str] = ("c1",),
    listen: str = SERVICE_ADDRESS,
    extra: dict[str, object] | None = None,
) -> RouterProcess:
    """``trunkguard run`` in ``host``'s namespace (not started), listening on
    ``listen``:5060, with the admin API on 127.0.0.1:8080 of that host and the given
    carriers at their hosts' port 5060."""
    config: dict[str, object] = {
        "listen": f"udp:{listen}:{SIP_PORT}",
        "allow": ["10.77.0.0/24"],
        "carriers": [
            {"name": c, "uri": f"sip:{lab.address(c)}:{SIP_PORT}"} for c in carriers
        ],
        "admin": {"listen": f"127.0.0.1:{ADMIN_PORT}", "token": ADMIN_TOKEN},
    }
    config.update(extra or {})
    return RouterProcess(workdir, [], extra=config, preexec_fn=enter_namespace(lab, host))


def admin_get(lab: Lab, host: str, path: str, timeout: float = 5.0) -> Any:
    """GET ``path`` from the admin API of the router on ``host`` (JSON)."""

    def fetch() -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{ADMIN_PORT}{path}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=timeout) as response:
            return json.loads(response.read())

    return lab.call_in(host, fetch, timeout=timeout + 5)


def admin_post(
    lab: Lab, host: str, path: str, body: dict[str, object], timeout: float = 5.0
) -> Any:
    def send() -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{ADMIN_PORT}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    return lab.call_in(host, send, timeout=timeout + 5)


def wait_for(predicate: Callable[[], T], timeout: float, every: float = 0.02) -> T | None:
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` s pass
    (None). Errors a peer on its way up or down raises count as 'not yet'."""
    end = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError, LabError):
            value = predicate()
            if value:
                return value
        if time.monotonic() >= end:
            return None
        time.sleep(every)
