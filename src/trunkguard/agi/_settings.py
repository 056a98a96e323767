"""The FastAGI advisor's settings, as config's ``agi:`` section gives them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AgiSettings:
    host: str = "127.0.0.1"
    port: int = 4578
    max_sessions: int = 1000
    session_timeout: float = 10.0
    max_line: int = 1024
    max_header: int = 16384
    max_routes: int = 10
    plans: int = 100_000
    plan_ttl: float = 3600.0
