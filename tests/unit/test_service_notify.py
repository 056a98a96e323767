"""sd_notify over a real AF_UNIX datagram socket, and the watchdog timer on a real loop."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trunkguard.service import (
    Heartbeat,
    Notifier,
    message,
    monotonic_usec,
    socket_address,
    watchdog_interval,
)


def _fields(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().splitlines())


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A notify socket in the abstract namespace, as ``@name``."""
    name = f"tg-unit-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    yield sock, "@" + name
    sock.close()


def test_message_is_key_value_lines_and_a_value_stays_on_one_line() -> None:
    assert message(READY=1, STATUS="ok") == b"READY=1\nSTATUS=ok\n"
    assert message(STATUS="two\nlines\r") == b"STATUS=two lines \n"


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract") == b"\0abstract"
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative") is None


@pytest.mark.parametrize(
    ("env", "pid", "expected"),
    [
        ({}, 10, None),
        ({"WATCHDOG_USEC": "20000000"}, 10, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "10"}, 10, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "11"}, 10, None),  # another process's
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "x"}, 10, None),
        ({"WATCHDOG_USEC": "0"}, 10, None),
        ({"WATCHDOG_USEC": "-5"}, 10, None),
        ({"WATCHDOG_USEC": "soon"}, 10, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_the_right_process(
    env: dict[str, str], pid: int, expected: float | None
) -> None:
    assert watchdog_interval(env, pid) == expected


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier(env={"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.interval is None
    assert n.send(READY=1) is False
    n.ready("x")
    n.stopping("x")
    assert n.sent == 0 and n.failed == 0


def test_ready_status_reloading_stopping_reach_the_socket(
    listener: tuple[socket.socket, str],
) -> None:
    sock, addr = listener
    n = Notifier(env={"NOTIFY_SOCKET": addr})
    try:
        n.ready("3 targets UP")
        assert _fields(sock.recv(4096)) == {"READY": "1", "STATUS": "3 targets UP"}
        n.status("busy")
        assert _fields(sock.recv(4096)) == {"STATUS": "busy"}
        before = monotonic_usec()
        n.reloading()
        got = _fields(sock.recv(4096))
        assert got["RELOADING"] == "1"
        assert before <= int(got["MONOTONIC_USEC"]) <= monotonic_usec()
        n.stopping("draining")
        assert _fields(sock.recv(4096)) == {"STOPPING": "1", "STATUS": "draining"}
        n.watchdog()
        assert _fields(sock.recv(4096)) == {"WATCHDOG": "1"}
        assert n.sent == 5 and n.failed == 0
    finally:
        n.close()


def test_a_path_socket_works_too(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    n = Notifier(env={"NOTIFY_SOCKET": str(path)})
    try:
        n.ready("up")
        assert _fields(sock.recv(4096))["READY"] == "1"
    finally:
        n.close()
        sock.close()


def test_a_dead_socket_is_counted_never_raised(tmp_path: Path) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.enabled
    for _ in range(3):
        n.watchdog()
    assert n.failed == 3 and n.sent == 0
    n.close()


def test_a_full_socket_drops_without_blocking(listener: tuple[socket.socket, str]) -> None:
    _, addr = listener
    n = Notifier(env={"NOTIFY_SOCKET": addr})
    try:
        for _ in range(100_000):  # nobody reads: the queue fills, sends fail at once
            n.send(STATUS="x" * 200)
            if n.failed:
                break
        assert n.failed >= 1
    finally:
        n.close()


async def test_heartbeat_pings_at_half_the_watchdog_and_updates_the_status(
    listener: tuple[socket.socket, str],
) -> None:
    sock, addr = listener
    sock.setblocking(False)
    n = Notifier(env={"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "40000"})  # a ping each 20 ms
    calls = []

    def status() -> str:
        calls.append(1)
        return f"status {len(calls)}"

    beat = Heartbeat(n, asyncio.get_running_loop(), status, status_every=0.05)
    beat.start()
    got: list[dict[str, str]] = []
    try:
        for _ in range(500):  # at most 5 s
            await asyncio.sleep(0.01)
            while True:
                try:
                    got.append(_fields(sock.recv(4096)))
                except BlockingIOError:
                    break
            if sum("WATCHDOG" in f for f in got) >= 5 and sum("STATUS" in f for f in got) >= 2:
                break
    finally:
        beat.stop()
        n.close()
    assert sum("WATCHDOG" in f for f in got) >= 5
    assert [f["STATUS"] for f in got if "STATUS" in f][:2] == ["status 1", "status 2"]


async def test_heartbeat_without_a_socket_arms_nothing() -> None:
    beat = Heartbeat(Notifier(env={}), asyncio.get_running_loop(), lambda: "x")
    beat.start()
    assert beat._handle is None
