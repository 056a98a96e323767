"""The carrier simulator against SIPp as the caller, on loopback, every run bounded in time.

The simulator runs in this process on an asyncio loop of its own thread (as the
lab runs it); the tests talk to it through that loop. The command is run as a
subprocess once, the way a user runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sipp import (
    HOST,
    Address,
    ShortMessage,
    UacResult,
    count_requests,
    count_responses,
    read_messages,
    run_uac,
    udp_port_bound,
)

from trunkguard.lab._carrier import Mode, SimCarrier, main, serve_control

pytestmark = pytest.mark.e2e

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running on a thread of its own, and ways to call into it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        async def call() -> T:
            return fn(*args)

        return self.run(call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Sim:
    """A started SimCarrier, driven from the test's thread."""

    def __init__(self, lt: LoopThread, name: str, mode: Mode) -> None:
        self.lt = lt
        self.carrier = SimCarrier(name, HOST, 0, mode)
        lt.run(self.carrier.start())

    @property
    def address(self) -> Address:
        return (HOST, self.carrier.port)

    def set_mode(self, mode: Mode) -> None:
        self.lt.call(self.carrier.set_mode, mode)

    def counters(self) -> dict[str, Any]:
        return self.lt.call(self.carrier.counters)


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture
def sim(lt: LoopThread) -> Iterator[Sim]:
    carrier = Sim(lt, "a", Mode("healthy"))
    yield carrier
    lt.run(carrier.carrier.stop())


