"""Dial strings per carrier: a template from config, the number put in at route time.

A carrier's ``dial:`` is what Asterisk's Dial() takes for one call to it, with
``${NUMBER}`` (the number as routing normalised it, or as dialled when there
is no numbering plan) or ``${EXTEN}`` (exactly as the dialplan passed it):
``PJSIP/${NUMBER}@carrier-a``, ``SIP/carrier-a/${EXTEN}``. The template and
the number are both checked, so that what reaches Dial() is one channel, never
a second argument (a comma), a second channel (an ampersand) or a quote that
would end the AGI command's argument early.
"""

from __future__ import annotations

import re

PLACEHOLDERS = ("${NUMBER}", "${EXTEN}")
MAX_DIAL = 200
# TECH/resource: Asterisk channel technologies are letters, digits, '_' and '-'; the
# resource is printable ASCII but for space, '"', ',', '&' and backslash.
_TEMPLATE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}/[!#-%'-+\x2d-\x5b\x5d-\x7e]+$")
_VAR_RE = re.compile(r"\$\{[^}]*\}")
# What a dialled number may hold: digits, a leading +, the DTMF letters and * #.
NUMBER_RE = re.compile(r"^\+?[0-9A-Da-d*#]{1,64}$")


def check_dial(template: str) -> str:
    """The template if Asterisk can dial it once per number; ValueError says why not."""
    if len(template) > MAX_DIAL:
        raise ValueError(f"a dial string of at most {MAX_DIAL} characters")
    if not _TEMPLATE_RE.match(template):
        raise ValueError(
            "dial must be TECH/resource (e.g. PJSIP/${NUMBER}@carrier-a), "
            "without spaces, quotes, backslashes, ',' or '&'"
        )
    found = _VAR_RE.findall(template)
    unknown = [v for v in found if v not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"dial: unknown variable {unknown[0]} (use ${{NUMBER}} or ${{EXTEN}})")
    if not found:
        raise ValueError("dial must hold ${NUMBER} or ${EXTEN}, where the number goes")
    rest = _VAR_RE.sub("", template)
    if "$" in rest or "{" in rest or "}" in rest:
        raise ValueError("dial: '$', '{' and '}' only in ${NUMBER} or ${EXTEN}")
    return template


def dial_string(template: str, number: str, exten: str) -> str:
    """The template with the number in (both already checked)."""
    return template.replace("${NUMBER}", number).replace("${EXTEN}", exten)
