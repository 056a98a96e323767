"""``trunkguard status``: status_main against a real admin server on a free port.

status_main is synchronous (a command that runs once), so it runs in a thread
while the admin server answers on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trunkguard.admin import AdminServer, AdminSettings, start_admin, status_main
from trunkguard.config import parse_config
from trunkguard.runtime import Runtime

TOKEN = "status-token-9d2e"
CONFIG = """\
listen: udp:127.0.0.1:0
allow: [127.0.0.0/8]
carriers:
  - {name: alpha, uri: "sip:127.0.0.1:5991"}
  - {name: bravo, uri: "sip:127.0.0.1:5992"}
  - {name: charlie, uri: "sip:127.0.0.1:5993"}
probe: {enabled: false}
store: {path: events.db}
"""


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = parse_config(CONFIG, "test.yaml")
    config._base = tmp_path
    rt = Runtime(config)
    rt.start(asyncio.get_running_loop().time())
    yield rt
    rt.close()


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[AdminServer]:
    admin = await start_admin(runtime, AdminSettings(port=0, token=TOKEN))
    yield admin
    await admin.close()


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


async def status(url: str, token: str = TOKEN, *, json_out: bool = False) -> int:
    return await asyncio.to_thread(status_main, url, token, json_out=json_out)


def table_rows(out: str) -> dict[str, list[str]]:
    """The table's rows by target name, each cell's wrapped lines joined again."""
    rows: dict[str, list[str]] = {}
    last: list[str] = []
    for line in out.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0]:
            last = rows[cells[0]] = cells
        else:  # a long cell wrapped onto the next line
            last[:] = [f"{a} {b}".strip() for a, b in zip(last, cells, strict=True)]
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_prints_every_target_with_its_state_and_reason(
    server: AdminServer, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    now = asyncio.get_running_loop().time()
    runtime.force_down("alpha", 600, now, "drill before the maintenance window")
    runtime.drain("bravo", now)
    runtime.proxy.counters["calls"] += 7
    assert await status(server.url) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = table_rows(out)
    assert list(rows) == ["alpha", "bravo", "charlie"]
    _name, state, _since, reason, _faults, window, trips, left, calls, timer = rows["alpha"]
    assert state == "FORCED_DOWN"
    assert reason == "drill before the maintenance window"
    assert left.endswith("(revert)")
    assert (window, trips, calls, timer) == ("0/0", "0", "0", "2000")
    assert rows["bravo"][1:4:2] == ["DRAINED", "drained by operator"]
    assert rows["charlie"][1:4:2] == ["UP", "start"]
    assert rows["charlie"][7] == "-"
    assert "faults in a row" in out and "hold-down left" in out
    assert "counters: calls 7" in out
    assert "open: branches_pending 0, calls_unanswered 0, dialogs 0" in out


async def test_a_reason_with_brackets_is_printed_as_is(
    server: AdminServer, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    now = asyncio.get_running_loop().time()
    runtime.force_down("alpha", 60, now, "[bold]drill[/bold]")
    assert await status(server.url + "/") == 0
    assert "[bold]drill[/bold]" in capsys.readouterr().out


async def test_json_output(
    server: AdminServer, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime.drain("charlie", asyncio.get_running_loop().time())
    assert await status(server.url, json_out=True) == 0
    data = json.loads(capsys.readouterr().out)
    states = {t["name"]: t["state"] for t in data["targets"]}
    assert states == {"alpha": "UP", "bravo": "UP", "charlie": "DRAINED"}
    assert "counters" in data and "open" in data and "now" in data


async def test_no_router_answering(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert await status(url) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"trunkguard status: no router answering at {url} (connection refused)"


async def test_a_wrong_token_is_refused(
    server: AdminServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await status(server.url, "not-the-token") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"trunkguard status: token refused by {server.url}"


async def test_a_url_that_is_not_the_api(
    server: AdminServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await status(server.url + "/elsewhere") == 1
    err = capsys.readouterr().err
    assert "answered 404: no such endpoint" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("url", "token", "message"),
    [
        ("127.0.0.1:8080", TOKEN, "expected the admin API's URL"),
        ("ftp://127.0.0.1:8080", TOKEN, "expected the admin API's URL"),
        ("http://127.0.0.1:8080", "", "no admin token"),
        ("http://127.0.0.1:8080", "t\u00f6ken", "printable ASCII"),
    ],
)
def test_usage_errors_exit_2(
    url: str, token: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert status_main(url, token) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
