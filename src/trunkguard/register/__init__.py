"""Outbound registration to carriers, with digest credentials, feeding their health."""

from ..proxy import Alarm, RegistrationEvent
from ._client import (
    FAILED,
    REGISTERED,
    REGISTERING,
    STOPPED,
    UNREGISTERED,
    RegisterSettings,
    Registration,
    Registrations,
)

__all__ = [
    "FAILED",
    "REGISTERED",
    "REGISTERING",
    "STOPPED",
    "UNREGISTERED",
    "Alarm",
    "RegisterSettings",
    "Registration",
    "RegistrationEvent",
    "Registrations",
]
