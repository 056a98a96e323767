"""The ``trunkguard`` command: ``run`` the router, ``check`` a config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sqlite3
import ssl
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .alerts import describe_hooks
from .config import ConfigError, RouterConfig, load_config
from .dialer import describe as describe_dialer
from .dns import DnsWatcher, Resolution
from .health import HealthEngine, State, transition_table
from .logs import CallLog, LogPipe
from .proxy import AttemptRecord, Plan, Proxy, Target
from .proxy._call import Branch, Call
from .proxy._server import Router, serve
from .proxy._tls import server_context
from .quality import KnownQuality, QualityTracker, RecordedQuality
from .register import RegisterSettings
from .reloading import ReloadOutcome, Serialized, config_changes
from .routing import NumberRules, QualityView, RoutingTable, build_plan
from .runtime import Runtime
from .service import Heartbeat, Notifier, router_status
from .store import EventStore

if TYPE_CHECKING:
    from .alerts._service import AlertService
    from .dialer._service import DialerService

UNREGISTER_WAIT = 2.0  # seconds a clean shutdown waits for the REGISTER (Expires: 0) answers
log = logging.getLogger("trunkguard")


def _log_attempt(record: AttemptRecord) -> None:
    verdict = record.verdict
    what = f"{record.status}" if record.status is not None else record.kind
    klass = verdict.klass.value if verdict is not None else record.kind
    pdd = record.post_dial_delay
    pdd_text = f", first response after {pdd * 1000:.0f} ms" if pdd is not None else ""
    if verdict is not None and verdict.failover:
        log.info(
            "call %s: attempt %d via %s: %s (%s)%s; failing over",
            record.call_id,
            record.attempt,
            record.target,
            what,
            klass,
            pdd_text,
        )
        if verdict.alarm:
            log.warning(
                "carrier %s answered %s: check its account and our credentials",
                record.target,
                record.status,
            )
    else:
        log.debug(
            "call %s: attempt %d via %s: %s (%s)%s",
            record.call_id,
            record.attempt,
            record.target,
            what,
            klass,
            pdd_text,
        )


def _config_problems(exc: ConfigError) -> int:
    """Print every problem of a config (file:line: field: why) and give the exit code 2."""
    for problem in exc.shown():
        print(problem, file=sys.stderr)
    return 2


def _unexpected(exc: BaseException, source: str) -> str:
    """A problem line for an error no check foresaw.

    Its type and where it was raised, not its message: a message may quote the
    file, and the file holds secrets.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{source}: cannot load: {type(exc).__name__}{where}"


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        config, source = load_config(args.config)
        targets = config.targets()
        routing, _ = config.routing()
        registrations = config.register_settings()
        records = _records_where(config)
        alert_settings = config.alert_settings()
        dialer_settings = config.dialer_settings()
    except ConfigError as exc:
        return _config_problems(exc)
    print(f"{source}: OK")
    print(f"  listen: {', '.join(config.listen)}")
    decks = {c.name: c.deck for c in routing.carriers} if routing is not None else {}
    for i, t in enumerate(targets, 1):
        deck = decks.get(t.name)
        rates = f", {len(deck)} prefixes from {deck.source}" if deck is not None else ""
        where = str(t.flow) if t.flow.addr[1] else f"{t.uri.host} (DNS, resolved when running)"
        print(f"  carrier {i}: {t.name} at {where}{rates}")
        reg = registrations.get(t.name)
        if reg is not None:
            print(
                f"    registers as {reg.credentials.user} at {reg.registrar}, "
                f"Expires {reg.expires}s"
            )
        elif t.auth is not None:
            print(f"    answers challenges as {t.auth.user}")
    f = config.failover
    print(
        f"  failover: invite_timeout {f.invite_timeout}s, up to {f.max_attempts} attempts "
        f"within {f.time_budget}s"
    )
    print(f"  call records: {records}")
    if alert_settings.hooks:
        print(f"  alerts: {describe_hooks(alert_settings)}")
    if config.agi.enabled:
        dials = [c.name for c in config.carriers if c.dial]
        print(
            f"  FastAGI route advisor on {config.agi.listen}: dial strings for "
            f"{', '.join(dials) or 'no carrier (route will give none)'}"
        )
    if dialer_settings.campaigns:
        print(f"  dialer feedback: {describe_dialer(dialer_settings)}")
    return 0


