"""Digest authentication and registration against SIPp carriers: the odd cases.

The router runs as a process (``trunkguard run``) between SIPp callers and SIPp
carriers on loopback. Each carrier here is a scenario of its own
(scenarios/uas_challenge.xml, uas_stale.xml, uas_double_challenge.xml,
uas_register.xml, uas_register_reject.xml): a 407 or a 401 on each INVITE, a stale
nonce, credentials that are never accepted, a registrar that challenges, one that
stops answering, one that refuses.

What each test checks comes from records the router does not write: the carrier's
full message trace (``-trace_msg``: CSeq, Call-ID, From tag, and the digest response
recomputed here with hashlib from the configured password), the caller's outcome
(SIPp's own statistics), plus the router's event log read through ``trunkguard
events --json`` and its admin API. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from router import RouterProcess
from sipp import (
    SipMessage,
    free_udp_ports,
    run_uac,
    scenario_path,
    start_uas,
    tag_of,
)

pytestmark = pytest.mark.e2e

USER = "trunk-7001"
PASSWORD = "s3cret-Pa55"
REALM = "carrier.test"
TOKEN = "auth-e2e-token-0123456789"
CALLS = 4


# ------------------------------------------------------------------------------ digest


def digest_params(value: str) -> dict[str, str]:
    """The parameters of a ``Digest ...`` credentials or challenge header, unquoted."""
    scheme, _, rest = value.strip().partition(" ")
    assert scheme.lower() == "digest", value
    params = {}
    for m in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))', rest):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return params


def expected_response(params: dict[str, str], method: str, password: str) -> str:
    """RFC 7616 (and 2617) with qop=auth, recomputed from the password."""
    algorithm = params.get("algorithm", "MD5").upper()
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]

    def h(text: str) -> str:
        return hashlib.new(name, text.encode()).hexdigest()

    ha1 = h(f"{params['username']}:{params['realm']}:{password}")
    ha2 = h(f"{method}:{params['uri']}")
    if params.get("qop") == "auth":
        return h(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    return h(f"{ha1}:{params['nonce']}:{ha2}")


def check_credentials(
    header: str | None, challenge: str, method: str, password: str = PASSWORD
) -> dict[str, str]:
    """``header`` answers ``challenge`` (same realm and nonce) with a digest that verifies."""
    assert header is not None, f"no credentials answering {challenge}"
    got, asked = digest_params(header), digest_params(challenge)
    assert got["username"] == USER, got
    assert (got["realm"], got["nonce"]) == (asked["realm"], asked["nonce"]), (got, asked)
    assert got.get("qop") == "auth" and re.fullmatch(r"[0-9a-f]{8}", got["nc"]), got
    assert got["response"] == expected_response(got, method, password), got
    return got


def cseq_number(message: SipMessage) -> int:
    value = message.header("CSeq")
    assert value is not None, message.text
    return int(value.split()[0])


def call_id(message: SipMessage) -> str:
    value = message.header("Call-ID")
    assert value is not None, message.text
    return value


def by_call(messages: Sequence[SipMessage]) -> dict[str, list[SipMessage]]:
    """Messages grouped by Call-ID, in trace order; OPTIONS keepalives left out."""
    out: dict[str, list[SipMessage]] = {}
    for m in messages:
        cseq = m.header("CSeq") or ""
        if cseq.endswith("OPTIONS"):
            continue
        out.setdefault(call_id(m), []).append(m)
    return out


def received_requests(messages: Sequence[SipMessage], method: str) -> list[SipMessage]:
    """Distinct ``method`` requests received (a retransmission, same CSeq and branch, once)."""
    seen: set[tuple[str, int, str]] = set()
    out = []
    for m in messages:
        if m.direction != "R" or not m.first_line.startswith(f"{method} "):
            continue
        key = (call_id(m), cseq_number(m), m.header("Via") or "")
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def status_of(message: SipMessage) -> int | None:
    line = message.first_line
    return int(line.split()[1]) if line.startswith("SIP/2.0 ") else None


def call_errors(log: str) -> list[str]:
    """Lines of a SIPp error log about calls (aborted, unexpected or late messages); its
    watchdog warnings on a busy machine are left out."""
    words = ("Aborting", "nexpected", "Dead call")
    return [line for line in log.splitlines() if any(w in line for w in words)]


def challenge_scenario(directory: Path, code: int) -> Path:
    """uas_challenge.xml as it stands (407), or its 401 / WWW-Authenticate copy."""
    source = scenario_path("uas_challenge")
    if code == 407:
        return source
    text = source.read_text(encoding="iso-8859-1")
    for old, new in (
        ("SIP/2.0 407 Proxy Authentication Required\n", "SIP/2.0 401 Unauthorized\n"),
        ("\nProxy-Authenticate: Digest", "\nWWW-Authenticate: Digest"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "uas_challenge_401.xml"
    target.write_text(text, encoding="iso-8859-1")
    return target


# ------------------------------------------------------------------------- the router


def carrier(name: str, port: int, **more: object) -> dict[str, object]:
    return {"name": name, "uri": f"sip:127.0.0.1:{port}", **more}


def auth_block() -> dict[str, object]:
    return {"user": USER, "password": PASSWORD, "realm": REALM}


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def admin(port: int) -> dict[str, object]:
    return {"admin": {"listen": f"127.0.0.1:{port}", "token": TOKEN}}


def api(port: int, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def target_state(port: int, name: str) -> str:
    states = {t["name"]: t["state"] for t in api(port, "/api/targets")["targets"]}
    return str(states[name])


def events(router: RouterProcess) -> list[dict[str, Any]]:
    """``trunkguard events --db ... --json``: state changes and notices, oldest first."""
    db = router.workdir / "events.db"
    if not db.exists():
        return []
    done = subprocess.run(
        [sys.executable, "-m", "trunkguard", "events", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def alarms(rows: Sequence[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("notice") == "alarm" and r["target"] == target]


def changes(rows: Sequence[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    return [r for r in rows if "notice" not in r and r["target"] == target]


def timeline(rows: Sequence[dict[str, Any]], origin: float) -> str:
    out = []
    for r in rows:
        if "notice" in r:
            out.append(
                f"+{r['at'] - origin:.2f}s {r['target']} {r['notice']} {r['state']}: {r['detail']}"
            )
        else:
            out.append(
                f"+{r['at'] - origin:.2f}s {r['target']} {r['old']}->{r['new']} ({r['reason']})"
            )
    return "; ".join(out) or "no events"


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


# ---------------------------------------------------------------- 1. 401/407 on INVITE


@dataclass(frozen=True)
class ChallengedCall:
    """One call as the challenging carrier saw it."""

    call_id: str
    first_cseq: int
    second_cseq: int
    bye_cseq: int
    nc: str


def check_challenged_calls(messages: Sequence[SipMessage], code: int) -> list[ChallengedCall]:
    """Per call: INVITE, challenge, INVITE with CSeq + 1, same Call-ID and From tag, and
    credentials that verify; then the BYE numbered on the carrier's side."""
    header = "Proxy-Authorization" if code == 407 else "Authorization"
    challenge_header = "Proxy-Authenticate" if code == 407 else "WWW-Authenticate"
    out = []
    for cid, msgs in by_call(messages).items():
        invites = received_requests(msgs, "INVITE")
        assert len(invites) == 2, f"{cid}: {[m.first_line for m in invites]}"
        first, second = invites
        challenges = [m for m in msgs if m.direction == "S" and status_of(m) == code]
        assert challenges, f"{cid}: no {code} sent"
        challenge = challenges[0].header(challenge_header)
        assert challenge is not None
        assert first.header(header) is None, first.text
        assert cseq_number(second) == cseq_number(first) + 1, (first.text, second.text)
        assert call_id(second) == call_id(first)
        assert tag_of(second.header("From") or "") == tag_of(first.header("From") or "")
        assert tag_of(second.header("To") or "") is None, second.text
        uri = second.first_line.split()[1]
        got = check_credentials(second.header(header), challenge, "INVITE")
        assert got["uri"] == uri, (got, uri)
        acks = {cseq_number(m) for m in received_requests(msgs, "ACK")}
        assert acks == {cseq_number(first), cseq_number(second)}, f"{cid}: ACKs {acks}"
        byes = received_requests(msgs, "BYE")
        assert len(byes) == 1, f"{cid}: {[m.first_line for m in byes]}"
        out.append(
            ChallengedCall(
                cid, cseq_number(first), cseq_number(second), cseq_number(byes[0]), got["nc"]
            )
        )
    return out


