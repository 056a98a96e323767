"""Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760, RFC 2617): the RFC examples,
SIP REGISTER and INVITE exchanges, a small server that checks every answer, challenge
parsing at its edges, nonce counts, and secrets kept out of reprs, errors and logs."""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trunkguard.sip import Response, parse_message
from trunkguard.sip._digest import (
    MAX_NONCES,
    Challenge,
    Credentials,
    DigestClient,
    DigestError,
    choose_challenge,
    parse_challenge,
    redact,
)

# RFC 7616 §3.9.1: the server offers SHA-256, then MD5, for the same nonce.
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def rfc7616_challenge(algorithm: str) -> str:
    # Folded over lines as the RFC prints it.
    return (
        "Digest\r\n"
        '    realm="http-auth@example.org",\r\n'
        '    qop="auth, auth-int",\r\n'
        f"    algorithm={algorithm},\r\n"
        f'    nonce="{RFC7616_NONCE}",\r\n'
        f'    opaque="{RFC7616_OPAQUE}"'
    )


def fixed(cnonce: str) -> DigestClient:
    return DigestClient(Credentials("Mufasa", "Circle of Life"), cnonce=lambda: cnonce)


# -- the RFC examples -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        # RFC 7616 §3.9.1, the two Authorization headers the RFC shows.
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_worked_example(algorithm: str, response: str) -> None:
    challenge = parse_challenge(rfc7616_challenge(algorithm), proxy=False)
    assert challenge == Challenge(
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        algorithm=algorithm,
        qop=("auth", "auth-int"),
        opaque=RFC7616_OPAQUE,
        stale=False,
        proxy=False,
    )
    name, value = fixed(RFC7616_CNONCE).authorize(challenge, "GET", "/dir/index.html")
    assert name == "Authorization"
    assert value == (
        'Digest username="Mufasa", realm="http-auth@example.org", '
        f'nonce="{RFC7616_NONCE}", uri="/dir/index.html", response="{response}", '
        f'algorithm={algorithm}, cnonce="{RFC7616_CNONCE}", opaque="{RFC7616_OPAQUE}", '
        "qop=auth, nc=00000001"
    )


def test_rfc7616_server_preference_is_kept() -> None:
    values = [rfc7616_challenge("SHA-256"), rfc7616_challenge("MD5")]
    assert choose_challenge(values, proxy=False).algorithm == "SHA-256"
    assert choose_challenge(values[::-1], proxy=False).algorithm == "MD5"


def test_rfc2617_example() -> None:
    # RFC 2617 §3.5 (its password has a capital O, unlike RFC 7616's).
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
        proxy=False,
    )
    assert challenge.algorithm == "MD5"
    client = DigestClient(Credentials("Mufasa", "Circle Of Life"), cnonce=lambda: "0a4f113b")
    _, value = client.authorize(challenge, "GET", "/dir/index.html")
    assert fields_of(value)["response"] == ("6629fae49393a05397450978507c4ef1", True)
    assert fields_of(value)["nc"] == ("00000001", False)


# -- SIP exchanges --------------------------------------------------------------------------
def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_register_answers_a_401() -> None:
    challenge = parse_challenge(
        'Digest realm="carrier.test", nonce="5e3c1a9b", algorithm=MD5, qop="auth"', proxy=False
    )
    client = DigestClient(Credentials("trunk-7", "s3cret", "carrier.test"), cnonce=lambda: "c0ffee")
    name, value = client.authorize(challenge, "REGISTER", "sip:carrier.test")
    # RFC 7616 §3.4.1 spelled out.
    ha1 = md5("trunk-7:carrier.test:s3cret")
    ha2 = md5("REGISTER:sip:carrier.test")
    response = md5(f"{ha1}:5e3c1a9b:00000001:c0ffee:auth:{ha2}")
    assert name == "Authorization"
    assert value == (
        'Digest username="trunk-7", realm="carrier.test", nonce="5e3c1a9b", '
        f'uri="sip:carrier.test", response="{response}", algorithm=MD5, cnonce="c0ffee", '
        "qop=auth, nc=00000001"
    )


