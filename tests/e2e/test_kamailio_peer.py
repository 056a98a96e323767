"""The Kamailio carrier peer (kamailio.py) against real clients, without the router.

SIPp registers and calls through it with digest auth, a Python client checks what SIPp
cannot (SHA-256 digests, TLS, TCP), and the controls (pause, restart) are checked from
outside. These pin down the peer that the router's registration, auth and TLS tests use.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import time
import uuid
from pathlib import Path

import pytest
from certs import Certificates, client_context, make_certificates
from kamailio import (
    AUTH_NO_CREDENTIALS,
    AUTH_OK,
    Kamailio,
    _group_members,
    free_tcp_ports,
    options_request,
    send_options,
    status_of,
)
from sipp import (
    HOST,
    Address,
    UacResult,
    count_responses,
    free_udp_ports,
    run_uac,
    start_uas,
    udp_port_bound,
)

pytestmark = pytest.mark.e2e

USERS = {"trunk1": "s3cret-1", "trunk2": "other:pass"}
SIPP_TIMEOUT = 15.0


def register(
    carrier: Kamailio, tmp_path: Path, user: str, password: str, expires: int = 10
) -> UacResult:
    """SIPp's uac_register.xml: one REGISTER with digest for AoR ``user``."""
    return run_uac(
        "uac_register",
        carrier.address,
        service=user,
        timeout=SIPP_TIMEOUT,
        extra_args=["-au", user, "-ap", password, "-key", "expires", str(expires)],
        tmp_root=tmp_path,
    )


# ------------------------------------------------------------------- a small UA


def _read_response(sock: socket.socket, call_id: str, timeout: float) -> str:
    """The next final response for ``call_id`` on a UDP socket (1xx are skipped)."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        text = sock.recv(65535).decode(errors="replace")
        if f"Call-ID: {call_id}" in text and status_of(text) not in (None, 100, 180, 183):
            return text
    raise TimeoutError(f"no final response for {call_id} in {timeout} s")


def _header(response: str, name: str) -> str:
    for line in response.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} in:\n{response}")


def _params(text: str) -> dict[str, str]:
    out = {}
    for match in re.finditer(r'\s*([\w-]+)=("([^"]*)"|[^,]*)\s*,?', text):
        out[match.group(1).lower()] = (
            match.group(3) if match.group(3) is not None else match.group(2).strip()
        )
    return out


def _digest(challenge: dict[str, str], method: str, uri: str, user: str, password: str) -> str:
    """An Authorization value for ``challenge`` (RFC 7616: MD5 or SHA-256, qop=auth)."""
    algorithm = challenge.get("algorithm", "MD5")
    hash_name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]

    def h(data: str) -> str:
        return hashlib.new(hash_name, data.encode()).hexdigest()

    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = h(f"{user}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in challenge.get("qop", "").split(","):
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += [f'cnonce="{cnonce}"', f"nc={nc}", "qop=auth"]
    else:
        response = h(f"{ha1}:{nonce}:{ha2}")
    parts += [f'response="{response}"', f"algorithm={algorithm}"]
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


def python_register(
    target: Address, user: str, password: str, expires: int = 10
) -> tuple[str | None, str]:
    """REGISTER, answer a 401 with a digest computed here: (challenge, final response);
    the challenge is None when the first REGISTER got a final answer other than 401."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        local = sock.getsockname()
        call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
        uri = f"sip:{target[0]}:{target[1]}"

        def request(cseq: int, extra: str = "") -> bytes:
            return (
                f"REGISTER {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:{user}@{target[0]}>;tag={tag}\r\n"
                f"To: <sip:{user}@{target[0]}>\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{user}@{local[0]}:{local[1]}>\r\n"
                f"Expires: {expires}\r\n"
                f"{extra}"
                "Content-Length: 0\r\n\r\n"
            ).encode()

        sock.sendto(request(1), target)
        first = _read_response(sock, call_id, 5.0)
        if status_of(first) != 401:
            return None, first
        challenge = _header(first, "WWW-Authenticate")
        authorization = _digest(_params(challenge[7:]), "REGISTER", uri, user, password)
        sock.sendto(request(2, f"Authorization: {authorization}\r\n"), target)
        return challenge, _read_response(sock, call_id, 5.0)


def stream_options(address: Address, context: ssl.SSLContext | None, timeout: float = 5.0) -> str:
    """An OPTIONS over TCP, or over TLS with ``context`` (server name carrier.test):
    returns the response's first line."""
    with socket.create_connection(address, timeout=timeout) as raw:
        sock: socket.socket = raw
        if context is not None:
            sock = context.wrap_socket(raw, server_hostname="carrier.test")
        with sock:
            transport = "TCP" if context is None else "TLS"
            call_id, request = options_request(address, sock.getsockname(), transport=transport)
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    text = data.decode(errors="replace")
    assert call_id in text, text
    return text.split("\r\n", 1)[0]


