"""Reading OHLCV price bars from CSV, all or nothing.

A file is checked row by row before anything is returned: a non-numeric or non-positive price, a
missing column, a date seen twice for the same symbol, a negative volume, a high below the low, a short
row or (when the caller says how many bars the indicators need) a symbol with too few bars rejects the
whole file, so a caller never stores part of it. The error lists every defect with its line and symbol,
up to ``MAX_DEFECTS_SHOWN``, and counts the rest.

Columns (header names are case-insensitive, surrounding spaces ignored):
  date (or timestamp, datetime, time), open, high, low, close, volume, and symbol (or ticker) unless
  the caller names the symbol. Dates are ISO 8601 (``2024-01-05``, ``2024-01-05T14:30:00``, with or
  without an offset) or ``YYYYMMDD``; a date without an offset is UTC. Other columns are ignored.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from processing.errors import CorruptInput, InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS: tuple[str, ...] = ("date", "open", "high", "low", "close", "volume")
_ALIASES = {
    "timestamp": "date",
    "datetime": "date",
    "time": "date",
    "ticker": "symbol",
}
_MAX_SYMBOL_LENGTH = 32
#: Defects a price file error lists one by one; the rest are counted.
MAX_DEFECTS_SHOWN = 50


@dataclass(frozen=True)
class Defect:
    """What is wrong on one line of a price file (``symbol`` when the line names a readable one)."""

    line: int
    problem: str
    symbol: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}{f' ({self.symbol})' if self.symbol else ''}: {self.problem}"


class PriceFileError(CorruptInput):
    """A price file has bad rows or a bad header. ``defects`` lists them all in line order; ``line`` and
    ``problem`` are the first one's. ``source`` is the file's name as the user gave it."""

    def __init__(self, source: str, line: int | list[Defect], problem: str = "") -> None:
        defects = line if isinstance(line, list) else [Defect(line, problem)]
        defects = sorted(defects, key=lambda defect: defect.line)
        if len(defects) == 1:
            message = f"{source} {defects[0]}; no rows of this file were stored"
        else:
            shown = "; ".join(str(defect) for defect in defects[:MAX_DEFECTS_SHOWN])
            rest = len(defects) - MAX_DEFECTS_SHOWN
            more = f"; and {rest} more" if rest > 0 else ""
            message = f"{source} has {len(defects)} defects, no rows of this file were stored: {shown}{more}"
        super().__init__(message)
        self.source = source
        self.defects = defects
        self.line = defects[0].line
        self.problem = defects[0].problem


@dataclass(frozen=True)
class PriceBar:
    """One OHLCV bar of one symbol."""

    symbol: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


def parse_timestamp(text: str) -> datetime:
    """A UTC-aware datetime from ISO 8601 or ``YYYYMMDD``; raises ``ValueError`` otherwise."""
    value = text.strip()
    if len(value) == 8 and value.isdigit():
        parsed = datetime.strptime(value, "%Y%m%d")
    else:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def normalize_symbol(text: str) -> str:
    """Symbols are stored upper-case without surrounding spaces; raises ``InvalidArgument`` if unusable."""
    symbol = text.strip().upper()
    if not symbol or len(symbol) > _MAX_SYMBOL_LENGTH or any(ch.isspace() for ch in symbol):
        raise InvalidArgument(f"symbol {text!r} is not a usable symbol (1-{_MAX_SYMBOL_LENGTH} characters)")
    return symbol


def _number(raw: str | None, column: str) -> float:
    if raw is None or raw.strip() == "":
        raise ValueError(f"{column} is empty")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{column} {raw.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{column} {raw.strip()!r} is not a finite number")
    return value


def parse_price_rows(
    lines: Iterable[str],
    *,
    source: str = "prices",
    symbol: str | None = None,
    min_bars: int | None = None,
    stored_bars: Mapping[str, int] | None = None,
) -> list[PriceBar]:
    """Every bar of a CSV text, or ``PriceFileError`` listing every bad line.

    ``symbol`` names the symbol of every row; without it the file needs a ``symbol`` column. With
    ``min_bars``, a symbol whose bars (those of the file plus its ``stored_bars`` already kept) are fewer
    is a defect too: its indicators could not be computed.
    """
    default_symbol = normalize_symbol(symbol) if symbol is not None else None
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise PriceFileError(source, 1, "the file is empty") from None
    except csv.Error as exc:
        raise PriceFileError(source, reader.line_num or 1, f"unreadable CSV ({exc})") from None
    names = [h.strip().lstrip("\ufeff").lower() for h in header]
    names = [_ALIASES.get(n, n) for n in names]
    index = {name: i for i, name in reversed(list(enumerate(names)))}
    needed = list(REQUIRED_COLUMNS) + ([] if default_symbol else ["symbol"])
    missing = [c for c in needed if c not in index]
    if missing:
        raise PriceFileError(source, 1, f"missing column {', '.join(repr(c) for c in missing)}")
    width = max(index[c] for c in needed) + 1

    bars: list[PriceBar] = []
    defects: list[Defect] = []
    seen: dict[tuple[str, datetime], int] = {}
    first_line: dict[str, int] = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            defects.append(Defect(reader.line_num, f"unreadable CSV ({exc})"))
            break  # the reader cannot go on past a broken quote
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        bar, problem, row_symbol = _parse_row(row, index, width, default_symbol)
        if row_symbol is not None:
            first_line.setdefault(row_symbol, line)
        if problem is not None:
            defects.append(Defect(line, problem, row_symbol))
            continue
        assert bar is not None
        key = (bar.symbol, bar.ts)
        if key in seen:
            problem = f"duplicate date {bar.ts.isoformat()} for {bar.symbol} (first on line {seen[key]})"
            defects.append(Defect(line, problem, bar.symbol))
            continue
        seen[key] = line
        bars.append(bar)
    if min_bars is not None:
        counts: dict[str, int] = {}
        for bar in bars:
            counts[bar.symbol] = counts.get(bar.symbol, 0) + 1
        for name, line in first_line.items():
            have = counts.get(name, 0) + (stored_bars or {}).get(name, 0)
            if counts.get(name, 0) > 0 and have < min_bars:
                kept = (stored_bars or {}).get(name, 0)
                also = f" ({kept} of them stored before)" if kept else ""
                problem = f"{name} has {have} bars{also}; the indicators need at least {min_bars}"
                defects.append(Defect(line, problem, name))
    if defects:
        raise PriceFileError(source, defects)
    if not bars:
        raise PriceFileError(source, reader.line_num or 1, "the file has no price rows")
    return bars


def _parse_row(
    row: list[str], index: dict[str, int], width: int, default_symbol: str | None
) -> tuple[PriceBar | None, str | None, str | None]:
    """The bar of one row, or the problem with it; and the row's symbol when it has a readable one."""
    row_symbol: str | None = default_symbol
    if default_symbol is None:
        try:
            row_symbol = normalize_symbol(row[index["symbol"]] if index["symbol"] < len(row) else "")
        except InvalidArgument as exc:
            return None, str(exc), None
    if len(row) < width:
        return None, f"short row: {len(row)} fields where the header needs {width}", row_symbol

    def cell(column: str) -> str:
        return row[index[column]]

    try:
        raw_date = cell("date")
        if not raw_date.strip():
            raise ValueError("date is empty")
        try:
            ts = parse_timestamp(raw_date)
        except ValueError:
            raise ValueError(f"date {raw_date.strip()!r} is not a date") from None
        prices = {c: _number(cell(c), c) for c in ("open", "high", "low", "close")}
        volume = _number(cell("volume"), "volume")
    except ValueError as exc:
        return None, str(exc), row_symbol
    for column, value in prices.items():
        if value <= 0:
            return None, f"{column} {value:g} is not a positive price", row_symbol
    if volume < 0:
        return None, f"volume {volume:g} is negative", row_symbol
    if prices["high"] < prices["low"]:
        return None, f"high {prices['high']:g} is below low {prices['low']:g}", row_symbol
    assert row_symbol is not None
    return PriceBar(row_symbol, ts, volume=volume, **prices), None, row_symbol


