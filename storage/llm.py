"""LLM tables: each provider call of a job (failed ones too), strategies and chart analyses.

Call rows are kept in Redis the moment a call returns and written here when the attempt ends (see
``middleware.llm_usage``): a worker killed right after a paid call loses neither the row nor the reply,
and the redelivered job reuses the reply instead of paying again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Float, Index, Integer, String, Text, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base, get_engine, session_scope


def utcnow() -> datetime:
    return datetime.now(UTC)


class LlmCall(Base):
    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_job_key", "job_id", "request_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    request_key: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    raw_reply: Mapped[str | None] = mapped_column(Text)
    # The reply as ``processing.llm.types.Reply`` JSON, for a call that may be reused.
    reply: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Strategy(Base):
    """A trading strategy extracted by one job from one source (text, a document, a video)."""

    __tablename__ = "llm_strategies"
    __table_args__ = (Index("ix_llm_strategies_source", "source_kind", "source_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    source_kind: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[int | None] = mapped_column(Integer)
    source_sha256: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(Text)
    market: Mapped[str | None] = mapped_column(Text)
    timeframe: Mapped[str | None] = mapped_column(String(16))
    parts: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ChartAnalysis(Base):
    __tablename__ = "llm_chart_analyses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    source_kind: Mapped[str] = mapped_column(String(16))
    asset_id: Mapped[int | None] = mapped_column(Integer, index=True)
    path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    trend: Mapped[str] = mapped_column(String(16))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def record_calls(rows: list[dict[str, Any]]) -> None:
    """Write call rows in one transaction (``created_at`` defaults to now)."""
    from storage.db import migrate

    if not rows:
        return
    migrate()
    now = utcnow()
    values = [{**row, "created_at": _when(row.get("created_at"), now)} for row in rows]
    with get_engine().begin() as connection:
        connection.execute(insert(LlmCall), values)


def _when(value: Any, default: datetime) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return value if isinstance(value, datetime) else default


def reusable_reply(job_id: str, request_key: str) -> str | None:
    """The stored reply of a call this job already made with this request and that succeeded."""
    table = LlmCall.__table__
    query = (
        select(table.c.reply)
        .where(table.c.job_id == job_id, table.c.request_key == request_key, table.c.reply.is_not(None))
        .order_by(table.c.id)
        .limit(1)
    )
    with session_scope() as session:
        return session.execute(query).scalar()


@dataclass(frozen=True)
class JobUsage:
    calls: int
    billed_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    outcomes: dict[str, int]


def job_usage(job_id: str) -> JobUsage:
    """Tokens and estimated cost of every call of a job, over all its attempts (failed ones included)."""
    table = LlmCall.__table__
    query = select(
        table.c.outcome,
        func.count(),
        func.coalesce(func.sum(table.c.input_tokens), 0),
        func.coalesce(func.sum(table.c.output_tokens), 0),
        func.coalesce(func.sum(table.c.cached_tokens), 0),
        func.coalesce(func.sum(table.c.cost_usd), 0.0),
    ).where(table.c.job_id == job_id)
    outcomes: dict[str, int] = {}
    totals = [0, 0, 0, 0, 0.0]
    with session_scope() as session:
        for outcome, count, tokens_in, tokens_out, cached, cost in session.execute(query.group_by(table.c.outcome)):
            outcomes[outcome] = int(count)
            if outcome in ("ok", "invalid"):
                totals[0] += int(count)
            totals[1] += int(tokens_in)
            totals[2] += int(tokens_out)
            totals[3] += int(cached)
            totals[4] += float(cost)
    return JobUsage(
        calls=sum(outcomes.values()),
        billed_calls=int(totals[0]),
        input_tokens=int(totals[1]),
        output_tokens=int(totals[2]),
        cached_tokens=int(totals[3]),
        cost_usd=round(float(totals[4]), 8),
        outcomes=outcomes,
    )


def calls_of(job_id: str) -> list[dict[str, Any]]:
    table = LlmCall.__table__
    with session_scope() as session:
        rows = session.execute(select(table).where(table.c.job_id == job_id).order_by(table.c.id)).mappings().all()
        return [dict(row) for row in rows]


def save_strategy(
    *,
    job_id: str,
    source_kind: str,
    source_id: int | None,
    source_sha256: str,
    provider: str,
    model: str,
    parts: int,
    data: dict[str, Any],
) -> int:
    """Store the job's strategy (a redelivered job replaces its own row); returns its id."""
    with session_scope() as session:
        row = session.scalars(select(Strategy).where(Strategy.job_id == job_id)).first()
        if row is None:
            row = Strategy(job_id=job_id, created_at=utcnow())
            session.add(row)
        row.source_kind, row.source_id, row.source_sha256 = source_kind, source_id, source_sha256
        row.provider, row.model, row.parts = provider, model, parts
        row.name, row.market, row.timeframe = data["name"], data.get("market"), data.get("timeframe")
        row.data = json.dumps(data)
        session.flush()
        return int(row.id)


def _strategy_dict(row: Strategy) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_id": row.job_id,
        "source_kind": row.source_kind,
        "source_id": row.source_id,
        "provider": row.provider,
        "model": row.model,
        "parts": row.parts,
        "created_at": row.created_at,
        **json.loads(row.data),
    }


def get_strategy(strategy_id: int | None = None, *, job_id: str | None = None) -> dict[str, Any] | None:
    with session_scope() as session:
        query = select(Strategy).where(Strategy.id == strategy_id if job_id is None else Strategy.job_id == job_id)
        row = session.scalars(query).first()
        return _strategy_dict(row) if row else None


def list_strategies(source_kind: str | None = None, source_id: int | None = None) -> list[dict[str, Any]]:
    with session_scope() as session:
        query = select(Strategy).order_by(Strategy.id)
        if source_kind is not None:
            query = query.where(Strategy.source_kind == source_kind)
        if source_id is not None:
            query = query.where(Strategy.source_id == source_id)
        return [_strategy_dict(row) for row in session.scalars(query)]


def save_chart_analysis(
    *,
    job_id: str,
    source_kind: str,
    asset_id: int | None,
    path: str,
    image_sha256: str,
    provider: str,
    model: str,
    data: dict[str, Any],
) -> int:
    with session_scope() as session:
        row = session.scalars(select(ChartAnalysis).where(ChartAnalysis.job_id == job_id)).first()
        if row is None:
            row = ChartAnalysis(job_id=job_id, created_at=utcnow())
            session.add(row)
        row.source_kind, row.asset_id, row.path, row.image_sha256 = source_kind, asset_id, path, image_sha256
        row.provider, row.model, row.trend, row.data = provider, model, data["trend"], json.dumps(data)
        session.flush()
        return int(row.id)


def get_chart_analysis(analysis_id: int | None = None, *, job_id: str | None = None) -> dict[str, Any] | None:
    with session_scope() as session:
        column = ChartAnalysis.id == analysis_id if job_id is None else ChartAnalysis.job_id == job_id
        row = session.scalars(select(ChartAnalysis).where(column)).first()
        if row is None:
            return None
        return {
            "id": row.id,
            "job_id": row.job_id,
            "source_kind": row.source_kind,
            "asset_id": row.asset_id,
            "path": row.path,
            "provider": row.provider,
            "model": row.model,
            "created_at": row.created_at,
            **json.loads(row.data),
        }
