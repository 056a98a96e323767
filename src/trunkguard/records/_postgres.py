"""Call records in PostgreSQL, through asyncpg with batched COPY.

The writer lives in the recorder's thread, with an event loop of its own: a
database that is slow to connect, to answer or to take a COPY costs the router's
loop nothing at all. One connection; the two tables are made if missing; each
batch is one transaction of two COPYs (the calls, then their attempts). Keys are
UUIDs made here, so that several routers (an active/standby pair) can share the
tables. Times are ``timestamptz``, the plan a ``text[]``.

The DSN may carry a password; it and the password are never logged: errors are
reported with both blanked out.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed

from ._query import CallQuery, clean_text, like_pattern
from ._rows import AttemptRow, CallRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    record_id uuid PRIMARY KEY,
    call_id text NOT NULL,
    number text NOT NULL,
    source text NOT NULL,
    plan text[] NOT NULL,
    status smallint NOT NULL,
    carrier text,
    started timestamptz NOT NULL,
    answered timestamptz,
    ended timestamptz NOT NULL,
    duration double precision,
    end_reason text NOT NULL,
    attempts smallint NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started);
CREATE INDEX IF NOT EXISTS calls_call_id ON calls (call_id);
CREATE TABLE IF NOT EXISTS call_attempts (
    record_id uuid NOT NULL,
    attempt smallint NOT NULL,
    target text NOT NULL,
    carrier text NOT NULL,
    status smallint,
    kind text NOT NULL,
    outcome text NOT NULL,
    failover boolean NOT NULL,
    started timestamptz NOT NULL,
    ended timestamptz NOT NULL,
    pdd double precision,
    duration double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS call_attempts_record ON call_attempts (record_id);
CREATE INDEX IF NOT EXISTS call_attempts_carrier ON call_attempts (carrier, started);
"""

CALL_COLUMNS = (
    "record_id", "call_id", "number", "source", "plan", "status", "carrier", "started",
    "answered", "ended", "duration", "end_reason", "attempts",
)  # fmt: skip
ATTEMPT_COLUMNS = (
    "record_id", "attempt", "target", "carrier", "status", "kind", "outcome", "failover",
    "started", "ended", "pdd", "duration",
)  # fmt: skip
PRUNE_CHUNK = 10_000
CONNECT_TIMEOUT = 5.0  # seconds
COMMAND_TIMEOUT = 15.0  # a COPY or a query that takes longer is given up (and retried)