RESPONSE_407 = (
    b"SIP/2.0 407 Proxy Authentication Required\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n"
    b"From: <sip:+15550001111@trunkguard.test>;tag=1928301774\r\n"
    b"To: <sip:+15551234567@carrier.test>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'Proxy-Authenticate: Digest realm="sbc.carrier.test", algorithm=SHA-512-256,\r\n'
    b'  nonce="ab12cd34", qop="auth"\r\n'
    b'Proxy-Authenticate: Digest realm="sbc.carrier.test", algorithm=SHA-256,\r\n'
    b'  nonce="ab12cd34", qop="auth,auth-int", opaque="o-1"\r\n'
    b'Proxy-Authenticate: Digest realm="sbc.carrier.test", algorithm=MD5,\r\n'
    b'  nonce="ab12cd34", qop="auth,auth-int", opaque="o-1"\r\n'
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_invite_answers_a_407_in_proxy_authorization() -> None:
    message = parse_message(RESPONSE_407)
    assert isinstance(message, Response)
    challenge = choose_challenge(message.get_all("proxy-authenticate"), proxy=True)
    # SHA-512-256 comes first but is not supported: SHA-256 is the next preference.
    assert (challenge.algorithm, challenge.proxy, challenge.opaque) == ("SHA-256", True, "o-1")
    client = DigestClient(Credentials("trunk-7", "s3cret"), cnonce=lambda: "9b8a")
    uri = "sip:+15551234567@carrier.test"
    name, value = client.authorize(challenge, "INVITE", uri, b"v=0\r\n")
    assert name == "Proxy-Authorization"
    ha1 = sha256("trunk-7:sbc.carrier.test:s3cret")
    ha2 = sha256(f"INVITE:{uri}")
    assert fields_of(value)["response"] == (
        sha256(f"{ha1}:ab12cd34:00000001:9b8a:auth:{ha2}"),
        True,
    )
    server = Server("sbc.carrier.test", {"trunk-7": "s3cret"}, "SHA-256", ("auth", "auth-int"))
    server.nonce, server.opaque = "ab12cd34", "o-1"
    assert server.verify(value, "INVITE", uri)


def test_rfc2069_challenge_is_answered_without_nc_and_cnonce() -> None:
    challenge = parse_challenge('Digest realm="carrier.test", nonce="n-1"', proxy=True)
    assert challenge.qop == ()
    client = DigestClient(Credentials("alice", "pw"), cnonce=lambda: pytest.fail("no cnonce"))
    _, value = client.authorize(challenge, "INVITE", "sip:bob@carrier.test")
    ha1, ha2 = md5("alice:carrier.test:pw"), md5("INVITE:sip:bob@carrier.test")
    assert fields_of(value) == {
        "username": ("alice", True),
        "realm": ("carrier.test", True),
        "nonce": ("n-1", True),
        "uri": ("sip:bob@carrier.test", True),
        "response": (md5(f"{ha1}:n-1:{ha2}"), True),
        "algorithm": ("MD5", False),
    }


# -- nonce count, stale ---------------------------------------------------------------------
def nc_of(value: str) -> str:
    return fields_of(value)["nc"][0]


def test_nonce_count_per_nonce() -> None:
    client = DigestClient(Credentials("alice", "pw"))
    first = parse_challenge('Digest realm="r", nonce="one", qop="auth"', proxy=False)
    second = parse_challenge('Digest realm="r", nonce="two", qop="auth"', proxy=False)
    assert client.nonce_count("one") == 0
    assert [nc_of(client.authorize(first, "OPTIONS", "sip:r")[1]) for _ in range(3)] == [
        "00000001",
        "00000002",
        "00000003",
    ]
    assert nc_of(client.authorize(second, "OPTIONS", "sip:r")[1]) == "00000001"
    assert nc_of(client.authorize(first, "OPTIONS", "sip:r")[1]) == "00000004"
    assert (client.nonce_count("one"), client.nonce_count("two")) == (4, 1)


def test_nonce_count_is_hex_and_the_oldest_nonce_is_forgotten() -> None:
    client = DigestClient(Credentials("alice", "pw"))
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"', proxy=False)
    for _ in range(15):
        client.authorize(challenge, "OPTIONS", "sip:r")
    assert nc_of(client.authorize(challenge, "OPTIONS", "sip:r")[1]) == "00000010"
    for i in range(MAX_NONCES):
        other = parse_challenge(f'Digest realm="r", nonce="n{i}", qop="auth"', proxy=False)
        client.authorize(other, "OPTIONS", "sip:r")
    assert client.nonce_count("n") == 0
    assert client.nonce_count(f"n{MAX_NONCES - 1}") == 1


def test_an_exhausted_nonce_count_is_refused() -> None:
    client = DigestClient(Credentials("alice", "pw"))
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"', proxy=False)
    client._counts["n"] = 0xFFFFFFFE
    assert nc_of(client.authorize(challenge, "OPTIONS", "sip:r")[1]) == "ffffffff"
    with pytest.raises(DigestError, match="new challenge"):
        client.authorize(challenge, "OPTIONS", "sip:r")


def test_a_refused_answer_does_not_use_up_a_count() -> None:
    client = DigestClient(Credentials("alice", "pw"), cnonce=lambda: "bad\r\ncnonce")
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"', proxy=False)
    with pytest.raises(DigestError, match="cnonce contains a control character"):
        client.authorize(challenge, "OPTIONS", "sip:r")
    assert client.nonce_count("n") == 0


@pytest.mark.parametrize(
    ("stale", "expected"),
    [
        ("stale=TRUE", True),
        ("stale=true", True),
        ('stale="True"', True),
        ("stale=FALSE", False),
        ("stale=yes", False),
        ("", False),
    ],
)
def test_stale(stale: str, expected: bool) -> None:
    value = 'Digest realm="r", nonce="n2", qop="auth"' + (f", {stale}" if stale else "")
    assert parse_challenge(value, proxy=False).stale is expected


def test_default_cnonce_is_random_hex() -> None:
    client = DigestClient(Credentials("alice", "pw"))
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"', proxy=False)
    cnonces = {
        fields_of(client.authorize(challenge, "OPTIONS", "sip:r")[1])["cnonce"][0] for _ in range(3)
    }
    assert len(cnonces) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", c) for c in cnonces)


# -- a server that checks the answers -------------------------------------------------------
_FIELD = re.compile(r'[ \t]*([A-Za-z-]+)=(?:"((?:[^"\\]|\\.)*)"|([^",\s]+))[ \t]*(?:,|\Z)')
QUOTED = {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"}
UNQUOTED = {"algorithm", "qop", "nc"}


def fields_of(value: str) -> dict[str, tuple[str, bool]]:
    """An Authorization value's fields: name -> (unescaped value, was quoted)."""
    assert value.startswith("Digest ")
    fields: dict[str, tuple[str, bool]] = {}
    pos = len("Digest ")
    while pos < len(value):
        found = _FIELD.match(value, pos)
        assert found is not None, f"unreadable at {pos}: {value[pos:]!r}"
        name = found.group(1)
        assert name not in fields
        if found.group(2) is not None:
            fields[name] = (re.sub(r"\\(.)", r"\1", found.group(2)), True)
        else:
            fields[name] = (found.group(3), False)
        pos = found.end()
    return fields


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass
class Server:
    """A registrar or proxy that issued one challenge and checks answers to it."""

    realm: str
    users: dict[str, str]
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    nonce: str = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    opaque: str | None = "5ccc069c403ebaf9f0171e9517f40e41"
    seen_nc: dict[str, int] = field(default_factory=dict)

    def challenge(self) -> str:
        parts = [f'realm="{escape(self.realm)}"', f'nonce="{escape(self.nonce)}"']
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f'qop="{",".join(self.qop)}"')
        if self.opaque is not None:
            parts.append(f'opaque="{escape(self.opaque)}"')
        return "Digest " + ", ".join(parts)

    def verify(self, value: str, method: str, uri: str, body: bytes = b"") -> bool:
        fields = fields_of(value)
        for name, (_, quoted) in fields.items():
            assert quoted == (name in QUOTED), f"{name} quoted={quoted}"
            assert name in QUOTED | UNQUOTED
        got = {name: text for name, (text, _) in fields.items()}
        assert got["realm"] == self.realm and got["nonce"] == self.nonce
        assert got.get("opaque") == self.opaque
        assert got["uri"] == uri
        assert got["algorithm"].upper() == self.algorithm.upper()
        h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[
            self.algorithm.upper().removesuffix("-SESS")
        ]

        def hx(data: bytes) -> str:
            return h(data).hexdigest()

        password = self.users.get(got["username"])
        if password is None:
            return False
        ha1 = hx(f"{got['username']}:{self.realm}:{password}".encode())
        if self.algorithm.upper().endswith("-SESS"):
            ha1 = hx(f"{ha1}:{self.nonce}:{got['cnonce']}".encode())
        if not self.qop:
            assert not {"qop", "nc", "cnonce"} & got.keys()
            expected = hx(f"{ha1}:{self.nonce}:{hx(f'{method}:{uri}'.encode())}".encode())
            return got["response"] == expected
        assert got["qop"] in self.qop
        assert re.fullmatch(r"[0-9a-f]{8}", got["nc"]) and got["cnonce"]
        nc = int(got["nc"], 16)
        assert nc > self.seen_nc.get(self.nonce, 0), "nonce count replayed"
        if got["qop"] == "auth-int":
            ha2 = hx(f"{method}:{uri}:".encode() + hx(body).encode())
        else:
            ha2 = hx(f"{method}:{uri}".encode())
        expected = hx(f"{ha1}:{self.nonce}:{got['nc']}:{got['cnonce']}:{got['qop']}:{ha2}".encode())
        if got["response"] != expected:
            return False
        self.seen_nc[self.nonce] = nc
        return True


ALGORITHM_NAMES = ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"]
QOP_OFFERS = [("auth",), ("auth-int",), ("auth", "auth-int"), ("auth-int", "auth"), ()]
MATRIX = [(a, q) for a in ALGORITHM_NAMES for q in QOP_OFFERS if q or not a.endswith("sess")]


@pytest.mark.parametrize(("algorithm", "qop"), MATRIX)
def test_server_verifies_every_answer(algorithm: str, qop: tuple[str, ...]) -> None:
    server = Server("carrier.test", {"trunk-7": "s3cret"}, algorithm, qop)
    challenge = parse_challenge(server.challenge(), proxy=False)
    client = DigestClient(Credentials("trunk-7", "s3cret"))
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\n"
    for _ in range(2):  # the second answer, with nc 2, verifies too
        _, value = client.authorize(challenge, "INVITE", "sip:+15551234567@carrier.test", body)
        assert server.verify(value, "INVITE", "sip:+15551234567@carrier.test", body)
    expected_qop = "auth" if "auth" in qop else "auth-int" if qop else None
    assert fields_of(value).get("qop", (None,))[0] == expected_qop
    if expected_qop == "auth-int":
        _, value = client.authorize(challenge, "INVITE", "sip:+15551234567@carrier.test", body)
        assert not server.verify(value, "INVITE", "sip:+15551234567@carrier.test", body + b"x")
    server.seen_nc.clear()  # a new client; refused for its password, not its nc
    stranger = DigestClient(Credentials("trunk-8", "s3cret"))
    _, value = stranger.authorize(challenge, "INVITE", "sip:+15551234567@carrier.test", body)
    assert not server.verify(value, "INVITE", "sip:+15551234567@carrier.test", body)
    wrong = DigestClient(Credentials("trunk-7", "s3cret!"))
    _, value = wrong.authorize(challenge, "INVITE", "sip:+15551234567@carrier.test", body)
    assert not server.verify(value, "INVITE", "sip:+15551234567@carrier.test", body)


# Text without control characters, with the characters a quoted string must escape
# (and the separators a careless parser would split on) drawn often.
header_text = st.text(
    alphabet=st.one_of(
        st.sampled_from('"\\,= :@;'), st.characters(exclude_categories=("Cc", "Cs"))
    ),
    max_size=24,
)


@given(
    user=header_text.filter(bool),
    password=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=24),
    realm=header_text,
    nonce=header_text.filter(bool),
    uri=header_text,
    combination=st.sampled_from(MATRIX),
    spelling=st.sampled_from([str.upper, str.lower, str]),
    method=st.sampled_from(["REGISTER", "INVITE", "OPTIONS", "BYE"]),
    body=st.binary(max_size=64),
)
@example(
    user='Mr "Q" \\ Co',
    password='p"w\\',
    realm='re"alm\\',
    nonce='n"\\',
    uri='sip:"a"@b\\',
    combination=("SHA-256-sess", ("auth-int",)),
    spelling=str,
    method="INVITE",
    body=b"v=0",
)
def test_any_answer_verifies_and_a_wrong_password_does_not(
    user: str,
    password: str,
    realm: str,
    nonce: str,
    uri: str,
    combination: tuple[str, tuple[str, ...]],
    spelling: Callable[[str], str],
    method: str,
    body: bytes,
) -> None:
    algorithm, qop = combination
    server = Server(realm, {user: password}, spelling(algorithm), qop, nonce, opaque=nonce[::-1])
    challenge = parse_challenge(server.challenge(), proxy=False)
    assert (challenge.realm, challenge.nonce) == (realm, nonce)
    _, value = DigestClient(Credentials(user, password, realm)).authorize(
        challenge, method, uri, body
    )
    assert server.verify(value, method, uri, body)
    server.seen_nc.clear()  # a new client; refused for its password, not its nc
    _, value = DigestClient(Credentials(user, password + "x")).authorize(
        challenge, method, uri, body
    )
    assert not server.verify(value, method, uri, body)


