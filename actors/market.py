"""Market actors: price import, indicators, signals, their expiry, charts, and the daily refresh.

Called without an asset, ``compute_indicators``, ``compute_signals`` and ``refresh_assets`` fan out: they
open a run (``market_runs``), send one job per asset as a Dramatiq group, and return the run id. Each
asset's job records how it ended in the run (on success, or when no retry follows its failure); the job
that records the last asset closes the run with its outcome: ``succeeded``, ``partial`` or ``failed``.
Every write is an upsert, so a job that runs twice (a retry, a redelivery) leaves the same rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from periodiq import cron

from middleware.events import Event
from middleware.outcome import decide
from processing.errors import InvalidArgument, NotFound, OutsideStorageRoot, TooLarge
from processing.paths import resolve_under
from settings import settings
from storage import market as store

logger = logging.getLogger(__name__)

QUEUE = "market"
#: The timeframe the scheduled computations use.
TIMEFRAME = "1d"
#: The most indicator rows one signal evaluation reads (newest first).
SIGNAL_WINDOW = 1_000
#: Bars one chart shows.
CHART_BARS = 250
_TIMEFRAME_PATTERN = re.compile(r"^[1-9][0-9]{0,2}(m|h|d|w|mo)$")
_MAX_LOOKBACK = 100_000

# Steps of a run, in pipeline order: the actor of each step, by name.
STEPS = ("indicators", "signals", "chart")


def _check_lookback(lookback_days: int) -> None:
    if not 1 <= lookback_days <= _MAX_LOOKBACK:
        raise InvalidArgument(f"lookback_days must be between 1 and {_MAX_LOOKBACK}, got {lookback_days}")


def _asset(asset_id: int) -> store.AssetInfo:
    asset = store.get_asset(asset_id)
    if asset is None:
        raise NotFound(f"asset {asset_id} does not exist")
    return asset


def _current_message_id() -> str | None:
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else None


def _final_outcome(error: BaseException) -> str | None:
    """The state this error leaves the job in, or None when another attempt follows."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return "failed"
    decision = decide(dramatiq.get_broker(), message, error)
    return None if decision.event is Event.RETRYING else decision.event.value


#: Outcomes of a run's assets are gathered in a Redis hash (asset id → outcome) under this prefix and
#: written to ``market_run_items`` in bulk when the hash holds every asset.
RUN_ITEMS_KEY = "market:run-items:"
#: How long an unfinished run's gathered outcomes are kept in Redis (seconds).
RUN_ITEMS_TTL = 7 * 24 * 3600


def _log_closed(run: store.RunInfo | None) -> None:
    if run is not None and run.finished:
        logger.info(
            "Market run %d (%s) ended %s: %d of %d assets succeeded.",
            run.id,
            run.kind,
            run.outcome,
            run.succeeded,
            run.total,
        )


def _record(run_id: int, asset_id: int, outcome: str, error: str | None = None) -> None:
    """Record how one asset of a run ended; the asset that completes the run closes it.

    With Redis at hand, the outcome goes into the run's hash in Redis (one round trip), and only a job
    that finds every asset in the hash writes the outcomes to the database, in one transaction, and
    closes the run. An asset recorded again (a redelivered job) replaces its outcome in the hash; once
    the hash is complete, every such call writes the outcomes again, so a closed run follows the change
    and a close whose transaction failed is made by the job's retry. Without Redis every outcome is
    written to the database as it comes.
    """
    from broker import redis_client_for

    client = redis_client_for(dramatiq.get_broker())
    opened = store.run_size(run_id)
    if opened is None:
        return
    started_at, total = opened
    # The start time tells this run from an earlier one with the same id (rows deleted, a new database).
    key = f"{RUN_ITEMS_KEY}{run_id}:{started_at.timestamp():.6f}"
    if client is None:
        _log_closed(store.record_run_item(run_id, asset_id, outcome, error))
        return
    entry = json.dumps([outcome, error, store.utcnow().isoformat()])
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, str(asset_id), entry)
    pipe.hlen(key)
    pipe.expire(key, RUN_ITEMS_TTL)
    _, gathered, _ = pipe.execute()
    if gathered >= total:
        # Every asset is in: write them all (again, after a redelivery or a failed close; the rows are
        # upserted, so writing twice changes nothing but the outcomes that changed).
        items = [
            (int(a), o, e, datetime.fromisoformat(at))
            for a, (o, e, at) in ((a, json.loads(v)) for a, v in client.hgetall(key).items())
        ]
        _log_closed(store.record_run_items(run_id, items))


