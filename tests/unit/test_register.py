"""Outbound registration without sockets: a scripted registrar that checks every digest.

``RegLab`` is the proxy harness of test_proxy_core.py with a HealthEngine, an optional
Prober and the carrier "a"'s Registrations plugged in. Its clock only moves through
``run``, which answers what the router sent at the moment it was sent, so the tests can
assert when each REGISTER left. ``Registrar`` is a registrar (or an authenticating
proxy, for 407) with a digest verifier of its own, written from RFC 7616 with hashlib:
every Authorization the router sends is checked against the password, the method and
the Request-URI before anything else happens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_proxy_core import CALLER, A, B, C, Net, invite, reply

from trunkguard.health import HealthEngine, HealthPolicy, State, StateChange
from trunkguard.prober import Prober, ProbeSettings
from trunkguard.proxy import Alarm, Flow, RegistrationEvent
from trunkguard.register import (
    FAILED,
    REGISTERED,
    STOPPED,
    RegisterSettings,
    Registration,
    Registrations,
)
from trunkguard.sip import Request, Response
from trunkguard.sip._digest import Credentials

UP, DOWN, PROBING = State.UP, State.DOWN, State.PROBING
PASSWORD = "pw-Zebra-7731"
WRONG = "pw-Wrong-0000"
REALM = "carrier.test"
REGISTRAR = "sip:127.0.0.1:5071"
AOR = "sip:trunk1@127.0.0.1"
OUR_CONTACT = "sip:trunk1@127.0.0.1:5060"
REFUSED_401 = "registration refused: 401 (credentials rejected)"
_nonces = itertools.count(1)
# A digest response parameter, as in credentials (not "first_response=" of an attempt record).
DIGEST_RESPONSE = re.compile(r"(?<![\w-])response\s*=")


def register_settings(password: str = PASSWORD, **overrides: object) -> RegisterSettings:
    values: dict[str, object] = {
        "credentials": Credentials("trunk1", password),
        "registrar": REGISTRAR,
        "aor": AOR,
        "contact_user": "trunk1",
        "expires": 300,
    }
    values.update(overrides)
    return RegisterSettings(**values)  # type: ignore[arg-type]


# -- the server side of digest (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1) ----------------------------
_PARAM = re.compile(r'\s*([A-Za-z0-9-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*(?:,|$)')
_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}


def digest_params(value: str) -> dict[str, str]:
    """The parameters of ``Digest a="b", c=d`` (names lower-cased, values unquoted)."""
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest", value
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        found = _PARAM.match(rest, pos)
        assert found is not None, f"unreadable credentials at {pos}: {rest!r}"
        name = found.group(1).lower()
        assert name not in params, f"{name} twice in {rest!r}"
        quoted = found.group(2)
        params[name] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else found.group(3)
        pos = found.end()
    return params


def digest_response(params: dict[str, str], password: str, method: str) -> str:
    """The response a server expects for ``params`` (as the client sent them) and ``password``."""
    algorithm = params.get("algorithm", "MD5").upper()
    sess = algorithm.endswith("-SESS")
    h = _HASHES[algorithm.removesuffix("-SESS")]
    ha1 = h(f"{params['username']}:{params['realm']}:{password}".encode())
    if sess:
        ha1 = h(f"{ha1}:{params['nonce']}:{params['cnonce']}".encode())
    ha2 = h(f"{method}:{params['uri']}".encode())
    if "qop" in params:
        parts = (ha1, params["nonce"], params["nc"], params["cnonce"], params["qop"], ha2)
        return h(":".join(parts).encode())
    return h(f"{ha1}:{params['nonce']}:{ha2}".encode())


@dataclass
class DigestServer:
    """Issues challenges and checks answers, as a registrar or a carrier's SBC would.

    ``client_password`` is the password the router was configured with: every answer
    must be a correct digest for it (whatever the server's own ``password``), for the
    method and Request-URI of the request that carries it, and for a nonce issued here
    with a nonce count that only goes up.
    """

    user: str = "trunk1"
    password: str = PASSWORD
    client_password: str = PASSWORD
    realm: str = REALM
    algorithm: str = "MD5"
    qop: str | None = "auth"
    proxy: bool = False  # 407 and Proxy-Authenticate, as a proxy challenges
    nonces: dict[str, int] = field(default_factory=dict)  # nonce -> the last nc seen
    checked: list[tuple[str, str, bool]] = field(default_factory=list)  # method, uri, accepted
    responses: list[str] = field(default_factory=list)  # every digest response seen
    invites: set[str] = field(default_factory=set)  # the credentials of INVITEs seen

    @property
    def status(self) -> int:
        return 407 if self.proxy else 401

    @property
    def asks(self) -> str:
        return "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"

    @property
    def answer_header(self) -> str:
        return "proxy-authorization" if self.proxy else "authorization"

    def challenge(self, stale: bool = False) -> str:
        nonce = f"nonce-{next(_nonces)}"
        self.nonces[nonce] = 0
        parts = [f'realm="{self.realm}"', f'nonce="{nonce}"', 'opaque="op-1"']
        if self.algorithm != "MD5":
            parts.append(f"algorithm={self.algorithm}")
        if self.qop is not None:
            parts.append(f'qop="{self.qop}"')
        if stale:
            parts.append("stale=true")
        return f"{self.asks}: Digest {', '.join(parts)}\r\n"

    def check(self, request: Request) -> bool | None:
        """None without credentials; else whether they are accepted (asserting they are right)."""
        other = "authorization" if self.proxy else "proxy-authorization"
        assert not request.has(other), f"{other} in a request to a server that asks for the other"
        values = request.get_all(self.answer_header)
        if not values:
            return None
        assert len(values) == 1, values
        params = digest_params(values[0])
        method, uri = request.method, request.uri
        if method in ("ACK", "CANCEL"):
            # RFC 3261 §22.1: they cannot be challenged, and repeat the credentials of the
            # INVITE, which name the INVITE (and its Request-URI, not an ACK's Contact).
            assert values[0] in self.invites, "ACK/CANCEL credentials of no INVITE"
            method, uri = "INVITE", params["uri"]
        assert params["username"] == self.user
        assert params["realm"] == self.realm
        assert params["uri"] == uri, (params["uri"], uri)
        assert params.get("opaque") == "op-1"
        assert params["algorithm"].upper() == self.algorithm.upper()
        assert params["nonce"] in self.nonces, "a nonce this server never issued"
        if self.qop is not None:
            assert params["qop"] == self.qop
            assert re.fullmatch(r"[0-9a-f]{8}", params["nc"]), params["nc"]
            assert params["cnonce"]
            nc = int(params["nc"], 16)
            if request.method in ("ACK", "CANCEL"):
                assert nc == self.nonces[params["nonce"]]  # the INVITE's very credentials
            else:
                assert nc > self.nonces[params["nonce"]], "a nonce count that did not go up"
                self.nonces[params["nonce"]] = nc
        else:
            assert "nc" not in params and "cnonce" not in params
        response = params["response"]
        assert response == digest_response(params, self.client_password, method), (
            "a digest response that is wrong for the configured password"
        )
        self.responses.append(response)
        if method == "INVITE":
            self.invites.add(values[0])
        accepted = response == digest_response(params, self.password, method)
        self.checked.append((request.method, uri, accepted))
        return accepted


# -- responses to REGISTER ---------------------------------------------------------------------
REASONS = {
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    423: "Interval Too Brief",
    500: "Server Internal Error",
    503: "Service Unavailable",
}


def answer(request: Request, status: int, headers: str = "") -> bytes:
    """A registrar's response to ``request``, with ``headers`` (CRLF-ended lines) added."""
    vias = "".join(f"Via: {v}\r\n" for v in request.values("via"))
    text = (
        f"SIP/2.0 {status} {REASONS.get(status, 'Whatever')}\r\n{vias}"
        f"From: {request.get('from')}\r\nTo: {request.get('to')};tag=registrar\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: {request.cseq}\r\n"
        f"{headers}Content-Length: 0\r\n\r\n"
    )
    return text.encode()


def ok(request: Request, expires: int = 120, *, others: bool = True) -> bytes:
    """200 listing our binding with ``expires``, after somebody else's (which must be ignored)."""
    other = "Contact: <sip:someone-else@192.0.2.9:5060>;expires=3600\r\n" if others else ""
    return answer(request, 200, f"{other}Contact: <{OUR_CONTACT}>;expires={expires}\r\n")


Behaviour = Callable[[Request], bytes | None]


class Registrar:
    """Answers REGISTER like a registrar that wants digest; a test can change its mind."""

    def __init__(self, server: DigestServer | None = None, expires: int = 120) -> None:
        self.server = server or DigestServer()
        self.expires = expires
        self.silent = False
        self.script: list[Behaviour] = []  # one-off answers, used before the normal ones

    def __call__(self, request: Request) -> bytes | None:
        accepted = self.server.check(request)  # checks the digest whatever comes next
        if self.script:
            return self.script.pop(0)(request)
        if self.silent:
            return None
        if not accepted:
            return answer(request, self.server.status, self.server.challenge())
        return ok(request, self.expires)


# -- the lab -----------------------------------------------------------------------------------
Carrier = Callable[[Request], int | None]


class RegLab(Net):
    """A proxy, a health engine, carrier a's registration, and a clock that only ``run`` moves."""

    def __init__(
        self,
        registrar: Registrar | None = None,
        reg: RegisterSettings | None = None,
        *,
        policy: HealthPolicy | None = None,
        probes: ProbeSettings | None = None,
        carriers: dict[Flow, Carrier] | None = None,
        seed: int = 1,
        start: bool = True,
    ) -> None:
        super().__init__()
        self.registrar = registrar if registrar is not None else Registrar()
        self.carriers = carriers or {}
        self.health = HealthEngine(
            ["a", "b", "c"], policy, random.Random(seed), probes_enabled=probes is not None
        )
        self.proxy.health = self.health
        self.prober: Prober | None = None
        if probes is not None:
            self.prober = Prober(self.proxy, self.health, probes, random.Random(seed))
            self.on_change.append(self.prober.state_changed)
            self.prober.start(self.now)
        self.regs = Registrations(
            self.proxy, self.health, {"a": reg or register_settings()}, random.Random(seed)
        )
        self.events: list[object] = []
        self.registers: list[tuple[float, Request]] = []  # each REGISTER once, when it left
        self.finals: dict[str, int] = {}
        self._seen: set[str] = set()
        self.proxy.apply_health_changes([])
        if start:
            self.regs.start(self.now)

    @property
    def reg(self) -> Registration:
        return self.regs.by_carrier["a"]

    def pump(self) -> None:
        self.events += self.proxy.events
        super().pump()

    def reg_events(self) -> list[RegistrationEvent]:
        self.pump()
        return [e for e in self.events if isinstance(e, RegistrationEvent)]

    def a_changes(self) -> list[tuple[State, State, str]]:
        return [(c.old, c.new, c.reason) for c in self.changes if c.target == "a"]

    def serve(self) -> None:
        """Answer what the router sent, until it sends nothing more."""
        while out := self.take():
            for flow, message in out:
                if isinstance(message, Response):
                    if flow == CALLER and message.status >= 200:
                        self.finals.setdefault(message.call_id, message.status)
                    continue
                branch = message.vias[0].branch or ""
                if branch in self._seen:
                    continue  # a retransmission
                self._seen.add(branch)
                if flow.addr[1] == 0:  # what the adapter does: nothing can be sent there
                    self.proxy.transport_error(flow, self.now)
                    self.pump()
                    continue
                if message.method == "REGISTER":
                    assert flow == A
                    self.registers.append((self.now, message))
                    data = self.registrar(message)
                    if data is not None:
                        self.feed(data, flow)
                    continue
                carrier = self.carriers.get(flow)
                if carrier is None or message.method not in ("INVITE", "OPTIONS"):
                    continue
                status = carrier(message)
                if status is not None:
                    self.feed(reply(message, status), flow)

    def run(self, seconds: float) -> None:
        """Move the clock, firing every timer when it is due and answering at once."""
        end = self.now + seconds
        self.serve()
        while True:
            deadline = self.proxy.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.proxy.run_timers(self.now)
            self.pump()
            self.serve()
        self.now = end

    def dial(self) -> str:
        call_id = f"reg-call-{next(_nonces)}"
        self.feed(invite(call_id), CALLER)
        self.serve()
        return call_id

    def since(self, index: int) -> list[tuple[float, Request]]:
        return self.registers[index:]


def answers(status: int) -> Carrier:
    return lambda request: status


def unauthenticated(registers: list[tuple[float, Request]]) -> list[float]:
    """When each REGISTER cycle began: the REGISTERs that carry no credentials."""
    return [t for t, r in registers if not r.has("authorization")]


def registered(lab: RegLab, expires: int = 120) -> None:
    lab.registrar.expires = expires
    lab.run(0.5)
    assert lab.reg.state == REGISTERED, lab.reg.detail


# -- 1. the first registration -----------------------------------------------------------------
def test_first_register_is_challenged_then_answered_with_a_correct_digest() -> None:
    lab = RegLab()
    lab.run(0.5)
    (t1, first), (t2, second) = lab.registers
    assert t1 == t2 and t1 <= 1000.2  # the 401 is answered at once
    assert first.uri == REGISTRAR and second.uri == REGISTRAR
    assert not first.has("authorization") and not first.has("proxy-authorization")
    assert first.get("expires") == "300"
    assert [str(c.uri) for c in first.contacts] == [OUR_CONTACT]
    assert first.from_.tag and first.to.tag is None
    assert str(first.from_.uri) == AOR and str(first.to.uri) == AOR
    # RFC 3261 §10.2 and §22.2: same Call-ID and From tag, CSeq + 1, credentials added.
    assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
    assert second.cseq.number == first.cseq.number + 1 and second.cseq.method == "REGISTER"
    assert second.get("expires") == "300"
    assert [str(c.uri) for c in second.contacts] == [OUR_CONTACT]
    assert second.vias[0].branch != first.vias[0].branch  # a new transaction
    assert lab.registrar.server.checked == [("REGISTER", REGISTRAR, True)]
    reg = lab.reg
    assert reg.state == REGISTERED and reg.detail == "registered for 120s"
    assert reg.granted == 120 and reg.expires_at == t2 + 120
    assert reg.next_at == pytest.approx(t2 + 60)  # refreshed at half the granted time
    [event] = lab.reg_events()
    assert (event.carrier, event.state, event.detail, event.expires) == (
        "a",
        REGISTERED,
        "registered for 120s",
        120,
    )
    assert lab.health.state("a") is UP and lab.a_changes() == []
    assert lab.proxy.counters["registers_to:a"] == 2
    view = reg.view(lab.now)
    assert view["state"] == REGISTERED and view["expires_s"] == 120
    assert view["expires_in_s"] == pytest.approx(120 - (lab.now - t2), abs=0.1)
    assert view["next_register_in_s"] == pytest.approx(60 - (lab.now - t2), abs=0.1)


def test_expires_header_when_our_contact_has_no_expires_param() -> None:
    registrar = Registrar()
    registrar.script = [
        lambda r: answer(r, 401, registrar.server.challenge()),
        lambda r: answer(r, 200, f"Contact: <{OUR_CONTACT}>\r\nExpires: 90\r\n"),
    ]
    lab = RegLab(registrar)
    lab.run(0.5)
    t = lab.registers[-1][0]
    assert lab.reg.state == REGISTERED and lab.reg.granted == 90
    assert lab.reg.next_at == pytest.approx(t + 45)


def test_a_contact_that_is_not_ours_is_ignored() -> None:
    registrar = Registrar()
    other_user = "Contact: <sip:someone-else@127.0.0.1:5060>;expires=10\r\n"
    registrar.script = [
        lambda r: answer(r, 401, registrar.server.challenge()),
        lambda r: answer(r, 200, f"{other_user}Expires: 200\r\n"),
    ]
    lab = RegLab(registrar)
    lab.run(0.5)
    assert lab.reg.state == REGISTERED and lab.reg.granted == 200  # the Expires header


def test_another_device_of_the_same_user_is_not_our_binding() -> None:
    # A registrar lists every binding of the address of record (RFC 3261 §10.3 step 8):
    # another box registering the same user (a second router of a pair) is not us.
    registrar = Registrar()
    twin = "Contact: <sip:trunk1@192.0.2.7:5060>;expires=7\r\n"
    registrar.script = [
        lambda r: answer(r, 401, registrar.server.challenge()),
        lambda r: answer(r, 200, f"{twin}Contact: <{OUR_CONTACT}>;expires=240\r\n"),
    ]
    lab = RegLab(registrar)
    lab.run(0.5)
    assert lab.reg.state == REGISTERED and lab.reg.granted == 240


def test_no_challenge_at_all_registers_at_once() -> None:
    registrar = Registrar()
    registrar.script = [lambda r: ok(r, 60)]
    lab = RegLab(registrar)
    lab.run(0.5)
    assert len(lab.registers) == 1 and lab.reg.state == REGISTERED and lab.reg.granted == 60


def test_a_200_without_our_binding_kept_is_a_refusal() -> None:
    registrar = Registrar()
    registrar.script = [lambda r: answer(r, 200, f"Contact: <{OUR_CONTACT}>;expires=0\r\n")]
    lab = RegLab(registrar)
    lab.run(0.5)
    assert lab.reg.state == FAILED
    assert lab.reg.detail == "registration refused: the registrar kept no binding"
    assert lab.health.targets["a"].gate == lab.reg.detail


# -- 2. refreshes ------------------------------------------------------------------------------
def test_refreshes_reuse_the_call_id_with_increasing_cseq() -> None:
    lab = RegLab()
    registered(lab, 120)
    lab.run(60 * 10 + 1)
    times = unauthenticated(lab.registers)
    assert len(times) == 11  # the first, then one refresh a minute
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == pytest.approx(60.0) for g in gaps), gaps
    requests = [r for _, r in lab.registers]
    assert {r.call_id for r in requests} == {requests[0].call_id}
    assert {r.from_.tag for r in requests} == {requests[0].from_.tag}
    numbers = [r.cseq.number for r in requests]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert all(accepted for _, _, accepted in lab.registrar.server.checked)
    assert len(lab.registrar.server.checked) == 11
    assert [e.state for e in lab.reg_events()] == [REGISTERED]  # a refresh is no news
    assert lab.health.state("a") is UP and lab.a_changes() == []


