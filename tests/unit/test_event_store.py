"""The event log (SQLite): what goes in comes back out, filtered, and survives a reopen."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from trunkguard.health import State, StateChange
from trunkguard.store import EventRow, EventStore

T0 = 1_700_000_000.0  # a wall-clock time, Unix seconds


def change(
    target: str,
    old: State,
    new: State,
    reason: str = "because",
    *,
    at: float = 0.0,
    counts: dict[str, int] | None = None,
    hold_down: float | None = None,
) -> StateChange:
    return StateChange(target, old, new, reason, at, counts or {}, hold_down)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "events.db")
    yield s
    s.close()


def test_record_and_read_back_every_field(store: EventStore) -> None:
    counts = {"consecutive_faults": 5, "window_failures": 5, "window_size": 5, "trips": 1}
    c = change("a", State.UP, State.DOWN, "5 consecutive 503 from a", counts=counts, hold_down=31.5)
    row_id = store.record(c, T0, until=T0 + 31.5)
    rows = store.events()
    assert rows == [
        EventRow(
            id=row_id,
            at=T0,
            target="a",
            old="UP",
            new="DOWN",
            reason="5 consecutive 503 from a",
            counts=counts,
            hold_down=31.5,
            until=T0 + 31.5,
        )
    ]
    assert row_id > 0


def test_counts_are_json_with_int_values_and_nulls_stay_null(store: EventStore) -> None:
    store.record(change("b", State.UP, State.DRAINED, "drained by operator"), T0)
    (row,) = store.events()
    assert row.counts == {}
    assert row.hold_down is None
    assert row.until is None
    store.record(change("b", State.DRAINED, State.UP, "restored", counts={"trips": 3}), T0 + 1)
    assert store.events()[-1].counts == {"trips": 3}


def test_ids_increase_in_recording_order(store: EventStore) -> None:
    ids = [store.record(change("a", State.UP, State.DOWN), T0 + i) for i in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    assert [r.id for r in store.events()] == ids


def _fill(store: EventStore) -> None:
    """Ten events, alternately for a and b, one second apart from T0."""
    for i in range(10):
        target = "a" if i % 2 == 0 else "b"
        store.record(change(target, State.UP, State.DOWN, f"event {i}"), T0 + i)


def reasons(rows: list[EventRow]) -> list[str]:
    return [r.reason for r in rows]


def test_filter_by_target(store: EventStore) -> None:
    _fill(store)
    assert reasons(store.events(target="a")) == [f"event {i}" for i in (0, 2, 4, 6, 8)]
    assert reasons(store.events(target="b")) == [f"event {i}" for i in (1, 3, 5, 7, 9)]
    assert store.events(target="nobody") == []


def test_filter_by_time_window_is_inclusive(store: EventStore) -> None:
    _fill(store)
    assert reasons(store.events(since=T0 + 7)) == ["event 7", "event 8", "event 9"]
    assert reasons(store.events(until=T0 + 2)) == ["event 0", "event 1", "event 2"]
    assert reasons(store.events(since=T0 + 3, until=T0 + 5)) == ["event 3", "event 4", "event 5"]
    assert reasons(store.events(target="a", since=T0 + 3, until=T0 + 7)) == [
        "event 4",
        "event 6",
    ]
    assert store.events(since=T0 + 100) == []
    assert store.events(since=T0 + 5, until=T0 + 4) == []


def test_limit_keeps_the_most_recent_and_returns_them_oldest_first(store: EventStore) -> None:
    _fill(store)
    assert reasons(store.events(limit=3)) == ["event 7", "event 8", "event 9"]
    assert reasons(store.events(target="a", limit=2)) == ["event 6", "event 8"]
    assert reasons(store.events(until=T0 + 4, limit=2)) == ["event 3", "event 4"]
    assert len(store.events(limit=100)) == 10
    assert store.events(limit=0) == []


def test_default_limit_is_1000(store: EventStore) -> None:
    for i in range(1005):
        store.record(change("a", State.UP, State.DOWN, f"event {i}"), T0 + i)
    rows = store.events()
    assert len(rows) == 1000
    assert rows[0].reason == "event 5"
    assert rows[-1].reason == "event 1004"


def test_last_states_picks_the_latest_event_of_every_target(store: EventStore) -> None:
    assert store.last_states() == {}
    store.record(change("a", State.UP, State.DOWN, "a down"), T0)
    store.record(change("b", State.UP, State.DRAINED, "b drained"), T0 + 1)
    store.record(change("a", State.DOWN, State.PROBING, "a probing"), T0 + 2)
    store.record(change("c", State.UP, State.SUSPECT, "c suspect"), T0 + 3)
    store.record(change("a", State.PROBING, State.UP, "a up"), T0 + 4)
    store.record(change("c", State.SUSPECT, State.DOWN, "c down", hold_down=30.0), T0 + 5, T0 + 35)
    last = store.last_states()
    assert set(last) == {"a", "b", "c"}
    assert (last["a"].new, last["a"].reason, last["a"].at) == ("UP", "a up", T0 + 4)
    assert (last["b"].new, last["b"].reason) == ("DRAINED", "b drained")
    assert (last["c"].new, last["c"].hold_down, last["c"].until) == ("DOWN", 30.0, T0 + 35)


def test_nothing_is_lost_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = EventStore(path)
    _fill(first)
    before = first.events()
    first.close()

    second = EventStore(path)
    assert second.events() == before
    assert second.last_states()["a"].reason == "event 8"
    new_id = second.record(change("a", State.DOWN, State.PROBING, "after reopen"), T0 + 20)
    assert new_id > before[-1].id
    second.close()

    third = EventStore(path)
    rows = third.events()
    assert len(rows) == 11
    assert rows[:10] == before
    assert rows[-1].reason == "after reopen"
    third.close()


def test_a_committed_event_is_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    """Each record is committed as it happens: a reader sees it while the writer is open."""
    path = tmp_path / "events.db"
    writer = EventStore(path)
    writer.record(change("a", State.UP, State.DOWN, "seen"), T0)
    reader = sqlite3.connect(path)
    try:
        assert reader.execute("SELECT target, new, reason FROM events").fetchall() == [
            ("a", "DOWN", "seen")
        ]
    finally:
        reader.close()
        writer.close()


def test_the_file_uses_the_wal_journal(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    EventStore(path).close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


def test_a_fresh_file_is_created_with_its_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "trunkguard" / "events.db"
    assert not path.parent.exists()
    store = EventStore(path)
    assert path.is_file()
    assert store.events() == []
    assert store.last_states() == {}
    store.record(change("a", State.UP, State.DOWN), T0)
    reopened = EventStore(str(path))  # a str path works as well as a Path
    assert len(reopened.events()) == 1
    reopened.close()


def test_in_memory_store_works_without_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = EventStore(":memory:")
    store.record(change("a", State.UP, State.DOWN), T0)
    assert len(store.events()) == 1
    assert list(tmp_path.iterdir()) == []
