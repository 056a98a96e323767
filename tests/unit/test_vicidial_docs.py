"""Every snippet of docs/vicidial.md, parsed and checked against the config the tests use.

The guide's fenced blocks each carry an id (```` ```ini id=vicidial-account ````); each id
has its checker here, and a block without one, or an id without a checker, fails. The
Asterisk snippets are read with a small parser of Asterisk's .conf format (sections,
``key=value``, ``exten =>`` lines); their values must match
docs/examples/vicidial-router.yaml, loaded with trunkguard's own loader: the peer's host and
port are the router's listen address, the dialer's address is in ``allow``, and the number
that the dialplan sends for a number its pattern matches is routed (``trunkguard route``'s
logic) to the example's carriers. Console blocks are run through trunkguard's CLI and
their output compared line by line.

The Asterisk columns of the outcome table are checked against a model of what Asterisk 18
does, read from its source (chan_sip.c ``hangup_sip2cause`` and ``handle_response``,
res_pjsip_rfc3326.c, app_dial.c ``handle_cause``), since no Asterisk runs here. The status
and Reason columns are played for real in tests/e2e/test_vicidial_e2e.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from trunkguard import cli
from trunkguard.config import NumbersConfig, RouterConfig, load_config, parse_config
from trunkguard.health import Q850_TO_STATUS, FailureTable, OutcomeClass, q850_cause
from trunkguard.routing import NumberRules, build_plan, normalize

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "vicidial.md"
EXAMPLE = ROOT / "docs" / "examples" / "vicidial-router.yaml"
SHOWN_PATH = "/etc/trunkguard/vicidial-router.yaml"  # where the guide's commands read it


# -- the guide's blocks -------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    lang: str
    id: str | None
    text: str
    line: int


_FENCE = re.compile(r"^```([\w-]*)(?:[ \t]+id=([\w-]+))?[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def guide_blocks(text: str) -> list[Block]:
    return [
        Block(m.group(1), m.group(2), m.group(3), text.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(text)
    ]


GUIDE_TEXT = GUIDE.read_text(encoding="utf-8")
BLOCKS = guide_blocks(GUIDE_TEXT)


def block(block_id: str) -> str:
    found = [b.text for b in BLOCKS if b.id == block_id]
    assert len(found) == 1, f"docs/vicidial.md has {len(found)} blocks with id={block_id}"
    return found[0]


def example() -> RouterConfig:
    return load_config(EXAMPLE)[0]


# -- Asterisk's .conf format --------------------------------------------------------------
@dataclass
class Section:
    """One ``[name]`` (or the lines before any): its options in order, repeats kept."""

    name: str | None
    templates: tuple[str, ...] = ()
    options: list[tuple[str, str, str]] = field(default_factory=list)  # key, "=" or "=>", value

    def get(self, key: str) -> str | None:
        values = self.all(key)
        assert len(values) <= 1, f"[{self.name}] has {key} {len(values)} times"
        return values[0] if values else None

    def all(self, key: str) -> list[str]:
        return [v for k, _, v in self.options if k.lower() == key.lower()]


class ConfError(ValueError):
    pass


_SECTION = re.compile(r"^\[([^\]\s]+)\](?:\(([^)]*)\))?$")


def parse_conf(text: str) -> list[Section]:
    """Asterisk's .conf syntax: ``;`` comments (``\\;`` is a literal), ``[name]`` or
    ``[name](template,...)`` headers, ``key = value`` and ``key => value`` lines. Anything
    else is an error naming its line; a name may head several sections (PJSIP's
    endpoint, aor and identify of one peer)."""
    sections = [Section(None)]
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(?<!\\);.*", "", raw).replace("\\;", ";").strip()
        if not line:
            continue
        m = _SECTION.match(line)
        if m:
            templates = tuple(t.strip() for t in (m.group(2) or "").split(",") if t.strip())
            sections.append(Section(m.group(1), templates))
            continue
        m = re.match(r"^([A-Za-z_][\w.-]*)\s*(=>|=)\s*(.*)$", line)
        if not m:
            raise ConfError(f"line {number}: not a section, key=value or key => value: {raw!r}")
        sections[-1].options.append((m.group(1), m.group(2), m.group(3).strip()))
    return [s for s in sections if s.name is not None or s.options]


def only(sections: list[Section], name: str | None, type_: str | None = None) -> Section:
    found = [s for s in sections if s.name == name and (type_ is None or s.get("type") == type_)]
    assert len(found) == 1, f"{len(found)} sections [{name}] type={type_}"
    return found[0]


def test_conf_parser() -> None:
    sections = parse_conf(
        "g = 1 ; a comment\n[a](t1, t2)\nx=1\nx = 2\n\n[a]\ntype=aor\nexten => _X.,1,NoOp(\\;)\n"
    )
    assert [(s.name, s.templates) for s in sections] == [(None, ()), ("a", ("t1", "t2")), ("a", ())]
    assert sections[0].get("g") == "1"
    assert sections[1].all("x") == ["1", "2"]
    assert sections[2].options[1] == ("exten", "=>", "_X.,1,NoOp(;)")
    with pytest.raises(ConfError, match="line 2"):
        parse_conf("[a]\nnot an option\n")


# -- the dialplan -------------------------------------------------------------------------
@dataclass(frozen=True)
class Exten:
    pattern: str
    priority: str
    app: str
    args: tuple[str, ...]


def parse_extens(sections: list[Section]) -> list[Exten]:
    out = []
    for section in sections:
        for key, sep, value in section.options:
            assert (key, sep) == ("exten", "=>"), f"not an exten line: {key} {sep} {value}"
            m = re.fullmatch(r"([^,]+),(\d+|n),(\w+)\((.*)\)", value)
            assert m, f"not pattern,priority,App(args): {value!r}"
            args = tuple(m.group(4).split(",")) if m.group(4) else ()
            out.append(Exten(m.group(1), m.group(2), m.group(3), args))
    return out


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """An Asterisk extension pattern as a regex: ``_`` then N, X, Z, [..], ``.`` and ``!``."""
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern))
    out, i = "", 1
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end] + "]"
            i = end
        else:
            out += {"N": "[2-9]", "X": "[0-9]", "Z": "[1-9]", ".": ".+", "!": ".*"}.get(
                c.upper(), re.escape(c)
            )
        i += 1
    return re.compile(out)


def expand(text: str, variables: dict[str, str]) -> str:
    """``${NAME}`` and ``${NAME:offset[:length]}`` as Asterisk substitutes them."""

    def one(m: re.Match[str]) -> str:
        value = variables[m.group(1)]
        if m.group(2) is None:
            return value
        offset = int(m.group(2))
        length = int(m.group(3)) if m.group(3) else None
        value = value[offset:]
        return value if length is None else value[:length]

    return re.sub(r"\$\{(\w+)(?::(-?\d+)(?::(\d+))?)?\}", one, text)


def test_dialplan_helpers() -> None:
    p = pattern_regex("_91NXXNXXXXXX")
    assert p.fullmatch("918005550123") and p.fullmatch("912125550123")
    assert not p.fullmatch("911005550123")  # N is 2-9: no area code starts with 0 or 1
    assert not p.fullmatch("18005550123") and not p.fullmatch("9180055501234")
    assert expand("${TG}/${EXTEN:1}", {"TG": "SIP/x", "EXTEN": "918005550123"}) == (
        "SIP/x/18005550123"
    )
    assert expand("${EXTEN:1:3}", {"EXTEN": "918005550123"}) == "180"


# VICIdial's lead for 800-555-0123: the campaign's Dial Prefix 9, phone code 1, the number.
SAMPLE_EXTEN = "918005550123"


def dialled(dialplan: str, globals_: dict[str, str]) -> tuple[str, list[Exten]]:
    """The Dial() target for SAMPLE_EXTEN, checking the dialplan's shape on the way."""
    extens = parse_extens(parse_conf(dialplan))
    assert len({e.pattern for e in extens}) == 1, "one pattern, as VICIdial's Dialplan Entry"
    assert [e.priority for e in extens] == ["1"] + ["n"] * (len(extens) - 1)
    assert pattern_regex(extens[0].pattern).fullmatch(SAMPLE_EXTEN)
    assert [e.app for e in extens] == ["AGI", "Dial", "Hangup"]
    # VICIdial's own call logger (FastAGI_log.pl) on its port, 4577, not trunkguard's 4578.
    assert extens[0].args == ("agi://127.0.0.1:4577/call_log",)
    dial = extens[1].args
    assert len(dial) == 3 and dial[1] == "" and set(dial[2]) == set("tTo"), dial
    return expand(dial[0], {**globals_, "EXTEN": SAMPLE_EXTEN}), extens