def test_the_registrar_may_grant_less_and_the_refresh_follows_it() -> None:
    lab = RegLab()
    registered(lab, 120)
    lab.registrar.expires = 30
    lab.run(60.5)
    assert lab.reg.granted == 30
    t = lab.registers[-1][0]
    assert lab.reg.next_at == pytest.approx(t + 15)


def test_407_is_answered_in_proxy_authorization() -> None:
    lab = RegLab(Registrar(DigestServer(proxy=True)))
    lab.run(0.5)
    (_, first), (_, second) = lab.registers
    assert not second.has("authorization")
    assert (second.get("proxy-authorization") or "").startswith('Digest username="trunk1"')
    assert second.cseq.number == first.cseq.number + 1
    assert lab.reg.state == REGISTERED


@pytest.mark.parametrize(
    ("algorithm", "qop"), [("MD5", None), ("SHA-256", "auth"), ("MD5-sess", "auth")]
)
def test_other_digest_flavours_verify(algorithm: str, qop: str | None) -> None:
    lab = RegLab(Registrar(DigestServer(algorithm=algorithm, qop=qop)))
    lab.run(0.5)
    assert lab.reg.state == REGISTERED
    assert lab.registrar.server.checked == [("REGISTER", REGISTRAR, True)]


def test_the_challenge_for_our_realm_is_answered_among_several() -> None:
    # RFC 3261 §22.3: each proxy on the path may add its challenge; ours names our realm.
    registrar = Registrar()
    server = registrar.server
    foreign = 'WWW-Authenticate: Digest realm="upstream.test", nonce="theirs", qop="auth"\r\n'
    registrar.script = [lambda r: answer(r, 401, foreign + server.challenge())]
    lab = RegLab(registrar, register_settings(credentials=Credentials("trunk1", PASSWORD, REALM)))
    lab.run(0.5)
    assert lab.reg.state == REGISTERED, lab.reg.detail
    assert server.checked == [("REGISTER", REGISTRAR, True)]


