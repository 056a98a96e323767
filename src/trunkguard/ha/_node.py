"""The HA node: the role machine and shared target state, on the event loop, talking to etcd.

Thin on purpose. Tasks: the lease (grant, keepalive every ``renew_every``), the
leader key's watch, the targets' watch, the publisher of this node's own target
changes, and (active-active) the usage publisher. Each feeds the role machine or
the health engine and does what they answer. The fence timer is one ``call_at``
on the machine's deadline; the gate the router asks on every datagram is
:meth:`HaNode.serving`, which reads the clock itself, so neither a late timer nor
a hung request to etcd can keep a node serving past its fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..health import StateChange
from ._capacity import LoadBoard
from ._etcd import Etcd, EtcdError, KeyValue
from ._hooks import AddressHooks
from ._role import Action, Leader, Role, RoleName
from ._settings import ACTIVE_ACTIVE, HaSettings
from ._shared import BadRecord, decode, encode, leader_of, on_this_clock, publishes, refusal

if TYPE_CHECKING:
    from ..proxy._server import Router
    from ..runtime import Runtime

log = logging.getLogger("trunkguard.ha")

RETRY = 0.25  # s between attempts at a watch that broke


class HaNode:
    def __init__(self, runtime: Runtime, settings: HaSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.role = Role(settings)
        self.etcd = Etcd(settings.etcd, settings.request_timeout)
        self.counters: Counter[str] = Counter()
        self.hooks = AddressHooks(settings, self.counters)
        self.router: Router | None = None  # set once the router listens
        self.load = LoadBoard(settings.node) if settings.mode == ACTIVE_ACTIVE else None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watches: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._adopting = False
        self._seq = int(time.time() * 1000)  # grows across restarts too
        self._dirty: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._leader_kv: KeyValue | None = None
        # Called (no argument, quick, must not raise) when the role, the leader or etcd's
        # reachability changed: the dashboard pushes its HA line then.
        self.watchers: list[Callable[[], None]] = []
        self._shown: tuple[object, ...] | None = None
        runtime.listeners.append(self._on_event)
        runtime.ha = self
        if not self.role.may_serve(self.loop.time()):
            # Before the first REGISTER or probe leaves: only the serving node sends them.
            if runtime.prober is not None:
                runtime.prober.paused = True
            runtime.registrations.pause(self.loop.time())

    # -- the gate ------------------------------------------------------------------------
    def serving(self) -> bool:
        return self.role.may_serve(self.loop.time())

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.settings.service_address is not None:
            # A node that died holding the address still has it: never two on the wire.
            await self.hooks.run(False)
        self._apply(self.role.start(self.loop.time()))
        self._spawn(self._lease_loop())
        self._spawn(self._publisher())
        if self.load is not None:
            self._spawn(self._load_loop())
        self._start_watches()
        log.info(
            "HA node %s (%s) with etcd at %s", self.settings.node, self.settings.mode,
            ", ".join(self.settings.etcd),
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop serving, hand leadership over at once (revoke the lease), stop the tasks."""
        self._stopping = True
        lease = self.role.lease
        self._apply(self.role.resign(self.loop.time()))
        for task in [*self._tasks, *self._watches]:
            task.cancel()
        for task in [*self._tasks, *self._watches]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if lease is not None:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(lease)  # the leader key (and our load) go with it
        if self.hooks.holding:
            await self.hooks.run(False)
        if self._timer is not None:
            self._timer.cancel()
        await self.etcd.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["task_errors"] += 1
            log.error("HA task failed", exc_info=task.exception())

    # -- the role machine's actions ------------------------------------------------------
    def _apply(self, actions: list[Action]) -> None:
        was_ok = self._etcd_was_ok
        self._etcd_was_ok = self.role.etcd_ok
        if self.role.etcd_ok and not was_ok and self._watches and not self._stopping:
            self._start_watches()  # back from a loss: the old streams may be dead silently
        for action in actions:
            if action is Action.CAMPAIGN:
                self._spawn(self._campaign())
            elif action is Action.CHECK_LEADER:
                self._spawn(self._check_leader())
            elif action is Action.SERVE:
                self._serve(True)
            elif action is Action.STOP_SERVING:
                self._serve(False)
            elif action is Action.ACQUIRE_ADDRESS:
                self._spawn(self.hooks.run(True))
            elif action is Action.RELEASE_ADDRESS:
                self._spawn(self.hooks.run(False))
            # GRANT_LEASE: the lease loop sees that there is none
        self._arm()
        self._notify()

    def _notify(self) -> None:
        r = self.role
        shown = (r.role, r.etcd_ok, r.etcd_lost_since, r.leader, r.epoch)
        if shown == self._shown:
            return
        self._shown = shown
        for watcher in list(self.watchers):
            try:
                watcher()
            except Exception:  # a watcher's bug must not stop the role machine
                self.counters["watcher_errors"] += 1
                log.exception("HA: a watcher failed")

    _etcd_was_ok = False

    def _serve(self, on: bool) -> None:
        now = self.loop.time()
        if on:
            self.counters["became_active"] += 1
            log.warning("HA: %s is ACTIVE (epoch %s): serving", self.settings.node, self.role.epoch)
        else:
            self.counters["stopped_serving"] += 1
            why = "fenced: no lease renewal" if self.role.role is RoleName.FENCED else "standby"
            log.warning("HA: %s stopped serving (%s)", self.settings.node, why)
        if self.runtime.prober is not None:
            self.runtime.prober.paused = not on
        # A register: carrier: the new active registers at once (not at its old schedule,
        # nor after the standby's backoff), the one that stopped refreshes no more.
        if on:
            self.runtime.registrations.resume(now)
        else:
            self.runtime.registrations.pause(now)
        self.runtime.store.record_notice(
            self.settings.node, "ha", self.role.role.value,
            f"epoch {self.role.epoch}" if on else "not serving", self.runtime._wall(now),
        )  # fmt: skip
        if on and self.router is not None:
            self.router.flush()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.role.next_deadline()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._apply(self.role.tick(self.loop.time()))

    # -- the lease -----------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        s = self.settings
        ttl = max(1, math.ceil(s.lease_ttl))
        beats = 0
        while True:
            sent = self.loop.time()
            if self.role.lease is None:
                try:
                    lease, _ = await self.etcd.grant(ttl)
                except EtcdError as exc:
                    self._lost("lease grant", exc)
                    self._apply(self.role.grant_failed(self.loop.time()))
                else:
                    self._apply(self.role.lease_granted(lease, sent, self.loop.time()))
            else:
                lease = self.role.lease
                try:
                    left = await self.etcd.keepalive(lease)
                except EtcdError as exc:
                    self._lost("lease keepalive", exc)
                    self._apply(self.role.renew_failed(self.loop.time()))
                else:
                    if left <= 0:
                        self.counters["lease_lost"] += 1
                        log.warning("HA: etcd no longer has lease %x", lease)
                    self._apply(self.role.renewed_lease(left, sent, self.loop.time()))
                    beats += 1
                    if beats % 4 == 0 and self.role.role is not RoleName.ACTIVE:
                        # The watch is the fast path; this read is the one that cannot hang.
                        self._spawn(self._check_leader())
            await asyncio.sleep(max(0.0, sent + s.renew_every - self.loop.time()))

    def _lost(self, what: str, exc: Exception) -> None:
        self.counters["etcd_errors"] += 1
        if self.role.etcd_ok:
            log.warning("HA: etcd lost (%s: %s); keeping the last-known state", what, exc)

    def _leader_of(self, kv: KeyValue | None) -> Leader | None:
        if kv is None:
            return None
        leader, readable = leader_of(kv.value, kv.create_revision, kv.lease or None)
        if not readable:
            self.counters["bad_leader_records"] += 1
        return leader

    async def _campaign(self) -> None:
        lease = self.role.lease
        if lease is None:
            return
        value = json.dumps(
            {"node": self.settings.node, "since": round(time.time(), 3), "lease": f"{lease:x}"}
        ).encode()
        sent = self.loop.time()
        try:
            won, kv = await self.etcd.create(self.settings.key("leader"), value, lease)
        except EtcdError as exc:
            self._lost("campaign", exc)
            self._apply(self.role.campaign_failed(self.loop.time()))
            return
        self._leader_kv = kv
        if won:
            epoch = kv.create_revision if kv else None
            log.info("HA: %s won the leader key (epoch %s)", self.settings.node, epoch)
        revision = kv.mod_revision if kv is not None else None
        leader = self._leader_of(kv)
        self._apply(self.role.campaign_result(won, leader, sent, self.loop.time(), revision))

    async def _check_leader(self) -> None:
        try:
            kv, revision = await self.etcd.get(self.settings.key("leader"))
        except EtcdError as exc:
            self._lost("leader read", exc)
            return
        self._leader_kv = kv
        self._apply(self.role.leader_seen(self._leader_of(kv), self.loop.time(), revision))

    # -- watches -------------------------------------------------------------------------
    def _start_watches(self) -> None:
        for task in self._watches:
            task.cancel()
        self._watches = []
        if self.settings.mode != ACTIVE_ACTIVE:
            self._watches.append(self.loop.create_task(self._watch_leader()))
        self._watches.append(self.loop.create_task(self._watch_targets()))
        if self.load is not None:
            self._watches.append(self.loop.create_task(self._watch_load()))

    async def _watch_leader(self) -> None:
        key = self.settings.key("leader")
        while True:
            try:
                kv, revision = await self.etcd.get(key)
                leader = self._leader_of(kv)
                self._apply(self.role.leader_seen(leader, self.loop.time(), revision))
                watch = self.etcd.watch(key, prefix=False, start_revision=revision + 1)
                async for header, events in watch:
                    for event in events:
                        kv = None if event.kind == "DELETE" else event.kv
                        self._leader_kv = kv
                        at = event.kv.mod_revision or header  # a delete's too: its revision
                        leader = self._leader_of(kv)
                        self._apply(self.role.leader_seen(leader, self.loop.time(), at))
            except EtcdError as exc:
                self.counters["watch_errors"] += 1
                log.debug("HA: leader watch: %s", exc)
            await asyncio.sleep(RETRY)

    async def _watch_targets(self) -> None:
        prefix = self.settings.key("targets") + "/"
        while True:
            try:
                kvs, revision = await self.etcd.get_prefix(prefix)
                for kv in kvs:
                    self._adopt(kv, prefix)
                watch = self.etcd.watch(prefix, prefix=True, start_revision=revision + 1)
                async for _, events in watch:
                    for event in events:
                        if event.kind != "DELETE":
                            self._adopt(event.kv, prefix)
            except EtcdError as exc:
                self.counters["watch_errors"] += 1
                log.debug("HA: targets watch: %s", exc)
            await asyncio.sleep(RETRY)

    # -- shared target state -------------------------------------------------------------
    def _on_event(self, event: object) -> None:
        """A runtime listener: this node's own target changes go to etcd (never adopted ones)."""
        if not isinstance(event, StateChange):
            return
        if not publishes(event, self.serving(), self._adopting):
            return
        self._dirty[event.target] = None
        self._wake.set()

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                name = next(iter(self._dirty))
                h = self.runtime.health.targets.get(name)
                if h is None:
                    del self._dirty[name]
                    continue
                self._seq += 1
                value = encode(h, self.settings.node, self._seq, self.runtime._wall(0.0))
                try:
                    await self.etcd.put(self.settings.key("targets", name), value)
                except EtcdError as exc:
                    self._lost("publish", exc)
                    await asyncio.sleep(RETRY)  # kept dirty: sent once etcd is back
                    continue
                self._dirty.pop(name, None)
                self.counters["published"] += 1

    def _adopt(self, kv: KeyValue, prefix: str) -> None:
        name = kv.key[len(prefix) :]
        try:
            record = decode(kv.value)
        except BadRecord as exc:
            self.counters["bad_target_records"] += 1
            log.warning("HA: %s: bad target record (%s): ignored", kv.key, exc)
            return
        if refusal(name, record, self.settings.node, self.runtime.health.targets, self._dirty):
            return
        now = self.loop.time()
        changes = self.runtime.health.adopt(
            name, record.state, now, **on_this_clock(record, self.runtime._wall(0.0))
        )
        self.counters["adopted"] += 1
        self._adopting = True
        try:
            self.runtime.proxy.apply_health_changes(changes, now)
            if self.router is not None:
                self.router.flush()
            else:
                self.runtime.pump()
        finally:
            self._adopting = False

    # -- active-active capacity ----------------------------------------------------------
    async def _load_loop(self) -> None:
        assert self.load is not None
        key = self.settings.key("load", self.settings.node)
        while True:
            lease = self.role.lease
            if lease is not None:
                value = self.load.encode(self.runtime, self.loop.time())
                try:
                    await self.etcd.put(key, value, lease)
                except EtcdError as exc:
                    self._lost("load publish", exc)
            await asyncio.sleep(self.settings.load_every)

    async def _watch_load(self) -> None:
        assert self.load is not None
        prefix = self.settings.key("load") + "/"
        while True:
            try:
                kvs, revision = await self.etcd.get_prefix(prefix)
                self.load.reset({kv.key[len(prefix) :]: kv.value for kv in kvs}, self.runtime)
                watch = self.etcd.watch(prefix, prefix=True, start_revision=revision + 1)
                async for _, events in watch:
                    for event in events:
                        node = event.kv.key[len(prefix) :]
                        value = None if event.kind == "DELETE" else event.kv.value
                        self.load.update(node, value, self.runtime)
            except EtcdError as exc:
                self.counters["watch_errors"] += 1
                log.debug("HA: load watch: %s", exc)
            await asyncio.sleep(RETRY)

    # -- the status block ----------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        r = self.role
        now = self.loop.time()
        leader = r.leader
        lost = r.etcd_lost_since
        out: dict[str, Any] = {
            "node": self.settings.node,
            "mode": self.settings.mode,
            "role": r.role.value,
            "serving": r.may_serve(now),
            "epoch": r.epoch if r.epoch is not None else (leader.epoch if leader else None),
            "leader": leader.node if leader else None,
            "etcd": "connected" if r.etcd_ok else "lost",
            "etcd_lost_since": None if lost is None else round(self.runtime._wall(lost), 3),
            "etcd_endpoint": self.etcd.endpoint,
            "takeovers": r.takeovers,
            "fences": r.fences,
            "service_address": self.settings.service_address,
            "counters": dict(sorted(self.counters.items())),
        }
        if self.load is not None:
            out["load"] = self.load.view()  # the others' last published usage, as used here
        return out


def install(runtime: Runtime, settings: HaSettings) -> Callable[[], bool]:
    """Make the node (it hooks itself into ``runtime``); returns the router's gate."""
    node = HaNode(runtime, settings)
    return node.serving
