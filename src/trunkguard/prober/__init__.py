"""SIP OPTIONS keepalives per target, feeding the health engine."""

from ._prober import Prober, ProbeSettings

__all__ = ["ProbeSettings", "Prober"]