def check_routed(number: str) -> None:
    """What `trunkguard route` does with the number the dialplan sends: a plan, not a 4xx."""
    config = example()
    routing, numbers = config.routing()
    assert routing is not None and numbers is not None
    plan = build_plan(number, config.targets(), 0.0, routing=routing, numbers=numbers)
    assert plan.rejected is None, plan.rejected
    assert plan.number == "18005550123"
    assert [t.name for t in plan.targets] == ["carrier-b", "carrier-a"]


def listen() -> tuple[str, int]:
    first = example().listeners()[0]
    assert first.transport == "udp"
    return first.host, first.port


def allowed(address: str) -> bool:
    return any(ipaddress.ip_address(address) in net for net in example().allow)


# -- the checkers, one per block id -------------------------------------------------------
def check_diagram(text: str) -> None:
    host, port = listen()
    assert f"trunkguard {host}:{port}" in text
    dialer = re.search(r"Asterisk (\S+)", text)
    assert dialer and allowed(dialer.group(1))
    names = [c.name for c in example().carriers]
    assert text.strip().endswith(", ".join(names))


def check_router_config(text: str) -> None:
    # The guide shows the example file itself, and trunkguard loads it as it is.
    assert text == EXAMPLE.read_text(encoding="utf-8")
    parse_config(text, "docs/vicidial.md")
    assert example().reject == "403"