@contextlib.contextmanager
def _run_item(run_id: int | None, asset_id: int, *, last_step: bool) -> Iterator[None]:
    """Record the asset's outcome in its run: on success of the run's last step, or on a final failure."""
    try:
        yield
    except BaseException as error:
        if run_id is not None:
            outcome = _final_outcome(error)
            if outcome is not None:
                _record(run_id, asset_id, outcome, f"{type(error).__name__}: {error}"[:2000])
        raise
    else:
        if run_id is not None and last_step:
            _record(run_id, asset_id, "succeeded")


def _step_message(
    step: str,
    asset_id: int,
    run_id: int,
    *,
    lookback_days: int,
    last_step: bool,
    parent_id: str | None,
    first: bool,
) -> dramatiq.Message:
    kwargs: dict[str, Any] = {"asset_id": asset_id, "run_id": run_id, "last_step": last_step}
    if step == "indicators":
        kwargs["lookback_days"] = lookback_days
    actor: Any = {"indicators": compute_indicators, "signals": compute_signals, "chart": render_chart}[step]
    options: dict[str, Any] = {}
    if parent_id is not None:
        options["parent_id"] = parent_id
    if not first:
        # A later step takes its own arguments, not the previous step's result.
        options["pipe_ignore"] = True
    return actor.message_with_options(kwargs=kwargs, **options)


def start_run(
    kind: str,
    steps: tuple[str, ...],
    *,
    asset_id: int | None = None,
    lookback_days: int = 100,
) -> dict[str, Any]:
    """Open a run over one asset or all of them and send each asset's steps; returns the run id and size.

    Each asset gets one message, or a pipeline when there are several steps; all of them go out as one
    Dramatiq group. Inside a worker the run is tied to the current message, so a retry of the fanning
    job reuses its run instead of opening another.
    """
    run_id, last_ids = send_run(kind, steps, asset_id=asset_id, lookback_days=lookback_days)
    return {"run_id": run_id, "assets": len(last_ids)}