# -- parsing at the edges -------------------------------------------------------------------
def test_case_insensitive_scheme_names_and_algorithm() -> None:
    challenge = parse_challenge(
        'dIGEST REALM="R", Nonce="n", QOP="AUTH", Algorithm=sha-256', proxy=True
    )
    assert (challenge.realm, challenge.nonce, challenge.qop) == ("R", "n", ("auth",))
    assert challenge.algorithm == "SHA-256" and challenge.proxy


def test_spaces_tabs_folding_and_empty_elements() -> None:
    value = '  Digest \t realm = "r" ,,\r\n\t nonce=\t"n"  , qop = " auth ,auth-int " ,  '
    challenge = parse_challenge(value, proxy=False)
    assert (challenge.realm, challenge.nonce, challenge.qop) == ("r", "n", ("auth", "auth-int"))


def test_unknown_params_are_ignored_and_tokens_need_no_quotes() -> None:
    challenge = parse_challenge(
        'Digest domain="sip:carrier.test", realm=carrier.test, charset=UTF-8, nonce=abc123, '
        "x-vendor=1, qop=auth, userhash=false, algorithm=md5-SESS",
        proxy=False,
    )
    assert (challenge.realm, challenge.nonce, challenge.algorithm) == (
        "carrier.test",
        "abc123",
        "MD5-SESS",
    )
    assert challenge.qop == ("auth",) and challenge.opaque is None


