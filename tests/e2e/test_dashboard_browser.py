"""The dashboard in headless Chromium (Playwright for Python on Debian's chromium).

A real router process with its admin API, three SIPp carriers (a, b, c) and a SIPp
caller. The browser logs in with the token, waits for the cards and takes a screenshot,
drains c with its button and sees the card say DRAINED (and the API agree), then, under
traffic, carrier a's SIPp is killed: a's card must leave UP, and the failover show up,
without the page being reloaded. Screenshots are written under the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from router import RouterProcess
from sipp import free_udp_ports, start_uac, start_uas

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Tests run as root (no sandbox); without the background-networking flags Chromium keeps
# trying to reach an internet the test machine does not have.
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 30_000  # generous: CI's two cores are often shared


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _api(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test does)"
)
def test_dashboard_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    pa, pb, pc = free_udp_ports(3)
    admin_port = _free_tcp_port()
    token = secrets.token_urlsafe(24)
    base = f"http://127.0.0.1:{admin_port}"
    extra = {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": token},
        # An UP target is probed every 30 s, so the calls, not a probe, meet the killed
        # carrier first (a loaded run had a probe find it, and no call failed over); out
        # targets are probed every 0.5 s, so they come back quickly.
        "probe": {"interval": 30, "interval_out": 0.5, "timeout": 0.5},
    }
    with (
        start_uas("uas_answer", port=pa, lifetime=180, tmp_root=tmp_path / "a") as a,
        start_uas("uas_answer", port=pb, lifetime=180, tmp_root=tmp_path / "b"),
        start_uas("uas_answer", port=pc, lifetime=180, tmp_root=tmp_path / "c"),
        RouterProcess(
            tmp_path / "router", [("a", pa), ("b", pb), ("c", pc)], extra=extra
        ) as router,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        caller = None
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            # -- login ------------------------------------------------------------------
            page.goto(base + "/")
            assert page.url == base + "/login"  # no session yet: the login form
            page.fill("#token", "not-the-token")
            page.click("button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("refused", timeout=WAIT_MS)
            page.fill("#token", token)
            page.click("button[type=submit]")
            for name in ("a", "b", "c"):
                expect(page.locator(f'.card[data-target="{name}"] .state')).to_have_text(
                    "UP", timeout=WAIT_MS
                )
            expect(page.locator("#stream-status")).to_have_text("live", timeout=WAIT_MS)
            assert token not in page.content()
            session = {c["name"]: c for c in page.context.cookies()}["tg_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict"
            assert session["value"] != token
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
            assert shot.stat().st_size > 10_000
            # Set once: a reload would wipe it, so it proves later updates came by the stream.
            page.evaluate("window.__sameDocument = 'yes'")

            # -- drain c with its button ---------------------------------------------------
            page.click('.card[data-target="c"] button.drain')
            expect(page.locator('.card[data-target="c"] .state')).to_have_text(
                "DRAINED", timeout=WAIT_MS
            )
            assert _api(f"{base}/api/targets/c", token)["state"] == "DRAINED"
            # Again: the API's 409 and its reason show on the page.
            page.click('.card[data-target="c"] button.drain')
            expect(page.locator("#message-text")).to_contain_text("409", timeout=WAIT_MS)
            expect(page.locator("#message-text")).to_contain_text("already DRAINED")
            # The timeline got the change through the stream.
            expect(page.locator('#timeline tr[data-target="c"]').first).to_contain_text(
                "UP → DRAINED", timeout=WAIT_MS
            )

            # -- kill carrier a under traffic ----------------------------------------------
            caller = start_uac(
                "uac_call", router.address, calls=600, rate=10, pause_ms=300, timeout=90,
                tmp_root=tmp_path / "caller",
            )  # fmt: skip
            assert a.wait_until(lambda: a.responses_sent(200) >= 10, timeout=30), a.describe()
            expect(page.locator('.card[data-target="a"] .state')).to_have_text("UP")
            a.kill()
            expect(page.locator('.card[data-target="a"] .state')).not_to_have_text(
                "UP", timeout=WAIT_MS
            )
            after_kill = page.locator('.card[data-target="a"] .state').inner_text()
            reason = page.locator('.card[data-target="a"] .reason').inner_text()
            # The calls that met the dead carrier moved to b: the failover list says so.
            failover = page.locator(".failover").first
            expect(failover).to_contain_text("a: ", timeout=WAIT_MS)
            expect(failover).to_contain_text("failed over")
            expect(failover.locator(".steps li").last).to_contain_text("b: 200")
            assert page.evaluate("window.__sameDocument") == "yes"  # never reloaded
            expect(page.locator("#stream-status")).to_have_text("live")
            api_a = _api(f"{base}/api/targets/a", token)
            assert api_a["state"] != "UP", api_a

            # -- restore c, then force it down for 3 s: the revert time shows, and it reverts
            page.click('.card[data-target="c"] button.restore')
            expect(page.locator('.card[data-target="c"] .state')).to_have_text(
                "UP", timeout=WAIT_MS
            )
            page.fill('.card[data-target="c"] input.seconds', "3")
            page.click('.card[data-target="c"] button.force-down')
            expect(page.locator('.card[data-target="c"] .state')).to_have_text(
                "FORCED_DOWN", timeout=WAIT_MS
            )
            expect(page.locator('.card[data-target="c"] .forced')).to_contain_text(
                "reverts by itself at"
            )
            assert _api(f"{base}/api/targets/c", token)["forced_until"] is not None
            expect(page.locator('.card[data-target="c"] .state')).to_have_text(
                "UP", timeout=WAIT_MS
            )  # by itself, through the stream

            # -- the router frozen (SIGSTOP): the page says the stream is gone, then, once
            # it runs again, reconnects by itself and shows the cards again.
            caller.close()
            router_pid = router._proc.pid if router._proc is not None else 0
            assert router_pid
            os.kill(router_pid, signal.SIGSTOP)
            try:
                expect(page.locator("#stream-status")).to_contain_text(
                    "disconnected", timeout=WAIT_MS
                )
            finally:
                os.kill(router_pid, signal.SIGCONT)
            expect(page.locator("#stream-status")).to_have_text("live", timeout=WAIT_MS)
            assert page.evaluate("window.__sameDocument") == "yes"
            shot2 = tmp_path / "dashboard-after-kill.png"
            page.screenshot(path=str(shot2), full_page=True)
            print(f"a after the kill: {after_kill} ({reason}); API: {api_a['state']}; "
                  f"screenshot {shot2}")  # fmt: skip
        finally:
            if caller is not None:
                caller.close()
            browser.close()