def options(call_id: str, port: int, address: Address) -> bytes:
    return (
        f"OPTIONS sip:{address[0]}:{address[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:keepalive@{HOST}:{port}>;tag=ka{call_id[:8]}\r\n"
        f"To: <sip:{address[0]}:{address[1]}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 7 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def send_options(address: Address, timeout: float = 2.0) -> str | None:
    """A keepalive from a plain socket: the response text, or None if none came."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(timeout)
        sock.sendto(options(call_id, sock.getsockname()[1], address), address)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
    text = data.decode()
    assert f"Call-ID: {call_id}" in text
    return text


def first_response_delays(messages: list[ShortMessage]) -> list[float]:
    """Per call: from the INVITE sent to the first response received for it."""
    sent: dict[str, float] = {}
    delays: dict[str, float] = {}
    for m in messages:
        if m.direction == "S" and m.method == "INVITE":
            sent.setdefault(m.call_id, m.time)
        elif m.direction == "R" and m.cseq_method == "INVITE" and m.call_id in sent:
            delays.setdefault(m.call_id, m.time - sent[m.call_id])
    return list(delays.values())


def sent_lines(result: UacResult, method: str) -> int:
    """Every copy of ``method`` SIPp sent, retransmissions included."""
    return sum(1 for m in result.messages if m.direction == "S" and m.method == method)


# -- healthy ---------------------------------------------------------------------------------
def test_healthy_completes_calls_and_the_counters_match_what_sipp_sent(
    sim: Sim, tmp_path: Path
) -> None:
    result = run_uac(
        "uac_call",
        sim.address,
        calls=5,
        rate=20,
        pause_ms=50,
        timeout=10,
        trace_messages=True,
        tmp_root=tmp_path,
    )
    assert result.ok, result.describe()
    assert (result.successful, result.final_codes) == (5, [200] * 5)
    c = sim.counters()
    for method in ("INVITE", "ACK", "BYE"):
        assert c["received"][method] == count_requests(result.messages, method, "S"), method
        copies = c["received"][method] + c["retransmissions"].get(method, 0)
        assert copies == sent_lines(result, method), method
    assert c["invites"] == 5
    for status in (100, 180):
        assert c["answered"][str(status)] == count_responses(result.messages, status, "R")
    answered_200 = count_responses(result.messages, 200, "R") + count_responses(
        result.messages, 200, "R", "BYE"
    )
    assert c["answered"]["200"] == answered_200 == 10
    assert c["open_calls"] == 0
    received = [m for m in read_messages(result.workdir / "messages.log") if m.direction == "R"]
    assert len(received) >= 20
    assert {m.header("X-Sim-Carrier") for m in received} == {"a"}
    ok = next(
        m
        for m in received
        if m.first_line.startswith("SIP/2.0 200") and "INVITE" in (m.header("CSeq") or "")
    )
    assert ok.header("Content-Type") == "application/sdp"


def test_a_cancelled_call_gets_487(sim: Sim) -> None:
    sim.set_mode(Mode("healthy", ring_ms=3000))
    result = run_uac("uac_cancel", sim.address, calls=2, pause_ms=200, timeout=10)
    assert result.ok, result.describe()
    assert result.final_codes == [487, 487]
    c = sim.counters()
    assert c["received"]["CANCEL"] == 2
    assert c["answered"]["487"] == 2
    assert "200" in c["answered"] and c["answered"]["200"] == 2  # the CANCELs, no INVITE


# -- reject, options-only --------------------------------------------------------------------
@pytest.mark.parametrize(("code", "retry_after"), [(486, None), (503, 20)])
def test_reject_gives_the_caller_the_code(
    sim: Sim, tmp_path: Path, code: int, retry_after: int | None
) -> None:
    sim.set_mode(Mode("reject", code=code, retry_after=retry_after))
    result = run_uac(
        "uac_final", sim.address, calls=3, timeout=10, trace_messages=True, tmp_root=tmp_path
    )
    assert result.ok, result.describe()
    assert result.final_codes == [code] * 3
    finals = [
        m
        for m in read_messages(result.workdir / "messages.log")
        if m.direction == "R" and m.first_line.startswith(f"SIP/2.0 {code}")
    ]
    assert finals
    assert {m.header("Retry-After") for m in finals} == {
        None if retry_after is None else str(retry_after)
    }
    c = sim.counters()
    assert c["answered"] == {"100": 3, str(code): 3}
    assert c["received"] == {"ACK": 3, "INVITE": 3}


def test_options_only_answers_keepalives_and_rejects_invites(sim: Sim) -> None:
    sim.set_mode(Mode("options-only"))
    answer = send_options(sim.address)
    assert answer is not None and answer.startswith("SIP/2.0 200 OK")
    assert "X-Sim-Carrier: a" in answer
    result = run_uac("uac_final", sim.address, calls=2, timeout=10)
    assert result.ok, result.describe()
    assert result.final_codes == [503, 503]
    assert sim.counters()["answered"] == {"200": 1, "503": 2}


# -- silent modes --------------------------------------------------------------------------
def test_blackhole_answers_nothing(sim: Sim) -> None:
    sim.set_mode(Mode("blackhole"))
    started = time.monotonic()
    result = run_uac("uac_call", sim.address, calls=1, timeout=2)
    assert time.monotonic() - started < 8
    assert not result.ok
    assert (result.successful, result.final_codes) == (0, [])
    assert send_options(sim.address, timeout=0.5) is None
    c = sim.counters()
    assert c["received"] == {"INVITE": 1, "OPTIONS": 1}
    assert c["retransmissions"]["INVITE"] >= 1  # SIPp resends the INVITE every 500 ms
    assert c["answered"] == {}
    assert c["swallowed"] == 2 + c["retransmissions"]["INVITE"]


def test_killed_closes_the_port_and_leaving_it_reopens_the_same_port(sim: Sim) -> None:
    port = sim.carrier.port
    sim.set_mode(Mode("killed"))
    assert not udp_port_bound(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.connect(sim.address)
        sock.send(options(uuid.uuid4().hex, sock.getsockname()[1], sim.address))
        with pytest.raises(ConnectionRefusedError):
            sock.recv(65535)  # the kernel's ICMP port unreachable
    assert sim.counters()["listening"] is False
    sim.set_mode(Mode("healthy"))
    assert sim.carrier.port == port and udp_port_bound(port)
    answer = send_options(sim.address)
    assert answer is not None and answer.startswith("SIP/2.0 200")
    result = run_uac("uac_call", sim.address, calls=1, timeout=5)
    assert result.ok, result.describe()


def test_flap_alternates_answering_and_silence(sim: Sim) -> None:
    sim.set_mode(Mode("flap", period_s=1.0))
    started = time.monotonic()

    def probe(at: float) -> bool:
        time.sleep(max(0.0, started + at - time.monotonic()))
        return send_options(sim.address, timeout=0.3) is not None

    assert [probe(0.2), probe(1.3), probe(2.3), probe(3.3)] == [True, False, True, False]


# -- slow -------------------------------------------------------------------------------------
def test_slow_adds_the_delay(sim: Sim) -> None:
    baseline = run_uac("uac_call", sim.address, calls=2, rate=10, timeout=5)
    assert baseline.ok, baseline.describe()
    assert max(first_response_delays(baseline.messages)) < 0.2
    sim.set_mode(Mode("slow", delay_ms=700))
    result = run_uac("uac_call", sim.address, calls=2, rate=10, timeout=10)
    assert result.ok, result.describe()
    delays = first_response_delays(result.messages)
    assert len(delays) == 2
    # SIPp's clock steps by a few ms; the loop is free, so the delay is the delay.
    assert all(0.69 <= d < 1.2 for d in delays), delays
    c = sim.counters()
    assert c["received"]["INVITE"] == 4
    assert c["retransmissions"]["INVITE"] >= 2  # resent at 500 ms, absorbed
    assert c["answered"]["100"] == 4


# -- the control interface -----------------------------------------------------------------
def http(method: str, url: str, body: object | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    if isinstance(body, str):
        data = body.encode()
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_mode_change_over_http_takes_effect(lt: LoopThread, sim: Sim) -> None:
    other = Sim(lt, "b", Mode("healthy"))
    runner = lt.run(serve_control({"a": sim.carrier, "b": other.carrier}, HOST, 0))
    try:
        base = f"http://{HOST}:{runner.addresses[0][1]}/carriers"
        status, body = http("PUT", f"{base}/a/mode", {"name": "reject", "code": 503})
        assert (status, body["mode"], body["mode_detail"]) == (200, "reject", "reject 503")
        result = run_uac("uac_final", sim.address, calls=2, timeout=10)
        assert result.final_codes == [503, 503], result.describe()

        status, everything = http("GET", base)
        assert status == 200 and set(everything) == {"a", "b"}
        assert everything["a"]["answered"]["503"] == 2
        assert everything["b"]["mode"] == "healthy"
        status, one = http("GET", f"{base}/a")
        assert (status, one["invites"]) == (200, 2)

        assert http("GET", f"{base}/zz")[0] == 404
        status, err = http("PUT", f"{base}/a/mode", "{not json")
        assert status == 400 and "not JSON" in err["error"]
        status, err = http("PUT", f"{base}/a/mode", {"name": "reject", "code": 200})
        assert (status, err["error"]) == (400, "code must be from 300 to 699, not 200")
        status, err = http("PUT", f"{base}/a/mode", {"name": "sleepy"})
        assert status == 400 and "unknown mode 'sleepy'" in err["error"]
        assert sim.counters()["mode"] == "reject"  # a refused change changes nothing

        port = sim.carrier.port
        assert http("PUT", f"{base}/a/mode", {"name": "killed"})[0] == 200
        assert not udp_port_bound(port)
        status, body = http("PUT", f"{base}/a/mode", {"name": "healthy", "ring_ms": 100})
        assert (status, body["listening"], sim.carrier.port) == (200, True, port)
        result = run_uac("uac_call", sim.address, calls=1, timeout=5)
        assert result.ok, result.describe()
    finally:
        lt.run(runner.cleanup())
        lt.run(other.carrier.stop())


def test_control_listens_on_loopback_only(lt: LoopThread) -> None:
    with pytest.raises(ValueError, match="loopback"):
        lt.run(serve_control({}, "0.0.0.0", 0))


# -- the command -------------------------------------------------------------------------------
_MAIN = "import sys; from trunkguard.lab._carrier import main; sys.exit(main(sys.argv[1:]))"


def _read_line(proc: subprocess.Popen[str], contains: str, deadline: float) -> str:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if contains in line:
            return line.strip()
    raise AssertionError(f"no line with {contains!r} (rc {proc.poll()})")


def test_the_command_runs_changes_mode_and_stops_on_sigterm() -> None:
    args = [
        "--name",
        "b",
        "--listen",
        f"{HOST}:0",
        "--mode",
        "reject",
        "--code",
        "486",
        "--control",
        f"{HOST}:0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 15
        listen = _read_line(proc, "listening on udp", deadline)
        port = int(listen.rsplit(":", 1)[1])
        control = _read_line(proc, "control on http://", deadline).split("control on ")[1]
        assert _read_line(proc, "mode", deadline).endswith("sim-carrier b: mode reject 486")
        result = run_uac("uac_final", (HOST, port), calls=1, timeout=5)
        assert result.final_codes == [486], result.describe()
        status, _ = http("PUT", f"{control}/b/mode", {"name": "slow", "delay_ms": 100})
        assert status == 200
        assert _read_line(proc, "mode", deadline).endswith("sim-carrier b: mode slow 100 ms")
        proc.send_signal(signal.SIGTERM)
        stopped = _read_line(proc, "stopped; counters", deadline)
        counters = json.loads(stopped.split("counters ", 1)[1])
        assert counters["answered"] == {"100": 1, "486": 1}
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()


def test_the_command_reports_a_port_in_use_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        assert main(["--name", "a", "--listen", f"{HOST}:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on udp {HOST}:{port}: Address already in use" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "sleepy"], "invalid choice: 'sleepy'"),
        (["--mode", "reject", "--code", "200"], "code must be from 300 to 699, not 200"),
        (["--listen", "127.0.0.1"], "expected HOST:PORT"),
        (["--control", "10.1.2.3:8071"], "only a loopback address"),
        (["--name", "a b"], "carrier name 'a b'"),
    ],
)
def test_the_command_refuses_bad_arguments_clearly(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--listen", f"{HOST}:0", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
