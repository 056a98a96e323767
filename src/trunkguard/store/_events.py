"""The event log: every target state change, with its reason, in SQLite.

Each change is committed as it happens (WAL journal), so a crash loses
nothing already logged, and the router restores target states from the last
event of each target when it starts. Times are wall-clock (Unix seconds):
they must mean the same thing after a restart.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..health import StateChange

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    target TEXT NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    reason TEXT NOT NULL,
    counts TEXT NOT NULL,
    hold_down REAL,
    until REAL
);
CREATE INDEX IF NOT EXISTS events_target_at ON events (target, at);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notices_at ON notices (at);
"""


@dataclass(frozen=True, slots=True)
class NoticeRow:
    """A registration change or an alarm: what happened to a carrier besides its state."""

    id: int
    at: float
    target: str
    kind: str  # "registration" or "alarm"
    state: str  # REGISTERED, FAILED... for a registration; the alarm's kind for an alarm
    detail: str


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    at: float
    target: str
    old: str
    new: str
    reason: str
    counts: dict[str, int]
    hold_down: float | None
    until: float | None  # end of the hold-down or of a forced-down period, wall clock


class EventStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def record(self, change: StateChange, wall: float, until: float | None = None) -> int:
        """Store one change; ``wall`` is its time on the wall clock."""
        cur = self._db.execute(
            "INSERT INTO events (at, target, old, new, reason, counts, hold_down, until)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                wall,
                change.target,
                change.old.value,
                change.new.value,
                change.reason,
                json.dumps(change.counts, sort_keys=True),
                change.hold_down,
                until,
            ),
        )
        return int(cur.lastrowid or 0)

    def events(
        self,
        target: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[EventRow]:
        """Events, oldest first, filtered by target and wall-clock time."""
        where: list[str] = []
        args: list[object] = []
        if target is not None:
            where.append("target = ?")
            args.append(target)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at <= ?")
            args.append(until)
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_row(r) for r in reversed(rows)]

    def last_states(self) -> dict[str, EventRow]:
        """The latest event of every target: what it was in when the router stopped."""
        rows = self._db.execute(
            "SELECT * FROM events WHERE id IN (SELECT MAX(id) FROM events GROUP BY target)"
        ).fetchall()
        return {r[2]: _row(r) for r in rows}

    def record_notice(self, target: str, kind: str, state: str, detail: str, wall: float) -> int:
        cur = self._db.execute(
            "INSERT INTO notices (at, target, kind, state, detail) VALUES (?, ?, ?, ?, ?)",
            (wall, target, kind, state, detail),
        )
        return int(cur.lastrowid or 0)

    def notices(
        self, target: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[NoticeRow]:
        """Registration changes and alarms, oldest first."""
        where: list[str] = []
        args: list[object] = []
        if target is not None:
            where.append("(target = ? OR ? LIKE target || '/%')")
            args += [target, target]
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        sql = "SELECT id, at, target, kind, state, detail FROM notices"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [
            NoticeRow(int(r[0]), float(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]))
            for r in reversed(rows)
        ]

    def close(self) -> None:
        self._db.close()


def _row(r: tuple[object, ...]) -> EventRow:
    id_, at, target, old, new, reason, counts, hold_down, until = r
    return EventRow(
        id=int(str(id_)),
        at=float(str(at)),
        target=str(target),
        old=str(old),
        new=str(new),
        reason=str(reason),
        counts=json.loads(str(counts)),
        hold_down=None if hold_down is None else float(str(hold_down)),
        until=None if until is None else float(str(until)),
    )
