"""A PNG chart of one asset: close with Bollinger bands and SMAs, an RSI panel, a MACD panel, and
buy/sell markers. Drawn with matplotlib's object API on the Agg canvas, so it needs no display and
keeps no global pyplot state (safe in worker threads).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from processing.errors import InvalidArgument
from processing.signals import BUY, Signal

if TYPE_CHECKING:
    import pandas as pd


def render_chart(
    bars: pd.DataFrame,
    indicators: pd.DataFrame,
    signals: Sequence[Signal],
    path: Path,
    *,
    title: str,
    rsi_levels: tuple[float, float] = (30.0, 70.0),
) -> Path:
    """Draw the chart and write it to ``path`` (replaced atomically); returns ``path``.

    ``bars`` has a close column, ``indicators`` the columns of ``processing.indicators`` on the same
    index; signals outside the plotted range are left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(bars) == 0:
        raise InvalidArgument(f"{title} has no price bars to chart")
    x = bars.index
    close = bars["close"]
    ind = indicators.reindex(x)

    fig = Figure(figsize=(12, 8), dpi=100)
    FigureCanvasAgg(fig)
    # A fixed layout: constrained layout would cost as much as the drawing itself.
    grid = fig.add_gridspec(3, 1, height_ratios=(3, 1, 1), left=0.06, right=0.98, top=0.95, bottom=0.05, hspace=0.08)
    price = fig.add_subplot(grid[0])
    rsi_ax = fig.add_subplot(grid[1], sharex=price)
    macd_ax = fig.add_subplot(grid[2], sharex=price)

    for axis in (price, rsi_ax):
        axis.tick_params(labelbottom=False)
    price.plot(x, close, color="black", linewidth=1.2, label="close")
    price.fill_between(x, ind["bb_lower"], ind["bb_upper"], color="tab:blue", alpha=0.12, label="Bollinger")
    price.plot(x, ind["bb_upper"], color="tab:blue", linewidth=0.6)
    price.plot(x, ind["bb_lower"], color="tab:blue", linewidth=0.6)
    for column, color, label in (
        ("sma_short", "tab:orange", "SMA short"),
        ("sma_medium", "tab:green", "SMA medium"),
        ("sma_long", "tab:red", "SMA long"),
    ):
        if ind[column].notna().any():
            price.plot(x, ind[column], color=color, linewidth=0.9, label=label)

    start, end = x[0], x[-1]
    shown = [s for s in signals if start <= s.ts <= end]
    for direction, marker, color in ((BUY, "^", "green"), ("sell", "v", "red")):
        points = [s for s in shown if s.direction == direction]
        if points:
            ys = [float(close.asof(s.ts)) for s in points]
            price.scatter(
                [s.ts for s in points],  # type: ignore[arg-type]
                ys,
                marker=marker,
                color=color,
                s=[30 + 70 * s.strength for s in points],
                zorder=5,
                label=direction,
            )
    price.set_title(title)
    price.set_ylabel("price")
    price.legend(loc="upper left", fontsize="small", ncols=4)
    price.grid(alpha=0.3)

    rsi_ax.plot(x, ind["rsi"], color="tab:purple", linewidth=0.9)
    for level in rsi_levels:
        rsi_ax.axhline(level, color="grey", linestyle="--", linewidth=0.7)
    rsi_ax.set_ylim(0, 100)
    rsi_ax.set_ylabel("RSI")
    rsi_ax.grid(alpha=0.3)

    macd_ax.plot(x, ind["macd"], color="tab:blue", linewidth=0.9, label="MACD")
    macd_ax.plot(x, ind["macd_signal"], color="tab:orange", linewidth=0.9, label="signal")
    # The histogram as two filled areas, not one bar patch per bar (same picture, a fraction of the cost).
    hist = ind["macd_hist"]
    macd_ax.fill_between(x, 0, hist, where=hist >= 0, step="mid", color="tab:green", alpha=0.5, linewidth=0)
    macd_ax.fill_between(x, 0, hist, where=hist < 0, step="mid", color="tab:red", alpha=0.5, linewidth=0)
    macd_ax.axhline(0, color="grey", linewidth=0.6)
    macd_ax.set_ylabel("MACD")
    macd_ax.legend(loc="upper left", fontsize="small")
    macd_ax.grid(alpha=0.3)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