@pytest.mark.parametrize("code", [407, 401])
def test_a_challenged_invite_goes_again_with_credentials(tmp_path: Path, code: int) -> None:
    started = time.monotonic()
    (carrier_port,) = free_udp_ports(1)
    scenario = challenge_scenario(tmp_path / "scenario", code)
    with (
        start_uas(
            scenario,
            port=carrier_port,
            trace_messages=True,
            tmp_root=tmp_path,
        ) as uas,
        RouterProcess(
            tmp_path / "router",
            [("a", carrier_port)],
            extra={"carriers": [carrier("a", carrier_port, auth=auth_block())]},
        ) as router,
    ):
        result = run_uac(
            "uac_call",
            router.address,
            calls=CALLS,
            rate=4,
            timeout=15,
            trace_messages=True,
            tmp_root=tmp_path,
        )
        assert uas.wait_until(lambda: uas.responses_sent(200, "BYE") >= CALLS, 5), uas.describe()
        counters = router.stop()
        carrier_messages = uas.messages()
        carrier_errors = uas.errors()
    assert result.ok, result.describe()
    assert (result.successful, result.failed) == (CALLS, 0), result.describe()
    assert call_errors(carrier_errors) == [], carrier_errors
    calls = check_challenged_calls(carrier_messages, code)
    assert len(calls) == CALLS
    # The caller numbered INVITE 1 and BYE 2; the carrier saw INVITE 1, INVITE 2 and BYE 3.
    for call in calls:
        assert call.second_cseq == call.first_cseq + 1
        assert call.bye_cseq == call.second_cseq + 1, call
    caller_byes = {m.cseq_number for m in result.messages if m.method == "BYE"}
    bye_answers = {
        (m.cseq_number, m.status)
        for m in result.messages
        if m.direction == "R" and m.cseq_method == "BYE"
    }
    assert caller_byes == {2} and bye_answers == {(2, 200)}, (caller_byes, bye_answers)
    assert counters.get("auth_challenges_answered") == CALLS, counters
    assert not [k for k in counters if k.startswith(("alarms:", "auth_failures:"))], counters
    first = calls[0]
    print(
        f"{code} on INVITE: {result.successful}/{CALLS} calls answered, 0 failed; carrier saw "
        f"per call INVITE CSeq {first.first_cseq} -> {code} -> INVITE CSeq {first.second_cseq} "
        f"(same Call-ID and From tag, digest nc={first.nc} verified) and BYE CSeq "
        f"{first.bye_cseq} (caller sent 2); auth_challenges_answered "
        f"{counters['auth_challenges_answered']} ({time.monotonic() - started:.1f}s)"
    )


