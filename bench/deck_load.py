"""Rate decks at scale: load time, resident memory and least-cost plans per second.

Generates (deterministically, into a temp dir) one synthetic CSV deck per carrier,
by default 3 carriers x 1,000,000 prefixes: prefixes of 3-9 digits spread over country
codes (NANP heavy, like real decks), rates with 4-6 decimals, increments 1/1, 6/6 or
60/60 per carrier and country, a description and an effective date on every row, and a
few rows dated in the future (left out by the loader). Then, in a fresh Python process so
that its memory is the decks' and nothing else's, it loads every deck with ``load_deck``,
builds a ``RoutingTable`` and ranks the carriers for random 11-12 digit numbers.

Printed: load time per deck and in total, VmRSS before and after (and the peak), plans
per second over a bounded number of ``RoutingTable.rank`` calls, p50/p99 of single plans,
each beside the aim from the issue; then plans for repeat traffic (a few thousand numbers
over and over, as a campaign dials), and how busy the machine was with other work before
measuring (a shared machine makes every figure slower). Nothing is asserted.

Run: ``.venv/bin/python bench/deck_load.py [--quick] [--prefixes N] [--lookups N]
[--seed S] [--budget SECONDS] [--profile]``. ``--profile`` adds a cProfile of loading
and ranking on a smaller deck (100,000 prefixes, or the size given).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --src DIR measures another checkout's code (e.g. main's, for before/after figures).
_SRC = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv[:-1] else str(ROOT / "src")
sys.path.insert(0, _SRC)

from trunkguard.health import HealthEngine  # noqa: E402
from trunkguard.routing import (  # noqa: E402
    CarrierRoute,
    DeckColumns,
    Flow,
    RateDeck,
    RoutingTable,
    Target,
    build_plan,
    load_deck,
)
from trunkguard.sip import parse_uri  # noqa: E402

CARRIERS = ("alpha", "bravo", "charlie")
AIM_PLAN_US = 5.0  # p50 of a full plan (build_plan with health), 3 decks
AIM_PLAN_P99_US = 20.0
AIM_PLAN_MANY_US = 10.0  # p50 with 10 decks
AIM_LOAD_S = 10.0
AIM_LOAD_MANY_S = 30.0  # 10 decks
AIM_RSS_MB = 1024.0
COLUMNS = DeckColumns(
    prefix="Prefix",
    rate="Rate",
    connection_fee="Connection Fee",
    increment="Increment",
    effective="Effective Date",
    description="Description",
)
HEADER = "Prefix,Description,Rate,Connection Fee,Increment,Effective Date\n"
INCREMENTS = ("1/1", "6/6", "60/60")
FUTURE_SHARE = 0.005  # rows for a prefix dated after today: loaded by a later reload
SAMPLE = 20_000  # single plans timed one by one for p50/p99
HOT_NUMBERS = 2_000  # distinct numbers of the repeat-traffic run

# Country codes with a share of the prefixes: NANP decks list NPA-NXX, so "1" is large.
COUNTRIES: dict[str, float] = {
    "1": 30.0, "7": 3.0, "20": 1.0, "27": 1.0, "30": 0.5, "31": 1.0, "32": 0.7, "33": 2.0,
    "34": 2.0, "36": 0.5, "39": 2.0, "40": 0.6, "41": 0.8, "43": 0.7, "44": 4.0, "45": 0.4,
    "46": 0.6, "47": 0.4, "48": 1.0, "49": 4.0, "51": 0.8, "52": 3.0, "53": 0.2, "54": 1.5,
    "55": 3.0, "56": 0.8, "57": 1.5, "58": 0.6, "60": 0.8, "61": 1.5, "62": 2.0, "63": 1.5,
    "64": 0.4, "65": 0.4, "66": 1.0, "81": 1.5, "82": 1.0, "84": 1.5, "86": 4.0, "90": 1.0,
    "91": 4.0, "92": 1.2, "93": 0.3, "94": 0.5, "95": 0.3, "98": 0.8, "212": 0.5, "213": 0.4,
    "216": 0.2, "218": 0.1, "220": 0.1, "221": 0.2, "225": 0.2, "229": 0.1, "233": 0.3,
    "234": 0.8, "237": 0.2, "254": 0.4, "255": 0.3, "256": 0.2, "260": 0.1, "263": 0.1,
    "351": 0.5, "352": 0.1, "353": 0.4, "354": 0.1, "355": 0.2, "357": 0.1, "358": 0.4,
    "359": 0.3, "370": 0.1, "371": 0.1, "372": 0.1, "380": 0.6, "381": 0.3, "385": 0.2,
    "386": 0.1, "420": 0.4, "421": 0.2, "502": 0.2, "503": 0.2, "504": 0.2, "505": 0.1,
    "506": 0.2, "507": 0.1, "591": 0.2, "593": 0.3, "595": 0.1, "598": 0.1, "852": 0.3,
    "855": 0.1, "880": 0.6, "886": 0.4, "961": 0.1, "962": 0.2, "963": 0.1, "964": 0.3,
    "965": 0.1, "966": 0.6, "971": 0.5, "972": 0.4, "974": 0.1, "977": 0.2, "992": 0.1,
    "994": 0.1, "995": 0.1, "996": 0.1, "998": 0.3,
}  # fmt: skip


# ------------------------------------------------------------------------ generating


def prefix_pool(size: int, rng: random.Random) -> list[str]:
    """``size`` distinct prefixes of 3-9 digits, each under one of COUNTRIES' codes."""
    codes = list(COUNTRIES)
    weights = list(COUNTRIES.values())
    # Every code has breakouts of 3 digits, so most numbers under it have some rate.
    pool: set[str] = {c for c in codes if len(c) == 3}
    pool.update(
        c + f"{d:0{3 - len(c)}d}" for c in codes if len(c) < 3 for d in range(10 ** (3 - len(c)))
    )
    while len(pool) < size:
        for cc in rng.choices(codes, weights, k=min(65_536, 2 * (size - len(pool)))):
            if cc == "1":
                length = rng.choice((4, 7, 7, 7, 7, 8))  # NPA, NPA-NXX, NPA-NXX-X
            else:
                length = rng.choice((4, 5, 6, 6, 7, 7, 8, 8, 9))
            length = max(length, len(cc) + 1)
            pool.add(cc + "".join(rng.choices("0123456789", k=length - len(cc))))
            if len(pool) >= size:
                break
    return sorted(pool)


