"""The simulated carrier as a registrar: digest challenges, verification, bindings, 403s.

Sans-IO like test_sim_carrier: the test plays the router, hands the core
REGISTERs and INVITEs with a time, and reads what it answers. The router's own
digest client (:class:`trunkguard.sip._digest.DigestClient`) answers the
challenges, so these tests also check the two implementations agree; one test
computes the response by hand, from the formula alone.
"""

from __future__ import annotations

import hashlib

import pytest

from trunkguard.lab._carrier import CarrierCore, Datagram, Mode, main
from trunkguard.lab._carrier_registrar import RegistrarConfig, parse_authorization
from trunkguard.sip import Response, TimerConfig, parse_message
from trunkguard.sip._digest import Credentials, DigestClient, choose_challenge

CALLER = ("127.0.0.1", 5999)
LOCAL = ("127.0.0.1", 5071)
START = 1000.0
USER, PASSWORD, REALM = "trunk-a", "s3cret-pw", "lab.a"
REGISTRAR_URI = "sip:127.0.0.1:5071"
CONTACT = "<sip:trunk-a@127.0.0.1:5060>"


class Carrier:
    def __init__(self, mode: Mode | None = None, **config: object) -> None:
        self.now = START
        self.config = RegistrarConfig(USER, PASSWORD, realm=REALM, **config)  # type: ignore[arg-type]
        self.core = CarrierCore(
            "a",
            mode or Mode("healthy"),
            START,
            local=LOCAL,
            timers=TimerConfig(0.5, 4.0, 5.0),
            registrar=self.config,
        )
        self.cseq = 0
        self.branches = 0

    def send(self, data: bytes) -> list[Datagram]:
        return self.core.receive(data, CALLER, self.now)

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while (deadline := self.core.next_deadline()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
        self.now = until

    def register(
        self,
        *,
        authorization: tuple[str, str] | None = None,
        expires: int | None = 10,
        contact: str = CONTACT,
        aor_user: str = USER,
    ) -> bytes:
        self.cseq += 1
        self.branches += 1
        lines = [
            f"REGISTER {REGISTRAR_URI} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKreg{self.branches}",
            "Max-Forwards: 70",
            f"From: <sip:{aor_user}@127.0.0.1>;tag=reg1",
            f"To: <sip:{aor_user}@127.0.0.1>",
            "Call-ID: reg-call",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: {contact}",
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorization is not None:
            lines.append(f"{authorization[0]}: {authorization[1]}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def invite(self, n: int) -> list[int]:
        self.branches += 1
        lines = [
            "INVITE sip:4930@127.0.0.1:5071 SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKinv{self.branches}",
            "Max-Forwards: 70",
            "From: <sip:caller@127.0.0.1:5999>;tag=caller1",
            "To: <sip:4930@127.0.0.1:5071>",
            f"Call-ID: call-{n}",
            "CSeq: 1 INVITE",
            "Content-Length: 0",
        ]
        return [one(d).status for d in self.send(("\r\n".join(lines) + "\r\n\r\n").encode())]

    def log(self) -> list[str]:
        return [what for _, what in self.core.register_log]


def one(d: Datagram) -> Response:
    message = parse_message(d.data)
    assert isinstance(message, Response)
    assert d.addr == CALLER
    return message


def challenge_of(out: list[Datagram]) -> tuple[Response, str]:
    assert len(out) == 1
    r = one(out[0])
    assert r.status == 401
    value = r.get("WWW-Authenticate")
    assert value is not None
    return r, value


def registered(carrier: Carrier, client: DigestClient, expires: int = 10) -> Response:
    _, value = challenge_of(carrier.send(carrier.register(expires=expires)))
    challenge = choose_challenge([value], proxy=False)
    auth = client.authorize(challenge, "REGISTER", REGISTRAR_URI)
    out = carrier.send(carrier.register(authorization=auth, expires=expires))
    assert len(out) == 1
    return one(out[0])


def client(password: str = PASSWORD) -> DigestClient:
    return DigestClient(Credentials(USER, password))


# -- challenge and verification -------------------------------------------------------------
def test_register_without_credentials_is_challenged_md5_qop_auth() -> None:
    carrier = Carrier()
    _, value = challenge_of(carrier.send(carrier.register()))
    params = parse_authorization(value)
    assert params is not None
    assert (params["realm"], params["qop"], params["algorithm"]) == (REALM, "auth", "MD5")
    assert len(params["nonce"]) == 32 and "stale" not in params
    assert value.startswith(f'Digest realm="{REALM}", nonce="') and 'qop="auth"' in value
    assert carrier.log() == ["received", "challenged"]
    assert not carrier.core.registrar.registered(carrier.now)  # type: ignore[union-attr]


def test_right_credentials_bind_the_contact_with_expires() -> None:
    carrier = Carrier()
    ok = registered(carrier, client())
    assert ok.status == 200
    assert ok.get_all("Contact") == ["<sip:trunk-a@127.0.0.1:5060>;expires=10"]
    assert ok.get("Expires") == "10"
    snap = carrier.core.snapshot(carrier.now)["registrar"]
    assert isinstance(snap, dict)
    assert snap["registered"] is True and snap["expires_in_s"] == 10.0
    assert snap["challenged"] == 1 and snap["accepted"] == 1
    assert carrier.log() == ["received", "challenged", "received", "accepted"]


def test_the_response_checks_out_against_the_formula_alone() -> None:
    carrier = Carrier()
    _, value = challenge_of(carrier.send(carrier.register()))
    nonce = parse_authorization(value)["nonce"]  # type: ignore[index]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{USER}:{REALM}:{PASSWORD}")
    ha2 = md5(f"REGISTER:{REGISTRAR_URI}")
    response = md5(f"{ha1}:{nonce}:00000001:abc123:auth:{ha2}")
    header = (
        f'Digest username="{USER}", realm="{REALM}", nonce="{nonce}", uri="{REGISTRAR_URI}", '
        f'response="{response}", algorithm=MD5, cnonce="abc123", qop=auth, nc=00000001'
    )
    out = carrier.send(carrier.register(authorization=("Authorization", header)))
    assert one(out[0]).status == 200


def test_a_wrong_password_gets_a_new_challenge_not_stale() -> None:
    carrier = Carrier()
    r = registered(carrier, client("wrong"))
    assert r.status == 401
    params = parse_authorization(r.get("WWW-Authenticate") or "")
    assert params is not None and "stale" not in params
    assert carrier.log()[-1] == "rejected"
    assert not carrier.core.registrar.registered(carrier.now)  # type: ignore[union-attr]
    # What the router makes of it: the credentials are rejected (no stale flag).
    assert not choose_challenge([r.get("WWW-Authenticate") or ""], proxy=False).stale


@pytest.mark.parametrize(
    ("field", "value"),
    [("username", "trunk-b"), ("realm", "other"), ("uri", "sip:10.0.0.1"), ("qop", "auth-int")],
)
def test_a_mismatched_field_is_rejected(field: str, value: str) -> None:
    carrier = Carrier()
    _, challenge = challenge_of(carrier.send(carrier.register()))
    auth = client().authorize(choose_challenge([challenge], proxy=False), "REGISTER", REGISTRAR_URI)
    params = parse_authorization(auth[1])
    assert params is not None
    params[field] = value
    header = "Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items())
    out = carrier.send(carrier.register(authorization=("Authorization", header)))
    assert one(out[0]).status == 401
    assert carrier.log()[-1] == "rejected"


def test_a_replayed_or_unknown_nonce_with_the_right_answer_is_stale() -> None:
    carrier = Carrier()
    digest = client()
    _, value = challenge_of(carrier.send(carrier.register()))
    auth = digest.authorize(choose_challenge([value], proxy=False), "REGISTER", REGISTRAR_URI)
    assert one(carrier.send(carrier.register(authorization=auth))[0]).status == 200
    # The same nc again: a replay.
    replay = one(carrier.send(carrier.register(authorization=auth))[0])
    assert replay.status == 401 and "stale=true" in (replay.get("WWW-Authenticate") or "")
    # A nonce this registrar never issued.
    forged = choose_challenge(
        [f'Digest realm="{REALM}", nonce="{"0" * 32}", qop="auth"'], proxy=False
    )
    auth = digest.authorize(forged, "REGISTER", REGISTRAR_URI)
    stale = one(carrier.send(carrier.register(authorization=auth))[0])
    assert stale.status == 401
    assert choose_challenge([stale.get("WWW-Authenticate") or ""], proxy=False).stale
    assert carrier.log()[-4:] == ["received", "stale", "received", "stale"]


def test_the_next_nonce_count_on_the_same_nonce_is_accepted() -> None:
    carrier = Carrier()
    digest = client()
    _, value = challenge_of(carrier.send(carrier.register()))
    challenge = choose_challenge([value], proxy=False)
    for _ in range(3):
        auth = digest.authorize(challenge, "REGISTER", REGISTRAR_URI)
        assert one(carrier.send(carrier.register(authorization=auth))[0]).status == 200


def test_an_expired_nonce_is_stale() -> None:
    carrier = Carrier(nonce_lifetime=30.0)
    _, value = challenge_of(carrier.send(carrier.register()))
    carrier.advance(31)
    auth = client().authorize(choose_challenge([value], proxy=False), "REGISTER", REGISTRAR_URI)
    r = one(carrier.send(carrier.register(authorization=auth))[0])
    assert r.status == 401 and "stale=true" in (r.get("WWW-Authenticate") or "")


def test_another_address_of_record_is_forbidden() -> None:
    carrier = Carrier()
    _, value = challenge_of(carrier.send(carrier.register(aor_user="someone")))
    auth = client().authorize(choose_challenge([value], proxy=False), "REGISTER", REGISTRAR_URI)
    out = carrier.send(carrier.register(authorization=auth, aor_user="someone"))
    assert one(out[0]).status == 403


# -- bindings ---------------------------------------------------------------------------------
def test_expires_is_capped_and_a_contact_parameter_wins() -> None:
    carrier = Carrier(max_expires=60)
    assert registered(carrier, client(), expires=3600).get("Expires") == "60"
    carrier2 = Carrier()
    digest = client()
    _, value = challenge_of(carrier2.send(carrier2.register()))
    auth = digest.authorize(choose_challenge([value], proxy=False), "REGISTER", REGISTRAR_URI)
    out = carrier2.send(carrier2.register(authorization=auth, contact=f"{CONTACT};expires=20"))
    r = one(out[0])
    assert (r.get("Expires"), r.get("Contact")) == ("20", f"{CONTACT};expires=20")


def test_expires_zero_and_the_wildcard_unregister() -> None:
    for contact in (CONTACT, "*"):
        carrier = Carrier()
        digest = client()
        assert registered(carrier, digest).status == 200
        r = registered(carrier, digest, expires=0) if contact == CONTACT else None
        if r is None:
            _, value = challenge_of(carrier.send(carrier.register(contact="*", expires=0)))
            auth = digest.authorize(
                choose_challenge([value], proxy=False), "REGISTER", REGISTRAR_URI
            )
            r = one(carrier.send(carrier.register(authorization=auth, contact="*", expires=0))[0])
        assert r.status == 200 and r.get("Contact") is None
        assert carrier.log()[-1] == "unregistered"
        assert not carrier.core.registrar.registered(carrier.now)  # type: ignore[union-attr]


# -- calls and registration -------------------------------------------------------------------
def test_invites_get_403_until_registered_and_after_the_binding_lapses() -> None:
    carrier = Carrier()
    assert carrier.invite(1) == [403]
    assert registered(carrier, client()).status == 200
    assert carrier.invite(2) == [100, 180, 200]
    carrier.advance(9.9)
    assert carrier.invite(3) == [100, 180, 200]
    carrier.advance(0.2)
    assert carrier.invite(4) == [403]
    snap = carrier.core.snapshot(carrier.now)
    assert snap["registrar"]["invites_refused"] == 2  # type: ignore[index]
    assert snap["answered"]["403"] == 2  # type: ignore[index]


def test_without_require_calls_are_answered_unregistered() -> None:
    carrier = Carrier(require=False)
    assert carrier.invite(1) == [100, 180, 200]


def test_registrar_silent_swallows_register_only() -> None:
    carrier = Carrier()
    digest = client()
    assert registered(carrier, digest).status == 200
    carrier.core.set_mode(Mode("registrar-silent"), carrier.now)
    assert carrier.send(carrier.register()) == []
    assert carrier.invite(1) == [100, 180, 200]
    options = (
        b"OPTIONS sip:127.0.0.1:5071 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKo1\r\n"
        b"From: <sip:p@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1:5071>\r\nCall-ID: ka\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    assert [one(d).status for d in carrier.send(options)] == [200]
    assert carrier.log()[-2:] == ["received", "unanswered"]
    # Its binding still lapses on time, and then the calls are refused.
    carrier.advance(10.1)
    assert carrier.invite(2) == [403]
    carrier.core.set_mode(Mode("healthy"), carrier.now)
    assert registered(carrier, digest).status == 200
    assert carrier.invite(3) == [100, 180, 200]


def test_a_killed_carrier_forgets_its_bindings() -> None:
    carrier = Carrier()
    assert registered(carrier, client()).status == 200
    carrier.core.set_mode(Mode("killed"), carrier.now)
    carrier.core.set_mode(Mode("healthy"), carrier.now)
    assert carrier.invite(1) == [403]


def test_parse_authorization_reads_quoted_strings_and_tokens() -> None:
    params = parse_authorization(r'Digest username="a\"b", uri="sip:x;y=1,2", nc=00000001')
    assert params == {"username": 'a"b', "uri": "sip:x;y=1,2", "nc": "00000001"}
    assert parse_authorization("Basic abc") is None
    assert parse_authorization('Digest a="1", a="2"') is None
    assert parse_authorization("Digest a") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user": ""}, "registrar user"),
        ({"realm": 'a"b'}, "registrar realm"),
        ({"password": ""}, "registrar password"),
        ({"max_expires": 0}, "max_expires"),
    ],
)
def test_bad_registrar_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"user": USER, "password": PASSWORD, **kwargs}
    with pytest.raises(ValueError, match=message):
        RegistrarConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--register-user", "u"], "needs --register-password"),
        (["--register-password", "p"], "needs --register-user"),
        (["--register-user", "u", "--register-password", "p", "--max-expires", "0"], "max_expires"),
        (["--register-user", "u", "--register-password-file", "/nonexistent/pw"], "cannot read"),
    ],
)
def test_the_command_refuses_bad_registrar_arguments(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--listen", "127.0.0.1:0", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
