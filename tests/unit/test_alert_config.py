"""The alerts: section: defaults, every hook checked with a clear line, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkguard.alerts import DampingSettings
from trunkguard.config import ConfigError, load_config, parse_config

BASE = """\
listen: udp:127.0.0.1:5060
allow: [127.0.0.0/8]
carriers:
  - {name: a, uri: "sip:127.0.0.1:5071"}
"""
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETPATH"


def problems(alerts: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + alerts)
    return info.value.problems


def test_no_alerts_section_means_no_hooks_and_the_default_damping() -> None:
    settings = parse_config(BASE).alert_settings()
    assert settings.hooks == () and settings.damping == DampingSettings()


def test_a_full_section(tmp_path: Path) -> None:
    (tmp_path / "pd.key").write_text("ROUTINGKEY123\n")
    path = tmp_path / "router.yaml"
    path.write_text(
        BASE
        + f"""\
alerts:
  router: edge-1
  damping: {{half_life: 30, suppress: 4000, burst: 5, per_minute: 6}}
  hooks:
    - {{type: webhook, name: slack, url: "{SLACK}", format: slack, events: [state, degraded]}}
    - type: webhook
      url: https://events.pagerduty.com/v2/enqueue
      format: pagerduty
      secret_file: pd.key
    - type: command
      argv: [/usr/local/bin/notify, --page]
      timeout: 10
      env: {{NOTIFY_TEAM: noc}}
"""
    )
    config, _ = load_config(path)
    s = config.alert_settings()
    assert s.router == "edge-1"
    assert (s.damping.half_life, s.damping.suppress, s.damping.burst) == (30, 4000, 5)
    slack, pd, cmd = s.hooks
    assert (slack.name, slack.format, slack.events) == ("slack", "slack", {"state", "degraded"})
    assert pd.name == "webhook-2" and pd.secret == "ROUTINGKEY123"  # read from the file
    assert "ROUTINGKEY123" not in repr(pd)
    assert cmd.argv == ("/usr/local/bin/notify", "--page") and cmd.env == (("NOTIFY_TEAM", "noc"),)
    assert cmd.events == {"state", "degraded", "overload"} and cmd.timeout == 10


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        (
            "alerts: {hooks: [{type: command, argv: [notify.sh]}]}",
            "<config>:5: alerts.hooks[0].argv: 'notify.sh': the command must be an absolute path",
        ),
        (
            "alerts: {hooks: [{type: webhook, url: 'ftp://h/XXXXSECRETPATH'}]}",
            "alerts.hooks[0].url: expected an http:// or https:// URL (the URL is not shown)",
        ),
        ("alerts: {hooks: [{type: webhook}]}", "alerts.hooks[0]: a webhook needs url"),
        (
            "alerts: {hooks: [{type: command, argv: [/bin/true], url: 'http://h/'}]}",
            "alerts.hooks[0]: a command needs argv (and no url)",
        ),
        ("alerts: {hooks: [{type: sms, url: 'http://h/'}]}", "alerts.hooks[0].type: Input should"),
        (
            "alerts: {hooks: [{type: webhook, url: 'http://h/', events: [calls]}]}",
            "alerts.hooks[0].events[0]: Input should be 'state', 'degraded' or 'overload'",
        ),
        (
            "alerts: {hooks: [{type: webhook, url: 'http://h/', timeout: 0}]}",
            "alerts.hooks[0].timeout: Input should be greater than 0",
        ),
        (
            "alerts: {hooks: [{type: webhook, url: 'http://h/', secret_env: HOOK_KEY}]}",
            "a webhook's secret needs secret_header",
        ),
        (
            "alerts: {hooks: [{type: webhook, url: 'http://h/', format: pagerduty}]}",
            "format pagerduty needs a routing key",
        ),
        (
            "alerts: {hooks: [{type: webhook, url: 'http://h/', headers: {'Bad Name': x}}]}",
            "'Bad Name': not a header name",
        ),
        (
            "alerts: {hooks: [{type: command, argv: [/bin/true], env: {TG_EVENT: x}}]}",
            "'TG_EVENT': not a variable name of its own",
        ),
        ("alerts: {damping: {reuse: 4000}}", "reuse (4000) must be below suppress (3000)"),
        (
            "alerts: {damping: {suppress: 100000, max_suppress: 60}}",
            "suppress (100000) is above the highest penalty",
        ),
        ("alerts: {hookz: []}", "alerts.hookz: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_line_the_field_and_why(alerts: str, expected: str) -> None:
    found = problems(alerts)
    assert any(expected in p for p in found), found
    assert not any("XXXXSECRETPATH" in p for p in found)


def test_secret_files_and_variables_are_checked_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = "alerts: {hooks: [{type: webhook, url: 'http://h/', secret_header: X-Key, %s}]}"
    config = parse_config(BASE + hook % "secret_file: missing.key")
    config._base = tmp_path
    with pytest.raises(ConfigError, match=r"secret_file: .*missing\.key: cannot read it"):
        config.alert_settings()
    monkeypatch.delenv("HOOK_KEY", raising=False)
    config = parse_config(BASE + hook % "secret_env: HOOK_KEY")
    with pytest.raises(ConfigError, match="secret_env: environment variable HOOK_KEY: not set"):
        config.alert_settings()
    monkeypatch.setenv("HOOK_KEY", "k-123")
    (only,) = config.alert_settings().hooks
    assert only.secret == "k-123" and only.secret_header == "X-Key"


def test_check_refuses_a_bad_alerts_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trunkguard.cli import main

    path = tmp_path / "router.yaml"
    path.write_text(BASE + "alerts: {hooks: [{type: command, argv: [notify.sh]}]}\n")
    assert main(["check", "-c", str(path)]) == 2
    assert "alerts.hooks[0].argv" in capsys.readouterr().err
    hook = "alerts: {hooks: [{type: webhook, url: 'http://h/', secret_header: X, secret_file: k}]}"
    path.write_text(BASE + hook + "\n")
    assert main(["check", "-c", str(path)]) == 2  # the secret is read, as the router would
    assert "secret_file" in capsys.readouterr().err
    (tmp_path / "k").write_text("key-1\n")
    assert main(["check", "-c", str(path)]) == 0
    assert "alerts: webhook-1 (webhook http://h)" in capsys.readouterr().out
