"""SIPp peers for the end-to-end tests: carriers (UAS) and callers (UAC) on 127.0.0.1.

Every SIPp runs in the foreground as a child process, in a working directory of its own,
bounded twice: by SIPp itself (``-timeout`` with ``-timeout_error``) and by this module
(a wall-clock deadline, SIGKILL on context exit, and PR_SET_PDEATHSIG so that no SIPp
outlives the test process).

Where the results come from, and why:

* Messages, per process: ``-trace_shortmsg`` (one tab-separated line per message sent or
  received, retransmissions included). SIPp flushes it as it goes, so it can be read while a
  carrier runs, and it survives SIGKILL and SIGSTOP; end-of-run statistics do not.
  Counting requests received by a carrier, or the final code a caller got, uses it.
* Call outcomes, per caller: ``-trace_stat`` (``-fd 1``): the last row's cumulative
  ``SuccessfulCall(C)`` and ``FailedCall(C)``, which SIPp writes once more when it exits.
* Full messages, on request (``trace_messages=True``): ``-trace_msg``, for header checks.

Scenario files live in ``scenarios/``; each one documents its command-line contract.
Working directories are created under ``tmp_root`` (pass pytest's ``tmp_path`` to keep them
for inspection); without it they go to the system temporary directory and are removed when
the process is closed (UAS) or its results are read (UAC).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal, Self, TypeVar

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
HOST = "127.0.0.1"

#: SIPp exit codes (see SIPP-NOTES.md).
EXIT_ALL_OK = 0
EXIT_SOME_FAILED = 1
EXIT_BIND_FAILED = 254
EXIT_FATAL = 255

Address = tuple[str, int]
Direction = Literal["S", "R"]

# Status line of the template in uas_reject.xml (and uas_half.xml) that reject_code replaces.
_REJECT_TEMPLATE = "SIP/2.0 503 Service Unavailable\n"

REASONS: dict[int, str] = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
}

_SHORTMSG = "shortmessages.log"
_MESSAGES = "messages.log"
_STATS = "stats.csv"
_ERRORS = "errors.log"
_STDOUT = "stdout.txt"
_STDERR = "stderr.txt"

# Loaded in the parent: the child between fork and exec should only make the system call.
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child between fork and exec: SIGKILL when the test process dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class SippError(RuntimeError):
    """SIPp could not be started or did not behave as a peer should."""


def sipp_binary() -> str:
    """Path of the ``sipp`` executable; raises SippError when it is not installed."""
    path = shutil.which("sipp")
    if path is None:
        raise SippError("sipp is not installed (Debian package sip-tester)")
    return path


def free_udp_port(host: str = HOST) -> int:
    """A UDP port that was free on ``host`` a moment ago (bind port 0, read it, close).

    Another process may take it before SIPp binds it: the start functions retry on SIPp's
    bind failure (exit 254) with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct UDP ports that were free on ``host`` a moment ago (see free_udp_port)."""
    out: list[int] = []
    while len(out) < n:
        port = free_udp_port(host)
        if port not in out:
            out.append(port)
    return out


def _udp_socket_inodes(port: int, host: str = HOST, table_name: str = "udp") -> set[str]:
    """Inodes of the sockets bound to ``host:port`` or the wildcard (/proc/net/udp or tcp).

    Reading the kernel table does not disturb the socket's owner, unlike a test bind.
    """
    wanted = {
        f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}",
        f"00000000:{port:04X}",
    }
    inodes = set()
    with open(f"/proc/net/{table_name}", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) > 9 and fields[1] in wanted:
                inodes.add(fields[9])
    return inodes


def udp_port_bound(port: int, host: str = HOST) -> bool:
    """Whether some socket is bound to ``host:port`` (or the wildcard address)."""
    return bool(_udp_socket_inodes(port, host))


def _socket_inodes_of(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


# --------------------------------------------------------------------------- traces


@dataclass(frozen=True)
class ShortMessage:
    """One line of SIPp's ``-trace_shortmsg`` log: a message sent (S) or received (R)."""

    time: float
    direction: Direction
    call_id: str
    cseq_number: int
    cseq_method: str
    first_line: str

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str | None:
        """Request method, or None for a response."""
        return self.first_line.split(" ", 1)[0] if self.is_request else None

    @property
    def status(self) -> int | None:
        """Response status code, or None for a request."""
        return None if self.is_request else int(self.first_line.split(" ", 2)[1])


