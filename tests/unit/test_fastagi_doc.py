"""docs/fastagi.md: its config parses, its dialplan calls the advisor as the server expects,
and its counter table names every counter the advisor keeps."""

from __future__ import annotations

import re
from pathlib import Path

from trunkguard.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "fastagi.md").read_text()
SERVER_SET = {"TG_PLAN_ID", "TG_ROUTE_COUNT", "TG_ROUTE_ERROR", "TG_REPORT", "TG_FAILOVER",
              "TG_ROUTE_"}  # fmt: skip


def block(lang: str) -> str:
    (text,) = re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)
    return text


def test_the_config_parses_with_its_dial_strings() -> None:
    config = parse_config(block("yaml"))
    assert config.agi.enabled and config.agi.settings().port == 4578
    assert {c.name: c.dial for c in config.carriers} == {
        "carrier-a": "PJSIP/${NUMBER}@carrier-a",
        "carrier-b": "SIP/carrier-b/${EXTEN}",
    }


def test_the_dialplan_calls_route_and_report_as_the_server_reads_them() -> None:
    plan = block("asterisk")
    for line in plan.splitlines():
        line = line.split(";", 1)[0].strip()
        assert not line or re.match(r"^(\[[\w-]+\]|TG=\S+|(exten|same) => .+)$", line), line
    agi = re.findall(r"AGI\(agi://([^/]+)/(\w+),([^)]*)\)", plan)
    assert ("127.0.0.1:4578", "route", "${EXTEN:1}") in agi
    report = ("127.0.0.1:4578", "report", "${TG_PLAN_ID},${N},${DIALSTATUS},${HANGUPCAUSE}")
    assert agi.count(report) == 2  # after each Dial, and in the h extension
    assert {a for a in agi if a[1] not in ("route", "report")} == set()
    assert "Dial(${TG_ROUTE_${N}}," in plan
    read = set(re.findall(r"\$\{(TG_[A-Z_]+)", plan))
    assert read <= SERVER_SET, read - SERVER_SET


def test_every_counter_is_in_the_table() -> None:
    source = "".join(
        (ROOT / "src" / "trunkguard" / "agi" / f).read_text() for f in ("_server.py", "_advisor.py")
    )
    used = set(re.findall(r'"(agi_[a-z_]+)"', source))
    used |= {f"agi_reply_{code}" for code in (510, 511, 520)}
    missing = {c for c in used if f"`{c}`" not in DOC and c not in ("agi_reply_",)}
    assert not missing, missing
