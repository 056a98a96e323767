"""The router under test, as its own process (as in production), on loopback port 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import yaml


class LabRouter:
    def __init__(self, workdir: Path, config: dict[str, object]) -> None:
        # Absolute: the router reads relative paths relative to its config file.
        workdir = workdir.resolve()
        self.workdir = workdir
        self.config_path = workdir / "router.yaml"
        self.ready = workdir / "ready.json"
        self.log_path = workdir / "router.log"
        self.events_path = workdir / "events.db"
        # A fresh event log per run: a router restores target states from its log, and a
        # previous run's DOWN must not leak into this one.
        for stale in workdir.glob("events.db*"):
            stale.unlink()
        config = {**config, "store": {"path": str(self.events_path)}}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = 0
        self.counters: dict[str, int] = {}
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 15.0) -> None:
        self.ready.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "trunkguard",
                "run",
                "-c",
                str(self.config_path),
                "--ready-file",
                str(self.ready),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready.exists():
            if self._proc.returncode is not None or loop.time() > deadline:
                await self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the router did not start:\n{tail}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        self.port = int(json.loads(self.ready.read_text())["listen"][0][2])

    async def stop(self) -> dict[str, int]:
        proc = self._proc
        if proc is None:
            return self.counters
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._proc = None
        counters = Path(str(self.ready) + ".counters")
        if counters.exists():
            self.counters = json.loads(counters.read_text())
        return self.counters
