"""``trunkguard sim-carrier``: one simulated carrier, optionally with its control interface.

Prints one line when it listens, one per mode change (the start mode too) and
one with its counters when it stops (SIGINT or SIGTERM). With
``--register-user`` it is a registrar too: REGISTER must carry digest
credentials for that user (``--register-password`` or
``--register-password-file``), and INVITEs get 403 while nobody is registered
(unless ``--unregistered-calls``). Errors a user can
cause (a bad mode or address, a port in use) are one line on stderr, no
traceback: exit 2 for bad arguments, 1 when a port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from ..sip import ParseError, split_hostport
from ._carrier_control import is_loopback, serve_control
from ._carrier_mode import ALIASES, MODE_NAMES, Mode
from ._carrier_registrar import RegistrarConfig
from ._carrier_udp import SimCarrier

PROG = "trunkguard sim-carrier"


def _say(text: str) -> None:
    stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
    print(f"{stamp} {text}", flush=True)


def _address(text: str, what: str) -> tuple[str, int]:
    try:
        host, port = split_hostport(text)
    except ParseError as exc:
        raise ValueError(f"{what} {text!r}: {exc}") from None
    if port is None:
        raise ValueError(f"{what} {text!r}: expected HOST:PORT")
    return host.strip("[]"), port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A SIP endpoint that answers like a carrier, in a mode that can change "
        "while it runs (over --control: PUT /carriers/NAME/mode).",
    )
    parser.add_argument("--name", default="carrier", help="carrier name, sent in X-Sim-Carrier")
    parser.add_argument("--listen", default="127.0.0.1:5060", help="UDP HOST:PORT (port 0: any)")
    parser.add_argument(
        "--mode", default="healthy", choices=[*MODE_NAMES, *ALIASES], help="starting mode"
    )
    parser.add_argument("--code", type=int, default=503, help="reject, options-only: status")
    parser.add_argument("--retry-after", type=int, help="reject, options-only: Retry-After")
    parser.add_argument("--ring-ms", type=int, default=0, help="time from 180 to 200")
    parser.add_argument("--delay-ms", type=int, default=0, help="slow: delay before answering")
    parser.add_argument(
        "--period", type=float, default=20.0, help="flap: seconds healthy, then as many dead"
    )
    parser.add_argument(
        "--hangup-ms", type=int, default=2000, help="false-answer: the BYE this long after 200"
    )
    parser.add_argument(
        "--busy-pct", type=int, default=80, help="fake-busy: share of INVITEs answered 486"
    )
    parser.add_argument("--control", help="HTTP control interface on HOST:PORT (loopback)")
    reg = parser.add_argument_group("registrar (REGISTER with digest authentication)")
    reg.add_argument("--register-user", help="the account REGISTER must authenticate as")
    secret = reg.add_mutually_exclusive_group()
    secret.add_argument("--register-password", help="its password")
    secret.add_argument("--register-password-file", help="a file holding its password")
    reg.add_argument("--realm", default="sim-carrier", help="digest realm (sim-carrier)")
    reg.add_argument(
        "--max-expires", type=int, default=3600, help="longest binding granted, seconds (3600)"
    )
    reg.add_argument(
        "--unregistered-calls",
        action="store_true",
        help="answer INVITEs even while nobody is registered (default: 403)",
    )
    return parser


def _registrar(args: argparse.Namespace) -> RegistrarConfig | None:
    password = args.register_password
    if args.register_password_file is not None:
        path = Path(args.register_password_file)
        try:
            password = path.read_text(encoding="utf-8").strip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"--register-password-file {path}: cannot read it ({why})") from None
    if args.register_user is None:
        if password is not None:
            raise ValueError("a register password needs --register-user")
        return None
    if not password:
        raise ValueError("--register-user needs --register-password or --register-password-file")
    return RegistrarConfig(
        args.register_user,
        password,
        realm=args.realm,
        max_expires=args.max_expires,
        require=not args.unregistered_calls,
    )


async def _serve(carrier: SimCarrier, control: tuple[str, int] | None) -> int:
    def changed(sim: SimCarrier, mode: Mode) -> None:
        _say(f"sim-carrier {sim.name}: mode {mode.describe()}")

    carrier.on_mode_change = changed
    try:
        await carrier.start()
    except OSError as exc:
        print(
            f"{PROG}: cannot listen on udp {carrier.host}:{carrier.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    runner: web.AppRunner | None = None
    try:
        _say(f"sim-carrier {carrier.name}: listening on udp {carrier.host}:{carrier.port}")
        if carrier.registrar is not None:
            r = carrier.registrar
            calls = "403 until registered" if r.require else "answered unregistered too"
            _say(
                f"sim-carrier {carrier.name}: registrar for {r.user} in realm {r.realm} "
                f"(MD5, qop=auth; INVITEs {calls})"
            )
        if control is not None:
            try:
                runner = await serve_control({carrier.name: carrier}, *control)
            except OSError as exc:
                where = f"{control[0]}:{control[1]}"
                print(
                    f"{PROG}: cannot serve control on {where}: {exc.strerror or exc}",
                    file=sys.stderr,
                )
                return 1
            host, port = runner.addresses[0][:2]
            _say(f"sim-carrier {carrier.name}: control on http://{host}:{port}/carriers")
        changed(carrier, carrier.mode)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await carrier.stop()
    _say(f"sim-carrier {carrier.name}: stopped; counters {json.dumps(carrier.counters())}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        mode = Mode(
            ALIASES.get(args.mode, args.mode),
            code=args.code,
            retry_after=args.retry_after,
            ring_ms=args.ring_ms,
            delay_ms=args.delay_ms,
            period_s=args.period,
            hangup_ms=args.hangup_ms,
            busy_pct=args.busy_pct,
        )
        host, port = _address(args.listen, "--listen")
        control = _address(args.control, "--control") if args.control else None
        if control is not None and not is_loopback(control[0]):
            raise ValueError(f"--control {args.control}: only a loopback address is allowed")
        carrier = SimCarrier(args.name, host, port, mode, registrar=_registrar(args))
    except ValueError as exc:  # ModeError too
        parser.error(str(exc))
    try:
        return asyncio.run(_serve(carrier, control))
    except KeyboardInterrupt:
        return 130
