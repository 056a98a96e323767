"""Digest authentication and registration against SIPp carriers: the odd cases.

The router runs as a process (``trunkguard run``) between SIPp callers and SIPp
carriers on loopback. Each carrier here is a scenario of its own
(scenarios/uas_challenge.xml, uas_stale.xml, uas_double_challenge.xml,
uas_register.xml, uas_register_reject.xml): a 407 or a 401 on each INVITE, a stale
nonce, credentials that are never accepted, a registrar that challenges, one that
stops answering, one that refuses.

What each test checks comes first from records the router does not write: the
carrier's full message trace (``-trace_msg``: CSeq, Call-ID, From tag, Expires,
Contact, and each digest response recomputed here with hashlib from the configured
password) and the caller's outcome (SIPp's own statistics). What the router says about
it comes from its event log, read through ``trunkguard events --json``, its admin API
and its counters at stop; none of them, nor its log, may show the password or a digest
response. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kamailio import free_tcp_port
from router import RouterProcess
from sipp import (
    SipMessage,
    Uas,
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
# The router stamps events from the event loop's clock (millisecond steps), mapped to the
# wall clock once: a router time is within this of SIPp's for the same instant.
ROUTER_CLOCK_STEP = 0.002


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


def check_no_secrets(router: RouterProcess, responses: Sequence[str]) -> None:
    """The router's whole log holds neither the password nor a digest response."""
    log = router.log_path.read_text(errors="replace")
    for secret in (PASSWORD, *responses):
        assert secret not in log, f"{secret!r} in the router's log"


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
    response: str


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
                cid,
                cseq_number(first),
                cseq_number(second),
                cseq_number(byes[0]),
                got["nc"],
                got["response"],
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
    assert result.final_codes == [200] * CALLS, result.describe()
    assert call_errors(carrier_errors) == [], carrier_errors
    calls = check_challenged_calls(carrier_messages, code)
    assert len(calls) == CALLS
    check_no_secrets(router, [c.response for c in calls])
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
    rows = router.events()
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
    rows = router.events()
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


# -------------------------------------------------------------------- 4. registration

CONTACT_USER = "tg-edge-1"
REGISTER_TIMEOUT = 1.0  # register.timeout
LOST_AFTER = 3  # register.lost_after (the default)
# The router's retry after a REGISTER timeout, while still registered: a quarter of the
# timeout (register/_client.py).
RETRY_GAP = REGISTER_TIMEOUT / 4


@dataclass(frozen=True)
class Register:
    """One REGISTER the registrar received (retransmissions once), and what it answered."""

    time: float
    cseq: int
    message: SipMessage
    answer: int | None
    challenge: str | None  # the WWW-Authenticate of the 401 that preceded it, if any

    @property
    def expires(self) -> int | None:
        value = self.message.header("Expires")
        return None if value is None else int(value)

    @property
    def authorized(self) -> bool:
        return self.message.header("Authorization") is not None


def registers(uas: Uas) -> list[Register]:
    """Every REGISTER the registrar received, in order, with the first arrival's time."""
    short = uas.short_messages()
    arrived: dict[tuple[str, int], float] = {}
    answers: dict[tuple[str, int], int | None] = {}
    for m in short:
        key = (m.call_id, m.cseq_number)
        if m.direction == "R" and m.method == "REGISTER":
            arrived.setdefault(key, m.time)
        elif m.direction == "S" and m.cseq_method == "REGISTER":
            answers.setdefault(key, m.status)
    full = uas.messages()
    challenges = {
        (call_id(m), cseq_number(m)): m.header("WWW-Authenticate")
        for m in full
        if m.direction == "S" and status_of(m) == 401
    }
    out = []
    for m in received_requests(full, "REGISTER"):
        key = (call_id(m), cseq_number(m))
        out.append(
            Register(
                time=arrived[key],
                cseq=key[1],
                message=m,
                answer=answers.get(key),
                challenge=challenges.get((key[0], key[1] - 1)),
            )
        )
    return out