def write_deck(path: Path, prefixes: list[str], rng: random.Random) -> int:
    """One carrier's deck; returns the number of rows written."""
    factor = rng.uniform(0.85, 1.15)
    billing = {cc: rng.choice(INCREMENTS) for cc in COUNTRIES}
    base = {cc: rng.uniform(0.002, 0.25) for cc in COUNTRIES}
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        chunk: list[str] = []
        for prefix in prefixes:
            cc = prefix[:1] if prefix[:1] in COUNTRIES else prefix[:2]
            cc = cc if cc in COUNTRIES else prefix[:3]
            kind = "Mobile" if prefix[len(cc) : len(cc) + 1] in "6789" else "Fixed"
            rate = base[cc] * factor * rng.uniform(0.7, 1.6) * (1.8 if kind == "Mobile" else 1)
            decimals = rng.choice((4, 5, 6))
            fee = "0.01" if rng.random() < 0.02 else "0"
            effective = f"20{rng.randint(19, 24)}-{rng.randint(1, 12):02d}-01"
            line = f"{prefix},CC {cc} {kind},{rate:.{decimals}f},{fee},{billing[cc]},{effective}\n"
            chunk.append(line)
            if rng.random() < FUTURE_SHARE:
                chunk.append(f"{prefix},CC {cc} {kind},{rate * 1.1:.6f},0,1/1,2099-01-01\n")
            if len(chunk) >= 50_000:
                rows += len(chunk)
                out.write("".join(chunk))
                chunk = []
        rows += len(chunk)
        out.write("".join(chunk))
    return rows


def carrier_names(count: int) -> tuple[str, ...]:
    return CARRIERS if count == len(CARRIERS) else tuple(f"carrier{i:02d}" for i in range(count))


def generate(
    workdir: Path, size: int, seed: int, carriers: int = len(CARRIERS)
) -> list[tuple[str, Path, int]]:
    rng = random.Random(seed)
    pool = prefix_pool(int(size * 1.2), rng)
    decks = []
    for name in carrier_names(carriers):
        # Carriers list mostly the same breakouts: each takes its own 5/6 of one pool.
        picked = sorted(rng.sample(pool, size))
        path = workdir / f"{name}.csv"
        decks.append((name, path, write_deck(path, picked, rng)))
    return decks


