"""The router under test as a real process: ``trunkguard run`` on 127.0.0.1, port 0.

It binds a free port itself and reports it through ``--ready-file`` (or, with
``port=``, the port it is given: a restarted router takes its predecessor's); on stop
(SIGTERM) it writes its counters next to that file, so tests can check what
the router saw and that nothing was left open.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml
from sipp import die_with_parent

READY_TIMEOUT = 15.0


def _carrier(name: str, port: int, transport: str = "udp") -> dict[str, str]:
    suffix = ";transport=tcp" if transport == "tcp" else ""
    return {"name": name, "uri": f"sip:127.0.0.1:{port}{suffix}"}


class RouterProcess:
    def __init__(
        self,
        workdir: Path,
        carriers: list[tuple[str, int]] | list[tuple[str, int, str]],
        *,
        failover: dict[str, object] | None = None,
        extra: dict[str, object] | None = None,
        transport: str = "udp",
        port: int = 0,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        config: dict[str, object] = {
            "listen": f"{transport}:127.0.0.1:{port}",
            "allow": ["127.0.0.0/8"],
            "carriers": [_carrier(*c) for c in carriers],
        }
        # Each router keeps its own event log, so no state leaks from one test to the next.
        config["store"] = {"path": str(workdir / "events.db")}
        if failover:
            config["failover"] = failover
        if extra:
            config.update(extra)
        self.config_path = workdir / "router.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.ready_file = workdir / "ready.json"
        self.log_path = workdir / "router.log"
        self.port = 0
        #: Every listener as (transport, host, port), in config order, once started.
        self.bound: list[tuple[str, str, int]] = []
        self.counters: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._env = env or {}  # added to the router's environment
        self._preexec = preexec_fn  # run in the child before die_with_parent

    def start(self) -> Self:
        self.ready_file.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trunkguard",
                "run",
                "-c",
                str(self.config_path),
                "--ready-file",
                str(self.ready_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self._env},
            # Like the SIPp peers: a router never outlives a test run that was killed.
            preexec_fn=self._child_setup,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready_file.exists():
            if self._proc.poll() is not None:
                raise RuntimeError(f"router exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"router not ready in {READY_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.02)
        time.sleep(0.02)  # the file is written in one call; give it a moment to be complete
        ready = json.loads(self.ready_file.read_text())
        self.bound = [(str(t), str(h), int(p)) for t, h, p in ready["listen"]]
        self.port = self.bound[0][2]
        return self

    def _child_setup(self) -> None:
        if self._preexec is not None:
            self._preexec()
        die_with_parent()

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self) -> dict[str, int]:
        """SIGTERM, wait for a clean exit, return the router's counters."""
        proc = self._proc
        if proc is None:
            return self.counters
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
                raise RuntimeError(f"router did not stop on SIGTERM:\n{self.log()}") from None
        self._proc = None
        counters_file = Path(str(self.ready_file) + ".counters")
        if counters_file.exists():
            self.counters = json.loads(counters_file.read_text())
        self.returncode = proc.returncode
        return self.counters

    def events(self) -> list[dict[str, object]]:
        """The event log as ``trunkguard events --json`` prints it: state changes and notices,
        oldest first (none before the router made its log)."""
        if not (self.workdir / "events.db").exists():
            return []
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "trunkguard",
                "events",
                "--db",
                str(self.workdir / "events.db"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        out: list[dict[str, object]] = json.loads(done.stdout)
        return out

    def wait_log(self, text: str, timeout: float) -> float | None:
        """Seconds until ``text`` shows in the router's log (polled), or None after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if text in self.log_path.read_text(errors="replace"):
                return time.monotonic() - start
            time.sleep(0.05)
        return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