# -- 3. stale nonces ---------------------------------------------------------------------------
def test_a_stale_nonce_is_answered_at_once_without_a_failure() -> None:
    lab = RegLab()
    registered(lab, 120)
    server = lab.registrar.server
    lab.registrar.script = [
        lambda r: answer(r, 401, server.challenge()),  # the refresh, without credentials
        lambda r: answer(r, 401, server.challenge(stale=True)),  # credentials, but stale
    ]
    start = len(lab.registers)
    lab.run(60.5)
    cycle = lab.since(start)
    assert len(cycle) == 3 and len({t for t, _ in cycle}) == 1  # all at once
    stale_nonce = digest_params(cycle[1][1].get("authorization") or "")["nonce"]
    fresh_nonce = digest_params(cycle[2][1].get("authorization") or "")["nonce"]
    assert stale_nonce != fresh_nonce
    assert lab.reg.state == REGISTERED
    assert [e.state for e in lab.reg_events()] == [REGISTERED]
    assert lab.proxy.counters["registers_stale_nonce:a"] == 1
    assert lab.proxy.counters["registration_failures:a"] == 0
    assert lab.health.targets["a"].gate is None and lab.a_changes() == []
    assert lab.alarms == []


def test_a_stale_nonce_on_the_first_registration() -> None:
    registrar = Registrar()
    server = registrar.server
    registrar.script = [
        lambda r: answer(r, 401, server.challenge()),
        lambda r: answer(r, 401, server.challenge(stale=True)),
    ]
    lab = RegLab(registrar)
    lab.run(0.5)
    assert len(lab.registers) == 3 and lab.reg.state == REGISTERED
    assert lab.proxy.counters["registration_failures:a"] == 0