def read_short_messages(path: Path) -> list[ShortMessage]:
    """Parse a ``-trace_shortmsg`` file; a missing file or a partial last line is skipped.

    Line format (SIPp 3.6): ``date<TAB>time<TAB>epoch<TAB>S|R<TAB>Call-ID<TAB>CSeq:N METHOD
    <TAB>first line``.
    """
    return list(iter_short_messages(path))


def iter_short_messages(path: Path) -> Iterator[ShortMessage]:
    """read_short_messages one line at a time: a long run's trace need not fit in memory."""
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 7 or fields[3] not in ("S", "R") or not fields[5].startswith("CSeq:"):
                continue
            number, _, method = fields[5].removeprefix("CSeq:").strip().partition(" ")
            direction: Direction = "S" if fields[3] == "S" else "R"
            try:
                yield ShortMessage(
                    time=float(fields[2]),
                    direction=direction,
                    call_id=fields[4],
                    cseq_number=int(number),
                    cseq_method=method.strip(),
                    first_line=fields[6].strip(),
                )
            except ValueError:
                continue


def count_requests(messages: Sequence[ShortMessage], method: str, direction: Direction) -> int:
    """Distinct requests of ``method`` (by Call-ID and CSeq), so retransmissions count once."""
    return len(
        {
            (m.call_id, m.cseq_number)
            for m in messages
            if m.direction == direction and m.method == method.upper()
        }
    )


def count_responses(
    messages: Sequence[ShortMessage], status: int, direction: Direction, method: str = "INVITE"
) -> int:
    """Distinct responses ``status`` to ``method`` requests (by Call-ID and CSeq)."""
    return len(
        {
            (m.call_id, m.cseq_number)
            for m in messages
            if m.direction == direction and m.status == status and m.cseq_method == method
        }
    )


def final_codes(messages: Sequence[ShortMessage]) -> list[int]:
    """Per call, in the order the calls started: the first final (>= 200) status received
    for its INVITE; a call that got none is left out."""
    order: dict[str, None] = {}
    finals: dict[str, int] = {}
    for m in messages:
        order.setdefault(m.call_id)
        status = m.status
        if (
            m.direction == "R"
            and status is not None
            and status >= 200
            and m.cseq_method == "INVITE"
            and m.call_id not in finals
        ):
            finals[m.call_id] = status
    return [finals[call_id] for call_id in order if call_id in finals]


def setup_times(messages: Sequence[ShortMessage]) -> list[float]:
    """Per call that got one, in the order the calls started: seconds from the caller's
    first INVITE to the first final response for it, by the caller's own trace (the time
    the call took, without SIPp's start and exit)."""
    sent: dict[str, float] = {}
    took: dict[str, float] = {}
    for m in messages:
        status = m.status
        if m.direction == "S" and m.method == "INVITE":
            sent.setdefault(m.call_id, m.time)
        elif (
            m.direction == "R"
            and status is not None
            and status >= 200
            and m.cseq_method == "INVITE"
            and m.call_id in sent
        ):
            took.setdefault(m.call_id, m.time - sent[m.call_id])
    return [took[call_id] for call_id in sent if call_id in took]


