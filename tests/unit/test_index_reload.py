"""A reload compiles the new index off the event loop; calls keep the old one until it is ready.

The reload (``cli._reload``, as SIGHUP and ``POST /api/reload`` run it) reads the
decks and builds the routing table, index included, in a worker thread. While it
does, a heartbeat on the loop measures its lag and places a call every tick through
the proxy core: those calls go by the old decks, then, once the new table is in
force, by the new ones, never back.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from test_proxy_core import CALLER, A, B, invite

from trunkguard.cli import _reload
from trunkguard.config import load_config
from trunkguard.runtime import Runtime

CONFIG = """\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - {name: a, uri: "sip:127.0.0.1:5071", deck: {path: a.csv}}
  - {name: b, uri: "sip:127.0.0.1:5072", deck: {path: b.csv}}
probe: {enabled: false}
store: {path: events.db}
"""
PREFIXES = 50_000  # a deck big enough that its load and index take a while


def write_decks(tmp: Path, a_uk_rate: str) -> None:
    rng = random.Random(7)
    rows = {str(rng.randrange(10**6, 10**8)) for _ in range(PREFIXES)} - {"44"}
    lines = ["prefix,rate", f"44,{a_uk_rate}"] + [f"{p},0.0{rng.randint(100, 999)}" for p in rows]
    (tmp / "a.csv").write_text("\n".join(lines) + "\n")
    (tmp / "b.csv").write_text("prefix,rate\n44,0.0100\n")


async def test_calls_during_a_reload_use_the_old_index_and_the_loop_keeps_running(
    tmp_path: Path,
) -> None:
    write_decks(tmp_path, a_uk_rate="0.0050")  # a is the cheaper for 44
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG)
    config, source = load_config(path)
    runtime = Runtime(config)
    loop = asyncio.get_running_loop()
    runtime.start(loop.time())
    proxy = runtime.proxy
    try:
        write_decks(tmp_path, a_uk_rate="0.0500")  # now b is
        began = time.monotonic()
        reload = asyncio.create_task(_reload(runtime, source, None, "test"))
        went: list[str] = []  # where each call placed during and after the reload went
        lags: list[float] = []
        tick = 0.005
        for n in range(100_000):  # bounded; ends once the reload is over
            asked = loop.time()
            await asyncio.sleep(tick)
            lags.append(loop.time() - asked - tick)
            proxy.outbox.clear()
            call = invite(f"reload-{n}").replace(b"15551234567", b"442079460000")
            proxy.receive(call, CALLER, loop.time())
            flows = [f for f, data in proxy.outbox if data.startswith(b"INVITE ")]
            went.append("a" if flows == [A] else "b" if flows == [B] else f"? {flows}")
            if reload.done() and went[-1] == "b" and went.count("b") >= 5:
                break
        took = time.monotonic() - began
        outcome = await reload
        assert outcome.ok, outcome.problems
        during = went[: went.index("b")]
        # Calls placed while the new decks were read and compiled went by the old index...
        assert len(during) >= 5 and set(during) == {"a"}
        # ...and from the switch on, by the new one only.
        assert set(went[len(during) :]) == {"b"}
        # The loop kept turning: calls were placed all through the reload (above), and no
        # tick waited for the whole of it. How long the worst tick waited depends on how
        # busy the machine is (bench/deck_load.py measures it): printed, not bounded tighter.
        print(f"reload {took:.2f} s, {len(during)} calls meanwhile, max lag {max(lags):.4f} s")
        assert max(lags) < took, (max(lags), took)
        assert proxy.routing is not None and len(proxy.routing.index.nodes) > PREFIXES / 2
    finally:
        runtime.close()
