"""No secret of a config is ever printed: not by check, run, status or a refused reload.

Each bad config below carries a recognisable token; whatever is wrong with it,
the token must appear in no output and no log line.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trunkguard.cli import _reload
from trunkguard.config import ConfigError, load_config, parse_config
from trunkguard.runtime import Runtime

TOKEN = "TOPSECRET-token-4f9c2a7e"
SECRET = "SIGNING-KEY-" + "k" * 40

GOOD = f"""\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - {{name: a, uri: "sip:127.0.0.1:5071"}}
probe: {{enabled: false}}
store: {{path: events.db}}
admin: {{listen: 127.0.0.1:8080, token: {TOKEN}}}
secret: {SECRET}
"""

BAD: dict[str, bytes] = {
    "not-utf8": GOOD.encode() + b"log: {level: \xff}\n",
    "field-next-to-token": GOOD.replace("listen: 127.0.0.1:8080", "listen: nowhere").encode(),
    "token-too-short": GOOD.replace(TOKEN, "TOPSECRET").encode(),
    "token-wrong-type": GOOD.replace(f"token: {TOKEN}", f"token: [{TOKEN}]").encode(),
    "duplicate-key": (GOOD + f"admin: {{token: {TOKEN}-again}}\n").encode(),
    "duplicate-token": GOOD.replace(f"token: {TOKEN}", f"token: {TOKEN}, token: {TOKEN}").encode(),
    "secret-too-short": GOOD.replace(SECRET, TOKEN).encode(),
    "secret-and-file": (GOOD + f"secret_file: {TOKEN}\n").encode(),
    "not-yaml": GOOD.replace("admin: {", "admin: {{").encode(),
    "top-level-error": GOOD.replace("carriers:", "carriers: 1\nx:").encode(),
}
SHORT = "TOPSECRET"  # every token above starts with it: none may be printed


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "router.yaml"
    path.write_bytes(data)
    return path


def _trunkguard(*args: str) -> subprocess.CompletedProcess[str]:
    run = [sys.executable, "-m", "trunkguard", *args]
    return subprocess.run(run, capture_output=True, text=True, check=False, timeout=30)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_config_errors_never_show_a_secret(kind: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, BAD[kind]))
    text = "\n".join(info.value.problems) + str(info.value)
    assert info.value.problems
    assert SHORT not in text and "SIGNING-KEY" not in text, text


@pytest.mark.parametrize("command", ["check", "run", "status", "route 123 -c", "events -c"])
@pytest.mark.parametrize("kind", ["not-utf8", "field-next-to-token", "duplicate-key"])
def test_commands_print_the_problems_without_a_secret(
    command: str, kind: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, BAD[kind])
    args = command.split()
    done = _trunkguard(*args, *([] if args[-1] == "-c" else ["-c"]), str(path))
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"{path}:"), done.stderr
    assert "Traceback" not in done.stderr
    assert SHORT not in done.stdout + done.stderr


def test_a_refused_reload_logs_the_problems_without_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GOOD.encode())
    config, source = load_config(path)
    runtime = Runtime(config)
    runtime.start(0.0)
    try:
        with caplog.at_level(logging.DEBUG):
            for kind in sorted(BAD):
                path.write_bytes(BAD[kind])
                caplog.clear()
                asyncio.run(_reload(runtime, source, None))
                assert "reload refused, the config in force stays" in caplog.text, kind
                assert f"{path}" in caplog.text, kind
                assert SHORT not in caplog.text, (kind, caplog.text)
        assert runtime.config is config  # the old config stays in force
        assert runtime.proxy.counters["reloads_refused"] == len(BAD)
    finally:
        runtime.close()
    out = capsys.readouterr()
    assert SHORT not in out.out + out.err


def test_an_unforeseen_error_on_reload_shows_its_type_not_its_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, GOOD.encode())
    config, source = load_config(path)
    runtime = Runtime(config)

    def broken(_: object) -> None:
        raise RuntimeError(f"the file said {TOKEN}")

    monkeypatch.setattr("trunkguard.cli.load_config", broken)
    try:
        with caplog.at_level(logging.ERROR):
            asyncio.run(_reload(runtime, source, None))
    finally:
        runtime.close()
    assert f"{path}: cannot load: RuntimeError at test_config_secrets.py:" in caplog.text
    assert SHORT not in caplog.text


def test_a_loaded_config_does_not_show_its_secrets() -> None:
    config = parse_config(GOOD, "x.yaml")
    assert config.admin.token == TOKEN and config.secret == SECRET
    for text in (repr(config), str(config), repr(config.admin), str(config.admin)):
        assert SHORT not in text and "SIGNING-KEY" not in text


def test_a_validation_error_raised_outside_parse_config_does_not_quote_inputs() -> None:
    from pydantic import ValidationError

    from trunkguard.config import RouterConfig

    carriers = [{"name": "a", "uri": "sip:127.0.0.1"}, {"name": "a", "uri": "sip:10.0.0.1"}]
    base = {"listen": "udp:127.0.0.1:5060", "carriers": carriers, "secret_file": "rr.key"}
    for data, why in [
        ({**base, "admin": {"token": TOKEN}, "secret": SECRET}, "duplicate target name 'a'"),
        ({**base, "admin": {"token": TOKEN[:10]}}, "at least 16 characters"),
    ]:
        with pytest.raises(ValidationError) as info:
            RouterConfig.model_validate(data)
        assert why in str(info.value)
        assert SHORT not in str(info.value) and "SIGNING-KEY" not in str(info.value)


def test_sighup_with_a_broken_file_keeps_the_router_and_logs_no_secret(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("5060", "0").replace("8080", "0").encode())
    ready = tmp_path / "ready.json"
    run = [sys.executable, "-m", "trunkguard", "run", "-c", str(path), "--ready-file", str(ready)]
    proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.poll()
        for kind in ("not-utf8", "duplicate-key", "token-too-short"):
            path.write_bytes(BAD[kind])
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert err.count("reload refused, the config in force stays") == 3, err
    assert f"{path}:9: not UTF-8 text: byte 0xff at column 14" in err
    assert "Traceback" not in err and "never retrieved" not in err
    assert SHORT not in out + err
    assert '"reloads_refused": 3' in err