def test_a_registrar_that_only_ever_says_stale_gets_no_register_storm() -> None:
    registrar = Registrar()
    server = registrar.server
    registrar.script = [lambda r: answer(r, 401, server.challenge())] + [
        lambda r: answer(r, 401, server.challenge(stale=True))
    ] * 10_000
    lab = RegLab(registrar)
    lab.run(600)
    # Answering one stale challenge is right; answering each of them at once is a loop.
    assert len(lab.registers) < 40, len(lab.registers)
    why = "registration refused: 401 (stale nonce again)"
    assert (lab.reg.state, lab.reg.detail) == (FAILED, why)
    assert lab.health.targets["a"].gate == why
    assert lab.alarms == []  # stale means the credentials were right
    assert [(e.state, e.detail) for e in lab.reg_events()] == [(FAILED, why)]


# -- 4. refusals -------------------------------------------------------------------------------
def test_bad_credentials_fail_gate_alarm_once_and_back_off() -> None:
    server = DigestServer(client_password=WRONG)
    lab = RegLab(Registrar(server), register_settings(WRONG))
    lab.run(0.5)
    assert len(lab.registers) == 2  # the second 401 answers our credentials: no third try
    reg = lab.reg
    assert reg.state == FAILED and reg.detail == REFUSED_401
    h = lab.health.targets["a"]
    assert h.state is DOWN and h.reason == REFUSED_401 and h.gate == REFUSED_401
    assert not lab.health.admits("a")
    assert lab.a_changes() == [(UP, DOWN, REFUSED_401)]
    [alarm] = lab.alarms
    assert alarm.target == "a" and alarm.kind == "credentials"
    assert "trunk1" in alarm.detail and REGISTRAR in alarm.detail
    lab.run(600)
    # Retries: each cycle is one REGISTER without credentials and one with, and each
    # waits twice as long as the one before (retry_min 1 s, +/- 10 %), up to retry_max.
    starts = unauthenticated(lab.registers)
    refused = [t for t, r in lab.registers if r.has("authorization")]
    assert len(refused) == len(starts)
    delays = [start - before for before, start in zip(refused, starts[1:], strict=False)]
    expected = [min(300.0, 2.0**n) for n in range(len(delays))]
    for delay, nominal in zip(delays, expected, strict=True):
        assert nominal * 0.9 <= delay <= nominal * 1.1, (delays, expected)
    assert len(lab.registers) <= 22  # 10 cycles in 10 minutes: no REGISTER storm
    assert len(lab.alarms) == 1  # once, however many retries
    assert lab.proxy.counters["alarms:a"] == 1
    assert lab.reg.state == FAILED and lab.a_changes() == [(UP, DOWN, REFUSED_401)]
    # The event log hears of the failure once, not once per retry.
    assert [(e.state, e.detail) for e in lab.reg_events()] == [(FAILED, REFUSED_401)]
    assert lab.health.targets["a"].gate == REFUSED_401
    lab.run(1800)
    starts = unauthenticated(lab.registers)
    refused = [t for t, r in lab.registers if r.has("authorization")]
    delays = [start - before for before, start in zip(refused, starts[1:], strict=False)]
    assert delays[-3:] == [300.0] * 3  # retry_max is a cap, jitter or not
    assert len(lab.alarms) == 1