# ------------------------------------------------------------------------ measuring (child)


def vm_kb(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM), in kB; 0 where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def numbers(count: int, rng: random.Random) -> list[str]:
    """Random E.164 numbers of 11-12 digits under the decks' country codes."""
    codes = list(COUNTRIES)
    weights = list(COUNTRIES.values())
    out = []
    for cc in rng.choices(codes, weights, k=count):
        length = rng.choice((11, 12))
        out.append(cc + "".join(rng.choices("0123456789", k=length - len(cc))))
    return out


def measure(paths: list[tuple[str, Path]], lookups: int, seed: int, budget: float) -> None:
    deadline = time.monotonic() + budget
    rss_before = vm_kb("VmRSS")
    decks: list[RateDeck] = []
    total = cpu_total = 0.0
    for name, path in paths:
        started, cpu = time.perf_counter(), time.process_time()
        deck = load_deck(path, COLUMNS, name)
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        total += took
        cpu_total += cpu
        decks.append(deck)
        print(
            f"  load {name:<8} {took:6.2f} s (cpu {cpu:.2f} s)  {len(deck):>10,} prefixes in force",
            flush=True,
        )
    started, cpu_started = time.perf_counter(), time.process_time()
    table = RoutingTable(
        [CarrierRoute(d.carrier, d) for d in decks], typical_seconds=90, rng=random.Random(seed)
    )
    built = time.perf_counter() - started
    built_cpu = time.process_time() - cpu_started
    total += built
    cpu_total += built_cpu
    index = getattr(table, "index", None)
    if index is not None:
        nodes = index.nodes
        print(
            f"  index          {built:6.2f} s (cpu {built_cpu:.2f} s): {len(nodes):,} prefixes "
            "in the union, "
            f"{len({id(n) for n in nodes.values()}):,} distinct nodes"
        )
    rss_after = vm_kb("VmRSS")
    peak = vm_kb("VmHWM")
    aim_load = AIM_LOAD_S if len(decks) <= len(CARRIERS) else AIM_LOAD_MANY_S
    print(f"  load total     {total:6.2f} s (cpu {cpu_total:.2f} s)   aim < {aim_load:.0f} s")
    print(
        f"  VmRSS before {rss_before / 1024:.1f} MB, after {rss_after / 1024:.1f} MB "
        f"(decks: {(rss_after - rss_before) / 1024:.1f} MB; peak VmHWM {peak / 1024:.1f} MB)"
        f"   aim < {AIM_RSS_MB:.0f} MB"
    )

    todo = numbers(lookups, random.Random(seed + 1))
    rank = table.rank
    for number in todo[:2_000]:  # warm up
        rank(number)
    done = 0
    started, cpu = time.perf_counter(), time.process_time()
    for number in todo:
        rank(number)
        done += 1
        if done % 10_000 == 0 and time.monotonic() > deadline:
            break
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    rate = done / took if took else 0.0
    unpriced = sum(1 for n in todo[:SAMPLE] if not any(c.used for c in rank(n)))
    print(
        f"  rank           {done:,} random numbers in {took:.2f} s (cpu {cpu:.2f} s) = "
        f"{rate:,.0f} plans/s, {1e6 / rate if rate else 0:.2f} µs per plan "
        f"({len(decks) * done:,} deck lookups)"
    )
    print(f"                 numbers with no rate at any carrier: {unpriced} of {SAMPLE:,}")

    timings = []
    clock = time.perf_counter_ns
    for number in todo[-SAMPLE:]:
        t0 = clock()
        rank(number)
        timings.append(clock() - t0)
        if len(timings) % 5_000 == 0 and time.monotonic() > deadline:
            break
    timings.sort()
    p50 = statistics.median(timings) / 1000
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))] / 1000
    print(
        f"  per plan       p50 {p50:.2f} µs, p99 {p99:.2f} µs over {len(timings):,} single "
        f"plans   aim < {AIM_PLAN_US:.0f} µs"
    )
    # Call-centre traffic repeats destinations: plans over a few thousand numbers, again
    # and again, find their rates already built.
    campaign = numbers(HOT_NUMBERS, random.Random(seed + 2))
    repeat = [campaign[i % HOT_NUMBERS] for i in range(min(lookups, 100_000))]
    random.Random(seed + 3).shuffle(repeat)
    for number in campaign:
        rank(number)
    started = time.perf_counter()
    for number in repeat:
        rank(number)
    took = time.perf_counter() - started
    print(
        f"  repeat traffic {len(repeat):,} plans over {HOT_NUMBERS:,} distinct numbers: "
        f"{len(repeat) / took:,.0f} plans/s, {1e6 * took / len(repeat):.2f} µs per plan"
    )
    print(
        f"  VmRSS after the plans {vm_kb('VmRSS') / 1024:.1f} MB (with the memos of rates in use)"
    )
    sample = table.rank(todo[0])
    print(f"  e.g. {todo[0]}: " + "; ".join(f"{c.name} {c.why}" for c in sample[:1]))
    plan50, plan99 = plans(table, [d.carrier for d in decks], todo, deadline)
    many = len(decks) > len(CARRIERS)
    verdict = [
        ("load", total < (AIM_LOAD_MANY_S if many else AIM_LOAD_S)),
        ("memory", rss_after < AIM_RSS_MB * 1024),
        ("plan p50", plan50 < (AIM_PLAN_MANY_US if many else AIM_PLAN_US)),
    ]
    if not many:  # the issue sets a p99 aim for the 3-deck case only
        verdict.append(("plan p99", plan99 < AIM_PLAN_P99_US))
    print("  aims: " + ", ".join(f"{what} {'met' if ok else 'MISSED'}" for what, ok in verdict))


