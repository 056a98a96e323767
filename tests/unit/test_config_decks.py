"""Rate decks a config points at: unreadable ones are problems with file:line, never tracebacks."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from trunkguard.routing import DeckColumns, DeckError, load_deck

PLAIN = DeckColumns()


def _problems(path: Path, columns: DeckColumns = PLAIN) -> list[str]:
    with pytest.raises(DeckError) as caught:
        load_deck(path, columns, "acme")
    return caught.value.problems


def test_a_byte_that_is_not_utf8_is_reported_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "deck.csv"
    path.write_bytes(b"prefix,rate\n44,0.01\n" * 3000 + b"33,0.05\xff\n")
    assert _problems(path) == [f"{path}:6001: not UTF-8 text (invalid start byte)"]


def test_a_cell_over_the_size_limit_is_a_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "deck.csv"
    path.write_text("prefix,rate\n44,0.01\n33,0.02\n1," + "9" * (csv.field_size_limit() + 1))
    limit = csv.field_size_limit()
    assert _problems(path) == [f"{path}:4: a cell is over {limit} characters (a quote left open?)"]


def test_a_quote_left_open_runs_into_the_limit_and_keeps_earlier_problems(tmp_path: Path) -> None:
    path = tmp_path / "deck.csv"
    rows = "".join(f"{1000 + i},0.01\n" for i in range(20_000))
    path.write_text(f'prefix,rate\n44,bad\n33,"0.02\n{rows}')
    found = _problems(path)
    assert found[0] == f"{path}:2: rate 'bad' is not a number"
    assert found[1].startswith(f"{path}:3: a cell is over")


def test_a_nul_byte_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deck.csv"
    path.write_text("prefix,rate\n44,0.0\x001\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:2: ")  # a bad rate, or (older csv) not readable


def test_a_long_bad_cell_is_cut_short_in_its_error(tmp_path: Path) -> None:
    path = tmp_path / "deck.csv"
    path.write_text("prefix,rate\n44," + "x" * 5000 + "\n")
    (problem,) = _problems(path)
    assert problem == f"{path}:2: rate '{'x' * 40}'... (5000 chars) is not a number"


def test_check_reports_a_bad_deck_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"prefix,rate\n44,0.01\n33," + b"1" * 200_000 + b"\n")
    (tmp_path / "b.csv").write_bytes(b"prefix,rate\n44,0.01 \xe9\n")
    config = tmp_path / "r.yaml"
    config.write_text(
        "listen: udp:127.0.0.1:5060\ncarriers:\n"
        '  - {name: a, uri: "sip:127.0.0.1:5071", deck: {path: a.csv}}\n'
        '  - {name: b, uri: "sip:127.0.0.1:5072", deck: {path: b.csv}}\n'
    )
    run = [sys.executable, "-m", "trunkguard", "check", "-c", str(config)]
    done = subprocess.run(run, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{tmp_path / 'a.csv'}:3: a cell is over {csv.field_size_limit()} characters "
        "(a quote left open?)",
        f"{tmp_path / 'b.csv'}:2: not UTF-8 text (invalid continuation byte)",
    ]
