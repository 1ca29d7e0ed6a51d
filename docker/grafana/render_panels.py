"""Draw the dashboard's panels as one PNG, from PromQL results captured against a real Prometheus.

    python docker/grafana/render_panels.py RESULTS.json OUT.png

RESULTS.json is what the integration test writes (tests/observability/test_prometheus_integration.py,
``DASHBOARD_RESULTS_JSON=...``): the dashboard's panels, each with its queries and their ``query_range``
results. Panels are laid out on Grafana's 24-column grid, in Grafana's dark colours, so the picture shows
what an operator sees. To refresh docs/dashboard.png:

    DASHBOARD_RESULTS_JSON=var/dashboard-results.json pytest tests/observability -k dashboard
    python docker/grafana/render_panels.py var/dashboard-results.json docs/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
MUTED = "#8e8e9a"
GRID = "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d"]
NAMED_COLOURS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a"}

#: Height of one grid unit, the figure's width and the title band, in inches; the PNG's resolution.
UNIT_HEIGHT = 0.34
FIGURE_WIDTH = 16.0
HEADER = 0.5
GAP = 0.06
DPI = 72


def legend_text(template: str, labels: dict[str, str]) -> str:
    """Grafana's legend format: ``{{queue_name}}`` replaced by the series' label."""
    if not template:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def unit_suffix(unit: str | None) -> str:
    return {"ops": "/s", "s": "s", "percentunit": "", "short": "", "none": ""}.get(unit or "", "")


def format_value(value: float, unit: str | None) -> str:
    if math.isnan(value):
        return "–"
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k{unit_suffix(unit)}"
    return f"{value:.3g}{unit_suffix(unit)}"


def threshold_colour(value: float, steps: list[dict[str, Any]]) -> str:
    colour = PALETTE[0]
    for step in steps:
        if step.get("value") is None or value >= float(step["value"]):
            colour = NAMED_COLOURS.get(step.get("color", ""), step.get("color", colour))
    return colour


def series_points(series: dict[str, Any], start: float) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for timestamp, raw in series.get("values", []):
        xs.append(float(timestamp) - start)
        ys.append(float(raw))
    return xs, ys


def draw_row(ax: Any, panel: dict[str, Any]) -> None:
    ax.axis("off")
    ax.text(0.0, 0.3, panel["title"], color=TEXT, fontsize=12, fontweight="bold", va="center",
            transform=ax.transAxes)  # fmt: skip


def draw_stat(ax: Any, panel: dict[str, Any]) -> None:
    ax.axis("off")
    defaults = (panel.get("fieldConfig") or {}).get("defaults", {})
    steps = (defaults.get("thresholds") or {}).get("steps", [])
    unit = defaults.get("unit")
    tiles = []
    for query in panel["queries"]:
        for series in query["result"]:
            values = [float(v) for _, v in series.get("values", []) if math.isfinite(float(v))]
            if values:
                tiles.append((legend_text(query["legend"], series["metric"]), values[-1]))
    tiles.sort()
    count = max(len(tiles), 1)
    columns = min(count, 5)
    rows = math.ceil(count / columns)
    for index, (name, value) in enumerate(tiles):
        column, row = index % columns, index // columns
        x0, width = column / columns, 1 / columns
        y0, height = 1 - (row + 1) / rows, 1 / rows
        colour = threshold_colour(value, steps)
        ax.add_patch(_rectangle(ax, (x0 + 0.01, y0 + 0.01), width - 0.02, height - 0.02, colour))
        ax.text(
            x0 + width / 2,
            y0 + height * 0.62,
            format_value(value, unit),
            ha="center",
            va="center",
            fontsize=14 if rows == 1 else 10,
            color="white",
            fontweight="bold",
            transform=ax.transAxes,
        )
        ax.text(x0 + width / 2, y0 + height * 0.22, name, ha="center", va="center", fontsize=7,
                color="white", transform=ax.transAxes)  # fmt: skip


def _rectangle(ax: Any, xy: tuple[float, float], width: float, height: float, colour: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, facecolor=colour, edgecolor="none", alpha=0.85, transform=ax.transAxes)


def draw_timeseries(ax: Any, panel: dict[str, Any], start: float, end: float) -> None:
    ax.set_facecolor(PANEL)
    defaults = (panel.get("fieldConfig") or {}).get("defaults", {})
    unit = defaults.get("unit")
    colour_index = 0
    lines = 0
    fill = sum(len(query["result"]) for query in panel["queries"]) <= 4
    for query in panel["queries"]:
        for series in sorted(query["result"], key=lambda s: legend_text(query["legend"], s["metric"])):
            xs, ys = series_points(series, start)
            if not any(math.isfinite(y) for y in ys):
                continue
            colour = PALETTE[colour_index % len(PALETTE)]
            colour_index += 1
            lines += 1
            label = legend_text(query["legend"], series["metric"])
            ax.plot(xs, ys, color=colour, linewidth=1.2, label=label if lines <= 8 else None)
            if fill:
                ax.fill_between(xs, ys, color=colour, alpha=0.08)
    ax.set_xlim(0, end - start)
    ax.set_ylim(bottom=0)
    if unit == "percentunit":
        ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(_value_formatter(unit))
    ax.xaxis.set_major_formatter(_seconds_formatter())
    ax.tick_params(colors=MUTED, labelsize=6, length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(color=GRID, linewidth=0.5)
    if lines:
        legend = ax.legend(loc="upper left", fontsize=6, frameon=True, ncol=2 if lines > 4 else 1,
                           labelcolor=TEXT, handlelength=1.2, facecolor=PANEL, edgecolor=GRID,
                           framealpha=0.85)  # fmt: skip
        legend.set_zorder(5)


def _value_formatter(unit: str | None) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: format_value(float(value), unit))


def _seconds_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: f"{value:.0f}s")


def first_sample(results: dict[str, Any]) -> float:
    """The earliest timestamp with a number in any panel: the picture starts there."""
    times = [
        float(timestamp)
        for panel in results["panels"]
        for query in panel.get("queries") or []
        for series in query["result"]
        for timestamp, raw in series.get("values", [])
        if math.isfinite(float(raw))
    ]
    return min(times, default=float(results["start"]))


def render(results: dict[str, Any], output: Path) -> None:
    """Lay the panels out on Grafana's 24-column grid and write the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    panels = [p for p in results["panels"] if p.get("gridPos")]
    height_units = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig_height = HEADER + height_units * UNIT_HEIGHT
    figure = plt.figure(figsize=(FIGURE_WIDTH, fig_height), dpi=DPI, facecolor=BACKGROUND)
    start, end = first_sample(results), float(results["end"])
    figure.text(
        0.1 / FIGURE_WIDTH, 1 - 0.3 / fig_height,
        f"{results['title']}: {len(panels)} panels, {end - start:.0f} s of real traffic seen by Prometheus",
        color=TEXT, fontsize=13, va="center",
    )  # fmt: skip
    column = (FIGURE_WIDTH - 0.2) / 24

    def box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        # Inches from the top-left corner to figure fractions from the bottom-left.
        return (x / FIGURE_WIDTH, 1 - (y + h) / fig_height, w / FIGURE_WIDTH, h / fig_height)

    for panel in panels:
        grid = panel["gridPos"]
        left, top = 0.1 + grid["x"] * column + GAP, HEADER + grid["y"] * UNIT_HEIGHT + GAP
        width, height = grid["w"] * column - 2 * GAP, grid["h"] * UNIT_HEIGHT - 2 * GAP
        if panel["type"] == "row":
            draw_row(figure.add_axes(box(left, top, width, height)), panel)
            continue
        card = FancyBboxPatch(
            (box(left, top, width, height)[0], box(left, top, width, height)[1]),
            width / FIGURE_WIDTH, height / fig_height, boxstyle="square,pad=0", transform=figure.transFigure,
            facecolor=PANEL, edgecolor=GRID, linewidth=0.6, zorder=-10,
        )  # fmt: skip
        figure.patches.append(card)
        figure.text(box(left + 0.1, top, 0, 0.22)[0], box(left, top + 0.2, 0, 0)[1], panel["title"],
                    color=TEXT, fontsize=9, fontweight="bold", va="bottom")  # fmt: skip
        if panel["type"] == "stat":
            draw_stat(figure.add_axes(box(left + 0.08, top + 0.3, width - 0.16, height - 0.38)), panel)
        else:
            ax = figure.add_axes(box(left + 0.55, top + 0.3, width - 0.65, height - 0.55))
            draw_timeseries(ax, panel, start, end)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, facecolor=BACKGROUND, dpi=DPI)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the dashboard's panels from captured PromQL results.")
    parser.add_argument("results", type=Path, help="JSON written by the integration test")
    parser.add_argument("output", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    render(json.loads(args.results.read_text()), args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
