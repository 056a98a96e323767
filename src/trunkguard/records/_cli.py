"""``trunkguard calls``: the call records as a table or JSON lines; ``--active`` for calls now.

Records come from the configured backend (the SQLite file, or PostgreSQL);
calls in progress from the running router's admin API (``GET /api/calls``).
What goes wrong is said in one line, never as a traceback; no DSN or password
is ever printed. Exit codes: 0 printed (even none), 1 nothing to read (no
file, database unreachable, no router), 2 a config problem.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import ConfigError, RouterConfig
from ._postgres import where_dsn
from ._query import CallQuery
from ._rows import CallRow, row_json
from ._setup import read_calls


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


def _say(message: str) -> None:
    print(f"trunkguard calls: {message}", file=sys.stderr)


def print_records(config: RouterConfig, query: CallQuery, *, json_out: bool) -> int:
    r = config.records
    try:
        rows = read_calls(config, query)
    except ConfigError as exc:
        for problem in exc.shown():
            print(problem, file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        _say(f"no call records at {exc} (has a router with records enabled run here?)")
        return 1
    except sqlite3.Error as exc:
        _say(f"cannot read {r.sqlite_path(config.base_dir, config.store_path())}: {exc}")
        return 1
    except Exception as exc:  # asyncpg's errors, OSError, timeouts: all say "not now"
        if r.backend != "postgresql":
            _say(f"cannot read the call records: {type(exc).__name__}: {exc}")
            return 1
        dsn, password = r.postgres_dsn(config.base_dir)
        text = str(exc) or "(no detail)"
        for secret in (dsn, password):
            if secret:
                text = text.replace(secret, "***")
        _say(f"cannot read the call records from {where_dsn(dsn)}: {type(exc).__name__}: {text}")
        return 1
    if json_out:
        out = sys.stdout
        for row in rows:
            out.write(json.dumps(row_json(row, iso)) + "\n")
        return 0
    _table(rows)
    return 0


def _attempts(row: CallRow) -> str:
    parts = []
    for a in row.attempts:
        what = str(a.status) if a.status is not None else a.kind
        parts.append(f"{a.carrier} {what}" + (f" ({a.outcome})" if a.outcome != "success" else ""))
    return " -> ".join(parts) or "-"


def _pdd(row: CallRow) -> str:
    pdds = [a.pdd for a in row.attempts if a.pdd is not None]
    return f"{pdds[-1] * 1000:.0f}" if pdds else "-"


def _table(rows: list[CallRow]) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    if not rows:
        console.print("no calls")
        return
    table = Table(title=f"{len(rows)} calls", title_justify="left")
    for name, justify in (
        ("started", "left"),
        ("call-id", "left"),
        ("number", "left"),
        ("status", "right"),
        ("carrier", "left"),
        ("attempts", "left"),
        ("pdd ms", "right"),
        ("talk s", "right"),
        ("end", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        started = datetime.fromtimestamp(row.started).strftime("%Y-%m-%d %H:%M:%S")
        talk = "-" if row.duration is None else f"{row.duration:.1f}"
        # Text, not markup: a number or a Call-ID may hold brackets.
        table.add_row(
            Text(started),
            Text(row.call_id),
            Text(row.number),
            Text(str(row.status)),
            Text(row.carrier or "-"),
            Text(_attempts(row)),
            Text(_pdd(row)),
            Text(talk),
            Text(row.end),
        )
    console.print(table)


def print_active(url: str, token: str, limit: int, *, json_out: bool) -> int:
    """The calls in progress, from the admin API at ``url``."""
    from ..admin._status import _get, _NoStatus

    base = url.strip().rstrip("/")
    try:
        data = _get(base, f"/api/calls?limit={limit}", token.strip())
        calls = data["calls"]
        if not isinstance(calls, list):
            raise TypeError
    except _NoStatus as exc:
        _say(str(exc))
        return 1
    except (KeyError, TypeError):
        _say(f"{base} did not answer like a trunkguard admin API")
        return 1
    if json_out:
        for call in calls:
            sys.stdout.write(json.dumps(call) + "\n")
        return 0
    _active_table(calls, data)
    return 0


def _active_table(calls: list[dict[str, Any]], data: dict[str, Any]) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    total = data.get("count", len(calls))
    table = Table(title=f"{total} calls in progress", title_justify="left")
    for name in ("call-id", "number", "source", "state", "target", "attempt", "for s"):
        table.add_column(name, overflow="fold")
    for c in calls:
        table.add_row(
            Text(str(c.get("call_id"))),
            Text(str(c.get("number"))),
            Text(str(c.get("source"))),
            Text(str(c.get("state"))),
            Text(str(c.get("target") or "-")),
            Text(str(c.get("attempt"))),
            Text(f"{float(c.get('for_seconds') or 0):.1f}"),
        )
    console.print(table)