def test_quoted_commas_and_escapes_inside_values() -> None:
    challenge = parse_challenge(
        r'Digest realm="a, b=\"c\" \\d", nonce="x,y", opaque="p,q", qop="auth"', proxy=False
    )
    assert challenge.realm == 'a, b="c" \\d'
    assert (challenge.nonce, challenge.opaque) == ("x,y", "p,q")


def test_missing_algorithm_means_md5() -> None:
    assert parse_challenge('Digest realm="r", nonce="n"', proxy=False).algorithm == "MD5"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest realm="r"', "no nonce"),
        ('Digest realm="r", nonce=""', "no nonce"),
        ('Digest nonce="n"', "no realm"),
        (
            'Digest realm="r", nonce="n", algorithm=SHA-512-256',
            "unsupported algorithm 'SHA-512-256'",
        ),
        ('Digest realm="r", nonce="n", algorithm="AKAv1-MD5"', "unsupported algorithm"),
        ('Digest realm="r", nonce="n", algorithm="md5-\u017fess", qop=auth', "unsupported"),
        ('Basic realm="r"', "scheme 'Basic' is not Digest"),
        ("Bearer abc.def", "not Digest"),
        ("", "no authentication scheme"),
        ("   ", "no authentication scheme"),
        ("Digest", "no realm"),
        ('Digestrealm="r", nonce="n"', "scheme 'Digestrealm' is not Digest"),
        ('Digest"r"', "expected a space"),
        ('Digest,realm="r", nonce="n"', "expected a space"),
        ('Digest realm="r", nonce="n", algorithm=MD5-sess', "needs qop"),
        ('Digest realm="r", nonce="n", qop="auth-conf"', "neither auth nor auth-int"),
        ('Digest realm="r", nonce="n", qop=""', "neither auth nor auth-int"),
        ('Digest realm="r", nonce="n", nonce="m"', "appears twice"),
        ('Digest realm="r", NONCE="n", nonce="m"', "appears twice"),
        ('Digest realm="r" nonce="n"', "expected ','"),
        ('Digest realm="r", "n"', "expected a parameter name"),
        ('Digest realm="r, nonce="n"', "expected ','"),
        ('Digest realm="unterminated, nonce=n', "bad value"),
        ('Digest realm=, nonce="n"', "bad value"),
        ('Digest realm="r", nonce', "has no value"),
        ('Digest realm="a\r\nb", nonce="n"', "bad value"),
        ('Digest realm="r", nonce="n"\r\nVia: x', "expected ','"),
        ('Digest realm="r", nonce=a/b', "expected ','"),
        ('Digest realm="r", nonce="n", Digest realm="s"', "has no value"),
    ],
)
def test_bad_challenges(value: str, reason: str) -> None:
    with pytest.raises(DigestError, match=re.escape(reason)):
        parse_challenge(value, proxy=False)