_T = TypeVar("_T")


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _ts_or_none(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def where_dsn(dsn: str) -> str:
    """``host:port/database`` of a DSN, for the logs: no user, no password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "postgresql"
    db = parts.path.lstrip("/") or "(default database)"
    return f"postgresql {host}:{port}/{db}"


def calls_tuples(rows: Sequence[CallRow]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows as COPY records for the two tables, each call with a new UUID."""
    calls: list[tuple[Any, ...]] = []
    attempts: list[tuple[Any, ...]] = []
    for row in rows:
        key = uuid.uuid4()
        calls.append(
            (
                key,
                clean_text(row.call_id),
                clean_text(row.number),
                clean_text(row.source),
                list(row.plan),
                row.status,
                row.carrier,
                _ts(row.started),
                _ts_or_none(row.answered),
                _ts(row.ended),
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
                    a.failover,
                    _ts(a.started),
                    _ts(a.ended),
                    a.pdd,
                    a.duration,
                )
            )
    return calls, attempts


class PostgresWriter:
    def __init__(self, dsn: str, password: str | None = None) -> None:
        self._dsn = dsn
        self._password = password
        self.name = where_dsn(dsn)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: asyncpg.Connection | None = None

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def open(self) -> None:
        self._conn = self._run(self._open())

    async def _open(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self._dsn,
            password=self._password,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            server_settings={"application_name": "trunkguard"},
        )
        try:
            await conn.execute(SCHEMA)
        except BaseException:
            conn.terminate()
            raise
        return conn

    def write(self, rows: Sequence[CallRow]) -> None:
        self._run(self._copy(rows))

    async def _copy(self, rows: Sequence[CallRow]) -> None:
        conn = self._conn
        assert conn is not None, "open() first"
        calls, attempts = calls_tuples(rows)
        async with conn.transaction():
            await conn.copy_records_to_table("calls", records=calls, columns=CALL_COLUMNS)
            if attempts:
                await conn.copy_records_to_table(
                    "call_attempts", records=attempts, columns=ATTEMPT_COLUMNS
                )

    def prune(self, before: float) -> int:
        return self._run(self._prune(before))

    async def _prune(self, before: float) -> int:
        conn = self._conn
        assert conn is not None, "open() first"
        total = 0
        while True:
            status = await conn.execute(
                "WITH old AS (SELECT record_id FROM calls WHERE started < $1 LIMIT $2),"
                " gone AS (DELETE FROM call_attempts WHERE record_id IN"
                " (SELECT record_id FROM old))"
                " DELETE FROM calls WHERE record_id IN (SELECT record_id FROM old)",
                _ts(before),
                PRUNE_CHUNK,
            )
            n = int(status.rsplit(" ", 1)[-1])
            total += n
            if n < PRUNE_CHUNK:
                return total

    @staticmethod
    def refused(exc: BaseException) -> bool:
        """Whether the rows themselves (a value the database refuses), not the link, failed."""
        return isinstance(
            exc,
            asyncpg.DataError | asyncpg.IntegrityConstraintViolationError | ValueError | TypeError,
        ) and not isinstance(exc, asyncpg.InterfaceError | OSError)

    def describe(self, exc: BaseException) -> str:
        text = str(exc) or "(no detail)"
        for secret in (self._dsn, self._password):
            if secret:
                text = text.replace(secret, "***")
        return f"{type(exc).__name__}: {text}"

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._loop is not None:
            try:
                self._run(conn.close(timeout=2.0))
            except Exception:
                conn.terminate()

    def shutdown(self) -> None:
        """close(), and the writer's own event loop with it."""
        self.close()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            self._loop = None


async def read_postgres(dsn: str, password: str | None, query: CallQuery) -> list[CallRow]:
    """The calls ``query`` selects, oldest first."""
    conn = await asyncpg.connect(
        dsn, password=password, timeout=CONNECT_TIMEOUT, command_timeout=60.0
    )
    try:
        where, args = _where(query)
        rows = await conn.fetch(
            "SELECT record_id, call_id, number, source, plan, status, carrier,"
            " extract(epoch from started)::float8 AS started,"
            " extract(epoch from answered)::float8 AS answered,"
            f" extract(epoch from ended)::float8 AS ended, end_reason FROM calls c {where}"
            f" ORDER BY started DESC, record_id DESC LIMIT ${len(args) + 1}",
            *args,
            query.limit,
        )
        keys = [r["record_id"] for r in rows]
        attempts: dict[uuid.UUID, list[AttemptRow]] = {}
        if keys:
            for a in await conn.fetch(
                "SELECT record_id, attempt, target, carrier, status, kind, outcome, failover,"
                " extract(epoch from started)::float8 AS started,"
                " extract(epoch from ended)::float8 AS ended, pdd FROM call_attempts"
                " WHERE record_id = ANY($1::uuid[]) ORDER BY record_id, attempt",
                keys,
            ):
                attempts.setdefault(a["record_id"], []).append(
                    AttemptRow(
                        a["attempt"],
                        a["target"],
                        a["carrier"],
                        a["status"],
                        a["kind"],
                        a["outcome"],
                        a["failover"],
                        a["started"],
                        a["ended"],
                        a["pdd"],
                    )
                )
    finally:
        await conn.close(timeout=5.0)
    out = [
        CallRow(
            r["call_id"],
            r["number"],
            r["source"],
            tuple(r["plan"]),
            r["status"],
            r["carrier"],
            r["started"],
            r["answered"],
            r["ended"],
            r["end_reason"],
            tuple(attempts.get(r["record_id"], ())),
        )
        for r in rows
    ]
    out.reverse()
    return out


def _where(query: CallQuery) -> tuple[str, list[object]]:
    parts: list[str] = []
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.since is not None:
        parts.append(f"started >= {arg(_ts(query.since))}")
    if query.until is not None:
        parts.append(f"started <= {arg(_ts(query.until))}")
    if query.number:
        parts.append(f"number LIKE {arg(like_pattern(query.number))} ESCAPE '\\'")
    if query.status is not None:
        parts.append(f"status = {arg(query.status)}")
    if query.carrier:
        parts.append(
            "EXISTS (SELECT 1 FROM call_attempts a WHERE a.record_id = c.record_id"
            f" AND a.carrier = {arg(query.carrier)})"
        )
    return ("WHERE " + " AND ".join(parts) if parts else ""), args