def test_good_probes_do_not_bring_a_gated_carrier_back() -> None:
    server = DigestServer(client_password=WRONG)
    probes = ProbeSettings(interval=10.0, interval_out=2.0, timeout=1.0)
    carriers = {A: answers(200), B: answers(200), C: answers(200)}
    lab = RegLab(Registrar(server), register_settings(WRONG), probes=probes, carriers=carriers)
    lab.run(900)
    assert lab.proxy.counters["probes_ok:a"] > 100
    assert lab.health.state("a") is DOWN and not lab.health.admits("a")
    assert lab.a_changes() == [(UP, DOWN, REFUSED_401)]
    call_id = lab.dial()
    assert lab.finals[call_id] == 200 and lab.proxy.counters["invites_to:a"] == 0


def test_403_refuses_with_its_reason() -> None:
    registrar = Registrar()
    registrar.script = [lambda r: answer(r, 403)] * 3
    lab = RegLab(registrar)
    lab.run(0.5)
    why = "registration refused: 403 Forbidden"
    assert lab.reg.state == FAILED and lab.reg.detail == why
    assert lab.a_changes() == [(UP, DOWN, why)]
    assert lab.alarms == []  # not a credentials alarm: the account is refused
    lab.run(3.5)
    starts = unauthenticated(lab.registers)
    assert len(starts) == 3
    assert 0.9 <= starts[1] - starts[0] <= 1.1 and 1.8 <= starts[2] - starts[1] <= 2.2


def test_5xx_with_retry_after_is_honoured() -> None:
    registrar = Registrar()
    registrar.script = [lambda r: answer(r, 503, "Retry-After: 120 (maintenance)\r\n")]
    lab = RegLab(registrar)
    lab.run(0.5)
    why = "registration refused: 503 Service Unavailable"
    assert lab.reg.state == FAILED and lab.reg.detail == why
    assert lab.health.targets["a"].gate == why
    first = lab.registers[0][0]
    lab.run(119)
    assert len(lab.registers) == 1  # not after 1 s of backoff: after the 120 s asked for
    lab.run(20)
    assert lab.registers[1][0] - first >= 120
    assert lab.reg.state == REGISTERED


def test_5xx_without_retry_after_backs_off() -> None:
    registrar = Registrar()
    registrar.script = [lambda r: answer(r, 500)] * 2
    lab = RegLab(registrar)
    lab.run(10)
    starts = unauthenticated(lab.registers)
    assert len(starts) == 3 and lab.reg.state == REGISTERED
    assert 0.9 <= starts[1] - starts[0] <= 1.1 and 1.8 <= starts[2] - starts[1] <= 2.2


def test_423_min_expires_is_retried_with_the_larger_expires() -> None:
    registrar = Registrar()
    server = registrar.server
    registrar.script = [
        lambda r: answer(r, 401, server.challenge()),
        lambda r: answer(r, 423, "Min-Expires: 600\r\n"),
    ]
    lab = RegLab(registrar)
    lab.registrar.expires = 600
    lab.run(0.5)
    expires = [r.get("expires") for _, r in lab.registers]
    assert expires == ["300", "300", "600"]
    (t1, _), (_, asked), (t3, larger) = lab.registers
    assert t3 == t1  # at once
    assert larger.cseq.number == asked.cseq.number + 1
    assert larger.has("authorization")  # the challenge still stands
    assert lab.reg.state == REGISTERED and lab.reg.granted == 600
    assert lab.reg.next_at == pytest.approx(t3 + 300)
    lab.run(301)
    assert lab.registers[-1][1].get("expires") == "600"  # refreshes keep asking for it
    assert lab.proxy.counters["registration_failures:a"] == 0


def test_a_registrar_raising_its_minimum_a_second_at_a_time_gets_few_registers() -> None:
    registrar = Registrar()
    server = registrar.server
    # Always a second more than what the REGISTER asked for.
    registrar.script = [lambda r: answer(r, 401, server.challenge())] + [
        lambda r: answer(r, 423, f"Min-Expires: {int(r.get('expires') or 0) + 1}\r\n")
        for _ in range(40)
    ]
    lab = RegLab(registrar)
    lab.run(0.5)
    asked = [int(r.get("expires") or 0) for _, r in lab.registers[1:]]
    # Each 423 at least doubles what we ask for: a handful of REGISTERs up to the 1-day cap.
    assert asked[:3] == [300, 600, 1200] and len(asked) <= 12, asked


