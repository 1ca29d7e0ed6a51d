"""Price series built by hand for the market tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def frame_from_closes(closes: Sequence[float], *, start: str = "2020-01-01", spread: float = 0.01) -> pd.DataFrame:
    """Daily OHLCV bars around ``closes``: high and low ``spread`` (a fraction) either side."""
    close = np.asarray(closes, dtype="float64")
    return pd.DataFrame(
        {
            "open": close,
            "high": close * (1 + spread),
            "low": close * (1 - spread),
            "close": close,
            "volume": np.full(len(close), 1000.0),
        },
        index=pd.date_range(start, periods=len(close), freq="D", tz="UTC", name="ts"),
    )


def random_walk(n: int, *, seed: int = 7, start: float = 100.0) -> pd.DataFrame:
    """A reproducible random walk of ``n`` daily bars with highs and lows that straddle the close."""
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0.0003, 0.02, n)))
    high = close * (1 + rng.uniform(0.0, 0.03, n))
    low = close * (1 - rng.uniform(0.0, 0.03, n))
    frame = frame_from_closes(close.tolist())
    frame["high"], frame["low"] = high, low
    frame["open"] = np.concatenate([[close[0]], close[:-1]])
    frame["volume"] = rng.integers(1_000, 100_000, n).astype("float64")
    return frame
