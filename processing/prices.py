"""Reading OHLCV price bars from CSV, all or nothing.

A file is checked row by row before anything is returned: a non-numeric or non-positive price, a
missing column, a date seen twice for the same symbol, a negative volume or a high below the low
rejects the whole file with the line number of the first bad row, so a caller never stores part of it.

Columns (header names are case-insensitive, surrounding spaces ignored):
  date (or timestamp, datetime, time), open, high, low, close, volume, and symbol (or ticker) unless
  the caller names the symbol. Dates are ISO 8601 (``2024-01-05``, ``2024-01-05T14:30:00``, with or
  without an offset) or ``YYYYMMDD``; a date without an offset is UTC. Other columns are ignored.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
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


class PriceFileError(CorruptInput):
    """A price file has a bad row or header; ``line`` is the 1-based line number in the file."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        super().__init__(f"{source} line {line}: {problem}; no rows of this file were stored")
        self.source = source
        self.line = line
        self.problem = problem


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


def parse_price_rows(lines: Iterable[str], *, source: str = "prices", symbol: str | None = None) -> list[PriceBar]:
    """Every bar of a CSV text, or ``PriceFileError`` naming the first bad line.

    ``symbol`` names the symbol of every row; without it the file needs a ``symbol`` column.
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

    bars: list[PriceBar] = []
    seen: dict[tuple[str, datetime], int] = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise PriceFileError(source, reader.line_num, f"unreadable CSV ({exc})") from None
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue

        def cell(column: str, row: list[str] = row) -> str | None:
            i = index[column]
            return row[i] if i < len(row) else None

        try:
            row_symbol = default_symbol or normalize_symbol(cell("symbol") or "")
            raw_date = cell("date")
            if raw_date is None or not raw_date.strip():
                raise ValueError("date is empty")
            try:
                ts = parse_timestamp(raw_date)
            except ValueError:
                raise ValueError(f"date {raw_date.strip()!r} is not a date") from None
            prices = {c: _number(cell(c), c) for c in ("open", "high", "low", "close")}
            volume = _number(cell("volume"), "volume")
        except (ValueError, InvalidArgument) as exc:
            raise PriceFileError(source, line, str(exc)) from None
        for column, value in prices.items():
            if value <= 0:
                raise PriceFileError(source, line, f"{column} {value:g} is not a positive price")
        if volume < 0:
            raise PriceFileError(source, line, f"volume {volume:g} is negative")
        if prices["high"] < prices["low"]:
            raise PriceFileError(source, line, f"high {prices['high']:g} is below low {prices['low']:g}")
        key = (row_symbol, ts)
        if key in seen:
            raise PriceFileError(
                source,
                line,
                f"duplicate date {ts.isoformat()} for {row_symbol} (first on line {seen[key]})",
            )
        seen[key] = line
        bars.append(PriceBar(row_symbol, ts, volume=volume, **prices))
    if not bars:
        raise PriceFileError(source, reader.line_num or 1, "the file has no price rows")
    return bars


def read_price_file(path: Path, *, symbol: str | None = None) -> list[PriceBar]:
    """Every bar of the CSV file at ``path`` (see ``parse_price_rows``)."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return parse_price_rows(handle, source=path.name, symbol=symbol)
    except UnicodeDecodeError:
        raise CorruptInput(f"{path.name} is not UTF-8 text; no rows of this file were stored") from None


def parse_price_text(text: str, *, source: str = "prices", symbol: str | None = None) -> list[PriceBar]:
    """Every bar of a CSV string (see ``parse_price_rows``)."""
    return parse_price_rows(io.StringIO(text, newline=""), source=source, symbol=symbol)


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