@pytest.mark.parametrize(
    "value",
    [
        "x" * 10_240,
        "Digest " + ("realm=" * 1_700),
        'Digest realm="' + "\\" * 4_000,
        "Digest " + "a=b, " * 818,
        "Digest " + ",".join(["nonce"] * 800),
    ],
)
def test_garbage_is_refused_quickly(value: str) -> None:
    started = time.perf_counter()
    with pytest.raises(DigestError):
        parse_challenge(value, proxy=False)
    # Generous for a busy machine: the refusal is a length check or one linear scan.
    assert time.perf_counter() - started < 0.5


def test_longest_challenge_accepted() -> None:
    head = 'Digest realm="r", nonce="n", opaque="'
    value = head + "o" * (4096 - len(head) - 1) + '"'
    assert len(value) == 4096
    assert parse_challenge(value, proxy=False).opaque == "o" * (4096 - len(head) - 1)
    with pytest.raises(DigestError, match="longer than 4096"):
        parse_challenge(value + " ", proxy=False)


challenge_fragments = st.lists(
    st.sampled_from(
        [
            "Digest",
            "digest",
            " ",
            "\t",
            "\r\n ",
            "\r\n",
            "=",
            ",",
            '"',
            "\\",
            "realm",
            "nonce",
            "qop",
            "algorithm",
            "stale",
            "opaque",
            "MD5",
            "SHA-256-sess",
            "auth",
            "auth-int",
            "true",
            "x",
            "\x00",
            "é",
            "\udcff",
        ]
    ),
    max_size=40,
).map("".join)


