"""LLM analysis: trading strategies from text, documents and transcripts; chart images analysed.

Both actors are thin: they read the source, call ``processing.llm.tasks`` with the configured provider
and the attempt's ledger (``middleware.llm_usage``), and store the result linked to the job. Failures are
sorted by ``processing.llm.errors``: a 429/529 wait or a spent limit delays the message without counting
an attempt, 5xx and timeouts are retried by the platform (the SDKs' own retries are off), bad requests and
replies that never keep the schema fail the job with the reason.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from middleware.llm_usage import current_ledger
from middleware.rate_limit import delay_on_try_later
from processing.errors import InvalidArgument, NotFound
from settings import settings

logger = logging.getLogger(__name__)

QUEUE = "llm"

_COMMON: dict[str, Any] = {
    "queue_name": QUEUE,
    "llm_ledger": True,
    "max_retries": settings.llm_max_retries,
    "min_backoff": settings.llm_min_backoff,
}


_providers: dict[Any, Any] = {}
_prices_cache: dict[str, dict[str, tuple[float, float, float]]] = {}


def provider() -> Any:
    """The provider the settings name (``offline`` unless a key or ``LLM_PROVIDER`` says otherwise).

    One per process and configuration: an SDK client holds a connection pool, and building one costs more
    than a call to a nearby server.
    """
    from processing.llm.providers.base import ProviderConfig, make_provider

    config = ProviderConfig(
        provider=settings.llm_provider,
        model=settings.llm_model,
        base_url=settings.llm_base_url,
        timeout_ms=settings.llm_timeout,
        default_wait_ms=settings.llm_default_retry_after,
        api_key=settings.llm_api_key,
    )
    found = _providers.get(config)
    if found is None:
        found = _providers[config] = make_provider(config)
    return found


def _prices() -> dict[str, tuple[float, float, float]]:
    from processing.llm.cost import parse_prices

    prices = _prices_cache.get(settings.llm_prices)
    if prices is None:
        prices = _prices_cache[settings.llm_prices] = parse_prices(settings.llm_prices)
    return prices


def _job_id(ledger: Any) -> str:
    message = CurrentMessage.get_current_message()
    return str(message.message_id) if message is not None else str(ledger.job_id)


def parse_source(source: str) -> tuple[str, int | None]:
    """``document:ID`` or ``video:ID`` name stored text; anything else is the text itself."""
    for kind in ("document", "video"):
        prefix = f"{kind}:"
        if source.startswith(prefix):
            raw = source[len(prefix) :].strip()
            if not raw.isdigit():
                raise InvalidArgument(f"{kind} id must be a number, got {raw!r}")
            return kind, int(raw)
    return "text", None


def source_text(kind: str, source_id: int | None, source: str) -> str:
    """The text to read: the source itself, a document's pages, or a video's transcript."""
    if kind == "document":
        from storage.documents import get_document, pages_of

        if source_id is None or get_document(source_id) is None:
            raise NotFound(f"document {source_id} does not exist")
        text = "\n\n".join(page.text for page in pages_of(source_id) if page.text)
        if not text.strip():
            raise InvalidArgument(f"document {source_id} has no text yet (is it indexed?)")
        return text
    if kind == "video":
        from storage.media import get_video

        video = get_video(source_id)
        if video is None:
            raise NotFound(f"video {source_id} does not exist")
        text = " ".join(segment["text"] for segment in video["segments"])
        if not text.strip():
            raise InvalidArgument(f"video {source_id} has no transcript")
        return text
    return source


def _usage_summary(ledger: Any) -> dict[str, Any]:
    """This attempt's calls, tokens and cost (``pipelines.llm.usage_for_job`` adds up every attempt)."""
    from processing.llm.complete import total_usage

    usage, cost = total_usage(ledger.calls)
    return {
        "calls": len(ledger.calls),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": cost,
    }


