"""VICIdial's non-agent API, ``update_campaign``: the request and the answer. Pure.

As documented in VICIdial's NON-AGENT_API.txt: a GET of ``non_agent_api.php`` with
``function=update_campaign``, ``user`` and ``pass`` (an API-enabled user of level 8 or
more with "modify campaigns"), ``source`` (what made the call, at most 20 characters),
``campaign_id`` (2-8 characters) and ``auto_dial_level`` (0 to 18, as ``3.0``). The
answer is one line of text: ``SUCCESS: update_campaign CAMPAIGN HAS BEEN UPDATED - ...``,
``NOTICE: ...`` or ``ERROR: ...``. Some of VICIdial's errors quote the user and the
password given; :func:`answer` takes the password out before anything else sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._policy import shown
from ._settings import VicidialSettings

FUNCTION = "update_campaign"
MAX_LEVEL = 18.0
_ANSWER_MAX = 300  # characters of an answer kept for the log


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    text: str  # the first line, the password taken out, shortened


def query(settings: VicidialSettings, campaign: str, level: float) -> dict[str, str]:
    """The query string's parameters, in the order VICIdial's examples give them."""
    return {
        "source": settings.source,
        "user": settings.user,
        "pass": settings.password,
        "function": FUNCTION,
        "campaign_id": campaign,
        "auto_dial_level": shown(level),
    }


def answer(body: str, password: str) -> Answer:
    """What VICIdial's answer says: SUCCESS (or a NOTICE that the update was made) or not."""
    line = body.strip().splitlines()[0].strip() if body.strip() else ""
    if password:
        line = line.replace(password, "********")
    if len(line) > _ANSWER_MAX:
        line = line[:_ANSWER_MAX] + "..."
    ok = line.startswith(f"SUCCESS: {FUNCTION} ")
    return Answer(ok, line or "(an empty answer)")
