"""The edge against a scanner: SIPVicious learns nothing from the router.

Debian's sipvicious, run as someone hunting for a PBX to abuse would: ``svmap`` finds SIP
devices and reads their Server or User-Agent, ``svwar`` tells an extension that exists
from one that does not by a difference in the answers (it first asks for a random name of
its own, the control), ``svcrack`` guesses a password from the digest challenges. Each
runs as a process on loopback, in a session of its own, bounded in time and killed with
its process group if it overruns.

Debian's 0.3.3 honours ``-b`` (the source address) in svmap only: svwar and svcrack always
bind every address and reach the router from 127.0.0.1. So the runs from outside ``allow``
go to a router whose ``allow`` leaves 127.0.0.1 out, and svmap also runs from 127.0.0.2
against a router that allows 127.0.0.1 only. Each test ends with a check that the router
still answers and routes, so that "the scanner got nothing" cannot come from a router that
was not listening.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from kamailio import send_options
from router import RouterProcess
from sipp import die_with_parent, free_udp_port, free_udp_ports, run_uac, start_uas

import trunkguard

pytestmark = pytest.mark.e2e

NO_PROBES: dict[str, object] = {"probe": {"enabled": False}}
#: Longest a scanner may run; svcrack waits 10 s for an answer that does not come.
SCAN_TIMEOUT = 25.0
EXTENSIONS = [str(n) for n in range(100, 131)] + ["1000", "2000", "admin", "test", "operator"]
PASSWORDS = ["100", "1234", "password", "secret", "admin", "trunkguard"]


def scanner_binary(tool: str) -> str:
    # Debian installs svmap, svwar, svcrack; pip's sipvicious names them sipvicious_svmap...
    path = shutil.which(tool) or shutil.which(f"sipvicious_{tool}")
    if path is None:
        raise RuntimeError(f"{tool} is not installed (Debian package sipvicious: make sipvicious)")
    return path


class Scan:
    """One scanner process: its output and exit code once it is done."""

    def __init__(self, tool: str, args: Sequence[str]) -> None:
        self.command = [scanner_binary(tool), *args]
        self.name = f"{tool} {' '.join(args)}"
        self.output = ""
        self._proc = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group, killed as one
            preexec_fn=die_with_parent,
        )

    def wait(self, deadline: float) -> str:
        try:
            self.output, _ = self._proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name}: not done within {SCAN_TIMEOUT} s") from None
        return self.output

    def kill(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.communicate()

    def rows(self) -> list[list[str]]:
        """The scanner's result table, header left out: one row per thing it found."""
        lines = [line for line in self.output.splitlines() if line.startswith("|")]
        return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]

    def describe(self) -> str:
        return f"{self.name}:\n{self.output}"


@contextmanager
def scans(*specs: tuple[str, Sequence[str]]) -> Iterator[list[Scan]]:
    """Start every scanner at once (they are slow to give up, not busy); wait for them all."""
    started: list[Scan] = []
    try:
        for tool, args in specs:
            started.append(Scan(tool, args))
        deadline = time.monotonic() + SCAN_TIMEOUT
        for scan in started:
            scan.wait(deadline)
        yield started
    finally:
        for scan in started:
            scan.kill()  # a no-op for the finished ones


def svwar(method: str, router: RouterProcess, wordlist: Path) -> tuple[str, list[str]]:
    port = str(free_udp_port())
    args = ["-P", port, "-m", method, "-d", str(wordlist)]
    return ("svwar", [*args, "-p", str(router.port), "127.0.0.1"])


def svcrack(method: str, router: RouterProcess, wordlist: Path) -> tuple[str, list[str]]:
    port = str(free_udp_port())
    args = ["-P", port, "-m", method, "-u", "100", "-d", str(wordlist)]
    return ("svcrack", [*args, "-p", str(router.port), "127.0.0.1"])


def svmap(source: str, router: RouterProcess) -> tuple[str, list[str]]:
    port = str(free_udp_port(source))
    return ("svmap", ["-b", source, "-P", port, "-p", str(router.port), "127.0.0.1"])


def options(router: RouterProcess, source: str, timeout: float = 1.0) -> bytes | None:
    """A plain OPTIONS from ``source`` to the router: its answer, or None after ``timeout``."""
    answer = send_options(router.address, timeout, from_user="qualify", source=source)
    return None if answer is None else answer.encode()


