"""URIs (RFC 3261 §19.1), name-addr values (§20.10) and Via values (§20.42, RFC 3581)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sipgen import UriParts, ViaParts, sip_uris, via_values

from trunkguard.sip import (
    MAGIC_COOKIE,
    ParseError,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_hostport,
)


# -- parse_uri ------------------------------------------------------------------------------
def test_sip_uri_with_every_part() -> None:
    uri = parse_uri("sips:alice:secret@Atlanta.example.com:5061;transport=TLS;lr?subject=hi&x=1")
    assert uri.scheme == "sips" and uri.is_sip
    assert uri.user == "alice"
    assert uri.password == "secret"
    assert uri.host == "Atlanta.example.com"
    assert uri.port == 5061
    assert uri.params == {"transport": "TLS", "lr": None}
    assert uri.headers == "subject=hi&x=1"
    assert uri.hostport() == "Atlanta.example.com:5061"
    assert str(uri) == "sips:alice:secret@Atlanta.example.com:5061;transport=TLS;lr?subject=hi&x=1"


def test_minimal_sip_uri() -> None:
    uri = parse_uri("sip:example.com")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sip", None, "example.com", None)
    assert uri.params == {} and uri.headers is None
    assert str(uri) == "sip:example.com"


def test_scheme_is_case_insensitive_and_param_names_are_lowered() -> None:
    uri = parse_uri("SIP:bob@example.com;Transport=TCP;LR")
    assert uri.scheme == "sip"
    assert uri.params == {"transport": "TCP", "lr": None}


@pytest.mark.parametrize(
    ("text", "scheme", "opaque"),
    [
        ("tel:+1-201-555-0123", "tel", "+1-201-555-0123"),
        ("tel:7042;phone-context=example.com", "tel", "7042;phone-context=example.com"),
        (
            "nobodyKnowsThisScheme:totallyopaquecontent",
            "nobodyknowsthisscheme",
            "totallyopaquecontent",
        ),
        ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002"),
        ("http://www.example.com", "http", "//www.example.com"),
        ("isbn:2983792873", "isbn", "2983792873"),
        ("name:John_Smith", "name", "John_Smith"),
    ],
)
def test_non_sip_schemes_are_kept_opaque(text: str, scheme: str, opaque: str) -> None:
    uri = parse_uri(text)
    assert uri.scheme == scheme
    assert uri.opaque == opaque
    assert not uri.is_sip
    assert uri.host == "" and uri.user is None
    assert str(uri) == f"{scheme}:{opaque}"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]", "[2001:db8::10]", None),
        ("sip:alice@[2001:db8::10]:5070", "[2001:db8::10]", 5070),
        ("sip:[::1]:5060;transport=tcp", "[::1]", 5060),
        ("sip:[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]", None),
        ("sip:192.0.2.1:0", "192.0.2.1", 0),
        ("sip:host:65535", "host", 65535),
        ("sip:host.example.com.", "host.example.com.", None),
    ],
)
def test_hosts_and_ports(text: str, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert (uri.host, uri.port) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "example.com",
        "sip:bob@",
        "sip:@example.com",
        "sip:bob@example.com:65536",
        "sip:bob@example.com:123456",
        "sip:bob@example.com:-1",
        "sip:bob@example.com:",
        "sip:bob@example.com:50x",
        "sip:bob@example.com:\u0665\u0660",  # Arabic-Indic digits are not DIGIT
        "sip:[2001:db8::zz]",
        "sip:[2001:db8::1",
        "sip:[2001:db8::1]x",
        "sip:2001:db8::1",
        "sip:bob@exa mple.com",
        "sip:bob@example.com\t",
        "sip:bob@-example.com",
        "sip:bob@example_com",
        "sip:b%zzob@example.com",
        "sip:b%4ob@example.com",
        "sip:bob:pa ss@example.com",
        "sip:bo<b@example.com",
        "sip:bob@example.com;=x",
        "sip:bob@example.com;p=",
        "sip:bob@example.com;p=a b",
        "1sip:bob@example.com",
        "<sip:bob@example.com>",
        "tel:",
    ],
)
def test_malformed_uris_are_parse_errors(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_uri(text)
    assert info.value.reason


@pytest.mark.parametrize(
    ("text", "user"),
    [
        ("sip:user;par=u%40example.net@example.com", "user;par=u%40example.net"),
        ("sip:a?b=c@example.com", "a?b=c"),
        ("sip:a/b/c@example.com", "a/b/c"),
        ("sip:%75se%72@example.com", "%75se%72"),
        ("sip:sips%3Auser%40example.com@example.net", "sips%3Auser%40example.com"),
        ("sip:null-%00-null@example.com", "null-%00-null"),
        ("sip:+1-(201)_555.0123!~*'&=+$,@example.com", "+1-(201)_555.0123!~*'&=+$,"),
    ],
)
def test_user_part_with_user_unreserved_and_escaped_characters(text: str, user: str) -> None:
    uri = parse_uri(text)
    assert uri.user == user
    assert uri.params == {} and uri.headers is None
    assert str(uri) == text


def test_user_part_with_semicolon_and_uri_params_after_the_host() -> None:
    uri = parse_uri("sip:a;b@example.com;maddr=192.0.2.1?h=v")
    assert uri.user == "a;b"
    assert uri.params == {"maddr": "192.0.2.1"}
    assert uri.headers == "h=v"


def test_escaped_parameters_are_kept_as_written() -> None:
    uri = parse_uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}


@given(sip_uris())
def test_generated_sip_uris_parse_into_their_parts(parts: UriParts) -> None:
    uri = parse_uri(parts.text)
    assert uri.scheme == parts.scheme
    assert uri.user == parts.user
    assert uri.host == parts.host
    assert uri.port == parts.port
    assert uri.params == parts.params
    assert str(uri) == parts.text
    assert parse_uri(str(uri)) == uri


@given(st.text(max_size=40))
def test_parse_uri_on_any_text_raises_only_parse_error(text: str) -> None:
    try:
        uri = parse_uri(text)
    except ParseError as exc:
        assert exc.reason
        return
    if uri.is_sip and uri.port is not None:
        assert 0 <= uri.port <= 65535


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("example.com", "example.com", None),
        ("example.com:5060", "example.com", 5060),
        ("[2001:db8::1]:5061", "[2001:db8::1]", 5061),
        ("[2001:db8::1]", "[2001:db8::1]", None),
        ("192.0.2.1:1", "192.0.2.1", 1),
    ],
)
def test_split_hostport(text: str, host: str, port: int | None) -> None:
    assert split_hostport(text) == (host, port)


@pytest.mark.parametrize(
    "text", ["", ":5060", "host:", "host:99999", "[::1]:", "[::1]5060", "a:b:c"]
)
def test_split_hostport_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        split_hostport(text)


# -- parse_name_addr ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "display", "uri", "params"),
    [
        (
            '"Alice Smith" <sip:alice@example.com>;tag=abc',
            '"Alice Smith"',
            "sip:alice@example.com",
            {"tag": "abc"},
        ),
        ("Alice Smith <sip:alice@example.com>", "Alice Smith", "sip:alice@example.com", {}),
        ("<sip:alice@example.com>", None, "sip:alice@example.com", {}),
        (
            "  <sip:alice@example.com> ; tag = x ; lr",
            None,
            "sip:alice@example.com",
            {"tag": "x", "lr": None},
        ),
        ("sip:alice@example.com;tag=1", None, "sip:alice@example.com", {"tag": "1"}),
        ("sip:alice@example.com ; tag = 1", None, "sip:alice@example.com", {"tag": "1"}),
        (
            '"Bell, Alexander" <sip:a.g.bell@example.com>',
            '"Bell, Alexander"',
            "sip:a.g.bell@example.com",
            {},
        ),
        ('"a<b>c;d" <sip:x@example.com>', '"a<b>c;d"', "sip:x@example.com", {}),
        (
            '"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>',
            '"J Rosenberg \\\\\\""',
            "sip:jdrosen@example.com",
            {},
        ),
        ('"" <sip:x@example.com>', '""', "sip:x@example.com", {}),
        ('"\u00e9t\u00e9" <sip:x@example.com>', '"\u00e9t\u00e9"', "sip:x@example.com", {}),
        (
            "caller <sip:caller@example.com>;tag=323",
            "caller",
            "sip:caller@example.com",
            {"tag": "323"},
        ),
        ("<sip:x@example.com?Route=%3Csip:y%3E>", None, "sip:x@example.com?Route=%3Csip:y%3E", {}),
        ("<tel:+15551234567>;tag=t", None, "tel:+15551234567", {"tag": "t"}),
        ("<sip:[2001:db8::1]:5060;lr>", None, "sip:[2001:db8::1]:5060;lr", {}),
    ],
)
def test_name_addr(
    value: str, display: str | None, uri: str, params: dict[str, str | None]
) -> None:
    na = parse_name_addr(value, "From")
    assert na.display == display
    assert str(na.uri) == uri
    assert na.params == params
    assert na.tag == params.get("tag")


@pytest.mark.parametrize(
    "value",
    [
        "Bell, Alexander <sip:a.g.bell@example.com>",  # ',' needs quotes
        "Bell; Alexander <sip:a.g.bell@example.com>",
        "Al@ce <sip:alice@example.com>",
        '"unterminated <sip:x@example.com>',
        '"Alice" "Smith" <sip:alice@example.com>',
        '"Alice" sip:alice@example.com',  # quoted display name needs <URI>
        "<sip:alice@example.com",
        "<sip:alice@example.com> trailing",
        "< sip:alice@example.com >",  # badaspec: LWS inside <>
        "sip:alice@example.com?Route=x",  # addr-spec with '?' must be in <>
        "<sip:alice@example.com>;tag=",
        "<>",
        "",
        "<sip:alice@example.com>;=x",
    ],
)
def test_bad_name_addr_is_a_parse_error_naming_the_header(value: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_name_addr(value, "To")
    assert info.value.header == "To"
    assert info.value.reason
    assert str(info.value).startswith("To: ")


def test_valueless_tag_is_kept_as_a_flag() -> None:
    # ';tag' without a value is a generic-param flag; the parser accepts it as such.
    na = parse_name_addr("<sip:alice@example.com>;tag", "To")
    assert na.params == {"tag": None}
    assert na.tag is None


# -- parse_via -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "transport", "host", "port", "params"),
    [
        (
            "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
            "UDP",
            "pc33.atlanta.com",
            None,
            {"branch": "z9hG4bK776asdhds"},
        ),
        (
            # wsinv: LWS around every '/' and around ';' and '=', after unfolding.
            "SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw",
            "UDP",
            "192.0.2.2",
            None,
            {"branch": "390skdjuw"},
        ),
        (
            "SIP  / 2.0  / TCP     spindle.example.com   ;   branch  =   z9hG4bK9ikj8",
            "TCP",
            "spindle.example.com",
            None,
            {"branch": "z9hG4bK9ikj8"},
        ),
        (
            "SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
            "UDP",
            "192.168.255.111",
            None,
            {"branch": "z9hG4bK30239"},
        ),
        (
            "sip/2.0/udp host.example.com : 5070 ;branch=z9hG4bKx",
            "UDP",
            "host.example.com",
            5070,
            {"branch": "z9hG4bKx"},
        ),
        (
            "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3-111",
            "UDP",
            "[2001:db8::9:1]",
            5070,
            {"branch": "z9hG4bKas3-111"},
        ),
        (
            "SIP/2.0/TLS [2001:db8::9:255];branch=z9hG4bKas3-111;received=[2001:db8::9:1]",
            "TLS",
            "[2001:db8::9:255]",
            None,
            {"branch": "z9hG4bKas3-111", "received": "[2001:db8::9:1]"},
        ),
        (
            "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKabc",
            "UDP",
            "10.0.0.1",
            5060,
            {"rport": None, "branch": "z9hG4bKabc"},
        ),
        (
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;received=192.0.2.7;rport=40000",
            "UDP",
            "10.0.0.1",
            5060,
            {"branch": "z9hG4bKabc", "received": "192.0.2.7", "rport": "40000"},
        ),
        (
            "SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en;ttl=1;maddr=224.2.0.1",
            "UNKNOWN",
            "t4.example.com",
            None,
            {"branch": "z9hG4bKasd0f3en", "ttl": "1", "maddr": "224.2.0.1"},
        ),
        ("SIP/2.0/TCP host", "TCP", "host", None, {}),
    ],
)
def test_via(
    value: str, transport: str, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    via = parse_via(value)
    assert via.transport == transport
    assert via.host == host
    assert via.port == port
    assert via.params == params
    assert via.branch == params.get("branch")
    assert via.sent_by == (host if port is None else f"{host}:{port}")


@pytest.mark.parametrize(
    "value",
    [
        "",
        ";",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/3.0/UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host:\u0663",
        "SIP/2.0/UDP [2001:db8::zz]",
        "SIP/2.0/UDP host junk",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;branch",
        "SIP/2.0/UDP host;=x",
        "SIP/2.0/UDP ho_st",
    ],
)
def test_bad_via_is_a_parse_error(value: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_via(value)
    assert info.value.header == "Via"
    assert info.value.reason


LWS = [" ", "  ", "\t", " \t "]
lws = st.sampled_from(["", *LWS])


@given(via_values(), st.data())
def test_via_with_lws_everywhere_parses_like_the_compact_form(
    parts: ViaParts, data: st.DataObject
) -> None:
    def w() -> str:
        return data.draw(lws)

    def w1() -> str:  # at least one space where the grammar needs LWS
        return data.draw(st.sampled_from(LWS))

    params = parts.text.split(";")[1:]
    sent_by = parts.host if parts.port is None else f"{parts.host}{w()}:{w()}{parts.port}"
    spaced = f"{w()}SIP{w()}/{w()}2.0{w()}/{w()}{parts.transport.lower()}{w1()}{sent_by}"
    for p in params:
        name, eq, value = p.partition("=")
        spaced += f"{w()};{w()}{name}" + (f"{w()}={w()}{value}" if eq else "")
    spaced += w()
    plain = parse_via(parts.text)
    assert parse_via(spaced) == plain
    assert plain.transport == parts.transport
    assert (plain.host, plain.port) == (parts.host, parts.port)
    assert plain.branch == parts.branch
    assert plain.branch is not None and plain.branch.startswith(MAGIC_COOKIE)


@given(st.text(max_size=60))
def test_parse_via_on_any_text_raises_only_parse_error(text: str) -> None:
    try:
        via = parse_via(text)
    except ParseError as exc:
        assert exc.header == "Via"
        return
    assert via.transport == via.transport.upper()
    assert via.host
