"""The simulated carriers' HTTP control interface: read counters, change a carrier's mode.

=====  ========================  ===============================================
GET    /carriers                 ``{name: counters}`` for every carrier
GET    /carriers/{name}          that carrier's counters
PUT    /carriers/{name}/mode     body ``{"name": "reject", "code": 503, ...}``:
                                 the new mode, at once; answers the counters
=====  ========================  ===============================================

A bad body is a 400 whose JSON ``error`` says which field and why; an unknown
carrier is a 404. Anyone who can reach it can break the carriers, so it
listens on loopback only unless ``allow_remote`` says otherwise.
"""

from __future__ import annotations

import ipaddress
import json

from aiohttp import web

from ._carrier_mode import ModeError, mode_from_json
from ._carrier_udp import SimCarrier

CARRIERS = web.AppKey("carriers", dict[str, SimCarrier])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _carrier(request: web.Request) -> SimCarrier | web.Response:
    carriers = request.app[CARRIERS]
    name = request.match_info["name"]
    carrier = carriers.get(name)
    if carrier is None:
        known = ", ".join(sorted(carriers)) or "none"
        return _error(404, f"no carrier named {name!r} (carriers: {known})")
    return carrier


async def _all(request: web.Request) -> web.Response:
    carriers = request.app[CARRIERS]
    return web.json_response({name: c.counters() for name, c in carriers.items()})


async def _one(request: web.Request) -> web.Response:
    carrier = _carrier(request)
    if isinstance(carrier, web.Response):
        return carrier
    return web.json_response(carrier.counters())


async def _set_mode(request: web.Request) -> web.Response:
    carrier = _carrier(request)
    if isinstance(carrier, web.Response):
        return carrier
    text = await request.text()
    try:
        data = json.loads(text)
    except ValueError as exc:
        return _error(400, f"body is not JSON: {exc}")
    try:
        mode = mode_from_json(data)
    except ModeError as exc:
        return _error(400, str(exc))
    try:
        carrier.set_mode(mode)
    except OSError as exc:
        where = f"{carrier.host}:{carrier.port}"
        return _error(409, f"mode {mode.name} set, but {where} cannot be bound again: {exc}")
    return web.json_response(carrier.counters())


async def serve_control(
    carriers: dict[str, SimCarrier], host: str, port: int, *, allow_remote: bool = False
) -> web.AppRunner:
    """Serve the control interface on ``host:port`` until the runner is cleaned up.

    Port 0 picks a free port: read it from ``runner.addresses``. Raises
    ValueError for a non-loopback ``host`` without ``allow_remote``, OSError if
    the port cannot be bound.
    """
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"control interface on {host}: only a loopback address is allowed")
    app = web.Application()
    app[CARRIERS] = carriers
    app.router.add_get("/carriers", _all)
    app.router.add_get("/carriers/{name}", _one)
    app.router.add_put("/carriers/{name}/mode", _set_mode)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
