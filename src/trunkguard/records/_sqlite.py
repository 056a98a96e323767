"""Call records in SQLite: the default, a file beside the event log.

The writer runs in the recorder's thread: WAL journal, one transaction per batch
(``executemany`` for the calls, then for their attempts). Keys are integers the
writer hands out from the largest one in the file: one router writes one file.
Times are Unix seconds (REAL), the plan a JSON array of target names.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ._query import CallQuery, clean_text, like_pattern
from ._rows import AttemptRow, CallRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    record_id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    number TEXT NOT NULL,
    source TEXT NOT NULL,
    plan TEXT NOT NULL,
    status INTEGER NOT NULL,
    carrier TEXT,
    started REAL NOT NULL,
    answered REAL,
    ended REAL NOT NULL,
    duration REAL,
    end_reason TEXT NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started);
CREATE INDEX IF NOT EXISTS calls_call_id ON calls (call_id);
CREATE TABLE IF NOT EXISTS call_attempts (
    record_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    target TEXT NOT NULL,
    carrier TEXT NOT NULL,
    status INTEGER,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    failover INTEGER NOT NULL,
    started REAL NOT NULL,
    ended REAL NOT NULL,
    pdd REAL,
    duration REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS call_attempts_record ON call_attempts (record_id);
CREATE INDEX IF NOT EXISTS call_attempts_carrier ON call_attempts (carrier, started);
"""

_CALL = (
    "INSERT INTO calls (record_id, call_id, number, source, plan, status, carrier, started,"
    " answered, ended, duration, end_reason, attempts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_ATTEMPT = (
    "INSERT INTO call_attempts (record_id, attempt, target, carrier, status, kind, outcome,"
    " failover, started, ended, pdd, duration) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
PRUNE_CHUNK = 10_000  # calls deleted per transaction: the writer never holds the file long


class SqliteWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"sqlite {self.path}"
        self._db: sqlite3.Connection | None = None
        self._next = 1

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            (top,) = db.execute("SELECT coalesce(max(record_id), 0) FROM calls").fetchone()
        except BaseException:
            db.close()
            raise
        self._db = db
        self._next = int(top) + 1

    def write(self, rows: Sequence[CallRow]) -> None:
        db = self._db
        assert db is not None, "open() first"
        calls = []
        attempts = []
        key = self._next
        for row in rows:
            calls.append(
                (
                    key,
                    clean_text(row.call_id),
                    clean_text(row.number),
                    clean_text(row.source),
                    json.dumps(row.plan),
                    row.status,
                    row.carrier,
                    row.started,
                    row.answered,
                    row.ended,
                    row.duration,
                    clean_text(row.end),
                    len(row.attempts),
                )
            )
            for a in row.attempts:
                attempts.append(
                    (
                        key,
                        a.attempt,
                        a.target,
                        a.carrier,
                        a.status,
                        a.kind,
                        a.outcome,
                        int(a.failover),
                        a.started,
                        a.ended,
                        a.pdd,
                        a.duration,
                    )
                )
            key += 1
        db.execute("BEGIN")
        try:
            db.executemany(_CALL, calls)
            db.executemany(_ATTEMPT, attempts)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self._next = key

    def prune(self, before: float) -> int:
        """Delete the calls that started before ``before`` (and their attempts); how many."""
        db = self._db
        assert db is not None, "open() first"
        old = (
            "SELECT record_id FROM calls WHERE started < ? ORDER BY started, record_id LIMIT ?"
        )
        total = 0
        while True:
            db.execute("BEGIN")
            try:
                db.execute(
                    f"DELETE FROM call_attempts WHERE record_id IN ({old})", (before, PRUNE_CHUNK)
                )
                n = db.execute(
                    f"DELETE FROM calls WHERE record_id IN ({old})", (before, PRUNE_CHUNK)
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            total += n
            if n < PRUNE_CHUNK:
                return total

    @staticmethod
    def refused(exc: BaseException) -> bool:
        """Whether the rows themselves, not the file, made the write fail."""
        return isinstance(exc, sqlite3.IntegrityError | sqlite3.InterfaceError | ValueError)

    @staticmethod
    def describe(exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


def read_sqlite(path: str | Path, query: CallQuery) -> list[CallRow]:
    """The calls ``query`` selects from the file at ``path``, oldest first (read-only)."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        where, args = _where(query)
        rows = db.execute(
            "SELECT record_id, call_id, number, source, plan, status, carrier, started,"
            f" answered, ended, end_reason FROM calls c {where}"
            " ORDER BY started DESC, record_id DESC LIMIT ?",
            (*args, query.limit),
        ).fetchall()
        attempts: dict[int, list[AttemptRow]] = {}
        keys = [r[0] for r in rows]
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for a in db.execute(
                "SELECT record_id, attempt, target, carrier, status, kind, outcome, failover,"
                f" started, ended, pdd FROM call_attempts WHERE record_id IN ({marks})"
                " ORDER BY record_id, attempt",
                chunk,
            ):
                attempts.setdefault(a[0], []).append(
                    AttemptRow(a[1], a[2], a[3], a[4], a[5], a[6], bool(a[7]), a[8], a[9], a[10])
                )
    finally:
        db.close()
    out = [
        CallRow(
            r[1],
            r[2],
            r[3],
            tuple(json.loads(r[4])),
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            tuple(attempts.get(r[0], ())),
        )
        for r in rows
    ]
    out.reverse()
    return out


def _where(query: CallQuery) -> tuple[str, list[object]]:
    parts: list[str] = []
    args: list[object] = []
    if query.since is not None:
        parts.append("started >= ?")
        args.append(query.since)
    if query.until is not None:
        parts.append("started <= ?")
        args.append(query.until)
    if query.number:
        parts.append("number LIKE ? ESCAPE '\\'")
        args.append(like_pattern(query.number))
    if query.status is not None:
        parts.append("status = ?")
        args.append(query.status)
    if query.carrier:
        parts.append(
            "EXISTS (SELECT 1 FROM call_attempts a WHERE a.record_id = c.record_id"
            " AND a.carrier = ?)"
        )
        args.append(query.carrier)
    return ("WHERE " + " AND ".join(parts) if parts else ""), args
