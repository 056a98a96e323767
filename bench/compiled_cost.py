"""What compiling the sans-IO core with mypyc would gain: the figure behind leaving it out.

Copies ``src/`` to a temporary folder, compiles the SIP layer and the proxy core there
with mypyc (it comes with mypy, a pinned dev dependency; it needs a C compiler and the
Python headers), then runs ``bench/call_cost.py --against`` that copy: the router's CPU
per call, pure Python here and compiled there, in turns. ``--tests`` also runs the unit
tests of the parser and the proxy core on the compiled copy and prints how many fail.

Run: ``.venv/bin/python bench/compiled_cost.py [--rounds N] [--calls N] [--tests]``
(about 2 minutes to compile on a 2-core machine, then the rounds).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "trunkguard/sip/_message.py",
    "trunkguard/sip/_uri.py",
    "trunkguard/sip/_via.py",
    "trunkguard/sip/_syntax.py",
    "trunkguard/sip/_errors.py",
    "trunkguard/sip/_transaction.py",
    "trunkguard/sip/_build.py",
    "trunkguard/proxy/_core.py",
    "trunkguard/proxy/_call.py",
    "trunkguard/proxy/_timers.py",
    "trunkguard/proxy/_entries.py",
    "trunkguard/proxy/_finished.py",
    "trunkguard/proxy/_relay.py",
    "trunkguard/proxy/_dialogs.py",
    "trunkguard/proxy/_admission.py",
    "trunkguard/proxy/_sources.py",
]
TESTS = ["tests/unit/test_sip_parse.py", "tests/unit/test_proxy_core.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--tests", action="store_true", help="run unit tests on the compiled copy")
    args = parser.parse_args(argv)
    mypyc = Path(sys.executable).parent / "mypyc"
    if not mypyc.exists():
        print("no mypyc beside this Python: make .venv/.installed-stamp", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="trunkguard-mypyc-") as tmp:
        copy = Path(tmp)
        shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
        started = time.monotonic()
        built = subprocess.run(
            [str(mypyc), *MODULES], cwd=copy / "src", capture_output=True, text=True, check=False
        )
        took = time.monotonic() - started
        if built.returncode != 0:
            print(built.stdout[-3000:], built.stderr[-3000:], sep="\n")
            print(f"mypyc failed after {took:.0f} s")
            return 1
        print(f"compiled {len(MODULES)} modules with mypyc in {took:.0f} s", flush=True)
        if args.tests:
            env_path = str(copy / "src")
            ran = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                cwd=ROOT,
                env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                check=False,
            )
            tail = ran.stdout.strip().splitlines()[-1:] or ["(no output)"]
            print(f"unit tests on the compiled copy: {tail[0]}", flush=True)
        cmd = [sys.executable, str(ROOT / "bench" / "call_cost.py"), "--against", str(copy)]
        cmd += ["--rounds", str(args.rounds), "--calls", str(args.calls), "--blocks", "3"]
        return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
