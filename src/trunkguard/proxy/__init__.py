"""The stateful SIP proxy: a sans-IO core (``Proxy``) and its asyncio adapter (``Router``)."""

from ._call import Call, select_final
from ._core import ActiveCall, CoreEvent, Proxy
from ._types import (
    Alarm,
    AttemptRecord,
    CallRecord,
    Flow,
    Plan,
    ProxySettings,
    RegistrationEvent,
    Target,
)

__all__ = [
    "ActiveCall",
    "Alarm",
    "AttemptRecord",
    "Call",
    "CallRecord",
    "CoreEvent",
    "Flow",
    "Plan",
    "Proxy",
    "ProxySettings",
    "RegistrationEvent",
    "Target",
    "select_final",
]
