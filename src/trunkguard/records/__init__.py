"""Call records: one row per call with its attempts, written off the event loop in batches.

SQLite (a file beside the event log) by default, PostgreSQL (asyncpg, COPY) when
configured; read back by ``trunkguard calls``. See docs/call-records.md.
"""

from ._buffer import RecordBuffer
from ._postgres import PostgresWriter, read_postgres
from ._query import CallQuery
from ._recorder import COUNTERS, Recorder, RecorderSettings, RecordWriter
from ._rows import AttemptRow, CallRow, call_row, row_json
from ._sqlite import SqliteWriter, read_sqlite

__all__ = [
    "COUNTERS",
    "AttemptRow",
    "CallQuery",
    "CallRow",
    "PostgresWriter",
    "RecordBuffer",
    "RecordWriter",
    "Recorder",
    "RecorderSettings",
    "SqliteWriter",
    "call_row",
    "read_postgres",
    "read_sqlite",
    "row_json",
]
