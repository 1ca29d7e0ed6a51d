"""Buy and sell signals from indicator values: four documented rules, each with a strength in [0, 1].

A signal fires on the bar where a crossing happens, comparing that bar with the one before; a bar
where a value the rule needs is undefined (warm-up) never fires. Rules (thresholds in ``SignalRules``):

``rsi``        buy when RSI crosses back up through 30 (leaving oversold), sell when it crosses back
               down through 70 (leaving overbought).
               strength = 0.5 + 0.5 * min(1, depth / 20), depth = how far the RSI went beyond the
               level during the excursion (a dip to 10 gives 1.0, a dip to 29 gives 0.525).
``macd``       buy when the MACD line crosses above its signal line, sell when it crosses below.
               strength = 0.5 + 0.5 * clip(d / (0.02 * close), 0, 1), d = how far the MACD line is
               below zero for a buy (above zero for a sell): a cross far from the zero line, against
               the trend so far, counts more; a cross on the wrong side of zero gives 0.5.
``bollinger``  buy when the close crosses below the lower band, sell when it crosses above the upper.
               strength = 0.5 + 0.5 * min(1, 4 * p), p = distance outside the band divided by the
               band width (a close a quarter of the width outside gives 1.0).
``sma_cross``  buy on a golden cross (medium SMA, 50, crosses above long SMA, 200), sell on a death
               cross (crosses below).
               strength = 0.5 + 0.5 * clip(g / (0.05 * sma_long), 0, 1), g = how far the close is
               beyond the long SMA in the signal's direction (5 % beyond gives 1.0).

Expiry is not decided here: the caller stamps each signal with its creation time and an expiry
(``settings.signal_expiry_hours``, 24 h by default).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from processing.errors import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

BUY = "buy"
SELL = "sell"
RULES: tuple[str, ...] = ("rsi", "macd", "bollinger", "sma_cross")


@dataclass(frozen=True)
class SignalRules:
    """Thresholds of the rules and which rules run."""

    rsi_oversold: float = 30.0
    rsi_overbought: float = 70.0
    # RSI points beyond the level that give full strength.
    rsi_full_depth: float = 20.0
    # MACD distance from zero, as a fraction of the close, that gives full strength.
    macd_full_distance: float = 0.02
    # Distance outside the band, as a fraction of the band width, that gives full strength.
    band_full_penetration: float = 0.25
    # Close beyond the long SMA, as a fraction of it, that gives full strength.
    sma_full_gap: float = 0.05
    enabled: tuple[str, ...] = RULES

    def __post_init__(self) -> None:
        if not 0 < self.rsi_oversold < self.rsi_overbought < 100:
            raise InvalidArgument(
                f"RSI levels must satisfy 0 < oversold < overbought < 100, got "
                f"{self.rsi_oversold} and {self.rsi_overbought}"
            )
        for name in ("rsi_full_depth", "macd_full_distance", "band_full_penetration", "sma_full_gap"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"{name} must be positive")
        unknown = sorted(set(self.enabled) - set(RULES))
        if unknown:
            raise InvalidArgument(f"unknown signal rule {', '.join(unknown)}; known: {', '.join(RULES)}")


@dataclass(frozen=True)
class Signal:
    """A rule that fired on one bar."""

    ts: datetime
    rule: str
    direction: str  # "buy" or "sell"
    strength: float  # 0..1
    reason: str


def _clip01(value: float) -> float:
    return 0.0 if value < 0 else 1.0 if value > 1 else value


def _scaled(fraction: float) -> float:
    """0.5 for a bare crossing, rising linearly to 1.0 at full strength."""
    return round(0.5 + 0.5 * _clip01(fraction), 6)


def _defined(*values: float) -> bool:
    return all(v is not None and not math.isnan(v) for v in values)


def _rsi(ts: list[datetime], rsi: list[float], rules: SignalRules) -> Iterator[Signal]:
    low, high = rules.rsi_oversold, rules.rsi_overbought
    # The most extreme RSI of the excursion beyond a level that is still going on.
    lowest: float | None = None
    highest: float | None = None
    for i, value in enumerate(rsi):
        if not _defined(value):
            lowest = highest = None
            continue
        if value < low:
            lowest = value if lowest is None else min(lowest, value)
        if value > high:
            highest = value if highest is None else max(highest, value)
        if i == 0 or not _defined(rsi[i - 1]):
            continue
        before = rsi[i - 1]
        if before < low <= value and lowest is not None:
            depth = low - lowest
            yield Signal(
                ts[i],
                "rsi",
                BUY,
                _scaled(depth / rules.rsi_full_depth),
                f"RSI rose back above {low:g} to {value:.1f} after a low of {lowest:.1f}",
            )
            lowest = None
        elif before > high >= value and highest is not None:
            depth = highest - high
            yield Signal(
                ts[i],
                "rsi",
                SELL,
                _scaled(depth / rules.rsi_full_depth),
                f"RSI fell back below {high:g} to {value:.1f} after a high of {highest:.1f}",
            )
            highest = None
        if value >= low:
            lowest = None
        if value <= high:
            highest = None


def _macd(
    ts: list[datetime], macd: list[float], signal: list[float], close: list[float], rules: SignalRules
) -> Iterator[Signal]:
    for i in range(1, len(ts)):
        if not _defined(macd[i - 1], signal[i - 1], macd[i], signal[i], close[i]):
            continue
        before, now = macd[i - 1] - signal[i - 1], macd[i] - signal[i]
        scale = rules.macd_full_distance * close[i]
        if before <= 0 < now:
            yield Signal(
                ts[i],
                "macd",
                BUY,
                _scaled(-macd[i] / scale),
                f"MACD {macd[i]:.4g} crossed above its signal line {signal[i]:.4g}",
            )
        elif before >= 0 > now:
            yield Signal(
                ts[i],
                "macd",
                SELL,
                _scaled(macd[i] / scale),
                f"MACD {macd[i]:.4g} crossed below its signal line {signal[i]:.4g}",
            )


def _bollinger(
    ts: list[datetime], close: list[float], upper: list[float], lower: list[float], rules: SignalRules
) -> Iterator[Signal]:
    for i in range(1, len(ts)):
        if not _defined(close[i - 1], upper[i - 1], lower[i - 1], close[i], upper[i], lower[i]):
            continue
        width = upper[i] - lower[i]
        if close[i] < lower[i] and close[i - 1] >= lower[i - 1]:
            penetration = (lower[i] - close[i]) / width if width > 0 else 1.0
            yield Signal(
                ts[i],
                "bollinger",
                BUY,
                _scaled(penetration / rules.band_full_penetration),
                f"close {close[i]:.4g} fell below the lower band {lower[i]:.4g}",
            )
        elif close[i] > upper[i] and close[i - 1] <= upper[i - 1]:
            penetration = (close[i] - upper[i]) / width if width > 0 else 1.0
            yield Signal(
                ts[i],
                "bollinger",
                SELL,
                _scaled(penetration / rules.band_full_penetration),
                f"close {close[i]:.4g} rose above the upper band {upper[i]:.4g}",
            )


def _sma_cross(
    ts: list[datetime], medium: list[float], long: list[float], close: list[float], rules: SignalRules
) -> Iterator[Signal]:
    for i in range(1, len(ts)):
        if not _defined(medium[i - 1], long[i - 1], medium[i], long[i], close[i]):
            continue
        before, now = medium[i - 1] - long[i - 1], medium[i] - long[i]
        scale = rules.sma_full_gap * long[i]
        if before <= 0 < now:
            yield Signal(
                ts[i],
                "sma_cross",
                BUY,
                _scaled((close[i] - long[i]) / scale),
                f"golden cross: medium SMA {medium[i]:.4g} rose above long SMA {long[i]:.4g}",
            )
        elif before >= 0 > now:
            yield Signal(
                ts[i],
                "sma_cross",
                SELL,
                _scaled((long[i] - close[i]) / scale),
                f"death cross: medium SMA {medium[i]:.4g} fell below long SMA {long[i]:.4g}",
            )


_COLUMNS_OF: dict[str, tuple[str, ...]] = {
    "rsi": ("rsi",),
    "macd": ("macd", "macd_signal"),
    "bollinger": ("bb_upper", "bb_lower"),
    "sma_cross": ("sma_medium", "sma_long"),
}


def indicator_columns(rules: SignalRules | None = None) -> tuple[str, ...]:
    """The indicator columns the enabled rules read (besides close), in rule order."""
    rules = rules or SignalRules()
    return tuple(c for rule in RULES if rule in rules.enabled for c in _COLUMNS_OF[rule])


def evaluate_signals(frame: pd.DataFrame, rules: SignalRules | None = None) -> list[Signal]:
    """Every signal in ``frame`` (oldest first), ordered by bar then rule.

    ``frame`` has a datetime index and the columns close plus the indicator columns the enabled rules
    read (``indicator_columns``: rsi; macd, macd_signal; bb_upper, bb_lower; sma_medium, sma_long).
    Empty cells are NaN.
    """
    rules = rules or SignalRules()
    needed = {"close", *indicator_columns(rules)}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise InvalidArgument(f"signal evaluation lacks column {', '.join(missing)}")
    if not frame.index.is_monotonic_increasing:
        raise InvalidArgument("indicator rows must be ordered oldest first")

    ts = [t.to_pydatetime() for t in frame.index]

    def col(name: str) -> list[float]:
        return [float(v) for v in frame[name].astype("float64").tolist()]

    close = col("close")
    found: list[Signal] = []
    if "rsi" in rules.enabled:
        found.extend(_rsi(ts, col("rsi"), rules))
    if "macd" in rules.enabled:
        found.extend(_macd(ts, col("macd"), col("macd_signal"), close, rules))
    if "bollinger" in rules.enabled:
        found.extend(_bollinger(ts, close, col("bb_upper"), col("bb_lower"), rules))
    if "sma_cross" in rules.enabled:
        found.extend(_sma_cross(ts, col("sma_medium"), col("sma_long"), close, rules))
    order = {rule: i for i, rule in enumerate(RULES)}
    found.sort(key=lambda s: (s.ts, order[s.rule], s.direction))
    return found
