"""Active-active capacity: each node's limits for a target are what the others leave.

Every node publishes, every ``load_every``, its calls up and its new calls per
second for each limited carrier or pool member (a lease-bound key, gone with
the node). A node's effective ``max_calls`` for a target is the configured limit
minus the calls the *other* live nodes last said they hold, and its ``max_cps``
the limit minus their rates. The tolerance is what one interval can hide: the
others' calls started since their last publish (at most their ``max_cps`` x
``load_every`` together), so N nodes may exceed a limit by that much briefly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..health._capacity import Capacity

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("trunkguard.ha")

RATE_WINDOW = 1.0  # s over which a node's own calls per second are measured


@dataclass(slots=True)
class _Usage:
    calls: int
    cps: float


def limits(runtime: Runtime) -> dict[str, tuple[str, int | None, float | None]]:
    """Each limited capacity by its key (carrier or pool member): (target holding it, limits)."""
    out: dict[str, tuple[str, int | None, float | None]] = {}
    config = runtime.config
    for carrier in config.carriers:
        if carrier.max_calls is None and carrier.max_cps is None:
            continue
        names = [t.name for t in runtime.proxy.targets if t.carrier == carrier.name]
        if names and names[0] in runtime.health.targets:
            out[carrier.name] = (names[0], carrier.max_calls, carrier.max_cps)
    for pool in config.pools:
        for member in pool.members:
            if member.max_calls is not None and member.name in runtime.health.targets:
                out[member.name] = (member.name, member.max_calls, None)
    return out


class LoadBoard:
    def __init__(self, node: str) -> None:
        self.node = node
        self.others: dict[str, dict[str, _Usage]] = {}  # node -> key -> usage
        self._samples: dict[str, list[tuple[float, int]]] = {}  # key -> (when, taken)
        self.bad = 0

    def _capacity(self, runtime: Runtime, name: str) -> Capacity:
        return runtime.health.targets[name].capacity

    def mine(self, runtime: Runtime, now: float) -> dict[str, _Usage]:
        out = {}
        for key, (name, _, _) in limits(runtime).items():
            cap = self._capacity(runtime, name)
            samples = self._samples.setdefault(key, [])
            samples.append((now, cap.taken))
            while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
                samples.pop(0)
            t0, n0 = samples[0]
            cps = (cap.taken - n0) / (now - t0) if now > t0 else 0.0
            out[key] = _Usage(cap.active, round(cps, 2))
        return out

    def encode(self, runtime: Runtime, now: float) -> bytes:
        usage = self.mine(runtime, now)
        body = {k: [u.calls, u.cps] for k, u in usage.items()}
        return json.dumps({"node": self.node, "usage": body}, separators=(",", ":")).encode()

    def _decode(self, raw: bytes) -> dict[str, _Usage] | None:
        try:
            data = json.loads(raw)
            usage = data["usage"]
            return {
                str(k): _Usage(max(0, int(v[0])), max(0.0, float(v[1]))) for k, v in usage.items()
            }
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            self.bad += 1
            return None

    def reset(self, values: dict[str, bytes], runtime: Runtime) -> None:
        self.others = {}
        for node, raw in values.items():
            if node != self.node:
                usage = self._decode(raw)
                if usage is not None:
                    self.others[node] = usage
        self.apply(runtime)

    def update(self, node: str, raw: bytes | None, runtime: Runtime) -> None:
        if node == self.node:
            return
        if raw is None:
            self.others.pop(node, None)  # its lease expired: its share is free again
        else:
            usage = self._decode(raw)
            if usage is None:
                return
            self.others[node] = usage
        self.apply(runtime)

    def apply(self, runtime: Runtime) -> None:
        """Set each limited target's effective limits from the others' usage."""
        for key, (name, max_calls, max_cps) in limits(runtime).items():
            calls = sum(u[key].calls for u in self.others.values() if key in u)
            rate = sum(u[key].cps for u in self.others.values() if key in u)
            runtime.health.set_capacity(
                name,
                None if max_calls is None else max(0, max_calls - calls),
                None if max_cps is None else max(0.0, max_cps - rate),
            )

    def view(self) -> dict[str, dict[str, list[float]]]:
        return {n: {k: [u.calls, u.cps] for k, u in us.items()} for n, us in self.others.items()}
