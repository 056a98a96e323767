"""Carriers' rate decks: CSV in, longest-prefix lookup out.

A deck maps destination prefixes (E.164 digits) to a per-minute rate, an
optional connection fee and billing increments ("6/6": 6 s minimum, then
6 s steps). Rates are :class:`~decimal.Decimal`; in memory they are kept as
integers of 1e-8 of the currency unit, in arrays beside one dict from prefix
to row, so a deck of a million prefixes stays around 150 MB. The rates of the
prefixes looked up most recently are kept built (at most ``MEMO_SIZE``).

Every bad row is reported (file, line, reason), all at once; a deck with
errors is not loaded.
"""

from __future__ import annotations

import csv
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

SCALE = 10**8  # rates and fees are stored as integers of 1e-8 units
MAX_REPORTED = 50
MEMO_SIZE = 1 << 14  # built Rate objects kept per deck; the memo starts over when full
_PARSED = 4096  # distinct cell texts (rates, fees, increments, dates) parsed once per load
_SHOWN = 40  # characters of a bad cell quoted in its error


class DeckError(Exception):
    """A deck could not be loaded; ``problems`` lists every bad row as ``file:line: reason``."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:MAX_REPORTED]
        if len(problems) > MAX_REPORTED:
            shown.append(f"... and {len(problems) - MAX_REPORTED} more problems")
        super().__init__("\n".join(shown))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class DeckColumns:
    """Which CSV column holds what (header names, matched without regard to case)."""

    prefix: str = "prefix"
    rate: str = "rate"
    connection_fee: str | None = None
    increment: str | None = None  # "6/6", "1/1", "60/60", "30/6"
    effective: str | None = None  # YYYY-MM-DD; rows not yet effective are left out
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Rate:
    prefix: str
    rate: Decimal  # per minute
    connection_fee: Decimal
    initial: int  # seconds billed at least
    increment: int  # seconds per step after that
    description: str = ""

    def cost(self, seconds: float) -> Decimal:
        """What a call of ``seconds`` costs on this rate, with its increments."""
        if seconds <= 0:
            return self.connection_fee
        billed = max(self.initial, 0)
        if seconds > billed:
            extra = seconds - billed
            steps = -(-int(extra * 1000) // (self.increment * 1000))  # ceil, in ms
            billed += steps * self.increment
        return self.connection_fee + self.rate * Decimal(billed) / 60

    def explain(self) -> str:
        # "f": a rate of 0.00000001 reads as that, not as 1E-8
        fee = f" + {self.connection_fee:f} per call" if self.connection_fee else ""
        return f"{self.rate:f}/min{fee}, {self.initial}/{self.increment} via prefix {self.prefix}"


class RateDeck:
    """One carrier's deck: :meth:`lookup` gives the rate of its longest matching prefix."""

    __slots__ = (
        "_desc",
        "_fee",
        "_index",
        "_initial",
        "_longest",
        "_memo",
        "_shortest",
        "_step",
        "_units",
        "carrier",
        "source",
    )

    def __init__(self, carrier: str, source: str) -> None:
        self.carrier = carrier
        self.source = source
        self._index: dict[str, int] = {}
        self._units = array("q")
        self._fee = array("q")
        self._initial = array("H")
        self._step = array("H")
        self._desc: list[str] | None = None
        self._longest = 0  # prefix lengths in the deck: no need to look for others
        self._shortest = 1
        self._memo: dict[int, Rate] = {}  # row -> its Rate, for the prefixes in use

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, number: str) -> Rate | None:
        index = self._index
        for end in range(min(len(number), self._longest), self._shortest - 1, -1):
            prefix = number[:end]
            row = index.get(prefix)
            if row is not None:
                rate = self._memo.get(row)
                if rate is None:
                    if len(self._memo) >= MEMO_SIZE:
                        self._memo.clear()
                    rate = self._memo[row] = self._rate(prefix, row)
                return rate
        return None

    def _rate(self, prefix: str, row: int) -> Rate:
        return Rate(
            prefix=prefix,
            rate=Decimal(self._units[row]) / SCALE,
            connection_fee=Decimal(self._fee[row]) / SCALE,
            initial=self._initial[row],
            increment=self._step[row],
            description=self._desc[row] if self._desc is not None else "",
        )

    def _add(self, prefix: str, units: int, fee: int, initial: int, step: int, desc: str) -> None:
        self._memo.clear()
        row = self._index.get(prefix)
        if row is None:
            self._longest = max(self._longest, len(prefix))
            self._shortest = min(self._shortest, len(prefix)) if len(self._index) else len(prefix)
            self._index[prefix] = len(self._units)
            self._units.append(units)
            self._fee.append(fee)
            self._initial.append(initial)
            self._step.append(step)
            if self._desc is not None:
                self._desc.append(desc)
        else:
            self._units[row], self._fee[row] = units, fee
            self._initial[row], self._step[row] = initial, step
            if self._desc is not None:
                self._desc[row] = desc