def send_run(
    kind: str,
    steps: tuple[str, ...],
    *,
    asset_id: int | None = None,
    lookback_days: int = 100,
) -> tuple[int, list[str]]:
    """``start_run``'s work: returns the run id and the message id of each asset's last step."""
    unknown = [s for s in steps if s not in STEPS]
    if not steps or unknown:
        raise InvalidArgument(f"unknown run step {unknown}; known: {', '.join(STEPS)}")
    _check_lookback(lookback_days)
    if asset_id is not None:
        _asset(asset_id)
        asset_ids = [asset_id]
    else:
        asset_ids = store.list_asset_ids()
    parent_id = _current_message_id()
    params = {
        "steps": list(steps),
        "lookback_days": lookback_days,
        "asset_id": asset_id,
        "timeframe": TIMEFRAME,
    }
    run_id = store.find_run_by_message(parent_id) if parent_id else None
    if run_id is None:
        run_id = store.create_run(kind, len(asset_ids), params=params, message_id=parent_id)
    children: list[Any] = []
    last_ids: list[str] = []
    for one in asset_ids:
        messages = [
            _step_message(
                step,
                one,
                run_id,
                lookback_days=lookback_days,
                last_step=i == len(steps) - 1,
                parent_id=parent_id,
                first=i == 0,
            )
            for i, step in enumerate(steps)
        ]
        children.append(messages[0] if len(messages) == 1 else dramatiq.pipeline(messages))
        last_ids.append(messages[-1].message_id)
    if children:
        dramatiq.group(children).run()
    logger.info("Market run %d (%s) sent for %d assets.", run_id, kind, len(asset_ids))
    return run_id, last_ids


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=5_000)
def import_prices(
    path: str, symbol: str | None = None, timeframe: str = TIMEFRAME, source: str | None = None
) -> dict[str, Any]:
    """Store the bars of a CSV file under the storage root, all rows or none (see ``processing.prices``).

    ``source`` is the file's name as the user gave it (a staged copy has another): errors name it, and
    never show a path on this machine. A symbol whose bars, with those already stored, are fewer than
    the longest indicator window needs is rejected with the rest of the file's defects.
    """
    from processing.indicators import IndicatorParams
    from processing.prices import read_price_file, symbols_in

    name = source or Path(path).name
    if not _TIMEFRAME_PATTERN.match(timeframe):
        raise InvalidArgument(f"timeframe {timeframe!r} is not like 1d, 4h, 15m or 1w")
    try:
        file = resolve_under(settings.storage_root, path)
    except OutsideStorageRoot:
        raise OutsideStorageRoot(f"{name} is outside the storage root") from None
    except NotFound:
        raise NotFound(f"{name} does not exist under the storage root") from None
    if not file.is_file():
        raise InvalidArgument(f"{name} is not a file")
    size = file.stat().st_size
    if size > settings.max_file_bytes:
        raise TooLarge(f"{name} is {size} bytes, over the {settings.max_file_bytes} byte limit")
    stored: dict[str, int] = {}
    for found in symbols_in(file, symbol=symbol):
        asset = store.get_asset_by_symbol(found)
        if asset is not None:
            stored[found] = store.count_bars(asset.id, timeframe)
    bars = read_price_file(
        file, symbol=symbol, source=name, min_bars=IndicatorParams().longest_window, stored_bars=stored
    )
    counts = store.import_bars([dataclasses.asdict(bar) for bar in bars], timeframe=timeframe)
    return {"file": name, "timeframe": timeframe, **counts}