def plans(
    table: RoutingTable, names: list[str], todo: list[str], deadline: float
) -> tuple[float, float]:
    """p50/p99 of full plans as the proxy makes them: ``build_plan`` with health, one
    target per carrier, every target up (health and capacity as a filter)."""
    targets = [
        Target(n, parse_uri(f"sip:127.0.0.1:{6000 + i}"), Flow("udp", ("127.0.0.1", 6000 + i)))
        for i, n in enumerate(names)
    ]
    health = HealthEngine(names, rng=random.Random(1))
    counters: Counter[str] = Counter()
    for number in todo[:2_000]:  # warm up
        build_plan(number, targets, 1.0, routing=table, health=health, counters=counters)
    timings = []
    clock = time.perf_counter_ns
    cpu = time.process_time()
    for number in todo[-SAMPLE:]:
        t0 = clock()
        build_plan(number, targets, 1.0, routing=table, health=health, counters=counters)
        timings.append(clock() - t0)
        if len(timings) % 5_000 == 0 and time.monotonic() > deadline:
            break
    cpu = time.process_time() - cpu
    timings.sort()
    p50 = statistics.median(timings) / 1000
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))] / 1000
    many = len(names) > len(CARRIERS)
    aim = f"aim < {AIM_PLAN_MANY_US:.0f} µs" if many else (
        f"aims p50 < {AIM_PLAN_US:.0f} µs, p99 < {AIM_PLAN_P99_US:.0f} µs"
    )
    print(
        f"  full plan      p50 {p50:.2f} µs, p99 {p99:.2f} µs over {len(timings):,} build_plan "
        f"calls with health, reasons not read   {aim}"
    )
    print(
        f"                 cpu {1e6 * cpu / len(timings):.2f} µs per plan (this process's own "
        "time, with the clock reads; wall-clock p50/p99 include waits for a shared core)"
    )
    plan = build_plan(todo[0], targets, 1.0, routing=table, health=health, counters=counters)
    t0 = clock()
    lines = list(plan.explain)
    print(f"  its reasons    {(clock() - t0) / 1000:.1f} µs to write {len(lines)} lines when read")
    return p50, p99


def background_load(seconds: float = 1.0) -> float | None:
    """Percent of a core the machine is busy with other work while this script sleeps."""

    def busy() -> float:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")

    try:
        before = busy()
        time.sleep(seconds)
        return 100 * (busy() - before) / seconds
    except (OSError, ValueError, IndexError):
        return None


