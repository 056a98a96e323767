"""Active-active capacity, without etcd: what a node publishes, and the limits it keeps.

A real Runtime (no sockets) holds the targets and their capacities; the other nodes'
usage is fed to the board as the load watch would (``reset`` on a fresh read,
``update`` for each PUT or DELETE). Each node's effective limit for a target is the
configured one minus what the *others* last said they use.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trunkguard.config import parse_config
from trunkguard.ha._capacity import RATE_WINDOW, LoadBoard, limits
from trunkguard.runtime import Runtime

CONFIG = """\
listen: udp:127.0.0.1:0
carriers:
  - {name: a, uri: "sip:127.0.0.1:5991", max_calls: 10, max_cps: 5}
  - {name: b, uri: "sip:127.0.0.1:5992", max_calls: 4}
  - {name: c, uri: "sip:127.0.0.1:5993"}
pools:
  - name: inbound
    prefixes: ["1800"]
    members:
      - {name: pbx1, uri: "sip:127.0.0.1:5981", max_calls: 6}
      - {name: pbx2, uri: "sip:127.0.0.1:5982"}
probe: {enabled: false}
store: {path: events.db}
"""


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    config = parse_config(CONFIG, "test.yaml")
    config._base = tmp_path
    rt = Runtime(config)
    rt.start(0.0)
    return rt


def _usage(node: str, **keys: tuple[int, float]) -> bytes:
    return json.dumps({"node": node, "usage": {k: list(v) for k, v in keys.items()}}).encode()


def _limits(rt: Runtime, name: str) -> tuple[int | None, float | None]:
    cap = rt.health.targets[name].capacity
    return cap.max_calls, cap.max_cps


def test_only_limited_carriers_and_pool_members_are_shared(runtime: Runtime) -> None:
    assert limits(runtime) == {
        "a": ("a", 10, 5.0),
        "b": ("b", 4, None),
        "pbx1": ("pbx1", 6, None),
    }


def test_a_node_publishes_its_calls_up_and_its_rate(runtime: Runtime) -> None:
    board = LoadBoard("r1")
    cap = runtime.health.targets["a"].capacity
    assert json.loads(board.encode(runtime, 100.0)) == {
        "node": "r1", "usage": {"a": [0, 0.0], "b": [0, 0.0], "pbx1": [0, 0.0]},
    }  # fmt: skip
    for _ in range(3):
        cap.take(100.2)
    cap.release()  # one of them ended: 2 up, 3 taken
    usage = board.mine(runtime, 100.5)["a"]
    assert usage.calls == 2 and usage.cps == pytest.approx(3 / 0.5)
    # The rate is over the last second or so, not since the start: quiet, it falls to 0.
    board.mine(runtime, 101.0)
    board.mine(runtime, 102.5)
    late = board.mine(runtime, 104.0)["a"]
    assert late.calls == 2 and late.cps == 0.0
    assert RATE_WINDOW == 1.0


def test_the_others_usage_comes_off_each_limit(runtime: Runtime) -> None:
    board = LoadBoard("r1")
    board.reset(
        {
            "r1": _usage("r1", a=(9, 9.0)),  # our own key: never counted against us
            "r2": _usage("r2", a=(3, 1.5), b=(1, 0.0)),
            "r3": _usage("r3", a=(2, 0.5), pbx1=(6, 0.0)),
        },
        runtime,
    )
    assert _limits(runtime, "a") == (10 - 3 - 2, 5.0 - 1.5 - 0.5)
    assert _limits(runtime, "b") == (3, None)
    assert _limits(runtime, "pbx1") == (0, None)  # the others hold all of it
    assert _limits(runtime, "c") == (None, None) and _limits(runtime, "pbx2") == (None, None)
    assert set(board.view()) == {"r2", "r3"}
    # With no room left, a new call overflows here (never a fault of the target's).
    assert runtime.health.overflow("pbx1", 1.0) == "0 calls up, limit 0"


def test_a_publish_replaces_a_nodes_share_and_a_dead_node_frees_it(runtime: Runtime) -> None:
    board = LoadBoard("r1")
    board.reset({"r2": _usage("r2", b=(3, 0.0))}, runtime)
    assert _limits(runtime, "b") == (1, None)
    board.update("r2", _usage("r2", b=(1, 0.0)), runtime)
    assert _limits(runtime, "b") == (3, None)
    board.update("r3", _usage("r3", b=(2, 0.0)), runtime)
    assert _limits(runtime, "b") == (1, None)
    board.update("r2", None, runtime)  # r2's lease expired: its key is deleted
    assert _limits(runtime, "b") == (2, None)
    board.update("r3", None, runtime)
    assert _limits(runtime, "b") == (4, None)
    board.update("r1", _usage("r1", b=(4, 0.0)), runtime)  # our own echo: ignored
    assert _limits(runtime, "b") == (4, None)


def test_more_than_the_limit_elsewhere_leaves_zero_not_less(runtime: Runtime) -> None:
    board = LoadBoard("r1")
    board.reset({"r2": _usage("r2", a=(40, 20.0))}, runtime)
    assert _limits(runtime, "a") == (0, 0.0)


@pytest.mark.parametrize(
    "raw",
    [b"junk", b"[]", b'{"node":"r2"}', b'{"usage":{"a":[1]}}', b'{"usage":{"a":"x"}}',
     b'{"usage":{"a":[1,"fast"]}}', b'{"usage":[1,2]}'],
)  # fmt: skip
def test_a_bad_publish_is_counted_and_changes_nothing(runtime: Runtime, raw: bytes) -> None:
    board = LoadBoard("r1")
    board.reset({"r2": _usage("r2", a=(3, 1.0))}, runtime)
    board.update("r2", raw, runtime)
    assert board.bad == 1
    assert _limits(runtime, "a") == (7, 4.0)  # r2's last good publish still counts
    board.reset({"r2": raw, "r3": _usage("r3", a=(1, 0.0))}, runtime)
    assert board.bad == 2 and _limits(runtime, "a") == (9, 5.0)


def test_negative_figures_count_as_zero(runtime: Runtime) -> None:
    board = LoadBoard("r1")
    board.reset({"r2": _usage("r2", a=(-5, -3.0))}, runtime)
    assert _limits(runtime, "a") == (10, 5.0)


def test_an_unknown_key_is_kept_but_limits_nothing(runtime: Runtime) -> None:
    # Another node with a newer config (a carrier this one does not have yet).
    board = LoadBoard("r1")
    board.reset({"r2": _usage("r2", zz=(3, 1.0), a=(1, 0.0))}, runtime)
    assert _limits(runtime, "a") == (9, 5.0)
    assert board.view() == {"r2": {"zz": [3, 1.0], "a": [1, 0.0]}}
