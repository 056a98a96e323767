"""Durable records: the state-change event log (SQLite, embedded)."""

from ._events import EventRow, EventStore, NoticeRow

__all__ = ["EventRow", "EventStore", "NoticeRow"]