def _records_where(config: RouterConfig) -> str:
    """Where call records go, for ``check``; reads a DSN file now (ConfigError if it cannot)."""
    r = config.records
    if not r.enabled:
        return "off"
    if r.backend == "postgresql":
        from .records._postgres import where_dsn

        return where_dsn(r.postgres_dsn(config.base_dir)[0])
    return f"sqlite {r.sqlite_path(config.base_dir, config.store_path())}"


async def _reload(
    runtime: Runtime,
    source: str,
    router: Router | None,
    trigger: str = "SIGHUP",
    alerts: AlertService | None = None,
    dialer: DialerService | None = None,
) -> ReloadOutcome:
    """Read the config and decks again; refuse them, keeping the old, if invalid.

    SIGHUP and ``POST /api/reload`` both come here (one at a time, see _run).
    """
    path = None if source == "<embedded default>" else source
    log.info("%s: reloading %s", trigger, source)

    resolved = dict(runtime.dns_destinations)  # DNS carriers keep their destinations

    def load() -> tuple[
        RouterConfig,
        list[Target],
        tuple[RoutingTable | None, NumberRules | None],
        dict[str, RegisterSettings],
    ]:
        config, _ = load_config(path)
        return config, config.targets(resolved), config.routing(), config.register_settings()

    loop = asyncio.get_running_loop()
    try:
        # Decks of millions of rows take seconds, and host names and password files are
        # read: all of it off the event loop.
        config, targets, routing, registrations = await loop.run_in_executor(None, load)
    except ConfigError as exc:
        return _reload_refused(runtime, exc, source)
    except Exception as exc:
        return _reload_refused(runtime, ConfigError([_unexpected(exc, source)]), source)
    try:
        alert_settings = await loop.run_in_executor(None, config.alert_settings)  # reads secrets
        dialer_settings = await loop.run_in_executor(None, config.dialer_settings)  # and these
    except ConfigError as exc:
        return _reload_refused(runtime, exc, source)
    changed = config_changes(runtime.config, config)
    records_changed = config.records != runtime.config.records
    agi_changed = config.agi != runtime.config.agi
    notes = runtime.reload(config, routing, loop.time(), targets, registrations)
    if records_changed:
        notes.append("records changes take effect at the next restart")
    if agi_changed:
        notes.append("agi changes take effect at the next restart (dial: strings at once)")
    for note in notes:
        log.warning("reload: %s", note)
    if router is not None:
        # Added targets get their connected sockets (instant ICMP failover); removed ones
        # are closed.
        await router.sync_targets()
        router.flush()
    if alerts is not None:
        await alerts.reload(alert_settings)
        alerts.resync()
    if dialer is not None:
        await dialer.reload(dialer_settings)
    runtime.proxy.counters["reloads"] += 1
    what = f"; changed: {'; '.join(changed)}" if changed else "; no setting changed"
    log.info("reloaded %s: %d carriers%s", source, len(config.carriers), what)
    return ReloadOutcome(
        ok=True, source=source, notes=notes, changed=changed, carriers=len(config.carriers)
    )


