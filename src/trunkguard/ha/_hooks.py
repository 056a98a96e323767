"""The address hooks: put the service address on the interface, take it off.

argv lists, never a shell; ``{address}`` (with its prefix length), ``{ip}``
(without), ``{interface}`` and ``{node}`` are filled in. Each runs with a timeout
(killed past it); a failure is logged and counted, and never stops the node: fencing
does not depend on a hook working (the gate drops every datagram whatever the
interface holds).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import subprocess
from collections import Counter

from ._settings import HaSettings

log = logging.getLogger("trunkguard.ha")


def default_acquire(settings: HaSettings) -> list[list[str]]:
    out = [["ip", "addr", "add", "{address}", "dev", "{interface}"]]
    flavour = _arping_flavour()
    # A gratuitous ARP, sent from the service address: neighbours learn it moved now.
    if flavour == "iputils":
        out.append(["arping", "-U", "-c", "1", "-I", "{interface}", "{ip}"])
    elif flavour == "habets":  # Debian's arping package: -S sets the sender address
        out.append(["arping", "-U", "-S", "{ip}", "-c", "1", "-w", "0.2", "-i", "{interface}",
                    "{ip}"])
    return out


# Exit statuses of each default command that are no failure: Habets' arping exits 1 when
# nobody answers, and nobody answers a gratuitous ARP.
BEST_EFFORT = {"arping": frozenset({0, 1})}


@functools.cache
def _arping_flavour() -> str | None:
    """Which arping is installed: iputils' (-I, sender = target with -U) or Thomas
    Habets' (Debian's ``arping`` package: -i, -S for the sender), or none."""
    path = shutil.which("arping")
    if path is None:
        return None
    try:
        done = subprocess.run(
            [path, "-V"], capture_output=True, timeout=2, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = (done.stdout + done.stderr).decode("utf-8", "replace").lower()
    return "iputils" if "iputils" in text else "habets"


def default_release(settings: HaSettings) -> list[list[str]]:
    return [["ip", "addr", "del", "{address}", "dev", "{interface}"]]


class AddressHooks:
    def __init__(self, settings: HaSettings, counters: Counter[str]) -> None:
        self.settings = settings
        self.counters = counters
        self._lock = asyncio.Lock()  # acquire and release run in the order asked
        self.holding = False

    def _commands(self, acquire: bool) -> list[list[str]]:
        s = self.settings
        given = s.acquire if acquire else s.release
        if given:
            return [list(given)]
        return default_acquire(s) if acquire else default_release(s)

    def _fill(self, argv: list[str]) -> list[str]:
        s = self.settings
        fields = {
            "{address}": s.service_address or "",
            "{interface}": s.interface or "",
            "{node}": s.node,
            "{ip}": s.address or "",
        }
        out = []
        for item in argv:
            for k, v in fields.items():
                item = item.replace(k, v)
            out.append(item)
        return out

    async def run(self, acquire: bool) -> bool:
        """Run the acquire (or release) hooks; False if one failed. No address: nothing."""
        if self.settings.service_address is None:
            return True
        what = "acquire" if acquire else "release"
        async with self._lock:
            ok = True
            given = self.settings.acquire if acquire else self.settings.release
            for argv in self._commands(acquire):
                allowed = frozenset({0}) if given else BEST_EFFORT.get(argv[0], frozenset({0}))
                ok = await self._run_one(what, self._fill(argv), allowed) and ok
            self.holding = acquire
            return ok

    async def _run_one(
        self, what: str, argv: list[str], allowed: frozenset[int] = frozenset({0})
    ) -> bool:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            self.counters[f"hook_{what}_failed"] += 1
            log.error("HA %s hook %s: cannot run it: %s", what, argv[0], exc)
            return False
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.settings.hook_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self.counters[f"hook_{what}_failed"] += 1
            log.error("HA %s hook %s: killed after %gs", what, argv[0], self.settings.hook_timeout)
            return False
        if proc.returncode not in allowed:
            self.counters[f"hook_{what}_failed"] += 1
            text = err.decode("utf-8", "replace").strip()[:300]
            log.error("HA %s hook %s exited %s: %s", what, argv[0], proc.returncode, text)
            return False
        self.counters[f"hook_{what}_ok"] += 1
        log.info("HA %s hook: %s", what, " ".join(argv))
        return True
