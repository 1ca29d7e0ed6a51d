"""Market jobs through a real worker on real Redis and a real database."""

from __future__ import annotations

import argparse
import re
import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from market_series import frame_from_closes, random_walk
from sqlalchemy import func, select, update

from tests.support import wait_for_job, wait_until

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "market" / "sp500-excerpt.csv"
HEADER = "date,symbol,open,high,low,close,volume\n"


def unique_symbol(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}".upper()


def seed_asset(symbol: str, frame: Any) -> int:
    """Store bars for a new asset directly (the import job is tested on its own)."""
    from storage import market as store

    rows = [
        {
            "symbol": symbol,
            "ts": ts.to_pydatetime(),
            **{c: float(row[c]) for c in ("open", "high", "low", "close", "volume")},
        }
        for ts, row in frame.iterrows()
    ]
    store.import_bars(rows, timeframe="1d")
    asset = store.get_asset_by_symbol(symbol)
    assert asset is not None
    return asset.id


def finished_run(run_id: int, timeout: float) -> Any:
    """The run once it is closed."""
    from storage import market as store

    def closed() -> Any:
        run = store.get_run(run_id)
        return run if run is not None and run.finished else None

    return wait_until(closed, timeout=timeout)


def count_rows(model: Any, **where: Any) -> int:
    from storage.db import session_scope

    query = select(func.count()).select_from(model)
    for column, value in where.items():
        query = query.where(getattr(model, column) == value)
    with session_scope() as session:
        return int(session.scalar(query) or 0)


@pytest.fixture
def market(broker: Any) -> Any:
    from actors import market

    return market


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------


