"""The wheel: built from the source, installed in a clean venv, run from outside the repo.

What an operator does (docs/service.md): ``pip install trunkguard-*.whl`` into a venv
of its own, then ``trunkguard --version`` and ``trunkguard check``. The dependencies
come from PyPI (pip's cache makes a second run quick). The source is copied first,
so that building leaves nothing in the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # Not the test's venv: the clean one must stand on its own.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{cmd}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_wheel_installs_in_a_clean_venv_and_runs(tmp_path: Path) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copytree(
        REPO / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), "."], source)
    wheels = list(dist.glob("trunkguard-*.whl"))
    assert len(wheels) == 1, wheels
    assert wheels[0].name.startswith(f"trunkguard-{version}-")

    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert "trunkguard/py.typed" in names
    assert "trunkguard/defaults/router.yaml" in names
    static = REPO / "src" / "trunkguard" / "admin" / "static"
    expected = {
        "trunkguard/" + p.relative_to(REPO / "src" / "trunkguard").as_posix()
        for p in (static.rglob("*") if static.exists() else [])
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected <= names, sorted(expected - names)
    print(f"{wheels[0].name}: {len(names)} files, {len(expected)} dashboard static files")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile"]
    _run([*pip, "--disable-pip-version-check", str(wheels[0])], tmp_path, timeout=600)

    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing may come from the source
    elsewhere.mkdir()
    tg = str(env_dir / "bin" / "trunkguard")
    done = _run([tg, "--version"], elsewhere, timeout=60)
    assert done.stdout.strip() == f"trunkguard {version}"
    done = _run([tg, "check"], elsewhere, timeout=60)
    assert done.stdout.startswith("<embedded default>: OK"), done.stdout
    where = _run(
        [str(env_dir / "bin" / "python"), "-c", "import trunkguard; print(trunkguard.__file__)"],
        elsewhere,
        timeout=60,
    )
    assert where.stdout.strip().startswith(str(env_dir)), where.stdout
