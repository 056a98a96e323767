"""The carrier simulator: a SIP endpoint of our own code that answers like a carrier.

Its mode (healthy, reject, blackhole, options-only, slow, flap, killed,
registrar-silent) can change while it runs, in process
(:meth:`SimCarrier.set_mode`), over HTTP (:func:`serve_control`) or from the
command line (``trunkguard sim-carrier``, :func:`main`). Given an account
(:class:`RegistrarConfig`) it is a registrar too: REGISTER with digest, and
403 to INVITEs while nobody is registered. It counts what it received and
answered, and names itself in an ``X-Sim-Carrier`` header on every response.

The pieces, one idea each: ``_carrier_mode`` (modes, flap schedule),
``_carrier_core`` (sans-IO answering), ``_carrier_counters``,
``_carrier_wire`` (responses), ``_carrier_registrar`` (REGISTER and digest),
``_carrier_udp`` (asyncio adapter),
``_carrier_control`` (HTTP), ``_carrier_cli`` (the command).
"""

from ._carrier_cli import main
from ._carrier_control import serve_control
from ._carrier_core import CarrierCore, Datagram
from ._carrier_mode import MODE_NAMES, Mode, ModeError, mode_from_json
from ._carrier_registrar import Registrar, RegistrarConfig
from ._carrier_udp import SimCarrier

__all__ = [
    "MODE_NAMES",
    "CarrierCore",
    "Datagram",
    "Mode",
    "ModeError",
    "Registrar",
    "RegistrarConfig",
    "SimCarrier",
    "main",
    "mode_from_json",
    "serve_control",
]
