"""The stateful SIP proxy: a sans-IO core (``Proxy``) and its asyncio adapter (``Router``)."""

from ._call import Call, select_final
from ._core import Proxy
from ._types import AttemptRecord, Flow, Plan, ProxySettings, Target

__all__ = [
    "AttemptRecord",
    "Call",
    "Flow",
    "Plan",
    "Proxy",
    "ProxySettings",
    "Target",
    "select_final",
]
