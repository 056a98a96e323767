"""What a hook receives: the JSON body of a webhook, a command's arguments and TG_* variables.

Pure: the wall-clock time of the alert and the router's names come in.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ._policy import DEGRADED, EV_FLAPPING, OVERLOAD, Alert
from ._settings import COMMAND, AlertSettings

SCHEMA = 1
# PATH for a command: the router's own environment is not passed on (it may hold secrets).
COMMAND_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_IN_SERVICE = frozenset({"UP", "OK"})
_WARNING = frozenset({"SUSPECT", "PROBING", "DRAINED"})


def webhook_origin(url: str) -> str:
    """``https://hooks.example.com``: what the logs say of a webhook's URL (for Slack, the
    path is the secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def describe_hooks(settings: AlertSettings) -> str:
    """``slack (webhook https://hooks.slack.com), page (command /usr/local/bin/page)``."""
    return ", ".join(
        f"{h.name} ({h.type} {h.argv[0] if h.type == COMMAND else webhook_origin(h.url)})"
        for h in settings.hooks
    )


def iso_utc(wall: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z: ``2024-05-01T12:00:00.123Z``."""
    text = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def alert_text(alert: Alert, router: str) -> str:
    """One line for a person (chat message, page summary, log)."""
    if alert.event == EV_FLAPPING:
        line = alert.reason
    elif alert.kind == DEGRADED:
        line = (
            f"every route degraded: {alert.reason}"
            if alert.new == "DEGRADED"
            else f"routes recovered: {alert.reason}"
        )
    elif alert.kind == OVERLOAD:
        what = "overloaded" if alert.new == "OVERLOADED" else "overload over"
        line = f"router {what}: {alert.reason}"
    else:
        line = f"{alert.target}: {alert.old} -> {alert.new}: {alert.reason}"
    if alert.damped:
        line += " (flapping: further alerts held, a summary follows)"
    if alert.replaced:
        line += f" ({alert.replaced} earlier alerts replaced by the rate limit)"
    return f"[{router}] {line}"


def severity(alert: Alert) -> str:
    """critical, error, warning or info (PagerDuty's words)."""
    if alert.new in _IN_SERVICE:
        return "info"
    if alert.kind == DEGRADED:
        return "critical"
    if alert.new in _WARNING:
        return "warning"
    return "error"


def alert_body(alert: Alert, wall: float, router: str, host: str) -> dict[str, Any]:
    """The JSON document every hook gets (a webhook as its body, a command in TG_JSON)."""
    return {
        "schema": SCHEMA,
        "event": alert.event,
        "kind": alert.kind,
        "target": alert.target,
        "old": alert.old,
        "new": alert.new,
        "reason": alert.reason,
        "at": iso_utc(wall),
        "router": router,
        "host": host,
        "severity": severity(alert),
        "text": alert_text(alert, router),
        "counts": dict(alert.counts),
        "damped": alert.damped,
        "flapping": {
            "changes": alert.changes,
            "flaps": alert.flaps,
            "over_s": round(alert.over, 3),
        },
        "replaced": alert.replaced,
    }


def slack_body(body: dict[str, Any]) -> dict[str, Any]:
    """A Slack (or Mattermost, Rocket.Chat) incoming webhook's message."""
    return {"text": body["text"]}


def pagerduty_body(body: dict[str, Any], routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: trigger while out of service, resolve when back."""
    subject = body["target"] or body["kind"]
    return {
        "routing_key": routing_key,
        "event_action": "resolve" if body["new"] in _IN_SERVICE else "trigger",
        "dedup_key": f"trunkguard/{body['router']}/{subject}",
        "payload": {
            "summary": body["text"][:1024],
            "source": body["host"],
            "severity": body["severity"],
            "timestamp": body["at"],
            "component": subject,
            "group": body["kind"],
            "custom_details": body,
        },
    }


def command_args(body: dict[str, Any]) -> list[str]:
    """What follows the hook's own argv, as keepalived's notify: event target old new reason."""
    return [body["event"], body["target"] or "", body["old"], body["new"], body["reason"]]


def command_env(
    body: dict[str, Any], extra: tuple[tuple[str, str], ...], secret: str | None
) -> dict[str, str]:
    env = {
        "PATH": COMMAND_PATH,
        "LANG": "C.UTF-8",
        "TG_EVENT": body["event"],
        "TG_KIND": body["kind"],
        "TG_TARGET": body["target"] or "",
        "TG_OLD": body["old"],
        "TG_NEW": body["new"],
        "TG_REASON": body["reason"],
        "TG_AT": body["at"],
        "TG_ROUTER": body["router"],
        "TG_HOST": body["host"],
        "TG_SEVERITY": body["severity"],
        "TG_TEXT": body["text"],
        "TG_DAMPED": "1" if body["damped"] else "0",
        "TG_CHANGES": str(body["flapping"]["changes"]),
        "TG_FLAPS": str(body["flapping"]["flaps"]),
        "TG_JSON": json.dumps(body, separators=(",", ":")),
    }
    env.update(extra)
    if secret is not None:
        env["TG_SECRET"] = secret
    return env
