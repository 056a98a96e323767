"""DnsWatcher on a real loop with a scripted resolver: scheduling, callbacks, clean stop.

Refresh intervals are tens of milliseconds here; every wait polls with a deadline of
seconds, so a slow machine makes a test slower, not red. The rules themselves (what a
change is, backoff, stale destinations) are tested without a loop in test_dns_refresh.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from trunkguard.dns import Destination, DnsSettings, DnsWatcher, Query, Resolution

FAST = DnsSettings(min_ttl=0.02, retry_min=0.02, retry_max=0.05, initial_timeout=5.0)
A = Destination("sbc1.test", "127.0.0.2", 5060, "udp")
B = Destination("sbc2.test", "127.0.0.3", 5060, "udp")


class ScriptedResolver:
    """``resolve`` returns the next result of the query's script, then the last one again."""

    def __init__(self, scripts: dict[str, list[Resolution]], delay: float = 0.0) -> None:
        self.scripts = scripts
        self.delay = delay
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.hang: set[str] = set()
        self.fail: set[str] = set()

    async def resolve(self, query: Query) -> Resolution:
        n = self.calls.get(query.host, 0)
        self.calls[query.host] = n + 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if query.host in self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay)
            if query.host in self.fail:
                raise RuntimeError("resolver bug")
            script = self.scripts[query.host]
            return script[min(n, len(script) - 1)]
        finally:
            self.in_flight -= 1


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def watcher(
    resolver: ScriptedResolver, settings: DnsSettings = FAST
) -> tuple[DnsWatcher, list[tuple[str, Resolution]]]:
    changes: list[tuple[str, Resolution]] = []
    w = DnsWatcher(settings, lambda n, r: changes.append((n, r)), resolver=resolver)  # type: ignore[arg-type]
    return w, changes


async def test_start_resolves_every_query_at_once_and_reports_each() -> None:
    scripts = {f"c{i}.test": [Resolution((A,), 60.0)] for i in range(5)}
    resolver = ScriptedResolver(scripts, delay=0.05)
    w, changes = watcher(resolver)
    for i in range(5):
        w.add(f"carrier-{i}", Query(f"c{i}.test"))
    await w.start()
    print(f"most resolutions in flight at start: {resolver.most_in_flight}")
    assert resolver.most_in_flight == 5
    assert sorted(n for n, _ in changes) == [f"carrier-{i}" for i in range(5)]
    assert all(w.current(f"carrier-{i}") == Resolution((A,), 60.0) for i in range(5))
    await w.stop()
    assert other_tasks() == set()


async def test_on_change_once_per_change_not_per_refresh() -> None:
    script = [
        Resolution((A, B), 0.01),
        Resolution((B, A), 0.02),  # same set: no change
        Resolution((A,), 0.01),
        Resolution((A,), 0.01),
        Resolution((), 0.01, "t.test: no such name (NXDOMAIN)"),
        Resolution((), 0.01, "t.test: no such name (NXDOMAIN)"),
        Resolution((A,), 0.01),
    ]
    resolver = ScriptedResolver({"t.test": script})
    w, changes = watcher(resolver)
    w.add("carrier", Query("t.test"))
    await w.start()
    await eventually(lambda: resolver.calls.get("t.test", 0) > len(script) + 2)
    await w.stop()
    seen = [(sorted(d.addr for d in r.destinations), r.error) for _, r in changes]
    print(f"{resolver.calls['t.test']} resolutions, {len(changes)} changes")
    assert seen == [
        (["127.0.0.2", "127.0.0.3"], None),
        (["127.0.0.2"], None),
        ([], "t.test: no such name (NXDOMAIN)"),
        (["127.0.0.2"], None),
    ]