def check_account(text: str) -> None:
    sections = parse_conf(text)
    peer = only(sections, "trunkguard")
    host, port = listen()
    assert peer.get("type") == "peer"
    assert (peer.get("host"), int(peer.get("port") or 5060)) == (host, port)
    assert set((peer.get("insecure") or "").split(",")) == {"port", "invite"}
    assert peer.get("use_q850_reason") == "yes"  # HANGUPCAUSE from our Reason header
    assert peer.get("qualify") == "yes"  # trunkguard answers OPTIONS itself
    assert peer.get("fromuser") is None  # it would replace the campaign's caller ID


def check_globals(text: str) -> None:
    (section,) = parse_conf(text)
    assert section.name is None and section.options == [("TG", "=", "SIP/trunkguard")]


def check_chan_sip_dialplan(text: str) -> None:
    (globals_,) = parse_conf(block("vicidial-globals"))
    target, _ = dialled(text, {k: v for k, _, v in globals_.options})
    tech, peer, number = target.split("/")
    assert tech == "SIP"
    only(parse_conf(block("vicidial-account")), peer)  # the account entry's peer
    check_routed(number)


def check_sip_general(text: str) -> None:
    general = only(parse_conf(text), "general")
    assert allowed(general.get("bindaddr") or "")


def check_pjsip(text: str) -> None:
    sections = parse_conf(text)
    host, port = listen()
    endpoint = only(sections, "trunkguard", "endpoint")
    transport = only(sections, endpoint.get("transport"), "transport")
    assert transport.get("protocol") == "udp"
    bind_host, _, _ = (transport.get("bind") or "").rpartition(":")
    assert allowed(bind_host), "the dialer's address must be in the router's allow"
    aor = only(sections, endpoint.get("aors"), "aor")
    m = re.fullmatch(r"sip:([\d.]+):(\d+)", aor.get("contact") or "")
    assert m and (m.group(1), int(m.group(2))) == (host, port)
    identify = only(sections, "trunkguard", "identify")
    assert identify.get("endpoint") == endpoint.name
    assert identify.get("match") == host
    assert endpoint.get("direct_media") == "no"  # media via Asterisk, never carrier to phone


