"""Indicators agree with TA-Lib, an independent implementation, and never invent warm-up values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from processing.errors import InvalidArgument
from processing.indicators import INDICATOR_COLUMNS, IndicatorParams, compute_indicators

WARMUP = 250
TOLERANCE = 1e-6


def talib_reference(bars: pd.DataFrame, params: IndicatorParams) -> dict[str, np.ndarray]:
    close, high, low = (bars[c].to_numpy() for c in ("close", "high", "low"))
    macd, signal, hist = talib.MACD(close, params.macd_fast, params.macd_slow, params.macd_signal)
    upper, middle, lower = talib.BBANDS(
        close, params.bollinger_window, params.bollinger_dev, params.bollinger_dev, matype=talib.MA_Type.SMA
    )
    k, d = talib.STOCHF(high, low, close, params.stoch_window, params.stoch_smooth, fastd_matype=talib.MA_Type.SMA)
    short, medium, long = params.sma_windows
    fast, slow = params.ema_windows
    return {
        "rsi": talib.RSI(close, params.rsi_window),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "sma_short": talib.SMA(close, short),
        "sma_medium": talib.SMA(close, medium),
        "sma_long": talib.SMA(close, long),
        "ema_fast": talib.EMA(close, fast),
        "ema_slow": talib.EMA(close, slow),
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "atr": talib.ATR(high, low, close, params.atr_window),
        "stoch_k": k,
        "stoch_d": d,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_indicator_equals_talib_after_the_warm_up(walk: Callable[..., pd.DataFrame], seed: int) -> None:
    # Given 700 bars of a random walk
    bars = walk(700, seed=seed)
    params = IndicatorParams()

    # When the indicators are computed
    ours = compute_indicators(bars, params)

    # Then after 250 bars each one equals TA-Lib's within 1e-6
    reference = talib_reference(bars, params)
    assert set(reference) == set(INDICATOR_COLUMNS)
    for column, expected in reference.items():
        got = ours[column].to_numpy()[WARMUP:]
        assert not np.isnan(got).any(), column
        np.testing.assert_allclose(got, expected[WARMUP:], rtol=0, atol=TOLERANCE, err_msg=column)


def test_windowed_indicators_equal_talib_from_their_first_full_window(
    walk: Callable[..., pd.DataFrame],
) -> None:
    # Given 300 bars
    bars = walk(300, seed=11)
    params = IndicatorParams()

    # When the indicators are computed
    ours = compute_indicators(bars, params)

    # Then SMA, Bollinger and the stochastic start where TA-Lib's do and match it from there on
    reference = talib_reference(bars, params)
    first_full = {
        "sma_short": 19,
        "sma_medium": 49,
        "sma_long": 199,
        "bb_upper": 19,
        "bb_middle": 19,
        "bb_lower": 19,
        "stoch_d": 15,
    }
    for column, first in first_full.items():
        got = ours[column].to_numpy()
        assert np.isnan(got[:first]).all(), column
        np.testing.assert_allclose(got[first:], reference[column][first:], rtol=0, atol=TOLERANCE, err_msg=column)


def test_warm_up_bars_are_left_empty_never_filled(walk: Callable[..., pd.DataFrame]) -> None:
    # Given 100 bars
    bars = walk(100, seed=5)

    # When the indicators are computed
    ours = compute_indicators(bars)

    # Then each indicator is empty exactly until it is defined (TA-Lib's lookback for RSI and ATR)
    first_defined = {
        column: int(ours[column].notna().to_numpy().argmax())
        for column in ("rsi", "atr", "macd", "macd_signal", "ema_fast", "ema_slow", "stoch_k")
    }
    assert first_defined == {
        "rsi": 14,
        "atr": 14,
        "macd": 25,
        "macd_signal": 33,
        "ema_fast": 11,
        "ema_slow": 25,
        "stoch_k": 13,
    }
    for column, first in first_defined.items():
        assert ours[column].iloc[:first].isna().all(), column
        assert ours[column].iloc[first:].notna().all(), column
    assert ours["sma_long"].isna().all()


def test_fewer_bars_than_the_longest_window_give_values_only_where_defined(
    walk: Callable[..., pd.DataFrame],
) -> None:
    # Given 30 bars: enough for RSI and SMA 20, not for SMA 50, SMA 200 or the MACD signal
    bars = walk(30, seed=9)

    # When the indicators are computed
    ours = compute_indicators(bars)

    # Then the short ones have values at the end and the long ones are empty, without an error
    assert ours["rsi"].iloc[-1] == pytest.approx(talib.RSI(bars["close"].to_numpy(), 14)[-1], abs=5)
    assert ours["sma_short"].notna().sum() == 11
    assert ours["sma_medium"].isna().all() and ours["sma_long"].isna().all()
    assert ours["macd_signal"].isna().all()


def test_a_single_bar_and_no_bars_compute_without_error(walk: Callable[..., pd.DataFrame]) -> None:
    # Given one bar and an empty frame
    one = walk(1)
    none = walk(1).iloc[:0]

    # When the indicators are computed
    from_one = compute_indicators(one)
    from_none = compute_indicators(none)

    # Then every value of the one bar is empty and the empty frame stays empty
    assert from_one.isna().all().all()
    assert len(from_none) == 0
    assert list(from_none.columns) == list(INDICATOR_COLUMNS)


def test_parameters_are_configurable(walk: Callable[..., pd.DataFrame]) -> None:
    # Given other windows for every indicator
    bars = walk(600, seed=4)
    params = IndicatorParams(
        rsi_window=7,
        macd_fast=5,
        macd_slow=35,
        macd_signal=5,
        sma_windows=(10, 30, 100),
        ema_windows=(8, 21),
        bollinger_window=10,
        bollinger_dev=1.5,
        atr_window=10,
        stoch_window=5,
        stoch_smooth=4,
    )

    # When the indicators are computed with them
    ours = compute_indicators(bars, params)

    # Then they equal TA-Lib called with the same windows (a slow average of 35 bars forgets its seed more
    # slowly, so the comparison starts later)
    for column, expected in talib_reference(bars, params).items():
        np.testing.assert_allclose(
            ours[column].to_numpy()[400:], expected[400:], rtol=0, atol=TOLERANCE, err_msg=column
        )
    assert params.longest_window == 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rsi_window": 0},
        {"macd_fast": 26, "macd_slow": 12},
        {"sma_windows": (20, -1, 200)},
        {"bollinger_dev": 0.0},
    ],
)
def test_impossible_parameters_are_refused(kwargs: dict[str, object]) -> None:
    # Given an impossible window
    # When the parameters are built
    # Then they are refused with a readable reason
    with pytest.raises(InvalidArgument):
        IndicatorParams(**kwargs)  # type: ignore[arg-type]


def test_unordered_bars_are_refused(walk: Callable[..., pd.DataFrame]) -> None:
    # Given bars newest first
    bars = walk(50).iloc[::-1]

    # When the indicators are computed
    # Then the order is refused rather than silently producing nonsense
    with pytest.raises(InvalidArgument, match="oldest first"):
        compute_indicators(bars)


def test_real_prices_give_talib_values_from_the_first_full_window() -> None:
    from processing.prices import bars_to_frame, read_price_file

    # Given a year of IBM's real daily prices from the shipped excerpt
    sample = Path(__file__).resolve().parents[2] / "samples" / "market" / "sp500-excerpt.csv"
    bars = bars_to_frame(b for b in read_price_file(sample) if b.symbol == "IBM")
    assert len(bars) == 245

    # When the indicators are computed
    ours = compute_indicators(bars)

    # Then SMA 20/50/200, the bands and the stochastic equal TA-Lib's wherever TA-Lib has a value
    reference = talib_reference(bars, IndicatorParams())
    for column in ("sma_short", "sma_medium", "sma_long", "bb_upper", "bb_middle", "bb_lower", "stoch_k", "stoch_d"):
        expected = reference[column]
        defined = ~np.isnan(expected)
        np.testing.assert_allclose(ours[column].to_numpy()[defined], expected[defined], rtol=0, atol=TOLERANCE)
    assert ours["sma_long"].notna().sum() == 46
