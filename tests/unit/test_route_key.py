"""The Record-Route key: made once in the state directory, owner-only, the same after a restart."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trunkguard.runtime import record_route_secret


def test_made_once_owner_only_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "trunkguard-route.key"
    first = record_route_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert record_route_secret(path) == first  # a restart signs and verifies alike


def test_a_damaged_key_file_is_an_error_not_a_silent_new_key(tmp_path: Path) -> None:
    path = tmp_path / "trunkguard-route.key"
    path.write_text("not hex\n")
    with pytest.raises(ValueError, match="not a key"):
        record_route_secret(path)
