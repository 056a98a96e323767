"""The example service config: valid, state in the unit's StateDirectory, no secret inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkguard.config import load_config

PACKAGING = Path(__file__).resolve().parents[2] / "packaging" / "systemd"


def _env_file() -> dict[str, str]:
    lines = (PACKAGING / "trunkguard.env").read_text().splitlines()
    return dict(x.split("=", 1) for x in lines if x.strip() and not x.startswith("#"))


def test_the_example_config_is_valid_with_the_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _env_file().items():
        monkeypatch.setenv(key, value)
    config, _ = load_config(PACKAGING / "router.yaml")
    config.targets()  # reads the carriers' password_env
    assert config.store_path() == Path("/var/lib/trunkguard/events.db")
    assert config.secret_path() is None  # the Record-Route key goes beside the event log
    assert config.admin.token == _env_file()["TRUNKGUARD_ADMIN_TOKEN"]
    assert (config.log.format, config.log.calls) == ("json", True)


def test_the_example_config_holds_no_secret() -> None:
    text = (PACKAGING / "router.yaml").read_text()
    for value in _env_file().values():
        assert value not in text
    assert "token:" not in text and "password:" not in text