def test_a_grant_longer_than_asked_is_cut_to_what_we_asked() -> None:
    registrar = Registrar()
    registrar.expires = 999_999_999
    lab = RegLab(registrar)
    lab.run(0.5)
    assert lab.reg.state == REGISTERED and lab.reg.granted == 300
    assert lab.reg.next_at is not None and lab.reg.next_at - lab.now <= 150


def test_423_without_a_larger_min_expires_is_a_refusal() -> None:
    registrar = Registrar()
    registrar.script = [lambda r: answer(r, 423, "Min-Expires: 60\r\n")]
    lab = RegLab(registrar)
    lab.run(0.5)
    assert lab.reg.state == FAILED
    assert lab.reg.detail == "registration refused: 423 Interval Too Brief"


# -- 5. a registrar that stops answering, and comes back -----------------------------------------


def test_three_timeouts_lose_the_registration_then_the_usual_way_back() -> None:
    probes = ProbeSettings(interval=10.0, interval_out=2.0, timeout=1.0)
    carriers = {A: answers(200), B: answers(200), C: answers(200)}
    lab = RegLab(probes=probes, carriers=carriers)
    registered(lab, 120)
    refresh = lab.reg.next_at
    assert refresh is not None
    lab.registrar.silent = True
    lab.run(refresh - lab.now + 2.5)  # the first refresh timed out
    assert lab.reg.state == REGISTERED and lab.reg.timeouts == 1
    assert lab.health.state("a") is UP  # one timeout is not a lost registration
    lab.run(10)
    why = "registration lost: 3 REGISTER timeouts"
    assert lab.reg.state == FAILED and lab.reg.detail == why
    lost = next(e for e in lab.reg_events() if e.state == FAILED)
    assert lost.detail == why and lost.at - refresh <= 60  # within one refresh interval
    assert lab.a_changes() == [(UP, DOWN, why)]
    assert lab.health.targets["a"].gate == why
    # Out while the registrar is away, even with its OPTIONS answered and hold-downs over.
    lab.run(300)
    assert lab.health.state("a") is DOWN and not lab.health.admits("a")
    assert len(lab.a_changes()) == 1
    sent = len(lab.registers)
    assert sent < 30  # quick retries at first, then backing off
    lab.registrar.silent = False
    lab.run(400)
    assert lab.reg.state == REGISTERED and lab.health.targets["a"].gate is None
    # Back through the usual way: PROBING, probes, then trial calls one at a time.
    assert lab.health.state("a") is PROBING
    assert lab.a_changes()[1][:2] == (DOWN, PROBING)
    assert lab.health.admits("a")  # its probes passed meanwhile
    for _ in range(3):
        call_id = lab.dial()
        assert lab.finals[call_id] == 200
    assert lab.proxy.counters["invites_to:a"] == 3
    assert lab.health.state("a") is UP
    assert lab.a_changes()[-1] == (PROBING, UP, "3 trial calls answered")
    assert [e.state for e in lab.reg_events()] == [REGISTERED, FAILED, REGISTERED]


def test_a_refused_registration_keeps_its_reason_while_it_retries() -> None:
    registrar = Registrar()
    registrar.script = [lambda r: answer(r, 403)]
    lab = RegLab(registrar)
    lab.run(0.5)
    why = "registration refused: 403 Forbidden"
    registrar.silent = True
    lab.run(1.5)  # the retry is out, unanswered
    assert lab.regs.pending() == 1
    assert (lab.reg.state, lab.reg.detail) == (FAILED, why)  # not REGISTERING, same reason
    lab.run(2.0)  # it timed out once: still out for the 403
    assert (lab.reg.state, lab.reg.detail) == (FAILED, why)
    assert lab.health.targets["a"].gate == why
    lab.run(600)
    lost = "registration lost: 3 REGISTER timeouts"
    assert (lab.reg.state, lab.reg.detail) == (FAILED, lost)
    assert [(e.state, e.detail) for e in lab.reg_events()] == [(FAILED, why), (FAILED, lost)]
    assert lab.health.targets["a"].gate == lost


def test_registered_again_before_the_hold_down_ends_waits_for_it() -> None:
    lab = RegLab(policy=HealthPolicy(hold_down=300.0))
    registered(lab, 120)
    lab.registrar.silent = True
    lab.run(75)
    assert lab.reg.state == FAILED
    lab.registrar.silent = False
    lab.run(60)
    assert lab.reg.state == REGISTERED and lab.health.targets["a"].gate is None
    assert lab.health.state("a") is DOWN  # the hold-down still runs
    lab.run(300)
    assert lab.health.state("a") is PROBING


def test_an_expiry_passed_without_a_good_refresh_is_lost() -> None:
    # A binding of 20 s and REGISTERs that may take 30 s: the expiry comes first.
    lab = RegLab(reg=register_settings(timeout=30.0, lost_after=5))
    registered(lab, 20)
    expires_at = lab.reg.expires_at
    assert expires_at is not None
    lab.registrar.silent = True
    lab.run(expires_at - lab.now + 0.01)
    why = "registration lost: expired without a refresh"
    assert lab.reg.state == FAILED and lab.reg.detail == why
    assert lab.a_changes() == [(UP, DOWN, why)]
    assert lab.regs.pending() == 0  # the REGISTER still out is given up


def test_an_expiry_found_by_a_timeout() -> None:
    lab = RegLab(reg=register_settings(lost_after=10))
    registered(lab, 4)  # refreshed after 2 s, which times out at 4 s: the binding is gone
    lab.registrar.silent = True
    lab.run(4)
    why = "registration lost: expired without a refresh"
    assert lab.reg.state == FAILED and lab.reg.detail == why
    assert lab.a_changes() == [(UP, DOWN, why)]