# A valid challenge with fragments after it: some of these parse.
near_valid = challenge_fragments.map(lambda tail: 'Digest realm="r", nonce="n"' + tail)


@given(st.one_of(st.text(max_size=200), challenge_fragments, near_valid))
def test_parse_raises_only_digest_error(value: str) -> None:
    for proxy in (False, True):
        try:
            challenge = parse_challenge(value, proxy=proxy)
        except DigestError:
            continue
        assert challenge.proxy is proxy and challenge.nonce
    with contextlib.suppress(DigestError):
        choose_challenge([value, value], proxy=False)


# -- choosing among challenges --------------------------------------------------------------
def test_none_usable_names_what_was_offered() -> None:
    values = [
        'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
        'Basic realm="r"',
        'Digest realm="r", algorithm=MD5',
        "((garbage",
    ]
    with pytest.raises(DigestError) as raised:
        choose_challenge(values, proxy=False)
    message = str(raised.value)
    assert message.startswith("no usable challenge among 4 offered: ")
    for offered in (
        "Digest SHA-512-256",
        "Basic",
        "Digest MD5 (challenge has no nonce)",
        "unreadable",
    ):
        assert offered in message
    with pytest.raises(DigestError, match="no challenge offered"):
        choose_challenge([], proxy=True)


def test_choose_for_one_realm() -> None:
    # RFC 3261 §22.3: two proxies on the path, each with its own challenge.
    values = ['Digest realm="edge.test", nonce="a"', 'Digest realm="core.test", nonce="b"']
    assert choose_challenge(values, proxy=True).realm == "edge.test"
    assert choose_challenge(values, proxy=True, realm="core.test").nonce == "b"
    with pytest.raises(DigestError, match=re.escape("realm 'edge.test'")):
        choose_challenge(values[:1], proxy=True, realm="core.test")