# --------------------------------------------------------------------------------------------------
# Indicators and signals
# --------------------------------------------------------------------------------------------------


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=5_000)
def compute_indicators(
    asset_id: int | None = None,
    lookback_days: int = 100,
    run_id: int | None = None,
    last_step: bool = True,
) -> dict[str, Any]:
    """Store the indicators of an asset's last ``lookback_days`` bars; without an asset, fan out.

    The bars read go back as far as the longest window and the warm-up need, so the stored values are
    settled; values still undefined (too little history) are stored empty.
    """
    from processing.indicators import IndicatorParams
    from processing.indicators import compute_indicators as indicators_of

    if asset_id is None:
        return start_run("indicators", ("indicators",), lookback_days=lookback_days)
    _check_lookback(lookback_days)
    with _run_item(run_id, asset_id, last_step=last_step):
        params = IndicatorParams()
        bars = store.load_bars(asset_id, TIMEFRAME, limit=params.history_needed(lookback_days))
        if not len(bars):
            _asset(asset_id)  # no bars: say so when there is no such asset either
        values = indicators_of(bars, params).iloc[-lookback_days:]
        rows = store.upsert_indicators(asset_id, TIMEFRAME, values)
        result: dict[str, Any] = {"asset_id": asset_id, "bars_read": len(bars), "rows": rows}
        if len(bars) < params.longest_window:
            # Imports refuse such a symbol; bars stored some other way still get a word in the result.
            symbol = _asset(asset_id).symbol
            result["short_history"] = (
                f"{symbol} has {len(bars)} bars; the indicators need at least {params.longest_window}"
            )
            logger.warning("Indicators of %s: %s", symbol, result["short_history"])
        return result


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=3,
    min_backoff=5_000,
    result_metrics={"signals": "market_signals_emitted_total"},
)
def compute_signals(asset_id: int | None = None, run_id: int | None = None, last_step: bool = True) -> dict[str, Any]:
    """Evaluate the signal rules on an asset's stored indicators and store new signals; without an
    asset, fan out.

    Signals on bars within ``signal_expiry_hours`` of the asset's latest bar are stored active, with an
    expiry ``signal_expiry_hours`` from now; crossings on older bars are kept as history, inactive.
    ``signals`` in the result counts new signals only, so a re-run reports 0.
    """
    from processing.signals import evaluate_signals, indicator_columns

    if asset_id is None:
        return start_run("signals", ("signals",))
    with _run_item(run_id, asset_id, last_step=last_step):
        frame = store.load_indicators(asset_id, TIMEFRAME, limit=SIGNAL_WINDOW, columns=indicator_columns())
        if not len(frame):
            _asset(asset_id)  # nothing stored: say so when there is no such asset either
        found = evaluate_signals(frame) if len(frame) else []
        now = store.utcnow()
        expiry = timedelta(hours=settings.signal_expiry_hours)
        fresh_after = frame.index[-1].to_pydatetime() - expiry if len(frame) else now
        rows = [
            {
                "asset_id": asset_id,
                "timeframe": TIMEFRAME,
                "ts": s.ts,
                "rule": s.rule,
                "direction": s.direction,
                "strength": s.strength,
                "reason": s.reason,
                "created_at": now,
                "expires_at": now + expiry,
                "active": s.ts > fresh_after,
            }
            for s in found
        ]
        new = store.insert_signals(rows)
        return {
            "asset_id": asset_id,
            "signals": new,
            "found": len(found),
            "active": sum(1 for r in rows if r["active"]),
        }


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("*/15 * * * *"))
def deactivate_expired_signals() -> dict[str, Any]:
    """Turn off every active signal whose expiry has passed."""
    return {"deactivated": store.deactivate_expired()}


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=2,
    min_backoff=60_000,
    periodic=cron("0 0 * * *"),
    schedule_timezone="UTC",
    schedule_enabled=settings.market_schedule_enabled,
)
def refresh_assets(asset_id: int | None = None, lookback_days: int = 100, chart: bool = False) -> dict[str, Any]:
    """Indicators then signals (then a chart, with ``chart``) for one asset or every asset.

    Runs daily at 00:00 UTC when ``MARKET_SCHEDULE_ENABLED`` is on. Each asset's steps are a pipeline;
    the pipelines go out as one group, and the run closes when every asset's pipeline has ended.
    """
    steps = ("indicators", "signals", "chart") if chart else ("indicators", "signals")
    return start_run("refresh", steps, asset_id=asset_id, lookback_days=lookback_days)


# --------------------------------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------------------------------


def chart_path(symbol: str) -> Path:
    """Where an asset's chart is written, under the storage root."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", symbol)
    return settings.storage_root / "market" / "charts" / f"{safe}.png"


@dramatiq.actor(queue_name=QUEUE, max_retries=2, min_backoff=5_000)
def render_chart(asset_id: int, run_id: int | None = None, last_step: bool = True) -> dict[str, Any]:
    """Draw the asset's last bars with bands, SMAs, RSI, MACD and its signals as a PNG; record its path."""
    from processing.charts import render_chart as draw
    from processing.indicators import IndicatorParams
    from processing.indicators import compute_indicators as indicators_of
    from processing.signals import Signal

    with _run_item(run_id, asset_id, last_step=last_step):
        asset = _asset(asset_id)
        params = IndicatorParams()
        bars = store.load_bars(asset_id, TIMEFRAME, limit=params.history_needed(CHART_BARS))
        indicators = indicators_of(bars, params).iloc[-CHART_BARS:]
        shown = bars.iloc[-CHART_BARS:]
        since = shown.index[0].to_pydatetime() if len(shown) else None
        stored = store.list_signals(asset_id=asset_id, timeframe=TIMEFRAME, since=since)
        signals = [Signal(s.ts, s.rule, s.direction, s.strength, s.reason) for s in stored]
        path = draw(shown, indicators, signals, chart_path(asset.symbol), title=f"{asset.symbol} ({TIMEFRAME})")
        store.set_chart(asset_id, str(path))
        return {"asset_id": asset_id, "path": str(path), "markers": len(signals)}