def _shown(text: str) -> str:
    """A cell for an error message: quoted, and cut short if long."""
    return repr(text) if len(text) <= _SHOWN else repr(text[:_SHOWN]) + f"... ({len(text)} chars)"


def _money(text: str, what: str) -> int:
    plain = text.strip()
    whole, _, frac = plain.partition(".")
    if (
        whole.isdigit()
        and len(frac) <= 8
        and (frac.isdigit() or not frac)
        and whole.isascii()
        and frac.isascii()
    ):
        # The common case ("0.0061"), in integers; anything else goes through Decimal.
        fast = int(whole) * SCALE + (int(frac.ljust(8, "0")) if frac else 0)
        if fast >= 2**62:
            raise ValueError(f"{what} {_shown(plain)} is too large")
        return fast
    try:
        value = Decimal(plain)
    except InvalidOperation:
        raise ValueError(f"{what} {_shown(plain)} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} {_shown(plain)} must be zero or more")
    units = value * SCALE
    if units != units.to_integral_value():
        raise ValueError(f"{what} {_shown(plain)} has more than 8 decimals")
    if units >= 2**62:
        raise ValueError(f"{what} {_shown(plain)} is too large")
    return int(units)


def _increment(text: str) -> tuple[int, int]:
    first, slash, second = text.strip().partition("/")
    shown = _shown(text.strip())
    if not slash or not first.isdigit() or not second.isdigit():
        raise ValueError(f"increment {shown}: expected like 6/6 or 60/60")
    initial, step = int(first), int(second)
    if step < 1 or initial > 3600 or step > 3600:
        raise ValueError(f"increment {shown}: seconds must be 0-3600, step at least 1")
    return initial, step


