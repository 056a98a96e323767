"""The installed ``trunkguard`` console script: --version, and sim-carrier with its options."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import trunkguard

TRUNKGUARD = str(Path(sys.executable).with_name("trunkguard"))
SIM_OPTIONS = [
    "--name",
    "--listen",
    "--mode",
    "--code",
    "--retry-after",
    "--ring-ms",
    "--delay-ms",
    "--period",
    "--control",
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRUNKGUARD, *args], capture_output=True, text=True, timeout=30)


def test_version_comes_from_the_package_metadata() -> None:
    done = _run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"trunkguard {version('trunkguard')}"
    assert trunkguard.__version__ == version("trunkguard")


def test_sim_carrier_help_lists_its_options() -> None:
    for flag in ("--help", "-h"):
        done = _run("sim-carrier", flag)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: trunkguard sim-carrier")
        for option in SIM_OPTIONS:
            assert option in done.stdout, option


def test_sim_carrier_refuses_an_unknown_option_without_a_traceback() -> None:
    done = _run("sim-carrier", "--name", "a", "--bogus")
    assert done.returncode == 2
    assert "unrecognized arguments: --bogus" in done.stderr
    assert "Traceback" not in done.stderr


def test_other_commands_still_refuse_unknown_options() -> None:
    done = _run("check", "--bogus")
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr


def _options(port: int) -> bytes:
    return (
        f"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-cli-1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\n"
        "Call-ID: cli-options-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_sim_carrier_answers_options_on_loopback_and_stops_on_sigterm() -> None:
    args = ["sim-carrier", "--name", "a", "--listen", "127.0.0.1:0", "--mode", "healthy"]
    proc = subprocess.Popen(
        [TRUNKGUARD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 15)[0], "sim-carrier printed nothing"
        line = proc.stdout.readline()  # "HH:MM:SS.mmm sim-carrier a: listening on udp HOST:PORT"
        assert "sim-carrier a: listening on udp 127.0.0.1:" in line, (line, proc.poll())
        port = int(line.rsplit(":", 1)[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            sock.sendto(_options(sock.getsockname()[1]), ("127.0.0.1", port))
            answer = sock.recv(65_535).decode()
        assert answer.startswith("SIP/2.0 200 "), answer
        assert "x-sim-carrier: a\r\n" in answer.lower()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        _, err = proc.communicate()
    assert "Traceback" not in err
