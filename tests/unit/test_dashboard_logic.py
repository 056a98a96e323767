"""The dashboard's pure parts: sessions, one-time links, the login throttle, the failover log,
and the stream hub's handling of a slow client. No socket, no sleep: ``now`` is passed in."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from trunkguard.admin._failovers import FailoverLog
from trunkguard.admin._sessions import LoginThrottle, Sessions
from trunkguard.admin._stream import StreamHub, _Client, encode
from trunkguard.health import OutcomeClass, Verdict
from trunkguard.proxy import AttemptRecord, CallRecord


# -- sessions -------------------------------------------------------------------------------------
def test_a_session_has_a_random_id_and_csrf_token_and_keeps_only_a_hash_of_the_id() -> None:
    s = Sessions()
    sid1, one = s.open(0.0)
    sid2, two = s.open(0.0)
    assert sid1 != sid2 and one.csrf != two.csrf and one.csrf != sid1
    assert len(sid1) >= 40 and len(one.csrf) >= 40
    assert one.key != sid1 and sid1 not in repr(s._sessions)
    assert s.get(sid1, 1.0) is one
    assert s.get(sid1 + "x", 1.0) is None
    assert s.get("", 1.0) is None


def test_sessions_expire_when_idle_and_at_the_end_of_their_lifetime() -> None:
    s = Sessions(idle=10.0, lifetime=25.0)
    sid, _ = s.open(0.0)
    assert s.get(sid, 9.0) is not None  # used: idle restarts
    assert s.get(sid, 18.0) is not None
    assert s.get(sid, 24.0) is not None
    assert s.get(sid, 25.5) is None  # lifetime over, however recently used
    other, _ = s.open(100.0)
    assert s.get(other, 110.5) is None  # idle too long
    assert len(s) == 0


def test_sessions_are_bounded_the_oldest_going_first() -> None:
    s = Sessions(max_sessions=3)
    sids = [s.open(float(i))[0] for i in range(5)]
    assert len(s) == 3
    assert s.get(sids[0], 5.0) is None and s.get(sids[1], 5.0) is None
    assert all(s.get(sid, 5.0) is not None for sid in sids[2:])


def test_closing_a_session_ends_it_and_alive_follows() -> None:
    s = Sessions()
    sid, session = s.open(0.0)
    assert s.alive(session.key, 1.0)
    assert s.close(sid) is session
    assert not s.alive(session.key, 1.0)
    assert s.get(sid, 1.0) is None


def test_a_login_link_opens_once_and_expires() -> None:
    s = Sessions(link_ttl=60.0)
    code = s.make_link(0.0)
    assert s.redeem(code, 10.0)
    assert not s.redeem(code, 10.0)  # once
    late = s.make_link(0.0)
    assert not s.redeem(late, 60.0)
    assert not s.redeem("made-up", 1.0)


def test_login_links_are_bounded() -> None:
    s = Sessions(max_links=2)
    codes = [s.make_link(0.0) for _ in range(3)]
    assert not s.redeem(codes[0], 1.0)
    assert s.redeem(codes[1], 1.0) and s.redeem(codes[2], 1.0)


def test_session_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Sessions(idle=0)
    with pytest.raises(ValueError):
        Sessions(max_sessions=0)


# -- the throttle ---------------------------------------------------------------------------------
def test_failed_logins_are_free_at_first_then_wait_longer_and_longer() -> None:
    t = LoginThrottle(free=3, first_wait=1.0, max_wait=8.0)
    assert t.failed("1.2.3.4", 0.0) is True  # the first of a burst: log it
    assert t.failed("1.2.3.4", 0.1) is False
    assert t.wait("1.2.3.4", 0.1) == 0.0
    assert t.failed("1.2.3.4", 0.2) is False  # third: now a wait
    assert t.wait("1.2.3.4", 0.2) == pytest.approx(1.0)
    waits = []
    for i in range(6):
        now = 10.0 + i
        t.failed("1.2.3.4", now)
        waits.append(round(t.wait("1.2.3.4", now), 3))
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]  # doubling, capped
    assert t.wait("5.6.7.8", 10.0) == 0.0  # per address
    assert t.failures("1.2.3.4") == 9


def test_a_success_or_a_quiet_spell_ends_the_burst() -> None:
    t = LoginThrottle(free=2, quiet=60.0)
    t.failed("a", 0.0)
    t.failed("a", 1.0)
    assert t.wait("a", 1.0) > 0
    t.succeeded("a")
    assert t.wait("a", 1.0) == 0.0 and t.failures("a") == 0
    t.failed("b", 0.0)
    assert t.failed("b", 61.0) is True  # quiet long enough: a new burst, logged again
    assert t.failures("b") == 1


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    t = LoginThrottle(max_addresses=100)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(t._by_address) == 100


# -- the failover log -----------------------------------------------------------------------------
def _attempt(
    target: str, n: int, status: int | None, kind: str, klass: OutcomeClass
) -> AttemptRecord:
    failover = klass in (OutcomeClass.TRUNK_FAULT, OutcomeClass.ROUTE_MISMATCH)
    return AttemptRecord(
        call_id="c", target=target, attempt=n, status=status, kind=kind,
        verdict=Verdict(klass, failover, failover), started=10.0 + n, ended=10.5 + n,
        first_response=None if status is None else 10.1 + n, carrier=target,
    )  # fmt: skip


def _call(call_id: str, *attempts: AttemptRecord) -> CallRecord:
    ok = attempts[-1].status == 200
    return CallRecord(
        call_id=call_id, number="15551234", source="127.0.0.1:5060", plan=("a", "b", "c"),
        explain=("a: tier 1", "b: tier 1", "c: tier 2"), attempts=attempts,
        status=attempts[-1].status or 408, started=10.0, answered=13.0 if ok else None,
        ended=20.0, end="bye" if ok else "failed",
    )  # fmt: skip


def test_the_failover_log_keeps_calls_with_more_than_one_attempt_newest_first() -> None:
    seen = []
    log = FailoverLog(lambda mono: mono + 1_000_000.0, keep=3, on_new=seen.append)
    log.feed(_call("single", _attempt("a", 1, 200, "response", OutcomeClass.SUCCESS)))
    log.feed("not a record")
    assert log.views() == [] and seen == []
    for i in range(5):
        log.feed(
            _call(
                f"moved{i}",
                _attempt("a", 1, None, "unreachable", OutcomeClass.TRUNK_FAULT),
                _attempt("b", 2, 200, "response", OutcomeClass.SUCCESS),
            )
        )
    views = log.views()
    assert [v["call_id"] for v in views] == ["moved4", "moved3", "moved2"]  # bounded
    assert len(seen) == 5
    v = views[0]
    assert v["plan"] == ["a", "b", "c"] and v["explain"][0] == "a: tier 1"
    assert v["answered"] and v["carrier"] == "b" and v["status"] == 200
    assert v["at_unix"] == pytest.approx(1_000_010.0)
    first, second = v["steps"]
    assert first == {
        "target": "a", "carrier": "a", "attempt": 1, "status": None, "kind": "unreachable",
        "class": "trunk_fault", "failover": True, "ms": 500.0, "pdd_ms": None,
    }  # fmt: skip
    assert second["status"] == 200 and second["failover"] is False and second["pdd_ms"] == 100.0


# -- the stream hub -------------------------------------------------------------------------------
async def test_a_client_whose_queue_fills_is_dropped_and_the_others_keep_theirs() -> None:
    counters: Counter[str] = Counter()
    hub = StreamHub(lambda name: counters.update([name]), queue=3)
    slow, fast = _Client("s", "10.0.0.1", 3), _Client(None, "10.0.0.2", 100)
    hub.clients |= {slow, fast}
    for i in range(4):
        hub.broadcast("targets", {"i": i})
    assert slow.closed and slow not in hub.clients
    assert counters["dashboard_stream_dropped"] == 1
    # The dropped client's writer finds the end mark first, not a backlog.
    assert slow.queue.get_nowait() is None
    assert fast.queue.qsize() == 4 and fast in hub.clients
    assert fast.queue.get_nowait() == encode("targets", {"i": 0})


async def test_closing_a_session_or_everything_ends_those_streams() -> None:
    hub = StreamHub(lambda name: None)
    a, b = _Client("k1", None, 4), _Client("k2", None, 4)
    hub.clients |= {a, b}
    hub.broadcast("x", 1)
    hub.close_session("k1")
    assert a.closed and not b.closed and hub.clients == {b}
    hub.close_all()
    assert b.closed and not hub.clients and hub.closing
    assert b.queue.get_nowait() is None
    await asyncio.sleep(0)


def test_an_sse_message_is_one_data_line() -> None:
    msg = encode("change", {"reason": "two\nlines"})
    assert msg.startswith(b"event: change\ndata: ") and msg.endswith(b"\n\n")
    assert msg.count(b"\n") == 3
