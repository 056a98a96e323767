"""What a carrier that challenges every INVITE costs: side by side with one that does not.

In one run, alternating: a SIPp carrier that answers at once (uas_answer.xml) and one that
answers every new INVITE with 407 and takes it again with credentials (uas_challenge.xml),
each behind a fresh router, at the same fixed rate for the same number of calls. Per side:
calls answered and failed at the caller, the router's CPU per call (from /proc, user +
system), and the post-dial delay seen by the caller (INVITE sent to first 18x, from SIPp's
own -trace_shortmsg stamps). A challenged call costs the router one more INVITE, a 407 and
its ACK, and one digest; its PDD adds one more round trip to the carrier.

SIPp (caller and carrier) and the router share the machine's cores: the figures are
for a 2-core machine with the load generator on it.

Run: ``.venv/bin/python bench/carrier_auth.py [--rate N] [--calls N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from proxy_rate import percentile, post_dial_delays, process_cpu, router_pid  # noqa: E402
from router import RouterProcess  # noqa: E402
from sipp import free_udp_ports, run_uac, start_uas  # noqa: E402

SIDES = {"plain": "uas_answer", "challenged (407 on every INVITE)": "uas_challenge"}


def one(side: str, scenario: str, rate: int, calls: int, workdir: Path) -> dict[str, float]:
    (port,) = free_udp_ports(1)
    carrier_cfg: dict[str, object] = {"name": "carrier", "uri": f"sip:127.0.0.1:{port}"}
    if scenario == "uas_challenge":
        carrier_cfg["auth"] = {"user": "bench", "password": "bench-password"}
    with start_uas(scenario, port=port, lifetime=calls / rate + 60, tmp_root=workdir) as _:
        router = RouterProcess(
            workdir / "router",
            [],
            extra={
                "carriers": [carrier_cfg],
                "probe": {"enabled": False},
                "log": {"level": "warning"},
            },
        )
        with router:
            pid = router_pid(router)
            before = process_cpu(pid)
            started = time.monotonic()
            result = run_uac(
                "uac_call",
                router.address,
                calls=calls,
                rate=rate,
                limit=max(1000, rate * 8),
                timeout=calls / rate + 20,
                trace_messages=False,
                tmp_root=workdir / "caller",
            )
            cpu = process_cpu(pid) - before
            took = time.monotonic() - started
    delays, _ = post_dial_delays(result.messages)
    return {
        "answered": result.successful,
        "failed": result.failed,
        "cpu_ms_per_call": cpu / max(1, result.successful + result.failed) * 1000,
        "router_cpu_pct": cpu / took * 100,
        "pdd_p50": percentile(delays, 50),
        "pdd_p95": percentile(delays, 95),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=200, help="calls per second (200)")
    parser.add_argument("--calls", type=int, default=4000, help="calls per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternations (2)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="tg-bench-auth-") as tmp:
        for round_no in range(args.rounds):
            for side, scenario in SIDES.items():
                workdir = Path(tmp) / f"{round_no}-{scenario}"
                r = one(side, scenario, args.rate, args.calls, workdir)
                results[side].append(r)
                print(
                    f"round {round_no + 1}, {side}: {r['answered']:.0f} answered, "
                    f"{r['failed']:.0f} failed; router {r['cpu_ms_per_call']:.3f} ms CPU/call "
                    f"({r['router_cpu_pct']:.0f} % of a core); PDD p50 {r['pdd_p50']:.2f} ms, "
                    f"p95 {r['pdd_p95']:.2f} ms",
                    flush=True,
                )
    print(
        f"\n{args.calls} calls at {args.rate}/s per side and round, {args.rounds} rounds, "
        "2 cores shared with SIPp:"
    )
    print("| carrier | answered / failed | router CPU per call | PDD p50 / p95 |")
    print("|---|---|---|---|")
    for side, runs in results.items():
        answered = sum(r["answered"] for r in runs)
        failed = sum(r["failed"] for r in runs)
        cpu = statistics.median(r["cpu_ms_per_call"] for r in runs)
        p50 = statistics.median(r["pdd_p50"] for r in runs)
        p95 = statistics.median(r["pdd_p95"] for r in runs)
        print(
            f"| {side} | {answered:.0f} / {failed:.0f} | {cpu:.3f} ms | {p50:.2f} / {p95:.2f} ms |"
        )
    return 0 if all(r["failed"] == 0 for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
