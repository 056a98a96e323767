"""Rate decks: CSV in, longest-prefix lookup out, exact money, every bad row reported."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from trunkguard.routing import DeckColumns, DeckError, Rate, RateDeck, _deck, load_deck

TODAY = date(2024, 6, 1)
FULL = DeckColumns(
    prefix="prefix",
    rate="rate",
    connection_fee="fee",
    increment="increment",
    effective="effective",
    description="description",
)
PLAIN = DeckColumns()  # prefix and rate only


def write(tmp_path: Path, text: str, name: str = "deck.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, columns: DeckColumns = PLAIN, today: date = TODAY) -> RateDeck:
    return load_deck(path, columns, "acme", today=today)


def problems(path: Path, columns: DeckColumns = PLAIN) -> list[str]:
    with pytest.raises(DeckError) as caught:
        load(path, columns)
    return caught.value.problems


def found(deck: RateDeck, number: str) -> Rate:
    rate = deck.lookup(number)
    assert rate is not None, number
    return rate


# -- lookup --------------------------------------------------------------------------------


def test_longest_prefix_wins(tmp_path: Path) -> None:
    deck = load(write(tmp_path, "prefix,rate\n44,0.05\n4420,0.01\n442079,0.02\n1,0.002\n"))
    assert len(deck) == 4
    assert found(deck, "442071234567").prefix == "4420"
    assert found(deck, "442071234567").rate == Decimal("0.01")
    assert found(deck, "442079460000").prefix == "442079"
    assert found(deck, "447700900123").prefix == "44"
    assert found(deck, "12125551234").prefix == "1"
    assert found(deck, "4420").prefix == "4420"  # a number equal to a prefix


@pytest.mark.parametrize("number", ["33123456789", "4", "", "24420", "0442079460000"])
def test_a_number_matching_no_prefix_has_no_rate(tmp_path: Path, number: str) -> None:
    deck = load(write(tmp_path, "prefix,rate\n44,0.05\n4420,0.01\n"))
    assert deck.lookup(number) is None


def test_deck_remembers_carrier_and_source(tmp_path: Path) -> None:
    path = write(tmp_path, "prefix,rate\n44,0.05\n")
    deck = load(path)
    assert deck.carrier == "acme"
    assert deck.source == str(path)


def test_plus_on_a_prefix_and_spaces_around_cells_are_ignored(tmp_path: Path) -> None:
    deck = load(write(tmp_path, "prefix,rate\n +4420 , 0.01 \n"))
    assert found(deck, "442071234567").prefix == "4420"
    assert found(deck, "442071234567").rate == Decimal("0.01")


# -- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["0.0061", "0.12345678", "12.5", "0", "0.00000001", "1", "0.1", "99999.99999999"],
)
def test_rates_are_exact_decimals(tmp_path: Path, text: str) -> None:
    deck = load(write(tmp_path, f"prefix,rate\n44,{text}\n"))
    rate = found(deck, "44").rate
    assert isinstance(rate, Decimal)
    assert rate == Decimal(text)
    assert not isinstance(rate, float)


def test_a_rate_keeps_its_digits(tmp_path: Path) -> None:
    deck = load(write(tmp_path, "prefix,rate\n44,0.0061\n49,0.12345678\n"))
    assert str(found(deck, "44").rate) == "0.0061"
    assert str(found(deck, "49").rate) == "0.12345678"
    # a float would have made 0.0061 * 3 = 0.018299999999999997
    assert found(deck, "44").cost(180) == Decimal("0.0183")


def test_trailing_zeros_do_not_count_as_decimals(tmp_path: Path) -> None:
    deck = load(write(tmp_path, "prefix,rate\n44,0.0061000000\n"))
    assert found(deck, "44").rate == Decimal("0.0061")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.123456789", "has more than 8 decimals"),
        ("0.000000001", "has more than 8 decimals"),
        ("-0.01", "must be zero or more"),
        ("abc", "is not a number"),
        ("", "is not a number"),
        ("NaN", "must be zero or more"),
        ("Infinity", "must be zero or more"),
        ("1e30", "is too large"),
    ],
)
def test_bad_rates_are_errors(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, f"prefix,rate\n44,0.01\n49,{text}\n")
    assert problems(path) == [f"{path}:3: rate {text!r} {reason}"]


def test_every_way_of_writing_a_rate_gives_its_exact_value(tmp_path: Path) -> None:
    rng = random.Random(1234)
    texts = ["5.", ".5", "007.50", "1e-3", "2.5E+1", " 0.25 ", "0.10000000", "12345678.12345678"]
    for _ in range(300):
        whole = str(rng.choice([0, 0, 0, 1, 12, 999, 10**6]))
        decimals = "".join(rng.choices("0123456789", k=rng.randint(0, 8)))
        texts.append(f"{whole}.{decimals}" if decimals else whole)
    rows = "".join(f"{1000 + i},{text}\n" for i, text in enumerate(texts))
    deck = load(write(tmp_path, "prefix,rate\n" + rows))
    for i, text in enumerate(texts):
        assert found(deck, str(1000 + i)).rate == Decimal(text), text


def test_connection_fee(tmp_path: Path) -> None:
    columns = DeckColumns(connection_fee="fee", increment="increment")
    deck = load(write(tmp_path, "prefix,rate,fee,increment\n44,0.06,0.015,60/60\n"), columns)
    rate = found(deck, "44")
    assert rate.connection_fee == Decimal("0.015")
    assert rate.cost(0) == Decimal("0.015")  # an unanswered second still pays the fee
    assert rate.cost(60) == Decimal("0.075")
    assert rate.cost(61) == Decimal("0.135")
    assert "+ 0.015 per call" in rate.explain()


def test_without_a_fee_column_the_fee_is_zero_and_not_mentioned(tmp_path: Path) -> None:
    deck = load(write(tmp_path, "prefix,rate\n44,0.06\n"))
    rate = found(deck, "44")
    assert rate.connection_fee == 0
    assert "per call" not in rate.explain()


def test_bad_fee_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "prefix,rate,fee\n44,0.06,-1\n49,0.06,0.000000001\n")
    assert problems(path, DeckColumns(connection_fee="fee")) == [
        f"{path}:2: connection fee '-1' must be zero or more",
        f"{path}:3: connection fee '0.000000001' has more than 8 decimals",
    ]


# -- increments ----------------------------------------------------------------------------

# 0.06 a minute is 0.001 a second: the cost is the billed seconds / 1000. Worked by hand:
# 1/1 bills every second; 6/6 rounds up to 6 s; 60/60 to whole minutes; 30/6 bills at
# least 30 s, then rounds the rest up to 6 s (59 s: 30 + 5*6 = 60; 95 s: 30 + 11*6 = 96).
BILLED = {
    "1/1": {1: 1, 6: 6, 7: 7, 59: 59, 60: 60, 61: 61, 95: 95, 120: 120},
    "6/6": {1: 6, 6: 6, 7: 12, 59: 60, 60: 60, 61: 66, 95: 96, 120: 120},
    "60/60": {1: 60, 6: 60, 7: 60, 59: 60, 60: 60, 61: 120, 95: 120, 120: 120},
    "30/6": {1: 30, 6: 30, 7: 30, 59: 60, 60: 60, 61: 66, 95: 96, 120: 120},
}
COSTS = {
    "1/1": ["0.001", "0.006", "0.007", "0.059", "0.060", "0.061", "0.095", "0.120"],
    "6/6": ["0.006", "0.006", "0.012", "0.060", "0.060", "0.066", "0.096", "0.120"],
    "60/60": ["0.060", "0.060", "0.060", "0.060", "0.060", "0.120", "0.120", "0.120"],
    "30/6": ["0.030", "0.030", "0.030", "0.060", "0.060", "0.066", "0.096", "0.120"],
}
SECONDS = [1, 6, 7, 59, 60, 61, 95, 120]


@pytest.mark.parametrize(
    ("increment", "seconds", "cost"),
    [(inc, s, c) for inc, costs in COSTS.items() for s, c in zip(SECONDS, costs, strict=True)],
)
def test_cost_with_increments(tmp_path: Path, increment: str, seconds: int, cost: str) -> None:
    columns = DeckColumns(increment="increment")
    deck = load(write(tmp_path, f"prefix,rate,increment\n44,0.06,{increment}\n"), columns)
    rate = found(deck, "44")
    assert (rate.initial, rate.increment) == tuple(int(x) for x in increment.split("/"))
    assert rate.cost(seconds) == Decimal(cost)
    assert rate.cost(seconds) == Decimal("0.001") * BILLED[increment][seconds]


def test_cost_of_an_odd_rate_is_exact() -> None:
    rate = Rate("44", Decimal("0.0061"), Decimal("0"), 6, 6)
    assert rate.cost(7) == Decimal("0.00122")  # 12 s billed: 0.0061 * 12 / 60
    assert rate.cost(90) == Decimal("0.00915")  # 90 s: 0.0061 * 1.5
    assert Rate("1", Decimal("0.0061"), Decimal("0"), 60, 60).cost(60) == Decimal("0.0061")


def test_fractional_seconds_round_up_to_the_next_step() -> None:
    rate = Rate("44", Decimal("0.06"), Decimal("0"), 1, 1)
    assert rate.cost(6.2) == Decimal("0.007")
    assert rate.cost(0.4) == Decimal("0.001")  # the first second is billed whole


def test_zero_initial_bills_from_the_first_step() -> None:
    rate = Rate("44", Decimal("0.06"), Decimal("0"), 0, 6)
    assert rate.cost(1) == Decimal("0.006")
    assert rate.cost(13) == Decimal("0.018")


def test_without_an_increment_column_billing_is_per_minute(tmp_path: Path) -> None:
    rate = found(load(write(tmp_path, "prefix,rate\n44,0.06\n")), "44")
    assert (rate.initial, rate.increment) == (60, 60)
    assert rate.cost(61) == Decimal("0.12")


@pytest.mark.parametrize("text", ["6", "6-6", "6/0", "a/6", "6/", "/6", "-1/6", "3601/6", "6/3601"])
def test_bad_increments_are_errors(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, f"prefix,rate,increment\n44,0.06,{text}\n")
    (problem,) = problems(path, DeckColumns(increment="increment"))
    assert problem.startswith(f"{path}:2: increment {text!r}")


# -- effective dates -----------------------------------------------------------------------


def test_future_rows_are_left_out_and_the_latest_in_force_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prefix,rate,effective\n"
        "44,0.05,2024-01-01\n"
        "44,0.04,2024-05-01\n"  # the latest in force
        "44,0.01,2024-09-01\n"  # future
        "33,0.03,2024-05-01\n"  # the latest in force, listed first
        "33,0.09,2023-01-01\n"
        "4420,0.02,2025-01-01\n",  # only a future row: not there yet
    )
    columns = DeckColumns(effective="effective")
    deck = load(path, columns)
    assert found(deck, "447700900123").rate == Decimal("0.04")
    assert found(deck, "33123456789").rate == Decimal("0.03")
    assert found(deck, "442071234567").prefix == "44"
    assert len(deck) == 2
    later = load(path, columns, today=date(2025, 1, 1))  # a reload once they are in force
    assert found(later, "447700900123").rate == Decimal("0.01")
    assert found(later, "442071234567").prefix == "4420"


def test_a_row_in_force_from_today_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "prefix,rate,effective\n44,0.05,2024-01-01\n44,0.04,2024-06-01\n")
    assert found(load(path, DeckColumns(effective="effective")), "44").rate == Decimal("0.04")


def test_an_undated_row_is_older_than_any_dated_one(tmp_path: Path) -> None:
    columns = DeckColumns(effective="effective")
    first = write(tmp_path, "prefix,rate,effective\n44,0.05,\n44,0.04,2020-01-01\n", "a.csv")
    second = write(tmp_path, "prefix,rate,effective\n44,0.04,2020-01-01\n44,0.05,\n", "b.csv")
    assert found(load(first, columns), "44").rate == Decimal("0.04")
    assert found(load(second, columns), "44").rate == Decimal("0.04")


def test_the_same_prefix_twice_with_the_same_date_names_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prefix,rate,effective\n44,0.05,2024-01-01\n33,0.03,\n49,0.02,\n44,0.06,2024-01-01\n",
    )
    assert problems(path, DeckColumns(effective="effective")) == [
        f"{path}:5: prefix 44 again (line 2)"
    ]


def test_the_same_prefix_twice_without_dates_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "prefix,rate\n44,0.05\n+44,0.06\n")
    assert problems(path) == [f"{path}:3: prefix 44 again (line 2)"]


def test_a_deck_with_nothing_in_force_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "prefix,rate,effective\n44,0.05,2030-01-01\n")
    assert problems(path, DeckColumns(effective="effective")) == [f"{path}: no rates in force"]


# -- header --------------------------------------------------------------------------------


def test_header_names_match_without_case_and_a_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    text = " Dial Code ,RATE/MIN,Setup Fee,Billing\r\n44,0.06,0.01,6/6\r\n"
    path.write_text(text, encoding="utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    columns = DeckColumns(
        prefix="dial code", rate="Rate/Min", connection_fee="SETUP FEE", increment="billing"
    )
    rate = found(load(path, columns), "447700900123")
    assert (rate.rate, rate.connection_fee, rate.increment) == (
        Decimal("0.06"),
        Decimal("0.01"),
        6,
    )


def test_description_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'prefix,rate,description\n44,0.06,"United Kingdom, fixed"\n49,0.1,\n')
    deck = load(path, DeckColumns(description="description"))
    assert found(deck, "44").description == "United Kingdom, fixed"
    assert found(deck, "49").description == ""
    without = load(path)
    assert found(without, "44").description == ""


def test_missing_columns_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "code,price\n44,0.05\n")
    found_problems = problems(path, DeckColumns(prefix="prefix", rate="rate", increment="billing"))
    assert len(found_problems) == 3
    assert all(p.startswith(f"{path}:1: no column ") for p in found_problems)
    assert "'prefix' for the prefix" in found_problems[0]
    assert "'rate' for the rate" in found_problems[1]
    assert "'billing' for the increment" in found_problems[2]


# -- bad files -----------------------------------------------------------------------------


def test_every_bad_row_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prefix,rate,fee,increment,effective,description\n"
        "44,0.05,0,60/60,2024-01-01,UK\n"  # 2: good
        "44a,0.05,0,60/60,2024-01-01,bad prefix\n"  # 3
        "49,-0.01,0,60/60,2024-01-01,negative rate\n"  # 4
        "33,0.05,0,6-6,2024-01-01,bad increment\n"  # 5
        "\n"  # 6: blank, skipped
        "34,0.05,0,6/6,2024-02-30,bad date\n"  # 7
        "39,0.05\n"  # 8: short row
        "1,0.002,0,6/6,,US\n",  # 9: good
    )
    with pytest.raises(DeckError) as caught:
        load(path, FULL)
    assert caught.value.problems == [
        f"{path}:3: prefix '44a' is not 1-20 digits",
        f"{path}:4: rate '-0.01' must be zero or more",
        f"{path}:5: increment '6-6': expected like 6/6 or 60/60",
        f"{path}:7: effective date '2024-02-30': expected YYYY-MM-DD",
        f"{path}:8: 2 columns, expected 6",
    ]
    assert str(caught.value) == "\n".join(caught.value.problems)


@pytest.mark.parametrize("prefix", ["", "4 4", "44.1", "x", "1" * 21, "٤٤"])
def test_bad_prefixes(tmp_path: Path, prefix: str) -> None:
    path = write(tmp_path, f'prefix,rate\n"{prefix}",0.05\n')
    assert problems(path) == [f"{path}:2: prefix {prefix!r} is not 1-20 digits"]


def test_line_numbers_count_lines_of_the_file_not_records(tmp_path: Path) -> None:
    # A quoted cell may hold a line break: later problems must still name the right line.
    path = write(
        tmp_path,
        "prefix,rate,description\n"
        '44,0.05,"United Kingdom\nfixed"\n'  # lines 2-3
        "49,x,Germany\n",  # line 4
    )
    assert problems(path, DeckColumns(description="description")) == [
        f"{path}:4: rate 'x' is not a number"
    ]


def test_many_problems_are_all_kept_and_the_message_is_capped(tmp_path: Path) -> None:
    rows = "".join(f"{100 + i},bad\n" for i in range(60))
    path = write(tmp_path, "prefix,rate\n" + rows)
    with pytest.raises(DeckError) as caught:
        load(path)
    assert len(caught.value.problems) == 60
    assert caught.value.problems[-1] == f"{path}:61: rate 'bad' is not a number"
    message = str(caught.value).splitlines()
    assert len(message) == 51
    assert message[-1] == "... and 10 more problems"


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert problems(path) == [f"{path}: empty file"]


def test_header_only_has_no_rates(tmp_path: Path) -> None:
    path = write(tmp_path, "prefix,rate\n")
    assert problems(path) == [f"{path}: no rates in force"]


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("prefix,rate,description\n33,0.05,Réunion\n".encode("latin-1"))
    (problem,) = problems(path, DeckColumns(description="description"))
    assert problem.startswith(f"{path}:2: not UTF-8 text")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    assert problems(path) == [f"{path}: cannot read: No such file or directory"]


def test_a_directory_is_not_a_deck(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path)
    assert problem.startswith(f"{tmp_path}: cannot read: ")


def test_a_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "prefix,rate\n44,0.05\n")
    assert len(load_deck(str(path), PLAIN, "acme", today=TODAY)) == 1


# -- memo of the rates in use ----------------------------------------------------------------


def test_repeated_lookups_agree_and_a_full_memo_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_deck, "MEMO_SIZE", 4)
    rows = "".join(f"{prefix},0.0{prefix}\n" for prefix in range(10, 30))
    deck = load(write(tmp_path, "prefix,rate\n" + rows))
    for _ in range(3):
        for prefix in range(10, 30):
            rate = found(deck, f"{prefix}5550000")
            assert (rate.prefix, rate.rate) == (str(prefix), Decimal(f"0.0{prefix}"))
    assert len(deck._memo) <= 4
    assert deck.lookup("2955") is deck.lookup("2966")  # the same prefix in use: one Rate


def test_prefix_lengths_outside_the_deck_are_not_looked_up(tmp_path: Path) -> None:
    deck = load(write(tmp_path, "prefix,rate\n4420,0.01\n442079,0.02\n"))
    assert found(deck, "4420794600001234567").prefix == "442079"  # longer than any prefix
    assert deck.lookup("442") is None  # shorter than any prefix
    assert found(deck, "4420").prefix == "4420"


# -- explain -------------------------------------------------------------------------------


def test_explain_names_rate_fee_increments_and_prefix() -> None:
    rate = Rate("4420", Decimal("0.0061"), Decimal("0.01"), 6, 6)
    assert rate.explain() == "0.0061/min + 0.01 per call, 6/6 via prefix 4420"
    assert Rate("44", Decimal("0.05"), Decimal("0"), 60, 60).explain() == (
        "0.05/min, 60/60 via prefix 44"
    )


def test_explain_never_uses_scientific_notation(tmp_path: Path) -> None:
    deck = load(
        write(tmp_path, "prefix,rate,fee\n44,0.00000001,0.0000001\n"),
        DeckColumns(connection_fee="fee"),
    )
    text = found(deck, "44").explain()
    assert "E-" not in text
    assert text.startswith("0.00000001/min + 0.0000001 per call")
