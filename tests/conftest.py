"""Suite-wide settings: reproducible Hypothesis runs, and no process outlives the tests.

Hypothesis. CI runs on 2 shared cores, often with other work on them. The ``ci`` profile
(the default; ``HYPOTHESIS_PROFILE=dev`` for random exploration) turns off what only
measures the machine's speed: the per-example deadline and the "input generation is slow"
health check. Every other health check stays on, because those point at a bad strategy.
Runs are derandomized with no example database, so a clone fails or passes the same way
each time and a failure shows its example.

Processes. Every child the tests start (routers, SIPp, Chromium, carrier commands) carries
``TRUNKGUARD_TEST_SESSION`` in its environment, so it can be found even after its parent
died and it was re-parented. After each end-to-end test, and at the end of the session,
/proc is searched for them, and for any descendant of pytest. Whatever is still alive at
the end is killed, and the session fails with the names of the processes and of the tests
they outlived.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

MARKER = "TRUNKGUARD_TEST_SESSION"
# Processes that would also be found by name: the peers and the product.
WATCHED_NAMES = ("sipp", "trunkguard", "kamailio")
# A killed process may take a moment to be reaped by its parent.
GRACE_S = 3.0


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    started: int  # clock ticks after boot
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command[:160]})"


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _proc(pid: int) -> Proc | None:
    try:
        stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
        cmdline = _read(f"/proc/{pid}/cmdline")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    comm_end = stat.rfind(")")
    fields = stat[comm_end + 2 :].split()
    command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    comm = stat[stat.find("(") : comm_end + 1]
    return Proc(pid, int(fields[1]), fields[0], int(fields[19]), command or comm)


def _has_marker(pid: int, token: bytes) -> bool:
    try:
        return token in _read(f"/proc/{pid}/environ").split(b"\0")
    except OSError:
        return False


def _mentions(proc: Proc, places: tuple[str, ...]) -> bool:
    try:
        cwd = os.readlink(f"/proc/{proc.pid}/cwd")
    except OSError:
        cwd = ""
    return any(p in proc.command or f"{cwd}/".startswith(f"{p}/") for p in places)


def session_processes(token: bytes, places: tuple[str, ...]) -> list[Proc]:
    """Live processes this session started: pytest's descendants, any process carrying the
    session's marker, and SIPp/trunkguard/Kamailio processes run in this checkout or this
    session's temporary directories since pytest started (other sessions on the machine
    have their own; a router run by hand in this checkout before the tests is not ours)."""
    me = os.getpid()
    procs = {}
    for entry in os.listdir("/proc"):
        proc = _proc(int(entry)) if entry.isdigit() else None
        if proc is not None:
            procs[proc.pid] = proc
    own = procs.pop(me)
    # Whatever runs pytest (make, timeout, a shell) may name a watched peer in its command
    # line, e.g. tests/e2e/test_kamailio_peer.py: an ancestor is never a leftover.
    ancestors: set[int] = set()
    parent = procs.get(own.ppid)
    while parent is not None and parent.pid not in ancestors:
        ancestors.add(parent.pid)
        parent = procs.get(parent.ppid)
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    descendants: set[int] = set()
    todo = list(children.get(me, []))
    while todo:
        pid = todo.pop()
        if pid not in descendants:
            descendants.add(pid)
            todo += children.get(pid, [])
    found = []
    for proc in procs.values():
        if proc.state == "Z":  # exited; only its parent's wait() is missing
            continue
        if proc.pid in ancestors:
            continue
        named = any(n in proc.command for n in WATCHED_NAMES)
        if (
            proc.pid in descendants
            or _has_marker(proc.pid, token)
            or (named and proc.started >= own.started and _mentions(proc, places))
        ):
            found.append(proc)
    return sorted(found, key=lambda p: p.pid)


def _alive(pid: int) -> bool:
    proc = _proc(pid)
    return proc is not None and proc.state != "Z"


def kill_all(procs: list[Proc]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused SIPp dies too
            os.kill(proc.pid, signal.SIGKILL)
    end = time.monotonic() + GRACE_S
    while any(_alive(p.pid) for p in procs) and time.monotonic() < end:
        time.sleep(0.05)
    # Reap our own children, so no zombie is left either.
    for proc in procs:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)


class ProcessWatch:
    def __init__(self, places: tuple[str, ...]) -> None:
        self.token_value = uuid.uuid4().hex
        self.token = f"{MARKER}={self.token_value}".encode()
        self.places = places
        self.first_seen: dict[tuple[int, str], str] = {}  # (pid, command) -> first test outlived

    def alive(self) -> list[Proc]:
        return session_processes(self.token, self.places)

    def settled(self) -> list[Proc]:
        """Processes still alive once those on their way out have had GRACE_S to go."""
        end = time.monotonic() + GRACE_S
        while (left := self.alive()) and time.monotonic() < end:
            time.sleep(0.1)
        return left


_watch: ProcessWatch | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _watch
    root = str(Path(config.rootpath).resolve())
    _watch = ProcessWatch((root,))
    # Set before any test runs, so that every child inherits it.
    os.environ[MARKER] = _watch.token_value


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    assert _watch is not None
    _watch.places = (*_watch.places, str(tmp_path_factory.getbasetemp().resolve()))
    yield
    left = _watch.settled()
    if not left:
        return
    kill_all(left)
    seen = _watch.first_seen
    lines = [f"  {p}, alive after {seen.get((p.pid, p.command), 'the last test')}" for p in left]
    pytest.fail(
        f"{len(left)} process(es) outlived the tests and were killed:\n" + "\n".join(lines),
        pytrace=False,
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield
    # Only end-to-end tests start processes that run on their own; naming the test that
    # left one makes the failure at the end of the session actionable.
    if _watch is not None and item.get_closest_marker("e2e") is not None:
        for proc in _watch.alive():
            _watch.first_seen.setdefault((proc.pid, proc.command), item.nodeid)
