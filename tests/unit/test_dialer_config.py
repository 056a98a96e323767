"""The ``dialer:`` section: what it accepts, and each mistake as one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkguard.cli import main
from trunkguard.config import ConfigError, parse_config
from trunkguard.dialer import Step, describe

BASE = """
listen: "udp:127.0.0.1:5060"
carriers:
  - {name: a, uri: "sip:127.0.0.1:9"}
  - {name: b, uri: "sip:127.0.0.1:10"}
"""

GOOD = BASE + """
dialer:
  vicidial:
    url: "http://vici.example/vicidial/non_agent_api.php"
    user: "6666"
    pass_env: TG_TEST_VICI_PASS
  webhook: {url: "https://dialer.example/hooks/T0KEN"}
  dry_run: true
  campaigns:
    - id: TESTOUT
      prefixes: ["1212"]
      normal: 3.0
      levels: [{below: 0.8, level: 2.0}, {below: 0.5, level: 1.0}, {below: 0.2, level: 0}]
      min_interval: 30
    - id: LIVE
      carriers: [a]
      normal: 2.5
      levels: [{below: 0.5, level: 1.25}]
      dry_run: false
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as got:
        parse_config(text)
    return "\n".join(got.value.problems)


def campaign(body: str) -> str:
    return BASE + "dialer:\n  campaigns:\n    - " + body + "\n"


def test_a_full_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_VICI_PASS", "pw-123")
    settings = parse_config(GOOD).dialer_settings()
    test, live = settings.campaigns
    assert test.steps == (Step(0.8, 2.0), Step(0.5, 1.0), Step(0.2, 0.0))
    assert test.prefixes == ("1212",) and test.dry_run and test.min_interval == 30
    assert live.carriers == ("a",) and not live.dry_run
    assert settings.vicidial is not None and settings.vicidial.password == "pw-123"
    assert settings.vicidial.source == "trunkguard"
    text = describe(settings)
    assert text == (
        "2 campaign(s) to VICIdial at http://vici.example, webhook https://dialer.example "
        "(dry run: TESTOUT)"
    )
    assert "pw-123" not in repr(settings) and "T0KEN" not in text


def test_the_default_is_off() -> None:
    settings = parse_config(BASE).dialer_settings()
    assert settings.campaigns == () and settings.vicidial is None and settings.webhook is None


def test_a_missing_password_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TG_TEST_VICI_PASS", raising=False)
    with pytest.raises(ConfigError) as got:
        parse_config(GOOD).dialer_settings()
    assert got.value.problems == [
        "dialer vicidial password: environment variable TG_TEST_VICI_PASS: not set"
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "{id: X1, normal: 2, levels: [{below: 0.5, level: 3}]}",
            "level 3 is above the level for more capacity (2)",
        ),
        (
            "{id: X1, normal: 2, levels: [{below: 0.8, level: 1}, {below: 0.5, level: 1.5}]}",
            "level 1.5 is above the level for more capacity (1)",
        ),
        ("{id: X1, normal: 2, levels: [{below: 0.5, level: 2}]}", "the level is not below normal"),
        ("{id: X1, normal: 19, levels: [{below: 0.5, level: 1}]}", "less than or equal to 18"),
        ("{id: X1, normal: 2, levels: [{below: 1.5, level: 1}]}", "less than or equal to 1"),
        ("{id: X1, normal: 2, levels: []}", "at least 1 item"),
        ("{id: X, normal: 2, levels: [{below: 0.5, level: 1}]}", "at least 2 characters"),
        ("{id: TOOLONGID, normal: 2, levels: [{below: 0.5, level: 1}]}", "at most 8 characters"),
        (
            "{id: X1, normal: 2, prefixes: ['1'], carriers: [a], levels: [{below: 0.5, level: 1}]}",
            "give prefixes or carriers, not both",
        ),
        (
            "{id: X1, normal: 2, carriers: [zz], levels: [{below: 0.5, level: 1}]}",
            "no carrier named zz",
        ),
        (
            "{id: X1, normal: 2, prefixes: ['12a'], levels: [{below: 0.5, level: 1}]}",
            "a prefix is digits",
        ),
        (
            "{id: X1, normal: 2.001, levels: [{below: 0.5, level: 1}]}",
            "multiple of 0.01",
        ),
    ],
)
def test_campaign_mistakes(body: str, expected: str) -> None:
    assert expected in problems(campaign(body))


def test_vicidial_mistakes() -> None:
    text = BASE + 'dialer:\n  vicidial: {url: "ftp://x/y?pass=hunter2", user: "6666"}\n'
    found = problems(text)
    assert "expected an http:// or https:// URL" in found
    assert "hunter2" not in found
    found = problems(BASE + 'dialer:\n  vicidial: {url: "http://x/", user: "6666"}\n')
    assert "give the API user's password as pass_file or pass_env (one)" in found
    text = BASE + (
        'dialer:\n  vicidial: {url: "http://x/", user: "6666", pass_env: P, '
        'source: "a-source-far-too-long-for-it"}\n'
    )
    assert "source" in problems(text)


def test_duplicate_campaigns() -> None:
    one = "{id: X1, normal: 2, levels: [{below: 0.5, level: 1}]}"
    text = BASE + f"dialer:\n  campaigns:\n    - {one}\n    - {one}\n"
    assert "two campaigns have the same id" in problems(text)


def test_check_prints_the_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TG_TEST_VICI_PASS", "pw-123")
    path = tmp_path / "router.yaml"
    path.write_text(GOOD)
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  dialer feedback: 2 campaign(s) to VICIdial at http://vici.example" in out
    assert "pw-123" not in out


def test_the_docs_example_is_valid_and_its_table_holds() -> None:
    from trunkguard.dialer import level_for

    doc = (Path(__file__).parents[2] / "docs" / "dialer-feedback.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config(BASE + block)
    camp = config.dialer.campaigns[0].settings(dry_run=False)
    assert config.dialer.vicidial is not None and config.dialer.webhook is not None
    # the doc's table: three equal carriers, 3, 2, 1, 0 of them UP
    for up, level in ((3, 3.0), (2, 2.0), (1, 1.0), (0, 0.0)):
        assert level_for(up / 3, camp)[0] == level
