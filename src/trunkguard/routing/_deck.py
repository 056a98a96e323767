"""Carriers' rate decks: CSV in, longest-prefix lookup out.

A deck maps destination prefixes (E.164 digits) to a per-minute rate, an
optional connection fee and billing increments ("6/6": 6 s minimum, then
6 s steps). Rates are :class:`~decimal.Decimal`; in memory they are kept as
integers of 1e-8 of the currency unit, in arrays beside one dict from prefix
to row, so a deck of a million prefixes stays around 150 MB.

Every bad row is reported (file, line, reason), all at once; a deck with
errors is not loaded.
"""

from __future__ import annotations

import csv
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

SCALE = 10**8  # rates and fees are stored as integers of 1e-8 units
MAX_REPORTED = 50


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
        fee = f" + {self.connection_fee} per call" if self.connection_fee else ""
        return f"{self.rate}/min{fee}, {self.initial}/{self.increment} via prefix {self.prefix}"


class RateDeck:
    """One carrier's deck: :meth:`lookup` gives the rate of its longest matching prefix."""

    __slots__ = ("_desc", "_fee", "_index", "_initial", "_step", "_units", "carrier", "source")

    def __init__(self, carrier: str, source: str) -> None:
        self.carrier = carrier
        self.source = source
        self._index: dict[str, int] = {}
        self._units = array("q")
        self._fee = array("q")
        self._initial = array("H")
        self._step = array("H")
        self._desc: list[str] | None = None

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, number: str) -> Rate | None:
        index = self._index
        for end in range(len(number), 0, -1):
            row = index.get(number[:end])
            if row is not None:
                return self._rate(number[:end], row)
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
        row = self._index.get(prefix)
        if row is None:
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


def _money(text: str, what: str) -> int:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{what} {text.strip()!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} {text.strip()!r} must be zero or more")
    units = value * SCALE
    if units != units.to_integral_value():
        raise ValueError(f"{what} {text.strip()!r} has more than 8 decimals")
    if units >= 2**62:
        raise ValueError(f"{what} {text.strip()!r} is too large")
    return int(units)


def _increment(text: str) -> tuple[int, int]:
    first, slash, second = text.strip().partition("/")
    if not slash or not first.isdigit() or not second.isdigit():
        raise ValueError(f"increment {text.strip()!r}: expected like 6/6 or 60/60")
    initial, step = int(first), int(second)
    if step < 1 or initial > 3600 or step > 3600:
        raise ValueError(f"increment {text.strip()!r}: seconds must be 0-3600, step at least 1")
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
        raise DeckError([f"{p}: not UTF-8 text ({exc.reason})"]) from None


def _load(
    lines: Iterable[str], source: str, columns: DeckColumns, carrier: str, today: date
) -> RateDeck:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise DeckError([f"{source}: empty file"])
    names = [h.strip().lower() for h in header]
    problems: list[str] = []

    def col(name: str | None, what: str) -> int | None:
        if name is None:
            return None
        try:
            return names.index(name.lower())
        except ValueError:
            problems.append(f"{source}:1: no column {name!r} for the {what} ({header})")
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
    if c_desc is not None:
        deck._desc = []
    width = max(c for c in (c_prefix, c_rate, c_fee, c_inc, c_eff, c_desc) if c is not None)
    seen: dict[str, tuple[date | None, int]] = {}  # prefix -> effective date, line
    for line, row in enumerate(reader, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) <= width:
            problems.append(f"{source}:{line}: {len(row)} columns, expected {width + 1}")
            continue
        prefix = row[c_prefix].strip().lstrip("+")
        try:
            if not prefix.isdigit() or not prefix.isascii() or len(prefix) > 20:
                raise ValueError(f"prefix {row[c_prefix].strip()!r} is not 1-20 digits")
            units = _money(row[c_rate], "rate")
            fee = _money(row[c_fee], "connection fee") if c_fee is not None else 0
            initial, step = _increment(row[c_inc]) if c_inc is not None else (60, 60)
            effective: date | None = None
            if c_eff is not None and row[c_eff].strip():
                try:
                    effective = date.fromisoformat(row[c_eff].strip())
                except ValueError:
                    raise ValueError(
                        f"effective date {row[c_eff].strip()!r}: expected YYYY-MM-DD"
                    ) from None
        except ValueError as exc:
            problems.append(f"{source}:{line}: {exc}")
            continue
        if effective is not None and effective > today:
            continue  # not in force yet: a reload after that date picks it up
        before = seen.get(prefix)
        if before is not None:
            if before[0] == effective:
                problems.append(f"{source}:{line}: prefix {prefix} again (line {before[1]})")
                continue
            if before[0] is not None and (effective is None or effective < before[0]):
                continue  # an older rate for a prefix that has a newer one
        seen[prefix] = (effective, line)
        desc = row[c_desc].strip() if c_desc is not None else ""
        deck._add(prefix, units, fee, initial, step, desc)
    if problems:
        raise DeckError(problems)
    if not len(deck):
        raise DeckError([f"{source}: no rates in force"])
    return deck
