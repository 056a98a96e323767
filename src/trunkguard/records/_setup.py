"""From the config to a recorder on the runtime, and to the backend ``trunkguard calls`` reads."""

from __future__ import annotations

import asyncio
import logging

from ..config import RouterConfig
from ..runtime import Runtime
from ._postgres import PostgresWriter, read_postgres
from ._query import CallQuery
from ._recorder import Recorder, RecorderSettings, RecordWriter
from ._rows import CallRow
from ._sqlite import SqliteWriter, read_sqlite

log = logging.getLogger("trunkguard.records")

FLUSH_WAIT = 5.0  # seconds a shutdown waits for the records still in the buffer


def writer_for(config: RouterConfig) -> RecordWriter:
    """The configured backend; ConfigError if its DSN or password cannot be read."""
    r = config.records
    if r.backend == "postgresql":
        dsn, password = r.postgres_dsn(config.base_dir)
        return PostgresWriter(dsn, password)
    return SqliteWriter(r.sqlite_path(config.base_dir, config.store_path()))


def start_recorder(
    config: RouterConfig, runtime: Runtime, loop: asyncio.AbstractEventLoop
) -> Recorder | None:
    """Subscribe a recorder to the runtime's events and start its thread (None: disabled).

    Call after ``runtime.start``: that is when the runtime knows its clock's offset.
    """
    r = config.records
    if not r.enabled:
        log.info("call records: off (records.enabled is false)")
        return None
    recorder = Recorder(
        writer_for(config),
        RecorderSettings(
            batch=r.batch,
            flush_interval=r.flush_interval,
            max_queue=r.max_queue,
            retention=r.retention_seconds(),
        ),
        runtime.proxy.counters,
        offset=runtime._wall(0.0),
    )
    runtime.listeners.append(recorder.feed)
    recorder.start(loop)
    keep = f"kept {r.retention}" if r.retention else "kept forever"
    log.info("call records: to %s, %s", recorder.writer.name, keep)
    return recorder


def read_calls(config: RouterConfig, query: CallQuery) -> list[CallRow]:
    """The records ``query`` selects from the configured backend, oldest first.

    Raises ConfigError (no DSN), FileNotFoundError (no SQLite file yet), or the
    backend's own errors (sqlite3.Error, OSError, asyncpg's).
    """
    r = config.records
    if r.backend == "postgresql":
        dsn, password = r.postgres_dsn(config.base_dir)
        return asyncio.run(read_postgres(dsn, password, query))
    path = r.sqlite_path(config.base_dir, config.store_path())
    if not path.exists():
        raise FileNotFoundError(str(path))
    return read_sqlite(path, query)
