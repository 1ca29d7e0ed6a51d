"""LLM analysis for application code and the ``cli``: strategies from text, documents and videos;
chart analysis of an image or an asset.

Each function sends work and returns its run's handle, an ``AnalysisRun``: ``wait(timeout)`` returns the
stored strategy or chart analysis (``strategy_for_job`` / ``chart_analysis_for_job``) and raises
``RunFailed`` with the error of the step that failed. Its ``id`` is the run's first message (every job of
the run carries it as ``parent_id``); ``job_id`` is the job that stores the result, the last step, whose
id ``usage_for_job`` takes.

- ``extract_strategy(text_or_ref)``: one ``extract_trading_strategy`` job.
- ``extract_from_document(path)``: extract → OCR → chunk → embed → extract strategy.
- ``extract_from_video(url_or_path)``: download/transcribe → extract strategy.
- ``analyze_asset(symbol)``: render the asset's chart → analyse it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipelines.runs import Run

DEMO_TEXT = """Strategy: RSI Pullback in an Uptrend
Trade liquid stocks on the daily chart. Only trade when the close is above the 200-day SMA.
Buy when RSI(14) drops below 30 and then closes back above 30.
Exit when RSI(14) rises above 70, or take profit at 2 times the ATR(14) from the entry.
Place a stop-loss 1.5 ATR below the entry and risk at most 1% of the account per trade."""


class AnalysisRun(Run):
    """The handle of an LLM run: ``job_id`` is the job that stores its result (the run's last step, the
    run's own id for one job); ``result()`` and ``wait()`` give that result as ``read`` finds it."""

    def __init__(self, id: str, job_id: str, read: Callable[[str], dict[str, Any] | None]) -> None:
        super().__init__(id, result=lambda: read(job_id), settled=self._last_step_ended)
        self.job_id = str(job_id)

    def __repr__(self) -> str:
        return f"AnalysisRun({self.id!r}, job_id={self.job_id!r})"

    def _last_step_ended(self) -> bool:
        # The next step of a pipeline is sent when the one before ends: until the last one has, the
        # run's jobs may all have ended without the run being over.
        from storage.jobs import get_job
        from storage.models import FINISHED_STATES

        job = get_job(self.job_id)
        return job is not None and job.state in {state.value for state in FINISHED_STATES}


def extract_strategy(source: str) -> AnalysisRun:
    """Send one extraction: text, ``document:ID`` or ``video:ID``. ``wait()`` returns the strategy."""
    from actors.llm import extract_trading_strategy

    message_id = str(extract_trading_strategy.send(source).message_id)
    return AnalysisRun(message_id, message_id, strategy_for_job)


def analyze_chart(path_or_asset: str) -> AnalysisRun:
    """Send one chart analysis: a path under the storage root, or ``asset:ID`` / ``asset:SYMBOL``.
    ``wait()`` returns the analysis."""
    from actors.llm import analyze_chart_image

    message_id = str(analyze_chart_image.send(path_or_asset).message_id)
    return AnalysisRun(message_id, message_id, chart_analysis_for_job)


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


def extract_from_document(path: str) -> AnalysisRun:
    """Index the document at ``path`` (under the storage root), then extract its strategy.

    Returns the run's handle; its ``job_id`` is the extraction's (whose ``parent_id`` is the run's id).
    """
    from dramatiq import pipeline

    messages = _document_run(path)
    pipeline(messages).run()
    return AnalysisRun(str(messages[0].message_id), str(messages[-1].message_id), strategy_for_job)


def extract_from_video(url_or_path: str) -> AnalysisRun:
    """Transcribe a video (YouTube URL or a file under the storage root), then extract its strategy."""
    from dramatiq import pipeline

    from actors.llm import extract_trading_strategy
    from actors.media import process_youtube_video

    first = process_youtube_video.message_with_options(args=(url_or_path,), kwargs={"extract_frames": False})
    run = first.message_id
    first = first.copy(options={**first.options, "parent_id": run})
    last = extract_trading_strategy.message_with_options(args=("video:piped",), parent_id=run)
    pipeline([first, last]).run()
    return AnalysisRun(str(run), str(last.message_id), strategy_for_job)


def analyze_asset(symbol_or_id: str | int) -> AnalysisRun:
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
    return AnalysisRun(str(run), str(last.message_id), chart_analysis_for_job)


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


def demo() -> list[AnalysisRun]:
    """Extract the strategy of a short built-in text and of the shipped strategy notes PDF (``make demo``).

    With no key set this runs on the offline provider, and every stored result says so.
    """
    from pipelines.documents import stage_samples

    notes = next(path for path in stage_samples() if path.endswith("strategy-notes.pdf"))
    return [extract_strategy(DEMO_TEXT), extract_from_document(notes)]