# -- 6. unregistering --------------------------------------------------------------------------
def test_stop_unregisters_with_expires_0_and_answers_its_challenge() -> None:
    lab = RegLab()
    registered(lab, 120)
    start = len(lab.registers)
    assert lab.regs.stop(lab.now) == ["a"]
    lab.serve()
    (_, bare), (_, authorized) = lab.since(start)
    for r in (bare, authorized):
        assert r.get("expires") == "0"
        assert [str(c.uri) for c in r.contacts] == [OUR_CONTACT]  # ours, not "*"
    assert not bare.has("authorization")
    assert authorized.cseq.number == bare.cseq.number + 1
    assert authorized.call_id == bare.call_id == lab.registers[0][1].call_id
    assert lab.registrar.server.checked[-1] == ("REGISTER", REGISTRAR, True)
    assert lab.reg.state == STOPPED and lab.reg.detail == "unregistered"
    assert lab.regs.pending() == 0
    lab.run(3600)
    assert len(lab.registers) == start + 2  # nothing after the shutdown


def test_a_rejected_unregister_does_not_register_again() -> None:
    lab = RegLab()
    registered(lab, 120)
    lab.registrar.server.password = "changed-at-the-carrier"
    start = len(lab.registers)
    lab.regs.stop(lab.now)
    lab.run(3600)
    assert len(lab.registers) == start + 2  # the Expires: 0 and its answer to the 401
    assert all(r.get("expires") == "0" for _, r in lab.since(start))
    assert lab.reg.state == STOPPED and lab.regs.pending() == 0
    assert lab.reg.detail == f"not unregistered: {REFUSED_401}"
    assert lab.health.targets["a"].gate is None and lab.a_changes() == []


def test_an_unanswered_unregister_is_given_up() -> None:
    lab = RegLab()
    registered(lab, 120)
    lab.registrar.silent = True
    lab.regs.stop(lab.now)
    assert lab.regs.pending() == 1
    lab.run(3)
    assert lab.regs.pending() == 0 and lab.reg.state == STOPPED
    lab.run(3600)
    assert len(lab.registers) == 3


def test_stop_before_registered_sends_nothing() -> None:
    lab = RegLab(start=False)
    lab.regs.start(lab.now)
    assert lab.regs.stop(lab.now) == []
    lab.run(600)
    assert lab.registers == [] and lab.reg.state == STOPPED


# -- 7. reloads --------------------------------------------------------------------------------
def test_changed_credentials_start_over() -> None:
    server = DigestServer(client_password=WRONG)
    lab = RegLab(Registrar(server), register_settings(WRONG))
    lab.run(0.5)
    assert lab.reg.state == FAILED
    old = lab.reg
    server.client_password = PASSWORD
    lab.regs.reconfigure({"a": register_settings(PASSWORD)}, lab.now)
    assert lab.reg is not old and old.timer is None and old.pending is None
    lab.run(0.5)
    assert lab.reg.state == REGISTERED
    new_cycle = [r for t, r in lab.registers if t >= lab.now - 0.5]
    assert new_cycle and new_cycle[0].call_id != lab.registers[0][1].call_id
    assert lab.health.targets["a"].gate is None
    lab.run(600)
    # The old registration's retry timer is gone with it: only the new one refreshes.
    assert {r.call_id for t, r in lab.registers if t > lab.now - 590} == {new_cycle[0].call_id}


def test_unchanged_settings_keep_the_registration() -> None:
    lab = RegLab()
    registered(lab, 120)
    old = lab.reg
    lab.regs.reconfigure({"a": register_settings()}, lab.now)
    assert lab.reg is old and lab.reg.state == REGISTERED


def test_a_removed_registration_lifts_its_gate() -> None:
    server = DigestServer(client_password=WRONG)
    lab = RegLab(Registrar(server), register_settings(WRONG))
    lab.run(0.5)
    assert not lab.health.admits("a")
    lab.regs.reconfigure({}, lab.now)
    assert lab.regs.by_carrier == {} and lab.health.targets["a"].gate is None
    start = len(lab.registers)
    lab.run(60)
    assert len(lab.registers) == start  # no more REGISTERs
    assert lab.health.state("a") is PROBING and lab.health.admits("a")  # hold-down over


def test_new_destinations_of_a_failed_carrier_share_its_gate() -> None:
    server = DigestServer(client_password=WRONG)
    lab = RegLab(Registrar(server), register_settings(WRONG))
    lab.run(0.5)
    a = lab.proxy.targets[0]
    extra = dataclasses.replace(a, name="a/192.0.2.10:5060", carrier="a")
    lab.proxy.set_targets([*lab.proxy.targets, extra])
    lab.health.add_target(extra.name)
    assert lab.health.admits(extra.name)  # new, UP...
    lab.regs.sync(lab.now)
    assert not lab.health.admits(extra.name)  # ...until it is known whose it is
    assert lab.health.targets[extra.name].gate == REFUSED_401
    assert lab.health.admits("b")  # another carrier's are not touched


def test_a_carrier_whose_name_does_not_resolve_yet_is_not_registered_to_nowhere() -> None:
    # Before DNS answers, the carrier is one target that cannot be sent to (port 0), out
    # for that reason (see RouterConfig.carrier_targets and Runtime._dns_gate).
    lab = RegLab(start=False)
    a = lab.proxy.targets[0]
    unresolved = dataclasses.replace(a, flow=Flow("udp", ("0.0.0.0", 0)))
    lab.proxy.set_targets([unresolved, *lab.proxy.targets[1:]])
    why = "DNS: a not resolved yet"
    lab.proxy.apply_health_changes(lab.health.gate("a", why, lab.now))
    lab.regs.start(lab.now)
    lab.run(60)
    assert lab.registers == [] and lab.proxy.counters["registers_to:a"] == 0
    assert lab.reg.detail == "no destination to send REGISTER to"
    assert lab.proxy.counters["registration_failures:a"] == 0
    assert lab.health.targets["a"].gate == why  # still out for its own reason
    # The name resolves: registered within a retry, not after a grown backoff.
    lab.proxy.set_targets([a, *lab.proxy.targets[1:]])
    lab.regs.sync(lab.now)
    lab.run(3)
    assert lab.reg.state == REGISTERED