# ----------------------------------------------------------------------- 2. stale nonce


def test_a_stale_nonce_is_answered_again_without_an_alarm(tmp_path: Path) -> None:
    started = time.monotonic()
    (carrier_port,) = free_udp_ports(1)
    admin_port = free_tcp_port()
    with (
        start_uas("uas_stale", port=carrier_port, trace_messages=True, tmp_root=tmp_path) as uas,
        RouterProcess(
            tmp_path / "router",
            [("a", carrier_port)],
            extra={
                "carriers": [carrier("a", carrier_port, auth=auth_block())],
                **admin(admin_port),
            },
        ) as router,
    ):
        result = run_uac(
            "uac_call",
            router.address,
            calls=CALLS,
            rate=4,
            timeout=15,
            tmp_root=tmp_path,
        )
        assert uas.wait_until(lambda: uas.responses_sent(200, "BYE") >= CALLS, 5), uas.describe()
        state = target_state(admin_port, "a")
        counters = router.stop()
        carrier_messages = uas.messages()
        carrier_errors = uas.errors()
    assert result.ok, result.describe()
    assert (result.successful, result.failed) == (CALLS, 0), result.describe()
    assert call_errors(carrier_errors) == [], carrier_errors
    calls = by_call(carrier_messages)
    assert len(calls) == CALLS
    for cid, msgs in calls.items():
        invites = received_requests(msgs, "INVITE")
        assert [cseq_number(m) for m in invites] == [1, 2, 3], f"{cid}: {invites}"
        assert len({tag_of(m.header("From") or "") for m in invites}) == 1
        challenges = [
            m.header("WWW-Authenticate") for m in msgs if m.direction == "S" and status_of(m) == 401
        ]
        first_nonce, stale_nonce = (digest_params(c or "")["nonce"] for c in challenges[:2])
        assert first_nonce != stale_nonce
        assert invites[0].header("Authorization") is None
        for invite, challenge in zip(invites[1:], challenges[:2], strict=True):
            got = check_credentials(invite.header("Authorization"), challenge or "", "INVITE")
            # A new nonce starts its count again (RFC 7616 3.4).
            assert got["nc"] == "00000001", got
        byes = received_requests(msgs, "BYE")
        assert [cseq_number(m) for m in byes] == [4], f"{cid}: {byes}"
    rows = events(router)
    assert alarms(rows, "a") == [], timeline(rows, 0)
    assert changes(rows, "a") == [], timeline(rows, 0)
    assert state == "UP"
    assert counters.get("auth_stale_nonce:a") == CALLS, counters
    assert counters.get("auth_challenges_answered") == 2 * CALLS, counters
    assert not [k for k in counters if k.startswith(("alarms:", "auth_failures:"))], counters
    print(
        f"stale nonce: {result.successful}/{CALLS} calls answered, 0 failed; per call the "
        f"carrier saw INVITE CSeq 1 -> 401, CSeq 2 (nonce A, verified) -> 401 stale=true, "
        f"CSeq 3 (nonce B, nc=00000001, verified) -> 200, BYE CSeq 4; "
        f"auth_stale_nonce {counters['auth_stale_nonce:a']}, no alarm, no state change, "
        f"a {state} ({time.monotonic() - started:.1f}s)"
    )


