"""The pipelines: document → extract, video transcript → extract, asset → chart → analyse (offline)."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest

from tests.support import wait_for_job

NOTES = """Strategy: Breakout Swing
We trade crypto on the 4h chart. Enter long when the close breaks above the 20-period high with volume
above its 20-bar average. Exit when the close falls below the 10-period EMA.
Risk 0.5% of the account per trade with a stop-loss under the breakout candle."""


@pytest.fixture(autouse=True)
def _offline(monkeypatch):  # type: ignore[no-untyped-def]
    import dataclasses

    import actors.llm
    from settings import settings

    monkeypatch.setattr(actors.llm, "settings", dataclasses.replace(settings, llm_provider="offline", llm_api_key=""))


def test_a_document_is_indexed_then_its_strategy_extracted(worker, storage_root):
    from pipelines.llm import extract_from_document, strategy_for_job

    # Given a text document under the storage root
    name = f"llm/notes-{uuid.uuid4().hex[:8]}.txt"
    (storage_root / name).parent.mkdir(parents=True, exist_ok=True)
    (storage_root / name).write_text(NOTES)

    # When the document pipeline runs with an extraction at its end, and its run is waited for
    run = extract_from_document(name)
    strategy = run.wait(300)
    job = wait_for_job(run.job_id, timeout=10)

    # Then the wait returned the strategy the last step stored, linked to the document, from the offline
    # provider; every step is a child of the run
    assert job.state == "succeeded", job.error_message
    assert strategy is not None and strategy == strategy_for_job(run.job_id)
    assert job.parent_id == run.id != run.job_id and run.status().children == {"succeeded": 4}
    assert strategy["source_kind"] == "document" and strategy["source_id"] is not None
    assert (strategy["name"], strategy["market"], strategy["timeframe"]) == ("Breakout Swing", "crypto", "4h")
    assert strategy["provider"] == "offline"
    assert {"name": "EMA", "parameters": {"period": 10}} in strategy["indicators"]
    assert job.parent_id is not None


def test_a_video_transcript_is_read_for_an_extraction(worker):
    from actors.llm import extract_trading_strategy
    from storage.llm import get_strategy
    from storage.media import SegmentRow, save_video

    # Given a stored video whose transcript describes a strategy
    sentences = [s.strip() + "." for s in NOTES.replace("\n", " ").split(".") if s.strip()]
    video_id = save_video(
        job_id=None,
        metadata={"source": "local", "id": uuid.uuid4().hex, "title": "strategy talk"},
        transcript_source="whisper",
        language="en",
        model="tiny.en",
        segments=[SegmentRow(start=i * 5.0, end=i * 5.0 + 5, text=t, words=None) for i, t in enumerate(sentences)],
        frames=[],
        frame_interval_seconds=None,
    )

    # When its strategy is extracted
    message = extract_trading_strategy.send(f"video:{video_id}")
    job = wait_for_job(message.message_id)

    # Then it is linked to the video
    assert job.state == "succeeded", job.error_message
    strategy = get_strategy(job_id=message.message_id)
    assert strategy is not None and (strategy["source_kind"], strategy["source_id"]) == ("video", video_id)
    assert strategy["timeframe"] == "4h" and strategy["risk_management"]

    # and in a pipeline after a media job, the media job's result names the video
    piped = extract_trading_strategy.send("video:piped", {"video_id": video_id, "title": "strategy talk"})
    job = wait_for_job(piped.message_id)
    assert job.state == "succeeded", job.error_message
    assert get_strategy(job_id=piped.message_id)["source_id"] == video_id  # type: ignore[index]


def test_an_assets_chart_is_rendered_then_analysed(worker):
    import pandas as pd

    from pipelines.llm import analyze_asset, chart_analysis_for_job
    from storage import market

    # Given an asset whose price falls with swings
    symbol = f"LLM{uuid.uuid4().hex[:5].upper()}"
    index = pd.date_range("2025-06-01", periods=300, freq="D", tz="UTC")
    closes = [300 - i * 0.6 + 8 * math.sin(i / 7) for i in range(300)]
    market.import_bars(
        [
            {
                "symbol": symbol,
                "ts": ts.to_pydatetime(),
                "open": c,
                "high": c + 1,
                "low": c - 1,
                "close": c,
                "volume": 1e6,
            }
            for ts, c in zip(index, closes, strict=True)
        ],
        timeframe="1d",
    )

    # When the asset pipeline renders its chart and analyses it
    run = analyze_asset(symbol)
    analysis = run.wait(180)

    # Then the analysis of the market family's chart is stored with prices on the asset's scale
    assert wait_for_job(run.job_id, timeout=10).state == "succeeded"
    assert analysis is not None and analysis == chart_analysis_for_job(run.job_id)
    assert analysis["source_kind"] == "asset" and analysis["provider"] == "offline"
    assert analysis["trend"] == "down"
    shown = closes[-250:]
    levels = analysis["support_levels"] + analysis["resistance_levels"]
    assert levels and all(min(shown) - 2 <= level <= max(shown) + 2 for level in levels)
    assert analysis["path"].endswith(f"{symbol}.png")


def test_extract_strategy_returns_a_run_whose_wait_gives_the_stored_strategy(worker):
    from pipelines import Run
    from pipelines.llm import extract_strategy, strategy_for_job

    # When a text's strategy is extracted on the offline provider and its run waited for
    run = extract_strategy(f"{NOTES} ({uuid.uuid4().hex[:6]})")
    strategy = run.wait(60)

    # Then the wait returned the stored strategy of that one job
    assert isinstance(run, Run) and run.job_id == run.id
    assert strategy == strategy_for_job(run.id)
    assert (strategy["name"], strategy["provider"], strategy["source_kind"]) == ("Breakout Swing", "offline", "text")


def test_an_extraction_from_an_empty_document_raises_the_extract_steps_error(worker, storage_root):
    from pipelines import RunFailed
    from pipelines.llm import extract_from_document, strategy_for_job

    # Given an empty file under the storage root
    name = f"llm/empty-{uuid.uuid4().hex[:8]}.txt"
    (storage_root / name).parent.mkdir(parents=True, exist_ok=True)
    (storage_root / name).write_bytes(b"")

    # When its strategy is asked for and the run waited for
    run = extract_from_document(name)
    with pytest.raises(RunFailed) as failed:
        run.wait(120)

    # Then the wait raised the first step's error as one line, and no strategy was stored
    assert failed.value.job_id == run.id and failed.value.state == "failed"
    assert str(failed.value).endswith(f"CorruptInput: {Path(name).name} is empty (0 bytes)")
    assert strategy_for_job(run.job_id) is None


def test_the_cli_extracts_waits_and_prints_the_strategy_with_its_usage(worker, capsys):
    import argparse
    import json

    from cli.llm import register_cli

    # Given the cli's parser with the LLM subcommands
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())

    # When `extract-strategy --wait` runs on a text
    args = parser.parse_args(["extract-strategy", f"{NOTES} ({uuid.uuid4().hex[:6]})", "--wait", "--timeout", "60"])
    code = args.handler(args)

    # Then it prints the stored strategy and the job's usage, from the offline provider
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed["name"] == "Breakout Swing" and printed["provider"] == "offline"
    assert printed["usage"]["outcomes"] == {"ok": 1} and printed["usage"]["cost_usd"] == 0

    # and `llm-usage` prints the same usage for the job
    args = parser.parse_args(["llm-usage", printed["job_id"]])
    assert args.handler(args) == 0
    assert json.loads(capsys.readouterr().out) == printed["usage"]


def test_the_demo_extracts_from_a_text_and_the_shipped_strategy_notes(worker):
    from pipelines.llm import demo, strategy_for_job

    # When the demo runs
    runs = demo()

    # Then both extractions succeed on the offline provider, one of them linked to the document
    for run in runs:
        run.wait(300)
    strategies = [strategy_for_job(run.job_id) for run in runs]
    assert [s["source_kind"] for s in strategies] == ["text", "document"]  # type: ignore[index]
    assert all(s["provider"] == "offline" for s in strategies)  # type: ignore[index]
    assert strategies[0]["name"] == "RSI Pullback in an Uptrend"  # type: ignore[index]