@dataclass(frozen=True)
class SipMessage:
    """A full message from SIPp's ``-trace_msg`` log."""

    direction: Direction
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    def headers(self, name: str) -> list[str]:
        """Values of every header ``name`` (case-insensitive, in order; full names only)."""
        head = self.text.split("\n\n", 1)[0]
        values = []
        for line in head.splitlines()[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                values.append(value.strip())
        return values

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None


def read_messages(path: Path) -> list[SipMessage]:
    """Parse a ``-trace_msg`` file (blocks opened by a dashed line and 'UDP message sent'
    or 'UDP message received')."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    except FileNotFoundError:
        return []
    messages = []
    for block in ("\n" + text).split("\n----------------------------------------------- ")[1:]:
        lines = block.split("\n")
        if len(lines) < 3:
            continue
        kind = lines[1]
        if "message sent" in kind:
            direction: Direction = "S"
        elif "message received" in kind:
            direction = "R"
        else:
            continue
        body = "\n".join(lines[2:]).strip("\n")
        if body:
            messages.append(SipMessage(direction=direction, text=body + "\n"))
    return messages


def branch_of(via: str) -> str | None:
    """The ``branch`` parameter of the first value of a Via header."""
    first = via.split(",", 1)[0]
    for param in first.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "branch":
            return value
    return None


def tag_of(name_addr: str) -> str | None:
    """The ``tag`` parameter of a From or To header value."""
    params = name_addr.rsplit(">", 1)[-1]
    for param in params.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "tag":
            return value
    return None


# ------------------------------------------------------------------------ processes


def scenario_path(scenario: str | Path) -> Path:
    """``scenario`` as a file: a bare name such as ``"uas_answer"`` means scenarios/NAME.xml."""
    path = Path(scenario)
    if path.suffix != ".xml" and path.parent == Path("."):
        path = SCENARIOS / f"{scenario}.xml"
    if not path.is_file():
        raise SippError(f"no such scenario: {path}")
    return path


def reject_scenario(template: str | Path, code: int, reason: str | None, directory: Path) -> Path:
    """Copy of ``template`` into ``directory`` whose reject status line uses ``code``.

    SIPp parses a response's status code when it loads the scenario, so ``-key``/``-set``
    cannot supply it; the template's single ``SIP/2.0 503 Service Unavailable`` line is
    replaced instead.
    """
    if not 300 <= code <= 699:
        raise ValueError(f"not a rejection code: {code}")
    source = scenario_path(template)
    text = source.read_text(encoding="iso-8859-1")
    if text.count(_REJECT_TEMPLATE) != 1:
        raise SippError(f"{source.name} has no single '{_REJECT_TEMPLATE.strip()}' line")
    phrase = reason or REASONS.get(code, "Rejected")
    text = text.replace(_REJECT_TEMPLATE, f"SIP/2.0 {code} {phrase}\n")
    target = directory / f"{source.stem}_{code}.xml"
    target.write_text(text, encoding="iso-8859-1")
    return target


class SippProcess:
    """A running SIPp (carrier or caller) and its working directory.

    Use it as a context manager, or call close(): the process is killed and reaped.
    """

    role: ClassVar[Literal["uas", "uac"]]

    def __init__(
        self,
        scenario: Path,
        port: int,
        workdir: Path,
        owns_workdir: bool,
        process: subprocess.Popen[bytes],
        deadline: float,
    ) -> None:
        self.scenario = scenario
        self.port = port
        self.workdir = workdir
        self.process = process
        self.deadline = deadline
        self._owns_workdir = owns_workdir

    # -- identity -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> Address:
        """The local address SIPp listens on (carrier) or sends from (caller)."""
        return (HOST, self.port)

    @property
    def uri(self) -> str:
        """``sip:127.0.0.1:PORT``, as a carrier's ``uri`` in the proxy config."""
        return f"sip:{HOST}:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def running(self) -> bool:
        return self.process.poll() is None

    # -- traces ---------------------------------------------------------------------

    def short_messages(self) -> list[ShortMessage]:
        """Every message sent and received so far (``-trace_shortmsg``)."""
        return read_short_messages(self.workdir / _SHORTMSG)

    def messages(self) -> list[SipMessage]:
        """Full messages so far; only with ``trace_messages=True`` (``-trace_msg``)."""
        return read_messages(self.workdir / _MESSAGES)

    def received(self, method: str) -> int:
        """Distinct ``method`` requests received (retransmissions count once)."""
        return count_requests(self.short_messages(), method, "R")

    def sent(self, method: str) -> int:
        """Distinct ``method`` requests sent (retransmissions count once)."""
        return count_requests(self.short_messages(), method, "S")

    def responses_sent(self, status: int, method: str = "INVITE") -> int:
        """Distinct ``status`` responses sent to ``method`` requests."""
        return count_responses(self.short_messages(), status, "S", method)

    def responses_received(self, status: int, method: str = "INVITE") -> int:
        """Distinct ``status`` responses received for ``method`` requests."""
        return count_responses(self.short_messages(), status, "R", method)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` every 20 ms until it holds (True) or ``timeout`` s pass (False)."""
        end = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)

    def wait_received(self, method: str, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` distinct ``method`` requests have been received."""
        return self.wait_until(lambda: self.received(method) >= count, timeout)

    def errors(self) -> str:
        """SIPp's ``-trace_err`` log (unexpected messages, aborted calls, timeouts)."""
        return _read(self.workdir / _ERRORS)

    def stderr(self) -> str:
        return _read(self.workdir / _STDERR)

    def stdout(self) -> str:
        """SIPp's screen output; it prints the final statistics screen here on exit."""
        return _read(self.workdir / _STDOUT)

    def describe(self) -> str:
        """A few lines for assertion messages: command outcome and the tail of the logs."""
        return (
            f"{self.role} {self.scenario.name} port {self.port} pid {self.pid} "
            f"rc {self.returncode} workdir {self.workdir}\n"
            f"errors: {self.errors()[-1500:]}\nstderr: {self.stderr()[-500:]}"
        )

    # -- signals --------------------------------------------------------------------

    def pause(self) -> None:
        """SIGSTOP: the carrier goes silent; its socket stays open and queues packets."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause(): SIPp then handles what queued up meanwhile."""
        self._signal(signal.SIGCONT)

    def kill(self) -> int:
        """SIGKILL and reap: the carrier dies, its port closes (the kernel then answers
        ICMP port unreachable). Returns the exit status (-9 unless it had exited)."""
        if self.running():
            self.process.kill()
        return self.process.wait()

    def stop(self, grace: float = 2.0) -> int:
        """Clean stop: SIGUSR1 (SIPp exits once its open calls have ended; SIGTERM would
        drop them), SIGKILL after ``grace`` seconds. Returns the exit status."""
        if self.running():
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGUSR1)
            try:
                return self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def close(self) -> None:
        """Kill if still running, then remove the working directory if this module made it."""
        self.kill()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal(self, sig: signal.Signals) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Uas(SippProcess):
    """A carrier: a SIPp UAS scenario listening on ``127.0.0.1:port``."""

    role = "uas"