# ---------------------------------------------------------------------- registrar


def test_register_with_digest(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    with Kamailio(
        udp_port=udp, users=USERS, register_expires=(1, 60, 3600), tmp_root=tmp_path
    ) as carrier:
        assert not carrier.registered("trunk1")
        result = register(carrier, tmp_path, "trunk1", USERS["trunk1"], expires=10)

        assert result.ok, result.describe()
        assert carrier.registered("trunk1"), carrier.describe()
        registration = carrier.registration("trunk1")
        assert registration is not None
        assert registration.auth_user == "trunk1"
        assert 9 <= registration.expires <= 10, registration
        assert len(registration.contacts) == 1
        assert carrier.auth_results("REGISTER") == [AUTH_NO_CREDENTIALS, AUTH_OK]
        assert carrier.auth_failures() == 0
        assert carrier.requests("REGISTER") == 2
        assert carrier.sent(401, "REGISTER") == 1
        assert not carrier.registered("trunk2")


def test_registration_expires_within_bounds(tmp_path: Path) -> None:
    """min_expires raises a short request; max_expires caps a long one; a contact
    that is not refreshed expires."""
    (udp,) = free_udp_ports(1)
    with Kamailio(
        udp_port=udp, users=USERS, register_expires=(2, 5, 30), tmp_root=tmp_path
    ) as carrier:
        assert register(carrier, tmp_path, "trunk2", USERS["trunk2"], expires=3600).ok
        capped = carrier.registration("trunk2")
        assert capped is not None and 29 <= capped.expires <= 30, capped

        assert register(carrier, tmp_path, "trunk1", USERS["trunk1"], expires=1).ok
        raised = carrier.registration("trunk1")
        assert raised is not None and 1 <= raised.expires <= 2, raised
        assert carrier.registered("trunk1")
        # usrloc's timer (1 s here) drops the contact soon after it expires.
        assert carrier.wait_until(lambda: not carrier.registered("trunk1"), timeout=15)
        assert carrier.wait_until(
            lambda: any(e.get("aor") == "trunk1" for e in carrier.events("expired")),
            timeout=15,
        ), carrier.describe()
        assert carrier.registered("trunk2")


def test_interval_too_brief_423(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    with Kamailio(
        udp_port=udp,
        users=USERS,
        register_expires=(5, 10, 60),
        interval_too_brief=True,
        tmp_root=tmp_path,
    ) as carrier:
        challenge, final = python_register(carrier.address, "trunk1", USERS["trunk1"], expires=2)
        assert challenge is not None
        assert status_of(final) == 423, final
        assert _header(final, "Min-Expires") == "5"
        assert not carrier.registered("trunk1")
        assert [e.get("aor") for e in carrier.events("regfail")] == ["trunk1"]

        _, final = python_register(carrier.address, "trunk1", USERS["trunk1"], expires=5)
        assert status_of(final) == 200, final
        assert carrier.registered("trunk1")


def test_register_without_challenge(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    with Kamailio(udp_port=udp, challenge_register=False, tmp_root=tmp_path) as carrier:
        challenge, final = python_register(carrier.address, "anyone", "", expires=10)
        assert challenge is None
        assert status_of(final) == 200, final
        assert carrier.registered("anyone")
        assert carrier.auth_results() == []


def test_register_wrong_password_is_challenged_again(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    with Kamailio(udp_port=udp, users=USERS, tmp_root=tmp_path) as carrier:
        result = register(carrier, tmp_path, "trunk1", "wrong")

        assert not result.ok
        assert count_responses(result.messages, 401, "R", "REGISTER") == 2
        assert count_responses(result.messages, 200, "R", "REGISTER") == 0
        assert carrier.auth_failures("REGISTER") == 1, carrier.describe()
        assert not carrier.registered("trunk1")

        unknown = register(carrier, tmp_path, "nobody", "whatever")
        assert count_responses(unknown.messages, 401, "R", "REGISTER") == 2
        assert carrier.auth_failures("REGISTER") == 2
        assert carrier.auth_results("REGISTER")[-1] == -3  # user unknown


def test_refuse_register_403(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    with Kamailio(udp_port=udp, users=USERS, refuse_register=403, tmp_root=tmp_path) as carrier:
        result = register(carrier, tmp_path, "trunk1", "wrong")

        assert not result.ok
        assert count_responses(result.messages, 401, "R", "REGISTER") == 1
        assert count_responses(result.messages, 403, "R", "REGISTER") == 1
        assert carrier.sent(403, "REGISTER") == 1
        assert carrier.auth_failures() == 1
        # The right password still registers.
        assert register(carrier, tmp_path, "trunk1", USERS["trunk1"]).ok
        assert carrier.registered("trunk1")


def test_register_sha256_digest(tmp_path: Path) -> None:
    """SIPp computes MD5 only: a Python client answers the SHA-256 challenge."""
    (udp,) = free_udp_ports(1)
    with Kamailio(udp_port=udp, users=USERS, algorithm="SHA-256", tmp_root=tmp_path) as carrier:
        challenge, final = python_register(carrier.address, "trunk2", USERS["trunk2"])
        assert challenge is not None, final
        assert "algorithm=SHA-256" in challenge
        assert 'qop="auth"' in challenge
        assert status_of(final) == 200, final
        assert carrier.registered("trunk2"), carrier.describe()

        _, refused = python_register(carrier.address, "trunk2", "wrong")
        assert status_of(refused) == 401
        assert carrier.auth_failures() == 1


# -------------------------------------------------------------------------- calls


@pytest.mark.parametrize("code", [407, 401])
def test_invite_is_challenged_then_relayed(tmp_path: Path, code: int) -> None:
    udp, switch_port = free_udp_ports(2)
    with (
        start_uas("uas_answer", port=switch_port, tmp_root=tmp_path) as switch,
        Kamailio(
            udp_port=udp,
            users=USERS,
            challenge_invite=code,  # type: ignore[arg-type]
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as carrier,
    ):
        # Without credentials: the challenge is the final answer.
        bare = run_uac("uac_final", carrier.address, timeout=SIPP_TIMEOUT, tmp_root=tmp_path)
        assert bare.ok, bare.describe()
        assert bare.final_codes == [code]
        assert switch.received("INVITE") == 0

        # With credentials: challenge, then the call reaches the switch and completes.
        call = run_uac(
            "uac_call_auth",
            carrier.address,
            pause_ms=100,
            timeout=SIPP_TIMEOUT,
            extra_args=["-au", "trunk1", "-ap", USERS["trunk1"]],
            tmp_root=tmp_path,
        )
        assert call.ok, call.describe() + carrier.describe()
        assert (call.successful, call.failed) == (1, 0)
        assert count_responses(call.messages, code, "R") == 1
        assert count_responses(call.messages, 200, "R") == 1
        assert count_responses(call.messages, 200, "R", "BYE") == 1
        assert switch.wait_received("BYE", 1, timeout=5), switch.describe()
        assert switch.received("INVITE") == 1
        assert switch.received("ACK") == 1
        assert carrier.sent(code, "INVITE") == 2
        assert carrier.auth_results("INVITE")[-1] == AUTH_OK
        assert carrier.replies(200, "INVITE") == 1
        assert carrier.replies(200, "BYE") == 1
        assert carrier.requests("INVITE") == 3  # bare, challenged, authenticated


def test_invite_wrong_password_is_challenged_again(tmp_path: Path) -> None:
    udp, switch_port = free_udp_ports(2)
    with (
        start_uas("uas_answer", port=switch_port, tmp_root=tmp_path) as switch,
        Kamailio(
            udp_port=udp,
            users=USERS,
            challenge_invite=407,
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as carrier,
    ):
        call = run_uac(
            "uac_call_auth",
            carrier.address,
            timeout=SIPP_TIMEOUT,
            extra_args=["-au", "trunk1", "-ap", "wrong"],
            tmp_root=tmp_path,
        )
        assert not call.ok
        assert count_responses(call.messages, 407, "R") == 2
        assert carrier.auth_failures("INVITE") == 1
        assert switch.received("INVITE") == 0


def test_require_registration(tmp_path: Path) -> None:
    """uac_call's From user is "caller": refused until "caller" has registered."""
    udp, switch_port = free_udp_ports(2)
    with (
        start_uas("uas_answer", port=switch_port, tmp_root=tmp_path) as switch,
        Kamailio(
            udp_port=udp,
            users={"caller": "pw"},
            require_registration=True,
            forward_to=switch.address,
            tmp_root=tmp_path,
        ) as carrier,
    ):
        refused = run_uac("uac_final", carrier.address, timeout=SIPP_TIMEOUT, tmp_root=tmp_path)
        assert refused.final_codes == [403], refused.describe()
        assert switch.received("INVITE") == 0

        assert register(carrier, tmp_path, "caller", "pw").ok
        call = run_uac("uac_call", carrier.address, timeout=SIPP_TIMEOUT, tmp_root=tmp_path)
        assert call.ok, call.describe() + carrier.describe()
        assert call.final_codes == [200]
        assert switch.wait_received("BYE", 1, timeout=5)


def test_options_answered_over_udp_and_tcp(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    (tcp,) = free_tcp_ports(1)
    with Kamailio(udp_port=udp, tcp_port=tcp, tmp_root=tmp_path) as carrier:
        assert carrier.ping() == 200
        assert carrier.tcp_address is not None
        assert stream_options(carrier.tcp_address, None) == "SIP/2.0 200 OK"
        assert carrier.requests("OPTIONS") == 2  # the readiness probe is not counted


# ---------------------------------------------------------------------------- TLS


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "pki")


def tls_carrier(tmp_path: Path, cert: Path, key: Path, ca_file: Path | None = None) -> Kamailio:
    (udp,) = free_udp_ports(1)
    (tls,) = free_tcp_ports(1)
    return Kamailio(
        udp_port=udp,
        tls_port=tls,
        cert_file=cert,
        key_file=key,
        ca_file=ca_file,
        tmp_root=tmp_path,
    )


def test_tls_handshake_and_options(tmp_path: Path, certs: Certificates) -> None:
    with tls_carrier(tmp_path, certs.server_cert, certs.server_key) as carrier:
        assert carrier.tls_address is not None
        context = client_context(certs)
        with (
            socket.create_connection(carrier.tls_address, timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="carrier.test") as tls,
        ):
            peer = tls.getpeercert()
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert peer is not None
        assert ("DNS", "carrier.test") in peer["subjectAltName"]
        assert stream_options(carrier.tls_address, context) == "SIP/2.0 200 OK"
        assert any(e.get("proto") == "tls" for e in carrier.events("req"))


@pytest.mark.parametrize(
    ("which", "reason"),
    [("untrusted", "unable to get local issuer certificate"), ("wrong_name", "Hostname mismatch")],
)
def test_tls_bad_server_certificate_fails_verification(
    tmp_path: Path, certs: Certificates, which: str, reason: str
) -> None:
    cert, key = getattr(certs, f"{which}_cert"), getattr(certs, f"{which}_key")
    with tls_carrier(tmp_path, cert, key) as carrier:
        assert carrier.tls_address is not None
        with pytest.raises(ssl.SSLCertVerificationError, match=reason):
            stream_options(carrier.tls_address, client_context(certs))


def test_tls_client_certificate_required(tmp_path: Path, certs: Certificates) -> None:
    with tls_carrier(tmp_path, certs.server_cert, certs.server_key, certs.ca) as carrier:
        assert carrier.tls_address is not None
        with_cert = client_context(certs, with_client_cert=True)
        assert stream_options(carrier.tls_address, with_cert) == "SIP/2.0 200 OK"
        # TLS 1.3 reports the missing certificate after the handshake, on the first read.
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            stream_options(carrier.tls_address, client_context(certs))


# ------------------------------------------------------------------------ control


def test_pause_silences_and_resume_brings_back(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    with Kamailio(udp_port=udp, tmp_root=tmp_path) as carrier:
        assert carrier.ping() == 200
        carrier.pause()
        assert carrier.paused
        assert send_options(carrier.address, timeout=1.0) is None
        carrier.resume()
        assert carrier.wait_until(lambda: carrier.ping(timeout=0.5) == 200, timeout=10)


def test_restart_on_the_same_ports_forgets_registrations(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    (tcp,) = free_tcp_ports(1)
    with Kamailio(udp_port=udp, tcp_port=tcp, users=USERS, tmp_root=tmp_path) as carrier:
        assert register(carrier, tmp_path, "trunk1", USERS["trunk1"]).ok
        assert carrier.registered("trunk1")
        first = carrier.pid

        carrier.restart()
        assert carrier.pid != first
        assert carrier.ping() == 200
        assert carrier.tcp_address is not None
        assert stream_options(carrier.tcp_address, None) == "SIP/2.0 200 OK"
        assert not carrier.registered("trunk1")  # usrloc is in memory only
        assert carrier.requests("REGISTER") == 2  # the log spans both runs

        carrier.restart(kill=True)
        assert register(carrier, tmp_path, "trunk1", USERS["trunk1"]).ok
        assert carrier.registered("trunk1")


def test_close_leaves_no_process_and_frees_the_port(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    carrier = Kamailio(udp_port=udp, tmp_root=tmp_path).start()
    pid = carrier.pid
    assert pid is not None
    assert len(_group_members(pid)) > 1  # main process and workers
    carrier.pause()
    carrier.close()  # SIGKILL reaches stopped processes too
    assert _group_members(pid) == []
    assert not udp_port_bound(udp)


def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    (udp,) = free_udp_ports(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, udp))
        carrier = Kamailio(udp_port=udp, tmp_root=tmp_path)
        with pytest.raises(RuntimeError, match="exited"):
            carrier.start()
        carrier.close()
