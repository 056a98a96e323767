"""The FastAGI route advisor: ``route`` and ``report`` for dialplans that dial carriers.

The protocol (:mod:`._protocol`) and the decisions (:mod:`._advisor`) are pure;
the asyncio server (:mod:`._server`) is imported by the process that runs it.
"""

from ._advisor import Advice, PlanTable, Report, Route, advise, check_report
from ._dial import check_dial, dial_string
from ._protocol import Hangup, Malformed, Reply, Request, Session, quote, set_variable
from ._settings import AgiSettings

__all__ = [
    "Advice",
    "AgiSettings",
    "Hangup",
    "Malformed",
    "PlanTable",
    "Reply",
    "Report",
    "Request",
    "Route",
    "Session",
    "advise",
    "check_dial",
    "check_report",
    "dial_string",
    "quote",
    "set_variable",
]
