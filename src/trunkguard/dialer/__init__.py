"""Feedback to the dialer: when the healthy capacity for a campaign's destinations falls,
ask the dialer to slow down (VICIdial's ``update_campaign``, or a webhook); when it
returns, restore the setting. The controller is pure; ``_service`` and ``_sinks`` are
the asyncio adapter (imported by the router only when it runs)."""

from ._policy import Capacity, DialController, LevelChange, capacity, level_for, shown
from ._settings import (
    VICIDIAL,
    WEBHOOK,
    CampaignSettings,
    DialerSettings,
    Step,
    VicidialSettings,
    WebhookSettings,
    describe,
    origin,
)
from ._vicidial import Answer, answer, query

__all__ = [
    "VICIDIAL",
    "WEBHOOK",
    "Answer",
    "CampaignSettings",
    "Capacity",
    "DialController",
    "DialerSettings",
    "LevelChange",
    "Step",
    "VicidialSettings",
    "WebhookSettings",
    "answer",
    "capacity",
    "describe",
    "level_for",
    "origin",
    "query",
    "shown",
]