def load_deck(
    path: str | Path,
    columns: DeckColumns,
    carrier: str,
    *,
    today: date | None = None,
) -> RateDeck:
    """Load a CSV deck; raise :class:`DeckError` with every problem found."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            return _load(fh, str(p), columns, carrier, today or date.today())
    except OSError as exc:
        raise DeckError([f"{p}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise DeckError([f"{p}:{_first_bad_line(p)}: not UTF-8 text ({exc.reason})"]) from None


def _first_bad_line(path: Path) -> int:
    """The line of the first byte that is not UTF-8 (a line break is never inside a character)."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def _records(
    reader: Iterator[list[str]], line_num: Callable[[], int], source: str, problems: list[str]
) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the line it starts on.

    A record the CSV reader cannot read (a cell over its size limit, which a
    quote left open makes of the rest of the file) ends the deck there, as one
    more problem.
    """
    last = line_num()
    try:
        for row in reader:
            yield last + 1, row  # a quoted cell may span lines: count lines, not records
            last = line_num()
    except csv.Error as exc:
        problems.append(f"{source}:{last + 1}: {_csv_reason(exc)}")


def _csv_reason(exc: csv.Error) -> str:
    reason = str(exc)
    if "field larger than field limit" in reason:
        return f"a cell is over {csv.field_size_limit()} characters (a quote left open?)"
    return f"not readable as CSV: {reason}"


def _load(
    lines: Iterable[str], source: str, columns: DeckColumns, carrier: str, today: date
) -> RateDeck:
    reader = csv.reader(lines)
    problems: list[str] = []
    records = _records(reader, lambda: reader.line_num, source, problems)
    first = next(records, None)
    if first is None:
        raise DeckError(problems or [f"{source}: empty file"])
    header = first[1]
    names = [h.strip().lower() for h in header]

    def col(name: str | None, what: str) -> int | None:
        if name is None:
            return None
        try:
            return names.index(name.lower())
        except ValueError:
            found = ", ".join(_shown(h) for h in header[:20])
            problems.append(f"{source}:1: no column {name!r} for the {what} ([{found}])")
            return None

    c_prefix = col(columns.prefix, "prefix")
    c_rate = col(columns.rate, "rate")
    c_fee = col(columns.connection_fee, "connection fee")
    c_inc = col(columns.increment, "increment")
    c_eff = col(columns.effective, "effective date")
    c_desc = col(columns.description, "description")
    if problems or c_prefix is None or c_rate is None:
        raise DeckError(problems)
    deck = RateDeck(carrier, source)
    index = deck._index
    units_of, fee_of, initial_of, step_of = deck._units, deck._fee, deck._initial, deck._step
    descs: list[str] | None = [] if c_desc is not None else None
    deck._desc = descs
    desc_at = c_desc if c_desc is not None else 0
    # Per row while loading: its effective date (an ordinal, 0 for none) and its line.
    dates = array("l")
    lines_of = array("q")
    # Cells repeat (fees, increments, dates, many rates): each distinct text is parsed once.
    parsed_money: dict[str, int] = {}
    parsed_fee: dict[str, int] = {}
    parsed_inc: dict[str, tuple[int, int]] = {}
    parsed_date: dict[str, int] = {}
    same_desc: dict[str, str] = {}  # one string per distinct description
    cutoff = today.toordinal()
    width = max(c for c in (c_prefix, c_rate, c_fee, c_inc, c_eff, c_desc) if c is not None)
    for line, row in records:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) <= width:
            problems.append(f"{source}:{line}: {len(row)} columns, expected {width + 1}")
            continue
        prefix = row[c_prefix].strip().lstrip("+")
        try:
            if not prefix.isdigit() or not prefix.isascii() or len(prefix) > 20:
                raise ValueError(f"prefix {_shown(row[c_prefix].strip())} is not 1-20 digits")
            cell = row[c_rate]
            units = parsed_money.get(cell)
            if units is None:
                units = _money(cell, "rate")
                if len(parsed_money) < _PARSED:
                    parsed_money[cell] = units
            fee = 0
            if c_fee is not None:
                cell = row[c_fee]
                known = parsed_fee.get(cell)
                if known is None:
                    known = _money(cell, "connection fee")
                    if len(parsed_fee) < _PARSED:
                        parsed_fee[cell] = known
                fee = known
            initial, step = 60, 60
            if c_inc is not None:
                cell = row[c_inc]
                pair = parsed_inc.get(cell)
                if pair is None:
                    pair = _increment(cell)
                    if len(parsed_inc) < _PARSED:
                        parsed_inc[cell] = pair
                initial, step = pair
            effective = 0
            if c_eff is not None:
                cell = row[c_eff]
                day = parsed_date.get(cell)
                if day is None:
                    day = _date(cell)
                    if len(parsed_date) < _PARSED:
                        parsed_date[cell] = day
                effective = day
        except ValueError as exc:
            problems.append(f"{source}:{line}: {exc}")
            continue
        if effective > cutoff:
            continue  # not in force yet: a reload after that date picks it up
        at = index.get(prefix)
        if at is None:
            index[prefix] = len(units_of)
            units_of.append(units)
            fee_of.append(fee)
            initial_of.append(initial)
            step_of.append(step)
            dates.append(effective)
            lines_of.append(line)
            if descs is not None:
                text = row[desc_at].strip()
                descs.append(same_desc.setdefault(text, text))
            continue
        before = dates[at]
        if before == effective:
            problems.append(f"{source}:{line}: prefix {prefix} again (line {lines_of[at]})")
            continue
        if before and (not effective or effective < before):
            continue  # an older rate for a prefix that has a newer one
        units_of[at], fee_of[at], initial_of[at], step_of[at] = units, fee, initial, step
        dates[at], lines_of[at] = effective, line
        if descs is not None:
            text = row[desc_at].strip()
            descs[at] = same_desc.setdefault(text, text)
    if problems:
        raise DeckError(problems)
    if not len(deck):
        raise DeckError([f"{source}: no rates in force"])
    lengths = {len(p) for p in index}
    deck._longest, deck._shortest = max(lengths), min(lengths)
    return deck


def _date(text: str) -> int:
    """The ordinal of a YYYY-MM-DD cell, or 0 for an empty one (always in force)."""
    plain = text.strip()
    if not plain:
        return 0
    try:
        return date.fromisoformat(plain).toordinal()
    except ValueError:
        raise ValueError(f"effective date {_shown(plain)}: expected YYYY-MM-DD") from None
