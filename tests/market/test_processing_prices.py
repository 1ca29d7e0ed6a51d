"""CSV price files: good files parse, each kind of bad row rejects the whole file with its line."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from processing.errors import CorruptInput, PermanentError
from processing.prices import PriceFileError, bars_to_frame, parse_price_text, read_price_file

GOOD = """date,symbol,open,high,low,close,volume
2024-01-02,ACME,10.0,11.0,9.5,10.5,1000
2024-01-03,ACME,10.5,11.5,10.0,11.0,1200
2024-01-02,BOLT,20.0,21.0,19.0,20.5,500
"""


def test_a_good_file_gives_every_bar_with_utc_dates() -> None:
    # Given a well-formed file with two symbols
    # When it is parsed
    bars = parse_price_text(GOOD, source="good.csv")

    # Then every row comes back as a bar with its numbers and a UTC timestamp
    assert [(b.symbol, b.ts.date().isoformat(), b.close) for b in bars] == [
        ("ACME", "2024-01-02", 10.5),
        ("ACME", "2024-01-03", 11.0),
        ("BOLT", "2024-01-02", 20.5),
    ]
    assert bars[0].ts == datetime(2024, 1, 2, tzinfo=UTC)
    assert bars[0].volume == 1000.0


def test_headers_are_case_insensitive_and_compact_dates_are_read() -> None:
    # Given the layout of the shipped S&P 500 history: capitalised headers, YYYYMMDD dates
    text = "Date,Symbol,Open,High,Low,Close,Volume\n20090821,a,25.6,25.61,25.22,25.55,34758\n"

    # When it is parsed
    bars = parse_price_text(text)

    # Then the date and the upper-cased symbol are understood
    assert bars[0].ts == datetime(2009, 8, 21, tzinfo=UTC)
    assert bars[0].symbol == "A"


def test_a_file_without_a_symbol_column_takes_the_symbol_given() -> None:
    # Given a single-asset file without a symbol column
    text = "timestamp,open,high,low,close,volume\n2024-01-02T14:30:00+01:00,1,2,0.5,1.5,10\n"

    # When it is parsed for a named symbol
    bars = parse_price_text(text, symbol="acme")

    # Then its rows belong to that symbol and the offset is turned into UTC
    assert bars[0].symbol == "ACME"
    assert bars[0].ts == datetime(2024, 1, 2, 13, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        (
            "2024-01-02,ACME,10,11,9,10.5,100\n2024-01-03,ACME,10,eleven,9,10.5,100\n",
            3,
            "high 'eleven' is not a number",
        ),
        ("2024-01-02,ACME,10,11,9,,100\n", 2, "close is empty"),
        ("2024-01-02,ACME,10,11,9,10.5,100\n2024-01-02,ACME,10,11,9,10.5,100\n", 3, "duplicate date"),
        ("2024-01-02,ACME,10,11,9,10.5,100\n2024-01-03,ACME,10,11,9,10.5,-5\n", 3, "volume -5 is negative"),
        ("2024-01-02,ACME,10,9,11,10.5,100\n", 2, "high 9 is below low 11"),
        ("2024-01-02,ACME,10,11,9,-10.5,100\n", 2, "close -10.5 is not a positive price"),
        ("not-a-date,ACME,10,11,9,10.5,100\n", 2, "date 'not-a-date' is not a date"),
        ("2024-01-02,ACME,10,11,9,nan,100\n", 2, "close 'nan' is not a finite number"),
    ],
    ids=[
        "non-numeric",
        "empty",
        "duplicate-date",
        "negative-volume",
        "high-below-low",
        "negative",
        "bad-date",
        "nan",
    ],
)
def test_a_bad_row_rejects_the_file_with_its_line_number(body: str, line: int, words: str) -> None:
    # Given a file whose row on a known line is bad
    text = "date,symbol,open,high,low,close,volume\n" + body

    # When it is parsed
    with pytest.raises(PriceFileError) as caught:
        parse_price_text(text, source="bad.csv")

    # Then the error names the file, the line and the problem, and is a permanent (not retried) error
    assert caught.value.line == line
    assert re.match(rf"bad\.csv line {line}( \(\w+\))?: ", str(caught.value)), str(caught.value)
    assert words in str(caught.value)
    assert isinstance(caught.value, PermanentError)


def test_a_duplicate_date_names_the_line_it_first_appeared_on() -> None:
    # Given the same symbol and date on lines 2 and 4
    text = (
        "date,symbol,open,high,low,close,volume\n"
        "2024-01-02,ACME,10,11,9,10.5,100\n"
        "2024-01-02,BOLT,10,11,9,10.5,100\n"
        "2024-01-02,ACME,10,11,9,10.5,100\n"
    )

    # When it is parsed
    with pytest.raises(PriceFileError) as caught:
        parse_price_text(text)

    # Then the error points at line 4 and names line 2
    assert caught.value.line == 4
    assert "first on line 2" in str(caught.value)


def test_a_missing_column_is_reported_on_the_header_line() -> None:
    # Given a file without a volume column
    text = "date,symbol,open,high,low,close\n2024-01-02,ACME,10,11,9,10.5\n"

    # When it is parsed
    with pytest.raises(PriceFileError) as caught:
        parse_price_text(text, source="novolume.csv")

    # Then line 1 is blamed for the missing column
    assert caught.value.line == 1
    assert "missing column 'volume'" in str(caught.value)


def test_a_file_without_rows_or_with_binary_content_is_rejected(tmp_path: Path) -> None:
    # Given an empty file, a header-only file and a binary file
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("date,symbol,open,high,low,close,volume\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")

    # When each is read
    # Then each is refused as corrupt input
    for path in (empty, header_only, binary):
        with pytest.raises(CorruptInput):
            read_price_file(path)


def test_bars_become_a_frame_ordered_oldest_first() -> None:
    # Given bars listed newest first
    bars = list(
        reversed(parse_price_text(GOOD.replace("BOLT", "ACME").replace("2024-01-02,ACME,20", "2024-01-01,ACME,20")))
    )

    # When they are turned into a frame
    frame = bars_to_frame(bars)

    # Then the index is increasing and the columns are OHLCV
    assert frame.index.is_monotonic_increasing
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert frame["close"].tolist() == [20.5, 10.5, 11.0]
