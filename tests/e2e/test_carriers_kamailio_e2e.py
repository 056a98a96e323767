"""Real carriers, end to end: the router registers to Kamailio, answers its challenges, talks TLS.

Kamailio (tests/e2e/kamailio.py) plays the carrier: a registrar with digest credentials,
challenging INVITEs with 401 or 407, over UDP or TLS with a certificate from a test CA,
relaying the calls it accepts to a SIPp switch. SIPp is the caller. Each test prints what
it measured.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
from certs import client_context, make_certificates
from kamailio import Kamailio, free_tcp_port
from router import RouterProcess
from sipp import free_udp_ports, run_uac, start_uas

pytestmark = pytest.mark.e2e

USER, PASSWORD = "trunk1", "s3cret-Pa55"


def _fast_health() -> dict[str, object]:
    return {
        "health": {"hold_down": 1, "hold_down_max": 4, "probe_successes": 2, "trial_calls": 3},
        "probe": {"interval": 1, "interval_out": 0.5, "timeout": 1},
    }


def test_register_then_call_through_a_registering_carrier(tmp_path: Path) -> None:
    k_port, switch_port = free_udp_ports(2)
    with (
        start_uas("uas_answer", port=switch_port, tmp_root=tmp_path) as switch,
        Kamailio(
            udp_port=k_port,
            users={USER: PASSWORD},
            require_registration=True,  # calls only from the registered account,
            challenge_invite=407,  # known by the credentials it answers with
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as carrier,
    ):
        (tmp_path / "k.pw").write_text(PASSWORD + "\n")
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [
                    {
                        "name": "k",
                        "uri": carrier.uri(),
                        "register": {
                            "user": USER,
                            "password_file": str(tmp_path / "k.pw"),
                            "expires": 60,
                        },
                    }
                ],
            },
        )
        with router:
            started = time.monotonic()
            assert carrier.wait_until(lambda: carrier.registered(USER), timeout=10)
            took = time.monotonic() - started
            result = run_uac("uac_call", router.address, calls=20, rate=10, timeout=30)
            print(
                f"\nregistered with Kamailio {took * 1000:.0f} ms after start; "
                f"{result.successful}/20 calls completed through it, {result.failed} failed"
            )
            assert (result.successful, result.failed) == (20, 0)
            assert switch.received("INVITE") == 20
        # A clean stop unregisters (Expires: 0).
        assert carrier.wait_until(lambda: not carrier.registered(USER), timeout=5)
        assert PASSWORD not in router.log_path.read_text(errors="replace")
        print("unregistered at shutdown; the password is nowhere in the router's log")


@pytest.mark.parametrize("challenge", [401, 407])
def test_invite_challenged_completes_with_credentials(tmp_path: Path, challenge: int) -> None:
    k_port, switch_port = free_udp_ports(2)
    with (
        start_uas("uas_answer", port=switch_port, tmp_root=tmp_path) as switch,
        Kamailio(
            udp_port=k_port,
            users={USER: PASSWORD},
            challenge_invite=challenge,
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as carrier,
    ):
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [
                    {
                        "name": "k",
                        "uri": carrier.uri(),
                        "auth": {"user": USER, "password": PASSWORD},
                    }
                ],
            },
        )
        with router:
            result = run_uac("uac_call", router.address, calls=10, rate=10, timeout=30)
        print(
            f"\nINVITE challenged with {challenge}: {result.successful}/10 calls completed, "
            f"{carrier.auth_failures()} credentials refused by Kamailio, "
            f"{switch.received('BYE')} BYEs reached the switch"
        )
        assert (result.successful, result.failed) == (10, 0)
        assert carrier.auth_failures() == 0
        assert switch.received("INVITE") == 10 and switch.received("BYE") == 10


def test_registrar_stops_answering_then_comes_back(tmp_path: Path) -> None:
    k_port, switch_port, b_port = free_udp_ports(3)
    expires, timeout, lost_after = 6, 1.0, 3
    with (
        start_uas("uas_answer", port=switch_port, tmp_root=tmp_path) as switch,
        start_uas("uas_answer", port=b_port, lifetime=120, tmp_root=tmp_path) as b,
        Kamailio(
            udp_port=k_port,
            users={USER: PASSWORD},
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as carrier,
    ):
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [
                    {
                        "name": "k",
                        "uri": carrier.uri(),
                        "priority": 0,
                        "register": {
                            "user": USER,
                            "password": PASSWORD,
                            "expires": expires,
                            "timeout": timeout,
                            "lost_after": lost_after,
                        },
                    },
                    {"name": "b", "uri": f"sip:127.0.0.1:{b_port}"},
                ],
                **_fast_health(),
            },
        )
        with router:
            assert carrier.wait_until(lambda: carrier.registered(USER), timeout=10)
            carrier.pause()
            paused = time.time()  # the event log's clock
            result = run_uac("uac_call", router.address, calls=200, rate=20, timeout=40)
            lost = router.wait_log("registration lost", 1)
            assert lost is not None, router.log()
            carrier.resume()
            resumed = time.time()
            # Calls go on: the trial calls that bring k back are some of them.
            after = run_uac("uac_call", router.address, calls=160, rate=20, timeout=40)
            back = router.wait_log("k: PROBING -> UP", 10)
            assert back is not None, router.log()
        events = [e for e in router.events() if e.get("target") == "k"]
        moves = [(e.get("old"), e.get("new"), e.get("reason")) for e in events if "new" in e]
        notices = [(e["state"], e["detail"]) for e in events if "notice" in e]
        print(
            f"\nKamailio paused: {result.successful}/200 calls answered, {result.failed} failed;"
            f" after it came back: {after.successful}/160, {after.failed} failed"
        )
        for move in moves:
            print("  k:", move)
        for notice in notices:
            print("  registration:", notice)
        assert (result.successful, result.failed) == (200, 0)
        assert (after.successful, after.failed) == (160, 0)
        assert b.received("INVITE") > 0
        assert ("FAILED", f"registration lost: {lost_after} REGISTER timeouts") in notices
        # Out within one refresh interval (expires/2) plus the timeouts that prove it; a
        # silent carrier is found sooner by its calls and keepalives.
        down = next(e for e in events if e.get("new") == "DOWN")
        took = float(str(down["at"])) - paused
        limit = expires / 2 + lost_after * timeout + 2
        print(
            f"  out {took:.2f}s after Kamailio went silent (bound {limit:.1f}s: refresh "
            f"{expires / 2:.0f}s + {lost_after} x {timeout:.0f}s timeouts + 2s)"
        )
        assert took <= limit
        # Back only once registered again, then through probes and trial calls.
        registered = [float(str(e["at"])) for e in events if e.get("state") == "REGISTERED"]
        up = next(e for e in reversed(events) if e.get("new") == "UP")
        assert up["reason"] == "3 trial calls answered"
        assert any(resumed <= t <= float(str(up["at"])) for t in registered)
        print(f"  UP again {float(str(up['at'])) - resumed:.2f}s after Kamailio resumed")


def test_bad_credentials_alarm_once_and_back_off(tmp_path: Path) -> None:
    (k_port,) = free_udp_ports(1)
    with Kamailio(udp_port=k_port, users={USER: PASSWORD}, tmp_root=tmp_path) as carrier:
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [
                    {
                        "name": "k",
                        "uri": carrier.uri(),
                        "register": {"user": USER, "password": "wrong-password", "expires": 60},
                    }
                ],
            },
        )
        with router:
            time.sleep(8.0)  # the window the backoff is judged over
            registers = carrier.requests("REGISTER")
        events = [e for e in router.events() if e.get("target") == "k"]
        alarms = [e for e in events if e.get("notice") == "alarm"]
        downs = [e for e in events if e.get("new") == "DOWN"]
        print(
            f"\nwrong password: {registers} REGISTERs in 8 s (each attempt is two: bare, then "
            f"with credentials), {len(alarms)} alarm, DOWN: {downs[0]['reason'] if downs else None}"
        )
        assert len(alarms) == 1
        assert downs and downs[0]["reason"] == "registration refused: 401 (credentials rejected)"
        # Backoff 1 s, 2 s, 4 s...: at most 4 attempts in 8 s, not one per retransmission.
        assert 2 <= registers <= 10
        assert "wrong-password" not in router.log_path.read_text(errors="replace")


def test_tls_carrier_good_and_bad_certificate(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    k_udp, k2_udp, switch_port, b_port = free_udp_ports(4)
    tls_port, bad_tls_port = free_tcp_port(), free_tcp_port()
    with (
        start_uas("uas_answer", port=switch_port, tmp_root=tmp_path) as switch,
        start_uas("uas_answer", port=b_port, tmp_root=tmp_path) as b,
        Kamailio(
            udp_port=k_udp,
            tls_port=tls_port,
            cert_file=certs.server_cert,
            key_file=certs.server_key,
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as good,
        Kamailio(
            udp_port=k2_udp,
            tls_port=bad_tls_port,
            cert_file=certs.untrusted_cert,
            key_file=certs.untrusted_key,
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as bad,
    ):
        tls = {"ca_file": str(certs.ca), "server_name": "carrier.test"}
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [
                    {"name": "good", "uri": good.uri("tls"), "tls": tls},
                ],
                "probe": {"enabled": False},
            },
        )
        with router:
            result = run_uac("uac_call", router.address, calls=10, rate=10, timeout=30)
        print(f"\nTLS carrier, test CA: {result.successful}/10 calls completed")
        assert (result.successful, result.failed) == (10, 0)
        assert switch.received("INVITE") == 10
        router = RouterProcess(
            tmp_path / "router-bad",
            [],
            extra={
                "carriers": [
                    {"name": "bad", "uri": bad.uri("tls"), "tls": tls},
                    {"name": "b", "uri": f"sip:127.0.0.1:{b_port}"},
                ],
                "probe": {"enabled": False},
            },
        )
        with router:
            result = run_uac("uac_call", router.address, calls=10, rate=10, timeout=30)
        (down,) = [e for e in router.events() if e.get("target") == "bad" and "new" in e]
        print(f"bad certificate: {down['new']}: {down['reason']}; {result.successful}/10 via b")
        assert (result.successful, result.failed) == (10, 0)
        assert b.received("INVITE") == 10
        assert "certificate verify failed" in str(down["reason"])


def test_tls_client_certificate_toward_a_carrier_that_requires_one(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    k_udp, switch_port = free_udp_ports(2)
    tls_port = free_tcp_port()
    with (
        start_uas("uas_answer", port=switch_port, tmp_root=tmp_path) as switch,
        Kamailio(
            udp_port=k_udp,
            tls_port=tls_port,
            cert_file=certs.server_cert,
            key_file=certs.server_key,
            ca_file=certs.ca,  # callers must show a certificate from the test CA
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as carrier,
    ):
        tls = {
            "ca_file": str(certs.ca),
            "server_name": "carrier.test",
            "cert_file": str(certs.client_cert),
            "key_file": str(certs.client_key),
        }
        router = RouterProcess(
            tmp_path / "router",
            [],
            extra={
                "carriers": [{"name": "k", "uri": carrier.uri("tls"), "tls": tls}],
                "probe": {"enabled": False},
            },
        )
        with router:
            result = run_uac("uac_call", router.address, calls=5, rate=5, timeout=30)
        print(f"\nTLS with our client certificate: {result.successful}/5 calls completed")
        assert (result.successful, result.failed) == (5, 0)


def _read_until(sock: ssl.SSLSocket, needle: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    while needle not in data and time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_tls_listener_serves_a_caller(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    (carrier_port,) = free_udp_ports(1)
    with start_uas("uas_reject", port=carrier_port, reject_code=486, tmp_root=tmp_path) as c:
        router = RouterProcess(
            tmp_path / "router",
            [("c", carrier_port)],
            extra={
                "listen": ["udp:127.0.0.1:0", "tls:127.0.0.1:0"],
                "tls": {"cert_file": str(certs.server_cert), "key_file": str(certs.server_key)},
                "probe": {"enabled": False},
            },
        )
        with router:
            (tls_port,) = [p for t, _, p in router.bound if t == "tls"]
            context = client_context(certs)
            with (
                socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="carrier.test") as sock,
            ):
                local = sock.getsockname()
                head = (
                    f"Via: SIP/2.0/TLS 127.0.0.1:{local[1]};branch=z9hG4bK-tls{{n}}\r\n"
                    f"From: <sip:agent@127.0.0.1>;tag=tls1\r\n"
                    f"Call-ID: tls-caller-{local[1]}\r\nMax-Forwards: 70\r\n"
                )
                sock.sendall(
                    (
                        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
                        + head.replace("{n}", "1")
                        + "To: <sip:127.0.0.1>\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                    ).encode()
                )
                options = _read_until(sock, b"\r\n\r\n", 5)
                sock.sendall(
                    (
                        "INVITE sip:15551234567@127.0.0.1 SIP/2.0\r\n"
                        + head.replace("{n}", "2")
                        + "To: <sip:15551234567@127.0.0.1>\r\nCSeq: 2 INVITE\r\n"
                        f"Contact: <sip:agent@127.0.0.1:{local[1]};transport=tls>\r\n"
                        "Content-Length: 0\r\n\r\n"
                    ).encode()
                )
                invite = _read_until(sock, b"SIP/2.0 486", 10)
        print(
            f"\nTLS listener: OPTIONS -> {options.split(b' ', 2)[1].decode()}, INVITE over TLS "
            f"reached the carrier ({c.received('INVITE')} INVITE) and its 486 came back"
        )
        assert options.startswith(b"SIP/2.0 200")
        assert b"SIP/2.0 486" in invite
        assert c.received("INVITE") == 1