@dataclass(frozen=True)
class UacResult:
    """Outcome of a caller run, read when SIPp exited (or was killed at its deadline).

    ``successful``/``failed`` are SIPp's cumulative SuccessfulCall(C)/FailedCall(C) from
    the last ``-trace_stat`` row; calls still open when SIPp stopped are in neither.
    ``final_codes`` has, per call in start order, the first final status its INVITE got.
    """

    returncode: int
    killed: bool
    successful: int
    failed: int
    created: int
    final_codes: list[int]
    messages: list[ShortMessage] = field(repr=False)
    stats: dict[str, str] = field(repr=False)
    errors: str = field(repr=False)
    stderr: str = field(repr=False)
    workdir: Path

    @property
    def ok(self) -> bool:
        """SIPp exited 0: every call it made followed the scenario."""
        return self.returncode == EXIT_ALL_OK and not self.killed

    def stat(self, name: str) -> int:
        """An integer column of the last statistics row, e.g. ``FailedTimeoutOnRecv(C)``."""
        return _int_stat(self.stats, name)

    def describe(self) -> str:
        return (
            f"uac rc {self.returncode} killed {self.killed} created {self.created} "
            f"successful {self.successful} failed {self.failed} finals {self.final_codes} "
            f"workdir {self.workdir}\nerrors: {self.errors[-1500:]}\n"
            f"stderr: {self.stderr[-500:]}"
        )


class Uac(SippProcess):
    """A caller: a SIPp UAC scenario running toward a target until its -m calls end.

    ``with start_uac(...) as caller: ...; result = caller.wait()`` kills it if the test
    fails before wait().
    """

    role = "uac"

    def wait(self, read_messages: bool = True) -> UacResult:
        """Wait for SIPp to exit (SIGKILL at the wall-clock deadline) and read the results.

        ``read_messages=False`` leaves ``messages`` and ``final_codes`` empty: a caller of
        a long run reads the trace itself, one line at a time (iter_short_messages), from
        a working directory it owns. Removes the working directory afterwards if this
        module created it.
        """
        killed = False
        try:
            self.process.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed = True
            self.process.kill()
            self.process.wait()
        messages = self.short_messages() if read_messages else []
        stats = _last_stats_row(self.workdir / _STATS)
        result = UacResult(
            returncode=self.process.returncode,
            killed=killed,
            successful=_int_stat(stats, "SuccessfulCall(C)"),
            failed=_int_stat(stats, "FailedCall(C)"),
            created=_int_stat(stats, "TotalCallCreated"),
            final_codes=final_codes(messages),
            messages=messages,
            stats=stats,
            errors=self.errors(),
            stderr=self.stderr(),
            workdir=self.workdir,
        )
        self.close()
        return result


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _int_stat(stats: dict[str, str], name: str) -> int:
    value = stats.get(name, "")
    return int(value) if value.isdigit() else 0