def check_register_credentials(reg: Register) -> dict[str, str]:
    assert reg.challenge is not None, f"REGISTER {reg.cseq} follows no 401"
    got = check_credentials(reg.message.header("Authorization"), reg.challenge, "REGISTER")
    assert got["uri"] == reg.message.first_line.split()[1], got
    return got


def register_block(**more: object) -> dict[str, object]:
    return {
        "user": USER,
        "password": PASSWORD,
        "realm": REALM,
        "contact_user": CONTACT_USER,
        "timeout": REGISTER_TIMEOUT,
        **more,
    }


def registrar_args(granted: int, answers: int = 0, silence: float = 0) -> list[str]:
    """uas_register.xml's contract: what it grants, after how many bindings it goes silent
    (0: never) and for how long (0: for good)."""
    args = ["-key", "granted", str(granted), "-set", "answers", str(answers)]
    return [*args, "-set", "silence", f"{silence:g}"]


def registration(port: int, carrier_name: str) -> dict[str, Any]:
    regs: dict[str, dict[str, Any]] = api(port, "/api/targets")["registrations"]
    return regs[carrier_name]


def test_register_refresh_at_half_the_granted_expires_and_unregister(tmp_path: Path) -> None:
    started = time.monotonic()
    asked, granted, refreshes = 10, 6, 3
    (carrier_port,) = free_udp_ports(1)
    admin_port = free_tcp_port()
    with (
        start_uas(
            "uas_register",
            port=carrier_port,
            trace_messages=True,
            extra_args=registrar_args(granted),
            tmp_root=tmp_path,
        ) as registrar,
        RouterProcess(
            tmp_path / "router",
            [("a", carrier_port)],
            extra={
                "carriers": [carrier("a", carrier_port, register=register_block(expires=asked))],
                **admin(admin_port),
            },
        ) as router,
    ):
        # The first registration, then `refreshes` more: each one a 401 and a 200.
        assert registrar.wait_until(lambda: registrar.responses_sent(200, "REGISTER") >= 1, 5), (
            registrar.describe()
        )
        view = registration(admin_port, "a")
        assert registrar.wait_until(
            lambda: registrar.responses_sent(200, "REGISTER") >= 1 + refreshes,
            refreshes * granted / 2 * 1.3 + 2,
        ), registrar.describe()
        stopping = time.time()
        router.stop()
        assert router.returncode == 0, router.log()
        assert registrar.wait_until(
            lambda: any(r.expires == 0 and r.answer == 200 for r in registers(registrar)), 3
        ), registrar.describe()
        seen = registers(registrar)
        registrar_errors = registrar.errors()
    assert call_errors(registrar_errors) == [], registrar_errors
    assert view["state"] == "REGISTERED" and view["expires_s"] == granted, view
    assert PASSWORD not in json.dumps(view)
    # Each exchange: REGISTER without credentials -> 401, the same with credentials -> 200.
    assert [r.authorized for r in seen] == [False, True] * (len(seen) // 2), seen
    assert [r.answer for r in seen] == [401, 200] * (len(seen) // 2), seen
    assert [r.cseq for r in seen] == list(range(1, len(seen) + 1)), seen
    assert len({call_id(r.message) for r in seen}) == 1
    assert len({tag_of(r.message.header("From") or "") for r in seen}) == 1
    responses = []
    for reg in seen:
        contact = reg.message.header("Contact")
        assert contact == f"<sip:{CONTACT_USER}@127.0.0.1:{router.port}>", contact
        assert (reg.message.header("To") or "").startswith(f"<sip:{USER}@127.0.0.1>"), reg
        if reg.authorized:
            responses.append(check_register_credentials(reg)["response"])
    check_no_secrets(router, responses)
    *bindings, last = [r for r in seen if r.authorized]
    assert [r.expires for r in bindings] == [asked] * len(bindings), bindings
    assert last.expires == 0 and last.time >= stopping, last
    starts = [r.time for r in seen if not r.authorized and r.expires != 0]
    intervals = [b - a for a, b in itertools.pairwise(starts)]
    assert len(intervals) >= refreshes, intervals
    for interval in intervals:
        assert granted / 2 * 0.7 <= interval <= granted / 2 * 1.3, intervals
    rows = router.events()
    notices = [r["state"] for r in rows if r.get("notice") == "registration"]
    assert notices[:1] == ["REGISTERED"] and notices[-1] == "STOPPED", timeline(rows, 0)
    assert changes(rows, "a") == [], timeline(rows, 0)
    print(
        f"register: asked Expires {asked}, registrar granted {granted}; "
        f"{len(bindings)} bindings, each REGISTER -> 401 -> REGISTER with verified "
        f"credentials -> 200, Contact <sip:{CONTACT_USER}@127.0.0.1:{router.port}>; "
        f"refresh intervals {', '.join(f'{i:.2f}' for i in intervals)} s "
        f"(granted / 2 = {granted / 2:.1f} s, ±30 %); API {view['state']} "
        f"expires_s {view['expires_s']}; on SIGTERM REGISTER Expires: 0 "
        f"{last.time - stopping:.3f}s later, answered {last.answer} "
        f"({time.monotonic() - started:.1f}s)"
    )


def test_a_registrar_that_stops_answering_takes_its_carrier_out_until_it_is_back(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    # Granted 12 s: the refresh is due at 6 s and 3 timeouts take 5 s more, before the
    # binding would lapse at 12 s (which would be the other reason, "expired").
    granted, rate = 12, 2
    bound = granted / 2 + LOST_AFTER * REGISTER_TIMEOUT + (LOST_AFTER - 1) * RETRY_GAP
    slack = 1.0
    silence = bound + 0.5  # from the last 200: the registrar answers again after the loss
    hold_down, probe_every, trials = 3.0, 0.5, 3  # hold_down: jittered by +-10 %
    a_port, b_port = free_udp_ports(2)
    admin_port = free_tcp_port()
    with (
        start_uas(
            "uas_register",
            port=a_port,
            trace_messages=True,
            extra_args=registrar_args(granted, answers=1, silence=silence),
            tmp_root=tmp_path,
        ) as a,
        start_uas("uas_answer", port=b_port, tmp_root=tmp_path) as b,
        RouterProcess(
            tmp_path / "router",
            [("a", a_port), ("b", b_port)],
            extra={
                "carriers": [
                    carrier("a", a_port, register=register_block(expires=granted)),
                    carrier("b", b_port),
                ],
                "health": {"hold_down": hold_down, "trial_calls": trials},
                "probe": {"interval_out": probe_every, "timeout": probe_every},
                **admin(admin_port),
            },
        ) as router,
    ):
        assert a.wait_until(lambda: a.responses_sent(200, "REGISTER") >= 1, 5), a.describe()
        # Calls all along: a loses its registration at ~bound, is registered again about
        # a second later, then hold-down, probes and trial calls bring it back.
        seconds = bound + hold_down + 5
        calls = int(rate * seconds)
        result = run_uac(
            "uac_call",
            router.address,
            calls=calls,
            rate=rate,
            timeout=seconds + 10,
            tmp_root=tmp_path,
        )
        state = target_state(admin_port, "a")
        view = registration(admin_port, "a")
        counters = router.stop()
        seen = registers(a)
        a_short, b_short = a.short_messages(), b.short_messages()
    assert result.ok, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()
    rows = router.events()
    moves = changes(rows, "a")
    granted_at = min(r.time for r in seen if r.answer == 200)
    assert [(r["old"], r["new"]) for r in moves] == [
        ("UP", "DOWN"),
        ("DOWN", "PROBING"),
        ("PROBING", "UP"),
    ], timeline(rows, granted_at)
    down, probing, up = moves
    assert down["reason"] == "registration lost: 3 REGISTER timeouts", down
    assert up["reason"] == f"{trials} trial calls answered", up
    assert state == "UP" and view["state"] == "REGISTERED", (state, view)
    notices = [(r["state"], r["detail"]) for r in rows if r.get("notice") == "registration"]
    assert [n[0] for n in notices] == ["REGISTERED", "FAILED", "REGISTERED", "STOPPED"], notices
    # The silence: REGISTERs after the first binding and before the second went unanswered.
    again_at = min(r.time for r in seen if r.answer == 200 and r.time > granted_at)
    unanswered = [r for r in seen if granted_at < r.time < again_at and r.answer is None]
    took = down["at"] - granted_at
    assert bound - 0.2 <= took <= bound + slack, (took, bound)
    assert again_at - granted_at >= silence, (again_at, granted_at)
    assert probing["at"] >= again_at - ROUTER_CLOCK_STEP, (probing, again_at)
    assert probing["at"] - down["at"] >= 0.9 * hold_down, (down, probing)
    # Calls went to a while it was UP, to b while it was out, and to a again from its
    # trial calls on.
    a_invites = [m.time for m in a_short if m.direction == "R" and m.method == "INVITE"]
    b_invites = [m.time for m in b_short if m.direction == "R" and m.method == "INVITE"]
    assert not [x for x in a_invites if down["at"] < x < probing["at"]], a_invites
    before = [x for x in a_invites if x < down["at"]]
    after = [x for x in a_invites if x > probing["at"]]
    out = [x for x in b_invites if down["at"] < x < probing["at"]]
    assert before and len(after) >= trials and out, (a_invites, b_invites)
    assert len(a_invites) + len(b_invites) == calls, (a_invites, b_invites)
    print(
        f"registrar silent: granted {granted}s at +0.00s, then {len(unanswered)} REGISTERs "
        f"unanswered; a DOWN at +{took:.2f}s ({down['reason']}); bound granted/2 "
        f"{granted / 2:.0f} + lost_after {LOST_AFTER} x timeout {REGISTER_TIMEOUT:.0f} + "
        f"{LOST_AFTER - 1} retry gaps x {RETRY_GAP:.2f} = {bound:.1f}s (+{slack:.0f}s slack); "
        f"registrar back at +{silence:.1f}s: registered again at "
        f"+{again_at - granted_at:.2f}s, PROBING at +{probing['at'] - granted_at:.2f}s "
        f"(hold-down {hold_down:.0f}s), "
        f"UP at +{up['at'] - granted_at:.2f}s ({up['reason']}); caller "
        f"{result.successful}/{calls} answered at {rate}/s, 0 failed: {len(before)} via a "
        f"before DOWN, {len(out)} via b while a was out, {len(after)} via a from PROBING on; "
        f"registers_to:a {counters.get('registers_to:a')} ({time.monotonic() - started:.1f}s)"
    )


def test_a_carrier_gone_silent_is_out_for_its_registration_before_its_probes_tell(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    granted = 12  # as above: 3 timeouts end before the binding lapses
    bound = granted / 2 + LOST_AFTER * REGISTER_TIMEOUT + (LOST_AFTER - 1) * RETRY_GAP
    slack = 1.0
    (carrier_port,) = free_udp_ports(1)
    admin_port = free_tcp_port()
    with (
        start_uas(
            "uas_register",
            port=carrier_port,
            trace_messages=True,
            extra_args=registrar_args(granted),
            tmp_root=tmp_path,
        ) as registrar,
        RouterProcess(
            tmp_path / "router",
            [("a", carrier_port)],
            extra={
                "carriers": [carrier("a", carrier_port, register=register_block(expires=granted))],
                **admin(admin_port),
            },
        ) as router,
    ):
        assert registrar.wait_until(lambda: registrar.responses_sent(200, "REGISTER") >= 1, 5), (
            registrar.describe()
        )
        # SIGSTOP: the socket stays open and nothing answers, OPTIONS included.
        registrar.pause()
        went_down = wait_for(
            lambda: target_state(admin_port, "a") == "DOWN", bound + slack + 2, 0.2
        )
        view = registration(admin_port, "a")
        counters = router.stop()
        granted_at = max(
            m.time
            for m in registrar.short_messages()
            if m.status == 200 and m.cseq_method == "REGISTER"
        )
    assert went_down, router.log()
    rows = router.events()
    moves = changes(rows, "a")
    assert [(r["old"], r["new"]) for r in moves] == [("UP", "DOWN")], timeline(rows, 0)
    down = moves[0]
    assert down["reason"] == "registration lost: 3 REGISTER timeouts", down
    assert view["state"] == "FAILED", view
    took = down["at"] - granted_at
    assert bound - 0.2 <= took <= bound + slack, (took, bound)
    print(
        f"carrier SIGSTOPped after its registration: a DOWN at +{took:.2f}s "
        f"({down['reason']}; bound {bound:.0f}s + {slack:.0f}s slack); its probes by then: "
        f"{counters.get('probes_to:a', 0)} sent, {counters.get('probes_ok:a', 0)} answered, "
        f"not enough to take it out; registers_to:a {counters.get('registers_to:a')} "
        f"({time.monotonic() - started:.1f}s)"
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (403, "registration refused: 403 Forbidden"),
        (401, "registration refused: 401 (credentials rejected)"),
    ],
)
def test_a_refused_registration_backs_off_without_a_storm(
    tmp_path: Path, code: int, reason: str
) -> None:
    started = time.monotonic()
    window, episodes = 14.0, 4  # retries after 1, 2, 4 s (x 0.9-1.1): the 4th at ~7 s
    (carrier_port,) = free_udp_ports(1)
    admin_port = free_tcp_port()
    with (
        start_uas(
            "uas_register_reject",
            port=carrier_port,
            reject_code=code,
            reject_reason="Unauthorized" if code == 401 else None,
            trace_messages=True,
            tmp_root=tmp_path,
        ) as registrar,
        RouterProcess(
            tmp_path / "router",
            [("a", carrier_port)],
            extra={
                "carriers": [carrier("a", carrier_port, register=register_block(expires=10))],
                **admin(admin_port),
            },
        ) as router,
    ):
        assert registrar.wait_received("REGISTER", 1, 5), registrar.describe()
        first = registrar.short_messages()[0].time
        registrar.wait_until(lambda: registrar.received("REGISTER") >= 2 * episodes, window)
        # As long again as the last gap: a storm would show here.
        time.sleep(2.0)
        observed = time.time() - first
        state = target_state(admin_port, "a")
        view = registration(admin_port, "a")
        router.stop()
        seen = registers(registrar)
    assert router.returncode == 0, router.log()
    rows = router.events()
    moves = changes(rows, "a")
    assert [(r["old"], r["new"]) for r in moves] == [("UP", "DOWN")], timeline(rows, first)
    assert moves[0]["reason"] == reason, moves
    assert state == "DOWN" and view["state"] == "FAILED" and view["detail"] == reason, view
    # Every try: REGISTER -> 401 -> REGISTER with verified credentials -> the refusal.
    assert [r.authorized for r in seen] == [False, True] * (len(seen) // 2), seen
    assert [r.answer for r in seen] == [401, code] * (len(seen) // 2), seen
    for reg in seen:
        if reg.authorized:
            check_register_credentials(reg)
    # Nothing to unregister: no Expires: 0 was sent for a binding the router never had.
    assert all(r.expires == 10 for r in seen), seen
    tries = [r.time for r in seen if not r.authorized]
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert len(tries) >= episodes, tries
    assert 0.85 <= gaps[0] <= 1.3, gaps
    for before, after in itertools.pairwise(gaps):
        assert after >= 1.5 * before, gaps
    # No storm: what the backoff allows in the time observed, and no more.
    assert len(seen) <= 2 * (episodes + 1), (len(seen), observed)
    raised = alarms(rows, "a")
    assert len(raised) == (1 if code == 401 else 0), raised
    assert PASSWORD not in json.dumps(rows) + json.dumps(view)
    print(
        f"registration refused with {code}: a DOWN ({moves[0]['reason']}) "
        f"{moves[0]['at'] - first:.2f}s after the first REGISTER; {len(seen)} REGISTERs "
        f"({len(tries)} tries of 2) in {observed:.1f}s, gaps "
        f"{', '.join(f'{g:.2f}' for g in gaps)} s; alarms {len(raised)}"
        f"{(' (' + raised[0]['detail'] + ')') if raised else ''}; "
        f"next REGISTER in {view.get('next_register_in_s')}s ({time.monotonic() - started:.1f}s)"
    )
