"""Number normalisation: what the dialer sends becomes E.164 digits, or NumberError."""

from __future__ import annotations

import pytest

from trunkguard.routing import NumberError, NumberRules, normalize

US = NumberRules(country_code="1", national_lengths=(10,))
UK = NumberRules(country_code="44", national_prefix="0", international_prefixes=("00",))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+12125551234", "12125551234"),
        ("+442079460000", "442079460000"),
        ("011442079460000", "442079460000"),
        ("00442079460000", "442079460000"),
        ("0049301234567", "49301234567"),
        ("12125551234", "12125551234"),  # already E.164 without "+": left alone
    ],
)
def test_plus_and_international_access_codes_are_stripped(raw: str, expected: str) -> None:
    assert normalize(raw, US) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2125551234", "12125551234"),  # 10 digits: national, gets the country code
        ("12125551234", "12125551234"),  # 11 digits: not a national length
        ("5551234", "5551234"),  # 7 digits: neither; passed on as it is
    ],
)
def test_national_numbers_get_the_country_code_by_length(raw: str, expected: str) -> None:
    assert normalize(raw, US) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("02079460000", "442079460000"),  # trunk prefix 0 replaced by 44
        ("07700900123", "447700900123"),
        ("00442079460000", "442079460000"),  # "00" is the international code, not "0"+"0..."
        ("0012125551234", "12125551234"),
        ("+44 20 7946 0000", "442079460000"),
        ("442079460000", "442079460000"),
    ],
)
def test_national_prefix_uk_style(raw: str, expected: str) -> None:
    assert normalize(raw, UK) == expected


def test_national_prefix_and_lengths_together() -> None:
    rules = NumberRules(country_code="49", national_prefix="0", national_lengths=(10, 11))
    assert normalize("030 1234567", rules) == "49301234567"  # by the trunk prefix
    assert normalize("3012345678", rules) == "493012345678"  # by its length
    assert normalize("301234567", rules) == "301234567"  # 9 digits: neither


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("92125551234", "12125551234"),  # "9" stripped, then national
        ("*672125551234", "12125551234"),
        ("*6712125551234", "12125551234"),
        ("8001#+442079460000", "442079460000"),  # longest first: "8001#" before "8"
        ("82125551234", "12125551234"),  # only "8" matches here
        ("9011442079460000", "442079460000"),  # tech prefix, then the access code
    ],
)
def test_tech_prefixes_are_stripped_longest_first(raw: str, expected: str) -> None:
    rules = NumberRules(
        country_code="1", national_lengths=(10,), tech_prefixes=("8", "9", "*67", "8001#")
    )
    assert normalize(raw, rules) == expected


def test_only_one_tech_prefix_is_stripped_and_never_the_whole_number() -> None:
    rules = NumberRules(tech_prefixes=("9",))
    assert normalize("99442079460000", rules) == "9442079460000"
    with pytest.raises(NumberError):
        normalize("9", rules)  # the prefix alone is not stripped to nothing; too short anyway


@pytest.mark.parametrize(
    "raw",
    [
        "+1 (212) 555-1234",
        "+1-212-555-1234",
        "1.212.555.1234",
        "(212) 555 1234",
        "212/555-1234",
        "+12125551234;npdi;rn=12125550000",
        "2125551234;isub=12",
        "+1 212 555 1234;ext=7",
    ],
)
def test_separators_and_uri_parameters_are_ignored(raw: str) -> None:
    assert normalize(raw, US) == "12125551234"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "+",
        "alice",
        "sip:12125551234",
        "12125551234abc",
        "+1 212 555 12x4",
        "12",  # too short
        "1234567890123456789",  # 19 digits: too long
        "١٢١٢٥٥٥١٢٣٤",  # Arabic-Indic digits: isdigit() but not E.164
        "#31#12125551234",
        "+-",
        ";user=phone",
    ],
)
def test_garbage_raises_number_error(raw: str) -> None:
    with pytest.raises(NumberError) as caught:
        normalize(raw, US)
    assert "not a dialable number" in str(caught.value)
    assert repr(raw) in str(caught.value)


def test_number_error_is_a_value_error() -> None:
    assert issubclass(NumberError, ValueError)


def test_default_rules_only_strip_plus_and_access_codes() -> None:
    rules = NumberRules()
    assert normalize("+33 1 23 45 67 89", rules) == "33123456789"
    assert normalize("0033123456789", rules) == "33123456789"
    assert normalize("0123456789", rules) == "0123456789"  # no country code configured
