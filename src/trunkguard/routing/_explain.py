"""A plan's reasons, written out only when someone reads them.

Formatting a reason per carrier (rate, fee, increments, the typical call's cost)
takes longer than choosing the carriers. A plan keeps what it needs to write them
(the number, the index node, the order it drew) and writes them on first read:
``/api/plan`` and ``trunkguard route``, the failover list of the dashboard, the
FastAGI advice. Lines added while planning (health skips, overflow, panic) are
kept as they were then; the quality notes too, applied to the carrier's line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import overload


class Explain(Sequence[str]):
    """The lines of a plan's explanation: a sequence of str, built on first read."""

    __slots__ = ("_build", "_lines", "_notes", "_tail")

    def __init__(
        self, build: Callable[[], list[str]] | None = None, lines: Sequence[str] = ()
    ) -> None:
        self._build = build
        self._lines: list[str] | None = None if build is not None else list(lines)
        self._tail: list[str] = list(lines) if build is not None else []
        self._notes: dict[str, str] | None = None

    @property
    def built(self) -> bool:
        """Whether the lines have been written out (for tests and benchmarks)."""
        return self._lines is not None

    def append(self, line: str) -> None:
        if self._lines is not None:
            self._lines.append(line)
        else:
            self._tail.append(line)

    def annotate(self, notes: dict[str, str]) -> None:
        """Add ``notes[carrier]`` to the end of each deferred line of that carrier.

        A deferred line reads ``"name: why"``, ``name`` being the carrier or one of
        its destinations (``carrier/address:port``).
        """
        if self._lines is not None:
            _annotate(self._lines, notes)
        elif notes:
            self._notes = {**(self._notes or {}), **notes}

    def _all(self) -> list[str]:
        lines = self._lines
        if lines is None:
            assert self._build is not None
            lines = self._build()
            if self._notes:
                _annotate(lines, self._notes)
            lines += self._tail
            self._lines, self._build, self._tail, self._notes = lines, None, [], None
        return lines

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __contains__(self, line: object) -> bool:
        return line in self._all()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Explain):
            return self._all() == other._all()
        if isinstance(other, (list, tuple)):
            return self._all() == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._all()))

    def __repr__(self) -> str:
        return repr(self._all())

    # Copies and pickles are of the lines, never of the routing table that writes them
    # (dataclasses.asdict of a call record deep-copies its fields).
    def __copy__(self) -> Explain:
        return Explain(lines=self._all())

    def __deepcopy__(self, memo: dict[int, object]) -> Explain:
        return Explain(lines=self._all())

    def __reduce__(self) -> tuple[type[Explain], tuple[None, list[str]]]:
        return (Explain, (None, self._all()))


def _annotate(lines: list[str], notes: dict[str, str]) -> None:
    for i, line in enumerate(lines):
        name, sep, _ = line.partition(": ")
        carrier = name.split("/", 1)[0]
        if sep and notes.get(carrier):
            lines[i] = line + notes[carrier]