def header_names(response: bytes) -> set[str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode()
    return {line.split(":", 1)[0].strip().lower() for line in head.splitlines()[1:]}


def found_nothing(scan: Scan) -> bool:
    return scan.rows() == [] and "found nothing" in scan.output


def write_lists(tmp_path: Path) -> tuple[Path, Path]:
    extensions = tmp_path / "extensions.txt"
    extensions.write_text("\n".join(EXTENSIONS) + "\n")
    passwords = tmp_path / "passwords.txt"
    passwords.write_text("\n".join(PASSWORDS) + "\n")
    return extensions, passwords


def test_scanners_from_outside_allow_get_no_answer(tmp_path: Path) -> None:
    started = time.monotonic()
    extensions, passwords = write_lists(tmp_path)
    (carrier_port,) = free_udp_ports(1)
    with (
        start_uas("uas_answer", port=carrier_port, tmp_root=tmp_path) as carrier,
        RouterProcess(
            tmp_path / "router",
            [("carrier", carrier_port)],
            # svwar and svcrack send from 127.0.0.1 whatever -b says: the dialer is .2.
            extra={"allow": ["127.0.0.2/32"], **NO_PROBES},
        ) as router,
    ):
        specs = [
            svmap("127.0.0.1", router),
            *(svwar(m, router, extensions) for m in ("REGISTER", "OPTIONS", "INVITE")),
            *(svcrack(m, router, passwords) for m in ("REGISTER", "INVITE")),
        ]
        with scans(*specs) as done:
            for scan in done:
                assert found_nothing(scan), scan.describe()
        # svwar and svcrack gave up when their first request went unanswered.
        for scan in done[1:4]:
            assert "socket error: timed out" in scan.output, scan.describe()
        for scan in done[4:]:
            assert "no server response" in scan.output, scan.describe()
        assert carrier.short_messages() == [], carrier.describe()
        # Control: the router is there, and answers its allowed source.
        answer = options(router, "127.0.0.2")
        assert answer is not None and answer.startswith(b"SIP/2.0 200 "), answer
        counters = router.stop()
    # Each scanner's one request, and only those, was dropped as from a stranger.
    assert counters.get("forbidden_source") == len(specs), counters
    assert counters.get("messages_in") == len(specs) + 1, counters
    assert counters.get("options_answered") == 1, counters
    assert not [k for k in counters if k.startswith(("rejected_", "calls", "dialog_"))], counters
    print(
        f"outside allow: svmap, svwar (REGISTER, OPTIONS, INVITE), svcrack (REGISTER, "
        f"INVITE) found nothing, forbidden_source {counters['forbidden_source']}, "
        f"carrier got nothing ({time.monotonic() - started:.1f}s)"
    )


def test_scanners_from_an_allowed_source_learn_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    extensions, passwords = write_lists(tmp_path)
    (carrier_port,) = free_udp_ports(1)
    with (
        start_uas("uas_answer", port=carrier_port, tmp_root=tmp_path) as carrier,
        RouterProcess(
            tmp_path / "router",
            [("carrier", carrier_port)],
            extra={"allow": ["127.0.0.1/32"], **NO_PROBES},
        ) as router,
    ):
        # The router's own answer to an OPTIONS names nothing: no Server, no User-Agent.
        answer = options(router, "127.0.0.1")
        assert answer is not None and answer.startswith(b"SIP/2.0 200 "), answer
        assert not header_names(answer) & {"server", "user-agent"}, answer
        assert b"trunkguard" not in answer.lower(), answer
        assert options(router, "127.0.0.2") is None
        specs = [
            svmap("127.0.0.2", router),
            svmap("127.0.0.1", router),
            *(svwar(m, router, extensions) for m in ("REGISTER", "OPTIONS", "INVITE")),
            svcrack("REGISTER", router, passwords),
        ]
        with scans(*specs) as done:
            outside, inside, register, options_scan, invite, crack = done
        # From 127.0.0.2, svmap finds no device at all.
        assert found_nothing(outside), outside.describe()
        # From 127.0.0.1 it finds one, and can say nothing of what it is.
        assert inside.rows() == [[f"127.0.0.1:{router.port}", "unknown"]], inside.describe()
        assert "trunkguard" not in inside.output.lower(), inside.describe()
        assert trunkguard.__version__ not in inside.output, inside.describe()
        # No extension stands out: the router is no registrar, REGISTER gets 405 for any
        # name and OPTIONS 200 for any name.
        assert found_nothing(register), register.describe()
        assert "method not allowed" in register.output, register.describe()
        assert found_nothing(options_scan), options_scan.describe()
        # An INVITE from an allowed source is a call: the router routes every name alike
        # and the carrier answers each. svwar then sends a BYE with two From tags, which
        # is no dialog of ours (481), and files every name under that 481 ("weird") -
        # its own random control name too. It cannot tell one name from another.
        verdicts = {name: verdict for name, verdict in invite.rows()}
        if verdicts:
            controls = set(verdicts) - set(EXTENSIONS)
            assert set(verdicts) >= set(EXTENSIONS) and len(controls) == 1, invite.describe()
            assert set(verdicts.values()) == {verdicts[controls.pop()]}, invite.describe()
        else:
            assert found_nothing(invite), invite.describe()
        # svcrack gets no challenge to work on.
        assert found_nothing(crack), crack.describe()
        assert "password for" not in crack.output, crack.describe()

        # After the scans the router still answers, and still routes a call.
        answer = options(router, "127.0.0.1")
        assert answer is not None and answer.startswith(b"SIP/2.0 200 "), answer
        call = run_uac("uac_call", router.address, timeout=6, tmp_root=tmp_path)
        assert call.ok and call.successful == 1, call.describe()
        assert carrier.wait_received("BYE", 1, timeout=3), carrier.describe()
        invites = carrier.received("INVITE")
        counters = router.stop()
    # Only svmap's OPTIONS and ours came from 127.0.0.2; both were dropped.
    assert counters.get("forbidden_source") == 2, counters
    assert counters.get("options_answered", 0) >= 3 + len(EXTENSIONS), counters
    assert counters.get("rejected_405", 0) >= 2, counters
    assert [k for k in counters if k.startswith("rejected_")] == ["rejected_405"], counters
    # svwar's calls (its control name and each of ours) and the SIPp call, each routed to
    # the carrier and answered.
    calls = 1 + len(EXTENSIONS) + 1
    assert invites == calls, counters
    assert counters.get("calls") == counters.get("calls_answered") == calls, counters
    assert counters.get("invites_to:carrier") == calls, counters
    print(
        f"allowed source: svmap saw 127.0.0.1:{router.port} as 'unknown' (none from .2), "
        f"svwar REGISTER/OPTIONS found nothing, INVITE placed {calls - 1} "
        f"calls and filed every name alike ({set(verdicts.values()) or 'none'}), svcrack "
        f"found nothing, a call went through after ({time.monotonic() - started:.1f}s)"
    )
