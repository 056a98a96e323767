"""The systemd unit, checked by systemd's own tools, offline (systemd need not be PID 1).

``systemd-analyze verify`` loads the unit as systemd would, in a root of the test's
(``--root=``) where the paths the unit names exist: ExecStart's venv, /bin/kill, and
the host's targets it is ordered after. ``systemd-analyze security --offline=yes``
scores its hardening; the overall exposure must be at most 2.0.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "trunkguard.service"
MAX_EXPOSURE = 2.0


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: make test installs Debian's systemd"
    return found


def _root(tmp_path: Path, unit_text: str, name: str = "trunkguard.service") -> Path:
    root = tmp_path / "root"
    for unit_dir in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        targets = list(Path(unit_dir).glob("*.target"))
        if targets:
            break
    assert targets, "no systemd targets on this machine"
    lib = root / "usr/lib/systemd/system"
    lib.mkdir(parents=True, exist_ok=True)
    for target in targets:
        shutil.copy(target, lib)
    exe = root / "opt/trunkguard/bin/trunkguard"  # where docs/service.md installs it
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    kill = root / "bin/kill"
    kill.parent.mkdir(parents=True, exist_ok=True)
    kill.write_text("#!/bin/sh\n")
    kill.chmod(0o755)
    system = root / "etc/systemd/system"
    system.mkdir(parents=True, exist_ok=True)
    (system / name).write_text(unit_text)
    return root


def _verify(root: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_analyze(), "verify", f"--root={root}", name],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_systemd_analyze_verify_passes_without_a_warning(tmp_path: Path) -> None:
    done = _verify(_root(tmp_path, UNIT.read_text()), "trunkguard.service")
    assert done.returncode == 0, done
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """verify exits 0 on an unknown key; what it prints is what the check above relies on."""
    text = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilegez=yes")
    done = _verify(_root(tmp_path, text, "typo.service"), "typo.service")
    assert "Unknown key" in done.stderr + done.stdout, done


def test_exposure_is_at_most_two(tmp_path: Path) -> None:
    done = subprocess.run(
        [_analyze(), "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    found = re.search(r"Overall exposure level for trunkguard\.service: (\d+\.\d+)", out)
    assert found, out
    exposure = float(found.group(1))
    print(f"systemd-analyze security --offline=yes: overall exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, out


def test_the_unit_is_a_watched_notify_service_with_its_state_directory() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] and settings["Restart"] == ["on-failure"]
    assert settings["DynamicUser"] == ["yes"]
    assert settings["StateDirectory"] == ["trunkguard"]
    assert settings["ConfigurationDirectory"] == ["trunkguard"]
    assert settings["MemoryDenyWriteExecute"] == ["yes"]
    assert settings["ExecStart"] == [
        "/opt/trunkguard/bin/trunkguard run -c /etc/trunkguard/router.yaml"
    ]