def _last_stats_row(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            rows = [row for row in csv.reader(handle, delimiter=";") if row]
    except FileNotFoundError:
        return {}
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return dict(zip(header, last, strict=False))


def _new_workdir(tmp_root: Path | None, prefix: str) -> tuple[Path, bool]:
    if tmp_root is None:
        return Path(tempfile.mkdtemp(prefix=f"sipp-{prefix}-")), True
    tmp_root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"sipp-{prefix}-", dir=tmp_root)), False


def _common_args(
    port: int, lifetime_s: int, trace_messages: bool, host: str = HOST
) -> list[str]:
    args = ["-i", host, "-bind_local", "-p", str(port), "-nostdin"]
    # -timeout alone does not end a run while calls are open: -timeout_error does.
    args += ["-timeout", f"{lifetime_s}s", "-timeout_error"]
    args += ["-trace_shortmsg", "-shortmessage_file", _SHORTMSG]
    args += ["-trace_err", "-error_file", _ERRORS]
    args += ["-trace_stat", "-stf", _STATS, "-fd", "1"]
    if trace_messages:
        args += ["-trace_msg", "-message_file", _MESSAGES]
    return args


def _spawn(command: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    with (workdir / _STDOUT).open("wb") as out, (workdir / _STDERR).open("wb") as err:
        return subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=die_with_parent,
        )


