"""LLM analysis for application code and the ``cli``: strategies from text, documents and videos;
chart analysis of an image or an asset.

Each function sends work and returns the message id to follow (``pipelines.job_status``); a run of
several steps returns its last step's id, whose job holds the result.

- ``extract_strategy(text_or_ref)``: one ``extract_trading_strategy`` job.
- ``extract_from_document(path)``: extract → OCR → chunk → embed → extract strategy.
- ``extract_from_video(url_or_path)``: download/transcribe → extract strategy.
- ``analyze_asset(symbol)``: render the asset's chart → analyse it.
"""

from __future__ import annotations

from typing import Any

DEMO_TEXT = """Strategy: RSI Pullback in an Uptrend
Trade liquid stocks on the daily chart. Only trade when the close is above the 200-day SMA.
Buy when RSI(14) drops below 30 and then closes back above 30.
Exit when RSI(14) rises above 70, or take profit at 2 times the ATR(14) from the entry.
Place a stop-loss 1.5 ATR below the entry and risk at most 1% of the account per trade."""


def extract_strategy(source: str) -> str:
    """Send one extraction: text, ``document:ID`` or ``video:ID``. Returns its message id."""
    from actors.llm import extract_trading_strategy

    return str(extract_trading_strategy.send(source).message_id)


def analyze_chart(path_or_asset: str) -> str:
    """Send one chart analysis: a path under the storage root, or ``asset:ID`` / ``asset:SYMBOL``."""
    from actors.llm import analyze_chart_image

    return str(analyze_chart_image.send(path_or_asset).message_id)


def _document_run(path: str) -> list[Any]:
    from actors.llm import extract_trading_strategy
    from pipelines.documents import _run_messages
    from storage.db import migrate
    from storage.documents import create_document, restart

    migrate()
    document_id = create_document(path)
    messages = _run_messages(document_id)
    run = messages[0].message_id
    restart(document_id, run)
    messages.append(
        extract_trading_strategy.message_with_options(
            args=(f"document:{document_id}",), pipe_ignore=True, parent_id=run
        )
    )
    return messages


def extract_from_document(path: str) -> str:
    """Index the document at ``path`` (under the storage root), then extract its strategy.

    Returns the extraction's message id (its job's ``parent_id`` is the run's first message).
    """
    from dramatiq import pipeline

    messages = _document_run(path)
    pipeline(messages).run()
    return str(messages[-1].message_id)


def extract_from_video(url_or_path: str) -> str:
    """Transcribe a video (YouTube URL or a file under the storage root), then extract its strategy."""
    from dramatiq import pipeline

    from actors.llm import extract_trading_strategy
    from actors.media import process_youtube_video

    first = process_youtube_video.message_with_options(args=(url_or_path,), kwargs={"extract_frames": False})
    run = first.message_id
    first = first.copy(options={**first.options, "parent_id": run})
    last = extract_trading_strategy.message_with_options(args=("video:piped",), parent_id=run)
    pipeline([first, last]).run()
    return str(last.message_id)


def analyze_asset(symbol_or_id: str | int) -> str:
    """Render the asset's chart (the market family's ``render_chart``), then analyse it."""
    from dramatiq import pipeline

    from actors.llm import analyze_chart_image
    from actors.market import render_chart
    from processing.errors import NotFound
    from storage import market

    ref = str(symbol_or_id)
    asset = market.get_asset(int(ref)) if ref.isdigit() else market.get_asset_by_symbol(ref)
    if asset is None:
        raise NotFound(f"asset {ref!r} does not exist")
    first = render_chart.message_with_options(args=(asset.id,), pipe_ignore=True)
    run = first.message_id
    first = first.copy(options={**first.options, "parent_id": run})
    last = analyze_chart_image.message_with_options(args=(f"asset:{asset.id}",), pipe_ignore=True, parent_id=run)
    pipeline([first, last]).run()
    return str(last.message_id)


def strategy_for_job(message_id: str) -> dict[str, Any] | None:
    from storage.llm import get_strategy

    return get_strategy(job_id=message_id)


def chart_analysis_for_job(message_id: str) -> dict[str, Any] | None:
    from storage.llm import get_chart_analysis

    return get_chart_analysis(job_id=message_id)


def usage_for_job(message_id: str) -> dict[str, Any]:
    """Calls, tokens and estimated cost of a job over all its attempts."""
    from dataclasses import asdict

    from storage.llm import job_usage

    return asdict(job_usage(message_id))


def demo() -> list[str]:
    """Extract the strategy of a short built-in text and of the shipped strategy notes PDF (``make demo``).

    With no key set this runs on the offline provider, and every stored result says so.
    """
    from dramatiq import pipeline

    from pipelines.documents import stage_samples

    ids = [extract_strategy(DEMO_TEXT)]
    notes = next(path for path in stage_samples() if path.endswith("strategy-notes.pdf"))
    messages = _document_run(notes)
    pipeline(messages).run()
    ids.append(str(messages[-1].message_id))
    return ids
