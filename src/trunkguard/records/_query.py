"""What ``trunkguard calls`` asks of the records: the filters, the same for every backend."""

from __future__ import annotations

from dataclasses import dataclass

LIMIT_DEFAULT = 1000
LIMIT_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class CallQuery:
    """Calls that started in ``[since, until]`` (wall clock), most recent ``limit`` of them.

    ``number`` matches anywhere in the number (``1212`` finds ``441212555``);
    ``carrier`` keeps the calls with at least one attempt at that carrier (the one
    that answered or one it failed over from); ``status`` is the caller's final status.
    """

    since: float | None = None
    until: float | None = None
    number: str | None = None
    carrier: str | None = None
    status: int | None = None
    limit: int = LIMIT_DEFAULT


def like_pattern(text: str) -> str:
    """``text`` as a LIKE pattern that matches it anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def clean_text(text: str) -> str:
    """``text`` as any database takes it: valid UTF-8, no NUL (PostgreSQL refuses both)."""
    if text.isascii() and "\x00" not in text:
        return text
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe.replace("\x00", "\\x00")