async def test_initial_wait_is_bounded_and_a_late_name_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    resolver = ScriptedResolver({"ok.test": [Resolution((A,), 60.0)], "slow.test": []})
    resolver.hang.add("slow.test")
    settings = DnsSettings(initial_timeout=0.2)
    w, _ = watcher(resolver, settings)
    w.add("fine", Query("ok.test"))
    w.add("stuck", Query("slow.test"))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, "trunkguard.dns"):
        await w.start()
    took = loop.time() - began
    print(f"start() returned after {took:.2f}s with one name hanging")
    assert 0.2 <= took < 5.0
    assert w.current("fine") is not None and w.current("stuck") is None
    assert "not resolved within 0.2s, still trying: stuck" in caplog.text
    await w.stop()
    assert other_tasks() == set()


async def test_a_failing_callback_is_logged_and_watching_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = [Resolution((A,), 0.01), Resolution((B,), 0.01), Resolution((A,), 0.01)]
    resolver = ScriptedResolver({"t.test": script})
    calls: list[Resolution] = []

    def explode(name: str, resolution: Resolution) -> None:
        calls.append(resolution)
        raise ValueError("callback bug")

    w = DnsWatcher(FAST, explode, resolver=resolver)  # type: ignore[arg-type]
    w.add("carrier", Query("t.test"))
    with caplog.at_level(logging.ERROR, "trunkguard.dns"):
        await w.start()
        await eventually(lambda: len(calls) == 3)
    await w.stop()
    assert caplog.text.count("carrier: on_change callback failed") == 3


async def test_a_resolver_exception_is_a_transient_error_not_a_dead_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    resolver = ScriptedResolver({"t.test": [Resolution((A,), 0.01)]})
    resolver.fail.add("t.test")
    w, changes = watcher(resolver)
    w.add("carrier", Query("t.test"))
    with caplog.at_level(logging.ERROR, "trunkguard.dns"):
        await w.start()
        await eventually(lambda: resolver.calls.get("t.test", 0) >= 3)
    current = w.current("carrier")
    assert current is not None and current.transient
    assert current.error == "t.test: resolver error: RuntimeError"
    resolver.fail.clear()
    await eventually(lambda: (c := w.current("carrier")) is not None and c.error is None)
    await w.stop()
    assert len(changes) == 2


async def test_add_and_remove_while_running() -> None:
    resolver = ScriptedResolver(
        {"one.test": [Resolution((A,), 0.01)], "two.test": [Resolution((B,), 0.01)]}
    )
    w, _ = watcher(resolver)
    w.add("one", Query("one.test"))
    await w.start()
    w.add("two", Query("two.test"))
    await eventually(lambda: w.current("two") is not None)
    w.remove("one")
    assert w.current("one") is None and w.names() == ["two"]
    await asyncio.sleep(0)  # let the cancelled task end
    calls = resolver.calls["one.test"]
    await eventually(lambda: resolver.calls["two.test"] > 5)
    assert resolver.calls["one.test"] == calls
    w.remove("unknown")
    await w.stop()
    assert other_tasks() == set()


async def test_add_same_query_is_a_no_op_new_query_replaces() -> None:
    resolver = ScriptedResolver(
        {"one.test": [Resolution((A,), 60.0)], "two.test": [Resolution((B,), 60.0)]}
    )
    w, changes = watcher(resolver)
    w.add("carrier", Query("one.test"))
    await w.start()
    w.add("carrier", Query("one.test"))
    assert resolver.calls == {"one.test": 1}
    w.add("carrier", Query("two.test"))
    await eventually(lambda: (c := w.current("carrier")) is not None and c.destinations == (B,))
    await w.stop()
    assert [r.destinations for _, r in changes] == [(A,), (B,)]
    assert other_tasks() == set()


async def test_stop_during_resolution_and_sleep_leaves_nothing_and_restarts() -> None:
    resolver = ScriptedResolver({"t.test": [Resolution((A,), 60.0)], "h.test": []})
    resolver.hang.add("h.test")
    async with DnsWatcher(
        DnsSettings(initial_timeout=0.05),
        resolver=resolver,  # type: ignore[arg-type]
    ) as w:
        w.add("sleeping", Query("t.test"))
        w.add("hanging", Query("h.test"))
        await eventually(lambda: w.current("sleeping") is not None)
    assert other_tasks() == set()
    await w.start()
    await w.stop()
    assert other_tasks() == set()
