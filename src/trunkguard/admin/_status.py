"""``trunkguard status``: the admin API's view of the targets, as a table.

A client of the API like any other (it reads ``/api/targets`` and
``/api/counters``), synchronous on purpose: a command that runs once needs no
event loop. What goes wrong is said in one line, never as a traceback.

Exit codes: 0 printed; 1 no status (no router answering, token refused, an
error answer); 2 a usage error (a URL that is not http://HOST:PORT, no token).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

TIMEOUT = 5.0

_STYLES = {
    "UP": "green",
    "SUSPECT": "yellow",
    "PROBING": "cyan",
    "DOWN": "bold red",
    "DRAINED": "magenta",
    "FORCED_DOWN": "bold magenta",
}


class _NoStatus(Exception):
    pass


def status_main(url: str, token: str, *, json_out: bool = False) -> int:
    """Print the targets of the router whose admin API is at ``url``; return the exit code."""
    base = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _say(f"{url!r}: expected the admin API's URL, like http://127.0.0.1:8080")
        return 2
    if not token.strip():
        _say("no admin token: give the token from the router's config")
        return 2
    if not (token.isascii() and token.isprintable()):
        _say("the admin token must be printable ASCII")
        return 2
    try:
        listing = _get(base, "/api/targets", token.strip())
        counters = _get(base, "/api/counters", token.strip())
        targets = listing["targets"]
        if not isinstance(targets, list):
            raise TypeError
    except _NoStatus as exc:
        _say(str(exc))
        return 1
    except (KeyError, TypeError):
        _say(f"{base} did not answer like a trunkguard admin API")
        return 1
    if json_out:
        print(json.dumps({**listing, **counters}, indent=1))
        return 0
    try:
        _print(base, listing, counters)
    except (KeyError, TypeError, ValueError):
        _say(f"{base} did not answer like a trunkguard admin API")
        return 1
    return 0


def _say(message: str) -> None:
    print(f"trunkguard status: {message}", file=sys.stderr)


def _get(base: str, path: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        base + path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    # The admin API is the router's own, usually on loopback: never through a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise _NoStatus(f"token refused by {base}") from None
        raise _NoStatus(f"{base}{path} answered {exc.code}: {_error_text(exc.read())}") from None
    except urllib.error.URLError as exc:
        raise _NoStatus(_unreachable(base, exc.reason)) from None
    except TimeoutError:
        raise _NoStatus(f"no answer from {base} within {TIMEOUT:g}s") from None
    except OSError as exc:
        raise _NoStatus(f"cannot talk to {base}: {exc}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise _NoStatus(f"{base} did not answer like a trunkguard admin API") from None
    if not isinstance(data, dict):
        raise _NoStatus(f"{base} did not answer like a trunkguard admin API")
    return data


def _unreachable(base: str, reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return f"no router answering at {base} (connection refused)"
    if isinstance(reason, TimeoutError):
        return f"no answer from {base} within {TIMEOUT:g}s"
    return f"cannot reach {base}: {reason}"


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return body[:200].decode("utf-8", "replace").strip() or "no detail"


def _print(base: str, listing: dict[str, Any], counters: dict[str, Any]) -> None:
    now = datetime.fromisoformat(listing["now"])
    console = Console()
    if not console.is_terminal:
        # Piped or captured: the reasons are the point, do not squeeze them into 80 columns.
        console = Console(width=160)
    table = Table(title=f"trunkguard at {base}, {_local(now, now)}", title_justify="left")
    table.add_column("target", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("since", no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("faults in a row", justify="right")
    table.add_column("window failed/size", justify="right")
    table.add_column("trips", justify="right")
    table.add_column("hold-down left", justify="right")
    table.add_column("calls up", justify="right")
    table.add_column("timer ms", justify="right")
    for t in listing["targets"]:
        since = datetime.fromisoformat(t["since"])
        window = t["window"]
        # Text, not markup: a reason may hold brackets that rich would take for styles.
        table.add_row(
            Text(str(t["name"])),
            Text(str(t["state"]), style=_STYLES.get(str(t["state"]), "")),
            Text(f"{_local(since, now)} ({_duration(float(t['for_seconds']))})"),
            Text(str(t["reason"])),
            Text(str(t["consecutive_faults"])),
            Text(f"{window['failures']}/{window['size']}"),
            Text(str(t["trips"])),
            Text(_left(t, now)),
            Text(str(t["calls_up"])),
            Text(str(t["response_timeout_ms"])),
        )
    console.print(table)
    for carrier, reg in (listing.get("registrations") or {}).items():
        when = ""
        if reg.get("next_register_in_s") is not None:
            when = f", next REGISTER in {_duration(float(reg['next_register_in_s']))}"
        line = f"registration {carrier}: {reg.get('state')} ({reg.get('detail')}){when}"
        console.print(Text(line))
    overload = counters.get("overload") or {}
    if overload.get("refusing_pct"):
        line = f"overloaded: refusing {overload['refusing_pct']}% of new calls ({overload['why']})"
        console.print(Text(line, style="bold red"))
    for ban in (counters.get("sources") or {}).get("bans", []):
        left = _duration(float(ban["left"]))
        line = f"banned {ban['source']}: {ban['why']}, {left} left, {ban['dropped']} dropped"
        console.print(Text(line))
    ha = counters.get("ha")
    if isinstance(ha, dict):
        console.print(Text(ha_line(ha), style="" if ha.get("etcd") == "connected" else "bold red"))
    open_work = counters.get("open") or {}
    console.print(Text("open: " + _pairs(open_work)))
    totals = {k: v for k, v in (counters.get("counters") or {}).items() if v}
    console.print(Text("counters: " + (_pairs(totals) or "none yet")))


def ha_line(ha: dict[str, Any]) -> str:
    """The HA block in one line: "HA r1 (active-standby): active, epoch 7, leader r1, etcd ..."."""
    line = f"HA {ha.get('node')} ({ha.get('mode')}): {ha.get('role')}"
    if ha.get("mode") != "active-active":
        line += f", epoch {ha.get('epoch')}, leader {ha.get('leader') or 'none'}"
    line += f", etcd {ha.get('etcd')}"
    if ha.get("etcd") != "connected" and ha.get("etcd_lost_since"):
        lost = datetime.fromtimestamp(float(ha["etcd_lost_since"])).astimezone()
        line += f" since {lost.strftime('%H:%M:%S')}: routing on the last-known state"
    return line


def _left(target: dict[str, Any], now: datetime) -> str:
    if target.get("hold_down_until"):
        return _duration((datetime.fromisoformat(target["hold_down_until"]) - now).total_seconds())
    if target.get("forced_until"):
        left = (datetime.fromisoformat(target["forced_until"]) - now).total_seconds()
        return f"{_duration(left)} (revert)"
    return "-"


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items()))


def _local(when: datetime, now: datetime) -> str:
    local, today = when.astimezone(), now.astimezone()
    if local.date() == today.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
