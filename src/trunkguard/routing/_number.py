"""From what the dialer sends to E.164 digits, by rules in config.

Dialers prepend tech prefixes (``9``, ``*67``, a campaign code), write
numbers nationally (``020 7946 0000``) or with an international access code
(``011``, ``00``). Rate decks are keyed by E.164 digits without ``+``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NumberRules:
    country_code: str = ""  # added to national numbers, e.g. "1" or "44"
    national_prefix: str = ""  # trunk prefix stripped before the country code, e.g. "0"
    international_prefixes: tuple[str, ...] = ("011", "00")
    national_lengths: tuple[int, ...] = ()  # digits of a national number without its prefix
    tech_prefixes: tuple[str, ...] = field(default_factory=tuple)  # stripped, longest first


class NumberError(ValueError):
    pass


_KEEP = str.maketrans("", "", " -.()/")


_LONGEST_FIRST: dict[tuple[str, ...], tuple[str, ...]] = {}  # tech prefixes, longest first


def normalize(raw: str, rules: NumberRules) -> str:
    """E.164 digits for ``raw`` (the Request-URI user part), or :class:`NumberError`."""
    # Dialers mostly send plain digits: nothing to cut or strip then.
    number = raw if raw.isdigit() else raw.split(";", 1)[0].translate(_KEEP)
    techs = rules.tech_prefixes
    if techs:
        ordered = _LONGEST_FIRST.get(techs)
        if ordered is None:
            if len(_LONGEST_FIRST) > 64:
                _LONGEST_FIRST.clear()
            ordered = _LONGEST_FIRST[techs] = tuple(sorted(techs, key=len, reverse=True))
        techs = ordered
    for tech in techs:
        if tech and number.startswith(tech) and len(number) > len(tech):
            number = number[len(tech) :]
            break
    if number.startswith("+"):
        number = number[1:]
    else:
        for access in rules.international_prefixes:
            if access and number.startswith(access):
                number = number[len(access) :]
                break
        else:
            national = number
            if rules.national_prefix and national.startswith(rules.national_prefix):
                national = national[len(rules.national_prefix) :]
                if rules.country_code:
                    number = rules.country_code + national
            elif rules.country_code and len(national) in rules.national_lengths:
                number = rules.country_code + national
    if not number.isascii() or not number.isdigit() or not 3 <= len(number) <= 18:
        raise NumberError(f"{raw!r} is not a dialable number (got {number!r})")
    return number