# -- 8. secrets --------------------------------------------------------------------------------
def _texts(lab: RegLab) -> list[str]:
    out: list[str] = []
    for event in lab.events:
        if isinstance(event, RegistrationEvent):
            out += [event.carrier, event.state, event.detail, repr(event)]
        elif isinstance(event, Alarm):
            out += [event.target, event.kind, event.detail, repr(event)]
        elif isinstance(event, StateChange):
            out += [event.reason, repr(event)]
    reg = lab.reg
    out += [reg.state, reg.detail, repr(reg.view(lab.now)), str(reg.view(lab.now))]
    out += [repr(reg), repr(reg.settings), str(reg.settings.credentials)]
    out += list(lab.proxy.counters)
    out += [lab.health.describe(name, lab.now) for name in ("a", "b", "c")]
    return out


def test_no_password_or_digest_response_in_events_logs_views_or_counters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = DigestServer(client_password=WRONG)
    registrar = Registrar(server)
    lab = RegLab(registrar, register_settings(WRONG))
    lab.run(30)  # refused, with an alarm, retried
    server.client_password = PASSWORD
    lab.regs.reconfigure({"a": register_settings(PASSWORD)}, lab.now)
    lab.run(200)  # registered, refreshed
    registrar.script = [
        lambda r: answer(r, 401, server.challenge()),
        lambda r: answer(r, 401, server.challenge(stale=True)),
        lambda r: answer(r, 423, "Min-Expires: 900\r\n"),
        lambda r: answer(r, 503, "Retry-After: 5\r\n"),
    ]
    lab.registrar.expires = 900
    lab.run(200)
    registrar.silent = True
    lab.run(600)  # lost
    registrar.silent = False
    lab.run(600)
    lab.regs.stop(lab.now)
    lab.run(5)
    assert lab.alarms and any(e.state == FAILED for e in lab.reg_events())
    assert len(server.responses) > 5
    texts = _texts(lab) + [r.getMessage() for r in caplog.records]
    texts += [str(r.args) for r in caplog.records]
    secrets = [PASSWORD, WRONG, *server.responses]
    for text in texts:
        assert not DIGEST_RESPONSE.search(text), text
        for secret in secrets:
            assert secret not in text, text


# -- 9. any order of answers ---------------------------------------------------------------------
Outcome = tuple[str, int]  # what the registrar does with the next REGISTER, and a number
OUTCOMES = st.one_of(
    st.tuples(st.just("ok"), st.integers(1, 3600)),
    st.tuples(st.just("challenge"), st.just(0)),
    st.tuples(st.just("stale"), st.just(0)),
    st.tuples(st.just("403"), st.just(0)),
    st.tuples(st.just("503"), st.integers(0, 400)),
    st.tuples(st.just("silence"), st.just(0)),
)


class Tracked(RegLab):
    """Checks the invariants after every input, whatever the registrar answers."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = list(outcomes)
        self.server = DigestServer()
        self.retry_after: int | None = None  # in the last answer
        self.failures = 0
        self.earliest: float | None = None  # no REGISTER before this (a refusal's backoff)
        self.ever_failed = False
        super().__init__(Registrar(), register_settings(retry_max=600.0))
        self.registrar = self._answer  # type: ignore[assignment]

    def _answer(self, request: Request) -> bytes | None:
        if self.earliest is not None:
            assert self.now >= self.earliest, "a REGISTER sooner than the backoff allows"
            self.earliest = None
        self.retry_after = None
        what, n = self.outcomes.pop(0) if self.outcomes else ("ok", 300)
        self.server.check(request)
        if what == "silence":
            return None
        if what == "ok":
            return ok(request, n)
        if what in ("challenge", "stale"):
            return answer(request, 401, self.server.challenge(stale=what == "stale"))
        if what == "403":
            return answer(request, 403)
        self.retry_after = n or None
        return answer(request, 503, f"Retry-After: {n}\r\n" if n else "")

    def check(self) -> None:
        reg = self.reg
        assert self.regs.pending() <= 1
        owners = [type(c.owner).__name__ for c in self.proxy.clients.values()]
        assert owners.count("_Owner") <= 1, "two REGISTERs in flight"
        failures = self.proxy.counters["registration_failures:a"]
        if failures > self.failures and reg.detail.startswith("registration refused"):
            # The least the next REGISTER may wait: the backoff's lower bound, and the
            # Retry-After when there was one.
            s = reg.settings
            floor = 0.9 * min(s.retry_max, s.retry_min * 2.0 ** (reg.refusals - 1))
            if self.retry_after is not None:
                floor = max(floor, min(float(self.retry_after), s.retry_max))
            self.earliest = self.now + floor - 1e-9
        self.failures = failures
        if reg.state == FAILED:
            self.ever_failed = True
            assert self.health.targets["a"].gate == reg.detail
        if self.health.admits("a"):
            assert reg.state == REGISTERED or not self.ever_failed, (reg.state, reg.detail)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        self.serve()
        self.check()
        while True:
            deadline = self.proxy.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.proxy.run_timers(self.now)
            self.pump()
            self.check()
            self.serve()
            self.check()
        self.now = end


@settings(max_examples=150)
@given(st.lists(OUTCOMES, max_size=25), st.integers(0, 2**16))
def test_any_order_of_register_outcomes_keeps_the_invariants(
    outcomes: list[Outcome], seed: int
) -> None:
    lab = Tracked(outcomes)
    lab.regs.rng = random.Random(seed)
    lab.run(6 * 3600)  # longer than 25 answers can delay it, at retry_max each
    assert lab.outcomes == []
    assert lab.reg.state == REGISTERED  # the registrar answers well in the end, and so do we
    assert lab.health.targets["a"].gate is None
