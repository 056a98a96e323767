"""The proxy's timer heap: order, cancellation, and compaction of cancelled entries."""

from __future__ import annotations

from trunkguard.proxy._timers import TimerQueue


def test_due_callbacks_run_in_deadline_order() -> None:
    q = TimerQueue()
    fired: list[tuple[str, float]] = []
    for name, when in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
        q.schedule(when, lambda now, n=name: fired.append((n, now)))
    assert q.next_deadline() == 1.0
    assert q.run_due(2.5) == 2
    assert fired == [("a", 2.5), ("b", 2.5)]
    assert len(q) == 1


def test_cancelled_entries_never_fire_and_are_compacted() -> None:
    q = TimerQueue()
    fired: list[int] = []
    handles = [q.schedule(100.0 + i, lambda now, i=i: fired.append(i)) for i in range(10_000)]
    for h in handles[:9_000]:
        h.cancel()
    # One more schedule triggers the rebuild: the heap keeps only live entries.
    q.schedule(50.0, lambda now: fired.append(-1))
    assert len(q._heap) == 1_001
    assert len(q) == 1_001
    assert q.next_deadline() == 50.0
    q.run_due(1e9)
    assert fired == [-1, *range(9_000, 10_000)]
    assert len(q) == 0 and q.next_deadline() is None


def test_cancel_after_firing_is_harmless() -> None:
    q = TimerQueue()
    h = q.schedule(1.0, lambda now: None)
    q.run_due(1.0)
    h.cancel()
    assert q.cancelled == 0 and len(q) == 0