def check_pjsip_dialplan(text: str) -> None:
    target, _ = dialled(text, {})
    m = re.fullmatch(r"PJSIP/(\d+)@([\w-]+)", target)
    assert m, target
    only(parse_conf(block("pjsip")), m.group(2), "endpoint")
    check_routed(m.group(1))


def check_console(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each ``$ trunkguard ...`` is run (the guide's path read as the example's); the lines
    after it are the first lines of its output."""
    runs: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            argv = line[2:].split()
            assert argv[0] == "trunkguard", line
            runs.append((argv[1:], []))
        else:
            runs[-1][1].append(line)
    assert runs
    for argv, expected in runs:
        capsys.readouterr()
        code = cli.main([str(EXAMPLE) if a == SHOWN_PATH else a for a in argv])
        out = capsys.readouterr().out.replace(str(EXAMPLE), SHOWN_PATH).splitlines()
        assert out[: len(expected)] == expected, (argv, out)
        refused = any("refused with" in line for line in expected)
        assert code == (1 if refused else 0), (argv, code)


def check_tech_prefixes(text: str) -> None:
    data = yaml.safe_load(text)
    assert set(data) == {"numbers"}
    numbers = NumbersConfig.model_validate(data["numbers"])
    base = example().numbers
    assert base is not None
    # The example's rules plus the tech prefix; the whole config still loads with it.
    assert numbers.model_dump(exclude={"tech_prefixes"}) == base.model_dump(
        exclude={"tech_prefixes"}
    )
    merged = {**yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")), **data}
    parse_config(yaml.safe_dump(merged), "merged")
    rules = numbers.rules()
    (prefix,) = numbers.tech_prefixes
    assert normalize(prefix + "18005550123", rules) == "18005550123"
    assert normalize("9495550123", rules) == "19495550123"  # no real number starts with it
    # The guide's warning: a "9" tech prefix eats the first digit of area code 949.
    m = re.search(r"such as `(\d{10})` \(area code (\d{3})\), which would then be routed as the\s+"
                  r"9-digit `(\d{9})`", GUIDE_TEXT)
    assert m, "the guide's example of a bad tech prefix"
    bad = NumberRules(country_code="1", national_lengths=(10,), tech_prefixes=("9",))
    assert m.group(1).startswith(m.group(2))
    assert normalize(m.group(1), bad) == m.group(3)


CHECKERS: dict[str, Callable[[str], None]] = {
    "diagram": check_diagram,
    "router-config": check_router_config,
    "vicidial-account": check_account,
    "vicidial-globals": check_globals,
    "vicidial-dialplan": check_chan_sip_dialplan,
    "sip-general": check_sip_general,
    "pjsip": check_pjsip,
    "pjsip-dialplan": check_pjsip_dialplan,
    "tech-prefixes": check_tech_prefixes,
}
CONSOLE = ("route-check", "route-prefix")


def test_every_block_has_a_checker() -> None:
    ids = [b.id for b in BLOCKS]
    assert None not in ids, [b.line for b in BLOCKS if b.id is None]
    assert len(ids) == len(set(ids)), ids
    assert set(ids) == set(CHECKERS) | set(CONSOLE)


@pytest.mark.parametrize("block_id", sorted(CHECKERS))
def test_snippet(block_id: str) -> None:
    CHECKERS[block_id](block(block_id))


@pytest.mark.parametrize("block_id", CONSOLE)
def test_console_snippet(block_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    check_console(block(block_id), capsys)


# -- the outcome table's Asterisk columns -------------------------------------------------
# Asterisk 18.26, read from its source: chan_sip.c and res_pjsip.c hangup_sip2cause (the
# codes trunkguard can send the dialer), chan_sip.c handle_response (which statuses queue
# BUSY or CONGESTION), app_dial.c handle_cause (how a cause becomes a DIALSTATUS).
SIP2CAUSE = {404: 1, 408: 18, 410: 22, 480: 19, 484: 28, 486: 17, 500: 38, 503: 34, 603: 21}
CHAN_SIP_BUSY = {480, 486, 600, 603}
CHAN_SIP_CONGESTION = {500, 502, 503, 504}


def dial_status_of(cause: int) -> str:
    """app_dial's handle_cause: busy, congestion, or "no channel" for the rest."""
    assert cause not in (16, 19), "counted as neither: not modelled here"
    return {17: "BUSY", 34: "CONGESTION"}.get(cause, "CHANUNAVAIL")


def asterisk_sees(status: int, reason: str | None) -> dict[str, str]:
    if status == 200:  # answered; 16 (normal clearing) when it ends with a hangup
        return {"sip_ds": "ANSWER", "sip_hc": "16", "pjsip_ds": "ANSWER", "pjsip_hc": "16"}
    cause = q850_cause(reason) or SIP2CAUSE[status]  # use_q850_reason=yes; PJSIP always
    if status in CHAN_SIP_BUSY:
        sip = "BUSY"
    elif status in CHAN_SIP_CONGESTION:
        sip = "CONGESTION"
    else:
        sip = dial_status_of(cause)
    return {"sip_ds": sip, "sip_hc": str(cause), "pjsip_ds": dial_status_of(cause),
            "pjsip_hc": str(cause)}


def table_rows() -> list[list[str]]:
    start = GUIDE_TEXT.index("<!-- outcomes")
    rows = []
    for line in GUIDE_TEXT[start:].splitlines()[1:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in line.strip().strip("|").split("|")])
    assert rows[0][0] == "Case"
    return rows[2:]