def profile(workdir: Path, size: int, seed: int) -> None:
    """cProfile of loading one deck of ``size`` prefixes and of 20,000 plans."""
    decks = generate(workdir, size, seed)
    profiler = cProfile.Profile()
    profiler.enable()
    loaded = [load_deck(path, COLUMNS, name) for name, path, _ in decks]
    profiler.disable()
    report(profiler, f"loading 3 decks of {size:,} prefixes")
    table = RoutingTable([CarrierRoute(d.carrier, d) for d in loaded], rng=random.Random(seed))
    todo = numbers(20_000, random.Random(seed + 1))
    profiler = cProfile.Profile()
    profiler.enable()
    for number in todo:
        table.rank(number)
    profiler.disable()
    report(profiler, "20,000 plans")


def report(profiler: cProfile.Profile, what: str) -> None:
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(14)
    print(f"\n== cProfile: {what} (by own time)")
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    print("\n".join(line for line in lines[start:] if line.strip()))


# ------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 prefixes")
    parser.add_argument("--prefixes", type=int, help="prefixes per deck (default 1,000,000)")
    parser.add_argument("--lookups", type=int, help="plans to rank (default 200,000)")
    parser.add_argument("--carriers", type=int, default=len(CARRIERS), help="decks (default 3)")
    parser.add_argument("--src", help="import trunkguard from this folder (another checkout)")
    parser.add_argument(
        "--workdir", help="keep the generated decks here, and reuse them when already there"
    )
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--budget", type=float, default=300.0, help="whole run, seconds")
    parser.add_argument(
        "--profile", nargs="?", type=int, const=100_000, metavar="PREFIXES",
        help="also profile loading and ranking on decks of this size (default 100,000)",
    )  # fmt: skip
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = args.prefixes or (20_000 if args.quick else 1_000_000)
    lookups = args.lookups or (20_000 if args.quick else 200_000)
    if args.child:
        paths = [(Path(p).stem, Path(p)) for p in args.child]
        measure(paths, lookups, args.seed, args.budget)
        return 0
    started = time.monotonic()
    print(
        f"trunkguard rate decks: {args.carriers} carriers x {size:,} prefixes, "
        f"{lookups:,} plans, seed {args.seed}"
    )
    print(
        f"machine: {os.cpu_count()} cores (os.cpu_count()), Python {sys.version.split()[0]}; "
        "loading and ranking use one core"
    )
    with tempfile.TemporaryDirectory(prefix="trunkguard-decks-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        if args.workdir:
            workdir = Path(args.workdir) / f"{args.carriers}x{size}-{args.seed}"
            workdir.mkdir(parents=True, exist_ok=True)
        done_mark = workdir / "complete"
        if done_mark.exists():
            decks = [
                (name, workdir / f"{name}.csv", int(rows))
                for name, rows in (line.split() for line in done_mark.read_text().splitlines())
            ]
        else:
            decks = generate(workdir, size, args.seed, args.carriers)
            done_mark.write_text("".join(f"{name} {rows}\n" for name, _, rows in decks))
        mb = sum(p.stat().st_size for _, p, _ in decks) / 1e6
        rows = sum(r for _, _, r in decks)
        print(f"generated {rows:,} rows ({mb:.0f} MB of CSV) in {time.perf_counter() - t0:.1f} s")
        others = background_load()
        if others is not None:
            print(
                f"other work on the machine before measuring: {others:.0f}% of a core "
                "(times are wall-clock; cpu is this process's own)"
            )
        print("measuring in a fresh process:", flush=True)
        left = args.budget - (time.monotonic() - started)
        command = [sys.executable, __file__, "--child", *(str(p) for _, p, _ in decks)]
        command += ["--lookups", str(lookups), "--seed", str(args.seed)]
        command += ["--budget", str(max(left - 60, 10))]
        if args.src:
            command += ["--src", args.src]
        try:
            done = subprocess.run(command, timeout=max(left, 30), check=False)
        except subprocess.TimeoutExpired:
            print(f"measuring did not finish within the budget ({args.budget:.0f} s)")
            return 1
        if done.returncode:
            print(f"measuring failed (exit {done.returncode})")
            return done.returncode
        if args.profile:
            print(f"\nprofile on decks of {args.profile:,} prefixes:")
            (workdir / "profile").mkdir()
            profile(workdir / "profile", args.profile, args.seed)
    print(f"\nwhole run {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
