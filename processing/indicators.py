"""Technical indicators of one price series, computed with pandas and ``ta``.

Every indicator is NaN until it is defined: a bar is never given a made-up value (``ta`` fills the
start of ATR with zeros and counts a missing first price change as zero in RSI; both are masked here).
RSI, MACD, EMA and ATR are exponential averages: their first defined values depend on how the average
is seeded, and they agree with other implementations only after a warm-up (``IndicatorParams.warmup``
bars). SMA, Bollinger bands and the stochastic oscillator are exact from their first full window.

Columns of the frame ``compute_indicators`` returns (defaults in brackets):

  rsi                            RSI(rsi_window) [14]
  macd, macd_signal, macd_hist   MACD(macd_fast, macd_slow, macd_signal) [12, 26, 9]
  sma_short, sma_medium, sma_long  SMA of sma_windows [20, 50, 200]
  ema_fast, ema_slow             EMA of ema_windows [12, 26]
  bb_upper, bb_middle, bb_lower  Bollinger(bollinger_window, bollinger_dev) [20, 2], population std
  atr                            ATR(atr_window) [14], Wilder smoothing
  stoch_k, stoch_d               fast stochastic %K(stoch_window) [14] and its SMA(stoch_smooth) [3]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from processing.errors import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

INDICATOR_COLUMNS: tuple[str, ...] = (
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "sma_short",
    "sma_medium",
    "sma_long",
    "ema_fast",
    "ema_slow",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "atr",
    "stoch_k",
    "stoch_d",
)

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class IndicatorParams:
    """Windows of every indicator, in bars."""

    rsi_window: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    sma_windows: tuple[int, int, int] = (20, 50, 200)
    ema_windows: tuple[int, int] = (12, 26)
    bollinger_window: int = 20
    bollinger_dev: float = 2.0
    atr_window: int = 14
    stoch_window: int = 14
    stoch_smooth: int = 3
    # Bars of history before the stored window so that exponential averages forget their seed.
    warmup: int = 250

    def __post_init__(self) -> None:
        windows = {
            "rsi_window": self.rsi_window,
            "macd_fast": self.macd_fast,
            "macd_slow": self.macd_slow,
            "macd_signal": self.macd_signal,
            "bollinger_window": self.bollinger_window,
            "atr_window": self.atr_window,
            "stoch_window": self.stoch_window,
            "stoch_smooth": self.stoch_smooth,
        }
        windows.update({f"sma_windows[{i}]": w for i, w in enumerate(self.sma_windows)})
        windows.update({f"ema_windows[{i}]": w for i, w in enumerate(self.ema_windows)})
        for name, window in windows.items():
            if not isinstance(window, int) or isinstance(window, bool) or window < 1:
                raise InvalidArgument(f"indicator parameter {name} must be a positive integer, got {window!r}")
        if len(self.sma_windows) != 3 or len(self.ema_windows) != 2:
            raise InvalidArgument("sma_windows takes three windows and ema_windows two")
        if self.macd_fast >= self.macd_slow:
            raise InvalidArgument(f"macd_fast ({self.macd_fast}) must be shorter than macd_slow ({self.macd_slow})")
        if not self.bollinger_dev > 0:
            raise InvalidArgument(f"bollinger_dev must be positive, got {self.bollinger_dev!r}")
        if self.warmup < 0:
            raise InvalidArgument(f"warmup must not be negative, got {self.warmup!r}")

    @property
    def longest_window(self) -> int:
        """The most bars any indicator needs before its first value."""
        return max(
            self.rsi_window + 1,
            self.macd_slow + self.macd_signal - 1,
            *self.sma_windows,
            *self.ema_windows,
            self.bollinger_window,
            self.atr_window + 1,
            self.stoch_window + self.stoch_smooth - 1,
        )

    def history_needed(self, lookback: int) -> int:
        """Bars to read so that the last ``lookback`` bars have settled values."""
        return lookback + self.longest_window + self.warmup


def compute_indicators(bars: pd.DataFrame, params: IndicatorParams | None = None) -> pd.DataFrame:
    """Every indicator of ``bars`` (one symbol, one timeframe, oldest first), NaN where undefined.

    ``bars`` needs columns high, low and close (open and volume are not used); the result has the same
    index and the columns of ``INDICATOR_COLUMNS``.
    """
    import numpy as np
    import pandas as pd
    from ta.momentum import RSIIndicator, StochasticOscillator
    from ta.trend import MACD, EMAIndicator, SMAIndicator
    from ta.volatility import AverageTrueRange, BollingerBands

    params = params or IndicatorParams()
    missing = [c for c in ("high", "low", "close") if c not in bars.columns]
    if missing:
        raise InvalidArgument(f"price bars lack column {', '.join(missing)}")
    if not bars.index.is_monotonic_increasing:
        raise InvalidArgument("price bars must be ordered oldest first")
    close = bars["close"].astype("float64")
    high = bars["high"].astype("float64")
    low = bars["low"].astype("float64")
    n = len(close)
    out = pd.DataFrame(index=bars.index, columns=list(INDICATOR_COLUMNS), dtype="float64")
    if n == 0:
        return out

    rsi = RSIIndicator(close, window=params.rsi_window).rsi()
    # ``ta`` counts the missing change before the first bar as a zero change; RSI(n) is defined once
    # there are n real changes, i.e. from bar n.
    rsi.iloc[: params.rsi_window] = np.nan
    out["rsi"] = rsi

    macd = MACD(
        close,
        window_slow=params.macd_slow,
        window_fast=params.macd_fast,
        window_sign=params.macd_signal,
    )
    out["macd"] = macd.macd()
    out["macd_signal"] = macd.macd_signal()
    out["macd_hist"] = macd.macd_diff()

    for column, window in zip(("sma_short", "sma_medium", "sma_long"), params.sma_windows, strict=True):
        out[column] = SMAIndicator(close, window=window).sma_indicator()
    for column, window in zip(("ema_fast", "ema_slow"), params.ema_windows, strict=True):
        out[column] = EMAIndicator(close, window=window).ema_indicator()

    bands = BollingerBands(close, window=params.bollinger_window, window_dev=params.bollinger_dev)
    out["bb_upper"] = bands.bollinger_hband()
    out["bb_middle"] = bands.bollinger_mavg()
    out["bb_lower"] = bands.bollinger_lband()

    if n > params.atr_window:
        atr = AverageTrueRange(high, low, close, window=params.atr_window).average_true_range()
        # ``ta`` writes zeros before its seed and seeds with a true range that has no previous close;
        # ATR(n) is defined from bar n, once n true ranges with a previous close exist.
        atr.iloc[: params.atr_window] = np.nan
        out["atr"] = atr.to_numpy()

    stoch = StochasticOscillator(high, low, close, window=params.stoch_window, smooth_window=params.stoch_smooth)
    # A window whose high equals its low has no defined %K (0/0); leave it empty rather than invent one.
    out["stoch_k"] = stoch.stoch().replace([np.inf, -np.inf], np.nan)
    out["stoch_d"] = stoch.stoch_signal().replace([np.inf, -np.inf], np.nan)
    return out