def test_outcome_table_matches_asterisk() -> None:
    rows = table_rows()
    assert len(rows) == 5
    for case, _, _, status, reason, sip_ds, sip_hc, pj_ds, pj_hc in rows:
        seen = asterisk_sees(int(status), None if reason == "none" else reason)
        assert {"sip_ds": sip_ds, "sip_hc": sip_hc, "pjsip_ds": pj_ds, "pjsip_hc": pj_hc} == (
            seen
        ), case


def test_outcome_table_matches_trunkguard_tables() -> None:
    """The carriers' answers in the table, through trunkguard's default failure table."""
    table = FailureTable()
    for case, first, _, status, reason, *_ in table_rows():
        m = re.fullmatch(r"(\d{3}), (Q\.850;cause=\d+)", first)
        if m is None:
            continue
        verdict = table.classify(int(m.group(1)), m.group(2))
        if verdict.failover:
            assert verdict.klass is OutcomeClass.TRUNK_FAULT, case
        else:  # relayed, with its cause, as the status that says it (RFC 3398)
            assert verdict.klass is OutcomeClass.DESTINATION_FINAL, case
            assert reason == m.group(2), case
            cause = q850_cause(reason)
            assert cause is not None and int(status) == Q850_TO_STATUS[cause], case


def test_the_guide_states_the_mapping_it_uses() -> None:
    # "`486` → 17, `500` → 38, ...": the guide's list is the model's.
    pairs = re.findall(r"`(\d{3})` → (\d+)", GUIDE_TEXT)
    assert len(pairs) >= 5
    for status, cause in pairs:
        assert SIP2CAUSE[int(status)] == int(cause), status