def read_price_file(
    path: Path,
    *,
    symbol: str | None = None,
    source: str | None = None,
    min_bars: int | None = None,
    stored_bars: Mapping[str, int] | None = None,
) -> list[PriceBar]:
    """Every bar of the CSV file at ``path`` (see ``parse_price_rows``). Errors name the file as
    ``source`` (default: the file's name), never by its path on this machine."""
    name = source or path.name
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return parse_price_rows(handle, source=name, symbol=symbol, min_bars=min_bars, stored_bars=stored_bars)
    except UnicodeDecodeError:
        raise CorruptInput(f"{name} is not UTF-8 text; no rows of this file were stored") from None
    except OSError as exc:
        # The OS message carries the absolute path; say what went wrong without it.
        raise CorruptInput(f"{name} cannot be read ({exc.strerror or type(exc).__name__})") from None


def symbols_in(path: Path, *, symbol: str | None = None) -> set[str]:
    """The usable symbols a price file names (a quick pass, for looking up the bars already stored)."""
    if symbol is not None:
        return {normalize_symbol(symbol)}
    found: set[str] = set()
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = [_ALIASES.get(h.strip().lstrip("\ufeff").lower(), h.strip().lower()) for h in next(reader, [])]
            if "symbol" not in header:
                return found
            column = header.index("symbol")
            for row in reader:
                if column < len(row):
                    with contextlib.suppress(InvalidArgument):
                        found.add(normalize_symbol(row[column]))
    except (OSError, UnicodeDecodeError, csv.Error):
        return found  # the full read reports what is wrong with the file
    return found


def parse_price_text(
    text: str, *, source: str = "prices", symbol: str | None = None, min_bars: int | None = None
) -> list[PriceBar]:
    """Every bar of a CSV string (see ``parse_price_rows``)."""
    return parse_price_rows(io.StringIO(text, newline=""), source=source, symbol=symbol, min_bars=min_bars)


def bars_to_frame(bars: Iterable[PriceBar]) -> pd.DataFrame:
    """Bars of one symbol as a DataFrame indexed by timestamp, columns open/high/low/close/volume."""
    import pandas as pd

    rows = sorted(bars, key=lambda b: b.ts)
    frame = pd.DataFrame(
        {
            "open": [b.open for b in rows],
            "high": [b.high for b in rows],
            "low": [b.low for b in rows],
            "close": [b.close for b in rows],
            "volume": [b.volume for b in rows],
        },
        index=pd.DatetimeIndex([b.ts for b in rows], name="ts"),
    )
    return frame