# -- what authorize refuses ----------------------------------------------------------------
CHALLENGE = Challenge("carrier.test", "n", "MD5", ("auth",), None, stale=False, proxy=False)


def test_credentials_for_another_realm_are_refused() -> None:
    client = DigestClient(Credentials("trunk-7", "pw", realm="other.test"))
    with pytest.raises(DigestError, match=r"realm 'carrier\.test'.*'other\.test'"):
        client.authorize(CHALLENGE, "REGISTER", "sip:carrier.test")
    assert client.nonce_count("n") == 0
    any_realm = DigestClient(Credentials("trunk-7", "pw"))
    assert any_realm.authorize(CHALLENGE, "REGISTER", "sip:carrier.test")[0] == "Authorization"


@pytest.mark.parametrize(
    ("user", "uri", "challenge", "reason"),
    [
        ("a\r\nVia: x", "sip:r", CHALLENGE, "user name contains a control character"),
        ("a", "sip:r\n", CHALLENGE, "uri contains a control character"),
        ("a", "sip:r", Challenge("r", "n", "SHA-1", (), None, False, False), "unsupported"),
        ("a", "sip:r", Challenge("r", "n", "MD5", ("auth-conf",), None, False, False), "neither"),
        ("a", "sip:r", Challenge("r", "n", "MD5-SESS", (), None, False, False), "needs qop"),
        ("a\ud800", "sip:r", CHALLENGE, "user name is not valid Unicode"),
    ],
)
def test_unanswerable(user: str, uri: str, challenge: Challenge, reason: str) -> None:
    with pytest.raises(DigestError, match=re.escape(reason)):
        DigestClient(Credentials(user, "pw")).authorize(challenge, "INVITE", uri)


# -- secrets --------------------------------------------------------------------------------
PASSWORD = "Zebra-Quartz-7719-Secret"


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("trunk-7", PASSWORD, "carrier.test")
    assert str(credentials) == "trunk-7@carrier.test"
    assert str(Credentials("trunk-7", PASSWORD)) == "trunk-7@*"
    for text in (
        repr(credentials),
        str(credentials),
        repr(DigestClient(credentials)),
        f"{credentials!r} {[credentials]}",
    ):
        assert PASSWORD not in text
    assert "password" not in repr(credentials)


