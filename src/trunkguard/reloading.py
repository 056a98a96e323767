"""What a reload did: put in force (with what changed and the notes), refused, or not run.

SIGHUP and ``POST /api/reload`` go through the same reload (``cli._reload``);
this is its answer, and the comparison of the config in force with the new one.
What changed is said by name (a section, a carrier), never by value: values may
be secrets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .config import RouterConfig


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """``ok``: the new config is in force; otherwise ``problems`` (as ``trunkguard check``
    prints them) say why it was refused and the old one stays, or ``busy`` says another
    reload was under way and this one did not run."""

    ok: bool
    source: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what takes effect only at a restart
    changed: list[str] = field(default_factory=list)  # "carriers: added c", "failover"...
    carriers: int = 0
    busy: bool = False

    def view(self) -> dict[str, Any]:
        """The outcome as the admin API returns it."""
        if self.busy:
            return {"reloaded": False, "error": "a reload is under way; try again"}
        if not self.ok:
            return {"reloaded": False, "source": self.source, "problems": self.problems}
        return {
            "reloaded": True,
            "source": self.source,
            "changed": self.changed,
            "notes": self.notes,
            "carriers": self.carriers,
        }


#: What the admin API is handed to reload: the trigger's name in, the outcome out,
#: ``busy`` at once if a reload is under way.
Reload = Callable[[str], Awaitable[ReloadOutcome]]


def config_changes(old: RouterConfig, new: RouterConfig) -> list[str]:
    """Sections whose settings differ, and carriers added, removed or changed, by name."""
    out: list[str] = []
    before = {c.name: c.model_dump() for c in old.carriers}
    after = {c.name: c.model_dump() for c in new.carriers}
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    changed = [n for n in after if n in before and after[n] != before[n]]
    for verb, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            out.append(f"carriers: {verb} {', '.join(names)}")
    if not (added or removed or changed) and list(before) != list(after):
        out.append("carriers: order")
    for name in type(new).model_fields:
        if name == "carriers":
            continue
        if getattr(old, name) != getattr(new, name):
            out.append(name)
    return out


class Serialized:
    """One reload at a time: SIGHUP waits its turn; the API hears ``busy`` at once."""

    def __init__(self, run: Callable[[str], Awaitable[ReloadOutcome]], source: str) -> None:
        self._run = run
        self._source = source
        self._lock = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def queued(self, trigger: str) -> ReloadOutcome:
        async with self._lock:
            return await self._run(trigger)

    async def now_or_busy(self, trigger: str) -> ReloadOutcome:
        if self._lock.locked():
            return ReloadOutcome(ok=False, source=self._source, busy=True)
        return await self.queued(trigger)
