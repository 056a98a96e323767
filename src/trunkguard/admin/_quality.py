"""``GET /api/quality``: the live quality figures and demotions, per destination group.

``?number=15551234567`` narrows it to that number's group. Without quality on,
``enabled`` is false and there is nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..runtime import Runtime

MAX_NUMBER = 32


class BadQuery(ValueError):
    """A query the endpoint refuses with 400; the message names the field."""


def quality_view(runtime: Runtime, query: Mapping[str, str], now: float) -> dict[str, object]:
    tracker = runtime.quality
    number = query.get("number")
    if number is not None:
        digits = number.removeprefix("+")
        if not digits.isascii() or not digits.isdigit() or not 1 <= len(digits) <= MAX_NUMBER:
            raise BadQuery(f"number: expected up to {MAX_NUMBER} digits")
        number = digits
    if tracker is None:
        return {"enabled": False}
    group = tracker.group_of(number) if number is not None else None
    return {
        "enabled": True,
        "window_s": tracker.settings.window,
        "group": group,
        "groups": tracker.snapshot(group, now),
        "demoted": [{"carrier": c, "group": g, "why": why} for c, g, why in tracker.demoted()],
    }