def test_no_error_holds_the_password_or_a_hash() -> None:
    errors: list[DigestError] = []

    def collect(call: Callable[[], object]) -> None:
        with pytest.raises(DigestError) as raised:
            call()
        errors.append(raised.value)

    good = DigestClient(Credentials("trunk-7", PASSWORD))
    _, answer = good.authorize(CHALLENGE, "INVITE", "sip:r")
    response = fields_of(answer)["response"][0]
    client = DigestClient(Credentials("trunk-7", PASSWORD, realm="other.test"))
    collect(lambda: client.authorize(CHALLENGE, "INVITE", "sip:r"))
    collect(lambda: DigestClient(Credentials("a\n", PASSWORD)).authorize(CHALLENGE, "I", "u"))
    collect(
        lambda: DigestClient(Credentials("a", PASSWORD + "\ud800")).authorize(
            CHALLENGE, "INVITE", "sip:r"
        )
    )
    bad_cnonce = DigestClient(Credentials("a", PASSWORD), cnonce=lambda: "")
    collect(lambda: bad_cnonce.authorize(CHALLENGE, "INVITE", "sip:r"))
    collect(lambda: choose_challenge([f'Basic realm="{PASSWORD}"', "x=" + answer], proxy=False))
    collect(lambda: parse_challenge(answer.replace(", nonce=", ", x-nonce="), proxy=False))
    assert len(errors) == 6
    for error in errors:
        for text in (str(error), repr(error), error.reason, error.offered or ""):
            assert PASSWORD[:12] not in text
            assert response not in text
            assert not re.search(r"[0-9a-f]{32}", text)


SIP_MESSAGE = (
    "REGISTER sip:carrier.test SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7\r\n"
    "From: <sip:trunk-7@carrier.test>;tag=a73kszlfl\r\n"
    "To: <sip:trunk-7@carrier.test>\r\n"
    "Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.10\r\n"
    "CSeq: 2 REGISTER\r\n"
    'authorization: Digest username="trunk-7", realm="carrier.test", nonce="N0NCE-1",\r\n'
    '  uri="sip:carrier.test", response="0123456789abcdef0123456789abcdef",\r\n'
    '  algorithm=MD5, cnonce="CN-1", qop=auth, nc=00000001\r\n'
    'Proxy-Authorization: Digest username="trunk-7", realm="sbc.test", nonce="N0NCE-2", '
    'uri="sip:carrier.test", response="fedcba9876543210fedcba9876543210"\r\n'
    "Contact: <sip:trunk-7@192.0.2.10:5060>\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def test_redact_a_sip_message() -> None:
    redacted = redact(SIP_MESSAGE)
    for secret in ("N0NCE", "CN-1", "0123456789abcdef", "fedcba98", "username"):
        assert secret not in redacted
    lines = redacted.split("\r\n")
    assert lines[6] == "authorization: ***"
    assert lines[7] == "Proxy-Authorization: ***"
    kept = [
        line
        for line in SIP_MESSAGE.split("\r\n")
        if "uthoriz" not in line and not line.startswith("  ")
    ]
    assert [line for line in lines if "***" not in line] == kept


def test_redact_parameters_anywhere() -> None:
    text = (
        'WWW-Authenticate: Digest realm="carrier.test", nonce="abc\\"def", qop="auth"\n'
        'answer: nc=00000002, cnonce = c1, response=deadbeef; NextNonce="z", rspauth="f0"\n'
        "snonce=keep, x-nonce=keep"
    )
    assert redact(text) == (
        'WWW-Authenticate: Digest realm="carrier.test", nonce="***", qop="auth"\n'
        'answer: nc=00000002, cnonce = ***, response=***; NextNonce="***", rspauth="***"\n'
        "snonce=keep, x-nonce=keep"
    )
    assert redact("nothing here") == "nothing here"
    assert redact('cut off: response="abc') == 'cut off: response="***"'
