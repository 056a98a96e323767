"""Alerts: webhook and command hooks on target state changes, every route degraded, and
overload, with flap damping and a rate limit. The policy is pure; ``_service`` is the
asyncio adapter (imported by the router only when it runs)."""

from ._payload import alert_body, alert_text, describe_hooks
from ._policy import (
    DEGRADED,
    EVENTS,
    KINDS,
    OVERLOAD,
    STATE,
    Alert,
    AlertPolicy,
    DampingSettings,
)
from ._settings import COMMAND, FORMATS, WEBHOOK, AlertSettings, HookSettings

__all__ = [
    "COMMAND",
    "DEGRADED",
    "EVENTS",
    "FORMATS",
    "KINDS",
    "OVERLOAD",
    "STATE",
    "WEBHOOK",
    "Alert",
    "AlertPolicy",
    "AlertSettings",
    "DampingSettings",
    "HookSettings",
    "alert_body",
    "alert_text",
    "describe_hooks",
]
