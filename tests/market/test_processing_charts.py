"""Charts are real PNG files drawn without a display."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from processing.charts import render_chart
from processing.errors import InvalidArgument
from processing.indicators import compute_indicators
from processing.signals import evaluate_signals


def test_a_chart_is_written_as_a_png_with_three_panels(walk: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    # Given 400 bars, their indicators and signals
    bars = walk(400, seed=3)
    indicators = compute_indicators(bars)
    signals = evaluate_signals(indicators.assign(close=bars["close"]))
    assert signals

    # When the chart is rendered into a folder that does not exist yet
    path = render_chart(bars, indicators, signals, tmp_path / "charts" / "ACME.png", title="ACME daily")

    # Then a 1200 x 800 PNG is there and no temporary file is left beside it
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1200, 800)
        # A chart, not a blank canvas: many distinct colours are drawn
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 50
    assert sorted(p.name for p in path.parent.iterdir()) == ["ACME.png"]


def test_a_short_history_still_charts(walk: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    # Given only 10 bars: every long indicator is empty
    bars = walk(10)

    # When the chart is rendered
    path = render_chart(bars, compute_indicators(bars), [], tmp_path / "short.png", title="short")

    # Then it is still a PNG
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_bars_is_refused(walk: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    # Given an empty frame
    bars = walk(5).iloc[:0]

    # When a chart is asked for
    # Then it is refused and nothing is written
    with pytest.raises(InvalidArgument, match="no price bars"):
        render_chart(bars, compute_indicators(bars), [], tmp_path / "none.png", title="none")
    assert not (tmp_path / "none.png").exists()