async def _drain(proxy: Proxy, timeout: float, stop: asyncio.Event) -> None:
    """SIGTERM: no new calls (503 + Retry-After), calls in setup finish, then stop."""
    proxy.drain()
    log.info("SIGTERM: taking no new calls; waiting up to %gs for calls in setup", timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proxy.open_work()["calls_unanswered"] and loop.time() < deadline:
        await asyncio.sleep(0.05)
    left = proxy.open_work()["calls_unanswered"]
    if left:
        log.warning("drain timeout: stopping with %d call(s) still in setup", left)
    else:
        log.info("no call in setup: stopping")
    stop.set()


def _reload_refused(runtime: Runtime, exc: ConfigError, source: str) -> ReloadOutcome:
    """Log why a reload was refused, with the lines ``trunkguard check`` prints."""
    log.error("reload refused, the config in force stays: %d problem(s)", len(exc.problems))
    shown = exc.shown()
    for problem in shown:
        log.error("  %s", problem)
    runtime.proxy.counters["reloads_refused"] += 1
    return ReloadOutcome(ok=False, source=source, problems=shown)


class _GcPolicy:
    """Keep the cyclic garbage collector's pauses short on a heap of live calls.

    The proxy leaves no reference cycles (a unit test holds it to that), so call
    state is freed by reference counting. What the collector would do is walk
    every live call again and again: at 1,000 calls/s that is millions of
    objects and pauses of seconds. So once a second, collect the young
    generations (garbage cycles die young) and freeze what survived: later
    collections skip it, and reference counting still frees it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        self.loop = loop
        self.handle: asyncio.TimerHandle | None = loop.call_later(1.0, self._tick)

    def _tick(self) -> None:
        gc.collect(1)
        gc.freeze()
        self.handle = self.loop.call_later(1.0, self._tick)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


async def _run(
    config: RouterConfig,
    source: str,
    ready_file: str | None,
    routing: tuple[RoutingTable | None, NumberRules | None],
) -> int:
    try:
        runtime = Runtime(config, routing=routing)
    except sqlite3.Error as exc:
        log.error("cannot open the event log %s: %s", config.store_path(), exc)
        return 1
    proxy = runtime.proxy
    runtime.on_attempt = _log_attempt
    if config.log.calls:
        runtime.listeners.append(CallLog())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    runtime.start(loop.time())
    # Hooks on state changes: each with its own queue and task, never on the call path.
    from .alerts._service import AlertService

    alerts = AlertService(runtime, config.alert_settings())
    alerts.start()
    # Feedback to the dialer: a campaign's level follows its carriers' healthy capacity.
    from .dialer._service import DialerService

    dialer = DialerService(runtime, config.dialer_settings())
    dialer.start()
    ha_node = None
    ha_settings = config.ha_settings()
    if ha_settings is not None:
        # Leadership and shared target state on etcd (docs/ha.md): the router's gate.
        from .ha._node import HaNode

        ha_node = HaNode(runtime, ha_settings)
        await ha_node.start()
    drains: set[asyncio.Task[None]] = set()
    # systemd (Type=notify): READY once listening, STATUS, RELOADING, STOPPING, watchdog.
    notifier = Notifier()
    heartbeat = Heartbeat(notifier, loop, lambda: router_status(runtime))

    def stopping(why: str) -> None:
        heartbeat.quiet = True
        notifier.stopping(why)

    def on_int() -> None:
        stopping("stopping (SIGINT)")
        stop.set()

    def on_term() -> None:
        if proxy.draining:
            stop.set()  # a second SIGTERM: stop now
            return
        stopping("draining (SIGTERM): no new calls, calls in setup finish")
        task = loop.create_task(_drain(proxy, config.shutdown.drain_timeout, stop))
        drains.add(task)
        task.add_done_callback(drains.discard)

    loop.add_signal_handler(signal.SIGINT, on_int)
    loop.add_signal_handler(signal.SIGTERM, on_term)
    reloads: set[asyncio.Task[Any]] = set()

    async def reload_once(trigger: str) -> ReloadOutcome:
        notifier.reloading()
        try:
            return await _reload(
                runtime, source, routers[0] if routers else None, trigger, alerts, dialer
            )
        finally:
            if not proxy.draining:
                notifier.ready(router_status(runtime))

    # One reload at a time: a SIGHUP waits for the one under way, the API is told 409.
    reload_gate = Serialized(reload_once, source)

    def on_hup() -> None:
        task = loop.create_task(reload_gate.queued("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)

    watcher: DnsWatcher | None = None

    def dns_changed(name: str, resolution: Resolution | None) -> None:
        if resolution is None or not routers:
            return
        router = routers[0]
        if runtime.dns_changed(
            name, list(resolution.destinations), resolution.error, loop.time()
        ):
            task = loop.create_task(router.sync_targets())
            reloads.add(task)
            task.add_done_callback(reloads.discard)
            alerts.resync()
            dialer.resync()
        router.flush()

    async def ready(router: Router) -> None:
        nonlocal watcher
        routers.append(router)
        router.on_events = runtime.pump
        if ha_node is not None:
            ha_node.router = router
        where = ", ".join(f"{t}:{h}:{p}" for t, h, p in router.bound)
        log.info("trunkguard listening on %s (config %s)", where, source)
        queries = config.dns_queries()
        if queries:
            # The first answers come within the DNS timeout; a name that does not resolve
            # leaves its carrier out (with the reason) and is retried in the background.
            watcher = DnsWatcher(config.dns_settings(), on_change=dns_changed)
            for name, query in queries.items():
                watcher.add(name, query)
            await watcher.start()
            runtime.watcher = watcher
        for i, target in enumerate(proxy.targets, 1):
            log.info("carrier %d: %s at %s", i, target.name, target.flow)
        if ready_file:
            with open(ready_file, "w", encoding="utf-8") as fh:
                info: dict[str, Any] = {"listen": [list(b) for b in router.bound]}
                if agi_server is not None and agi_server.bound is not None:
                    info["agi"] = list(agi_server.bound)
                json.dump(info, fh)
        if not proxy.draining:
            notifier.ready(router_status(runtime))
        heartbeat.start()

    async def before_stop(router: Router) -> None:
        # Unregister (Expires: 0) while the sockets are open; wait a little for the answers.
        done = runtime.stop(loop.time())
        router.flush()
        if done:
            log.info("unregistering from %s", ", ".join(done))
            deadline = loop.time() + UNREGISTER_WAIT
            while runtime.registrations.pending() and loop.time() < deadline:
                await asyncio.sleep(0.05)
        if watcher is not None:
            await watcher.stop()

    gc_policy = _GcPolicy(loop)
    admin_server = None
    routers: list[Router] = []  # the router, once it listens
    if config.admin.token:
        from .admin import AdminSettings, start_admin

        def after_admin_change() -> None:
            # A change made through the API may arm a new deadline (a forced-down
            # target's revert): the loop's timer must learn of it now.
            if routers:
                routers[0].flush()

        host, port = config.admin.address()
        try:
            admin_server = await start_admin(
                runtime,
                AdminSettings(host=host, port=port, token=config.admin.token),
                on_change=after_admin_change,
                reload=reload_gate.now_or_busy,
            )
        except OSError as exc:
            log.error("cannot start the admin API on %s: %s", config.admin.listen, exc)
            await alerts.stop()
            await dialer.stop()
            runtime.close()
            return 1
    agi_server = None
    if config.agi.enabled:
        # The FastAGI route advisor (route, report), in this process and loop.
        from .agi._server import AgiServer

        def after_agi_report() -> None:
            if routers:
                routers[0].flush()  # a report's state change may arm a new deadline

        agi_server = AgiServer(runtime, config.agi.settings(), on_change=after_agi_report)
        try:
            await agi_server.start()
        except OSError as exc:
            log.error("cannot start the FastAGI advisor on %s: %s", config.agi.listen, exc)
            if admin_server is not None:
                await admin_server.close()
            await alerts.stop()
            runtime.close()
            return 1
    listeners = [(lst.transport, lst.host, lst.port) for lst in config.listeners()]
    try:
        tls_server = _tls_server(config)
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot load the tls: certificate: %s", exc)
        await alerts.stop()
        await dialer.stop()
        runtime.close()
        return 1
    from .records._setup import FLUSH_WAIT, start_recorder

    recorder = start_recorder(config, runtime, loop)  # call records, in a thread of their own
    try:
        await serve(
            proxy, listeners, stop, ready, before_stop, tls_server,
            gate=None if ha_node is None else ha_node.serving,
            freebind=ha_settings is not None and ha_settings.service_address is not None,
        )  # fmt: skip
    except OSError as exc:
        log.error("cannot listen on %s: %s", ", ".join(config.listen), exc.strerror or exc)
        return 1
    finally:
        if ha_node is not None:
            await ha_node.stop()  # the lease is revoked: the standby takes over at once
        gc_policy.stop()
        heartbeat.stop()
        notifier.close()
        if agi_server is not None:
            await agi_server.close()
        if admin_server is not None:
            await admin_server.close()
        if recorder is not None:
            await recorder.stop(FLUSH_WAIT)
        await alerts.stop()  # what is queued gets alerts.stop_timeout, then the hooks stop
        await dialer.stop()
        runtime.close()
    counters = {k: v for k, v in sorted(proxy.counters.items()) if v}
    open_work = proxy.open_work()
    log.info("stopped; counters: %s; still open: %s", json.dumps(counters), json.dumps(open_work))
    if ready_file:
        with open(ready_file + ".counters", "w", encoding="utf-8") as fh:
            json.dump({**counters, **{f"open:{k}": v for k, v in open_work.items()}}, fh)
    return 0


def _tls_server(config: RouterConfig) -> ssl.SSLContext | None:
    t = config.tls
    if t is None:
        return None
    base = config.base_dir
    return server_context(
        str(base / t.cert_file),
        str(base / t.key_file),
        None if t.ca_file is None else str(base / t.ca_file),
        t.verify_clients,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config, source = load_config(args.config)
        config.targets()
        config.register_settings()
        _records_where(config)
        config.alert_settings()
        config.dialer_settings()
        routing = config.routing()
    except ConfigError as exc:
        return _config_problems(exc)
    level = args.log_level or config.log.level
    # The log's format is fixed at start (a reload does not change it).
    pipe = LogPipe(level, config.log.format)
    import uvloop

    try:
        code = uvloop.run(_run(config, source, args.ready_file, routing))
    finally:
        pipe.stop()
    # Everything is closed, flushed and logged. Tearing down a heap of millions of
    # objects one by one takes seconds at full CPU and achieves nothing: leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _parse_when(text: str | None) -> float | None:
    """``10m``, ``2h``, ``1d`` ago, or an ISO date/time (local time unless it says)."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise SystemExit(
            f"trunkguard: {text!r}: expected 10m, 2h, 1d or an ISO date/time"
        ) from None