# ------------------------------------------------------------ 3. credentials rejected


def test_credentials_rejected_fail_over_and_raise_one_alarm(tmp_path: Path) -> None:
    started = time.monotonic()
    a_port, b_port = free_udp_ports(2)
    admin_port = free_tcp_port()
    calls = 8
    faults_to_trip = 5  # health.consecutive_faults, the router's default
    with (
        start_uas("uas_double_challenge", port=a_port, trace_messages=True, tmp_root=tmp_path) as a,
        start_uas("uas_answer", port=b_port, tmp_root=tmp_path) as b,
        RouterProcess(
            tmp_path / "router",
            [("a", a_port), ("b", b_port)],
            extra={
                "carriers": [carrier("a", a_port, auth=auth_block()), carrier("b", b_port)],
                **admin(admin_port),
            },
        ) as router,
    ):
        result = run_uac(
            "uac_call",
            router.address,
            calls=calls,
            rate=4,
            limit=1,
            timeout=20,
            tmp_root=tmp_path,
        )
        assert b.wait_until(lambda: b.responses_sent(200, "BYE") >= calls, 5), b.describe()
        state = target_state(admin_port, "a")
        counters = router.stop()
        a_messages = a.messages()
        a_short = a.short_messages()
        a_errors = a.errors()
    assert result.ok, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()
    assert b.received("INVITE") == calls
    assert call_errors(a_errors) == [], a_errors
    per_call = by_call(a_messages)
    # Each call tried a: INVITE, 407, INVITE with credentials, 407 again; no third INVITE.
    for cid, msgs in per_call.items():
        invites = received_requests(msgs, "INVITE")
        assert [cseq_number(m) for m in invites] == [1, 2], f"{cid}: {invites}"
        challenge = next(m.header("Proxy-Authenticate") for m in msgs if m.direction == "S")
        check_credentials(invites[1].header("Proxy-Authorization"), challenge or "", "INVITE")
    # a took calls until its consecutive faults tripped it; the rest went to b directly.
    assert len(per_call) == faults_to_trip, f"a saw {len(per_call)} calls"
    rows = events(router)
    raised = alarms(rows, "a")
    assert len(raised) == 1, timeline(rows, 0)
    assert raised[0]["state"] == "credentials", raised
    assert PASSWORD not in json.dumps(rows)
    moves = changes(rows, "a")
    assert [(r["old"], r["new"]) for r in moves] == [("UP", "DOWN")], timeline(moves, 0)
    assert state == "DOWN"
    assert counters.get("auth_failures:a") == faults_to_trip, counters
    assert counters.get("alarms:a") == 1, counters
    origin = min(m.time for m in a_short if m.method == "INVITE")
    print(
        f"credentials rejected: {result.successful}/{calls} calls answered (by b), 0 failed; "
        f"a saw {len(per_call)} calls, each INVITE -> 407 -> INVITE with verified "
        f"credentials -> 407, no third INVITE; one alarm at +{raised[0]['at'] - origin:.2f}s "
        f"({raised[0]['detail']}), none after; health.consecutive_faults {faults_to_trip} "
        f"took a DOWN at +{moves[0]['at'] - origin:.2f}s ({moves[0]['reason']}); "
        f"auth_failures:a {counters['auth_failures:a']} ({time.monotonic() - started:.1f}s)"
    )
