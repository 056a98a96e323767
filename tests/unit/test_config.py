"""Config: the minimal file works as it is; every error names file, line, field and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trunkguard.config import ConfigError, load_config, parse_config
from trunkguard.health import OutcomeClass

MINIMAL = """\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - {name: a, uri: "sip:127.0.0.1:5071"}
  - {name: b, uri: "sip:127.0.0.1:5072"}
  - {name: c, uri: "sip:127.0.0.1:5073"}
"""


def test_minimal_file_keeps_working() -> None:
    config = parse_config(MINIMAL, "minimal.yaml")
    targets = config.targets()
    assert [t.name for t in targets] == ["a", "b", "c"]
    assert [t.flow.addr for t in targets] == [("127.0.0.1", p) for p in (5071, 5072, 5073)]
    settings = config.proxy_settings()
    assert settings.advertise == ("127.0.0.1", 5060)
    assert settings.invite_timeout == 2.0
    assert settings.max_attempts == 3


def test_embedded_default_loads() -> None:
    config, source = load_config(None)
    assert source == "<embedded default>"
    assert len(config.targets()) == 3


def test_overrides_and_tcp_carrier() -> None:
    config = parse_config(
        MINIMAL.replace(
            '{name: c, uri: "sip:127.0.0.1:5073"}',
            '{name: c, uri: "sip:127.0.0.1:5073;transport=tcp", failures: {480: trunk_fault}}',
        )
        + "failures: {486: trunk_fault}\nfailover: {invite_timeout: 0.5, max_attempts: 2}\n",
        "x.yaml",
    )
    a, _, c = config.targets()
    assert c.flow.transport == "tcp"
    assert c.failures.klass(480) is OutcomeClass.TRUNK_FAULT
    assert a.failures.klass(480) is OutcomeClass.DESTINATION_FINAL
    assert a.failures.klass(486) is OutcomeClass.TRUNK_FAULT  # global override
    assert config.proxy_settings().invite_timeout == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: [udp:127.0.0.1:5060\n", "x.yaml:2: not valid YAML"),
        ("- 1\n", "x.yaml: expected a mapping"),
        (MINIMAL.replace("udp:127.0.0.1:5060", "sctp:127.0.0.1:5060"), "x.yaml:1: listen:"),
        (MINIMAL.replace("127.0.0.0/8", "not-a-net"), "x.yaml:2: allow: 'not-a-net'"),
        (
            MINIMAL.replace("sip:127.0.0.1:5072", "http://x"),
            "x.yaml:5: carriers[1].uri: 'http://x': a carrier URI must be sip:",
        ),
        (
            MINIMAL.replace("name: c", "name: a"),
            "x.yaml:6: carriers[2].name: duplicate target name 'a' (also carriers[0].name)",
        ),
        (MINIMAL + "failover:\n  invite_timeout: 0\n", "x.yaml:8: failover.invite_timeout:"),
        (MINIMAL + "bogus: 1\n", "x.yaml:7: bogus: Extra inputs are not permitted"),
        (MINIMAL + "failures: {200: trunk_fault}\n", "only 300-699"),
        (MINIMAL + "failures: {503: maybe}\n", "x.yaml:7: failures[503]: Input should be"),
    ],
)
def test_errors_name_line_field_and_reason(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_all_errors_reported_at_once() -> None:
    text = MINIMAL.replace("127.0.0.0/8", "bad").replace("sip:127.0.0.1:5072", "tel:1")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    assert len(info.value.problems) == 2


def test_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("sip:127.0.0.1:5071", "sip:127.0.0.1:99999"))
    run = [sys.executable, "-m", "trunkguard", "check", "-c"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "carrier 1: a at udp:127.0.0.1:5071" in ok.stdout
    failed = subprocess.run([*run, str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 2
    assert f"{bad}:4: carriers[0].uri:" in failed.stderr
    assert "Traceback" not in failed.stderr
    missing = subprocess.run([*run, str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + "failover:\n  max_attempts: 2\n  max_attempts: 3\n",
            "x.yaml:9: failover.max_attempts: duplicate key (first at line 8)",
        ),
        (MINIMAL + "allow: []\n", "x.yaml:7: allow: duplicate key (first at line 2)"),
        (
            MINIMAL.replace('name: c, uri: "sip', 'name: c, name: d, uri: "sip'),
            "x.yaml:6: carriers[2].name: duplicate key (first at line 6)",
        ),
    ],
)
def test_a_key_twice_is_an_error_at_any_depth(text: str, expected: str) -> None:
    assert expected in _problems(text)


def test_merge_keys_are_not_duplicates() -> None:
    text = MINIMAL.replace("- {name: b,", "- &b {max_calls: 5, name: b,").replace(
        "- {name: c, uri", "- {<<: *b, name: c, uri"
    )
    config = parse_config(text, "x.yaml")
    assert [(c.name, c.max_calls) for c in config.carriers] == [("a", None), ("b", 5), ("c", 5)]


def test_duplicate_names_are_reported_at_the_duplicate_with_the_other_errors() -> None:
    text = (
        MINIMAL.replace("name: c", "name: a").replace("127.0.0.0/8", "bogus")
        + "pools:\n  - name: p\n    prefixes: ['1800']\n    members:\n"
        + "      - {name: b, uri: 'sip:10.0.0.1'}\n"
        + "routes: [{prefix: '44', pin: [zz]}]\n"
    )
    assert _problems(text) == [
        "x.yaml:2: allow: 'bogus' is not an address or network",
        "x.yaml:6: carriers[2].name: duplicate target name 'a' (also carriers[0].name)",
        "x.yaml:11: pools[0].members[0].name: duplicate target name 'b' (also carriers[1].name)",
        "x.yaml:12: routes[0].pin: no carrier named zz",
    ]


def test_not_utf8_names_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(MINIMAL.encode() + b"log: {level: inf\xe9}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}:7: not UTF-8 text: byte 0xe9 at column 17"]


def test_control_characters_and_deep_nesting_are_errors_with_a_place() -> None:
    assert _problems(MINIMAL + "log: {level: \x01}\n") == [
        "x.yaml:7: not valid YAML: character #x0001 is not allowed"
    ]
    deep = "a: " + "[" * 5000 + "]" * 5000
    assert _problems(deep) == ["x.yaml: not valid YAML: nested too deeply"]


def test_check_prints_no_traceback_for_bad_utf8_or_duplicates(tmp_path: Path) -> None:
    for name, data in [
        ("latin1.yaml", MINIMAL.encode() + b"# caf\xe9\n"),
        ("twice.yaml", (MINIMAL + "listen: udp:127.0.0.1:5061\n").encode()),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        run = [sys.executable, "-m", "trunkguard", "check", "-c", str(path)]
        done = subprocess.run(run, capture_output=True, text=True, check=False)
        assert done.returncode == 2, done
        assert done.stderr.startswith(f"{path}:7: "), done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("uri", "transport", "port"),
    [
        ("sips:127.0.0.1", "tls", 5061),
        ("sip:127.0.0.1:5071;transport=tls", "tls", 5071),
        ("sip:127.0.0.1:5071;transport=tcp", "tcp", 5071),
        ("sip:127.0.0.1", "udp", 5060),
    ],
)
def test_carrier_transports_and_default_ports(uri: str, transport: str, port: int) -> None:
    config = parse_config(MINIMAL.replace("sip:127.0.0.1:5071", uri), "x.yaml")
    (target, *_) = config.targets()
    assert target.flow.transport == transport and target.flow.addr == ("127.0.0.1", port)
    assert (target.tls is not None) == (transport == "tls")
    if target.tls is not None:
        assert target.tls.server_name == "127.0.0.1" and target.tls.verify


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("sips:127.0.0.1:5071;transport=udp", "a sips: URI cannot use transport=udp"),
        ("sip:127.0.0.1:5071;transport=sctp", "transport must be udp, tcp or tls"),
    ],
)
def test_impossible_transports_are_refused(uri: str, why: str) -> None:
    (problem,) = _problems(MINIMAL.replace("sip:127.0.0.1:5071", uri))
    assert problem == f"x.yaml:4: carriers[0].uri: {uri!r}: {why}"


def test_a_password_in_a_carrier_uri_is_refused_without_showing_it() -> None:
    (problem,) = _problems(MINIMAL.replace("sip:127.0.0.1", "sip:acct:Pa55-word@127.0.0.1", 1))
    assert "Pa55-word" not in problem
    assert problem.endswith("'sip:acct:***@127.0.0.1:5071': a password does not belong in the URI")


def test_new_fields_have_their_defaults() -> None:
    config = parse_config(MINIMAL, "x.yaml")
    assert config.reject == "drop"
    assert config.server_header is None
    assert config.failover.dialog_max_age == 14_400.0
    assert config.dialog_keepalive.interval is None
    assert [c.transit for c in config.carriers] == [False, False, False]
    assert (config.secret, config.secret_file, config.secret_path()) == (None, None, None)
    assert config.shutdown.drain_timeout == 10.0


def test_new_fields_take_their_values(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        MINIMAL.replace("name: a,", "name: a, transit: true,")
        + "reject: 403\nserver_header: trunkguard/0.1 (lab)\nfailover: {dialog_max_age: 60}\n"
        + "dialog_keepalive: {interval: 30}\nsecret_file: keys/rr.key\n"
        + "shutdown: {drain_timeout: 0}\n"
    )
    config, _ = load_config(path)
    assert config.reject == "403"
    assert config.server_header == "trunkguard/0.1 (lab)"
    assert config.failover.dialog_max_age == 60
    assert config.dialog_keepalive.interval == 30
    assert [c.transit for c in config.carriers] == [True, False, False]
    assert config.secret_path() == tmp_path / "keys" / "rr.key"
    assert config.shutdown.drain_timeout == 0
    assert parse_config(MINIMAL + "reject: drop\nsecret: " + "s" * 32 + "\n").secret == "s" * 32


def test_new_fields_are_validated_all_at_once() -> None:
    text = MINIMAL.replace("name: c,", "name: c, transit: maybe,") + (
        "reject: 404\n"
        'server_header: "one\\r\\nX-Injected: 1"\n'
        "failover: {dialog_max_age: 59}\n"
        "dialog_keepalive: {interval: 9, timeout: 2}\n"
        "secret: tooshort\n"
        "secret_file: rr.key\n"
        "shutdown: {drain_timeout: -1}\n"
    )
    assert _problems(text) == [
        "x.yaml:6: carriers[2].transit: Input should be a valid boolean, unable to interpret input",
        "x.yaml:7: reject: Input should be 'drop' or '403'",
        "x.yaml:8: server_header: expected one line of printable ASCII, 1-200 characters, "
        "without leading or trailing spaces",
        "x.yaml:9: failover.dialog_max_age: Input should be greater than or equal to 60",
        "x.yaml:10: dialog_keepalive.interval: Input should be greater than or equal to 10",
        "x.yaml:10: dialog_keepalive.timeout: Extra inputs are not permitted",
        "x.yaml:11: secret: String should have at least 32 characters",
        "x.yaml:12: secret_file: give secret or secret_file, not both",
        "x.yaml:13: shutdown.drain_timeout: Input should be greater than or equal to 0",
    ]


@pytest.mark.parametrize("value", ["", " lead", "trail ", "x" * 201, "caf\u00e9", "a\tb"])
def test_server_header_must_be_one_safe_line(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(MINIMAL + f"server_header: {value!r}\n".replace("'", '"'), "x.yaml")