def test_the_demo_imports_real_prices_and_refreshes_every_asset_with_a_chart(
    market: Any, worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.market import demo
    from storage import market as store

    # Given the demo's price file (the installed S&P 500 history, or the shipped excerpt); this test runs
    # first, so the refresh covers only the demo's assets
    # When the demo runs
    imported, refresh = demo()

    # Then the import succeeded, and every asset's pipeline ended with a chart
    assert imported.status().state == "succeeded"
    info = refresh.wait(240)
    assets = len(store.list_asset_ids())
    assert info.total == info.succeeded == assets >= 3
    assert refresh.status().children == {"succeeded": 3 * assets}
    for symbol in ("AAPL", "MSFT", "IBM"):
        asset = store.get_asset_by_symbol(symbol)
        assert asset is not None and asset.chart_path is not None and Path(asset.chart_path).exists()
        assert count_rows(store.IndicatorRow, asset_id=asset.id) == 100

    # And the demo's report shows the run with its children: every step of every asset, and the signals
    from cli.market import demo_report
    from middleware.job_status import flush

    flush()
    demo_report()
    report = capsys.readouterr().out.splitlines()
    assert report[1].startswith("market run ") and f": {assets} assets, {assets} succeeded, 0 failed" in report[1]
    assert [line.split()[:3] for line in report[2:5]] == [
        [step, str(assets), "succeeded"] for step in ("indicators", "signals", "chart")
    ]
    assert report[5].split()[0] == "signals" and "active" in report[5]


def test_the_demo_report_counts_a_step_sent_in_the_runs_first_millisecond(
    market: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pipelines.market
    from cli.market import demo_report
    from middleware.job_status import flush, writer
    from storage import market as store

    # Given a run, and a step whose message Dramatiq stamped in the run's first millisecond (message
    # times are whole milliseconds, so it reads as up to 1 ms older than the run)
    message_id = str(uuid.uuid4())
    run_id = store.create_run("refresh", 1, message_id=message_id)
    info = store.get_run(run_id)
    assert info is not None
    stamped = info.started_at.replace(microsecond=info.started_at.microsecond // 1000 * 1000)
    job_id = str(uuid.uuid4())
    writer.record({"id": job_id, "seq": 11, "state": "queued", "actor": "compute_indicators", "queue": "market",
                   "enqueued_at": stamped.timestamp(), "attempts": 0, "updated_at": stamped.timestamp()})  # fmt: skip
    flush()
    monkeypatch.setattr(pipelines.market, "_demo_message", message_id)

    # When the demo's report is printed
    demo_report()

    # Then the step is counted with its run
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:3] == ["indicators", "1", "queued"], lines


def test_import_price_file_returns_a_run_whose_wait_gives_the_import_counts(market: Any, worker: Any) -> None:
    from pipelines import Run
    from pipelines.market import import_price_file

    # Given the shipped excerpt, a file outside the storage root (it is staged as the cli does)
    # When it is imported and its run waited for
    run = import_price_file(SAMPLE)
    counts = run.wait(120)

    # Then the wait returned the job's counts under the user's file name
    assert isinstance(run, Run) and run.status().state == "succeeded"
    assert counts["file"] == SAMPLE.name and counts["timeframe"] == "1d"
    assert (counts["bars"], counts["symbols"]) == (728, 3)


def test_importing_a_price_file_stores_every_bar_and_a_second_import_changes_nothing(
    market: Any, worker: Any, storage_root: Path
) -> None:
    from storage import market as store

    # Given the shipped excerpt of real S&P 500 prices under the storage root
    target = storage_root / "imports" / "sp500-excerpt.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLE, target)

    # When it is imported twice
    first = wait_for_job(market.import_prices.send("imports/sp500-excerpt.csv").message_id)
    ibm = store.get_asset_by_symbol("IBM")
    assert ibm is not None
    bars_after_first = store.load_bars(ibm.id)
    second = wait_for_job(market.import_prices.send("imports/sp500-excerpt.csv").message_id)

    # Then both succeed, 728 bars of three symbols are stored once, and the second import changed nothing
    assert (first.state, second.state) == ("succeeded", "succeeded")
    assert '"bars": 728' in (first.result or "") and '"symbols": 3' in (first.result or "")
    assert '"assets_created": 0' in (second.result or "")
    assets = [store.get_asset_by_symbol(s) for s in ("AAPL", "MSFT", "IBM")]
    assert sum(count_rows(store.PriceBarRow, asset_id=a.id) for a in assets if a is not None) == 728
    assert len(bars_after_first) == 245
    assert store.load_bars(ibm.id).equals(bars_after_first)
    assert bars_after_first["close"].iloc[-1] == 127.5


BAD_FILES = {
    "non-numeric price": (
        "{s},2024-01-02,10,11,9,10.5,100\n{s},2024-01-03,10,11,9,ten,100\n",
        3,
        "close 'ten' is not a number",
    ),
    "duplicate date": (
        "{s},2024-01-02,10,11,9,10.5,100\n{s},2024-01-03,10,11,9,10,100\n{s},2024-01-02,10,11,9,10,1\n",
        4,
        "duplicate date",
    ),
    "negative volume": (
        "{s},2024-01-02,10,11,9,10.5,100\n{s},2024-01-03,10,11,9,10.5,-1\n",
        3,
        "volume -1 is negative",
    ),
    "high below low": ("{s},2024-01-02,10,11,9,10.5,100\n{s},2024-01-03,10,8,9,8.5,100\n", 3, "high 8 is below low 9"),
}


@pytest.mark.parametrize("case", [*BAD_FILES, "missing column"])
def test_a_bad_price_file_fails_the_job_with_its_line_and_stores_none_of_its_rows(
    market: Any, worker: Any, storage_root: Path, case: str
) -> None:
    from storage import market as store

    # Given a file whose first rows are good and one later row is bad (or whose header lacks a column)
    symbol = unique_symbol("BAD")
    if case == "missing column":
        text, line, words = (
            f"symbol,date,open,high,low,close\n{symbol},2024-01-02,10,11,9,10.5\n",
            1,
            "missing column 'volume'",
        )
    else:
        body, line, words = BAD_FILES[case]
        text = "symbol,date,open,high,low,close,volume\n" + body.format(s=symbol)
    path = storage_root / f"{symbol}.csv"
    path.write_text(text)

    # When it is imported
    job = wait_for_job(market.import_prices.send(path.name).message_id)

    # Then the job failed, without retries, naming the line and the problem; no asset and no bar was stored
    assert job.state == "failed"
    assert job.attempts == 1
    assert f"{symbol}.csv " in (job.error_message or "")
    assert re.search(rf"line {line}( \({symbol}\))?: ", job.error_message or ""), job.error_message
    assert words in (job.error_message or "")
    assert "no rows of this file were stored" in (job.error_message or "")
    assert store.get_asset_by_symbol(symbol) is None


def test_a_price_file_outside_the_storage_root_or_missing_is_refused(market: Any, worker: Any, tmp_path: Path) -> None:
    # Given a file outside the storage root, and a name that does not exist
    outside = tmp_path / "prices.csv"
    outside.write_text(HEADER + "2024-01-02,OUT,1,2,0.5,1.5,10\n")

    # When each is imported
    escaped = wait_for_job(market.import_prices.send(str(outside)).message_id)
    missing = wait_for_job(market.import_prices.send("nowhere/none.csv").message_id)

    # Then both jobs fail with a readable reason
    assert escaped.state == "failed" and "outside the storage root" in (escaped.error_message or "")
    assert missing.state == "failed" and "does not exist" in (missing.error_message or "")


# --------------------------------------------------------------------------------------------------
# Indicators and signals of one asset
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor_name", ["compute_indicators", "compute_signals", "render_chart", "refresh_assets"])
def test_an_unknown_asset_fails_the_job_with_a_clear_reason(market: Any, worker: Any, actor_name: str) -> None:
    # Given an asset id nobody has
    # When a job is sent for it
    job = wait_for_job(getattr(market, actor_name).send(asset_id=987_654_321).message_id)

    # Then it fails at once, saying which asset
    assert job.state == "failed"
    assert job.attempts == 1
    assert "asset 987654321 does not exist" in (job.error_message or "")


def test_indicators_store_the_last_lookback_bars_computed_from_earlier_history(market: Any, worker: Any) -> None:
    from processing.indicators import compute_indicators
    from storage import market as store

    # Given an asset with 900 bars
    frame = random_walk(900, seed=31)
    asset_id = seed_asset(unique_symbol("IND"), frame)

    # When its indicators are computed for the last 60 bars
    job = wait_for_job(market.compute_indicators.send(asset_id, lookback_days=60).message_id)

    # Then 60 rows are stored, equal to indicators computed on the whole history
    assert job.state == "succeeded", job.error_message
    stored = store.load_indicators(asset_id)
    assert len(stored) == 60
    assert stored.index[0] == frame.index[-60]
    expected = compute_indicators(frame).iloc[-60:]
    for column in ("rsi", "macd_signal", "sma_long", "bb_lower", "atr", "stoch_d"):
        np.testing.assert_allclose(stored[column].to_numpy(), expected[column].to_numpy(), rtol=0, atol=1e-9)


def test_fewer_bars_than_the_longest_window_store_values_only_where_defined(market: Any, worker: Any) -> None:
    from storage import market as store

    # Given an asset with only 30 bars
    asset_id = seed_asset(unique_symbol("FEW"), random_walk(30, seed=3))

    # When indicators and then signals are computed
    indicators = wait_for_job(market.compute_indicators.send(asset_id).message_id)
    signals = wait_for_job(market.compute_signals.send(asset_id).message_id)

    # Then both succeed; RSI exists from bar 15, SMA 20 from bar 20, SMA 50 and 200 nowhere
    assert (indicators.state, signals.state) == ("succeeded", "succeeded")
    stored = store.load_indicators(asset_id)
    assert len(stored) == 30
    assert stored["rsi"].isna().sum() == 14
    assert stored["sma_short"].isna().sum() == 19
    assert stored["sma_medium"].isna().all() and stored["sma_long"].isna().all()


def test_a_crafted_rsi_dip_on_the_latest_bars_gives_one_active_buy_that_expires(market: Any, worker: Any) -> None:
    from settings import settings
    from storage import market as store
    from storage.db import session_scope

    # Given an asset whose last bars are a sharp dip and the first bar of recovery above RSI 30
    steps = [1.0, -0.6] * 60 + [-3.0] * 6 + [1.0] * 3
    closes = list(100 + np.concatenate([[0.0], np.cumsum(steps)]))
    bars = frame_from_closes(closes, spread=0.005)
    asset_id = seed_asset(unique_symbol("DIP"), bars)

    # When indicators and signals are computed, twice
    wait_for_job(market.compute_indicators.send(asset_id).message_id)
    first = wait_for_job(market.compute_signals.send(asset_id).message_id)
    wait_for_job(market.compute_indicators.send(asset_id).message_id)
    second = wait_for_job(market.compute_signals.send(asset_id).message_id)

    # Then exactly one RSI buy exists, on the latest bar, active, expiring after the configured hours;
    # the second run found the same signals and added none
    rsi = [s for s in store.list_signals(asset_id=asset_id) if s.rule == "rsi"]
    assert [(s.direction, s.ts) for s in rsi] == [("buy", bars.index[-1].to_pydatetime())]
    (buy,) = rsi
    assert buy.active
    assert buy.expires_at - buy.created_at == timedelta(hours=settings.signal_expiry_hours)
    assert 0.5 < buy.strength <= 1.0
    assert '"signals": 0' in (second.result or "")
    assert first.result is not None and '"signals": 0' not in first.result

    # When the signal's expiry passes and the expiry job runs
    with session_scope() as session:
        session.execute(
            update(store.SignalRow)
            .where(store.SignalRow.id == buy.id)
            .values(expires_at=store.utcnow() - timedelta(minutes=1))
        )
    expired = wait_for_job(market.deactivate_expired_signals.send().message_id)

    # Then it is inactive, and a later run does not bring it back
    assert expired.state == "succeeded"
    assert not next(s for s in store.list_signals(asset_id=asset_id) if s.id == buy.id).active
    wait_for_job(market.compute_signals.send(asset_id).message_id)
    assert not next(s for s in store.list_signals(asset_id=asset_id) if s.id == buy.id).active


def test_crossings_on_older_bars_are_kept_as_inactive_history(market: Any, worker: Any) -> None:
    from storage import market as store

    # Given an asset with 600 bars of a random walk: many crossings, most of them long ago
    asset_id = seed_asset(unique_symbol("HIS"), random_walk(600, seed=8))

    # When indicators (200 bars) and signals are computed
    wait_for_job(market.compute_indicators.send(asset_id, lookback_days=200).message_id)
    wait_for_job(market.compute_signals.send(asset_id).message_id)

    # Then the signals on earlier bars are stored, inactive; only the latest bar's could be active
    found = store.list_signals(asset_id=asset_id)
    assert len(found) > 5
    latest = store.load_bars(asset_id).index[-1].to_pydatetime()
    assert all(not s.active for s in found if s.ts < latest)


# --------------------------------------------------------------------------------------------------
# Fan-out over many assets
# --------------------------------------------------------------------------------------------------


def test_indicators_without_an_asset_fan_out_one_job_per_asset_and_close_the_run(market: Any, worker: Any) -> None:
    from storage import market as store
    from storage.models import Job

    # Given 40 assets with 400 bars each
    ids = [seed_asset(unique_symbol("FAN"), random_walk(400, seed=100 + i)) for i in range(40)]

    # When indicators are computed without naming an asset
    parent = wait_for_job(market.compute_indicators.send().message_id)

    # Then the parent opened a run over every asset, one child job per asset ran, and the run closed
    assert parent.state == "succeeded", parent.error_message
    run_id = store.find_run_by_message(parent.id)
    assert run_id is not None
    run = finished_run(run_id, timeout=120)
    assert run.outcome == "succeeded"
    assert run.total == run.succeeded == len(store.list_asset_ids())
    for asset_id in ids:
        assert count_rows(store.IndicatorRow, asset_id=asset_id) == 100
    assert count_rows(Job, parent_id=parent.id) == run.total


def test_a_run_records_a_failed_asset_and_ends_partial(market: Any, worker: Any) -> None:
    from storage import market as store

    # Given a run over two assets, one of which does not exist
    good = seed_asset(unique_symbol("OK"), random_walk(300, seed=1))
    run_id = store.create_run("indicators", 2)

    # When both jobs run
    for asset_id in (good, 876_543_210):
        market.compute_indicators.send(asset_id=asset_id, run_id=run_id)

    # Then the run ends partial, with the missing asset's reason recorded
    run = finished_run(run_id, timeout=60)
    assert (run.outcome, run.succeeded, run.failed) == ("partial", 1, 1)
    items = store.list_run_items(run_id)
    assert items[0] == (good, "succeeded", None)
    assert items[1][:2] == (876_543_210, "failed") and "does not exist" in (items[1][2] or "")


def test_an_asset_recorded_twice_in_a_run_counts_once_and_the_run_closes_with_every_asset(
    market: Any, worker: Any
) -> None:
    from storage import market as store

    # Given a run over two assets
    first = seed_asset(unique_symbol("TWA"), random_walk(300, seed=5))
    second = seed_asset(unique_symbol("TWB"), random_walk(300, seed=6))
    run_id = store.create_run("indicators", 2)

    # When the first asset's job is delivered twice (a redelivery) and then the second one's runs
    for _ in range(2):
        assert wait_for_job(market.compute_indicators.send(asset_id=first, run_id=run_id).message_id).state == (
            "succeeded"
        )
    after_first = store.get_run(run_id)
    market.compute_indicators.send(asset_id=second, run_id=run_id)

    # Then the run stayed open with one asset in, and closes succeeded with each asset counted once
    assert after_first is not None and not after_first.finished
    run = finished_run(run_id, timeout=60)
    assert (run.outcome, run.total, run.succeeded, run.failed) == ("succeeded", 2, 2, 0)
    assert store.list_run_items(run_id) == [(first, "succeeded", None), (second, "succeeded", None)]


def test_signals_read_only_the_indicator_columns_their_rules_need(market: Any, worker: Any) -> None:
    from processing.signals import indicator_columns
    from storage import market as store

    # Given an asset whose indicators are stored
    asset_id = seed_asset(unique_symbol("COL"), random_walk(500, seed=9))
    assert wait_for_job(market.compute_indicators.send(asset_id).message_id).state == "succeeded"

    # When its indicators are loaded with the columns the signal rules read
    everything = store.load_indicators(asset_id)
    chosen = store.load_indicators(asset_id, columns=indicator_columns())

    # Then only the close and those columns come back, with the same values as a full read
    assert list(chosen.columns) == [
        "close",
        "rsi",
        "macd",
        "macd_signal",
        "bb_upper",
        "bb_lower",
        "sma_medium",
        "sma_long",
    ]
    assert chosen.equals(everything[list(chosen.columns)])
    with pytest.raises(ValueError, match="unknown indicator column"):
        store.load_indicators(asset_id, columns=["rsi", "volume"])


def test_refreshing_the_market_is_indicators_then_signals_and_a_rerun_is_idempotent(market: Any, worker: Any) -> None:
    from pipelines.market import refresh_market
    from storage import market as store

    # Given 12 assets with long histories
    ids = [seed_asset(unique_symbol("REF"), random_walk(700, seed=200 + i)) for i in range(12)]

    # When the market is refreshed, and refreshed again
    first = refresh_market().wait(timeout=180)
    indicators_after_first = {a: store.load_indicators(a) for a in ids}
    signals_after_first = {a: store.list_signals(asset_id=a) for a in ids}
    second = refresh_market().wait(timeout=180)

    # Then each run covered every asset and succeeded; every asset has indicators and signals,
    # and the second run left the same rows
    assert (first.outcome, second.outcome) == ("succeeded", "succeeded")
    assert first.total == second.total == len(store.list_asset_ids())
    assert all(signals_after_first[a] for a in ids)
    for asset_id in ids:
        assert store.load_indicators(asset_id).equals(indicators_after_first[asset_id])
        assert store.list_signals(asset_id=asset_id) == signals_after_first[asset_id]


def test_refreshing_one_asset_runs_its_pipeline_and_draws_its_chart(market: Any, worker: Any) -> None:
    from PIL import Image

    from pipelines.market import refresh_market
    from storage import market as store

    # Given one asset
    symbol = unique_symbol("CH")
    asset_id = seed_asset(symbol, random_walk(500, seed=77))

    # When it alone is refreshed with a chart
    handle = refresh_market(asset_id, chart=True)
    run = handle.wait(timeout=120)

    # Then the run's handle counts its children (indicators, signals, chart: all succeeded)
    status = handle.status()
    assert status.state == "succeeded"
    assert status.children == {"succeeded": 3}
    # And the run covered one asset and the chart's path is recorded and is a PNG
    assert (run.total, run.outcome) == (1, "succeeded")
    asset = store.get_asset(asset_id)
    assert asset is not None and asset.chart_path is not None
    with Image.open(asset.chart_path) as image:
        assert image.format == "PNG"
    assert count_rows(store.IndicatorRow, asset_id=asset_id) == 100


def test_the_cli_imports_a_file_and_shows_a_chart(
    market: Any, worker: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.market import register_cli

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())

    # Given a CSV anywhere on the machine, for one symbol, with no symbol column
    symbol = unique_symbol("CLI")
    bars = random_walk(260, seed=5)  # more than the longest indicator window (SMA 200)
    path = tmp_path / "one.csv"
    lines = ["date,open,high,low,close,volume"] + [
        f"{ts.date().isoformat()},{r.open},{r.high},{r.low},{r.close},{int(r.volume)}" for ts, r in bars.iterrows()
    ]
    path.write_text("\n".join(lines) + "\n")

    # When `import-prices FILE --symbol S --wait` and then `chart S` run
    imported = parser.parse_args(["import-prices", str(path), "--symbol", symbol, "--wait"])
    assert imported.handler(imported) == 0
    shown = parser.parse_args(["chart", symbol.lower()])
    assert shown.handler(shown) == 0

    # Then the import reported its bars and the chart command printed an existing PNG's path
    out = capsys.readouterr().out.strip().splitlines()
    assert '"bars": 260' in out[0]
    assert out[-1].endswith(".png") and Path(out[-1]).exists()

    # And an unknown symbol is an error, not a crash
    unknown = parser.parse_args(["chart", "NOPE-NOT-HERE"])
    assert unknown.handler(unknown) == 1


# --------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------


def test_the_daily_refresh_and_the_expiry_are_declared_and_the_daily_one_is_off_by_default(market: Any) -> None:
    from scheduler import schedules_from_actors

    # Given the registered market actors
    refresh = market.refresh_assets
    expiry = market.deactivate_expired_signals

    # When the scheduler reads their declarations
    schedules = {s.actor_name: s for s in schedules_from_actors([refresh, expiry])}

    # Then the refresh is daily at midnight UTC and disabled; the expiry runs every 15 minutes
    assert str(refresh.options["periodic"]) == "0 0 * * *"
    assert refresh.options["schedule_enabled"] is False
    assert str(expiry.options["periodic"]) == "*/15 * * * *"
    assert schedules["refresh_assets"].enabled is False
    assert schedules["deactivate_expired_signals"].enabled is True