def _wait_bound_or_exit(
    process: subprocess.Popen[bytes],
    port: int,
    timeout: float,
    table_name: str = "udp",
    host: str = HOST,
) -> int | None:
    """None once SIPp has bound ``port``; its exit status if it exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = process.poll()
        if status is not None:
            return status
        # Bound by this SIPp, not by whoever may have taken the port in the meantime.
        bound = _udp_socket_inodes(port, host, table_name=table_name)
        if bound and bound & _socket_inodes_of(process.pid):
            return None
        time.sleep(0.01)
    process.kill()
    process.wait()
    raise SippError(f"SIPp did not bind {host}:{port} within {timeout} s")


_P = TypeVar("_P", bound=SippProcess)


def _start(
    cls: type[_P],
    scenario: str | Path,
    extra_args: list[str],
    *,
    port: int | None,
    lifetime: float,
    trace_messages: bool,
    reject_code: int | None,
    reject_reason: str | None,
    tmp_root: Path | None,
    attempts: int = 8,
    host: str = HOST,
) -> _P:
    binary = sipp_binary()
    source = scenario_path(scenario)
    lifetime_s = max(1, math.ceil(lifetime))
    last_error = ""
    for attempt in range(attempts):
        workdir, owns = _new_workdir(tmp_root, f"{cls.role}-{source.stem}")
        if reject_code is not None:
            path = reject_scenario(source, reject_code, reject_reason, workdir)
        else:
            path = Path(shutil.copy(source, workdir / source.name))
        chosen = port if port is not None else free_udp_port(host)
        command = [binary, "-sf", path.name]
        command += _common_args(chosen, lifetime_s, trace_messages, host)
        command += extra_args
        process = _spawn(command, workdir)
        # SIPp's own -timeout ends the run; the margin leaves it time to write its files.
        deadline = time.monotonic() + lifetime_s + 3.0
        # "-t t1"/"-t tn": SIPp listens on TCP only.
        table_name = "tcp" if "-t" in extra_args and "u1" not in extra_args else "udp"
        status = _wait_bound_or_exit(process, chosen, 5.0, table_name, host)
        # A caller may be done already; only a carrier has to be up and listening.
        if status is None or (cls.role == "uac" and status != EXIT_BIND_FAILED):
            return cls(path, chosen, workdir, owns, process, deadline)
        last_error = _read(workdir / _STDERR)[-500:]
        if owns:
            shutil.rmtree(workdir, ignore_errors=True)
        if status != EXIT_BIND_FAILED:
            raise SippError(f"SIPp {source.name} exited {status} at start: {last_error}")
        # A given port may still be held by a carrier that is being replaced: wait a little.
        if port is not None:
            time.sleep(0.05 * (attempt + 1))
    raise SippError(f"SIPp {source.name} could not bind a port: {last_error}")


def start_uas(
    scenario: str | Path,
    *,
    port: int | None = None,
    reject_code: int | None = None,
    reject_reason: str | None = None,
    lifetime: float = 60.0,
    trace_messages: bool = False,
    extra_args: Sequence[str] = (),
    tmp_root: Path | None = None,
) -> Uas:
    """Start a carrier and return once it listens on ``127.0.0.1:port``.

    ``scenario``: a name in scenarios/ (``"uas_answer"``, ``"uas_reject"``, ``"uas_ring"``,
    ``"uas_half"``) or a path. ``port``: None picks a free one (a new one if SIPp cannot bind
    it); a given port is retried briefly, then SippError. ``reject_code``/``reject_reason``:
    the status that ``uas_reject``/``uas_half`` reject with instead of 503. ``lifetime``:
    seconds after which SIPp exits by itself (exit 255). ``extra_args`` go to SIPp as is.
    """
    return _start(
        Uas,
        scenario,
        list(extra_args),
        port=port,
        lifetime=lifetime,
        trace_messages=trace_messages,
        reject_code=reject_code,
        reject_reason=reject_reason,
        tmp_root=tmp_root,
    )


def start_uac(
    scenario: str | Path,
    target: Address,
    *,
    calls: int = 1,
    rate: int = 10,
    limit: int | None = None,
    pause_ms: int = 0,
    timeout: float = 10.0,
    recv_timeout_ms: int | None = None,
    service: str = "callee",
    port: int | None = None,
    trace_messages: bool = False,
    extra_args: Sequence[str] = (),
    tmp_root: Path | None = None,
    host: str = HOST,
) -> Uac:
    """Start a caller toward ``target`` (host, port) without waiting for it; see run_uac."""
    if calls < 1 or rate < 1:
        raise ValueError("calls and rate must be positive")

    args = ["-m", str(calls), "-r", str(rate), "-l", str(limit if limit is not None else calls)]
    args += ["-d", str(pause_ms), "-s", service]
    if recv_timeout_ms is not None:
        args += ["-recv_timeout", str(recv_timeout_ms)]
    args += [*extra_args, f"{target[0]}:{target[1]}"]
    return _start(
        Uac,
        scenario,
        args,
        port=port,
        lifetime=timeout,
        trace_messages=trace_messages,
        reject_code=None,
        reject_reason=None,
        tmp_root=tmp_root,
        host=host,
    )


def run_uac(
    scenario: str | Path,
    target: Address,
    *,
    calls: int = 1,
    rate: int = 10,
    limit: int | None = None,
    pause_ms: int = 0,
    timeout: float = 10.0,
    recv_timeout_ms: int | None = None,
    service: str = "callee",
    port: int | None = None,
    trace_messages: bool = False,
    extra_args: Sequence[str] = (),
    tmp_root: Path | None = None,
    host: str = HOST,
) -> UacResult:
    """Run a caller to completion and return its UacResult.

    ``scenario``: ``"uac_call"``, ``"uac_final"``, ``"uac_cancel"`` or a path. ``calls``
    (-m), ``rate`` (-r, calls per second), ``limit`` (-l, simultaneous calls; default
    ``calls``), ``pause_ms`` (-d: uac_call's pause before BYE, uac_cancel's ringing time
    before CANCEL), ``timeout``: whole-run bound in seconds (SIPp's -timeout, rounded up
    to whole seconds, with -timeout_error; SIGKILL 3 s later), ``recv_timeout_ms``
    (-recv_timeout: a call waiting longer for a message fails), ``service``: user part of
    the Request-URI (-s). ``port`` is the caller's local port (None: a free one).
    """
    uac = start_uac(
        scenario,
        target,
        calls=calls,
        rate=rate,
        limit=limit,
        pause_ms=pause_ms,
        timeout=timeout,
        recv_timeout_ms=recv_timeout_ms,
        service=service,
        port=port,
        trace_messages=trace_messages,
        extra_args=extra_args,
        tmp_root=tmp_root,
        host=host,
    )
    return uac.wait()