@dramatiq.actor(**_COMMON)
def extract_trading_strategy(source: str, piped: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trading strategy in ``source`` (text, ``document:ID`` or ``video:ID``), stored in
    ``llm_strategies`` with the job's id; long texts are split and the parts merged.

    In a pipeline after a media job, ``source="video:piped"`` reads the video the previous job made
    (its result, ``piped``, names it).
    """
    from processing.llm.tasks import extract_strategy
    from storage.llm import save_strategy

    if source == "video:piped":
        if not isinstance(piped, dict) or not isinstance(piped.get("video_id"), int):
            raise InvalidArgument("video:piped needs the result of a media job with a video_id")
        source = f"video:{piped['video_id']}"
    kind, source_id = parse_source(source)
    text = source_text(kind, source_id, source)
    ledger = current_ledger()
    with delay_on_try_later():
        analysis = extract_strategy(
            text,
            provider=provider(),
            ledger=ledger,
            prices=_prices(),
            chunk_chars=settings.llm_chunk_chars,
            max_reasks=settings.llm_max_reasks,
            max_tokens=settings.llm_max_tokens,
        )
    job_id = _job_id(ledger)
    strategy_id = save_strategy(
        job_id=job_id,
        source_kind=kind,
        source_id=source_id,
        source_sha256=hashlib.sha256(text.encode()).hexdigest(),
        provider=analysis.provider,
        model=analysis.model,
        parts=len(analysis.replies),
        data=analysis.data,
    )
    return {
        "strategy_id": strategy_id,
        "name": analysis.data["name"],
        "provider": analysis.provider,
        "model": analysis.model,
        "parts": len(analysis.replies),
        **_usage_summary(ledger),
    }


def _chart_of(path_or_asset: str) -> tuple[str, int | None, Path, dict[str, Any]]:
    """The image to analyse: ``asset:ID`` or ``asset:SYMBOL`` is the chart the market family renders
    (``pipelines.llm.analyze_asset`` renders it first), anything else a path under the storage root."""
    if path_or_asset.startswith("asset:"):
        from storage import market

        ref = path_or_asset[len("asset:") :].strip()
        asset = market.get_asset(int(ref)) if ref.isdigit() else market.get_asset_by_symbol(ref)
        if asset is None:
            raise NotFound(f"asset {ref!r} does not exist")
        if asset.chart_path is None or not Path(asset.chart_path).exists():
            raise NotFound(f"asset {asset.symbol} has no chart yet (render_chart draws it)")
        return "asset", asset.id, Path(asset.chart_path), _chart_context(asset.id, asset.symbol)
    from processing.paths import resolve_under

    return "path", None, resolve_under(settings.storage_root, path_or_asset), {}


def _chart_context(asset_id: int, symbol: str) -> dict[str, Any]:
    """What the chart shows that the image alone does not say: the symbol and the close line's range."""
    from actors.market import CHART_BARS, TIMEFRAME
    from storage import market

    bars = market.load_bars(asset_id, TIMEFRAME, limit=CHART_BARS)
    if len(bars) == 0:
        return {"symbol": symbol}
    close = bars["close"]
    return {
        "symbol": symbol,
        "timeframe": TIMEFRAME,
        "close_min": round(float(close.min()), 4),
        "close_max": round(float(close.max()), 4),
        "last_close": round(float(close.iloc[-1]), 4),
    }


@dramatiq.actor(**_COMMON)
def analyze_chart_image(path_or_asset: str) -> dict[str, Any]:
    """Trend, support and resistance, patterns and indicators of a chart image (a path under the storage
    root, or ``asset:ID`` / ``asset:SYMBOL``), stored in ``llm_chart_analyses`` with the job's id."""
    from processing.llm.tasks import analyze_chart, load_image
    from storage.llm import save_chart_analysis

    kind, asset_id, path, context = _chart_of(path_or_asset)
    image = load_image(path)
    ledger = current_ledger()
    with delay_on_try_later():
        analysis = analyze_chart(
            image,
            provider=provider(),
            ledger=ledger,
            prices=_prices(),
            context=context,
            max_reasks=settings.llm_max_reasks,
        )
    job_id = _job_id(ledger)
    analysis_id = save_chart_analysis(
        job_id=job_id,
        source_kind=kind,
        asset_id=asset_id,
        path=str(path),
        image_sha256=image.sha256,
        provider=analysis.provider,
        model=analysis.model,
        data=analysis.data,
    )
    return {
        "analysis_id": analysis_id,
        "trend": analysis.data["trend"],
        "provider": analysis.provider,
        "model": analysis.model,
        **_usage_summary(ledger),
    }