def _cmd_events(args: argparse.Namespace) -> int:
    if args.db is not None:
        path = args.db
    else:
        try:
            config, _ = load_config(args.config)
        except ConfigError as exc:
            return _config_problems(exc)
        path = str(config.store_path())
    if not Path(path).exists():
        print(f"trunkguard: no event log at {path}", file=sys.stderr)
        return 1
    since, until = _parse_when(args.since), _parse_when(args.until)
    try:
        store = EventStore(path)
        try:
            rows = store.events(args.target, since, until, args.limit)
            notices = [
                n
                for n in store.notices(args.target, since, args.limit)
                if until is None or n.at <= until
            ]
        finally:
            store.close()
    except sqlite3.Error as exc:
        print(f"trunkguard: cannot read the event log {path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = [asdict(r) for r in rows] + [{"notice": n.kind, **asdict(n)} for n in notices]
        print(json.dumps(sorted(out, key=lambda d: (d["at"], d["id"])), indent=1))
        return 0
    lines: list[tuple[float, str]] = []
    for r in rows:
        when = datetime.fromtimestamp(r.at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        hold = f" (hold-down {r.hold_down:.0f}s)" if r.hold_down else ""
        lines.append((r.at, f"{when}  {r.target:<12} {r.old:>11} -> {r.new:<11} {r.reason}{hold}"))
    for n in notices:
        when = datetime.fromtimestamp(n.at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        label = n.kind if n.kind in ("registration", "dialer", "quality") else "ALARM"
        lines.append((n.at, f"{when}  {n.target:<12} {label:>11}    {n.state:<11} {n.detail}"))
    for _, line in sorted(lines, key=lambda item: item[0]):
        print(line)
    if not lines:
        print("no events")
    return 0


def _cmd_route(args: argparse.Namespace) -> int:
    """The plan for a number: from config, and from the live states in the event log."""
    try:
        config, source = load_config(args.config)
        targets = config.targets()
        routing, numbers = config.routing()
    except ConfigError as exc:
        return _config_problems(exc)
    plan = build_plan(args.number, targets, 0.0, routing=routing, numbers=numbers)
    print(f"{args.number} from config ({source}):")
    _print_plan(plan)
    path = config.store_path()
    if not path.exists():
        print(f"no event log at {path}: no live states to apply (is a router running?)")
        return 0 if plan.rejected is None else 1
    health = HealthEngine(
        [t.name for t in targets], config.health_policy(), probes_enabled=config.probe.enabled
    )
    store = EventStore(path)
    wall = time.time()
    try:
        last = store.last_states()
        quality = _recorded_quality(config, store, wall)
    finally:
        store.close()
    for name, row in last.items():
        if name in health.targets:
            health.load_state(name, State(row.new), 0.0, reason=row.reason)
            health.targets[name].since = row.at - wall  # seconds ago, on this plan's clock
            health.targets[name].reason = row.reason
    if routing is not None:
        for pool in routing.pools:  # the tiers as the live states put them
            pool.update(health.admits, 0.0)
    where = ""
    live_quality, said = _live_quality(config, plan.number or args.number)
    if live_quality is not None:
        quality, where = live_quality, f" and the quality figures of the router at {said}"
    elif said:
        print(said)
    live = build_plan(
        args.number, targets, 0.0, routing=routing, numbers=numbers, health=health, quality=quality
    )
    print(f"with the live states in {path}{where}:")
    _print_plan(live)
    return 0 if live.rejected is None else 1


def _recorded_quality(config: RouterConfig, store: EventStore, wall: float) -> QualityView | None:
    """The demotions the router last logged (within a quality window), with their figures."""
    settings = config.quality_settings()
    if settings is None:
        return None
    rows = [
        (n.target, n.state, n.detail, datetime.fromtimestamp(n.at).strftime("%H:%M:%S"))
        for n in store.notices(since=wall - settings.window, limit=100_000)
        if n.kind == "quality"
    ]
    return RecordedQuality(QualityTracker(settings), rows)


def _live_quality(config: RouterConfig, number: str) -> tuple[QualityView | None, str]:
    """The running router's verdicts for ``number``'s group, from its admin API (GET
    /api/quality), and its URL; or None and why not (empty: no admin API, no quality)."""
    settings = config.quality_settings()
    if settings is None or not config.admin.token:
        return None, ""
    from urllib.parse import quote

    from .admin._status import _get, _NoStatus

    url = config.admin.url()
    try:
        view = _get(url, f"/api/quality?number={quote(number)}", config.admin.token)
        group = str(view["group"])
        carriers = view["groups"].get(group, {})
        verdicts = {
            (str(name), group): (bool(v["demoted"]), str(v["why"] or ""))
            for name, v in carriers.items()
        }
    except _NoStatus as exc:
        return None, f"no live quality figures ({exc}): the demotions the event log recorded"
    except (KeyError, TypeError, AttributeError):
        return None, f"{url} did not answer like a trunkguard admin API: the event log's demotions"
    return KnownQuality(QualityTracker(settings), verdicts), url


def _print_plan(plan: Plan) -> None:
    if plan.number is not None:
        print(f"  number: {plan.number}")
    if plan.rejected is not None:
        status, why = plan.rejected
        print(f"  refused with {status}: {why}")
        return
    order = ", ".join(t.name for t in plan.targets) or "(none)"
    print(f"  try in order: {order}" + ("  [panic: all out of rotation]" if plan.panic else ""))
    for line in plan.explain:
        print(f"    {line}")


def _cmd_lab(args: argparse.Namespace) -> int:
    from .lab import lab_main

    wait = args.dashboard_wait if args.dashboard else None
    return lab_main(args.scenario, Path(args.out), live=not args.no_live, dashboard_wait=wait)


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * units[text[-1]]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise SystemExit(f"trunkguard: {text!r}: expected a duration like 60s or 2m")


def _admin_of(config_path: str | None) -> tuple[str, str] | int:
    try:
        config, _ = load_config(config_path)
    except ConfigError as exc:
        return _config_problems(exc)
    if not config.admin.token:
        print("trunkguard: the config has no admin.token: the admin API is off", file=sys.stderr)
        return 2
    return config.admin.url(), config.admin.token


def _cmd_drill(args: argparse.Namespace) -> int:
    from .lab import DrillError, run_drill, write_drill_report

    admin = _admin_of(args.config)
    if isinstance(admin, int):
        return admin
    seconds = _seconds(args.duration)
    print(f"drill: {args.target} forced down for {seconds:g}s (reverts by itself at the end)")
    try:
        result = asyncio.run(run_drill(admin[0], admin[1], args.target, seconds, force=args.force))
    except DrillError as exc:
        print(f"trunkguard: drill refused: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("drill aborted: the target was restored at once")
        return 130
    path = write_drill_report(result, Path(args.out))
    m = result.metrics
    print(
        f"drill done: {m['calls']} calls, {m['answered']} answered, {m['failed']} failed; "
        f"INVITEs to {args.target} during the drill: {m['invites_to_target']}; "
        f"by target: {m['invites_by_target']}"
    )
    print(f"report: {path}")
    return 0 if m["failed"] == 0 else 1


def _cmd_status(args: argparse.Namespace) -> int:
    from .admin import status_main

    admin = _admin_of(args.config)
    if isinstance(admin, int):
        return admin
    return status_main(admin[0], admin[1], json_out=args.json)


def _cmd_calls(args: argparse.Namespace) -> int:
    from .records import CallQuery
    from .records._cli import print_active, print_records

    if args.limit is not None and not 1 <= args.limit <= 1_000_000:
        print("trunkguard calls: --limit: expected 1 to 1000000", file=sys.stderr)
        return 2
    if args.active:
        admin = _admin_of(args.config)
        if isinstance(admin, int):
            return admin
        return print_active(admin[0], admin[1], min(args.limit or 1000, 10_000), json_out=args.json)
    try:
        config, _ = load_config(args.config)
    except ConfigError as exc:
        return _config_problems(exc)
    query = CallQuery(
        since=_parse_when(args.since),
        until=_parse_when(args.until),
        number=args.number,
        carrier=args.carrier,
        status=args.status,
        limit=args.limit or 1000,
    )
    return print_records(config, query, json_out=args.json)


def _cmd_sim_carrier(args: argparse.Namespace) -> int:
    # Its own parser has its options and --help; the lab is not imported for other commands.
    from .lab._carrier import main as sim_main

    return sim_main(list(args.rest))


def _cmd_states(args: argparse.Namespace) -> int:
    if not args.call:
        print(transition_table())
        return 0
    print("# a call and the branch it waits on: state + input -> next state, actions")
    print(Call.transition_table())
    print()
    print("# a branch the call has let go of (its final came, or it was abandoned)")
    print(Branch.transition_table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trunkguard", description="SIP failover router for call centers."
    )
    parser.add_argument("--version", action="version", version=f"trunkguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the router until SIGINT/SIGTERM")
    run.add_argument("-c", "--config", help="YAML config (default: the embedded default)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--ready-file", help=argparse.SUPPRESS)
    run.set_defaults(func=_cmd_run)
    check = sub.add_parser("check", help="validate a config and print what it means")
    check.add_argument("-c", "--config", help="YAML config (default: the embedded default)")
    check.set_defaults(func=_cmd_check)
    events = sub.add_parser("events", help="print target state changes from the event log")
    events.add_argument("-c", "--config", help="config whose store.path to read")
    events.add_argument("--db", help="the event log file (instead of -c)")
    events.add_argument("--target", help="only this target")
    events.add_argument("--since", help="10m, 2h, 1d ago, or an ISO date/time")
    events.add_argument("--until", help="10m, 2h, 1d ago, or an ISO date/time")
    events.add_argument("--limit", type=int, default=1000, help="most recent N (default 1000)")
    events.add_argument("--json", action="store_true", help="JSON instead of a table")
    events.set_defaults(func=_cmd_events)
    route = sub.add_parser("route", help="print the plan for a number and why")
    route.add_argument("number", help="the number as the dialer sends it")
    route.add_argument("-c", "--config", help="YAML config (default: the embedded default)")
    route.set_defaults(func=_cmd_route)
    lab = sub.add_parser("lab", help="run failover scenarios with simulated carriers")
    lab.add_argument("scenario", nargs="+", help="a scenario name, or all")
    lab.add_argument("--out", default="lab-results", help="folder for reports (lab-results)")
    lab.add_argument("--no-live", action="store_true", help="no live view, just the results")
    lab.add_argument(
        "--dashboard", action="store_true", help="serve the dashboard on loopback, print its link"
    )
    lab.add_argument(
        "--dashboard-wait", type=float, default=10.0, metavar="SECONDS",
        help="with --dashboard: time to open it before the calls start (10)",
    )  # fmt: skip
    lab.set_defaults(func=_cmd_lab)
    drill = sub.add_parser("drill", help="force a target down on the live router, watch")
    drill.add_argument("target")
    drill.add_argument("--for", dest="duration", default="60s", help="how long (60s, 2m)")
    drill.add_argument("-c", "--config", help="the running router's config (admin API)")
    drill.add_argument("--force", action="store_true", help="even if no other target is UP")
    drill.add_argument("--out", default="drill-results", help="folder for the report")
    drill.set_defaults(func=_cmd_drill)
    status = sub.add_parser("status", help="target states and counters of the live router")
    status.add_argument("-c", "--config", help="the running router's config (admin API)")
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    status.set_defaults(func=_cmd_status)
    calls = sub.add_parser("calls", help="print call records (or, with --active, calls now)")
    calls.add_argument("-c", "--config", help="config whose records: to read")
    calls.add_argument("--since", help="started after: 10m, 2h, 1d ago, or an ISO date/time")
    calls.add_argument("--until", help="started before: 10m, 2h, 1d ago, or an ISO date/time")
    calls.add_argument("--number", help="numbers that contain this (1212 finds 4412125)")
    calls.add_argument("--carrier", help="calls with an attempt at this carrier")
    calls.add_argument("--status", type=int, help="the final status the caller got, e.g. 503")
    calls.add_argument("--limit", type=int, help="most recent N (default 1000)")
    calls.add_argument("--json", action="store_true", help="one JSON object per call, per line")
    calls.add_argument(
        "--active", action="store_true", help="the calls in progress (from the admin API)"
    )
    calls.set_defaults(func=_cmd_calls)
    # No options here: everything after sim-carrier goes to its own parser, in order.
    sim = sub.add_parser(
        "sim-carrier", help="a simulated carrier for tests and the lab", add_help=False
    )
    sim.set_defaults(func=_cmd_sim_carrier)
    states = sub.add_parser("states", help="print the target state transition table")
    states.add_argument(
        "--call", action="store_true", help="the failover table of one call instead"
    )
    states.set_defaults(func=_cmd_states)
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "sim-carrier":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (trunkguard calls --json | head): stop, without a traceback,
        # and without another when Python flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
