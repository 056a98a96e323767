"""The admin API (aiohttp, in the router's process) and ``trunkguard status``, its client.

Endpoints, all JSON, all behind ``Authorization: Bearer <token>`` (401 without):

- ``GET /api/health``: ``{"ok": true}``
- ``GET /api/targets``: ``{"targets": [...], "now": ISO}``; each target has its
  state, since (ISO), for_seconds, reason, consecutive_faults, window
  (failures, size), trips, hold_down_until, forced_until, calls_up,
  response_timeout_ms, attempts, faults
- ``GET /api/targets/{name}``: one target; 404 for a name not configured
- ``POST /api/targets/{name}/force-down`` with ``{"seconds": 1-86400, "reason": "..."}``,
  ``POST /api/targets/{name}/drain``, ``POST /api/targets/{name}/restore``:
  ``{"changes": [...], "target": {...}}``; 409 when the state table has no such move
- ``GET /api/events?target=&since=&until=&limit=``: ``{"events": [...]}``, oldest
  first; since/until as Unix seconds or ISO, limit 1-1000 (default 100)
- ``GET /api/counters``: ``{"counters": {...}, "open": {...}, "active": {...}}``
- ``GET /metrics``: Prometheus text (OpenMetrics when asked), see docs/metrics.md
- the dashboard (docs/dashboard.md): ``GET /`` the page, ``GET|POST /login``,
  ``POST /logout``, ``GET /api/stream`` (Server-Sent Events), ``GET /api/dashboard``,
  ``GET /api/failovers``, ``POST /api/login-links`` (a one-time login link)

Bad input is a 400 whose ``error`` names the field. Times are ISO 8601 in UTC.
"""

from ._api import AdminServer, AdminSettings, build_app, start_admin
from ._status import status_main

__all__ = ["AdminServer", "AdminSettings", "build_app", "start_admin", "status_main"]
