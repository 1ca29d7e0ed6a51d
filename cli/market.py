"""``import-prices`` and ``chart``: the market pipeline from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from actors.market import TIMEFRAME, render_chart
from cli.common import job_failure, wait_for_job
from pipelines.market import demo_run_id, import_price_file, signals
from processing.errors import NotFound
from storage import market as store


def _cmd_import_prices(args: argparse.Namespace) -> int:
    try:
        message_id = import_price_file(Path(args.file), symbol=args.symbol, timeframe=args.timeframe).id
    except NotFound as error:
        print(str(error), file=sys.stderr)
        return 1
    if not args.wait:
        print(message_id)
        return 0
    job = wait_for_job(message_id, args.timeout, 0.2)
    if job is None or job.state != "succeeded":
        print(job_failure(message_id, job, "import"), file=sys.stderr)
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
        job = wait_for_job(message_id, args.timeout, 0.2)
        if job is None or job.state != "succeeded":
            queued = "still queued (is a worker on the market queue running?)"
            print(job_failure(message_id, job, "chart", queued), file=sys.stderr)
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


#: The job of each step of a market run, in order.
STEP_ACTORS = (("indicators", "compute_indicators"), ("signals", "compute_signals"), ("chart", "render_chart"))


def demo_report() -> None:
    """After ``make demo``'s summary: the market run with its children, step by step, and its signals."""
    from storage.jobs import list_jobs

    run_id = demo_run_id()
    info = store.get_run(run_id) if run_id is not None else None
    if info is None:
        return
    print(
        f"\nmarket run {info.id} ({info.kind}): {info.total} assets, {info.succeeded} succeeded, "
        f"{info.failed} failed: {info.outcome}"
    )
    # A job's enqueue time is its message's, which Dramatiq stamps in whole milliseconds: a step sent in
    # the run's first millisecond reads as older than the run.
    since = info.started_at.replace(microsecond=info.started_at.microsecond // 1000 * 1000)
    for step, actor in STEP_ACTORS:
        counts: dict[str, int] = {}
        for job in list_jobs(actor=actor, since=since, limit=100_000):
            counts[str(job.state)] = counts.get(str(job.state), 0) + 1
        print(f"  {step:<11} " + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"))
    active = signals(active=True)
    buys = sum(1 for signal in active if signal.direction == "buy")
    print(f"  signals     {len(active)} active ({buys} buy, {len(active) - buys} sell)")
