"""Signal rules on hand-built series whose answer is known."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from market_series import frame_from_closes

from processing.errors import InvalidArgument
from processing.indicators import compute_indicators
from processing.signals import BUY, SELL, Signal, SignalRules, evaluate_signals


def signals_of(bars: pd.DataFrame, rules: SignalRules | None = None) -> list[Signal]:
    frame = compute_indicators(bars).assign(close=bars["close"])
    return evaluate_signals(frame, rules)


def closes_from_steps(steps: list[float], start: float = 100.0) -> list[float]:
    return list(start + np.concatenate([[0.0], np.cumsum(steps)]))


def test_a_crafted_rsi_dip_below_30_gives_exactly_one_buy() -> None:
    # Given a calm zig-zag (RSI near 60), six sharp falls (RSI near 20), then a steady recovery
    steps = [1.0, -0.6] * 60 + [-3.0] * 6 + [1.0] * 8 + [1.0, -0.6] * 20
    bars = frame_from_closes(closes_from_steps(steps), spread=0.005)

    # When the RSI rule is evaluated
    found = signals_of(bars, SignalRules(enabled=("rsi",)))

    # Then exactly one signal comes out: a buy on the bar where RSI rises back above 30
    assert len(found) == 1
    (signal,) = found
    assert (signal.rule, signal.direction) == ("rsi", BUY)
    rsi = compute_indicators(bars)["rsi"]
    assert rsi.loc[signal.ts] >= 30 > rsi.shift(1).loc[signal.ts]
    # The dip went to about 19.5, 10.5 points deep: strength 0.5 + 0.5 * 10.5 / 20
    assert signal.strength == pytest.approx(0.5 + 0.5 * (30 - rsi.min()) / 20, abs=1e-6)
    assert "after a low of" in signal.reason


def test_a_crafted_rsi_spike_above_70_gives_exactly_one_sell() -> None:
    # Given the mirror image: a calm zig-zag, six sharp rises, then a steady decline
    steps = [-1.0, 0.6] * 60 + [3.0] * 6 + [-1.0] * 8 + [-1.0, 0.6] * 20
    bars = frame_from_closes(closes_from_steps(steps, start=200.0), spread=0.005)

    # When the RSI rule is evaluated
    found = signals_of(bars, SignalRules(enabled=("rsi",)))

    # Then exactly one sell comes out
    assert [(s.rule, s.direction) for s in found] == [("rsi", SELL)]
    assert 0.5 < found[0].strength <= 1.0


def test_a_fall_then_a_rise_gives_one_macd_buy_and_a_rise_then_a_fall_one_sell() -> None:
    # Given a smooth V (60 falling bars then 60 rising) and a smooth inverted V
    v = [100 - i for i in range(60)] + [40 + i for i in range(1, 61)]
    inverted = [100 + i for i in range(60)] + [160 - i for i in range(1, 61)]

    # When the MACD rule is evaluated on each
    buys = signals_of(frame_from_closes(v), SignalRules(enabled=("macd",)))
    sells = signals_of(frame_from_closes(inverted), SignalRules(enabled=("macd",)))

    # Then the V gives one buy (below the zero line: strong) and the inverted V one sell
    assert [(s.rule, s.direction) for s in buys] == [("macd", BUY)]
    assert buys[0].strength > 0.9
    assert [(s.rule, s.direction) for s in sells] == [("macd", SELL)]
    # And the cross is on the first bar where the MACD line is above (below) its signal line
    ind = compute_indicators(frame_from_closes(v))
    diff = ind["macd"] - ind["macd_signal"]
    assert diff.loc[buys[0].ts] > 0 >= diff.shift(1).loc[buys[0].ts]


def test_a_close_that_drops_out_of_the_bands_gives_one_bollinger_buy() -> None:
    # Given 40 calm bars then one close far below the lower band, then a return
    closes = [100 + (0.5 if i % 2 else -0.5) for i in range(40)] + [90.0, 100.0, 100.0]
    bars = frame_from_closes(closes)

    # When the Bollinger rule is evaluated
    found = signals_of(bars, SignalRules(enabled=("bollinger",)))

    # Then one buy on the bar of the drop, at full strength since it is far outside the band
    assert [(s.ts, s.rule, s.direction) for s in found] == [(bars.index[40].to_pydatetime(), "bollinger", BUY)]
    assert found[0].strength == 1.0


def test_a_close_that_jumps_above_the_bands_gives_one_bollinger_sell() -> None:
    # Given 40 calm bars then one close a little above the upper band (which the close itself widens)
    closes = [100 + (0.5 if i % 2 else -0.5) for i in range(40)]
    bars = frame_from_closes([*closes, 101.5])
    upper, lower = (float(compute_indicators(bars)[c].iloc[-1]) for c in ("bb_upper", "bb_lower"))

    # When the Bollinger rule is evaluated
    found = signals_of(bars, SignalRules(enabled=("bollinger",)))

    # Then one sell, weaker than a far break-out: 0.5 + 0.5 * 4 * (distance outside / band width)
    assert [(s.rule, s.direction) for s in found] == [("bollinger", SELL)]
    assert found[0].strength == pytest.approx(0.5 + 2 * (101.5 - upper) / (upper - lower), abs=1e-6)
    assert found[0].strength < 1.0


def test_a_long_decline_then_rally_gives_a_golden_cross_and_the_reverse_a_death_cross() -> None:
    # Given 250 falling bars then 150 rising ones, and the mirror image
    down_up = [300 - i * 0.5 for i in range(250)] + [175 + i * 1.5 for i in range(1, 151)]
    up_down = [100 + i * 0.5 for i in range(250)] + [225 - i * 1.0 for i in range(1, 151)]

    # When the SMA cross rule is evaluated
    golden = signals_of(frame_from_closes(down_up), SignalRules(enabled=("sma_cross",)))
    death = signals_of(frame_from_closes(up_down), SignalRules(enabled=("sma_cross",)))

    # Then exactly one golden cross (buy) and one death cross (sell)
    assert [(s.rule, s.direction) for s in golden] == [("sma_cross", BUY)]
    assert "golden cross" in golden[0].reason
    assert [(s.rule, s.direction) for s in death] == [("sma_cross", SELL)]
    assert "death cross" in death[0].reason


def test_no_rule_fires_during_the_warm_up_or_on_flat_prices() -> None:
    # Given 300 bars of a constant price
    bars = frame_from_closes([50.0] * 300)

    # When every rule is evaluated
    found = signals_of(bars)

    # Then nothing fires
    assert found == []


def test_every_strength_is_between_zero_and_one_on_a_random_walk(walk: Callable[..., pd.DataFrame]) -> None:
    # Given a long random walk with many crossings
    bars = walk(1500, seed=21)

    # When every rule is evaluated
    found = signals_of(bars)

    # Then each rule fires both ways, and every strength is within [0.5, 1]
    assert {(s.rule, s.direction) for s in found} == {
        (r, d) for r in ("rsi", "macd", "bollinger", "sma_cross") for d in (BUY, SELL)
    }
    assert all(0.5 <= s.strength <= 1.0 for s in found)
    assert [s.ts for s in found] == sorted(s.ts for s in found)


def test_unknown_rules_and_missing_columns_are_refused() -> None:
    # Given an unknown rule name and a frame without the RSI column
    # When rules are built or evaluated
    # Then each is refused with the name of the problem
    with pytest.raises(InvalidArgument, match="unknown signal rule"):
        SignalRules(enabled=("rsi", "astrology"))
    with pytest.raises(InvalidArgument, match="rsi"):
        evaluate_signals(
            pd.DataFrame({"close": [1.0]}, index=pd.date_range("2024", periods=1, tz="UTC")),
            SignalRules(enabled=("rsi",)),
        )
